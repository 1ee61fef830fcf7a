//! Deaths learnt without podman's event stream (issue 16): the daemon watches each running
//! container's main process through a pidfd, so a crash is repaired even while the event
//! stream says nothing.

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
