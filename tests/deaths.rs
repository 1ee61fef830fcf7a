//! Deaths learnt without podman's event stream (issue 16): the daemon watches each running
//! container's main process through a pidfd, so a crash is repaired even while the event
//! stream says nothing — and a `podman rm -f`, which shows the same death first, is never
//! raced: a start in the middle of podman's removal would leave an orphan.

mod agentkit;
mod common;

use std::time::{Duration, Instant};

use agentkit::Agent;
use common::relay::Relay;
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

fn started_at(podman: &PrivatePodman, name: &str) -> Option<String> {
    let v = podman.inspect(name)?;
    (v["State"]["Running"].as_bool() == Some(true))
        .then(|| v["State"]["StartedAt"].as_str().unwrap_or("").to_string())
}

/// With the event stream stalled (podman's answers on it held by a relay) and no resync
/// for an hour, a SIGKILLed main process is restarted anyway, three times over.
#[test]
fn a_crash_is_repaired_while_the_event_stream_is_stalled() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let relay = Relay::start(podman.dir().join("relay.sock"), podman.socket_path());
    let agent = Agent::with_socket(
        &podman,
        &relay.uri(),
        "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
             cmd = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n"
        ),
    );
    let d = agent.start_daemon(&[]);
    wait_for("s-app running", Duration::from_secs(20), || {
        started_at(&podman, "s-app").is_some()
    });
    // Its pid is watched once the daemon has inspected it after the pass.
    wait_for("the daemon ready", Duration::from_secs(20), || {
        d.log().contains("first pass done; ready")
    });
    for round in 0..3 {
        let before = started_at(&podman, "s-app").expect("running");
        let pid = podman.inspect("s-app").unwrap()["State"]["Pid"]
            .as_u64()
            .unwrap();
        relay.stall_events(true);
        // The watch of a container just (re)started is set up by an inspect after it.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let ok = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        // Podman's start waits for its own cleanup of the dead container (≈ 0.1 s on a
        // quiet machine, over 1 s under load): the bound is generous; without the pidfd
        // there is no restart at all while the stream is stalled (resync: 1 h).
        wait_for(
            &format!("round {round}: restarted with the event stream stalled"),
            Duration::from_secs(10),
            || started_at(&podman, "s-app").is_some_and(|s| s != before),
        );
        let took = t.elapsed();
        eprintln!("round {round}: restarted {took:?} after the kill");
        assert!(
            d.log().contains("main process exited"),
            "the pidfd told it:\n{}",
            d.log()
        );
        relay.stall_events(false);
    }
    if std::env::var("SHOW_LOG").is_ok() {
        eprintln!("{}", d.log());
    }
}

/// The conmons still alive that run container `id` (their `-c ID` argument).
fn conmons_of(id: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let is_conmon = cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"conmon"));
        if is_conmon && mcp_agent::ports::container_of_conmon(&cmd).as_deref() == Some(id) {
            out.push(pid);
        }
    }
    out
}

/// Ends an orphan this test's agent made: the conmon's children, then the conmon.
fn end_orphan(conmon: u32) {
    let children = std::fs::read_to_string(format!("/proc/{conmon}/task/{conmon}/children"))
        .unwrap_or_default();
    for pid in children
        .split_whitespace()
        .chain([conmon.to_string().as_str()])
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
}

/// `podman rm -f` kills the main process (the pidfd tells the agent at once) and removes the
/// container after: the agent's start in between would run a container podman then
/// deletes, its conmon and process living on. Twelve removals: each is replaced by a new
/// container, and no conmon of a removed one is left.
#[test]
fn a_removal_is_never_raced_into_an_orphan() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(
        &podman,
        "[reconcile]\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
             cmd = [\"sleep\", \"100000\"]\n"
        ),
    );
    let d = agent.start_daemon(&[]);
    let id_of = |podman: &PrivatePodman| {
        let v = podman.inspect("s-app")?;
        (v["State"]["Running"].as_bool() == Some(true))
            .then(|| v["Id"].as_str().unwrap_or("").to_string())
    };
    wait_for("s-app running", Duration::from_secs(20), || {
        id_of(&podman).is_some()
    });
    let mut orphans = Vec::new();
    for round in 0..12 {
        let old = id_of(&podman).expect("running");
        // The watch of a container just started is set up by an inspect after it.
        std::thread::sleep(Duration::from_millis(300));
        podman.podman_ok(&["rm", "-f", "-t", "0", "s-app"]);
        wait_for(
            &format!("round {round}: a new s-app running"),
            Duration::from_secs(10),
            || id_of(&podman).is_some_and(|id| id != old),
        );
        // A removed container's conmon exits with its process; an orphan's stays.
        let left = common::poll_until(Duration::from_secs(2), || conmons_of(&old).is_empty());
        if left.is_none() {
            orphans.push((round, old.clone(), conmons_of(&old)));
        }
    }
    for (_, _, pids) in &orphans {
        pids.iter().copied().for_each(end_orphan);
    }
    assert!(
        orphans.is_empty(),
        "orphans left by starts racing podman's removal: {orphans:?}\n{}",
        d.log()
    );
}
