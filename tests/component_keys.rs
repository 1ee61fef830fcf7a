//! Issue 13 §4–6 against a real, private podman 4.3: a component using every process,
//! security, resource and metadata key is created with each one applied (read back from
//! podman's inspect and from inside the container), the agent's own stops and recreates
//! wait the component's `stop_timeout`, a changed key recreates only its component, and
//! `export | apply` of it all changes nothing.

mod agentkit;
mod common;

use std::time::{Duration, Instant};

use agentkit::{summary, Agent};
use common::PrivatePodman;
use serde_json::Value;

const IMAGE: &str = "localhost/busybox:latest";

/// `app` uses every key but `privileged` (a privileged container ignores the capability
/// and device keys); `priv` is privileged; `stubborn` runs `sleep` as PID 1, which ignores
/// SIGTERM, so a stop waits out its `stop_timeout` of 1 s (podman's default: 10 s).
/// Ulimits name nproc too: a `ulimits` table replaces podman's `default_ulimits`, and
/// rootful podman then sets an unnamed nproc to 1048576, above this host's hard limit.
fn service(tier: &str) -> String {
    format!(
        r#"
name = "full"

[[components]]
name = "app"
image = "{IMAGE}"
entrypoint = ["sh", "-c"]
cmd = ["trap 'exit 0' USR1; sleep 1000 & wait"]
working_dir = "/srv"
init = true
stop_signal = "SIGUSR1"
stop_timeout = "3s"
tty = true
cap_add = ["NET_ADMIN", "CAP_SYS_TIME"]
cap_drop = ["MKNOD"]
security_opt = ["no-new-privileges", "label=disable"]
devices = ["/dev/null:/dev/mynull:rw"]
sysctls = {{ "net.ipv4.ip_unprivileged_port_start" = "80", "kernel.shmmax" = 65536 }}
ulimits = {{ nofile = {{ soft = 512, hard = 1024 }}, nproc = 1024 }}
shm_size = "32m"
memory = "128m"
memory_reservation = "64m"
cpus = 0.5
pids_limit = 100
userns = "host"
group_add = ["10"]
labels = {{ "org.example.tier" = "{tier}" }}
log_driver = "k8s-file"
log_opts = {{ max-size = "1m" }}

[[components]]
name = "priv"
image = "{IMAGE}"
privileged = true

[[components]]
name = "stubborn"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
stop_timeout = "1s"
"#
    )
}

