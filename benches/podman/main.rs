//! Live benchmarks of the agent against a real, private podman (BENCHMARKS.md §1–3, §5,
//! §9–10): recovery latency, mass recovery after podman's database is lost, idle cost, the
//! cost of a crash loop, health checks at rest, and dependency order in a mass recovery.
//! Each starts podman API services of its own (as the integration tests do:
//! `tests/common/mod.rs`) and the real `mcp-agent` binary, and tears all of it down again,
//! also on Ctrl-C.
//!
//! Needs root, podman, runc and busybox-static (`scripts/install-deps`). Run through
//! `scripts/bench`, or `cargo bench --bench podman -- SUBCOMMAND [OPTIONS]`:
//!
//! ```text
//! latency   [--reps 30] [--cases rm,crash]
//! mass      [--sizes 50,200] [--concurrency 1,2,4,8,16] [--rounds 3] [--routes]
//! idle      [--counts 10,200] [--window 120] [--interval 30s]
//! crashloop [--duration 600]
//! health-idle [--components 200] [--window 120] [--settle 30] [--probe-interval 10s]
//!           [--interval 30s] [--health-concurrency 4] [--kinds none,tcp,http,exec-10,exec]
//! deps-mass [--services 20] [--rounds 3] [--ways once,daemon]
//! common options: --out DIR (default target/bench-results)
//! ```
//!
//! A plain `cargo bench` runs every bench target; this one then only prints how to run it.

#[path = "../../tests/common/mod.rs"]
mod common;

mod crashloop;
mod deps_mass;
mod events;
mod health_idle;
mod histogram;
mod idle;
mod kit;
mod latency;
mod mass;
mod procs;
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: cargo bench --bench podman -- latency|mass|idle|crashloop|health-idle|deps-mass [options]
  latency   [--reps 30] [--cases rm,crash]
  mass      [--sizes 50,200] [--concurrency 1,2,4,8,16] [--rounds 3] [--routes]
  idle      [--counts 10,200] [--window 120] [--interval 30s]
  crashloop [--duration 600]
  health-idle [--components 200] [--window 120] [--settle 30] [--probe-interval 10s]
            [--interval 30s] [--health-concurrency 4] [--kinds none,tcp,http,exec-10,exec]
  deps-mass [--services 20] [--rounds 3] [--ways once,daemon]
  all subcommands: --out DIR (default target/bench-results)
(live benchmarks against a private podman; needs root: see scripts/bench)";

struct Opts {
    out: PathBuf,
    reps: usize,
    cases: Vec<String>,
    sizes: Vec<usize>,
    concurrency: Vec<usize>,
    rounds: usize,
    routes: bool,
    counts: Vec<usize>,
    window: Duration,
    interval: String,
    duration: Duration,
    components: usize,
    settle: Duration,
    probe_interval: String,
    health_concurrency: usize,
    kinds: Option<Vec<String>>,
    services: usize,
    ways: Vec<String>,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| x.trim().parse().unwrap_or_else(|_| usage_error(v)))
        .collect()
}

fn usage_error(what: &str) -> ! {
    eprintln!("bad argument {what:?}\n{USAGE}");
    std::process::exit(2)
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results"),
        reps: 30,
        cases: vec!["rm".into(), "crash".into()],
        sizes: vec![50, 200],
        concurrency: vec![1, 2, 4, 8, 16],
        rounds: 3,
        routes: false,
        counts: vec![10, 200],
        window: Duration::from_secs(120),
        interval: "30s".into(),
        duration: Duration::from_secs(600),
        components: 200,
        settle: Duration::from_secs(30),
        probe_interval: "10s".into(),
        health_concurrency: 4,
        kinds: None,
        services: 20,
        ways: vec!["once".into(), "daemon".into()],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage_error(a));
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| usage_error(&v));
        match a.as_str() {
            "--out" => o.out = PathBuf::from(val()),
            "--reps" => o.reps = num(val()),
            "--cases" => o.cases = val().split(',').map(str::to_string).collect(),
            "--sizes" => o.sizes = list(&val()),
            "--concurrency" => o.concurrency = list(&val()),
            "--rounds" => o.rounds = num(val()),
            "--routes" => o.routes = true,
            "--counts" => o.counts = list(&val()),
            "--window" => o.window = Duration::from_secs(num(val()) as u64),
            "--interval" => o.interval = val(),
            "--duration" => o.duration = Duration::from_secs(num(val()) as u64),
            "--components" => o.components = num(val()),
            "--settle" => o.settle = Duration::from_secs(num(val()) as u64),
            "--probe-interval" => o.probe_interval = val(),
            "--health-concurrency" => o.health_concurrency = num(val()),
            "--kinds" => o.kinds = Some(val().split(',').map(str::to_string).collect()),
            "--services" => o.services = num(val()),
            "--ways" => o.ways = val().split(',').map(str::to_string).collect(),
            other => usage_error(other),
        }
    }
    o
}

fn main() {
    // cargo appends `--bench` when it runs bench targets.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("podman benchmarks skipped: name one.\n{USAGE}");
        return;
    };
    let o = parse(rest);
    kit::catch_signals();
    match cmd.as_str() {
        "latency" => latency::run(&o.out, o.reps, &o.cases),
        "mass" => mass::run(&o.out, &o.sizes, &o.concurrency, o.rounds, o.routes),
        "idle" => idle::run(&o.out, &o.counts, o.window, &o.interval),
        "crashloop" => crashloop::run(&o.out, o.duration),
        "health-idle" => health_idle::run(
            &o.out,
            &health_idle::Opts {
                n: o.components,
                window: o.window,
                settle: o.settle,
                resync: &o.interval,
                probe_interval: &o.probe_interval,
                concurrency: o.health_concurrency,
                cases: o.kinds.as_deref(),
            },
        ),
        "deps-mass" => deps_mass::run(&o.out, o.services, o.rounds, &o.ways),
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => usage_error(other),
    }
}
