//! The chaos soak (`scripts/soak`; issue 19): the real daemon against a private podman
//! and Caddy, faults thrown at it from a seeded schedule, invariants checked all along
//! and after each round's faults stop.
//!
//! `#[ignore]`d: `scripts/soak [--seed N[,N…]] [--duration D] [--components N]` runs it
//! (environment `MCP_SOAK_SEEDS`, `MCP_SOAK_DURATION`, `MCP_SOAK_COMPONENTS`,
//! `MCP_SOAK_ROUND`, `MCP_SOAK_REPORT`; `MCP_AGENT_BIN` runs another build). A seed fixes the fault schedule
//! (kinds, targets, times, durations) exactly; what the machine does with it is timing.
//!
//! Each seed runs in a world of its own: a private podman behind a socket relay of the
//! soak's (so that the event stream can be cut), a private Caddy, a registry with
//! services of two components each (an L7 route served through Caddy, an L4 route), a
//! few bystander containers without the agent's labels, and the daemon with a
//! notification socket and a 4 s watchdog. Rounds follow: a window of faults, then the
//! wait for convergence and the checks. See README "Chaos soak" for what is checked.
mod agentkit;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use agentkit::{Agent, DaemonProc, NotifySocket, RegistryWriteLock, NODE};
use common::relay::Relay;
use common::{free_port, http_get, PrivateCaddy, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";
/// systemd's WatchdogSec for the daemon: WATCHDOG=1 is due every half of it.
const WATCHDOG: Duration = Duration::from_secs(4);
/// After the last fault, the world must be converged within this, or it is a violation.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(90);
/// The goal (issue 19): converged within this after the last fault, podman's own restart aside.
const CONVERGE_GOAL: Duration = Duration::from_secs(10);
/// SIGTERM must end the daemon within this (README "Signals").
const TERM_DEADLINE: Duration = Duration::from_secs(10);
/// Every CLI command the soak runs (podman, mcp-agent) is killed after this.
const CLI_TIMEOUT: &str = "60";

// ---------------------------------------------------------------- settings and randomness

struct Settings {
    seeds: Vec<u64>,
    duration: Duration,
    round: Duration,
    components: usize,
    report: Option<PathBuf>,
    /// Fault kinds left out (`--without AgentTerm,AgentKill`), by their names.
    without: BTreeSet<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let dur = |k: &str, d: &str| {
            humantime::parse_duration(&var(k).unwrap_or_else(|| d.into()))
                .unwrap_or_else(|e| panic!("{k}: {e}"))
        };
        Settings {
            seeds: var("MCP_SOAK_SEEDS")
                .unwrap_or_else(|| "1".into())
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("seed {s:?}: {e}"))
                })
                .collect(),
            duration: dur("MCP_SOAK_DURATION", "60s"),
            round: dur("MCP_SOAK_ROUND", "30s"),
            components: var("MCP_SOAK_COMPONENTS")
                .map(|v| v.parse().expect("MCP_SOAK_COMPONENTS"))
                .unwrap_or(8),
            report: var("MCP_SOAK_REPORT").map(PathBuf::from),
            without: var("MCP_SOAK_WITHOUT")
                .unwrap_or_default()
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }
}

/// SplitMix64: small, exact, the same schedule for a seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

// ---------------------------------------------------------------- faults

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    RmForce,
    KillMain,
    Stop,
    ForeignName,
    ForeignPort,
    Looper,
    PodmanRestart,
    PodmanFreeze,
    DatabaseLoss,
    EventCut,
    CliBurst,
    SqliteReader,
    WriteLock,
    Sighups,
    AgentTerm,
    AgentKill,
    CaddyRestart,
    CaddyDown,
}

/// (kind, weight): container faults are the common ones, as on a real machine.
const WEIGHTS: &[(Kind, u64)] = &[
    (Kind::RmForce, 8),
    (Kind::KillMain, 8),
    (Kind::Stop, 5),
    (Kind::ForeignName, 3),
    (Kind::ForeignPort, 3),
    (Kind::Looper, 2),
    (Kind::PodmanRestart, 2),
    (Kind::PodmanFreeze, 2),
    (Kind::DatabaseLoss, 2),
    (Kind::EventCut, 3),
    (Kind::CliBurst, 5),
    (Kind::SqliteReader, 3),
    (Kind::WriteLock, 2),
    (Kind::Sighups, 3),
    (Kind::AgentTerm, 2),
    (Kind::AgentKill, 2),
    (Kind::CaddyRestart, 2),
    (Kind::CaddyDown, 2),
];

#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    /// From the start of the round's window.
    at: Duration,
    /// How long it lasts, for the faults that hold something.
    hold: Duration,
    /// Which component (index) or service it aims at, where it aims.
    target: usize,
    /// More randomness for the fault's own choices (the burst's commands).
    salt: u64,
}

/// The faults of one round: arrivals about every `gap` over `window`, several at once at
/// times (a quarter of the arrivals bring a second fault at the same moment).
fn schedule(
    rng: &mut Rng,
    window: Duration,
    components: usize,
    without: &BTreeSet<String>,
) -> Vec<Fault> {
    for k in without {
        assert!(
            WEIGHTS.iter().any(|(w, _)| format!("{w:?}") == *k),
            "--without: no fault kind {k:?} (kinds: {:?})",
            WEIGHTS.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }
    let weights: Vec<(Kind, u64)> = WEIGHTS
        .iter()
        .filter(|(k, _)| !without.contains(&format!("{k:?}")))
        .copied()
        .collect();
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let mut faults = Vec::new();
    let mut t = rng.millis(200, 1500);
    let end = window.saturating_sub(Duration::from_secs(1));
    while t < end {
        let n = if rng.below(4) == 0 { 2 } else { 1 };
        for _ in 0..n {
            let mut pick = rng.below(total);
            let kind = weights
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .expect("a weight")
                .0;
            let max_hold = match kind {
                Kind::PodmanFreeze => 90_000,
                Kind::WriteLock => 30_000,
                Kind::CaddyDown | Kind::ForeignName | Kind::ForeignPort | Kind::Looper => 15_000,
                Kind::SqliteReader => 5_000,
                _ => 0,
            };
            // Every hold ends inside the window: the round's faults stop at its end.
            let room = end.saturating_sub(t).as_millis() as u64;
            let hold = rng.millis(500.min(room), max_hold.min(room));
            faults.push(Fault {
                kind,
                at: t,
                hold,
                target: rng.below(components as u64) as usize,
                salt: rng.next(),
            });
        }
        t += rng.millis(500, 4000);
    }
    faults
}

// ---------------------------------------------------------------- the world

/// What the registry should say of one service, as the soak's own CLI calls left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Active,
    Stopped,
    Removed,
}

#[derive(Debug, Clone)]
struct ServiceModel {
    want: Want,
    generation: u64,
}

