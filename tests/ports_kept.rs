//! Route host ports are kept for good, against a real private podman: 60 L4 routes
//! through podman's database loss move not one port, and `podman stop -t 15` of a
//! container (its conmon holds the port while it stops) does not move its port.

mod agentkit;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentkit::Agent;
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

/// Host port per component, from `status --json`.
fn ports(agent: &Agent) -> BTreeMap<String, u64> {
    let r = agent.run(&["status", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}:\n{r}"));
    v["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            Some((
                c["component"].as_str()?.to_string(),
                c["routes"][0]["host_port"].as_u64()?,
            ))
        })
        .collect()
}

fn service(n: usize) -> String {
    let mut s = String::from("name = \"p\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i}\"\nimage = \"{IMAGE}\"\ncmd = [\"sleep\", \"infinity\"]\n\
             [[components.routes]]\nname = \"tcp\"\nport = 7000\nmode = \"l4\"\n"
        ));
    }
    s
}

#[test]
fn sixty_l4_routes_keep_their_ports_through_a_database_loss() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(
        &podman,
        "[ports]\nrange = \"24600-24699\"\n[reconcile]\nconcurrency = 4\n",
    );
    agent.apply("p.toml", &service(60));
    let first = agent.run(&["--once"]);
    assert_eq!(first.code, 0, "{first}");
    let before = ports(&agent);
    assert_eq!(before.len(), 60, "{before:?}");
    podman.lose_database();
    let again = agent.run(&["--once"]);
    assert_eq!(again.code, 0, "{again}");
    assert!(
        !again.stdout.lines().any(|l| l.starts_with("port")),
        "{again}"
    );
    assert_eq!(ports(&agent), before);
    for i in 0..60 {
        assert!(
            podman.running(&format!("p-c{i}")),
            "p-c{i} is not running:\n{again}"
        );
    }
}

#[test]
fn a_slow_podman_stop_does_not_move_the_port() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(
        &podman,
        "[ports]\nrange = \"24700-24709\"\n[reconcile]\ninterval = \"1s\"\n",
    );
    agent.apply("p.toml", &service(2));
    let mut daemon = agent.start_daemon(&[]);
    wait_for("both containers running", Duration::from_secs(60), || {
        podman.running("p-c0") && podman.running("p-c1")
    });
    let before = ports(&agent);
    // `sleep` as PID 1 ignores SIGTERM: podman waits the full 15 s, its conmon holding
    // the port, while the daemon passes every second.
    let mut stop = podman.command();
    stop.args(["stop", "-t", "15", "p-c0"]);
    let mut stop = stop.spawn().expect("podman stop");
    let started = Instant::now();
    wait_for("podman stop to end", Duration::from_secs(40), || {
        stop.try_wait().ok().flatten().is_some()
    });
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the stop did not wait"
    );
    wait_for("p-c0 running again", Duration::from_secs(30), || {
        podman.running("p-c0")
    });
    let log = daemon.log();
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(ports(&agent), before, "{log}");
    assert!(!log.contains("route moved"), "{log}");
}
