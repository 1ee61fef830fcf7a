//! §10 Dependency order in a mass recovery (issue 14): `services` (20) stacks of three
//! tiers — `db` with a check that passes as soon as its process is up (`["CMD-SHELL",
//! "test -f /tmp/ready"]`, the file touched first thing; `start_interval = "1s"`), `app`
//! with `depends_on = { db = "healthy" }`, `worker` with `depends_on = { app = "started" }`
//! — against the same 60 components without checks or `depends_on` ("plain"). Podman's
//! database is lost (the ENVIRONMENT.md recipe, `PrivatePodman::lose_database`) and
//! everything is brought back by `mcp-agent --once` (timed from its start to its exit) and
//! by the daemon starting (timed from its spawn to its "first pass done; ready" line, which
//! waits for every check to pass), `rounds` times in rotated order.
//!
//! Both variants are the same containers (checks and `depends_on` are not in the spec
//! hash): the registry is switched with `apply` before each run. Podman's events (its own
//! timestamps) and the agent's status (when each db turned healthy) give, per stack: db
//! started → its check passed (the probes' own time: the wait for the first probe, one
//! start_interval ± 10 %, and the probe), check passed → app created (the agent's
//! reaction), app started → worker started.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::events::{secs_between, Events};
use crate::kit::{self, Agent, BenchNetwork, Stats, IMAGE};

/// The target: recovery with dependencies ≤ 1.3 × the plain one, plus the probes' own time.
const RATIO_TARGET: f64 = 1.3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Deps,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Plain => "plain (no checks, no depends_on)",
            Variant::Deps => "db ← app ← worker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Once,
    Daemon,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Once => "`--once`",
            Way::Daemon => "daemon start → ready",
        }
    }
}

/// One timed run.
#[derive(Debug, Clone, Default)]
struct Run {
    secs: f64,
    /// From the run's start to the last container's `start` event.
    last_start_s: f64,
    /// Per stack (deps only): db start → db healthy, healthy → app create, app start →
    /// worker start.
    probe_own: Vec<f64>,
    reaction: Vec<f64>,
    worker_after_app: Vec<f64>,
}

const WAIT: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

fn sh(line: &str) -> String {
    format!(
        "[\"sh\", \"-c\", {}]",
        toml::Value::String(line.to_string())
    )
}

fn files(services: usize, net: &str, v: Variant) -> Vec<(String, String)> {
    let deps = v == Variant::Deps;
    (0..services)
        .map(|s| {
            let name = format!("d{s:02}");
            let mut t = format!("name = \"{name}\"\n");
            let _ = write!(
                t,
                "\n[[components]]\nname = \"db\"\nimage = \"{IMAGE}\"\nnetwork = \"{net}\"\ncmd = {}\n",
                sh(&format!("touch /tmp/ready; {WAIT}"))
            );
            if deps {
                t.push_str(
                    "\n[components.health]\ntest = [\"CMD-SHELL\", \"test -f /tmp/ready\"]\n\
                     interval = \"10s\"\nstart_interval = \"1s\"\ntimeout = \"5s\"\n",
                );
            }
            for (c, on) in [("app", "db = \"healthy\""), ("worker", "app = \"started\"")] {
                let _ = write!(
                    t,
                    "\n[[components]]\nname = \"{c}\"\nimage = \"{IMAGE}\"\nnetwork = \"{net}\"\ncmd = {}\n",
                    sh(WAIT)
                );
                if deps {
                    let _ = writeln!(t, "depends_on = {{ {on} }}");
                }
            }
            (format!("{name}.toml"), t)
        })
        .collect()
}

