//! Issue 13 §1 against a real, private podman 4.3 (netavark and aardvark-dns, the backend
//! measured here): with `[networks] service_default = true` a service's components share
//! `mcp-<service>` and reach each other by component name and by alias; `networks` joins
//! several; hostname, dns, dns_search and extra_hosts are applied; a lost network is made
//! again; a service's recreates roll one container at a time.
//!
//! Networks are machine-wide under rootful podman (ENVIRONMENT.md): each test's service
//! name is its own (the process id), and the networks it made are removed at the end.

mod agentkit;
mod common;

use std::time::Duration;

use agentkit::{summary, Agent};
use common::PrivatePodman;

const IMAGE: &str = "localhost/busybox:latest";

/// Removes the test's networks (and whatever still uses them) when the test ends.
struct Networks<'a> {
    podman: &'a PrivatePodman,
    names: Vec<String>,
}

impl Drop for Networks<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.podman.podman(&["network", "rm", "-f", n]);
        }
    }
}

/// What `nc NAME 7000` from `from` answers, retried for a few seconds (the server
/// listens again between connections).
fn reach(podman: &PrivatePodman, from: &str, name: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let out = podman.podman(&[
            "exec",
            from,
            "sh",
            "-c",
            &format!("nc {name} 7000 </dev/null"),
        ]);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == "pong" {
            return last;
        }
        last = format!("{last} {}", String::from_utf8_lossy(&out.stderr).trim());
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

const SERVER: &str = "while true; do echo pong | nc -l -p 7000; done";

#[test]
fn components_reach_each_other_by_name_and_alias_on_their_service_network() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let svc = format!("n{}", std::process::id());
    let net = format!("mcp-{svc}");
    let _nets = Networks {
        podman: &podman,
        names: vec![net.clone()],
    };
    let agent = Agent::new(&podman, "[networks]\nservice_default = true\n");
    let file = |tag: &str| {
        format!(
            r#"
name = "{svc}"

[[components]]
name = "db"
image = "{IMAGE}"
cmd = ["sh", "-c", "{SERVER}"]
aliases = ["database"]
env = {{ TAG = "{tag}" }}

[[components]]
name = "web"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
env = {{ TAG = "{tag}" }}

[[components]]
name = "cfg"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
hostname = "cfg.internal"
dns = ["10.0.0.53"]
dns_search = ["internal.example.org"]
extra_hosts = ["gw.internal:10.1.2.3"]
env = {{ TAG = "{tag}" }}
"#
        )
    };
    let path = agent.service_file("svc.toml", &file("a"));
    agent.ok(&["apply", path.to_str().unwrap()]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let web = format!("{svc}-web");
    assert_eq!(reach(&podman, &web, "db"), "pong");
    assert_eq!(reach(&podman, &web, "database"), "pong");
    let db = podman.inspect(&format!("{svc}-db")).unwrap();
    let aliases = db["NetworkSettings"]["Networks"][&net]["Aliases"].clone();
    assert!(
        aliases.as_array().unwrap().iter().any(|a| a == "database"),
        "{aliases}"
    );
    let net_info = podman.podman_ok(&["network", "inspect", &net]);
    assert!(net_info.contains("\"dns_enabled\": true"), "{net_info}");

    let cfg = format!("{svc}-cfg");
    let inside = podman.podman_ok(&[
        "exec",
        &cfg,
        "sh",
        "-c",
        "hostname; cat /etc/resolv.conf; grep gw.internal /etc/hosts",
    ]);
    assert!(inside.starts_with("cfg.internal\n"), "{inside}");
    assert!(inside.contains("nameserver 10.0.0.53"), "{inside}");
    assert!(inside.contains("search internal.example.org"), "{inside}");
    assert!(inside.contains("10.1.2.3\tgw.internal"), "{inside}");

    // export | apply: nothing changes.
    let exported = agent.ok(&["export", &svc]).stdout;
    let back = agent.service_file("back.toml", &exported);
    let r = agent.ok(&["apply", back.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), format!("unchanged {svc}"), "{r}");

    // The network lost (with the containers on it): made again, names and all.
    podman.podman_ok(&["network", "rm", "-f", &net]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert_eq!(reach(&podman, &web, "database"), "pong");

    // A change of every component: recreated one at a time (each container of the
    // service is up again before the next one goes).
    let t0 = unix_now();
    agent.ok(&[
        "apply",
        agent.service_file("svc.toml", &file("b")).to_str().unwrap(),
    ]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let events = podman.podman_ok(&[
        "events",
        "--stream=false",
        "--since",
        &t0,
        "--filter",
        "type=container",
        "--format",
        "{{.Status}} {{.Name}}",
    ]);
    let seq: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("remove ") || l.starts_with("start "))
        .collect();
    // `--since` counts whole seconds: what came before in the same second is cut off
    // by taking the last three recreates.
    assert!(seq.len() >= 6, "{events}");
    for pair in seq[seq.len() - 6..].chunks(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.starts_with("remove ") && b.starts_with("start ") && a[7..] == b[6..],
            "not one at a time: {seq:?}"
        );
    }
    assert_eq!(reach(&podman, &web, "db"), "pong");
}

/// Now, as podman's `events --since` takes it (seconds since the epoch).
fn unix_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secs.to_string()
}

#[test]
fn networks_joins_several_and_the_old_default_stays_podmans_bridge() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let svc = format!("m{}", std::process::id());
    let (net, extra) = (format!("mcp-{svc}"), format!("{svc}-extra"));
    let _nets = Networks {
        podman: &podman,
        names: vec![net.clone(), extra.clone()],
    };
    // service_default is off (the default): a component without network is on bridge.
    let agent = Agent::new(&podman, "");
    agent.apply(
        "svc.toml",
        &format!(
            r#"
name = "{svc}"

[[components]]
name = "api"
image = "{IMAGE}"
cmd = ["sh", "-c", "{SERVER}"]
networks = ["default", "{extra}"]
aliases = ["backend"]

[[components]]
name = "inner"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
networks = ["default"]

[[components]]
name = "outer"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
network = "{extra}"

[[components]]
name = "plain"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
"#
        ),
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 4, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let api = podman.inspect(&format!("{svc}-api")).unwrap();
    let nets = api["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(
        nets.contains_key(&net) && nets.contains_key(&extra),
        "{nets:?}"
    );
    assert_eq!(reach(&podman, &format!("{svc}-inner"), "api"), "pong");
    assert_eq!(reach(&podman, &format!("{svc}-outer"), "backend"), "pong");
    let plain = podman.inspect(&format!("{svc}-plain")).unwrap();
    let nets = plain["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(nets.contains_key("podman"), "{nets:?}");
}
