//! Live benchmarks of the agent against a real, private podman (BENCHMARKS.md §1–3, §5):
//! recovery latency, mass recovery after podman's database is lost, idle cost, and the
//! cost of a crash loop. Each starts podman API services of its own (as the integration
//! tests do: `tests/common/mod.rs`) and the real `mcp-agent` binary, and tears all of it
//! down again, also on Ctrl-C.
//!
//! Needs root, podman, runc and busybox-static (`scripts/install-deps`). Run through
//! `scripts/bench`, or `cargo bench --bench podman -- SUBCOMMAND [OPTIONS]`:
//!
//! ```text
//! latency   [--reps 30] [--cases rm,crash]
//! mass      [--sizes 50,200] [--concurrency 1,2,4,8,16] [--rounds 3] [--routes]
//! idle      [--counts 10,200] [--window 120] [--interval 30s]
//! crashloop [--duration 600]
//! common options: --out DIR (default target/bench-results)
//! ```
//!
//! A plain `cargo bench` runs every bench target; this one then only prints how to run it.

#[path = "../../tests/common/mod.rs"]
mod common;

mod crashloop;
mod events;
mod idle;
mod kit;
mod latency;
mod mass;
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: cargo bench --bench podman -- latency|mass|idle|crashloop [options]
  latency   [--reps 30] [--cases rm,crash]
  mass      [--sizes 50,200] [--concurrency 1,2,4,8,16] [--rounds 3] [--routes]
  idle      [--counts 10,200] [--window 120] [--interval 30s]
  crashloop [--duration 600]
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
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => usage_error(other),
    }
}
