//! §1 Recovery latency: the daemon runs with one component; its container is removed
//! (`podman rm -f -t 0`) or crashed (its main process SIGKILLed from the host, restart
//! policy "no"), and the time from podman's `die` event to the replacement's `start` event
//! is measured. Baselines, taken
//! in the same run and interleaved with the agent's repetitions: (a) the same container's
//! create + start through the API (the agent's own bollard client, timed by the caller);
//! (b) podman's restart policy `always` restarting the same crash (`die` → `start`).
//!
//! Backoff: `backoff_initial = backoff_max = "1s"`, and each removal or crash at least
//! [`AGENT_SPACING`] after the agent's previous repair. Every repetition is then a one-off
//! repair, as the first repair after a quiet period is with the defaults: the delay an
//! attempt sets has passed before the next repetition (with the defaults, 10 minutes of
//! `stable_after` would have to pass between repetitions). A second attempt within one
//! repetition (a start that failed) is held back by 1 s, as the defaults' first step
//! (1–2 s) would hold it back.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use mcp_agent::container::ContainerSpec;
use mcp_agent::runtime::podman::Podman;
use mcp_agent::runtime::Runtime;
use mcp_agent::spec;

use crate::events::{secs_between, Events};
use crate::kit::{self, Agent, Stats};

/// The component's container, and the baselines' containers (not ours: another node).
const NAME: &str = "lat";
const BASE_CREATE: &str = "lat-base";
const BASE_RESTART: &str = "crash-base";
/// How long one repair may take before the repetition is recorded as a miss.
const REPAIR_DEADLINE: Duration = Duration::from_secs(45);
/// Pause between steps, so that podman's cleanup of one step is not timed in the next.
const SETTLE: Duration = Duration::from_millis(500);
/// Least time from one repair by the agent to the next removal or crash: above its 1 s
/// backoff step.
const AGENT_SPACING: Duration = Duration::from_millis(1500);

const SERVICE: &str = "name = \"lat\"\n\n[[components]]\nname = \"lat\"\n\
                       image = \"localhost/busybox:latest\"\nrestart = \"no\"\n\
                       env = { BENCH = \"latency\" }\n";

/// One repetition's figures, seconds.
#[derive(Debug, Clone, Copy)]
struct Repair {
    total: f64,
    /// `die` → `create` of the replacement (0 when restarted in place).
    to_create: f64,
    /// `die` → podman's `remove` of the container that died (after a removal: how long
    /// `podman rm` held the name, which no replacement can take before), 0 if none.
    to_remove: f64,
    /// How late the `die` event reached the benchmark's own event stream.
    delivery: f64,
    /// Podman's timestamp of the `die`, Unix seconds (to line up with the daemon's log).
    die_at: f64,
    /// Whether the container that died was started again before its replacement (after
    /// a removal: the agent raced `podman rm`).
    restarted_dying: bool,
}