/// When each db turned healthy, from `status --json`.
fn healthy_since(agent: &Agent) -> BTreeMap<String, SystemTime> {
    let text = agent.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("status JSON");
    v["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["component"] == "db" && c["health"]["state"] == "healthy")
        .filter_map(|c| {
            let ms = c["health"]["since_ms"].as_u64()?;
            Some((
                c["service"].as_str()?.to_string(),
                UNIX_EPOCH + Duration::from_millis(ms),
            ))
        })
        .collect()
}

/// The time stamped on the daemon's "first pass done" line.
fn ready_at(log: &str) -> Option<SystemTime> {
    let line = log.lines().find(|l| l.contains("first pass done"))?;
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

pub fn run(out: &Path, services: usize, rounds: usize, ways: &[String]) {
    let load_start = kit::loadavg();
    let ways: Vec<Way> = ways
        .iter()
        .map(|w| match w.as_str() {
            "once" => Way::Once,
            "daemon" => Way::Daemon,
            other => panic!("no way {other:?}: once, daemon"),
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut podman = kit::podman_with_busybox();
    let net = BenchNetwork::create(&podman, &format!("mcpb-dm-{}", std::process::id()));
    let agent = Agent::new(&podman, &podman.socket_uri(), "interval = \"30s\"\n");
    let n = 3 * services;
    agent.apply(&files(services, &net.name, Variant::Deps));
    agent.ok(&["--once"]);
    assert_eq!(kit::running_names(&podman).len(), n, "initial pass");

    let combos: Vec<(Way, Variant)> = ways
        .iter()
        .flat_map(|&w| [(w, Variant::Plain), (w, Variant::Deps)])
        .collect();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); combos.len()];
    let mut loads = Vec::new();
    for round in 0..rounds {
        for k in 0..combos.len() {
            let i = (k + round) % combos.len();
            let (way, variant) = combos[i];
            agent.apply(&files(services, &net.name, variant));
            podman.lose_database();
            assert!(kit::running_names(&podman).is_empty(), "database lost");
            let mut events = rt.block_on(Events::start(&podman.socket_uri()));
            let load = kit::loadavg();
            let t0 = SystemTime::now();
            let clock = Instant::now();
            let secs = match way {
                Way::Once => {
                    // Exits 0 only if every component is up (and every check passed).
                    agent.ok(&["--once"]);
                    clock.elapsed().as_secs_f64()
                }
                Way::Daemon => {
                    let d = agent.start_daemon("info");
                    let at = ready_at(&d.log()).expect("ready line");
                    let v = if variant == Variant::Deps {
                        "deps"
                    } else {
                        "plain"
                    };
                    d.save_log(out, &format!("deps-mass-daemon-{v}-{round}.log"));
                    drop(d);
                    secs_between(t0, at)
                }
            };
            let up = kit::running_names(&podman).len();
            assert_eq!(
                up,
                n,
                "{} / {}: {up} of {n} running",
                way.label(),
                variant.label()
            );
            // Podman delivers events a little late.
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(1500)).await });
            events.drain();
            let first = |name: &str, action: &str| {
                events
                    .seen()
                    .iter()
                    .find(|e| e.name == name && e.action == action)
                    .map(|e| e.time)
            };
            let mut r = Run {
                secs,
                ..Run::default()
            };
            r.last_start_s = events
                .seen()
                .iter()
                .filter(|e| e.action == "start")
                .map(|e| secs_between(t0, e.time))
                .fold(0.0, f64::max);
            if variant == Variant::Deps {
                let healthy = healthy_since(&agent);
                for s in 0..services {
                    let svc = format!("d{s:02}");
                    let (Some(db), Some(h), Some(app_c), Some(app_s), Some(wk)) = (
                        first(&format!("{svc}-db"), "start"),
                        healthy.get(&svc).copied(),
                        first(&format!("{svc}-app"), "create"),
                        first(&format!("{svc}-app"), "start"),
                        first(&format!("{svc}-worker"), "start"),
                    ) else {
                        panic!("{svc}: events or health missing");
                    };
                    r.probe_own.push(secs_between(db, h));
                    r.reaction.push(secs_between(h, app_c));
                    r.worker_after_app.push(secs_between(app_s, wk));
                }
            }
            eprintln!(
                "bench deps-mass: round {}/{rounds}: {} / {}: {secs:.2} s (last start {:.2} s){}",
                round + 1,
                way.label(),
                variant.label(),
                r.last_start_s,
                if r.probe_own.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; db start → healthy median {:.2} s, healthy → app create median {:.3} s",
                        Stats::of(&r.probe_own).median,
                        Stats::of(&r.reaction).median
                    )
                }
            );
            loads.push(load);
            runs[i].push(r);
        }
    }
    // The checks' exec sessions of the last five minutes wait out exit_command_delay.
    crate::procs::kill_exec_conmons(&podman.dir().display().to_string());
    drop(net);
    kit::teardown(podman);

    let md = report(services, rounds, &combos, &runs, &load_start, &loads);
    let json = serde_json::json!({
        "services": services, "components": n, "rounds": rounds,
        "runs": combos.iter().zip(&runs).map(|((w, v), r)| serde_json::json!({
            "way": w.label(), "variant": v.label(),
            "secs": r.iter().map(|x| x.secs).collect::<Vec<_>>(),
            "last_start_s": r.iter().map(|x| x.last_start_s).collect::<Vec<_>>(),
            "db_start_to_healthy_s": r.iter().map(|x| x.probe_own.clone()).collect::<Vec<_>>(),
            "healthy_to_app_create_s": r.iter().map(|x| x.reaction.clone()).collect::<Vec<_>>(),
            "app_start_to_worker_start_s": r.iter().map(|x| x.worker_after_app.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "load_before_each_run": loads,
    });
    kit::write_result(
        out,
        "deps-mass.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    kit::write_result(out, "deps-mass.md", &md);
    println!("{md}");
}

fn report(
    services: usize,
    rounds: usize,
    combos: &[(Way, Variant)],
    runs: &[Vec<Run>],
    load_start: &str,
    loads: &[String],
) -> String {
    let med = |v: Vec<f64>| Stats::of(&v).median;
    let mut md = format!(
        "### Dependency order in a mass recovery: {services} stacks (db ← app ← worker), {} components, {rounds} rounds\n\n\
         | way | variant | median (s) | min | max | last start (s, median) | db start → healthy (median; max) | healthy → app created (median; max) | app started → worker started (median; max) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        3 * services
    );
    for ((w, v), r) in combos.iter().zip(runs) {
        let s = Stats::of(&r.iter().map(|x| x.secs).collect::<Vec<_>>());
        let pooled = |f: fn(&Run) -> &Vec<f64>| {
            let all: Vec<f64> = r.iter().flat_map(|x| f(x).iter().copied()).collect();
            if all.is_empty() {
                String::new()
            } else {
                let st = Stats::of(&all);
                format!("{:.2} s; {:.2} s", st.median, st.max)
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            w.label(),
            v.label(),
            s.median,
            s.min,
            s.max,
            med(r.iter().map(|x| x.last_start_s).collect()),
            pooled(|x| &x.probe_own),
            pooled(|x| &x.reaction),
            pooled(|x| &x.worker_after_app),
        );
    }
    md.push('\n');
    for pair in combos.chunks(2).zip(runs.chunks(2)) {
        let ((w, _), r) = (pair.0[0], pair.1);
        let plain = med(r[0].iter().map(|x| x.secs).collect());
        let deps = med(r[1].iter().map(|x| x.secs).collect());
        // The probes' own time: db started → its first passing probe, the median stack of
        // each run, the median of the runs.
        let own = med(r[1]
            .iter()
            .map(|x| Stats::of(&x.probe_own).median)
            .collect());
        let allowed = RATIO_TARGET * plain + own;
        let _ = writeln!(
            md,
            "{}: {deps:.2} s with dependencies against {plain:.2} s plain ({:.2}×); allowed 1.3 × {plain:.2} + {own:.2} s \
             (db start → first passing probe) = {allowed:.2} s: **{}**.",
            w.label(),
            deps / plain,
            if deps <= allowed { "met" } else { "not met" }
        );
    }
    let _ = write!(
        md,
        "\nLoad average (1, 5, 15 min) at the start: {load_start}; before each run: {}; at the end: {}.\n",
        loads.join(" | "),
        kit::loadavg()
    );
    md
}
