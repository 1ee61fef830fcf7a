//! Integration-test harness: a private podman per test.
//!
//! Each [`PrivatePodman`] owns a temporary directory (`$TMPDIR/mcp-test-*`) holding
//! its own containers.conf, storage root, run root, per-boot tmp dir, lock files,
//! events log and the API socket of a `podman system service` it started. Nothing is
//! shared with the user's containers or with other tests running side by side, except
//! what podman keeps machine-wide (network configs, netavark's iptables chains): tests
//! that publish ports must use distinct host ports (see [`free_port`]).
//!
//! Only std, `serde_json` and `tempfile` are used. Integration tests include it with
//! `mod common;`.
#![allow(dead_code)]

pub mod relay;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the API service may take to answer `/_ping` after it is spawned.
const SERVICE_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long the API service may take to exit after SIGTERM before it gets SIGKILL.
const SERVICE_STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Poll interval while waiting for the service to come up or go away.
const SERVICE_POLL: Duration = Duration::from_millis(20);
/// Where the test image's only binary comes from (Debian's busybox-static).
const BUSYBOX: &str = "/bin/busybox";
/// Applets linked to busybox in the test image.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "sleep", "httpd", "echo", "cat", "nc", "env", "ls", "true", "false", "kill",
];
/// Environment variables that would turn the podman CLI into a remote client.
const PODMAN_REMOTE_VARS: &[&str] = &["CONTAINER_HOST", "CONTAINER_CONNECTION"];

/// A podman of the test's own: private storage and state, and an API service on a
/// unix socket inside the test's temporary directory. Dropping it removes every
/// container, stops the service, unmounts whatever is left and deletes the directory.
pub struct PrivatePodman {
    /// `None` only once `Drop` has taken it to delete it.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// The running `podman system service`, if any.
    service: Option<Child>,
}

impl PrivatePodman {
    /// Creates the temporary directory, writes containers.conf, starts the API
    /// service and waits (up to 20 s) until `GET /_ping` answers OK.
    pub fn start() -> PrivatePodman {
        let dir = tempfile::Builder::new()
            .prefix("mcp-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("create the test's temporary directory");
        let path = dir.path().to_path_buf();
        let mut podman = PrivatePodman {
            dir: Some(dir),
            path,
            service: None,
        };
        fs::write(podman.conf_path(), containers_conf(&podman.path))
            .expect("write containers.conf");
        podman.start_service();
        podman
    }

    /// The temporary directory that holds everything of this podman.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Storage root (`--root`); libpod's database lives in `root/libpod/`.
    pub fn root_dir(&self) -> PathBuf {
        self.path.join("root")
    }

    /// Run root (`--runroot`).
    pub fn runroot_dir(&self) -> PathBuf {
        self.path.join("runroot")
    }

    /// The containers.conf every podman process of this instance must see.
    pub fn conf_path(&self) -> PathBuf {
        self.path.join("containers.conf")
    }

    /// The API service's combined stdout and stderr (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.path.join("service.log")
    }

