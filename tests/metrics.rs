//! The daemon's `/metrics` (issue 17), scraped and read by a real Prometheus text parser
//! (Python's `prometheus_client`, the OpenMetrics one: the format the agent serves) while
//! the daemon repairs a removal, a crash and a drift: each moves its counters, and only
//! its own.

mod agentkit;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentkit::{container_id, Agent};
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

/// Connects to the unix socket, GETs /metrics, parses the body with the OpenMetrics
/// parser (which refuses anything malformed) and prints every sample as JSON.
const SCRAPE: &str = r#"
import json, socket, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
assert head.startswith(b"HTTP/1.1 200"), head
assert b"application/openmetrics-text" in head, head
out = []
for fam in text_string_to_metric_families(body.decode()):
    for smp in fam.samples:
        out.append([fam.type, smp.name, smp.labels, smp.value])
print(json.dumps(out))
"#;

fn python() -> &'static str {
    // Debian's python3-prometheus-client (scripts/install-deps) is for its own python.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Samples by `name{k="v",...}` (labels sorted).
type Scrape = BTreeMap<String, f64>;

fn scrape(sock: &Path) -> Scrape {
    let out = Command::new(python())
        .args(["-c", SCRAPE, sock.to_str().unwrap()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|(_, name, labels, v)| {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{name}{{{}}}", l.join(",")), v)
        })
        .collect()
}

/// The samples that differ between two scrapes of the counters named, as `name → delta`.
fn moved(a: &Scrape, b: &Scrape, prefixes: &[&str]) -> BTreeMap<String, f64> {
    b.iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .filter_map(|(k, v)| {
            let d = v - a.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

fn started_at(podman: &PrivatePodman, name: &str) -> Option<String> {
    let v = podman.inspect(name)?;
    (v["State"]["Running"].as_bool() == Some(true))
        .then(|| v["State"]["StartedAt"].as_str().unwrap_or("").to_string())
}

/// A host port free now (for the fixed `ports` of s/other).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn service(env: &str, port: u16) -> String {
    format!(
        "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
         env = {{ MODE = \"{env}\" }}\n\
         cmd = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n\
         [[components]]\nname = \"other\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
         ports = [\"127.0.0.1:{port}:8080/tcp\"]\n\
         cmd = [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 100000 & wait\"]\n"
    )
}

const COUNTERS: &[&str] = &["mcp_agent_restarts_total", "mcp_agent_actions_total"];

#[test]
fn a_removal_a_crash_and_a_drift_each_move_their_own_counters() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("metrics.sock");
    let agent = Agent::new(
        &podman,
        &format!(
            "[reconcile]\ninterval = \"1h\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n\n\
             [metrics]\nlisten = \"{}\"\n",
            sock.display()
        ),
    );
    let port = free_port();
    agent.apply("s.toml", &service("a", port));
    let d = agent.start_daemon(&[]);
    wait_for("the daemon ready", Duration::from_secs(30), || {
        d.log().contains("first pass done; ready")
    });
    let s0 = scrape(&sock);
    let running = "mcp_agent_components{desired=\"running\",state=\"running\"}";
    assert_eq!(s0.get(running), Some(&2.0), "{s0:#?}");
    assert_eq!(
        s0.get("mcp_agent_component_running{component=\"app\",service=\"s\"}"),
        Some(&1.0)
    );
    assert_eq!(
        s0.get("mcp_agent_build_info{version=\"0.1.0\"}"),
        Some(&1.0)
    );
    assert!(
        s0.get("mcp_agent_podman_request_duration_seconds_count{call=\"list\"}")
            .is_some_and(|n| *n >= 1.0),
        "{s0:#?}"
    );
    assert!(s0
        .keys()
        .any(|k| k.starts_with("mcp_agent_passes_total{trigger=")));
    // The first creations are actions, not restarts.
    assert_eq!(
        moved(&Scrape::new(), &s0, COUNTERS),
        BTreeMap::from([(
            "mcp_agent_actions_total{action=\"create\",result=\"ok\"}".to_string(),
            2.0
        )])
    );

    // A removal: made again.
    let id = container_id(&podman, "s-app");
    assert!(podman.podman(&["rm", "-f", "s-app"]).status.success());
    wait_for("s-app made again", Duration::from_secs(20), || {
        podman.inspect("s-app").is_some_and(|v| {
            v["Id"].as_str() != Some(id.as_str()) && v["State"]["Running"].as_bool() == Some(true)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let s1 = scrape(&sock);
    let mut want = BTreeMap::from([
        (
            "mcp_agent_actions_total{action=\"create\",result=\"ok\"}".to_string(),
            1.0,
        ),
        (
            "mcp_agent_restarts_total{cause=\"removal\",component=\"app\",service=\"s\"}"
                .to_string(),
            1.0,
        ),
    ]);
    // `rm -f` kills the main process first: the pidfd tells the daemon at once, and it
    // may start the dead container again before podman removes it (podman lets that
    // start through). That start is a restart the daemon made, and is counted as one.
    let log = d.log();
    let raced = log.matches("reconciled action=\"start\"").count();
    assert!(raced <= 1, "{log}");
    if raced == 1 {
        eprintln!("the removal raced a start of the killed container");
        want.insert(
            "mcp_agent_actions_total{action=\"start\",result=\"ok\"}".to_string(),
            1.0,
        );
        want.insert(
            "mcp_agent_restarts_total{cause=\"crash\",component=\"app\",service=\"s\"}".to_string(),
            1.0,
        );
    }
    assert_eq!(moved(&s0, &s1, COUNTERS), want);

    // A crash: the main process SIGKILLed, the container started again.
    let before = started_at(&podman, "s-app").unwrap();
    let pid = podman.inspect("s-app").unwrap()["State"]["Pid"]
        .as_u64()
        .unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("s-app restarted", Duration::from_secs(20), || {
        started_at(&podman, "s-app").is_some_and(|s| s != before)
    });
    std::thread::sleep(Duration::from_millis(300));
    let s2 = scrape(&sock);
    assert_eq!(
        moved(&s1, &s2, COUNTERS),
        BTreeMap::from([
            (
                "mcp_agent_actions_total{action=\"start\",result=\"ok\"}".to_string(),
                1.0
            ),
            (
                "mcp_agent_restarts_total{cause=\"crash\",component=\"app\",service=\"s\"}"
                    .to_string(),
                1.0
            ),
        ])
    );

    // A drift: the spec changed in the registry, the container recreated.
    let id = container_id(&podman, "s-app");
    agent.apply("s.toml", &service("b", port));
    wait_for("s-app recreated", Duration::from_secs(20), || {
        podman.inspect("s-app").is_some_and(|v| {
            v["Id"].as_str() != Some(id.as_str()) && v["State"]["Running"].as_bool() == Some(true)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let s3 = scrape(&sock);
    assert_eq!(
        moved(&s2, &s3, COUNTERS),
        BTreeMap::from([
            (
                "mcp_agent_actions_total{action=\"recreate\",result=\"ok\"}".to_string(),
                1.0
            ),
            (
                "mcp_agent_restarts_total{cause=\"drift\",component=\"app\",service=\"s\"}"
                    .to_string(),
                1.0
            ),
        ])
    );
    assert_eq!(s3.get(running), Some(&2.0));
    // `status` agrees: the restarts of s/app, none of s/other.
    let st: serde_json::Value =
        serde_json::from_str(&agent.ok(&["status", "--json"]).stdout).unwrap();
    let restarts = |c: &str| {
        st["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["component"] == c)
            .unwrap_or_else(|| panic!("no s/{c} in {st}"))["restarts"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(restarts("app"), 3 + raced as u64, "{st}");
    assert_eq!(restarts("other"), 0, "{st}");

    // The table: a summary first; the CONTAINER column is podman's 12-character id, PORTS
    // has the fixed ports, RESTARTS counts restarts only.
    let text = agent.ok(&["status"]).stdout;
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("2 components: 2 running; podman reachable"),
        "{text}"
    );
    let row = |c: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("s/{c} ")))
            .unwrap_or_else(|| panic!("no s/{c} in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let other = row("other");
    assert_eq!(other[3], container_id(&podman, "s-other")[..12], "{text}");
    assert_eq!(other[4], format!("127.0.0.1:{port}:8080/tcp"), "{text}");
    assert_eq!(other[5], "0", "{text}");
    let app = row("app");
    assert_eq!(app[3], container_id(&podman, "s-app")[..12], "{text}");
    assert_eq!(
        app[4],
        (3 + raced).to_string(),
        "no ports, so RESTARTS is next: {text}"
    );
}
