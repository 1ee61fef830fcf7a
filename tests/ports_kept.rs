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

/// A stand-in for podman's orphan: a process named `conmon`, of a container id podman does
/// not have (`-c ID`), listening on `port` — what a `podman rm -f` that races a start
/// leaves (the chaos soak met it: the run the start made is never stopped, and its conmon
/// keeps the reserved host port).
struct FakeOrphan {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl FakeOrphan {
    fn start(port: u16) -> FakeOrphan {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("conmon");
        std::os::unix::fs::symlink("/usr/bin/python3", &exe).unwrap();
        let script = dir.path().join("hold.py");
        std::fs::write(
            &script,
            format!(
                "import socket, sys, time\ns = socket.socket()\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('0.0.0.0', {port}))\ns.listen()\nprint('ready', flush=True)\n\
                 time.sleep(3600)\n"
            ),
        )
        .unwrap();
        let mut child = std::process::Command::new(&exe)
            .arg(&script)
            .args(["-c", &"0f".repeat(32)])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the fake conmon");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        FakeOrphan { child, _dir: dir }
    }

    /// How long it has run.
    fn age(&self) -> Duration {
        mcp_agent::ports::age(self.child.id()).expect("the fake conmon runs")
    }
}

impl Drop for FakeOrphan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A route's port held by podman's orphan (a conmon of a container podman no longer has)
/// is moved once the component's container is `created` and cannot start, instead of being
/// kept for ever; held by a conmon of a container podman has, it is kept (the test above).
#[test]
fn a_port_held_by_podmans_orphaned_conmon_is_moved() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "[ports]\nrange = \"24800-24809\"\n");
    agent.apply("p.toml", &service(1));
    let first = agent.run(&["--once"]);
    assert_eq!(first.code, 0, "{first}");
    let before = ports(&agent)["c0"];
    podman.podman_ok(&["rm", "-f", "-t", "0", "p-c0"]);
    let orphan = FakeOrphan::start(before as u16);
    // Held by "podman's" process: kept, and the container cannot start.
    let blocked = agent.run(&["--once", "--timeout", "20s"]);
    assert_ne!(blocked.code, 0, "{blocked}");
    assert!(blocked.to_string().contains("already in use"), "{blocked}");
    assert_eq!(ports(&agent)["c0"], before);
    wait_for(
        "the orphan to be old enough",
        Duration::from_secs(10),
        || orphan.age() >= mcp_agent::ports::ORPHAN_AGE,
    );
    // Now known for an orphan (its container is no container podman has): moved.
    let moved = agent.run(&["--once", "--timeout", "30s"]);
    assert_eq!(moved.code, 0, "{moved}");
    let after = ports(&agent)["c0"];
    assert_ne!(after, before, "{moved}");
    assert!(podman.running("p-c0"));
    let inspected = podman.inspect("p-c0").unwrap();
    assert!(
        inspected["HostConfig"]["PortBindings"]
            .to_string()
            .contains(&after.to_string()),
        "{inspected}"
    );
    drop(orphan);
    podman.podman_ok(&["rm", "-af", "-t", "0"]);
}
