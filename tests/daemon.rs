//! `mcp-agent run` against a real, private podman: event-driven repair, registry changes
//! from other processes, backoff, podman restarts, sd_notify, signals.

mod agentkit;
mod common;

use std::time::{Duration, Instant, SystemTime};

use agentkit::{container_id, start_times, Agent, NotifySocket};
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

/// A resync interval no test waits for: repairs seen within a test came from events,
/// registry changes or backoff timers.
const NO_TICK: &str = "[reconcile]\ninterval = \"1h\"\n";

fn simple(name: &str) -> String {
    format!("name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{IMAGE}\"\n")
}

fn running_other_than(podman: &PrivatePodman, name: &str, old: &str) -> bool {
    podman
        .inspect(name)
        .is_some_and(|c| c["State"]["Running"] == true && c["Id"] != old)
}

#[test]
fn a_removed_or_killed_container_is_replaced_at_once_by_events() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let _d = agent.start_daemon(&[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));

    let old = container_id(&podman, "a");
    let t = Instant::now();
    podman.podman_ok(&["rm", "-f", "-t", "0", "a"]);
    wait_for("a replaced after rm -f", Duration::from_secs(10), || {
        running_other_than(&podman, "a", &old)
    });
    eprintln!("replaced after rm -f in {:?}", t.elapsed());

    let t = Instant::now();
    podman.podman_ok(&["kill", "a"]);
    wait_for(
        "a running again after kill",
        Duration::from_secs(10),
        || podman.running("a"),
    );
    eprintln!("running again after kill in {:?}", t.elapsed());
}

#[test]
fn apply_from_another_process_takes_effect_without_a_tick() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let _d = agent.start_daemon(&[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));
    let t = Instant::now();
    agent.apply("b.toml", &simple("b"));
    wait_for("b runs after apply", Duration::from_secs(5), || {
        podman.running("b")
    });
    eprintln!("b running {:?} after apply", t.elapsed());
    agent.ok(&["stop", "b"]);
    wait_for("b stopped after stop", Duration::from_secs(15), || {
        !podman.running("b")
    });
    agent.ok(&["remove", "b"]);
    // (The removal waits for the stop still under way: sleep ignores SIGTERM.)
    wait_for("b removed after remove", Duration::from_secs(20), || {
        podman.inspect("b").is_none()
    });
    assert!(podman.running("a"));
}

#[test]
fn a_crash_loop_backs_off_exponentially_while_a_healthy_neighbour_recovers_fast() {
    let podman = podman();
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"1s\"\nbackoff_multiplier = 2.0\nbackoff_max = \"1m\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"crash\"\nimage = \"{IMAGE}\"\ncmd = [\"false\"]\n\
             [[components]]\nname = \"ok\"\nimage = \"{IMAGE}\"\n"
        ),
    );
    let since = SystemTime::now();
    let _d = agent.start_daemon(&[]);
    wait_for("s-ok runs", Duration::from_secs(20), || {
        podman.running("s-ok")
    });
    // Meanwhile the healthy neighbour is killed and must come back at normal speed.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    podman.podman_ok(&["kill", "s-ok"]);
    wait_for("s-ok back", Duration::from_secs(3), || {
        podman.running("s-ok")
    });
    let healthy = t.elapsed();
    // Let the crash loop run for a fixed window, then count its attempts.
    let window = 12.0;
    while since.elapsed().unwrap().as_secs_f64() < window + 1.0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let starts = start_times(&podman, "s-crash", since);
    let first = starts[0];
    let t: Vec<f64> = starts
        .iter()
        .map(|s| s - first)
        .filter(|s| *s <= window)
        .collect();
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("crash starts at {t:?}, gaps {gaps:?}, healthy back in {healthy:?}");
    // Schedule: delays d_i = 2^i s with jitter up to +100%: attempts at 0, [1,2), [3,6),
    // [7,14), [15,30), plus each attempt's own latency (up to ~1.5 s on a loaded 2-core
    // machine). The exact schedule is checked with a paused clock in src/daemon/tests.rs.
    assert!(
        (3..=4).contains(&t.len()),
        "{} attempts in {window}s: {t:?}",
        t.len()
    );
    for (i, g) in gaps.iter().enumerate() {
        let d = 2f64.powi(i as i32);
        assert!(
            *g >= d * 0.95,
            "gap {i} = {g:.3}s is below the schedule's {d}s: {gaps:?}"
        );
        assert!(
            *g < 2.0 * d + 1.5,
            "gap {i} = {g:.3}s is above the schedule's {}s: {gaps:?}",
            2.0 * d
        );
    }
    assert!(
        healthy < Duration::from_secs(2),
        "healthy neighbour took {healthy:?}"
    );
}