    /// The API service's unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join("podman.sock")
    }

    /// The API service's address as podman and bollard spell it: `unix:///…/podman.sock`.
    pub fn socket_uri(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// The argv prefix of a podman CLI acting on this private podman:
    /// `["podman", "--root", …, "--runroot", …]`. Run it with [`Self::env`] set.
    pub fn cli_argv(&self) -> Vec<String> {
        vec![
            "podman".to_string(),
            "--root".to_string(),
            self.root_dir().display().to_string(),
            "--runroot".to_string(),
            self.runroot_dir().display().to_string(),
        ]
    }

    /// Environment that every podman process of this instance needs (the CLI, the
    /// service, and the agent when it runs the CLI): `CONTAINERS_CONF`, and
    /// `CONTAINERS_REGISTRIES_CONF` once a test has written [`Self::registries_conf`]
    /// (then restart the service for it to read it).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "CONTAINERS_CONF".to_string(),
            self.conf_path().display().to_string(),
        )];
        if self.registries_conf().exists() {
            env.push((
                "CONTAINERS_REGISTRIES_CONF".to_string(),
                self.registries_conf().display().to_string(),
            ));
        }
        env
    }

    /// This podman's own registries.conf, when a test writes one.
    pub fn registries_conf(&self) -> PathBuf {
        self.path.join("registries.conf")
    }

    /// A `Command` for the podman CLI against this private podman, before its
    /// subcommand arguments: add them with `.args(…)`.
    pub fn command(&self) -> Command {
        let argv = self.cli_argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for var in PODMAN_REMOTE_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        cmd
    }

    /// Runs the podman CLI against this private podman and returns its output,
    /// whatever its exit status.
    pub fn podman(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"))
    }

    /// Runs the podman CLI, panics (with its stderr) unless it succeeds, and returns
    /// its trimmed stdout.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        if !out.status.success() {
            panic!(
                "podman {args:?} failed ({}):\nstderr: {}\nstdout: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports a busybox image under `tag` (e.g. `localhost/busybox:latest`): a rootfs
    /// of `/bin/busybox` with the applets `sh sleep httpd echo cat nc env ls true false
    /// kill` linked to it and `CMD ["sleep","infinity"]`. The tarball is built once per
    /// test process. Note that `sleep` as PID 1 ignores SIGTERM: stopping such a
    /// container waits out the stop timeout (10 s by default) before SIGKILL.
    pub fn import_busybox(&self, tag: &str) {
        self.import_busybox_with(tag, &[]);
    }

    /// [`Self::import_busybox`] with more `--change` instructions for the image's config
    /// (`ENV PATH=/bin`: `podman kube play` 4.3 gives a container no default PATH).
    pub fn import_busybox_with(&self, tag: &str, changes: &[&str]) {
        let tar = self.path.join("busybox-rootfs.tar");
        fs::write(&tar, busybox_tarball()).expect("write busybox tarball");
        let tar_arg = tar.display().to_string();
        let mut args = vec![
            "import",
            "--quiet",
            "--change",
            r#"CMD ["sleep","infinity"]"#,
        ];
        for c in changes {
            args.extend(["--change", c]);
        }
        args.extend([tar_arg.as_str(), tag]);
        self.podman_ok(&args);
        let _ = fs::remove_file(&tar);
    }

    /// `podman container inspect NAME`, first element; `None` if there is no such
    /// container.
    pub fn inspect(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.podman(&["container", "inspect", name]);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("no such") {
                return None;
            }
            panic!("podman container inspect {name} failed: {}", stderr.trim());
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("podman container inspect {name}: bad JSON: {e}"));
        // Podman resolves an argument that names no container as an id prefix: `inspect b`
        // finds container `a` when a's id starts with "b". Only an exact name counts.
        value
            .as_array()
            .and_then(|a| a.first())
            .filter(|c| c["Name"].as_str().map(|n| n.trim_start_matches('/')) == Some(name))
            .cloned()
    }

    /// Whether the container exists and is running.
    pub fn running(&self, name: &str) -> bool {
        self.inspect(name)
            .and_then(|v| v["State"]["Running"].as_bool())
            .unwrap_or(false)
    }

    /// The pid of the API service, if it is running.
    pub fn service_pid(&self) -> Option<u32> {
        self.service.as_ref().map(Child::id)
    }

    /// The API service's log so far.
    pub fn service_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// One request to the API service over its socket; returns the status code and the
    /// body (de-chunked). `path` as podman serves it, e.g. `/v1.41/containers/json?all=true`.
    pub fn api(&self, method: &str, path: &str) -> (u16, String) {
        http_over_unix(&self.socket_path(), method, path, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.socket_uri()))
    }

    /// Like [`Self::api`] with a deadline of the caller's, and the failure returned (a
    /// frozen or stopped service) instead of a panic.
    pub fn api_within(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        http_over_unix(&self.socket_path(), method, path, timeout)
    }

    /// Stops the API service: SIGTERM (through `kill`) to the pid this instance
    /// started, then waits for it to exit (SIGKILL after 15 s, and a panic).
    pub fn stop_service(&mut self) {
        let mut child = self
            .service
            .take()
            .expect("the podman service is not running");
        if let Err(e) = stop_child(&mut child) {
            panic!("{e}\nservice log:\n{}", self.service_log());
        }
    }

    /// Starts the API service again with the same arguments and waits for `/_ping`.
    pub fn start_service(&mut self) {
        assert!(
            self.service.is_none(),
            "the podman service is already running"
        );
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open service log");
        let _ = writeln!(
            log,
            "--- mcp test harness: starting podman system service ---"
        );
        let log_err = log.try_clone().expect("clone service log handle");
        let started = Instant::now();
        let child = self
            .command()
            .args(["system", "service", "--time=0", &self.socket_uri()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn podman system service: {e}"));
        self.service = Some(child);

        let socket = self.socket_path();
        loop {
            if ping(&socket) {
                return;
            }
            let child = self.service.as_mut().expect("service child");
            if let Ok(Some(status)) = child.try_wait() {
                self.service = None;
                panic!(
                    "podman system service exited early ({status}); log:\n{}",
                    self.service_log()
                );
            }
            if started.elapsed() > SERVICE_START_DEADLINE {
                panic!(
                    "podman system service did not answer /_ping on {} within {:?}; log:\n{}",
                    socket.display(),
                    SERVICE_START_DEADLINE,
                    self.service_log()
                );
            }
            sleep(SERVICE_POLL);
        }
    }

    /// SIGSTOPs the API service: podman hangs, its socket still accepts connections and
    /// answers nothing (the CLI, which needs no service, keeps working). The service is
    /// resumed (SIGCONT) by [`Frozen::thaw`] or when the guard is dropped; declare the
    /// guard after everything that must not outlive a frozen podman (it drops first).
    pub fn freeze(&self) -> Frozen<'_> {
        let pid = self
            .service_pid()
            .expect("the podman service is not running");
        signal_pid(pid, "STOP");
        Frozen {
            podman: self,
            pid,
            thawed: None,
        }
    }

    /// Podman's database loss, as after a shutdown (the ENVIRONMENT.md recipe): stop
    /// every container (`podman stop -a -t 0`), stop the service, end what is left of
    /// this podman's processes (exec sessions' conmons; a shutdown ends them too), delete
    /// `root/libpod/bolt_state.db` and the run root, start the service again. Podman
    /// then lists no containers, but their names stay held by container storage until
    /// `podman rm --force NAME` (the CLI) frees them.
    pub fn lose_database(&mut self) {
        self.podman_ok(&["stop", "-a", "-t", "0"]);
        self.stop_service();
        let runroot = self.runroot_dir();
        let mounted = mounts_under(&runroot).unwrap_or_default();
        assert!(
            mounted.is_empty(),
            "still mounted under the run root after stopping every container: {mounted:?}"
        );
        end_processes_naming(&runroot);
        let db = self.root_dir().join("libpod").join("bolt_state.db");
        fs::remove_file(&db).unwrap_or_else(|e| panic!("remove {}: {e}", db.display()));
        fs::remove_dir_all(&runroot)
            .unwrap_or_else(|e| panic!("remove {}: {e}", runroot.display()));
        self.start_service();
    }

    /// All of podman's storage lost — what `podman system reset` does to this podman's
    /// root (containers, images, volumes), without the reset itself, which would also
    /// reset this machine's shared network configuration: every container removed, the
    /// service stopped, the root and run root unmounted and deleted, the service started
    /// again on empty ones. Images must be imported again.
    pub fn lose_storage(&mut self) {
        self.podman_ok(&["rm", "-a", "-f", "-t", "0"]);
        self.stop_service();
        end_processes_naming(&self.runroot_dir());
        for dir in [self.root_dir(), self.runroot_dir()] {
            let mut mounted = mounts_under(&dir).unwrap_or_default();
            mounted.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
            for m in mounted {
                umount(&m).unwrap_or_else(|e| panic!("{e}"));
            }
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        }
        self.start_service();
    }
}