pub fn run(out: &Path, reps: usize, cases: &[String]) {
    let load_start = kit::loadavg();
    let do_rm = cases.iter().any(|c| c == "rm");
    let do_crash = cases.iter().any(|c| c == "crash");
    let podman = kit::podman_with_busybox();
    let agent = Agent::new(
        &podman,
        &podman.socket_uri(),
        "backoff_initial = \"1s\"\nbackoff_max = \"1s\"\n",
    );
    agent.apply(&[("lat.toml".into(), SERVICE.into())]);
    agent.ok(&["--once"]);
    let daemon = agent.start_daemon("info");

    // Baseline (a): the same component's container, labelled for another node so the
    // daemon leaves it alone, under another name.
    let file = spec::parse_service(Path::new("lat.toml"), SERVICE).expect("valid service");
    let mut base_spec = ContainerSpec::build(
        &mcp_agent::container::Us::new("bench-baseline", ""),
        "lat",
        &file.service.components[0],
    );
    base_spec.name = BASE_CREATE.into();
    // Baseline (b): podman's own restart policy on the same image and command.
    podman.podman_ok(&[
        "run",
        "-d",
        "--name",
        BASE_RESTART,
        "--restart",
        "always",
        kit::IMAGE,
    ]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let cli = |args: Vec<&str>| {
        let mut c = podman.command();
        c.args(args);
        let out = c.output().expect("run podman");
        assert!(
            out.status.success(),
            "podman failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let (mut base_a, mut agent_a, mut base_b, mut agent_b) = (vec![], vec![], vec![], vec![]);
    let (mut misses_a, mut misses_b) = (0usize, 0usize);
    let cpu0 = daemon.usage();
    rt.block_on(async {
        let mut events = Events::start(&podman.socket_uri()).await;
        let mut last_agent = Instant::now();
        for i in 0..reps {
            if do_rm {
                // (a) baseline: create + start through the API, timed by the caller.
                let t = Instant::now();
                let id = client.create(&base_spec).await.expect("baseline create");
                client.start(&id).await.expect("baseline start");
                base_a.push(t.elapsed().as_secs_f64());
                cli(vec!["rm", "-f", "-t", "0", BASE_CREATE]);
                tokio::time::sleep(SETTLE).await;

                // (a) the agent: remove its container; die → start of the replacement.
                space(last_agent).await;
                let mark = SystemTime::now();
                cli(vec!["rm", "-f", "-t", "0", NAME]);
                match repair(&mut events, NAME, mark, true).await {
                    Some(r) => agent_a.push(r),
                    None => misses_a += 1,
                }
                last_agent = Instant::now();
                tokio::time::sleep(SETTLE).await;
            }
            if do_crash {
                // (b) baseline: podman's restart policy after its process is killed.
                let mark = SystemTime::now();
                crash(&client, BASE_RESTART).await;
                match repair(&mut events, BASE_RESTART, mark, false).await {
                    Some(r) => base_b.push(r.total),
                    None => panic!("podman did not restart {BASE_RESTART} (policy always)"),
                }
                tokio::time::sleep(SETTLE).await;

                // (b) the agent: its container's process is killed; die → start.
                space(last_agent).await;
                let mark = SystemTime::now();
                crash(&client, NAME).await;
                match repair(&mut events, NAME, mark, false).await {
                    Some(r) => agent_b.push(r),
                    None => misses_b += 1,
                }
                last_agent = Instant::now();
                tokio::time::sleep(SETTLE).await;
            }
            eprintln!("bench latency: {}/{reps}", i + 1);
        }
    });
    let cpu1 = daemon.usage();
    daemon.save_log(out, "latency-daemon.log");
    drop(daemon);

    kit::teardown(podman);
    let totals = |v: &[Repair]| v.iter().map(|r| r.total).collect::<Vec<_>>();
    let (sa, sb) = (Stats::of(&base_a), Stats::of(&totals(&agent_a)));
    let (sc, sd) = (Stats::of(&base_b), Stats::of(&totals(&agent_b)));
    let to_create = Stats::of(&agent_a.iter().map(|r| r.to_create).collect::<Vec<_>>());
    // The rm case split at podman's `remove` of the old container: podman's own removal
    // (the name is not free before it), then the agent's part after it.
    let removed: Vec<&Repair> = agent_a.iter().filter(|r| r.to_remove > 0.0).collect();
    let to_remove = Stats::of(&removed.iter().map(|r| r.to_remove).collect::<Vec<_>>());
    let after_remove = Stats::of(
        &removed
            .iter()
            .map(|r| r.total - r.to_remove)
            .collect::<Vec<_>>(),
    );
    let delivery = Stats::of(
        &agent_a
            .iter()
            .chain(&agent_b)
            .map(|r| r.delivery)
            .collect::<Vec<_>>(),
    );
    let ms = |x: f64| x * 1000.0;
    let mut md = String::new();
    md.push_str(&format!(
        "### Recovery latency ({reps} repetitions each, ms, podman's event timestamps)\n\n\
         | case | n | median | p95 | min | max | ratio median | ratio p95 (vs baseline median) | target | met |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    ));
    let row = |md: &mut String, what: &str, s: &Stats, base: &Stats, target: &str, met: &str| {
        md.push_str(&format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {target} | {met} |\n",
            s.n,
            ms(s.median),
            ms(s.p95),
            ms(s.min),
            ms(s.max),
            s.median / base.median,
            s.p95 / base.median,
        ))
    };
    let yes = |b: bool| if b { "met" } else { "not met" };
    let met_a = sb.median <= 1.5 * sa.median && sb.p95 <= 2.0 * sa.median && misses_a == 0;
    if do_rm {
        row(&mut md, "baseline: API create + start", &sa, &sa, "", "");
        row(
            &mut md,
            "agent: rm -f → die → start",
            &sb,
            &sa,
            "median ≤ 1.5×, p95 ≤ 2×",
            yes(met_a),
        );
    }
    let met_b = sd.median <= 2.0 * sc.median && misses_b == 0;
    if do_crash {
        row(&mut md, "baseline: podman restart=always", &sc, &sc, "", "");
        row(
            &mut md,
            "agent: crash → die → start",
            &sd,
            &sc,
            "median ≤ 2×",
            yes(met_b),
        );
    }
    md.push_str(&format!(
        "\nMisses (no start within {REPAIR_DEADLINE:?}): rm {misses_a}, kill {misses_b}.  \n\
         rm case, die → create of the replacement: median {:.1} ms, p95 {:.1} ms; \
         repetitions in which the removed container was started again before its \
         replacement: {}.  \n\
         rm case split at podman's `remove` of the old container ({} repetitions): \
         die → remove (podman's own removal; the name is held until it) median {:.1} ms, \
         p95 {:.1}; remove → start of the replacement median {:.1} ms, p95 {:.1} \
         ({:.2}× / {:.2}× the API create + start median).  \n\
         The benchmark's own event stream (no `since`) received `die` {:.1} ms after its \
         timestamp (median; p95 {:.1}, max {:.1}): podman's file events backend; the agent's \
         stream is not timed here (its debug log is: `MCP_BENCH_DAEMON_LOG=mcp_agent=debug`).  \n\
         Daemon CPU over the whole run: {:.2} s; RSS {} KiB (peak {} KiB).\n",
        ms(to_create.median),
        ms(to_create.p95),
        agent_a.iter().filter(|r| r.restarted_dying).count(),
        removed.len(),
        ms(to_remove.median),
        ms(to_remove.p95),
        ms(after_remove.median),
        ms(after_remove.p95),
        after_remove.median / sa.median,
        after_remove.p95 / sa.median,
        ms(delivery.median),
        ms(delivery.p95),
        ms(delivery.max),
        cpu1.cpu_s - cpu0.cpu_s,
        cpu1.rss_kib,
        cpu1.hwm_kib,
    ));
    let json = serde_json::json!({
        "reps": reps,
        "baseline_create_start_s": base_a,
        "agent_rm_s": totals(&agent_a),
        "agent_rm_die_to_create_s": agent_a.iter().map(|r| r.to_create).collect::<Vec<_>>(),
        "agent_rm_die_to_remove_s": agent_a.iter().map(|r| r.to_remove).collect::<Vec<_>>(),
        "agent_rm_die_unix_s": agent_a.iter().map(|r| r.die_at).collect::<Vec<_>>(),
        "agent_crash_die_unix_s": agent_b.iter().map(|r| r.die_at).collect::<Vec<_>>(),
        "baseline_restart_always_s": base_b,
        "agent_kill_s": totals(&agent_b),
        "event_delivery_s": agent_a.iter().chain(&agent_b).map(|r| r.delivery).collect::<Vec<_>>(),
        "misses": { "rm": misses_a, "kill": misses_b },
        "rm_restarted_dying": agent_a.iter().filter(|r| r.restarted_dying).count(),
        "stats": {
            "baseline_create_start": sa.json(), "agent_rm": sb.json(),
            "baseline_restart_always": sc.json(), "agent_kill": sd.json(),
            "event_delivery": delivery.json(),
            "agent_rm_die_to_remove": to_remove.json(), "agent_rm_remove_to_start": after_remove.json(),
        },
        "met": { "rm": do_rm && met_a, "crash": do_crash && met_b },
    });
    kit::write_result(
        out,
        "latency.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    let md = format!(
        "{md}\nLoad average (1, 5, 15 min) at the start: {load_start}; at the end: {}.\n",
        kit::loadavg()
    );
    kit::write_result(out, "latency.md", &md);
    println!("{md}");
}

/// Waits until the agent's last repair is [`AGENT_SPACING`] old.
async fn space(last: Instant) {
    let since = last.elapsed();
    if since < AGENT_SPACING {
        tokio::time::sleep(AGENT_SPACING - since).await;
    }
}

/// Crashes a container: SIGKILL to its main process from the host, as an OOM kill or a
/// segfault would end it. (`podman kill` would not do: podman then counts the container as
/// stopped by the user and its restart policy does not apply.)
async fn crash(client: &Podman, name: &str) {
    let c = client
        .docker()
        .expect("bollard client")
        .inspect_container(name, None)
        .await
        .expect("inspect");
    let pid = c.state.and_then(|s| s.pid).filter(|p| *p > 0);
    let pid = pid.unwrap_or_else(|| panic!("{name} has no running process"));
    let ok = tokio::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .expect("run kill")
        .success();
    assert!(ok, "kill -KILL {pid} ({name})");
}

/// Waits for the `start` of `name` after `mark` and measures it from the `die` before it.
/// `replaced`: the start must be of another container than the one that died (after a
/// removal, a start of the dying container is not a repair).
async fn repair(
    events: &mut Events,
    name: &str,
    mark: SystemTime,
    replaced: bool,
) -> Option<Repair> {
    let die = events
        .wait_for(REPAIR_DEADLINE, |e| {
            e.name == name && e.action == "die" && e.time >= mark
        })
        .await?;
    let start = events
        .wait_for(REPAIR_DEADLINE, |e| {
            e.name == name
                && e.action == "start"
                && e.time > die.time
                && (!replaced || e.id != die.id)
        })
        .await?;
    events.drain();
    let create = events.seen().iter().find(|e| {
        e.name == name && e.action == "create" && e.time >= die.time && e.time <= start.time
    });
    let remove = events.seen().iter().find(|e| {
        e.id == die.id && e.action == "remove" && e.time >= die.time && e.time <= start.time
    });
    let restarted_dying = replaced
        && events.seen().iter().any(|e| {
            e.id == die.id && e.action == "start" && e.time > die.time && e.time <= start.time
        });
    Some(Repair {
        restarted_dying,
        total: secs_between(die.time, start.time),
        to_create: create.map_or(0.0, |c| secs_between(die.time, c.time)),
        to_remove: remove.map_or(0.0, |r| secs_between(die.time, r.time)),
        delivery: secs_between(die.time, die.arrived),
        die_at: secs_between(SystemTime::UNIX_EPOCH, die.time),
    })
}
