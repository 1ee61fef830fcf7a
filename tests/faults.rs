//! The fault matrix (issue 6): the agent survives crashes, signals, a locked registry,
//! broken registry files, vanished images and a storm of changes, and loses nothing.

mod agentkit;
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use agentkit::{Agent, DaemonProc};
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

fn many(n: usize) -> String {
    let mut s = String::from("name = \"many\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i:02}\"\nimage = \"{IMAGE}\"\n"
        ));
    }
    s
}

/// Every container podman has: (name, labels).
fn containers(podman: &PrivatePodman) -> Vec<(String, BTreeMap<String, String>, String)> {
    let out = podman.podman_ok(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(if out.is_empty() { "[]" } else { &out }).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let labels = c["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (
                c["Names"][0].as_str().unwrap().to_string(),
                labels,
                c["State"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Never two containers for one component, and none of ours without our labels.
fn assert_one_per_component(podman: &PrivatePodman) -> usize {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let all = containers(podman);
    for (name, labels, _) in &all {
        assert_eq!(
            labels.get("mcp.managed").map(String::as_str),
            Some("true"),
            "{name} lacks our labels"
        );
        let key = (
            labels["mcp.service"].clone(),
            labels["mcp.component"].clone(),
        );
        if let Some(other) = seen.insert(key.clone(), name.clone()) {
            panic!("two containers for {key:?}: {other} and {name}");
        }
    }
    all.len()
}

fn running_count(podman: &PrivatePodman) -> usize {
    containers(podman)
        .iter()
        .filter(|c| c.2 == "running")
        .count()
}

fn integrity(agent: &Agent) -> String {
    let out = Command::new("sqlite3")
        .arg(&agent.db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3 (scripts/install-deps installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts the daemon on 30 components and returns once some, not all, exist.
fn interrupted_start(podman: &PrivatePodman, agent: &Agent) -> DaemonProc {
    agent.apply("many.toml", &many(30));
    let d = agent.start_daemon(&[]);
    wait_for("recovery under way", Duration::from_secs(30), || {
        !containers(podman).is_empty()
    });
    d
}

#[test]
fn sigkill_in_the_middle_of_recovering_30_components_then_restart_converges() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\nconcurrency = 4\n");
    let mut d = interrupted_start(&podman, &agent);
    d.signal("KILL");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());
    let at_kill = assert_one_per_component(&podman);
    eprintln!("{at_kill} containers when SIGKILLed");
    assert_eq!(integrity(&agent), "ok");
    let _d = agent.start_daemon(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while running_count(&podman) < 30 {
        assert!(
            Instant::now() < deadline,
            "not converged: {} running",
            running_count(&podman)
        );
        assert_one_per_component(&podman);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(assert_one_per_component(&podman), 30);
    assert_eq!(integrity(&agent), "ok");
}

#[test]
fn sigterm_in_the_middle_of_recovering_30_components_exits_0_and_the_next_start_converges() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\nconcurrency = 4\n");
    let mut d = interrupted_start(&podman, &agent);
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_one_per_component(&podman);
    let _d = agent.start_daemon(&[]);
    wait_for(
        "all 30 running after restart",
        Duration::from_secs(60),
        || running_count(&podman) == 30,
    );
    assert_eq!(assert_one_per_component(&podman), 30);
    assert_eq!(integrity(&agent), "ok");
}

#[test]
fn a_registry_locked_by_another_writer_for_3s_is_waited_out_without_an_error_storm() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply("many.toml", &many(2));
    let d = agent.start_daemon(&[]);
    wait_for("both run", Duration::from_secs(20), || {
        running_count(&podman) == 2
    });
    // Another process holds the write lock for 3 s.
    let db = agent.db.display().to_string();
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\n\
             c=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             c.execute(\"UPDATE services SET updated_ms = updated_ms\")\n\
             print('locked', flush=True)\n\
             time.sleep(3)\n\
             c.execute('COMMIT')\n",
            &db,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let t = Instant::now();
    let lines_before = d.log().lines().count();
    // Work arrives while the registry is locked: the loop is not blocked by it.
    podman.podman_ok(&["rm", "-f", "-t", "0", "many-c00"]);
    wait_for(
        "repaired while the registry is locked",
        Duration::from_secs(5),
        || podman.running("many-c00"),
    );
    let repaired = t.elapsed();
    // A CLI write waits for the lock (busy_timeout) and succeeds.
    let stop = agent.run(&["stop", "many/c01"]);
    assert_eq!(stop.code, 0, "{stop}");
    assert!(locker.wait().unwrap().success());
    wait_for(
        "the stop applied after the lock",
        Duration::from_secs(20),
        || !podman.running("many-c01"),
    );
    let new_lines: Vec<String> = d
        .log()
        .lines()
        .skip(lines_before)
        .map(String::from)
        .collect();
    let errors = new_lines
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(
        errors <= 2,
        "error storm while locked:\n{}",
        new_lines.join("\n")
    );
    eprintln!("repaired in {repaired:?} with the registry locked; {errors} warnings");
    assert!(
        repaired < Duration::from_secs(3),
        "the loop waited for the lock: {repaired:?}"
    );
    // The status written during the lock reaches the registry afterwards.
    // (busybox's sleep ignores SIGTERM: the stop takes podman's 10 s timeout.)
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !last.contains("\"last_pass_state\": \"stopped\"") {
        assert!(
            Instant::now() < deadline,
            "status never recorded the stop:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
        last = agent.run(&["status", "--json"]).stdout;
    }
}

struct ReadOnlyBind(std::path::PathBuf);

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_broken_registry_is_a_one_line_error_naming_the_path_never_a_panic() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply("many.toml", &many(1));
    let check_with = |what: &str, code: i32, words: &str, commands: &[&[&str]]| {
        for &args in commands {
            let r = agent.run(args);
            assert_eq!(r.code, code, "{what} {args:?}: {r}");
            let line = r.stderr.trim();
            assert_eq!(
                line.lines().count(),
                1,
                "{what} {args:?}: one line, got:\n{line}"
            );
            assert!(
                line.contains("registry.db") && line.contains(words),
                "{what}: {line}"
            );
            assert!(!r.stderr.contains("panicked"), "{r}");
        }
    };
    let check = |what: &str, code: i32, words: &str| {
        check_with(what, code, words, &[&["--once"], &["run"], &["status"]])
    };
    let state = agent.db.parent().unwrap().to_path_buf();
    // Read-only filesystem.
    let ok = |c: &mut Command| c.status().unwrap().success();
    assert!(ok(Command::new("mount")
        .args(["--bind"])
        .arg(&state)
        .arg(&state)));
    let guard = ReadOnlyBind(state.clone());
    assert!(ok(Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&state)));
    // The writers refuse it; the read-only commands work on it (issue 11).
    check_with(
        "read-only filesystem",
        69,
        "Read-only file system",
        &[&["--once"], &["run"]],
    );
    for args in [&["status"][..], &["export"]] {
        let r = agent.run(args);
        assert_eq!(r.code, 0, "{args:?} on a read-only registry: {r}");
    }
    drop(guard);
    // Garbage.
    std::fs::write(&agent.db, vec![0x5au8; 4096]).unwrap();
    for f in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    check("garbage", 69, "not a database");
    // Directory missing.
    std::fs::remove_dir_all(&state).unwrap();
    check("missing directory", 69, "does not exist");
}

#[test]
fn an_image_removed_under_a_running_container_is_image_missing_until_imported_again() {
    let podman = podman();
    podman.import_busybox("localhost/victim:1");
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"2s\"\n");
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"victim\"\nimage = \"localhost/victim:1\"\n\
             [[components]]\nname = \"bystander\"\nimage = \"{IMAGE}\"\n"
        ),
    );
    let _d = agent.start_daemon(&[]);
    wait_for("both run", Duration::from_secs(20), || {
        running_count(&podman) == 2
    });
    let bystander = podman.inspect("s-bystander").unwrap()["Id"].clone();
    // Removing the image in use takes its container with it (podman rmi --force).
    podman.podman_ok(&["rmi", "--force", "localhost/victim:1"]);
    wait_for("image-missing in status", Duration::from_secs(10), || {
        agent
            .run(&["status", "--json"])
            .stdout
            .contains("\"last_pass_state\": \"image-missing\"")
    });
    assert!(podman.inspect("s-victim").is_none());
    assert!(podman.running("s-bystander"));
    assert_eq!(podman.inspect("s-bystander").unwrap()["Id"], bystander);
    podman.import_busybox("localhost/victim:1");
    wait_for(
        "recovered after the image is back",
        Duration::from_secs(10),
        || podman.running("s-victim"),
    );
}

#[test]
fn a_hundred_rapid_changes_from_another_process_converge_to_the_final_registry() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let svc = |name: &str, v: usize| {
        format!(
            "name = \"{name}\"\n[[components]]\nname = \"a\"\nimage = \"{IMAGE}\"\nenv = {{ V = \"{v}\" }}\n\
             [[components]]\nname = \"b\"\nimage = \"{IMAGE}\"\n"
        )
    };
    for n in ["p", "q", "r"] {
        agent.apply(&format!("{n}.toml"), &svc(n, 0));
    }
    let _d = agent.start_daemon(&[]);
    wait_for("all six run", Duration::from_secs(30), || {
        running_count(&podman) == 6
    });
    // A fixed pseudo-random sequence of changes (xorshift).
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut samples = 0;
    for i in 0..100 {
        let r = next();
        let name = ["p", "q", "r"][(r % 3) as usize];
        let target = match (r >> 8) % 2 {
            0 => name.to_string(),
            _ => format!("{name}/a"),
        };
        match (r >> 16) % 3 {
            0 => agent.ok(&["stop", &target]),
            1 => agent.ok(&["start", &target]),
            _ => agent.apply(&format!("{name}.toml"), &svc(name, i)),
        };
        if i % 5 == 0 {
            assert_one_per_component(&podman);
            samples += 1;
        }
    }
    // Final state: every component as the registry says.
    wait_for(
        "converged to the final registry",
        Duration::from_secs(60),
        || {
            let st: serde_json::Value =
                serde_json::from_str(&agent.run(&["status", "--json"]).stdout).unwrap();
            st["components"].as_array().unwrap().iter().all(|c| {
                match c["desired"].as_str().unwrap() {
                    "running" => c["actual"] == "running",
                    _ => {
                        c["actual"] != "running"
                            && !c["actual"].as_str().unwrap().starts_with("running")
                    }
                }
            })
        },
    );
    assert_one_per_component(&podman);
    eprintln!("sampled {samples} times during the storm");
}
