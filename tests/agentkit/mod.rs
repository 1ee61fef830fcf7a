//! Runs the real `mcp-agent` binary against a test's private podman: a config of the
//! test's own, a registry in its own directory, service files written on the fly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::PrivatePodman;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-agent");
pub const NODE: &str = "testnode";

/// The binary the tests run: this build's, or `MCP_AGENT_BIN` (the soak run against an
/// older build, to see what it finds there).
pub fn bin() -> String {
    std::env::var("MCP_AGENT_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db: PathBuf,
    env: Vec<(String, String)>,
}

impl Agent {
    /// An agent for `podman`, with `extra` TOML appended to its config.
    ///
    /// Unless `extra` has a `[networks]` table, the config says `service_default = false`:
    /// rootful podman's networks are machine-wide (ENVIRONMENT.md), and tests running side
    /// by side with the same service names would share `mcp-<service>` (and remove it
    /// under each other). The tests of the default (`tests/networks.rs`) give their own
    /// table, an empty one for the shipped default, with service names of their own.
    pub fn new(podman: &PrivatePodman, extra: &str) -> Agent {
        Self::with_socket(podman, &podman.socket_uri(), extra)
    }

    pub fn with_socket(podman: &PrivatePodman, socket: &str, extra: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("mcp-agent-")
            .tempdir()
            .expect("agent temp dir");
        let db = dir.path().join("state/registry.db");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let cli: Vec<String> = podman.cli_argv().iter().map(|a| format!("{a:?}")).collect();
        let config = dir.path().join("mcp-agent.toml");
        let networks = if extra.contains("[networks]") {
            ""
        } else {
            "[networks]\nservice_default = false\n\n"
        };
        std::fs::write(
            &config,
            format!(
                "[agent]\nnode = \"{NODE}\"\n\n[database]\npath = \"state/registry.db\"\n\n\
                 [podman]\nsocket = \"{socket}\"\ncli = [{}]\n\n{networks}{extra}\n",
                cli.join(", ")
            ),
        )
        .unwrap();
        Agent {
            dir,
            config,
            db,
            env: podman.env(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("MCP_AGENT_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run mcp-agent");
        Run::from(out)
    }

    /// Runs and asserts exit 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "mcp-agent {args:?} failed:\n{r}");
        r
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcp-agent")
    }

    /// Writes a service file into the agent's directory and returns its path.
    pub fn service_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn apply(&self, name: &str, text: &str) -> Run {
        let p = self.service_file(name, text);
        self.ok(&["apply", p.to_str().unwrap()])
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.db).unwrap_or_default()
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The summary line of a `--once` run.
pub fn summary(r: &Run) -> &str {
    r.stdout
        .lines()
        .find(|l| l.starts_with("recovered "))
        .unwrap_or_else(|| panic!("no summary line in:\n{r}"))
}

/// A container's id, from podman.
pub fn container_id(podman: &PrivatePodman, name: &str) -> String {
    podman
        .inspect(name)
        .unwrap_or_else(|| panic!("no container {name}"))["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A running `mcp-agent run`, stopped (SIGTERM, then SIGKILL) when dropped. Its log goes
/// to a file in the agent's directory.
pub struct DaemonProc {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start_daemon(&self, envs: &[(&str, &str)]) -> DaemonProc {
        self.start_daemon_with(&["--log-level", "mcp_agent=debug,info"], envs)
    }

    pub fn start_daemon_with(&self, args: &[&str], envs: &[(&str, &str)]) -> DaemonProc {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut args = args.to_vec();
        args.push("run");
        let mut c = self.command(&args);
        c.stdout(file.try_clone().unwrap()).stderr(file);
        for (k, v) in envs {
            c.env(k, v);
        }
        DaemonProc {
            child: c.spawn().expect("spawn mcp-agent run"),
            log,
        }
    }
}

impl DaemonProc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, up to `deadline`; its exit code.
    pub fn wait_exit(&mut self, deadline: std::time::Duration) -> Option<i32> {
        let end = std::time::Instant::now() + deadline;
        while std::time::Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then waits up to `deadline` for the exit: the exit code (if it exited)
    /// and how long after the signal it did (or the whole deadline).
    pub fn terminate(
        &mut self,
        deadline: std::time::Duration,
    ) -> (Option<i32>, std::time::Duration) {
        let t = std::time::Instant::now();
        self.signal("TERM");
        let code = self.wait_exit(deadline);
        (code, t.elapsed())
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            if self.wait_exit(std::time::Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- mcp-agent log ({}):\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// One container event from podman's event log.
#[derive(Debug, Clone)]
pub struct PodmanEvent {
    pub name: String,
    /// podman's status word: `create`, `init`, `start`, `kill`, `died`, `stop`, `remove`…
    pub status: String,
    pub time: std::time::SystemTime,
}

/// Container events of podman's event log at or after `since` whose status is one of
/// `statuses` (all of them when empty), oldest first. Names are matched by the caller:
/// podman's own `container=` filter also matches id prefixes.
pub fn events(
    podman: &PrivatePodman,
    since: std::time::SystemTime,
    statuses: &[&str],
) -> Vec<PodmanEvent> {
    let since_s = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let since_arg = since_s.to_string();
    let mut args = vec![
        "events",
        "--stream=false",
        "--since",
        &since_arg,
        "--filter",
        "type=container",
        "--format",
        "json",
    ];
    let filters: Vec<String> = statuses.iter().map(|s| format!("event={s}")).collect();
    for f in &filters {
        args.extend(["--filter", f.as_str()]);
    }
    let json = podman.podman_ok(&args);
    let mut out: Vec<PodmanEvent> = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(PodmanEvent {
                name: v["Name"].as_str()?.to_string(),
                status: v["Status"].as_str()?.to_string(),
                time: humantime::parse_rfc3339(v["Time"].as_str()?).ok()?,
            })
        })
        .filter(|e| e.time >= since)
        .filter(|e| statuses.is_empty() || statuses.contains(&e.status.as_str()))
        .collect();
    out.sort_by_key(|e| e.time);
    out
}

/// Start events of a container, from podman's event log, as seconds since `since`.
pub fn start_times(podman: &PrivatePodman, name: &str, since: std::time::SystemTime) -> Vec<f64> {
    events(podman, since, &["start"])
        .iter()
        .filter(|e| e.name == name)
        .map(|e| e.time.duration_since(since).unwrap().as_secs_f64())
        .collect()
}

/// An sd_notify socket (`NOTIFY_SOCKET`) in `dir`: a thread records every datagram with
/// its arrival time; [`Self::until`] reads them in order.
pub struct NotifySocket {
    pub path: PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    /// How many of `seen` [`Self::until`] has read.
    read: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        use std::sync::atomic::Ordering;
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen2.lock().unwrap().push((std::time::Instant::now(), msg));
                }
            }
        });
        NotifySocket {
            path,
            seen,
            read: 0,
            stop,
        }
    }

    /// Reads messages (from where the last call stopped) until one has a line equal to
    /// or starting with `what`, or the deadline passes.
    pub fn until(&mut self, what: &str, deadline: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + deadline;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                while self.read < seen.len() {
                    let msg = &seen[self.read].1;
                    self.read += 1;
                    if msg.lines().any(|l| l == what || l.starts_with(what)) {
                        return true;
                    }
                }
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The last message [`Self::until`] read.
    pub fn last_read(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        self.read.checked_sub(1).map(|i| seen[i].1.clone())
    }

    /// Arrival times of the messages (read or not) with a line equal to `what`.
    pub fn times(&self, what: &str) -> Vec<std::time::Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == what))
            .map(|(t, _)| *t)
            .collect()
    }

    /// How many messages (read or not) arrived at or after `after` with a line `what`.
    pub fn count(&self, what: &str, after: std::time::Instant) -> usize {
        self.times(what).iter().filter(|t| **t >= after).count()
    }

    /// The value of the last `STATUS=` line received so far, if any.
    pub fn last_status(&self) -> Option<String> {
        self.seen.lock().unwrap().iter().rev().find_map(|(_, m)| {
            m.lines()
                .rev()
                .find_map(|l| l.strip_prefix("STATUS=").map(String::from))
        })
    }

    /// Every message received so far, one line each (`|` for newlines), for failures.
    pub fn messages(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.replace('\n', "|"))
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Another process's write transaction on a registry (this test process is not the
/// agent's): `BEGIN IMMEDIATE` on a connection of its own, held until dropped (rolled
/// back). Readers are not blocked (the registry is in WAL mode); every writer waits.
pub struct RegistryWriteLock {
    conn: rusqlite::Connection,
}

impl RegistryWriteLock {
    pub fn hold(db: &Path) -> RegistryWriteLock {
        let conn = rusqlite::Connection::open(db).expect("open the registry");
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE services SET updated_ms = updated_ms;")
            .expect("take the registry's write lock");
        RegistryWriteLock { conn }
    }
}

impl Drop for RegistryWriteLock {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}