/// A SIGSTOPped podman service (see [`PrivatePodman::freeze`]); SIGCONT on drop.
pub struct Frozen<'a> {
    podman: &'a PrivatePodman,
    pid: u32,
    thawed: Option<Instant>,
}

impl Frozen<'_> {
    /// Resumes the service (SIGCONT) and returns when it was resumed. Idempotent.
    pub fn thaw(&mut self) -> Instant {
        *self.thawed.get_or_insert_with(|| {
            signal_pid(self.pid, "CONT");
            Instant::now()
        })
    }

    /// The podman whose service is frozen.
    pub fn podman(&self) -> &PrivatePodman {
        self.podman
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // First of all, whatever else fails: never leave a stopped podman behind.
        if self.thawed.is_none() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid.to_string()])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// `kill -SIG PID` for a child this harness started (so the pid is ours); panics if it fails.
fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// What a shutdown ends and `podman stop`/`rm` leave running: exec sessions' conmons
/// sleeping out `exit_command_delay` (300 s) before their cleanup, cleanups still writing
/// under the run root. SIGKILLs (by pid) every process whose command line names
/// `runroot` — this podman's only — and waits up to 10 s for them to be gone.
fn end_processes_naming(runroot: &Path) {
    for (pid, _) in processes_naming(runroot, |_| true) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdin(Stdio::null())
            .status();
    }
    let gone = poll_until(Duration::from_secs(10), || {
        processes_naming(runroot, |_| true).is_empty()
    });
    assert!(
        gone.is_some(),
        "processes still name {} 10 s after SIGKILL: {:?}",
        runroot.display(),
        processes_naming(runroot, |_| true)
    );
}