/// One component of the soak's services.
#[derive(Debug, Clone)]
struct Comp {
    service: String,
    name: String,
    /// `None` for the L4 component.
    hostname: Option<String>,
}

impl Comp {
    fn container(&self) -> String {
        format!("{}-{}", self.service, self.name)
    }
    fn key(&self) -> String {
        format!("{}/{}", self.service, self.name)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Event {
    at: f64,
    round: usize,
    what: String,
    outcome: String,
    took: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Violation {
    at: f64,
    round: usize,
    what: String,
}

/// The podman CLI of the private podman, usable from every thread without a lock.
#[derive(Clone)]
struct Cli {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Result<Output, String> {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", CLI_TIMEOUT])
            .args(&self.argv)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .stdin(Stdio::null());
        c.output().map_err(|e| format!("podman {args:?}: {e}"))
    }
    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "podman {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
    fn inspect(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.ok(&["container", "inspect", name]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.first().cloned()
    }
}

/// A container without the agent's labels, made by the soak: the agent must never touch it.
#[derive(Debug, Clone)]
struct Bystander {
    name: String,
    id: String,
    state: String,
}

/// The daemon's resource use, sampled.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Usage {
    /// (seconds since the start, pid, RSS KiB, CPU seconds of that pid so far).
    samples: Vec<(f64, u32, u64, f64)>,
}

struct World {
    round: AtomicU64,
    start: Instant,
    podman: Mutex<PrivatePodman>,
    api_socket: PathBuf,
    cli: Cli,
    relay: Relay,
    caddy: Mutex<PrivateCaddy>,
    caddy_http: u16,
    agent: Agent,
    daemon: Mutex<Option<DaemonProc>>,
    /// While set, the daemon is being stopped or restarted on purpose.
    agent_restarting: AtomicBool,
    /// When the daemon last started (the watchdog check waits for its first ping).
    daemon_started: Mutex<Instant>,
    notify: Mutex<NotifySocket>,
    comps: Vec<Comp>,
    services: Mutex<BTreeMap<String, ServiceModel>>,
    /// Host port of each route (component key) as first seen; moves are checked against it.
    ports: Mutex<BTreeMap<String, u16>>,
    /// Components whose host port a process of the soak took while they were down: their
    /// route may move, and only theirs.
    ports_taken: Mutex<BTreeSet<String>>,
    bystanders: Mutex<Vec<Bystander>>,
    /// Counts podman database losses; a bystander check spans none.
    losses: AtomicU64,
    events: Mutex<Vec<Event>>,
    violations: Mutex<Vec<Violation>>,
    usage: Mutex<Usage>,
    // One fault at a time of each of these kinds of thing.
    podman_lock: Mutex<()>,
    agent_lock: Mutex<()>,
    caddy_lock: Mutex<()>,
    write_lock: Mutex<()>,
    comp_locks: Vec<Mutex<()>>,
    service_locks: BTreeMap<String, Mutex<()>>,
}

fn service_text(service: &str, generation: u64, comps: &[&Comp]) -> String {
    let mut t = format!("name = \"{service}\"\n");
    for (i, c) in comps.iter().enumerate() {
        let restart = ["always", "no", "on-failure"][(generation as usize + i) % 3];
        let page = format!("{} gen={generation}", c.key());
        write!(
            t,
            "\n[[components]]\nname = \"{}\"\nimage = \"{IMAGE}\"\nrestart = \"{restart}\"\n\
             cmd = [\"sh\", \"-c\", \"trap 'exit 0' TERM; mkdir -p /www && echo {page} > /www/index.html; httpd -f -p $PORT -h /www & wait\"]\n\
             env = {{ GEN = \"{generation}\" }}\n\n[[components.routes]]\nname = \"main\"\nport = 8080\n",
            c.name
        )
        .unwrap();
        match &c.hostname {
            Some(h) => writeln!(t, "hostname = \"{h}\"").unwrap(),
            None => writeln!(t, "mode = \"l4\"").unwrap(),
        }
        // Health checks and dependency order (issue 14): the L4 component's check is an
        // HTTP probe, the L7 one's an exec, and the L7 one is brought up only once the L4
        // one of its service is healthy.
        if c.hostname.is_some() {
            if let Some(dep) = comps.iter().find(|o| o.hostname.is_none()) {
                // (The table goes before the sub-tables: TOML puts it in the component.)
                t.insert_str(
                    t.rfind("\n[[components.routes]]").unwrap(),
                    &format!("\ndepends_on = {{ {} = \"healthy\" }}", dep.name),
                );
            }
            t.push_str(&format!("\n[components.health]\ntest = [\"CMD-SHELL\", \"test -f /www/index.html\"]\n{CHECK_TIMES}"));
        } else {
            t.push_str(&format!("\n[components.health]\nhttp = {{ port = 8080, path = \"/index.html\" }}\n{CHECK_TIMES}"));
        }
    }
    t
}

/// How often the soak's components are checked: often enough that a round's faults meet
/// checks in every state, with three failures in a row to be unhealthy.
const CHECK_TIMES: &str =
    "interval = \"2s\"\ntimeout = \"2s\"\nretries = 3\nstart_interval = \"500ms\"\n";

impl World {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn round(&self) -> usize {
        self.round.load(Ordering::Relaxed) as usize
    }

    fn event(&self, what: String, outcome: String, took: Duration) {
        let e = Event {
            at: self.now() - took.as_secs_f64(),
            round: self.round(),
            what,
            outcome,
            took: took.as_secs_f64(),
        };
        eprintln!(
            "soak: {:>7.2}s r{} {} -> {} ({:.2}s)",
            e.at, e.round, e.what, e.outcome, e.took
        );
        self.events.lock().unwrap().push(e);
    }

    fn violation(&self, what: String) {
        eprintln!("soak: VIOLATION at {:.2}s: {what}", self.now());
        self.violations.lock().unwrap().push(Violation {
            at: self.now(),
            round: self.round(),
            what,
        });
    }

    fn comps_of(&self, service: &str) -> Vec<&Comp> {
        self.comps.iter().filter(|c| c.service == service).collect()
    }

    fn service_file(&self, service: &str, generation: u64) -> PathBuf {
        self.agent.service_file(
            &format!("{service}-{generation}.toml"),
            &service_text(service, generation, &self.comps_of(service)),
        )
    }

    /// `mcp-agent ARGS` as another process would run it: exit code and output.
    fn mcp(&self, args: &[&str]) -> (i32, String) {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", CLI_TIMEOUT]);
        let inner = self.agent.command(args);
        c.arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        match c.stdin(Stdio::null()).output() {
            Ok(o) => (
                o.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (-1, e.to_string()),
        }
    }

    fn start_daemon(&self) {
        let n = self.notify.lock().unwrap().path.clone();
        let d = self.agent.start_daemon(&[
            ("NOTIFY_SOCKET", n.to_str().unwrap()),
            ("WATCHDOG_USEC", &WATCHDOG.as_micros().to_string()),
        ]);
        *self.daemon_started.lock().unwrap() = Instant::now();
        *self.daemon.lock().unwrap() = Some(d);
    }

    fn daemon_pid(&self) -> Option<i32> {
        self.daemon.lock().unwrap().as_ref().map(DaemonProc::pid)
    }
}

// ---------------------------------------------------------------- injecting faults

impl World {
    fn inject(&self, f: &Fault) {
        let t = Instant::now();
        let c = &self.comps[f.target];
        // A foreign holder of the name or port holds the component: the soak's own
        // `rm -f NAME` would remove the foreign container, not the agent's.
        let _held = if matches!(f.kind, Kind::RmForce | Kind::KillMain | Kind::Stop) {
            match self.comp_locks[f.target].try_lock() {
                Ok(g) => Some(g),
                Err(_) => {
                    let what = format!("{:?} on {}", f.kind, c.container());
                    self.event(
                        what,
                        "skipped (a foreign holder has it)".into(),
                        t.elapsed(),
                    );
                    return;
                }
            }
        } else {
            None
        };
        let (what, outcome) = match f.kind {
            Kind::RmForce => (
                format!("podman rm -f {}", c.container()),
                outcome(self.cli.ok(&["rm", "-f", "-t", "0", &c.container()])),
            ),
            Kind::KillMain => (format!("SIGKILL main process of {}", c.container()), {
                match self
                    .cli
                    .inspect(&c.container())
                    .and_then(|v| v["State"]["Pid"].as_u64())
                    .filter(|p| *p > 0)
                {
                    Some(pid) => outcome(kill(pid as i32, "KILL")),
                    None => "not running".into(),
                }
            }),
            Kind::Stop => (
                format!("podman stop -t 2 {}", c.container()),
                outcome(self.cli.ok(&["stop", "-t", "2", &c.container()])),
            ),
            Kind::ForeignName => self.foreign_name(f, c),
            Kind::ForeignPort => self.foreign_port(f, c),
            Kind::Looper => self.looper(f),
            Kind::PodmanRestart => self.podman_restart(),
            Kind::PodmanFreeze => self.podman_freeze(f.hold),
            Kind::DatabaseLoss => self.database_loss(),
            Kind::EventCut => (
                "event stream cut (every API connection shut)".into(),
                format!("{} connections cut", self.relay.cut()),
            ),
            Kind::CliBurst => self.cli_burst(f),
            Kind::SqliteReader => self.sqlite_reader(f.hold),
            Kind::WriteLock => self.write_lock(f.hold),
            Kind::Sighups => self.sighups(f),
            Kind::AgentTerm => self.agent_restart("TERM"),
            Kind::AgentKill => self.agent_restart("KILL"),
            Kind::CaddyRestart => self.caddy_restart(),
            Kind::CaddyDown => self.caddy_down(f.hold),
        };
        self.event(what, outcome, t.elapsed());
    }

    fn foreign_name(&self, f: &Fault, c: &Comp) -> (String, String) {
        let what = format!(
            "foreign container takes the name {} for {:?}",
            c.container(),
            f.hold
        );
        let Ok(_g) = self.comp_locks[f.target].try_lock() else {
            return (what, "skipped (component busy)".into());
        };
        let losses = self.losses.load(Ordering::SeqCst);
        let _ = self.cli.ok(&["rm", "-f", "-t", "0", &c.container()]);
        let id = match self
            .cli
            .ok(&["create", "--name", &c.container(), IMAGE, "sleep", "1000"])
        {
            Ok(id) => id,
            Err(e) => return (what, format!("not injected (the agent was first): {e}")),
        };
        thread::sleep(f.hold);
        // The agent must have left it alone: same id, no label of ours.
        let still = self.cli.inspect(&id);
        let outcome = match still {
            Some(v) if v["Config"]["Labels"].get("mcp.service").is_none() => "held".to_string(),
            Some(_) => {
                self.violation(format!(
                    "foreign container {id} now carries the agent's labels"
                ));
                "relabelled".into()
            }
            None if self.losses.load(Ordering::SeqCst) != losses => {
                "lost with podman's database".into()
            }
            None => {
                self.violation(format!(
                    "foreign container {} ({id}) was removed by someone else than the soak",
                    c.container()
                ));
                "removed by the agent".into()
            }
        };
        let _ = self.cli.ok(&["rm", "-f", "-t", "0", &id]);
        (what, outcome)
    }

    fn foreign_port(&self, f: &Fault, c: &Comp) -> (String, String) {
        let Some(port) = self.ports.lock().unwrap().get(&c.key()).copied() else {
            return (
                "foreign process takes a host port".into(),
                "no port yet".into(),
            );
        };
        let what = format!(
            "foreign process takes {}'s host port {port} for {:?}",
            c.key(),
            f.hold
        );
        let Ok(_g) = self.comp_locks[f.target].try_lock() else {
            return (what, "skipped (component busy)".into());
        };
        let _ = self.cli.ok(&["rm", "-f", "-t", "0", &c.container()]);
        let end = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match std::net::TcpListener::bind(("0.0.0.0", port)) {
                Ok(l) => break Some(l),
                Err(_) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        let Some(listener) = listener else {
            return (
                what,
                "not injected (the agent brought it back first)".into(),
            );
        };
        self.ports_taken.lock().unwrap().insert(c.key());
        thread::sleep(f.hold);
        drop(listener);
        (what, "held, released".into())
    }

    fn looper(&self, f: &Fault) -> (String, String) {
        let name = format!("soak-looper-{}", f.salt % 1000);
        let what = format!(
            "neighbour {name} crash-loops with restart=always for {:?}",
            f.hold
        );
        if let Err(e) = self.cli.ok(&[
            "run",
            "-d",
            "--restart=always",
            "--name",
            &name,
            IMAGE,
            "sh",
            "-c",
            "sleep 0.2; exit 1",
        ]) {
            return (what, format!("not injected: {e}"));
        }
        thread::sleep(f.hold);
        // Podman 4.3 refuses to remove a restart=always container caught `stopped`: retry.
        let end = Instant::now() + Duration::from_secs(20);
        let outcome = loop {
            match self.cli.ok(&["rm", "-f", "-t", "0", &name]) {
                Ok(_) if self.cli.inspect(&name).is_none() => break "removed".to_string(),
                _ if Instant::now() > end => break format!("{name} could not be removed"),
                _ => thread::sleep(Duration::from_millis(200)),
            }
        };
        (what, outcome)
    }

    fn podman_restart(&self) -> (String, String) {
        let what = "podman's API service restarted".to_string();
        let Ok(_g) = self.podman_lock.try_lock() else {
            return (what, "skipped (podman busy)".into());
        };
        let mut p = self.podman.lock().unwrap();
        p.stop_service();
        p.start_service();
        (what, "answering again".into())
    }

    fn podman_freeze(&self, hold: Duration) -> (String, String) {
        let what = format!("podman's API service SIGSTOPped for {hold:?}");
        let Ok(_g) = self.podman_lock.try_lock() else {
            return (what, "skipped (podman busy)".into());
        };
        let p = self.podman.lock().unwrap();
        let mut frozen = p.freeze();
        thread::sleep(hold);
        frozen.thaw();
        (what, "thawed".into())
    }

    /// ENVIRONMENT.md's recipe (a shutdown, then the database and run root gone).
    fn database_loss(&self) -> (String, String) {
        let what = "podman's database lost".to_string();
        let Ok(_g) = self.podman_lock.try_lock() else {
            return (what, "skipped (podman busy)".into());
        };
        let mut p = self.podman.lock().unwrap();
        // As a shutdown: the API goes first (nothing can be started through it any more),
        // then every container stops. (Stopping first let the agent start containers in
        // between that ran on, unknown to the new database, their conmon holding their
        // host ports forever: not a loss a machine has.)
        p.stop_service();
        let _ = self.cli.ok(&["stop", "-a", "-t", "0"]);
        let db = p.root_dir().join("libpod").join("bolt_state.db");
        let r1 = std::fs::remove_file(&db);
        let r2 = std::fs::remove_dir_all(p.runroot_dir());
        self.losses.fetch_add(1, Ordering::SeqCst);
        p.start_service();
        (
            what,
            format!(
                "db removed: {}, runroot removed: {}",
                r1.is_ok(),
                r2.is_ok()
            ),
        )
    }

    /// Several other processes change the registry at once, each on a service of its own.
    fn cli_burst(&self, f: &Fault) -> (String, String) {
        let names: Vec<String> = self.services.lock().unwrap().keys().cloned().collect();
        let mut rng = Rng(f.salt);
        let k = 1 + rng.below(names.len().min(3) as u64) as usize;
        let first = rng.below(names.len() as u64) as usize;
        let chosen: Vec<String> = (0..k)
            .map(|i| names[(first + i) % names.len()].clone())
            .collect();
        let log = Mutex::new(Vec::new());
        thread::scope(|s| {
            for (i, svc) in chosen.iter().enumerate() {
                let log = &log;
                let mut rng = Rng(f.salt ^ ((i as u64 + 1) * 0x1234_5678));
                s.spawn(move || {
                    let Ok(_g) = self.service_locks[svc].try_lock() else {
                        return;
                    };
                    for _ in 0..(2 + rng.below(6)) {
                        let line = self.cli_change(svc, &mut rng);
                        log.lock().unwrap().push(line);
                    }
                });
            }
        });
        let log = log.into_inner().unwrap();
        (format!("CLI burst on {}", chosen.join(",")), log.join("; "))
    }

    /// One `apply`/`stop`/`start`/`remove` on `svc`; the model follows what succeeded.
    fn cli_change(&self, svc: &str, rng: &mut Rng) -> String {
        let m = self.services.lock().unwrap()[svc].clone();
        let (args, next): (Vec<String>, ServiceModel) = match (m.want, rng.below(4)) {
            (Want::Removed, _) | (_, 0) => {
                let g = m.generation + 1;
                let file = self.service_file(svc, g);
                (
                    vec!["apply".into(), file.display().to_string()],
                    ServiceModel {
                        want: Want::Active,
                        generation: g,
                    },
                )
            }
            (Want::Active, 1) => (
                vec!["stop".into(), svc.into()],
                ServiceModel {
                    want: Want::Stopped,
                    ..m
                },
            ),
            (Want::Stopped, 1) | (Want::Stopped, 2) => (
                vec!["start".into(), svc.into()],
                ServiceModel {
                    want: Want::Active,
                    ..m
                },
            ),
            (_, 3) if rng.below(3) == 0 => (
                vec!["remove".into(), svc.into()],
                ServiceModel {
                    want: Want::Removed,
                    ..m
                },
            ),
            _ => (
                vec!["stop".into(), svc.into()],
                ServiceModel {
                    want: Want::Stopped,
                    ..m
                },
            ),
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = self.mcp(&argv);
        if code == 0 {
            if next.want == Want::Removed {
                for c in self.comps_of(svc) {
                    self.ports.lock().unwrap().remove(&c.key());
                }
            }
            self.services.lock().unwrap().insert(svc.to_string(), next);
            format!("{} {svc}: ok", args[0])
        } else {
            let first = out.lines().last().unwrap_or("").to_string();
            format!("{} {svc}: exit {code} ({first})", args[0])
        }
    }

    fn sqlite_reader(&self, hold: Duration) -> (String, String) {
        let what = format!("sqlite3 reads the registry for {hold:?}");
        let end = Instant::now() + hold;
        let mut n = 0;
        let mut last = String::new();
        while Instant::now() < end {
            let out = Command::new("sqlite3")
                .arg(&self.agent.db)
                .arg("select count(*) from services; pragma quick_check;")
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => n += 1,
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(100));
        }
        (
            what,
            format!(
                "{n} reads{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(", last error: {last}")
                }
            ),
        )
    }

    fn write_lock(&self, hold: Duration) -> (String, String) {
        let what = format!("registry write lock held for {hold:?}");
        let Ok(_g) = self.write_lock.try_lock() else {
            return (what, "skipped (held already)".into());
        };
        let lock = RegistryWriteLock::hold(&self.agent.db);
        thread::sleep(hold);
        drop(lock);
        (what, "released".into())
    }

    fn sighups(&self, f: &Fault) -> (String, String) {
        let n = 10 + f.salt % 90;
        let what = format!("{n} SIGHUPs");
        let Ok(_g) = self.agent_lock.try_lock() else {
            return (what, "skipped (agent restarting)".into());
        };
        let Some(pid) = self.daemon_pid() else {
            return (what, "no daemon".into());
        };
        for _ in 0..n {
            let _ = kill(pid, "HUP");
        }
        (what, "sent".into())
    }

    fn agent_restart(&self, sig: &str) -> (String, String) {
        let what = format!("daemon SIG{sig} and restart");
        let Ok(_g) = self.agent_lock.try_lock() else {
            return (what, "skipped (agent restarting)".into());
        };
        self.agent_restarting.store(true, Ordering::SeqCst);
        let mut outcome = String::new();
        if let Some(mut d) = self.daemon.lock().unwrap().take() {
            let t = Instant::now();
            let _ = kill(d.pid(), sig);
            let code = d.wait_exit(Duration::from_secs(30));
            let took = t.elapsed();
            outcome = format!("exit {code:?} after {took:.2?}");
            if sig == "TERM" && (code != Some(0) || took > TERM_DEADLINE) {
                self.violation(format!(
                    "SIGTERM: the daemon ended with {code:?} after {took:.2?}"
                ));
            }
        }
        self.start_daemon();
        self.agent_restarting.store(false, Ordering::SeqCst);
        (what, outcome)
    }

    fn caddy_restart(&self) -> (String, String) {
        let what = "Caddy restarted empty".to_string();
        let Ok(_g) = self.caddy_lock.try_lock() else {
            return (what, "skipped (caddy busy)".into());
        };
        self.caddy.lock().unwrap().restart();
        (what, "up, empty".into())
    }

    fn caddy_down(&self, hold: Duration) -> (String, String) {
        let what = format!("Caddy down for {hold:?}");
        let Ok(_g) = self.caddy_lock.try_lock() else {
            return (what, "skipped (caddy busy)".into());
        };
        self.caddy.lock().unwrap().stop();
        thread::sleep(hold);
        self.caddy.lock().unwrap().start_again();
        (what, "up again, empty".into())
    }
}

fn outcome(r: Result<String, String>) -> String {
    match r {
        Ok(_) => "done".into(),
        Err(e) => format!("failed: {}", e.lines().last().unwrap_or("")),
    }
}

/// `kill -SIG PID`: the daemon (our child) or a container's main process in our podman.
fn kill(pid: i32, sig: &str) -> Result<String, String> {
    let out = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::new())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

// ---------------------------------------------------------------- invariants

/// Containers by component key (`service/component`): (name, short id, state).
type ByComponent = BTreeMap<String, Vec<(String, String, String)>>;

impl World {
    /// Containers carrying our node label, by component key: (name, id, state).
    fn our_containers(&self) -> Result<ByComponent, String> {
        let filter = format!("{{\"label\":[\"mcp.node={NODE}\"]}}");
        let path = format!(
            "/v1.41/containers/json?all=true&filters={}",
            urlencode(&filter)
        );
        let p = self.api_socket.clone();
        let (code, body) = common_api(&p, &path)?;
        if code != 200 {
            return Err(format!("list: HTTP {code}: {body}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let mut by = ByComponent::new();
        for c in v.as_array().cloned().unwrap_or_default() {
            let l = &c["Labels"];
            let key = format!(
                "{}/{}",
                l["mcp.service"].as_str().unwrap_or("?"),
                l["mcp.component"].as_str().unwrap_or("?")
            );
            by.entry(key).or_default().push((
                c["Names"][0]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
                c["Id"].as_str().unwrap_or("").chars().take(12).collect(),
                c["State"].as_str().unwrap_or("").to_string(),
            ));
        }
        Ok(by)
    }

    /// The continuous checks, every 250 ms: never two containers for one component, the
    /// daemon alive, its watchdog on time; and its resource use, every second.
    fn sample(&self, stop: &AtomicBool) {
        let mut i = 0u64;
        let mut last_twice = String::new();
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            if let Ok(by) = self.our_containers() {
                for (k, v) in &by {
                    if v.len() > 1 {
                        let s = format!("two containers for {k}: {v:?}");
                        if s != last_twice {
                            self.violation(s.clone());
                            last_twice = s;
                        }
                    }
                }
            }
            if !self.agent_restarting.load(Ordering::SeqCst) {
                let _g = self.agent_lock.try_lock();
                if _g.is_ok() {
                    self.check_daemon_alive();
                    self.check_watchdog();
                }
            }
            if i % 4 == 0 {
                if let Some(pid) = self.daemon_pid() {
                    if let Some((rss, cpu)) = proc_usage(pid as u32) {
                        self.usage
                            .lock()
                            .unwrap()
                            .samples
                            .push((self.now(), pid as u32, rss, cpu));
                    }
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    fn check_daemon_alive(&self) {
        let mut d = self.daemon.lock().unwrap();
        let Some(proc_) = d.as_mut() else { return };
        if let Ok(Some(st)) = proc_.child.try_wait() {
            let tail: Vec<String> = proc_
                .log()
                .lines()
                .rev()
                .take(15)
                .map(String::from)
                .collect();
            self.violation(format!(
                "the daemon exited on its own ({st}); log tail:\n  {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            ));
            drop(d);
            self.start_daemon();
        }
    }

    /// systemd enforces WatchdogSec once the unit is started, i.e. from READY=1 on: from
    /// the daemon's READY=1, no gap between pings may exceed it.
    fn check_watchdog(&self) {
        let started = *self.daemon_started.lock().unwrap();
        let n = self.notify.lock().unwrap();
        let Some(ready) = n.times("READY=1").into_iter().find(|t| *t >= started) else {
            return;
        };
        let last = n
            .times("WATCHDOG=1")
            .into_iter()
            .filter(|t| *t >= ready)
            .max()
            .unwrap_or(ready);
        let since = last.elapsed();
        drop(n);
        if since > WATCHDOG {
            self.violation(format!(
                "no WATCHDOG=1 for {since:.1?} after READY=1 (systemd would kill the daemon at {WATCHDOG:?})"
            ));
            // Report a silence once, not every sample.
            *self.daemon_started.lock().unwrap() = Instant::now();
        }
    }

    /// What is not converged yet, empty once it is. `record` takes the ports of routes
    /// seen for the first time as theirs (the first convergence, re-applied services).
    fn unconverged(&self, record: bool) -> Vec<String> {
        let mut bad = Vec::new();
        let services = self.services.lock().unwrap().clone();
        let status = {
            let (code, out) = self.mcp(&["status", "--json"]);
            match serde_json::from_str::<serde_json::Value>(&out) {
                Ok(v) if code == 0 => v,
                _ => return vec![format!("status --json: exit {code}: {}", out.trim())],
            }
        };
        let rows: BTreeMap<String, serde_json::Value> = status["components"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["service"].as_str().unwrap_or(""),
                        r["component"].as_str().unwrap_or("")
                    ),
                    r,
                )
            })
            .collect();
        let actual = match self.our_containers() {
            Ok(a) => a,
            Err(e) => return vec![format!("podman list: {e}")],
        };
        let mut wanted_routes = BTreeMap::new();
        let mut active = 0;
        for c in &self.comps {
            let m = &services[&c.service];
            let have = actual.get(&c.key()).cloned().unwrap_or_default();
            let row = rows.get(&c.key());
            match m.want {
                Want::Removed => {
                    if row.is_some() {
                        bad.push(format!("{}: removed, yet in the registry", c.key()));
                    }
                    if !have.is_empty() {
                        bad.push(format!("{}: removed, yet containers {have:?}", c.key()));
                    }
                }
                Want::Stopped => {
                    if row.is_none() {
                        bad.push(format!("{}: stopped, missing from the registry", c.key()));
                    }
                    if have.iter().any(|(.., s)| s == "running") {
                        bad.push(format!("{}: stopped, yet running {have:?}", c.key()));
                    }
                }
                Want::Active => {
                    active += 1;
                    let Some(row) = row else {
                        bad.push(format!("{}: missing from the registry", c.key()));
                        continue;
                    };
                    if have.len() != 1 || have[0].2 != "running" {
                        // With the agent's own word on it (its state and last error).
                        bad.push(format!(
                            "{}: wanted running, podman has {have:?}; the agent: {} {}",
                            c.key(),
                            row["last_pass_state"],
                            row["last_error"]
                        ));
                        continue;
                    }
                    if row["health"]["state"] != "healthy" {
                        bad.push(format!(
                            "{}: running, its check {}; the agent: {}",
                            c.key(),
                            row["health"],
                            row["last_error"]
                        ));
                        continue;
                    }
                    let Some(port) = row["routes"][0]["host_port"].as_u64().map(|p| p as u16)
                    else {
                        bad.push(format!("{}: no host port in status", c.key()));
                        continue;
                    };
                    let page = format!("{} gen={}", c.key(), m.generation);
                    match http_get(port, "soak", "/index.html") {
                        Ok((200, body)) if body.trim() == page => {}
                        other => bad.push(format!(
                            "{}: port {port} serves {other:?}, not {page:?}",
                            c.key()
                        )),
                    }
                    if let Some(h) = &c.hostname {
                        wanted_routes.insert(h.clone(), format!("127.0.0.1:{port}"));
                        match http_get(self.caddy_http, h, "/index.html") {
                            Ok((200, body)) if body.trim() == page => {}
                            other => {
                                bad.push(format!("{h} through caddy: {other:?}, not {page:?}"))
                            }
                        }
                    }
                    self.check_port(c, port, record, &mut bad);
                }
            }
        }
        match self.caddy_routes() {
            Ok(r) if r == wanted_routes => {}
            Ok(r) => bad.push(format!("caddy routes {r:?}, wanted {wanted_routes:?}")),
            Err(e) => bad.push(format!("caddy: {e}")),
        }
        let want_status = format!("{active} running, 0 backing off, 0 failed");
        match self.notify.lock().unwrap().last_status() {
            Some(s) if s == want_status => {}
            s => bad.push(format!("STATUS={s:?}, wanted {want_status:?}")),
        }
        bad
    }

    /// Whether `port` is held only by conmons of containers this podman no longer has.
    fn orphan_holds(&self, port: u16) -> bool {
        match self.cli.ok(&["ps", "-a", "-q", "--no-trunc"]) {
            Ok(ids) => {
                mcp_agent::ports::held_by_orphans(port, &ids.lines().map(str::to_string).collect())
            }
            Err(_) => false,
        }
    }

    /// A route's port may move only if the soak's own process took it while it was down,
    /// or podman's orphan holds it.
    fn check_port(&self, c: &Comp, port: u16, record: bool, bad: &mut Vec<String>) {
        let mut ports = self.ports.lock().unwrap();
        match ports.get(&c.key()).copied() {
            None => {
                if record {
                    ports.insert(c.key(), port);
                }
            }
            Some(p) if p == port => {}
            Some(p) => {
                if self.ports_taken.lock().unwrap().remove(&c.key()) {
                    self.event(
                        format!("{}'s port moved {p} -> {port}", c.key()),
                        "allowed: a foreign process took it".into(),
                        Duration::ZERO,
                    );
                    ports.insert(c.key(), port);
                } else if self.orphan_holds(p) {
                    // Podman's own defect, which the agent routes around (src/ports.rs
                    // `held_by_orphans`): a `podman rm -f` that raced the agent's start
                    // left that run's conmon holding the port, for ever.
                    self.event(
                        format!("{}'s port moved {p} -> {port}", c.key()),
                        "allowed: podman's orphaned conmon (a container podman no longer has) holds it".into(),
                        Duration::ZERO,
                    );
                    ports.insert(c.key(), port);
                } else {
                    bad.push(format!(
                        "{}: host port moved {p} -> {port} with no foreign holder",
                        c.key()
                    ));
                }
            }
        }
    }

    /// Caddy's routes with the agent's ids: hostname → upstream.
    fn caddy_routes(&self) -> Result<BTreeMap<String, String>, String> {
        let caddy = self.caddy.lock().unwrap();
        let v = caddy.try_get("/config/apps/http/servers")?;
        let mut out = BTreeMap::new();
        for server in v.as_object().into_iter().flat_map(|o| o.values()) {
            for r in server["routes"].as_array().into_iter().flatten() {
                let id = r["@id"].as_str().unwrap_or("");
                if !id.starts_with("mcp.") || id.starts_with("mcp.acme.") {
                    continue;
                }
                let host = r["match"][0]["host"][0].as_str().unwrap_or("").to_string();
                let dial = r["handle"][0]["upstreams"][0]["dial"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if out.insert(host.clone(), dial).is_some() {
                    return Err(format!("two routes for {host}"));
                }
            }
        }
        Ok(out)
    }

    /// Waits for convergence after a round's faults; the time it took, or `None` (a
    /// violation naming what never converged).
    fn converge(&self, since: Instant, record: bool) -> Option<Duration> {
        let mut last = Vec::new();
        while since.elapsed() < CONVERGE_DEADLINE {
            let now = self.unconverged(record);
            if now.is_empty() {
                return Some(since.elapsed());
            }
            if now != last {
                eprintln!(
                    "soak:   +{:.2}s not converged: {}",
                    since.elapsed().as_secs_f64(),
                    now.join(" | ")
                );
            }
            last = now;
            thread::sleep(Duration::from_millis(200));
        }
        self.violation(format!(
            "not converged {CONVERGE_DEADLINE:?} after the last fault:\n  {}",
            last.join("\n  ")
        ));
        None
    }

    /// The checks once converged: bystanders untouched, the registry sound.
    fn check_round_end(&self, losses_at_start: u64) {
        let bystanders = self.bystanders.lock().unwrap().clone();
        if self.losses.load(Ordering::SeqCst) == losses_at_start {
            for b in &bystanders {
                match self.cli.inspect(&b.id) {
                    Some(v) if v["State"]["Status"].as_str() == Some(&b.state) => {}
                    Some(v) => self.violation(format!(
                        "bystander {} went from {} to {}",
                        b.name, b.state, v["State"]["Status"]
                    )),
                    None => self.violation(format!("bystander {} ({}) was removed", b.name, b.id)),
                }
            }
        } else {
            self.make_bystanders();
        }
        // A port taken that did not move by now was never needed elsewhere.
        self.ports_taken.lock().unwrap().clear();
        match rusqlite::Connection::open_with_flags(
            &self.agent.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        {
            Ok(s) if s == "ok" => {}
            other => self.violation(format!("registry integrity_check: {other:?}")),
        }
        let log = self
            .daemon
            .lock()
            .unwrap()
            .as_ref()
            .map(DaemonProc::log)
            .unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("panicked")) {
            self.violation(format!("the daemon panicked: {l}"));
        }
    }

    /// Containers of the soak's own without the agent's labels, in several states.
    fn make_bystanders(&self) {
        for b in self.bystanders.lock().unwrap().drain(..) {
            let _ = self.cli.ok(&["rm", "-f", "-t", "0", &b.id]);
        }
        let mut made = Vec::new();
        let make = |name: &str, args: &[&str]| -> Result<String, String> {
            let _ = self.cli.ok(&["rm", "-f", "-t", "0", name]);
            let mut a = vec![args[0], "--name", name];
            a.extend_from_slice(&args[1..]);
            self.cli.ok(&a)
        };
        let specs: [(&str, &[&str]); 3] = [
            (
                "soak-bystander-created",
                &["create", IMAGE, "sleep", "1000"],
            ),
            (
                "soak-bystander-running",
                &["run", "-d", IMAGE, "sleep", "100000"],
            ),
            ("soak-bystander-exited", &["run", IMAGE, "true"]),
        ];
        for (name, args) in specs {
            match make(name, args) {
                Ok(out) => {
                    let id = out.lines().last().unwrap_or("").to_string();
                    let id = if id.len() >= 12 { id } else { name.to_string() };
                    let state = self
                        .cli
                        .inspect(name)
                        .and_then(|v| v["State"]["Status"].as_str().map(String::from))
                        .unwrap_or_default();
                    made.push(Bystander {
                        name: name.into(),
                        id,
                        state,
                    });
                }
                Err(e) => eprintln!("soak: bystander {name} not made: {e}"),
            }
        }
        *self.bystanders.lock().unwrap() = made;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET on podman's own socket (not the relay) with a short deadline: a frozen podman
/// makes a sample fail, not hang.
fn common_api(socket: &Path, path: &str) -> Result<(u16, String), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: d\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
}

/// (RSS KiB, CPU seconds) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from `state` as field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks as f64 / 100.0))
}

// ---------------------------------------------------------------- one seed

#[derive(Debug, serde::Serialize)]
struct SeedReport {
    seed: u64,
    components: usize,
    rounds: Vec<RoundReport>,
    faults_by_kind: BTreeMap<String, usize>,
    events: Vec<Event>,
    violations: Vec<Violation>,
    figures: Figures,
    usage: Usage,
}

/// The daemon's resource use over the run, from [`Usage`]'s samples.
#[derive(Debug, serde::Serialize)]
struct Figures {
    wall_s: f64,
    /// CPU seconds of every daemon process of the run together.
    cpu_s: f64,
    daemons: usize,
    rss_first_kib: u64,
    rss_last_kib: u64,
    rss_max_kib: u64,
    /// The last daemon process: its RSS when first sampled and at the end, and how long
    /// it lived between the two.
    last_daemon_rss_first_kib: u64,
    last_daemon_rss_last_kib: u64,
    last_daemon_lived_s: f64,
}

fn figures(u: &Usage) -> Figures {
    let mut cpu: BTreeMap<u32, f64> = BTreeMap::new();
    for &(_, pid, _, c) in &u.samples {
        let e = cpu.entry(pid).or_default();
        *e = e.max(c);
    }
    let first = u.samples.first().copied().unwrap_or_default();
    let last = u.samples.last().copied().unwrap_or_default();
    let last_first = u
        .samples
        .iter()
        .find(|s| s.1 == last.1)
        .copied()
        .unwrap_or_default();
    Figures {
        wall_s: last.0 - first.0,
        cpu_s: cpu.values().sum(),
        daemons: cpu.len(),
        rss_first_kib: first.2,
        rss_last_kib: last.2,
        rss_max_kib: u.samples.iter().map(|s| s.2).max().unwrap_or(0),
        last_daemon_rss_first_kib: last_first.2,
        last_daemon_rss_last_kib: last.2,
        last_daemon_lived_s: last.0 - last_first.0,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, serde::Serialize)]
struct RoundReport {
    round: usize,
    faults: usize,
    last_fault: String,
    converged_after: Option<f64>,
}

fn run_seed(seed: u64, s: &Settings) -> SeedReport {
    let mut podman = PrivatePodman::start();
    // The exec checks' sessions: podman keeps each one's conmon for `exit_command_delay`
    // (300 s by default, hundreds alive at once: BENCHMARKS.md §9); README's advice.
    let conf = std::fs::read_to_string(podman.conf_path()).unwrap();
    std::fs::write(
        podman.conf_path(),
        conf.replace("[engine]\n", "[engine]\nexit_command_delay = 10\n"),
    )
    .unwrap();
    podman.stop_service();
    podman.start_service();
    podman.import_busybox(IMAGE);
    let api_socket = podman.socket_path();
    let cli = Cli {
        argv: podman.cli_argv(),
        env: podman.env(),
    };
    let relay = Relay::start(podman.dir().join("relay.sock"), api_socket.clone());
    let caddy = PrivateCaddy::start();
    let caddy_http = free_port();
    let first = 26000 + (seed % 20) as u16 * 200;
    let extra = format!(
        "[reconcile]\nbackoff_max = \"4s\"\n\n[ports]\nrange = \"{first}-{}\"\n\n\
         [proxy]\nkind = \"caddy\"\nadmin_socket = \"{}\"\nserver = \"mcp\"\n\
         http_listen = \"127.0.0.1:{caddy_http}\"\nhttps_listen = \"127.0.0.1:{}\"\n",
        first + 199,
        caddy.admin_socket().display(),
        free_port()
    );
    let agent = Agent::with_socket(&podman, &format!("unix://{}", relay.path.display()), &extra);
    let notify = NotifySocket::bind(agent.path());

    let n = s.components.max(1);
    let comps: Vec<Comp> = (0..n)
        .map(|i| {
            let service = format!("svc{}", i / 2);
            if i % 2 == 0 {
                Comp {
                    hostname: Some(format!("{service}.soak")),
                    service,
                    name: "web".into(),
                }
            } else {
                Comp {
                    hostname: None,
                    service,
                    name: "tcp".into(),
                }
            }
        })
        .collect();
    let service_names: BTreeSet<String> = comps.iter().map(|c| c.service.clone()).collect();
    let world = World {
        round: AtomicU64::new(0),
        start: Instant::now(),
        podman: Mutex::new(podman),
        api_socket,
        cli,
        relay,
        caddy: Mutex::new(caddy),
        caddy_http,
        agent,
        daemon: Mutex::new(None),
        agent_restarting: AtomicBool::new(false),
        daemon_started: Mutex::new(Instant::now()),
        notify: Mutex::new(notify),
        comp_locks: comps.iter().map(|_| Mutex::new(())).collect(),
        service_locks: service_names
            .iter()
            .map(|s| (s.clone(), Mutex::new(())))
            .collect(),
        comps,
        services: Mutex::new(
            service_names
                .iter()
                .map(|s| {
                    (
                        s.clone(),
                        ServiceModel {
                            want: Want::Active,
                            generation: 1,
                        },
                    )
                })
                .collect(),
        ),
        ports: Mutex::default(),
        ports_taken: Mutex::default(),
        bystanders: Mutex::default(),
        losses: AtomicU64::new(0),
        events: Mutex::default(),
        violations: Mutex::default(),
        usage: Mutex::default(),
        podman_lock: Mutex::new(()),
        agent_lock: Mutex::new(()),
        caddy_lock: Mutex::new(()),
        write_lock: Mutex::new(()),
    };
    for svc in &service_names {
        let f = world.service_file(svc, 1);
        let (code, out) = world.mcp(&["apply", f.to_str().unwrap()]);
        assert_eq!(code, 0, "apply {svc}: {out}");
    }
    world.make_bystanders();
    world.start_daemon();
    let t0 = Instant::now();
    let first_converge = world.converge(t0, true);
    eprintln!("soak: seed {seed}: first convergence after {first_converge:?}");

    let stop = AtomicBool::new(false);
    let mut rng = Rng(seed);
    let rounds = (s.duration.as_secs_f64() / s.round.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let mut reports = Vec::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    thread::scope(|scope| {
        scope.spawn(|| world.sample(&stop));
        for r in 1..=rounds {
            world.round.store(r as u64, Ordering::Relaxed);
            let faults = schedule(&mut rng, s.round, n, &s.without);
            for f in &faults {
                *by_kind.entry(format!("{:?}", f.kind)).or_default() += 1;
            }
            let losses = world.losses.load(Ordering::SeqCst);
            let window = Instant::now();
            let last_end = Mutex::new((window, String::new()));
            thread::scope(|fs| {
                for f in &faults {
                    let (world, last_end) = (&world, &last_end);
                    fs.spawn(move || {
                        let due = window + f.at;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait); // the schedule's own clock
                        }
                        world.inject(f);
                        let mut l = last_end.lock().unwrap();
                        if Instant::now() > l.0 {
                            *l = (Instant::now(), format!("{:?}", f.kind));
                        }
                    });
                }
            });
            let (ended, last_kind) = last_end.into_inner().unwrap();
            let took = world.converge(ended, true);
            eprintln!(
                "soak: seed {seed} round {r}: {} faults, last ({last_kind}) ended {:.1}s into the round; converged after {took:?}",
                faults.len(),
                (ended - window).as_secs_f64()
            );
            if let Some(t) = took {
                if t > CONVERGE_GOAL {
                    eprintln!(
                        "soak: round {r} converged after {t:?}, over the {CONVERGE_GOAL:?} goal"
                    );
                }
            }
            world.check_round_end(losses);
            reports.push(RoundReport {
                round: r,
                faults: faults.len(),
                last_fault: last_kind,
                converged_after: took.map(|d| d.as_secs_f64()),
            });
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The daemon must still answer a SIGTERM cleanly at the end.
    if let Some(mut d) = world.daemon.lock().unwrap().take() {
        let (code, took) = d.terminate(Duration::from_secs(30));
        if code != Some(0) || took > TERM_DEADLINE {
            world.violation(format!("final SIGTERM: exit {code:?} after {took:.2?}"));
        }
    }
    let _ = world.cli.ok(&["rm", "-af", "-t", "0"]);
    // A violation's evidence outlives the run's directory: the daemon's log is kept.
    if !world.violations.lock().unwrap().is_empty() {
        let keep = std::env::var("MCP_SOAK_KEEP")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak-logs"));
        let from = world
            .agent
            .path()
            .join(format!("daemon-{}.log", std::process::id()));
        let to = keep.join(format!("seed-{seed}-daemon.log"));
        match std::fs::create_dir_all(&keep).and_then(|()| std::fs::copy(&from, &to)) {
            Ok(_) => eprintln!("soak: the daemon's log is kept in {}", to.display()),
            Err(e) => eprintln!("soak: cannot keep the daemon's log {}: {e}", from.display()),
        }
    }
    let usage = world.usage.lock().unwrap().clone();
    let report = SeedReport {
        seed,
        components: n,
        rounds: reports,
        faults_by_kind: by_kind,
        events: world.events.lock().unwrap().clone(),
        violations: world.violations.lock().unwrap().clone(),
        figures: figures(&usage),
        usage,
    };
    report
}

#[test]
#[ignore = "the chaos soak: run it with scripts/soak"]
fn soak() {
    let s = Settings::from_env();
    let mut reports = Vec::new();
    for &seed in &s.seeds {
        eprintln!(
            "soak: seed {seed}, {:?} in rounds of {:?}, {} components",
            s.duration, s.round, s.components
        );
        reports.push(run_seed(seed, &s));
    }
    let mut summary = String::new();
    let mut failed = false;
    for r in &reports {
        let conv: Vec<f64> = r.rounds.iter().filter_map(|x| x.converged_after).collect();
        writeln!(
            summary,
            "seed {}: {} rounds, {} faults {:?}; convergence after the last fault (s): {:?}; {} violations",
            r.seed,
            r.rounds.len(),
            r.rounds.iter().map(|x| x.faults).sum::<usize>(),
            r.faults_by_kind,
            conv.iter().map(|c| (c * 100.0).round() / 100.0).collect::<Vec<_>>(),
            r.violations.len()
        )
        .unwrap();
        let f = &r.figures;
        writeln!(
            summary,
            "  convergence median {:.2} s, max {:.2} s over {} rounds; daemon: {:.1} CPU s over {:.0} s \
             ({} processes), RSS {} KiB first, {} KiB last, {} KiB max; last process {} -> {} KiB over {:.0} s",
            median(&conv),
            conv.iter().copied().fold(f64::NAN, f64::max),
            conv.len(),
            f.cpu_s,
            f.wall_s,
            f.daemons,
            f.rss_first_kib,
            f.rss_last_kib,
            f.rss_max_kib,
            f.last_daemon_rss_first_kib,
            f.last_daemon_rss_last_kib,
            f.last_daemon_lived_s
        )
        .unwrap();
        for v in &r.violations {
            failed = true;
            writeln!(
                summary,
                "  VIOLATION seed {} round {} at {:.2}s: {}",
                r.seed, v.round, v.at, v.what
            )
            .unwrap();
        }
        if !r.violations.is_empty() {
            let without = if s.without.is_empty() {
                String::new()
            } else {
                format!(
                    " --without {}",
                    s.without.iter().cloned().collect::<Vec<_>>().join(",")
                )
            };
            writeln!(
                summary,
                "  replay: scripts/soak --seed {} --duration {} --round {} --components {}{without}",
                r.seed,
                humantime::format_duration(s.duration),
                humantime::format_duration(s.round),
                s.components
            )
            .unwrap();
        }
    }
    eprintln!("\n=== soak summary\n{summary}");
    if let Some(p) = &s.report {
        std::fs::write(p, serde_json::to_string_pretty(&reports).unwrap()).unwrap();
    }
    assert!(!failed, "invariants violated:\n{summary}");
}
