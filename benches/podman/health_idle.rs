//! §9 Health checks at rest (issue 14): N components (200), each with a check probed every
//! `probe_interval` (10 s), the daemon settled, measured over `window`, one kind of check
//! after the other on the same containers (busybox httpd on port 8080, in services of 10,
//! on a network of the benchmark's own): `tcp` (connect to 8080), `http` (GET
//! /index.html), `exec` (`["CMD", "true"]`) with containers.conf's `exit_command_delay` at
//! 10 s and at podman's default (300 s), and `none` (no checks: the baseline). Changing a
//! check recreates nothing (checks are not in the spec hash): the daemon is stopped, the
//! files applied, the daemon started again.
//!
//! For each: the agent's CPU (utime + stime) and RSS; the probes run (the agent's metrics,
//! `mcp_agent_health_probes_total`, over a unix socket) against those wanted (N per
//! interval); how late each probe started after it was due (the agent's histogram
//! `mcp_agent_health_probe_late_seconds`: median and p95 interpolated within its buckets,
//! max the bound of the highest bucket used); the podman service's CPU (with the children
//! it reaped); the CPU of the conmon processes and everything under them
//! (`procs::Conmons`: this process is their subreaper and reaps them itself); the whole
//! machine's busy time (/proc/stat), and for the exec kinds that busy time per probe beyond the baseline's; the exec sessions'
//! conmons alive at the end, with their RSS and PSS.
//!
//! Steady state: each kind is measured after `settle` (30 s: the first probes of every
//! component run within a second of the daemon's start), and an exec kind after
//! `exit_command_delay` more, so that exec sessions end (and their exit commands run) as
//! fast as new ones begin.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::PrivatePodman;
use crate::histogram;
use crate::kit::{self, Agent, BenchNetwork, ProcUsage, Stats, IMAGE};
use crate::procs::{self, Conmons, MachineCpu, Memory};

/// Agent CPU budget: 1 % of one core; memory budget: 40 MiB (issue 14).
const CPU_TARGET: f64 = 0.01;
const RSS_TARGET_KIB: u64 = 40 * 1024;
/// podman's default `exit_command_delay` (containers.conf).
const DEFAULT_EXIT_DELAY: u64 = 300;
/// Components per service.
const PER_SERVICE: usize = 10;
/// How often the conmons alive are counted during a window.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// The daemon's log filter: its default, as deployed (a debug line per probe was ≈ 6 % of
/// the agent's CPU under exec checks: its formatting and a write each).
const LOG: &str = "info";

/// One kind of check (or none), with the exec sessions' exit delay podman runs with.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    /// The `[components.health]` line that says what to probe.
    check: Option<&'static str>,
    /// `exit_command_delay` in containers.conf: `None` is podman's default (300 s).
    exit_delay: Option<u64>,
}

impl Case {
    fn is_exec(&self) -> bool {
        self.name.starts_with("exec")
    }

    fn delay(&self) -> u64 {
        self.exit_delay.unwrap_or(DEFAULT_EXIT_DELAY)
    }
}

const CASES: &[Case] = &[
    Case {
        name: "none",
        check: None,
        exit_delay: None,
    },
    Case {
        name: "tcp",
        check: Some("tcp = { port = 8080 }"),
        exit_delay: None,
    },
    Case {
        name: "http",
        check: Some("http = { port = 8080, path = \"/index.html\" }"),
        exit_delay: None,
    },
    Case {
        name: "exec-10",
        check: Some("test = [\"CMD\", \"true\"]"),
        exit_delay: Some(10),
    },
    Case {
        name: "exec",
        check: Some("test = [\"CMD\", \"true\"]"),
        exit_delay: None,
    },
];

pub struct Opts<'a> {
    pub n: usize,
    pub window: Duration,
    pub settle: Duration,
    pub resync: &'a str,
    pub probe_interval: &'a str,
    pub concurrency: usize,
    pub cases: Option<&'a [String]>,
}