/// Host pids of the processes whose argv is exactly `want`.
pub fn pids_running(want: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = want
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Pids of conmon processes whose command line names a path under `dir`.
fn conmons_under(dir: &Path) -> Vec<(u32, String)> {
    processes_naming(dir, |cmdline| cmdline.contains("conmon"))
}

/// Pids (with their command lines) of the processes whose command line names `dir`
/// and passes `filter`.
fn processes_naming(dir: &Path, filter: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let dir = dir.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let c = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            (c.contains(&dir) && filter(&c)).then_some((pid, c))
        })
        .collect()
}

impl Drop for PrivatePodman {
    fn drop(&mut self) {
        let mut errors: Vec<String> = Vec::new();

        if std::thread::panicking() {
            let log = self.service_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "PrivatePodman {}: last lines of the service log:\n{}",
                self.path.display(),
                tail.join("\n")
            );
        }

        // Remove every container (the CLI needs no service).
        match self
            .command()
            .args(["rm", "-af", "-t", "0"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => errors.push(format!(
                "podman rm -af -t 0: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("podman rm -af -t 0: {e}")),
        }

        // Stop the service we started (by its pid only).
        if let Some(mut child) = self.service.take() {
            if let Err(e) = stop_child(&mut child) {
                errors.push(e);
            }
        }

        // A container podman lost track of keeps its conmon (and process) alive: end
        // them, children first (they are this test's, found by its storage root).
        for (pid, _) in conmons_under(&self.path) {
            errors.push(format!("conmon {pid} outlived `podman rm -af`: killed"));
            let kids = Command::new("pgrep")
                .args(["-P", &pid.to_string()])
                .output();
            if let Ok(out) = kids {
                for kid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", kid]).status();
                }
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }

        // Nothing may stay mounted under the directory; unmount deepest first.
        match mounts_under(&self.path) {
            Ok(mut mounts) if !mounts.is_empty() => {
                mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
                for m in &mounts {
                    if let Err(e) = umount(m) {
                        errors.push(e);
                    }
                }
                match mounts_under(&self.path) {
                    Ok(left) if left.is_empty() => {}
                    Ok(left) => errors.push(format!("still mounted after umount: {left:?}")),
                    Err(e) => errors.push(e),
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }

        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                errors.push(format!("remove {}: {e}", self.path.display()));
            }
        }

        if !errors.is_empty() {
            eprintln!(
                "PrivatePodman {}: cleanup errors:\n  {}",
                self.path.display(),
                errors.join("\n  ")
            );
        }
    }
}

/// Runs `f` to completion on a runtime of its own (tests that call the library's async
/// API from a plain `#[test]`).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Polls `cond` every 50 ms until it is true; panics naming `what` once `deadline`
/// has passed.
pub fn wait_for(what: &str, deadline: Duration, cond: impl FnMut() -> bool) {
    if poll_until(deadline, cond).is_none() {
        panic!("timed out after {deadline:?} waiting for {what}");
    }
}

/// Polls `cond` every 50 ms until it is true: how long that took, or `None` once
/// `deadline` has passed (for tests that measure, or report several failures at once).
pub fn poll_until(deadline: Duration, cond: impl FnMut() -> bool) -> Option<Duration> {
    poll_every(Duration::from_millis(50), deadline, cond)
}

/// [`poll_until`] with a pause of `every` between polls: for conditions that cost a
/// podman process each (listing 200 containers), so the polling does not load the
/// machine the test measures.
pub fn poll_every(
    every: Duration,
    deadline: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return None;
        }
        sleep(every);
    }
}

/// A loopback TCP port that was free a moment ago (bind 127.0.0.1:0, read, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// containers.conf of one private podman. Beyond what the environment needs (small
/// default ulimits, runc instead of crun), it keeps the per-boot tmp dir (events log,
/// exit files, the "alive" marker) and the container locks inside the test's directory:
/// by default they are machine-wide (/run/libpod, /dev/shm/libpod_lock), so one test's
/// event stream would carry every other podman's events.
fn containers_conf(dir: &Path) -> String {
    let tmp = dir.join("tmp");
    format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
tmp_dir = {tmp}
lock_type = "file"
events_logger = "file"
"#,
        tmp = toml_string(&tmp.display().to_string()),
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The busybox rootfs as a tar archive, built once per process.
fn busybox_tarball() -> &'static [u8] {
    static TARBALL: OnceLock<Vec<u8>> = OnceLock::new();
    TARBALL.get_or_init(|| {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} is missing: install busybox-static (scripts/install-deps)"
        );
        let scratch = tempfile::Builder::new()
            .prefix("mcp-test-rootfs-")
            .tempdir_in(std::env::temp_dir())
            .expect("create rootfs scratch dir");
        let rootfs = scratch.path().join("rootfs");
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin).expect("create rootfs/bin");
        fs::create_dir_all(rootfs.join("etc")).expect("create rootfs/etc");
        fs::create_dir_all(rootfs.join("tmp")).expect("create rootfs/tmp");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
                .expect("chmod rootfs/tmp");
        }
        fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("link applet");
        }
        let out = Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .args(["-cf", "-", "."])
            .stdin(Stdio::null())
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar of the busybox rootfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    })
}

