//! Issue 11: never act on a registry the agent cannot trust. Against a real, private
//! podman and the real binary: a truncated registry, `sqlite3` run beside the daemon, the
//! registry deleted or replaced under it, two daemons on one registry, and the
//! orphans a new registry finds (adopt, prune). (The read-only registry is in
//! `tests/faults.rs`.)

mod agentkit;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use agentkit::{container_id, Agent, DaemonProc, RegistryWriteLock};
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

/// Three services applied and brought up by `--once`.
fn three(podman: &PrivatePodman) -> Agent {
    let agent = Agent::new(podman, NO_TICK);
    for s in ["a", "b", "c"] {
        agent.apply(&format!("{s}.toml"), &simple(s));
    }
    agent.ok(&["--once"]);
    for s in ["a", "b", "c"] {
        assert!(podman.running(s), "{s} runs");
    }
    agent
}

fn all_running(podman: &PrivatePodman) -> bool {
    ["a", "b", "c"].iter().all(|s| podman.running(s))
}

fn ready(d: &DaemonProc) -> bool {
    d.log().contains("first pass done; ready")
}

/// The daemon exits, with 69, within `deadline`; its log.
fn exits_69(d: &mut DaemonProc, deadline: Duration) -> String {
    let code = d.wait_exit(deadline);
    let log = d.log();
    assert_eq!(code, Some(69), "the daemon should exit 69:\n{log}");
    log
}

/// The daemon logged `words` once as an error, and exited with them as its last line.
fn logged_once_and_exited_with(log: &str, words: &str) {
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(words))
        .count();
    assert_eq!(errors, 1, "logged once:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mcp-agent: registry ") && last.contains(words),
        "{log}"
    );
}

#[test]
fn a_truncated_registry_is_refused_by_every_command_and_no_container_is_removed() {
    let podman = podman();
    let agent = three(&podman);
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| container_id(&podman, s))
        .collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&agent.db)
        .unwrap()
        .set_len(0)
        .unwrap();
    for f in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(agent.db.with_file_name(f));
    }
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["export"],
        &["--once"],
        &["run"],
        &["stop", "a"],
        &["remove", "a"],
        &["adopt"],
    ] {
        let r = agent.run(args);
        assert_eq!(r.code, 69, "{args:?}: {r}");
        assert!(
            r.stderr.contains(&agent.db.display().to_string()) && r.stderr.contains("empty"),
            "{args:?} names the file and the reason: {r}"
        );
        assert_eq!(
            std::fs::metadata(&agent.db).unwrap().len(),
            0,
            "{args:?} wrote into the emptied file"
        );
    }
    let after: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| container_id(&podman, s))
        .collect();
    assert_eq!(after, ids, "no container was touched");
    assert!(all_running(&podman));
}

#[test]
fn a_new_registry_leaves_the_old_ones_containers_alone_until_adopt_or_prune() {
    let podman = podman();
    let agent = three(&podman);
    let old_id = |s: &str| container_id(&podman, s);
    let (a, b) = (old_id("a"), old_id("b"));
    // The registry lost; a new one made by `apply`, holding a and b only.
    std::fs::remove_file(&agent.db).unwrap();
    agent.apply("a.toml", &simple("a"));
    agent.apply("b.toml", &simple("b"));
    let r = agent.run(&["--once"]);
    assert_eq!(
        r.code, 1,
        "a and b are in conflict with the old containers: {r}"
    );
    assert!(
        all_running(&podman),
        "c, not in the new registry, was not removed: {r}"
    );
    assert_eq!((old_id("a"), old_id("b")), (a.clone(), b.clone()));
    let status = agent.run(&["status"]);
    assert!(
        status.stdout.contains("orphan of registry") && status.stdout.contains("ORPHAN"),
        "{status}"
    );
    // Adopting a keeps its container as it is (same spec: no recreate).
    let r = agent.ok(&["adopt", "a"]);
    assert!(r.stdout.contains("adopted  a/a (a)"), "{r}");
    let r = agent.run(&["--once"]);
    assert_eq!(old_id("a"), a, "adopted, kept: {r}");
    assert!(r.stdout.contains("conflict b/b"), "{r}");
    // Pruning removes the orphans left: b (then created anew) and c.
    let r = agent.ok(&["prune"]);
    assert!(r.stdout.contains("removed  c/c (c)"), "{r}");
    assert!(podman.inspect("c").is_none(), "{r}");
    agent.ok(&["--once"]);
    assert!(podman.running("b") && old_id("b") != b);
    assert_eq!(old_id("a"), a);
    let labels = &podman.inspect("b").unwrap()["Config"]["Labels"];
    assert_eq!(
        labels["mcp.registry"].as_str().map(str::len),
        Some(32),
        "{labels}"
    );
}