/// One case's readings over its window.
#[derive(Debug, Clone, Default)]
struct Row {
    case: String,
    exit_delay: u64,
    window_s: f64,
    load_start: String,
    load_end: String,
    agent_cpu_s: f64,
    agent_rss_kib: u64,
    agent_hwm_kib: u64,
    service_cpu_s: f64,
    service_rss_kib: u64,
    conmon_cpu_s: f64,
    conmons_reaped: usize,
    /// CPU of the conmons reaped in the window (each an exec session, whole).
    reaped_cpu_s: f64,
    machine_busy_s: f64,
    probes_ok: f64,
    probes_failed: f64,
    probe_mean_ms: f64,
    /// Lateness of the probes started in the window, ms (from the histogram).
    late: Stats,
    late_over_1s: usize,
    started: usize,
    exec_conmons: Memory,
    ctr_conmons: Memory,
    /// (seconds into the window, exec-session conmons alive).
    samples: Vec<(f64, usize)>,
}

impl Row {
    fn probes(&self) -> f64 {
        self.probes_ok + self.probes_failed
    }
}

fn services(n: usize, net: &str, case: &Case, interval: &str) -> Vec<(String, String)> {
    let cmd = r#"["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]"#;
    let mut files = Vec::new();
    let mut made = 0;
    let mut s = 0;
    while made < n {
        let k = PER_SERVICE.min(n - made);
        let name = format!("hi{s:02}");
        let mut text = format!("name = \"{name}\"\n");
        for c in 0..k {
            let _ = write!(
                text,
                "\n[[components]]\nname = \"c{c:02}\"\nimage = \"{IMAGE}\"\nnetwork = \"{net}\"\n\
                 cmd = {cmd}\n"
            );
            if let Some(check) = case.check {
                let _ = write!(
                    text,
                    "\n[components.health]\n{check}\ninterval = \"{interval}\"\ntimeout = \"5s\"\n"
                );
            }
        }
        files.push((format!("{name}.toml"), text));
        made += k;
        s += 1;
    }
    files
}

/// Rewrites this podman's containers.conf with `exit_command_delay` (or without it: the
/// default) and restarts its API service, if that changes it. Running containers stay.
fn set_exit_delay(podman: &mut PrivatePodman, delay: Option<u64>) {
    let conf = std::fs::read_to_string(podman.conf_path()).expect("read containers.conf");
    let kept: Vec<&str> = conf
        .lines()
        .filter(|l| !l.starts_with("exit_command_delay"))
        .collect();
    let mut new = kept.join("\n") + "\n";
    if let Some(d) = delay {
        new = new.replace(
            "[engine]\n",
            &format!("[engine]\nexit_command_delay = {d}\n"),
        );
    }
    if new != conf {
        std::fs::write(podman.conf_path(), new).expect("write containers.conf");
        podman.stop_service();
        podman.start_service();
    }
}

fn scrape(socket: &Path) -> String {
    for _ in 0..50 {
        if let Ok(t) = kit::unix_get(socket, "/metrics") {
            return t;
        }
        kit::nap(Duration::from_millis(100));
    }
    panic!("cannot scrape the agent's metrics at {}", socket.display());
}

/// How late the probes started in a window, ms, from the lateness histogram at its start
/// (`m0`) and end (`m1`), and how many were more than a second late.
fn lateness(m0: &str, m1: &str) -> (Stats, usize) {
    const NAME: &str = "mcp_agent_health_probe_late_seconds";
    let cum = histogram::between(&histogram::buckets(m0, NAME), &histogram::buckets(m1, NAME));
    let n = histogram::count(&cum);
    if n == 0.0 {
        return (Stats::default(), 0);
    }
    let (min, max) = histogram::bounds(&cum);
    let sum = format!("{NAME}_sum");
    let sum_s = kit::metric(m1, &sum, "") - kit::metric(m0, &sum, "");
    (
        Stats {
            n: n as usize,
            median: 1000.0 * histogram::quantile(&cum, 0.5),
            p95: 1000.0 * histogram::quantile(&cum, 0.95),
            min: 1000.0 * min,
            max: 1000.0 * max,
            mean: 1000.0 * sum_s / n,
        },
        histogram::above(&cum, 1.0).expect("the lateness histogram has a 1 s bound") as usize,
    )
}