/// Whether the API service on `socket` answers `GET /_ping` with 200 and `OK`.
fn ping(socket: &Path) -> bool {
    matches!(
        http_over_unix(socket, "GET", "/_ping", Duration::from_secs(2)),
        Ok((200, body)) if body.trim() == "OK"
    )
}

/// A raw HTTP/1.1 request (`Connection: close`) over a unix socket.
fn http_over_unix(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    exchange_http(&mut stream, request.as_bytes(), timeout)
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size_line, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| "truncated chunk header".to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("bad chunk size {size_hex:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| "truncated chunk".to_string())?;
        out.push_str(chunk);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
}

/// SIGTERM (through the `kill` command) to a child we spawned and have not reaped, so
/// the pid cannot belong to anyone else; waits for it, SIGKILL after the deadline.
fn stop_child(child: &mut Child) -> Result<(), String> {
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    let pid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .stdin(Stdio::null())
        .output();
    let mut error = match kill {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "kill -TERM {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("kill -TERM {pid}: {e}")),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return error.map_or(Ok(()), Err),
            Ok(None) if start.elapsed() < SERVICE_STOP_DEADLINE => sleep(SERVICE_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                error.get_or_insert_with(|| {
                    format!(
                        "podman service {pid} did not exit within {SERVICE_STOP_DEADLINE:?} \
                         of SIGTERM; killed"
                    )
                });
                return error.map_or(Ok(()), Err);
            }
            Err(e) => return Err(format!("wait for podman service {pid}: {e}")),
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mounts.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let table = fs::read_to_string("/proc/self/mounts").map_err(|e| format!("read mounts: {e}"))?;
    Ok(table
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect())
}

/// /proc/self/mounts writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn umount(path: &Path) -> Result<(), String> {
    let run = |args: &[&str]| {
        Command::new("umount")
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .output()
    };
    match run(&[]) {
        Ok(out) if out.status.success() => Ok(()),
        first => {
            let why = match first {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            match run(&["-l"]) {
                Ok(out) if out.status.success() => Err(format!(
                    "umount {}: {why}; detached it lazily (umount -l)",
                    path.display()
                )),
                Ok(out) => Err(format!(
                    "umount {}: {why}; umount -l: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(format!("umount {}: {why}; umount -l: {e}", path.display())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A private Caddy per test.
// ---------------------------------------------------------------------------------------

/// How long Caddy may take to answer on its admin socket after it is spawned.
const CADDY_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long one request of the harness to Caddy's admin API or listeners may take.
const CADDY_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Environment variables that would change where Caddy's admin endpoint listens.
const CADDY_ENV_OVERRIDES: &[&str] = &["CADDY_ADMIN"];

/// A Caddy of the test's own: `caddy run` on a config holding only its admin endpoint,
/// a unix socket inside the test's temporary directory, with HOME and the XDG dirs
/// there too (Caddy keeps its storage and autosaved config under them). Dropping it
/// stops the process it started (by pid) and deletes the directory.
pub struct PrivateCaddy {
    /// `None` only once `Drop` has taken it to delete it.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// The running `caddy run`, if any.
    child: Option<Child>,
}

impl PrivateCaddy {
    /// Creates the temporary directory, writes the initial config, starts Caddy and
    /// waits (up to 20 s) until `GET /config/` answers on the admin socket.
    pub fn start() -> PrivateCaddy {
        let dir = tempfile::Builder::new()
            .prefix("mcp-caddy-")
            .tempdir_in(std::env::temp_dir())
            .expect("create the test's temporary directory");
        let path = dir.path().to_path_buf();
        let mut caddy = PrivateCaddy {
            dir: Some(dir),
            path,
            child: None,
        };
        let config = serde_json::json!({
            "admin": { "listen": format!("unix/{}", caddy.admin_socket().display()) }
        });
        fs::write(caddy.config_path(), config.to_string()).expect("write caddy.json");
        caddy.start_process();
        caddy
    }

    /// The temporary directory that holds everything of this Caddy.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The admin API's unix socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.path.join("admin.sock")
    }

    /// The initial config: the admin endpoint and nothing else.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("caddy.json")
    }

    /// Caddy's combined stdout and stderr, JSON lines (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.path.join("caddy.log")
    }

    /// Caddy's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The pid of the running Caddy, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops Caddy (SIGTERM to its pid, SIGKILL after 15 s); panics if that fails.
    /// Caddy removes its admin socket as it exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = stop_child(&mut child) {
                panic!("stopping caddy: {e}");
            }
        }
    }

    /// Stops Caddy if it runs and starts it again on the initial config: whatever was
    /// configured through the admin API is gone, the admin socket is the same.
    pub fn restart(&mut self) {
        self.stop();
        self.start_process();
    }

    /// Starts Caddy after [`Self::stop`], on the initial config; waits for its admin socket.
    pub fn start_again(&mut self) {
        self.start_process();
    }

    /// The JSON at `path` of Caddy's config, or why it could not be read (Caddy down).
    pub fn try_get(&self, path: &str) -> Result<serde_json::Value, String> {
        match caddy_admin(
            &self.admin_socket(),
            "GET",
            path,
            None,
            CADDY_REQUEST_TIMEOUT,
        )? {
            (200, text) => {
                serde_json::from_str(&text).map_err(|e| format!("bad JSON ({e}): {text}"))
            }
            (status, text) => Err(format!("caddy admin GET {path} answered {status}: {text}")),
        }
    }

    /// One request to the admin API (empty `Host`, as Caddy 2.6 on a unix socket
    /// wants); `body` is sent as JSON. Returns the status code and the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        caddy_admin(
            &self.admin_socket(),
            method,
            path,
            body,
            CADDY_REQUEST_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("caddy admin {method} {path}: {e}"))
    }

    /// Like [`Self::api`], and panics (with Caddy's answer) unless the status is 2xx.
    pub fn api_ok(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let (status, text) = self.api(method, path, body);
        assert!(
            (200..300).contains(&status),
            "caddy admin {method} {path} answered {status}: {text}"
        );
        text
    }

    /// The JSON at `path` of Caddy's config (`/config/…`).
    pub fn get(&self, path: &str) -> serde_json::Value {
        let text = self.api_ok("GET", path, None);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("caddy admin GET {path}: bad JSON ({e}): {text}"))
    }

    /// Caddy's whole running config.
    pub fn config(&self) -> serde_json::Value {
        self.get("/config/")
    }

    /// How many admin requests other than GET Caddy has logged so far (its `admin.api`
    /// logger writes one "received request" line per request, at the default level).
    pub fn admin_writes(&self) -> usize {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["logger"] == "admin.api" && v["msg"] == "received request")
            .filter(|v| v["method"].as_str().is_some_and(|m| m != "GET"))
            .count()
    }

    fn start_process(&mut self) {
        assert!(self.child.is_none(), "caddy is already running");
        // A socket left by a killed Caddy would make the new one fail to listen.
        let socket = self.admin_socket();
        if socket.exists() {
            fs::remove_file(&socket)
                .unwrap_or_else(|e| panic!("remove stale {}: {e}", socket.display()));
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open caddy.log");
        let log_err = log.try_clone().expect("clone caddy.log handle");
        let mut cmd = Command::new("caddy");
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.path)
            .env("HOME", &self.path)
            .env("XDG_DATA_HOME", self.path.join("data"))
            .env("XDG_CONFIG_HOME", self.path.join("config"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for var in CADDY_ENV_OVERRIDES {
            cmd.env_remove(var);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run caddy (apt-get install caddy): {e}"));
        self.child = Some(child);

        let start = Instant::now();
        loop {
            if let Ok((200, _)) =
                caddy_admin(&socket, "GET", "/config/", None, Duration::from_secs(2))
            {
                return;
            }
            let child = self.child.as_mut().expect("child just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "caddy exited ({status}) before its admin socket answered:\n{}",
                    self.log()
                );
            }
            if start.elapsed() >= CADDY_START_DEADLINE {
                panic!(
                    "caddy's admin socket {} did not answer within {CADDY_START_DEADLINE:?}:\n{}",
                    socket.display(),
                    self.log()
                );
            }
            sleep(SERVICE_POLL);
        }
    }
}

impl Drop for PrivateCaddy {
    fn drop(&mut self) {
        let mut errors: Vec<String> = Vec::new();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "PrivateCaddy {}: last lines of caddy's log:\n{}",
                self.path.display(),
                tail.join("\n")
            );
        }
        // Only the process we started, by its pid.
        if let Some(mut child) = self.child.take() {
            if let Err(e) = stop_child(&mut child) {
                errors.push(e);
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                errors.push(format!("remove {}: {e}", self.path.display()));
            }
        }
        if !errors.is_empty() {
            eprintln!(
                "PrivateCaddy {}: cleanup errors:\n  {}",
                self.path.display(),
                errors.join("\n  ")
            );
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with 200 and `body`, on a
/// thread of its own for the rest of the test process. Returns its port.
pub fn serve_text(body: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    let body = body.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(CADDY_REQUEST_TIMEOUT));
            // Read the request head (GETs only: no body), then answer and close.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    port
}

/// `GET path` with `Host: host` to 127.0.0.1:`port` (`Connection: close`); the status
/// and the body.
pub fn http_get(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange_http(&mut stream, request.as_bytes(), CADDY_REQUEST_TIMEOUT)
}

/// One request to Caddy's admin API over its unix socket, with the empty `Host` header
/// Caddy 2.6 accepts there.
fn caddy_admin(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let body = body.unwrap_or("");
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: \r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange_http(&mut stream, request.as_bytes(), timeout)
}

/// Writes a raw HTTP/1.1 request (which asks for `Connection: close`), reads the answer
/// to its end and returns its status and (de-chunked) body.
fn exchange_http<S: Read + Write + TimeoutStream>(
    stream: &mut S,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, String), String> {
    stream
        .set_timeouts(timeout)
        .map_err(|e| format!("set timeout: {e}"))?;
    stream
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The streams [`exchange_http`] works on: read and write timeouts in one call.
trait TimeoutStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()>;
}

impl TimeoutStream for UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl TimeoutStream for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

// ---------------------------------------------------------------------------------------
// A private pebble (a real ACME server) per test.
// ---------------------------------------------------------------------------------------

/// How long pebble and pebble-challtestsrv may take to listen after they are spawned.
const PEBBLE_START_DEADLINE: Duration = Duration::from_secs(20);

/// pebble with a pebble-challtestsrv beside it as its DNS server (every name resolves to
/// 127.0.0.1), both on loopback ports of their own, with a TLS certificate for pebble
/// made at start (by openssl, signed by a CA of the test's own: [`Self::ca_bundle`]).
/// HTTP-01 is validated against `http_port` on 127.0.0.1, where the test's Caddy
/// listens. Dropping it stops both processes (by pid) and deletes the directory.
pub struct PrivatePebble {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    pub acme_port: u16,
    pub management_port: u16,
    dns_port: u16,
    challtestsrv_port: u16,
    env: Vec<(String, String)>,
    roots: usize,
}

impl PrivatePebble {
    /// Starts challtestsrv and pebble (`PEBBLE_VA_NOSLEEP=1`, real validation) and waits
    /// until both listen.
    pub fn start(http_port: u16) -> PrivatePebble {
        Self::start_with(http_port, &[("PEBBLE_VA_NOSLEEP", "1")])
    }

    /// [`Self::start`] with pebble's environment given (`PEBBLE_*` variables).
    pub fn start_with(http_port: u16, env: &[(&str, &str)]) -> PrivatePebble {
        let dir = tempfile::Builder::new()
            .prefix("mcp-pebble-")
            .tempdir_in(std::env::temp_dir())
            .expect("create the test's temporary directory");
        let path = dir.path().to_path_buf();
        let mut p = PrivatePebble {
            dir: Some(dir),
            path,
            pebble: None,
            challtestsrv: None,
            acme_port: free_port(),
            management_port: free_port(),
            dns_port: free_port(),
            challtestsrv_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            roots: 0,
        };
        p.make_certificates();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", p.acme_port),
                "managementListenAddress": format!("127.0.0.1:{}", p.management_port),
                "certificate": p.path.join("cert.pem"),
                "privateKey": p.path.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        fs::write(p.path.join("pebble.json"), config.to_string()).expect("write pebble.json");
        p.start_challtestsrv();
        p.start_pebble();
        p
    }

    /// The ACME directory: `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA that signed pebble's own TLS certificate (what `[certs] ca_bundle` needs).
    pub fn ca_bundle(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    /// pebble's output so far (appended to across restarts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.path.join("pebble.log")).unwrap_or_default()
    }

    /// How many orders pebble has created (its log names each one it adds).
    pub fn orders(&self) -> usize {
        self.log()
            .lines()
            // Orders pebble created, not requests to create one: pebble rejects 5 % of
            // nonces on purpose and the client then posts the same new-order again.
            .filter(|l| l.contains("Added order \""))
            .count()
    }

    /// The root that signs what pebble issues (new at every pebble start), fetched from
    /// the management interface into a file of its own; its path.
    pub fn root(&mut self) -> PathBuf {
        self.roots += 1;
        let out = self.path.join(format!("root-{}.pem", self.roots));
        let status = Command::new("curl")
            .args(["-sSf", "--max-time", "10", "--cacert"])
            .arg(self.ca_bundle())
            .arg("-o")
            .arg(&out)
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .stdin(Stdio::null())
            .status()
            .expect("run curl");
        assert!(status.success(), "cannot fetch pebble's root");
        out
    }

    /// Stops pebble (challtestsrv keeps running). Pebble forgets every account, order
    /// and its root.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            stop_child(&mut child).unwrap_or_else(|e| panic!("stopping pebble: {e}"));
        }
    }

    /// Starts pebble again on the same ports.
    pub fn start_pebble(&mut self) {
        assert!(self.pebble.is_none(), "pebble is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join("pebble.log"))
            .expect("open pebble.log");
        let log_err = log.try_clone().expect("clone pebble.log handle");
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(self.path.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pebble (apt-get install pebble): {e}"));
        self.pebble = Some(child);
        let port = self.acme_port;
        self.wait_listening("pebble", port, |p| p.pebble.as_mut());
        let port = self.management_port;
        self.wait_listening("pebble's management interface", port, |p| p.pebble.as_mut());
    }

    fn start_challtestsrv(&mut self) {
        let log =
            fs::File::create(self.path.join("challtestsrv.log")).expect("create challtestsrv.log");
        let log_err = log.try_clone().expect("clone challtestsrv.log handle");
        let child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.challtestsrv_port),
            ])
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pebble-challtestsrv: {e}"));
        self.challtestsrv = Some(child);
        let port = self.challtestsrv_port;
        self.wait_listening("pebble-challtestsrv", port, |p| p.challtestsrv.as_mut());
    }

    fn wait_listening(
        &mut self,
        what: &str,
        port: u16,
        child: impl Fn(&mut Self) -> Option<&mut Child>,
    ) {
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(c) = child(self) {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "{what} exited ({status}) before listening on {port}:\n{}\n{}",
                        self.log(),
                        fs::read_to_string(self.path.join("challtestsrv.log")).unwrap_or_default()
                    );
                }
            }
            if start.elapsed() > PEBBLE_START_DEADLINE {
                panic!("{what} did not listen on 127.0.0.1:{port} within {PEBBLE_START_DEADLINE:?}:\n{}", self.log());
            }
            sleep(SERVICE_POLL);
        }
    }

    /// A CA and a certificate it signs for localhost and 127.0.0.1 (pebble's TLS).
    fn make_certificates(&self) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.path)
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mcp test pebble CA",
        ]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&csr);
        fs::write(
            self.path.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write leaf.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
    }
}