/// The container as podman's Docker-compatible API shows it.
fn compat(podman: &PrivatePodman, name: &str) -> Value {
    let (code, body) = podman.api("GET", &format!("/v1.41/containers/{name}/json"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn exec(podman: &PrivatePodman, name: &str, script: &str) -> String {
    podman.podman_ok(&["exec", name, "sh", "-c", script])
}

#[test]
fn every_key_is_applied_by_podman_and_export_apply_changes_nothing() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    agent.apply("full.toml", &service("web"));
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );

    let c = compat(&podman, "full-app");
    let (cfg, host) = (&c["Config"], &c["HostConfig"]);
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["sh", "-c"]));
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(cfg["Tty"], true);
    assert_eq!(cfg["StopSignal"], "10", "SIGUSR1, as podman reports it");
    assert_eq!(cfg["StopTimeout"], 3);
    assert_eq!(cfg["Labels"]["org.example.tier"], "web");
    assert_eq!(cfg["Labels"]["mcp.managed"], "true");
    assert_eq!(host["Init"], true);
    assert_eq!(host["CapAdd"], serde_json::json!(["NET_ADMIN", "SYS_TIME"]));
    assert_eq!(host["CapDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(host["Privileged"], false);
    let sec = host["SecurityOpt"].as_array().unwrap();
    assert!(sec.contains(&"no-new-privileges".into()), "{sec:?}");
    assert!(sec.contains(&"label=disable".into()), "{sec:?}");
    assert_eq!(host["Devices"][0]["PathOnHost"], "/dev/null");
    assert_eq!(host["Devices"][0]["PathInContainer"], "/dev/mynull");
    let nofile = host["Ulimits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["Name"] == "RLIMIT_NOFILE")
        .cloned()
        .unwrap();
    assert_eq!(
        (nofile["Soft"].as_i64(), nofile["Hard"].as_i64()),
        (Some(512), Some(1024))
    );
    assert_eq!(host["ShmSize"], 32 << 20);
    assert_eq!(host["Memory"], 128 << 20);
    assert_eq!(host["MemoryReservation"], 64 << 20);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 100);
    assert_eq!(host["GroupAdd"], serde_json::json!(["10"]));
    // The compat inspect shows neither sysctls nor the k8s-file driver's options: libpod's
    // inspect and the container itself do.
    let lib = podman.inspect("full-app").unwrap();
    assert_eq!(lib["HostConfig"]["LogConfig"]["Type"], "k8s-file");
    assert_eq!(lib["HostConfig"]["LogConfig"]["Size"], "1MB");
    let inside = exec(
        &podman,
        "full-app",
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmax; \
         grep NoNewPrivs /proc/self/status; pwd; id -G; tr '\\0' ' ' </proc/1/cmdline; echo; \
         ls /dev/mynull; grep -q ' /dev/shm ' /proc/mounts && df -k /dev/shm | tail -1",
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines[0], "80", "{inside}");
    assert_eq!(lines[1], "65536", "{inside}");
    assert!(lines[2].ends_with("\t1"), "no-new-privileges: {inside}");
    assert_eq!(lines[3], "/srv", "{inside}");
    assert!(
        lines[4].split(' ').any(|g| g == "10"),
        "group_add: {inside}"
    );
    assert!(
        lines[5].starts_with("/run/podman-init -- sh -c"),
        "init: {inside}"
    );
    assert_eq!(lines[6], "/dev/mynull", "{inside}");
    assert!(lines[7].contains(" 32768 "), "shm_size: {inside}");

    let p = podman.inspect("full-priv").unwrap();
    assert_eq!(p["HostConfig"]["Privileged"], true);

    // export | apply: the same service, nothing to do.
    let out = agent.path().join("exported");
    std::fs::create_dir(&out).unwrap();
    agent.ok(&["export", "-o", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(out.join("full.toml")).unwrap();
    for key in [
        "entrypoint",
        "stop_signal",
        "cap_add",
        "ulimits",
        "memory = \"128m\"",
        "cpus = 0.5",
        "log_opts",
    ] {
        assert!(text.contains(key), "{key} not exported:\n{text}");
    }
    let r = agent.ok(&["apply", out.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged full", "{r}");
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 3, failed 0, skipped 0",
        "{r}"
    );

    // A changed key recreates its component, and only it; the recreate stops the old
    // container with its stop signal (USR1: it exits 0 at once).
    let before = (
        podman.inspect("full-priv").unwrap()["Id"].clone(),
        podman.inspect("full-stubborn").unwrap()["Id"].clone(),
    );
    let old_app = podman.inspect("full-app").unwrap()["Id"].clone();
    agent.apply("full.toml", &service("api"));
    let r = agent.ok(&["--once"]);
    assert!(r.stdout.contains("recreate full/app"), "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 2, failed 0, skipped 0",
        "{r}"
    );
    let app = podman.inspect("full-app").unwrap();
    assert_ne!(app["Id"], old_app);
    assert_eq!(app["Config"]["Labels"]["org.example.tier"], "api");
    assert_eq!(podman.inspect("full-priv").unwrap()["Id"], before.0);
    assert_eq!(podman.inspect("full-stubborn").unwrap()["Id"], before.1);
}

#[test]
fn the_agents_stops_and_recreates_wait_the_components_stop_timeout() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    let file = |timeout: &str, arg: &str| {
        format!(
            "name = \"slow\"\n[[components]]\nname = \"slow\"\nimage = \"{IMAGE}\"\n\
             cmd = [\"sleep\", \"{arg}\"]\nstop_timeout = \"{timeout}\"\n"
        )
    };
    agent.apply("slow.toml", &file("1s", "1000"));
    agent.ok(&["--once"]);
    assert!(podman.running("slow"));
    // `sleep` as PID 1 ignores SIGTERM: the stop lasts the stop timeout, 1 s, not 10.
    agent.ok(&["stop", "slow"]);
    let t = Instant::now();
    let r = agent.ok(&["--once"]);
    let took = t.elapsed();
    assert!(r.stdout.contains("stop     slow/slow"), "{r}");
    assert!(!podman.running("slow"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    agent.ok(&["start", "slow"]);
    agent.ok(&["--once"]);
    // A recreate (a changed cmd) stops the old container with the new spec's timeout.
    agent.apply("slow.toml", &file("2s", "1001"));
    let t = Instant::now();
    let r = agent.ok(&["--once"]);
    let took = t.elapsed();
    assert!(r.stdout.contains("recreate slow/slow"), "{r}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(7),
        "{took:?}"
    );
    assert_eq!(podman.inspect("slow").unwrap()["Config"]["StopTimeout"], 2);
}

/// Unlimited ulimits (-1, or "unlimited") reach the container as `RLIM_INFINITY`, and
/// `stdin_open` keeps its standard input open with nothing attached: `cat` as PID 1 waits
/// on it, where the same `cat` without the key reads end-of-file and exits 0 (`eof`, a
/// one-shot, which `--once` waits out). Stack and core, not elasticsearch's memlock: this
/// machine's hard memlock limit is 8 MiB and podman here lacks CAP_SYS_RESOURCE to raise
/// it, so runc could not set an unlimited one ("setrlimit: operation not permitted").
#[test]
fn unlimited_ulimits_and_an_open_stdin_reach_the_container() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    let text = format!(
        r#"
name = "keys"

[[components]]
name = "reader"
image = "{IMAGE}"
cmd = ["cat"]
stdin_open = true
ulimits = {{ stack = -1, core = {{ soft = 0, hard = "unlimited" }}, nofile = 1024, nproc = 1024 }}

[[components]]
name = "eof"
image = "{IMAGE}"
cmd = ["cat"]
oneshot = true
"#
    );
    agent.apply("keys.toml", &text);
    let r = agent.ok(&["--once"]);
    assert!(r.stdout.contains("keys/eof"), "{r}");

    // Without stdin_open, cat read end-of-file and exited 0.
    let eof = compat(&podman, "keys-eof");
    assert_eq!(eof["Config"]["OpenStdin"], false);
    assert_eq!(eof["State"]["Status"], "exited", "{eof}");
    assert_eq!(eof["State"]["ExitCode"], 0);

    // With it, cat waits on an open pipe: still running after eof's cat has exited.
    let c = compat(&podman, "keys-reader");
    assert_eq!(c["Config"]["OpenStdin"], true);
    assert_eq!(c["Config"]["AttachStdin"], false);
    assert_eq!(c["State"]["Status"], "running", "{c}");
    let limit = |name: &str| {
        let u = c["HostConfig"]["Ulimits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["Name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {c}"));
        (u["Soft"].as_i64().unwrap(), u["Hard"].as_i64().unwrap())
    };
    assert_eq!(limit("RLIMIT_STACK"), (-1, -1));
    assert_eq!(limit("RLIMIT_CORE"), (0, -1));
    assert_eq!(limit("RLIMIT_NOFILE"), (1024, 1024));
    let inside = exec(
        &podman,
        "keys-reader",
        "ulimit -s; ulimit -Hs; ulimit -c; ulimit -Hc; \
         tr '\\0' ' ' </proc/1/cmdline; echo; cut -d' ' -f3 /proc/1/stat; \
         readlink /proc/1/fd/0; grep -E '^Max (stack|core)' /proc/1/limits",
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(
        lines[..6],
        ["unlimited", "unlimited", "0", "unlimited", "cat ", "S"],
        "{inside}"
    );
    assert!(lines[6].starts_with("pipe:"), "stdin: {inside}");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(lines[7])[3..5],
        ["unlimited", "unlimited"],
        "{inside}"
    );
    assert_eq!(words(lines[8])[4..6], ["0", "unlimited"], "{inside}");

    // export | apply: the same service, nothing to do.
    let out = agent.path().join("exported");
    std::fs::create_dir(&out).unwrap();
    agent.ok(&["export", "-o", out.to_str().unwrap()]);
    let exported = std::fs::read_to_string(out.join("keys.toml")).unwrap();
    for key in ["stdin_open = true", "stack = -1", "hard = -1"] {
        assert!(exported.contains(key), "{key} not exported:\n{exported}");
    }
    let r = agent.ok(&["apply", out.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged keys", "{r}");
    let r = agent.ok(&["--once"]);
    assert!(!r.stdout.contains("recreate"), "{r}");
    assert!(podman.running("keys-reader"));
}
