//! What every live benchmark needs: the real `mcp-agent` binary with a config of its own,
//! generated service files, /proc readings, statistics, and sleeps that give way to
//! Ctrl-C (so that every private podman is still torn down by its `Drop`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::PrivatePodman;

/// The node name stamped on the agent's containers in every benchmark.
pub const NODE: &str = "bench";
/// The image every benchmark container runs (busybox, imported from /bin/busybox).
pub const IMAGE: &str = "localhost/busybox:latest";
/// How long a daemon may take to log that its first pass is done.
const READY_DEADLINE: Duration = Duration::from_secs(120);

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes SIGINT and SIGTERM set a flag instead of killing the process: the benchmark then
/// panics at its next sleep, and unwinding drops (and so cleans up) every private podman
/// and daemon it started.
pub fn catch_signals() {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).expect("install signal handler");
    }
}

/// Panics (and so cleans up) if the process was asked to stop.
pub fn check_interrupted() {
    if INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed)) {
        panic!("interrupted: cleaning up");
    }
}

/// Sleeps `d`, waking every 100 ms to honour Ctrl-C.
pub fn nap(d: Duration) {
    let end = Instant::now() + d;
    loop {
        check_interrupted();
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// The `mcp-agent` binary under test: `$MCP_AGENT_BIN` if set (to compare two builds),
/// else the one cargo built for this benchmark.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("MCP_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mcp-agent")))
}

/// An agent's own directory, config and registry, pointed at a private podman (or at a
/// proxy in front of it).
pub struct Agent {
    dir: tempfile::TempDir,
    socket: String,
    cli: Vec<String>,
    env: Vec<(String, String)>,
}

impl Agent {
    /// `reconcile` is the body of the `[reconcile]` table (TOML lines).
    pub fn new(podman: &PrivatePodman, socket: &str, reconcile: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("mcp-bench-agent-")
            .tempdir()
            .expect("agent temp dir");
        fs::create_dir_all(dir.path().join("state")).expect("state dir");
        fs::create_dir_all(dir.path().join("services")).expect("services dir");
        let agent = Agent {
            dir,
            socket: socket.to_string(),
            cli: podman.cli_argv(),
            env: podman.env(),
        };
        agent.configure(reconcile);
        agent
    }

    /// Rewrites the config with another `[reconcile]` body (for the next process started).
    /// Components stay on podman's bridge (`service_default = false`): the figures in
    /// BENCHMARKS.md were measured there, and a network per service is machine-wide.
    pub fn configure(&self, reconcile: &str) {
        let cli: Vec<String> = self.cli.iter().map(|a| format!("{a:?}")).collect();
        let text = format!(
            "[agent]\nnode = \"{NODE}\"\n\n[database]\npath = \"state/registry.db\"\n\n\
             [podman]\nsocket = \"{}\"\ncli = [{}]\n\n[networks]\nservice_default = false\n\n\
             [reconcile]\n{reconcile}\n",
            self.socket,
            cli.join(", ")
        );
        fs::write(self.config(), text).expect("write agent config");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("mcp-agent.toml")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(agent_bin());
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("MCP_AGENT_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null());
        c
    }

    /// Runs the agent to completion; panics with its output unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run mcp-agent");
        if !out.status.success() {
            panic!(
                "mcp-agent {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `files` (name, text) into a fresh services directory and applies it.
    pub fn apply(&self, files: &[(String, String)]) {
        let dir = self.dir.path().join("services");
        for entry in fs::read_dir(&dir).expect("read services dir") {
            fs::remove_file(entry.expect("dir entry").path()).expect("remove old service file");
        }
        for (name, text) in files {
            fs::write(dir.join(name), text).expect("write service file");
        }
        self.ok(&["apply", dir.to_str().expect("utf-8 path")]);
    }

    /// Starts `mcp-agent run` with its log in the agent's directory and waits until it
    /// logs that its first pass is done. `$MCP_BENCH_DAEMON_LOG` overrides `log_level`
    /// (e.g. `mcp_agent=debug` to see why a repair waited).
    pub fn start_daemon(&self, log_level: &str) -> Daemon {
        let log_level = std::env::var("MCP_BENCH_DAEMON_LOG").unwrap_or_else(|_| log_level.into());
        let log_level = log_level.as_str();
        let log = self.dir.path().join("daemon.log");
        let file = fs::File::create(&log).expect("daemon log");
        let child = self
            .command(&["--log-format", "text", "--log-level", log_level, "run"])
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn mcp-agent run");
        let mut d = Daemon { child, log };
        let start = Instant::now();
        while !d.log().contains("first pass done") {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("mcp-agent run exited early ({st}):\n{}", d.log());
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "mcp-agent run not ready after {READY_DEADLINE:?}:\n{}",
                    d.log()
                );
            }
            nap(Duration::from_millis(20));
        }
        d
    }
}

/// A running `mcp-agent run`; SIGTERM (then SIGKILL) by its pid when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Copies the daemon's log into the output directory.
    pub fn save_log(&self, out: &Path, name: &str) {
        write_result(out, name, &self.log());
    }

    /// CPU time (user + system) and memory of the process, from /proc.
    pub fn usage(&self) -> ProcUsage {
        ProcUsage::of(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(12);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One reading of /proc/<pid>/stat and /proc/<pid>/status.
#[derive(Debug, Clone, Copy)]
pub struct ProcUsage {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl ProcUsage {
    pub fn of(pid: u32) -> ProcUsage {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
        // Fields after the command name (which may hold spaces) start at ") ".
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
        let ticks: u64 =
            f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ProcUsage {
            cpu_s: ticks as f64 / clock_ticks() as f64,
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
        }
    }
}

/// CPU seconds (user + system) of this process's children that it has waited for, and
/// theirs (`cutime + cstime` of /proc/self/stat): what a run of the agent, or of podman CLI
/// commands, cost in CPU, their own children included.
pub fn children_cpu_s() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[13].parse::<u64>().expect("cutime") + f[14].parse::<u64>().expect("cstime");
    ticks as f64 / clock_ticks() as f64
}

/// `getconf CLK_TCK` (100 on Linux; asked, not assumed).
pub fn clock_ticks() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Service files holding `n` components in services of up to `per_service`: service
/// `<prefix>NN`, components `cNN`, busybox `sleep infinity`, restart policy "no".
///
/// `routes`: one L7 route per component (route `http`, container port 8080, so `PORT=8080`
/// in its env; hostname `<container>.bench.test`). The agent allocates their host ports
/// and registers them with its proxy; `mass.rs` starts the Caddy for that.
pub fn service_files(
    prefix: &str,
    n: usize,
    per_service: usize,
    routes: bool,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut made = 0;
    let mut s = 0;
    while made < n {
        let k = per_service.min(n - made);
        let name = format!("{prefix}{s:02}");
        let mut text = format!("name = \"{name}\"\n");
        for c in 0..k {
            let _ = write!(
                text,
                "\n[[components]]\nname = \"c{c:02}\"\nimage = \"{IMAGE}\"\n\
                 env = {{ BENCH = \"mass\" }}\n"
            );
            if routes {
                let _ = write!(
                    text,
                    "\n[[components.routes]]\nname = \"http\"\nport = 8080\nmode = \"l7\"\n\
                     hostname = \"{name}-c{c:02}.bench.test\"\n"
                );
            }
        }
        files.push((format!("{name}.toml"), text));
        made += k;
        s += 1;
    }
    files
}

/// Median, 95th percentile (nearest rank) and extremes of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(sample: &[f64]) -> Stats {
        if sample.is_empty() {
            return Stats::default();
        }
        let mut v = sample.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        Stats {
            n,
            median,
            p95: v[rank - 1],
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n, "median": self.median, "p95": self.p95,
            "min": self.min, "max": self.max, "mean": self.mean,
        })
    }
}

/// A private podman with the busybox image, ready for the agent.
pub fn podman_with_busybox() -> PrivatePodman {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    podman
}

/// Drops (and so tears down) a private podman, then removes its directory again if a
/// late `podman container cleanup` (run by conmon when a container it watched exits)
/// recreated part of it after the teardown; such a straggler holds no mount.
pub fn teardown(podman: PrivatePodman) {
    let dir = podman.dir().to_path_buf();
    drop(podman);
    std::thread::sleep(Duration::from_secs(2));
    if dir.exists() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir_s = dir.display().to_string();
        if !mounts.lines().any(|l| l.contains(&dir_s)) {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Names of the running containers, through the API (one list).
pub fn running_names(podman: &PrivatePodman) -> Vec<String> {
    let (code, body) = podman.api("GET", "/v1.41/containers/json");
    assert_eq!(code, 200, "list containers: {body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("list JSON");
    list.as_array()
        .expect("list is an array")
        .iter()
        .filter(|c| c["State"] == "running")
        .filter_map(|c| c["Names"][0].as_str())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

/// The 1-, 5- and 15-minute load averages, to tell a quiet machine from a busy one.
pub fn loadavg() -> String {
    let l = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Writes a result file into the output directory and says where.
pub fn write_result(out: &Path, name: &str, text: &str) {
    fs::create_dir_all(out).expect("create output directory");
    let p = out.join(name);
    fs::write(&p, text).expect("write result");
    eprintln!("bench: wrote {}", p.display());
}

/// `GET path` over a unix socket (HTTP/1.1, `Connection: close`): the body, or why not.
pub fn unix_get(socket: &Path, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of a metric's samples in an exposition whose line starts with `name` followed
/// by `{` or a space (all label sets), and whose labels contain `labels` (or any).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| labels.is_empty() || l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A podman network of the benchmark's own (`--disable-dns`, a /24 of 10.213.0.0/16 that
/// no other network holds), so that its containers' addresses are nobody else's: network
/// configs are machine-wide, and private podmans on the default bridge hand out the same
/// addresses. Removed (with `-f`) when dropped; drop it before its podman.
pub struct BenchNetwork {
    pub name: String,
    cli: Vec<String>,
    env: Vec<(String, String)>,
}

impl BenchNetwork {
    pub fn create(podman: &PrivatePodman, name: &str) -> BenchNetwork {
        for third in (7..250).step_by(17) {
            let subnet = format!("10.213.{third}.0/24");
            let out = podman.podman(&[
                "network",
                "create",
                "--disable-dns",
                "--subnet",
                &subnet,
                name,
            ]);
            if out.status.success() {
                eprintln!("bench: network {name} on {subnet}");
                return BenchNetwork {
                    name: name.to_string(),
                    cli: podman.cli_argv(),
                    env: podman.env(),
                };
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("subnet") {
                panic!("podman network create {name}: {err}");
            }
        }
        panic!("no free subnet for network {name} in 10.213.0.0/16");
    }
}

impl Drop for BenchNetwork {
    fn drop(&mut self) {
        let _ = Command::new(&self.cli[0])
            .args(&self.cli[1..])
            .args(["network", "rm", "-f", &self.name])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output();
    }
}