#[test]
fn sqlite3_reading_beside_the_daemon_does_not_disconnect_it() {
    let podman = podman();
    let agent = three(&podman);
    let d = agent.start_daemon(&[]);
    wait_for("ready", Duration::from_secs(20), || ready(&d));
    for _ in 0..5 {
        let out = Command::new("sqlite3")
            .arg(&agent.db)
            .arg("SELECT count(*) FROM services;")
            .output()
            .expect("sqlite3 (scripts/test installs it)");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    }
    // A later change is still seen, and the daemon's status writes still land.
    // (busybox's sleep ignores SIGTERM: the stop takes its 10 s timeout.)
    agent.ok(&["stop", "a"]);
    wait_for("a stopped by the daemon", Duration::from_secs(30), || {
        !podman.running("a")
    });
    wait_for("the stop recorded", Duration::from_secs(30), || {
        agent
            .run(&["status", "--json"])
            .stdout
            .contains("\"last_pass_state\": \"stopped\"")
    });
    agent.ok(&["start", "a"]);
    wait_for("a started again", Duration::from_secs(10), || {
        podman.running("a")
    });
}

#[test]
fn a_registry_deleted_under_the_daemon_stops_it_with_69_and_touches_nothing() {
    let podman = podman();
    let agent = three(&podman);
    let mut d = agent.start_daemon(&[]);
    wait_for("ready", Duration::from_secs(20), || ready(&d));
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| container_id(&podman, s))
        .collect();
    std::fs::remove_file(&agent.db).unwrap();
    let log = exits_69(&mut d, Duration::from_secs(15));
    logged_once_and_exited_with(&log, "was deleted");
    let after: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| container_id(&podman, s))
        .collect();
    assert_eq!(after, ids);
    // Nothing was made in its place; started again, the daemon refuses the missing file.
    assert!(!agent.db.exists());
    let r = agent.run(&["run"]);
    assert_eq!(r.code, 69, "{r}");
    assert!(r.stderr.contains("does not exist"), "{r}");
}

#[test]
fn a_registry_replaced_under_the_daemon_stops_it_and_the_next_start_uses_the_new_file() {
    let podman = podman();
    let agent = three(&podman);
    let mut d = agent.start_daemon(&[]);
    wait_for("ready", Duration::from_secs(20), || ready(&d));
    // A restore: another file renamed over the path (here a registry of its own).
    let other = Agent::new(&podman, NO_TICK);
    other.apply("a.toml", &simple("a"));
    std::fs::rename(&other.db, &agent.db).unwrap();
    let log = exits_69(&mut d, Duration::from_secs(15));
    logged_once_and_exited_with(&log, "was replaced");
    assert!(all_running(&podman));
    // Started again on it: the old registry's containers are orphans, never removed.
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "a is in conflict with the old registry's: {r}");
    assert!(all_running(&podman), "{r}");
}

#[test]
fn a_second_daemon_or_once_on_the_same_registry_exits_69_naming_the_first_ones_pid() {
    let podman = podman();
    let agent = three(&podman);
    let d = agent.start_daemon(&[]);
    wait_for("ready", Duration::from_secs(20), || ready(&d));
    let pid = format!("pid {}", d.pid());
    let mut second = agent.start_daemon(&[]);
    let log = exits_69(&mut second, Duration::from_secs(10));
    assert!(log.contains(&pid) && log.contains("registry.db"), "{log}");
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 69, "{r}");
    assert!(r.stderr.contains(&pid), "{r}");
    // The first one is unaffected: it still acts on changes.
    agent.ok(&["stop", "b"]);
    wait_for("b stopped", Duration::from_secs(30), || {
        !podman.running("b")
    });
}

/// Found by the chaos soak (seed 3): a daemon (re)started while another process held the
/// registry's write lock waited out the busy timeout in "migrate schema" and exited 69.
/// A registry at the current schema needs no write to be opened: the daemon starts, is
/// ready, and repairs while the lock is still held.
#[test]
fn a_daemon_started_while_another_process_holds_the_write_lock_starts_and_repairs() {
    let podman = podman();
    let agent = three(&podman);
    let lock = RegistryWriteLock::hold(&agent.db);
    podman.podman_ok(&["rm", "-f", "-t", "0", "b"]);
    let t = Instant::now();
    let mut d = agent.start_daemon(&[]);
    wait_for("ready with the lock held", Duration::from_secs(8), || {
        ready(&d)
    });
    wait_for(
        "b repaired with the lock held",
        Duration::from_secs(8),
        || podman.running("b"),
    );
    assert!(d.alive(), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(8));
    drop(lock);
    let (code, _) = d.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", d.log());
}
