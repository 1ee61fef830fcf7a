//! Issue 13 §1 against a real, private podman 4.3 (netavark and aardvark-dns, the backend
//! measured here): by default (`[networks] service_default`, on) a service's components
//! share `mcp-<service>` and reach each other by component name and by alias; `networks`
//! joins several; hostname, dns, dns_search and extra_hosts are applied; a lost network is
//! made again; a service's recreates roll one container at a time, and so does the upgrade
//! that moves containers made with the default off onto their service's network.
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
    // An empty table: the shipped default (agentkit turns it off for other tests).
    let agent = Agent::new(&podman, "[networks]\n");
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
    assert_rolled(&podman, &t0, 3);
    assert_eq!(reach(&podman, &web, "db"), "pong");
}

/// The last `n` recreates podman reports since `t0`: each container's `remove` followed by
/// its replacement's `start` before the next container goes (one at a time).
fn assert_rolled(podman: &PrivatePodman, t0: &str, n: usize) {
    let events = podman.podman_ok(&[
        "events",
        "--stream=false",
        "--since",
        t0,
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
    // by taking the last n recreates.
    assert!(seq.len() >= 2 * n, "{events}");
    for pair in seq[seq.len() - 2 * n..].chunks(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.starts_with("remove ") && b.starts_with("start ") && a[7..] == b[6..],
            "not one at a time: {seq:?}"
        );
    }
}

/// The networks container `name` is on, by name.
fn networks_of(podman: &PrivatePodman, name: &str) -> Vec<String> {
    let i = podman.inspect(name).unwrap();
    i["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
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
    // service_default off (agentkit's): a component without network is on bridge.
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
    let nets = networks_of(&podman, &format!("{svc}-api"));
    assert!(nets.contains(&net) && nets.contains(&extra), "{nets:?}");
    assert_eq!(reach(&podman, &format!("{svc}-inner"), "api"), "pong");
    assert_eq!(reach(&podman, &format!("{svc}-outer"), "backend"), "pong");
    assert_eq!(networks_of(&podman, &format!("{svc}-plain")), ["podman"]);
}

/// The upgrade to the default: containers made with `service_default` off (on podman's
/// bridge) move to `mcp-<service>` once each, one at a time per service, and stay.
#[test]
fn turning_the_default_on_moves_each_container_once_rolling() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let svc = format!("u{}", std::process::id());
    let net = format!("mcp-{svc}");
    let _nets = Networks {
        podman: &podman,
        names: vec![net.clone()],
    };
    let agent = Agent::new(&podman, "[networks]\nservice_default = false\n");
    agent.apply(
        "svc.toml",
        &format!(
            r#"
name = "{svc}"

[[components]]
name = "db"
image = "{IMAGE}"
cmd = ["sh", "-c", "{SERVER}"]

[[components]]
name = "web"
image = "{IMAGE}"
cmd = ["sleep", "1000"]

[[components]]
name = "worker"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
"#
        ),
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let networks_of = |c: &str| networks_of(&podman, &format!("{svc}-{c}"));
    for c in ["db", "web", "worker"] {
        assert_eq!(networks_of(c), ["podman"], "{c}");
    }

    // The config of the version that turns it on: no `service_default` line.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    assert!(text.contains("service_default = false\n"), "{text}");
    std::fs::write(&agent.config, text.replace("service_default = false\n", "")).unwrap();
    let t0 = unix_now();
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert_rolled(&podman, &t0, 3);
    for c in ["db", "web", "worker"] {
        assert_eq!(networks_of(c), vec![net.clone()], "{c}");
    }
    assert_eq!(reach(&podman, &format!("{svc}-web"), "db"), "pong");
    // Once: the next pass finds every container as wanted.
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 3, failed 0, skipped 0",
        "{r}"
    );
}

/// A container not the agent's, `<service>-guest`, on `network`; its name.
fn run_guest(podman: &PrivatePodman, service: &str, network: &str) -> String {
    let guest = format!("{service}-guest");
    podman.podman_ok(&[
        "run",
        "-d",
        "--name",
        &guest,
        "--network",
        network,
        IMAGE,
        "sleep",
        "1000",
    ]);
    guest
}

/// `remove SERVICE`: once its containers are gone, so is its network `mcp-<service>`, which
/// the agent made (its labels say so). A service network another container still uses
/// stays, and so does one the agent did not make.
#[test]
fn a_removed_service_takes_its_own_network_with_it() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let id = std::process::id();
    let (a, b, c) = (format!("ra{id}"), format!("rb{id}"), format!("rc{id}"));
    let nets: Vec<String> = [&a, &b, &c].iter().map(|s| format!("mcp-{s}")).collect();
    let _nets = Networks {
        podman: &podman,
        names: nets.clone(),
    };
    // c's network exists before the agent: someone else's.
    podman.podman_ok(&["network", "create", &nets[2]]);
    let agent = Agent::new(&podman, "[networks]\n");
    for (svc, n) in [(&a, 2), (&b, 1), (&c, 1)] {
        let mut text = format!("name = \"{svc}\"\n");
        for i in 0..n {
            text.push_str(&format!(
                "\n[[components]]\nname = \"c{i}\"\nimage = \"{IMAGE}\"\ncmd = [\"sleep\", \"1000\"]\n"
            ));
        }
        agent.apply(&format!("{svc}.toml"), &text);
    }
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 4, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let labels = network_inspect(&podman, &nets[0])["labels"].clone();
    assert_eq!(labels["mcp.service"], a.as_str(), "{labels}");
    assert_eq!(labels["mcp.node"], agentkit::NODE, "{labels}");
    assert_eq!(labels["mcp.managed"], "true", "{labels}");
    // Another container on b's network.
    let guest = run_guest(&podman, &b, &nets[1]);
    for svc in [&a, &b, &c] {
        agent.ok(&["remove", svc]);
    }
    agent.ok(&["--once"]);
    for svc in [&a, &b, &c] {
        assert!(podman.inspect(&format!("{svc}-c0")).is_none(), "{svc}");
    }
    let exists = |n: &str| podman.podman(&["network", "exists", n]).status.success();
    assert!(!exists(&nets[0]), "the removed service's network is left");
    assert!(exists(&nets[1]), "a network in use was removed");
    assert!(
        exists(&nets[2]),
        "a network the agent did not make was removed"
    );
    podman.podman_ok(&["rm", "-f", "-t", "0", &guest]);
}