#[test]
fn the_daemon_survives_podman_restarting_and_repairs_what_happened_meanwhile() {
    let mut podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    agent.apply("b.toml", &simple("b"));
    let mut d = agent.start_daemon(&[]);
    wait_for("a and b run", Duration::from_secs(20), || {
        podman.running("a") && podman.running("b")
    });
    podman.stop_service();
    // The CLI works without the API service: kill one container while podman is away.
    podman.podman_ok(&["kill", "a"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.alive(), "the daemon must survive podman going away");
    podman.start_service();
    wait_for(
        "a back after podman returned",
        Duration::from_secs(15),
        || podman.running("a"),
    );
    assert!(podman.running("b"));
    assert!(d.alive());
    // And events flow again on the new connection.
    podman.podman_ok(&["rm", "-f", "-t", "0", "b"]);
    wait_for(
        "b replaced via the new event stream",
        Duration::from_secs(10),
        || podman.running("b"),
    );
}

#[test]
fn sd_notify_readiness_status_watchdog_reload_and_stop() {
    let mut podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let mut n = NotifySocket::bind(agent.path());
    // Podman absent at start: the daemon waits, says so, and is not READY.
    podman.stop_service();
    let watchdog_usec = 400_000;
    let mut d = agent.start_daemon(&[
        ("NOTIFY_SOCKET", n.path.to_str().unwrap()),
        ("WATCHDOG_USEC", &watchdog_usec.to_string()),
    ]);
    assert!(
        n.until("STATUS=waiting for podman", Duration::from_secs(10)),
        "{:?}",
        n.messages()
    );
    assert!(
        !n.until("READY=1", Duration::from_millis(1500)),
        "READY before podman: {:?}",
        n.messages()
    );
    assert!(!podman.running("a"));
    podman.start_service();
    assert!(
        n.until("READY=1", Duration::from_secs(20)),
        "{:?}",
        n.messages()
    );
    // READY comes after the first pass: the container is already up.
    assert!(
        podman.running("a"),
        "READY=1 before the first pass finished"
    );
    let ready = n.last_read().unwrap();
    assert!(
        ready.contains("STATUS=1 running, 0 backing off, 0 failed"),
        "{ready}"
    );

    // Watchdog at half of WATCHDOG_USEC: 0.2 s, so about 10 in 2 s.
    let t0 = Instant::now();
    n.until("never", Duration::from_secs(2));
    let pings = n.count("WATCHDOG=1", t0);
    assert!(
        (7..=13).contains(&pings),
        "{pings} watchdog pings in 2 s: {:?}",
        n.messages()
    );

    // SIGHUP: RELOADING, then READY again; a broken config is logged and the old kept.
    d.signal("HUP");
    assert!(
        n.until("RELOADING=1", Duration::from_secs(5)),
        "{:?}",
        n.messages()
    );
    assert!(
        n.until("READY=1", Duration::from_secs(5)),
        "{:?}",
        n.messages()
    );
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{good}\n[nonsense]\n")).unwrap();
    d.signal("HUP");
    assert!(
        n.until("READY=1", Duration::from_secs(5)),
        "{:?}",
        n.messages()
    );
    assert!(d.alive(), "a bad config on reload must not stop the daemon");
    wait_for(
        "the reload failure is logged",
        Duration::from_secs(5),
        || d.log().contains("config reload failed"),
    );
    std::fs::write(&agent.config, good).unwrap();
    // Still reconciling after the failed reload.
    podman.podman_ok(&["kill", "a"]);
    wait_for(
        "a back after the failed reload",
        Duration::from_secs(10),
        || podman.running("a"),
    );

    // SIGTERM: STOPPING, exit 0 within 10 s, containers left running.
    let t = Instant::now();
    d.signal("TERM");
    assert!(
        n.until("STOPPING=1", Duration::from_secs(5)),
        "{:?}",
        n.messages()
    );
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        podman.running("a"),
        "containers keep running after the daemon stops"
    );
    // No watchdog pings once the loop is gone.
    let after = Instant::now();
    n.until("never", Duration::from_millis(600));
    assert_eq!(n.count("WATCHDOG=1", after), 0);
}