impl Drop for PrivatePebble {
    fn drop(&mut self) {
        let mut errors: Vec<String> = Vec::new();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "PrivatePebble {}: last lines of pebble's log:\n{}",
                self.path.display(),
                tail.join("\n")
            );
        }
        for child in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            if let Err(e) = stop_child(&mut child) {
                errors.push(e);
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                errors.push(format!("remove {}: {e}", self.path.display()));
            }
        }
        if !errors.is_empty() {
            eprintln!(
                "PrivatePebble {}: cleanup errors:\n  {}",
                self.path.display(),
                errors.join("\n  ")
            );
        }
    }
}

/// `GET https://<host>:<port><path>` through 127.0.0.1 (curl `--resolve`), verified
/// against `cacert` with SNI = `host`; the status and the body.
pub fn https_get(
    host: &str,
    port: u16,
    path: &str,
    cacert: &Path,
) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(cacert)
        .arg(format!("https://{host}:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl https://{host}:{port}{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code
        .trim()
        .parse()
        .map_err(|_| format!("no status in curl's output: {text:?}"))?;
    Ok((code, body.to_string()))
}

/// The serial (lowercase hex, no leading zeros) of the certificate served on
/// 127.0.0.1:`port` for SNI `host`, read with `openssl s_client`.
pub fn served_serial(host: &str, port: u16) -> Result<String, String> {
    let hello = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", host])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run openssl s_client: {e}"))?;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run openssl x509: {e}"))?;
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(&hello.stdout)
        .map_err(|e| format!("write to openssl x509: {e}"))?;
    let out = x509.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let serial = text
        .trim()
        .strip_prefix("serial=")
        .ok_or_else(|| {
            format!(
                "no certificate served for {host}: {}",
                String::from_utf8_lossy(&hello.stderr).trim()
            )
        })?
        .to_ascii_lowercase();
    let serial = serial.trim_start_matches('0');
    Ok(if serial.is_empty() {
        "0".into()
    } else {
        serial.to_string()
    })
}