/// A service removed when its containers were already gone (an operator's `podman rm`,
/// podman's lost database) has no container removal to take its network: the next pass
/// sweeps `mcp-<service>` of every service no longer wanted, the agent's only (another
/// node's stays), and never one a container still uses.
#[test]
fn a_service_removed_after_its_containers_were_gone_takes_its_network_too() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let id = std::process::id();
    let (a, b, c) = (format!("ga{id}"), format!("gb{id}"), format!("gc{id}"));
    let nets: Vec<String> = [&a, &b, &c].iter().map(|s| format!("mcp-{s}")).collect();
    let _nets = Networks {
        podman: &podman,
        names: nets.clone(),
    };
    let agent = Agent::new(&podman, "[networks]\n");
    for svc in [&a, &b] {
        agent.apply(
            &format!("{svc}.toml"),
            &format!(
                "name = \"{svc}\"\n[[components]]\nname = \"c0\"\nimage = \"{IMAGE}\"\ncmd = [\"sleep\", \"1000\"]\n"
            ),
        );
    }
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    // c's network: labelled as the agent labels, for this registry, by another node.
    let registry = network_inspect(&podman, &nets[0])["labels"]["mcp.registry"]
        .as_str()
        .expect("the agent's network names its registry")
        .to_string();
    podman.podman_ok(&[
        "network",
        "create",
        "--label",
        "mcp.managed=true",
        "--label",
        "mcp.node=another-node",
        "--label",
        &format!("mcp.registry={registry}"),
        "--label",
        &format!("mcp.service={c}"),
        &nets[2],
    ]);
    // Their containers go behind the agent's back; a neighbour joins b's network.
    podman.podman_ok(&[
        "rm",
        "-f",
        "-t",
        "0",
        &format!("{a}-c0"),
        &format!("{b}-c0"),
    ]);
    let guest = run_guest(&podman, &b, &nets[1]);
    for svc in [&a, &b] {
        agent.ok(&["remove", svc]);
    }
    let exists = |n: &str| podman.podman(&["network", "exists", n]).status.success();
    assert!(exists(&nets[0]), "removed before any pass");
    agent.ok(&["--once"]);
    assert!(!exists(&nets[0]), "the removed service's network is left");
    assert!(exists(&nets[1]), "a network in use was removed");
    assert!(exists(&nets[2]), "another node's network was removed");
    podman.podman_ok(&["rm", "-f", "-t", "0", &guest]);
}