#[test]
fn slow_a_long_quiet_event_stream_still_delivers_the_next_event_at_once() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let mut d = agent.start_daemon(&[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));
    // Longer than bollard's default 120 s client timeout, with no container events.
    std::thread::sleep(Duration::from_secs(150));
    assert!(d.alive());
    let old = container_id(&podman, "a");
    let t = Instant::now();
    podman.podman_ok(&["rm", "-f", "-t", "0", "a"]);
    wait_for(
        "a replaced after 150 s of quiet",
        Duration::from_secs(3),
        || running_other_than(&podman, "a", &old),
    );
    eprintln!("replaced {:?} after the event", t.elapsed());
}

#[test]
fn json_logs_carry_structured_fields_and_an_idle_daemon_is_quiet_at_info() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1s\"\n");
    agent.apply("a.toml", &simple("a"));
    let d = agent.start_daemon_with(&["--log-format", "json", "--log-level", "info"], &[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));
    wait_for("ready logged", Duration::from_secs(10), || {
        d.log().contains("ready")
    });
    let settled = d.log().lines().count();
    // Three resync ticks with nothing to do: not one line at info.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        d.log().lines().count(),
        settled,
        "idle ticks logged:\n{}",
        d.log()
    );
    podman.podman_ok(&["rm", "-f", "-t", "0", "a"]);
    wait_for("a back", Duration::from_secs(10), || podman.running("a"));
    wait_for("the repair logged", Duration::from_secs(5), || {
        d.log().contains("\"reconciled\"")
    });
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("\"reconciled\""))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["fields"]["service"], "a", "{line}");
    assert_eq!(v["fields"]["component"], "a", "{line}");
    assert_eq!(v["fields"]["container"], "a", "{line}");
    assert_eq!(v["fields"]["action"], "create", "{line}");
    assert_eq!(v["level"], "INFO");
}

/// Conmon processes still running for containers of this podman's storage root.
fn conmons_of(podman: &PrivatePodman) -> Vec<u32> {
    let root = podman.root_dir().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("conmon") && c.contains(&root)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_remove_right_after_a_stop_waits_for_it_and_leaves_no_process_behind() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    agent.apply("b.toml", &simple("b"));
    let _d = agent.start_daemon(&[]);
    wait_for("a and b run", Duration::from_secs(20), || {
        podman.running("a") && podman.running("b")
    });
    // busybox's sleep ignores SIGTERM: the stop takes podman's whole timeout, and the
    // removal arrives while it is under way.
    agent.ok(&["stop", "b"]);
    std::thread::sleep(Duration::from_millis(500));
    agent.ok(&["remove", "b"]);
    wait_for("b removed", Duration::from_secs(30), || {
        podman.inspect("b").is_none()
    });
    // Exactly one conmon is left: a's. A forced removal racing the stop used to leave
    // b's process running with podman no longer knowing it.
    wait_for("only a's conmon remains", Duration::from_secs(5), || {
        conmons_of(&podman).len() == 1
    });
    assert!(podman.running("a"));
}

#[test]
fn a_second_signal_exits_at_once_while_the_first_drains() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let mut d = agent.start_daemon(&[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));
    // A stop that takes podman's 10 s timeout (sleep ignores SIGTERM) is in flight.
    agent.ok(&["stop", "a"]);
    wait_for("the stop is under way", Duration::from_secs(5), || {
        d.log().contains("registry changed")
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    wait_for("draining", Duration::from_secs(5), || {
        d.log().contains("stopping: finishing in-flight operations")
    });
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(3)),
        Some(143),
        "{}",
        d.log()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_crash_of_the_containers_process_is_noticed_at_once() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let _d = agent.start_daemon(&[]);
    wait_for("a runs", Duration::from_secs(20), || podman.running("a"));
    // Let the first bring-up's backoff step pass: this is a one-off crash.
    std::thread::sleep(Duration::from_millis(2500));
    // A crash is not `podman kill` (which emits a `kill` event): the process dies on
    // its own, and podman reports only its death.
    let started = |podman: &PrivatePodman| {
        podman.inspect("a").and_then(|v| {
            (v["State"]["Running"].as_bool() == Some(true))
                .then(|| v["State"]["StartedAt"].as_str().unwrap_or("").to_string())
        })
    };
    let before = started(&podman).expect("a runs");
    let pid = podman.inspect("a").unwrap()["State"]["Pid"]
        .as_i64()
        .unwrap();
    let t = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    // Started again (the pidfd tells the daemon at once: the restart can take less time
    // than one look at podman, so the death itself is not waited for).
    wait_for(
        "a running again after its crash",
        Duration::from_secs(5),
        || started(&podman).is_some_and(|s| s != before),
    );
    eprintln!("running again {:?} after the crash", t.elapsed());
}
