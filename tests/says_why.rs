//! Issue 11: what the agent says is what happened, through the real binary against a real
//! private podman — an exhausted port range, orphans of another registry (`status`,
//! `--once`, `adopt` beside a running daemon), containers removed for what their labels say.

mod agentkit;
mod common;

use std::net::TcpListener;
use std::time::Duration;

use agentkit::{container_id, Agent, NODE};
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";
const NO_TICK: &str = "[reconcile]\ninterval = \"1h\"\n";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

fn simple(name: &str) -> String {
    format!("name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{IMAGE}\"\n")
}

fn registry_id(agent: &Agent) -> String {
    let st: serde_json::Value =
        serde_json::from_str(&agent.ok(&["status", "--json"]).stdout).unwrap();
    st["registry"].as_str().expect("registry id").to_string()
}

fn component(agent: &Agent, service: &str) -> serde_json::Value {
    let st: serde_json::Value =
        serde_json::from_str(&agent.ok(&["status", service, "--json"]).stdout).unwrap();
    st["components"][0].clone()
}

#[test]
fn an_exhausted_port_range_fails_once_with_exit_1_and_status_says_why() {
    let podman = podman();
    // The range's only port is held by someone else.
    let holder = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let agent = Agent::new(
        &podman,
        &format!("{NO_TICK}\n[ports]\nrange = \"{port}-{port}\"\n"),
    );
    agent.apply(
        "r.toml",
        &format!(
            "name = \"r\"\n[[components]]\nname = \"r\"\nimage = \"{IMAGE}\"\n\
             [[components.routes]]\nname = \"tcp\"\nport = 7000\nmode = \"l4\"\n"
        ),
    );
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("failed") && l.contains("r/r"))
        .unwrap_or_else(|| panic!("no failed line naming r/r:\n{r}"));
    assert!(
        line.contains("tcp") && line.contains("[ports].range is exhausted"),
        "{r}"
    );
    assert!(
        podman.inspect("r").is_none(),
        "no container without its port"
    );
    let c = component(&agent, "r");
    assert_eq!(c["last_pass_state"], "failed", "{c}");
    assert!(
        c["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("[ports].range is exhausted"),
        "{c}"
    );
    let table = agent.ok(&["status"]).stdout;
    assert!(table.contains("[ports].range is exhausted"), "{table}");
    drop(holder);
}

#[test]
fn orphans_are_named_by_status_and_once_and_adopt_beside_the_daemon_is_seen_by_it() {
    let podman = podman();
    let old = Agent::new(&podman, NO_TICK);
    old.apply("a.toml", &simple("a"));
    old.ok(&["--once"]);
    let old_registry = registry_id(&old);
    let a = container_id(&podman, "a");

    // A new registry for the same service on the same node.
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    let conflict = r
        .stdout
        .lines()
        .find(|l| l.starts_with("conflict") && l.contains("a/a"))
        .unwrap_or_else(|| panic!("no conflict line:\n{r}"));
    assert!(
        conflict.contains(&format!("an orphan of registry {old_registry}")),
        "{r}"
    );
    assert!(!conflict.contains("without our labels"), "{r}");
    assert_eq!(container_id(&podman, "a"), a, "left alone");

    // status: exit 0 (it reports; orphans are not a failure to report), and says it.
    let st = agent.run(&["status"]);
    assert_eq!(st.code, 0, "{st}");
    assert!(
        st.stdout
            .contains(&format!("running (orphan of registry {old_registry})")),
        "{st}"
    );
    assert!(st.stdout.contains("ORPHAN"), "{st}");
    let json = agent.run(&["status", "--json"]);
    assert_eq!(json.code, 0, "{json}");

    // adopt while a daemon of this registry runs: not locked (one SQLite transaction);
    // the daemon sees the change at its next registry poll and takes the container as
    // its own, as it is.
    let d = agent.start_daemon(&[]);
    wait_for("the daemon's first pass", Duration::from_secs(20), || {
        d.log().contains("first pass done")
    });
    assert_eq!(component(&agent, "a")["last_pass_state"], "conflict");
    let r = agent.ok(&["adopt", "a"]);
    assert!(r.stdout.contains("adopted  a/a (a)"), "{r}");
    wait_for(
        "the daemon reports a/a running after the adoption",
        Duration::from_secs(10),
        || component(&agent, "a")["last_pass_state"] == "running",
    );
    assert_eq!(container_id(&podman, "a"), a, "adopted, kept: {}", d.log());
    // Killed, it is the daemon's to repair now.
    podman.podman_ok(&["rm", "--force", "a"]);
    wait_for("a recreated by the daemon", Duration::from_secs(20), || {
        podman.running("a")
    });
}

/// A container of `name` labelled as ours (this node, this registry) for `service/component`.
fn forged(podman: &PrivatePodman, name: &str, registry: &str, service: &str, component: &str) {
    podman.podman_ok(&[
        "run",
        "-d",
        "--name",
        name,
        // `sleep` as PID 1 ignores SIGTERM: do not wait 10 s for it at each removal.
        "--stop-timeout",
        "1",
        "--label",
        "mcp.managed=true",
        "--label",
        &format!("mcp.node={NODE}"),
        "--label",
        &format!("mcp.registry={registry}"),
        "--label",
        &format!("mcp.service={service}"),
        "--label",
        &format!("mcp.component={component}"),
        "--label",
        "mcp.spec-hash=forged",
        IMAGE,
    ]);
}

#[test]
fn containers_removed_for_their_labels_are_logged_with_what_the_labels_say() {
    let podman = podman();
    let agent = Agent::new(&podman, NO_TICK);
    agent.apply("a.toml", &simple("a"));
    agent.ok(&["--once"]);
    let id = registry_id(&agent);
    forged(&podman, "intruder", &id, "a", "a");
    forged(&podman, "ghost", &id, "zz", "zz");
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains(
            "remove   a/a (intruder): removed: a duplicate: labelled as component a/a, whose own container a is there"
        ),
        "{r}"
    );
    assert!(
        r.stdout.contains(
            "remove   zz/zz (ghost): removed: labelled as component zz/zz, which no active service in the registry has"
        ),
        "{r}"
    );
    assert!(!r.stdout.contains("no longer in the registry"), "{r}");
    assert!(podman.inspect("intruder").is_none() && podman.inspect("ghost").is_none());
    assert!(podman.running("a"));

    // The daemon logs the same words.
    let d = agent.start_daemon(&[]);
    wait_for("the daemon's first pass", Duration::from_secs(20), || {
        d.log().contains("first pass done")
    });
    forged(&podman, "intruder2", &id, "a", "a");
    // The forged container is noticed at the next pass (a registry change asks one).
    agent.apply("b.toml", &simple("b"));
    wait_for("intruder2 removed", Duration::from_secs(20), || {
        podman.inspect("intruder2").is_none()
    });
    wait_for(
        &format!("the removal logged:\n{}", d.log()),
        Duration::from_secs(5),
        || {
            d.log().contains(
            "removed container intruder2: a duplicate: labelled as component a/a, whose own container a is there",
        )
        },
    );
}