/// As [`Networks`], for a test that needs its podman mutably meanwhile (to lose its
/// database): the CLI's argv and environment instead of the podman.
struct OwnedNetworks {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    names: Vec<String>,
}

impl OwnedNetworks {
    fn new(podman: &PrivatePodman, names: &[&str]) -> OwnedNetworks {
        OwnedNetworks {
            argv: podman.cli_argv(),
            env: podman.env(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

impl Drop for OwnedNetworks {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = std::process::Command::new(&self.argv[0])
                .args(&self.argv[1..])
                .args(["network", "rm", "-f", n])
                .envs(self.env.clone())
                .stdin(std::process::Stdio::null())
                .output();
        }
    }
}

/// This test process's own slice of addresses and bridge name: networks are
/// machine-wide (ENVIRONMENT.md), so concurrent tests and benchmarks (10.213.0.0/16)
/// must not pick the same subnets or `podmanN`-style interface names.
fn slice() -> (u32, String) {
    let pid = std::process::id();
    (pid % 250 + 1, format!("mcpb{pid}"))
}

fn network_inspect(podman: &PrivatePodman, name: &str) -> serde_json::Value {
    let out = podman.podman_ok(&["network", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// `[networks.NAME]` as desired state: the networks made with their subnets, gateway,
/// range, `internal`, IPv6, bridge name, MTU and labels; each container at its static
/// addresses, reachable by its per-network alias; `export | apply` a no-op; after
/// podman's database and the networks are lost, `--once` makes both again the same way.
#[test]
fn network_options_and_static_addresses_survive_a_lost_database() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let (n, bridge) = slice();
    let svc = format!("o{}", std::process::id());
    let (net, inner) = (format!("mcp-{svc}"), format!("{svc}-inner"));
    let _nets = OwnedNetworks::new(&podman, &[&net, &inner]);
    let agent = Agent::new(&podman, "");
    agent.apply(
        "svc.toml",
        &format!(
            r#"
name = "{svc}"

[networks.default]
subnets = [{{ subnet = "10.215.{n}.0/24" }}, {{ subnet = "fd00:215:{n}::/64" }}]
enable_ipv6 = true

[networks.{inner}]
subnets = [{{ subnet = "10.214.{n}.0/24", gateway = "10.214.{n}.254", ip_range = "10.214.{n}.128/25" }}]
internal = true
driver_opts = {{ "com.docker.network.bridge.name" = "{bridge}", "com.docker.network.driver.mtu" = "1400" }}
labels = {{ "org.example.test" = "{svc}" }}

[[components]]
name = "db"
image = "{IMAGE}"
cmd = ["sh", "-c", "{SERVER}"]
networks = [
  {{ name = "default", aliases = ["database"], ipv4_address = "10.215.{n}.10", ipv6_address = "fd00:215:{n}::10" }},
  {{ name = "{inner}", ipv4_address = "10.214.{n}.20" }},
]

[[components]]
name = "web"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
networks = ["default", "{inner}"]
"#
        ),
    );
    let check = |podman: &PrivatePodman| {
        let i = network_inspect(podman, &inner);
        assert_eq!(i["internal"], true, "{i}");
        assert_eq!(i["network_interface"], bridge.as_str(), "{i}");
        assert_eq!(i["options"]["mtu"], "1400", "{i}");
        assert_eq!(i["labels"]["org.example.test"], svc.as_str(), "{i}");
        let s = &i["subnets"][0];
        assert_eq!(s["subnet"], format!("10.214.{n}.0/24"), "{i}");
        assert_eq!(s["gateway"], format!("10.214.{n}.254"), "{i}");
        assert_eq!(
            s["lease_range"]["start_ip"],
            format!("10.214.{n}.129"),
            "{i}"
        );
        let d = network_inspect(podman, &net);
        assert_eq!(d["ipv6_enabled"], true, "{d}");
        assert_eq!(d["internal"], false, "{d}");
        let subnets: Vec<&str> = d["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subnet"].as_str().unwrap())
            .collect();
        assert_eq!(
            subnets,
            [format!("10.215.{n}.0/24"), format!("fd00:215:{n}::/64")],
            "{d}"
        );
        let db = podman.inspect(&format!("{svc}-db")).unwrap();
        let nets = &db["NetworkSettings"]["Networks"];
        assert_eq!(nets[&net]["IPAddress"], format!("10.215.{n}.10"), "{nets}");
        assert_eq!(
            nets[&net]["GlobalIPv6Address"],
            format!("fd00:215:{n}::10"),
            "{nets}"
        );
        assert_eq!(
            nets[&inner]["IPAddress"],
            format!("10.214.{n}.20"),
            "{nets}"
        );
        let web = format!("{svc}-web");
        assert_eq!(reach(podman, &web, "database"), "pong");
        assert_eq!(reach(podman, &web, &format!("10.214.{n}.20")), "pong");
    };
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    check(&podman);

    // export | apply: nothing changes, and a pass touches nothing.
    let exported = agent.ok(&["export", &svc]).stdout;
    assert!(
        exported.contains(&format!("[networks.{inner}]")),
        "{exported}"
    );
    let back = agent.service_file("back.toml", &exported);
    let r = agent.ok(&["apply", back.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), format!("unchanged {svc}"), "{r}");
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 2, failed 0, skipped 0",
        "{r}"
    );

    // Podman's database lost (the networks are files of the machine and stay): each
    // container again at its address on them.
    podman.lose_database();
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    check(&podman);

    // Podman's database lost, and the networks with it (as `podman system reset`
    // would): made again with the same options, each container at its address.
    podman.lose_database();
    podman.podman_ok(&["network", "rm", "-f", &net, &inner]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    check(&podman);
}

/// A network of the file's name that exists with other options is neither used nor
/// removed: its components are `network-conflict`, naming the difference, at every
/// pass, until the network is as the file says or gone.
#[test]
fn a_network_found_with_other_options_is_a_named_failure() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let (n, _) = slice();
    let svc = format!("x{}", std::process::id());
    let net = format!("{svc}-net");
    let _nets = Networks {
        podman: &podman,
        names: vec![net.clone()],
    };
    // Someone else's network of that name: another subnet, not internal.
    podman.podman_ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.216.{n}.0/24"),
        &net,
    ]);
    let agent = Agent::new(&podman, "");
    agent.apply(
        "svc.toml",
        &format!(
            r#"
name = "{svc}"

[networks.{net}]
subnets = [{{ subnet = "10.217.{n}.0/24" }}]
internal = true

[[components]]
name = "app"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
networks = [{{ name = "{net}", ipv4_address = "10.217.{n}.7" }}]
"#
        ),
    );
    let why = format!(
        "network-conflict: network {net} exists with other options than its service file's: subnets 10.216.{n}.0/24 (the file: 10.217.{n}.0/24), internal false (the file: true)"
    );
    for _ in 0..2 {
        let r = agent.run(&["--once"]);
        assert_eq!(r.code, 1, "{r}");
        assert!(r.stdout.contains(&why), "{r}");
        assert_eq!(
            summary(&r),
            "recovered 0, already running 0, failed 1, skipped 0",
            "{r}"
        );
        assert!(podman.inspect(&format!("{svc}-app")).is_none());
        // Never removed, never changed.
        let i = network_inspect(&podman, &net);
        assert_eq!(i["subnets"][0]["subnet"], format!("10.216.{n}.0/24"), "{i}");
    }
    let status = agent.ok(&["status", &svc, "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let c = &v["components"][0];
    assert_eq!(c["last_pass_state"], "network-conflict", "{status}");
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("the agent never removes a network"),
        "{status}"
    );
    // The network gone: made as the file says.
    podman.podman_ok(&["network", "rm", &net]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let app = podman.inspect(&format!("{svc}-app")).unwrap();
    assert_eq!(
        app["NetworkSettings"]["Networks"][&net]["IPAddress"],
        format!("10.217.{n}.7")
    );
}