pub fn run(out: &Path, o: &Opts) {
    let load_start = kit::loadavg();
    let cases: Vec<Case> = match o.cases {
        None => CASES.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                *CASES
                    .iter()
                    .find(|c| c.name == n)
                    .unwrap_or_else(|| panic!("no case {n:?}: none, tcp, http, exec-10, exec"))
            })
            .collect(),
    };
    procs::become_subreaper();
    let conmons = Conmons::start();
    let mut podman = kit::podman_with_busybox();
    let dir = podman.dir().display().to_string();
    let net = BenchNetwork::create(&podman, &format!("mcpb-hi-{}", std::process::id()));
    let agent = Agent::new(&podman, &podman.socket_uri(), "");
    let metrics_sock = agent.dir().join("metrics.sock");
    agent.configure(&format!(
        "interval = \"{}\"\n\n[health]\nconcurrency = {}\n\n[metrics]\nlisten = \"unix:{}\"\n",
        o.resync,
        o.concurrency,
        metrics_sock.display()
    ));
    agent.apply(&services(o.n, &net.name, &CASES[0], o.probe_interval));
    agent.ok(&["--once"]);
    assert_eq!(kit::running_names(&podman).len(), o.n, "initial pass");

    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        set_exit_delay(&mut podman, case.exit_delay);
        agent.apply(&services(o.n, &net.name, case, o.probe_interval));
        let daemon = agent.start_daemon(LOG);
        let settle = o.settle
            + if case.is_exec() {
                Duration::from_secs(case.delay())
            } else {
                Duration::ZERO
            };
        eprintln!(
            "bench health-idle: {} ({} components), settling {settle:?}, then {:?}",
            case.name, o.n, o.window
        );
        kit::nap(settle);
        let svc = podman.service_pid().expect("podman service runs");
        let m0 = scrape(&metrics_sock);
        let (u0, s0, c0, k0) = (
            daemon.usage(),
            procs::cum_cpu_s(svc),
            conmons.cpu(),
            MachineCpu::now(),
        );
        let row_load0 = kit::loadavg();
        let t0 = Instant::now();
        let mut samples = Vec::new();
        while t0.elapsed() < o.window {
            let left = o.window.saturating_sub(t0.elapsed());
            kit::nap(left.min(SAMPLE_EVERY));
            if case.is_exec() {
                samples.push((t0.elapsed().as_secs_f64(), procs::exec_conmons_alive(&dir)));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let (k1, c1, s1, u1) = (
            MachineCpu::now(),
            conmons.cpu(),
            procs::cum_cpu_s(svc),
            daemon.usage(),
        );
        let m1 = scrape(&metrics_sock);
        let (exec_mem, ctr_mem) = procs::conmon_memory(&dir);
        let svc_rss = ProcUsage::of(svc).rss_kib;
        let (late, late_over_1s) = lateness(&m0, &m1);
        let d = |name: &str, labels: &str| {
            kit::metric(&m1, name, labels) - kit::metric(&m0, name, labels)
        };
        let dur_sum = d("mcp_agent_health_probe_duration_seconds_sum", "");
        let dur_n = d("mcp_agent_health_probe_duration_seconds_count", "");
        let row = Row {
            case: case.name.into(),
            exit_delay: case.delay(),
            window_s: secs,
            load_start: row_load0,
            load_end: kit::loadavg(),
            agent_cpu_s: u1.cpu_s - u0.cpu_s,
            agent_rss_kib: u1.rss_kib,
            agent_hwm_kib: u1.hwm_kib,
            service_cpu_s: s1 - s0,
            service_rss_kib: svc_rss,
            conmon_cpu_s: c1.total_s() - c0.total_s(),
            conmons_reaped: c1.reaped - c0.reaped,
            reaped_cpu_s: c1.reaped_s - c0.reaped_s,
            machine_busy_s: k0.busy_s_until(&k1),
            probes_ok: d("mcp_agent_health_probes_total", "result=\"ok\""),
            probes_failed: d("mcp_agent_health_probes_total", "result=\"failed\""),
            probe_mean_ms: if dur_n > 0.0 {
                1000.0 * dur_sum / dur_n
            } else {
                0.0
            },
            started: late.n,
            late,
            late_over_1s,
            exec_conmons: exec_mem,
            ctr_conmons: ctr_mem,
            samples,
        };
        eprintln!("bench health-idle: {row:?}");
        assert_eq!(
            kit::running_names(&podman).len(),
            o.n,
            "every container still runs"
        );
        daemon.save_log(out, &format!("health-idle-{i}-{}-daemon.log", case.name));
        drop(daemon);
        if case.is_exec() {
            // Sessions of a short delay end by themselves; the default's would take 5 min.
            if case.delay() <= 30 {
                let end = Instant::now() + Duration::from_secs(case.delay() + 30);
                while procs::exec_conmons_alive(&dir) > 0 && Instant::now() < end {
                    kit::nap(Duration::from_secs(1));
                }
            }
            let killed = procs::kill_exec_conmons(&dir);
            if killed > 0 {
                eprintln!("bench health-idle: killed {killed} exec-session conmons");
            }
        }
        rows.push(row);
    }
    drop(net);
    kit::teardown(podman);
    drop(conmons);

    let md = report(&rows, o, &load_start);
    let json = serde_json::json!({
        "components": o.n,
        "probe_interval": o.probe_interval,
        "resync": o.resync,
        "concurrency": o.concurrency,
        "rows": rows.iter().map(|r| serde_json::json!({
            "case": r.case, "exit_command_delay_s": r.exit_delay, "window_s": r.window_s,
            "load_start": r.load_start, "load_end": r.load_end,
            "agent_cpu_s": r.agent_cpu_s, "agent_rss_kib": r.agent_rss_kib,
            "agent_hwm_kib": r.agent_hwm_kib, "service_cpu_s": r.service_cpu_s,
            "service_rss_kib": r.service_rss_kib, "conmon_cpu_s": r.conmon_cpu_s,
            "conmons_reaped": r.conmons_reaped, "reaped_cpu_s": r.reaped_cpu_s,
            "machine_busy_s": r.machine_busy_s,
            "probes_ok": r.probes_ok, "probes_failed": r.probes_failed,
            "probe_mean_ms": r.probe_mean_ms, "late_ms": r.late.json(),
            "late_over_1s": r.late_over_1s, "probes_started": r.started,
            "exec_conmons": { "count": r.exec_conmons.count, "rss_kib": r.exec_conmons.rss_kib,
                              "pss_kib": r.exec_conmons.pss_kib },
            "container_conmons": { "count": r.ctr_conmons.count, "rss_kib": r.ctr_conmons.rss_kib,
                                   "pss_kib": r.ctr_conmons.pss_kib },
            "exec_conmons_alive": r.samples,
        })).collect::<Vec<_>>(),
    });
    kit::write_result(
        out,
        "health-idle.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    kit::write_result(out, "health-idle.md", &md);
    println!("{md}");
}

fn report(rows: &[Row], o: &Opts, load_start: &str) -> String {
    let wanted =
        o.n as f64 / humantime::parse_duration(o.probe_interval).map_or(10.0, |d| d.as_secs_f64());
    let mib = |k: u64| k as f64 / 1024.0;
    let mut md = format!(
        "### Health checks at rest: {} components, a check every {}, `[health] concurrency = {}`, window {} s\n\n\
         | kind | exit_command_delay | probes (failed) | probes/s (wanted {wanted:.1}) | mean probe (ms) | late: median / p95 / max (ms; the histogram's buckets), > 1 s | agent CPU | agent RSS (peak), MiB | podman service CPU | conmons' CPU | machine busy (cores) | exec conmons at the end: n, RSS / PSS MiB | load (start → end) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        o.n,
        o.probe_interval,
        o.concurrency,
        o.window.as_secs()
    );
    for r in rows {
        let pct = |s: f64| format!("{:.3} %", 100.0 * s / r.window_s);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} ({:.0}) | {:.2} | {:.0} | {} | {} | {:.1} ({:.1}) | {} | {} | {:.3} | {} | {} → {} |",
            r.case,
            if r.case == "none" || !r.case.starts_with("exec") {
                "".to_string()
            } else {
                format!("{} s", r.exit_delay)
            },
            r.probes(),
            r.probes_failed,
            r.probes() / r.window_s,
            r.probe_mean_ms,
            if r.started > 0 {
                format!(
                    "{:.0} / {:.0} / {:.0}, {}",
                    r.late.median, r.late.p95, r.late.max, r.late_over_1s
                )
            } else {
                String::new()
            },
            pct(r.agent_cpu_s),
            mib(r.agent_rss_kib),
            mib(r.agent_hwm_kib),
            pct(r.service_cpu_s),
            pct(r.conmon_cpu_s),
            r.machine_busy_s / r.window_s,
            if r.case.starts_with("exec") {
                format!(
                    "{}, {:.0} / {:.0}",
                    r.exec_conmons.count,
                    mib(r.exec_conmons.rss_kib),
                    mib(r.exec_conmons.pss_kib)
                )
            } else {
                String::new()
            },
            r.load_start,
            r.load_end,
        );
    }
    if let Some(base) = rows.iter().find(|r| r.case == "none") {
        let _ = write!(
            md,
            "\nPer probe, beyond the baseline without checks (CPU ms; each rate minus the baseline's, \
             divided by the probes per second):\n\n\
             | kind | machine (all processes) | agent | podman service | conmons (+ runc, the probe's process, podman's exit command) | one whole exec session, from those that ended in the window | the rest (not ours, or kernel) |\n\
             |---|---|---|---|---|---|---|\n"
        );
        for r in rows.iter().filter(|r| r.case != "none") {
            let rate = r.probes() / r.window_s;
            let per = |x: f64, b: f64| 1000.0 * (x / r.window_s - b / base.window_s) / rate;
            let machine = per(r.machine_busy_s, base.machine_busy_s);
            let agent = per(r.agent_cpu_s, base.agent_cpu_s);
            let service = per(r.service_cpu_s, base.service_cpu_s);
            let conmon = per(r.conmon_cpu_s, base.conmon_cpu_s);
            let session = if r.conmons_reaped > 0 {
                format!(
                    "{:.1} ({} sessions)",
                    1000.0 * r.reaped_cpu_s / r.conmons_reaped as f64,
                    r.conmons_reaped
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {} | {machine:.1} | {agent:.2} | {service:.1} | {conmon:.1} | {session} | {:.1} |",
                r.case,
                machine - agent - service - conmon
            );
        }
    }
    let mut verdicts = BTreeMap::new();
    for r in rows.iter().filter(|r| r.case != "none") {
        let cpu = r.agent_cpu_s / r.window_s <= CPU_TARGET;
        let rss = r.agent_hwm_kib <= RSS_TARGET_KIB;
        verdicts.insert(
            r.case.clone(),
            format!(
                "CPU {} ({:.3} %), RSS {} ({:.1} MiB peak)",
                if cpu { "met" } else { "**not met**" },
                100.0 * r.agent_cpu_s / r.window_s,
                if rss { "met" } else { "**not met**" },
                mib(r.agent_hwm_kib)
            ),
        );
    }
    let _ = write!(
        md,
        "\nTargets (agent CPU ≤ 1 % of one core, RSS ≤ 40 MiB): {}.\n\n\
         Load average (1, 5, 15 min) at the start: {load_start}; at the end: {}.\n",
        verdicts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        kit::loadavg()
    );
    md
}
