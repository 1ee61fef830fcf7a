//! Deaths learnt without podman's event stream (issue 16): the daemon watches each running
//! container's main process through a pidfd, so a crash is repaired even while the event
//! stream says nothing — and a `podman rm -f`, which shows the same death first, is never
//! raced: a start in the middle of podman's removal would leave an orphan.

mod agentkit;
mod common;

use std::time::{Duration, Instant};

use agentkit::Agent;
use common::relay::Relay;
use common::{wait_for, PrivatePodman};
use mcp_agent::runtime::deaths::{Deaths, Died};
use mcp_agent::runtime::libpod_db::{LibpodDb, RUNNING};
use mcp_agent::runtime::podman::Podman;
use mcp_agent::runtime::Runtime;

const IMAGE: &str = "localhost/busybox:latest";

fn started_at(podman: &PrivatePodman, name: &str) -> Option<String> {
    let v = podman.inspect(name)?;
    (v["State"]["Running"].as_bool() == Some(true))
        .then(|| v["State"]["StartedAt"].as_str().unwrap_or("").to_string())
}

/// SIGKILLs a container's process (from outside podman, as a crash or the OOM killer).
fn sigkill(pid: impl std::fmt::Display) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -KILL {pid}");
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
        sigkill(pid);
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
        // And podman's database, read at the death, said it was a crash: its start did
        // not wait as a stop's does.
        assert_eq!(
            d.log()
                .matches("main process exited trigger=\"pidfd\" component=s/app crashed=true")
                .count(),
            round + 1,
            "each crash confirmed at its death:\n{}",
            d.log()
        );
        relay.stall_events(false);
    }
    if std::env::var("SHOW_LOG").is_ok() {
        eprintln!("{}", d.log());
    }
}

/// The conmons still alive that run container `id` (their `-c ID` argument).
fn conmons_of(id: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let is_conmon = cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"conmon"));
        if is_conmon && mcp_agent::ports::container_of_conmon(&cmd).as_deref() == Some(id) {
            out.push(pid);
        }
    }
    out
}

/// Ends an orphan this test's agent made: the conmon's children, then the conmon.
fn end_orphan(conmon: u32) {
    let children = std::fs::read_to_string(format!("/proc/{conmon}/task/{conmon}/children"))
        .unwrap_or_default();
    for pid in children
        .split_whitespace()
        .chain([conmon.to_string().as_str()])
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
}

/// `podman rm -f` kills the main process (the pidfd tells the agent at once) and removes the
/// container after: the agent's start in between would run a container podman then
/// deletes, its conmon and process living on. Twelve removals: each is replaced by a new
/// container, and no conmon of a removed one is left.
#[test]
fn a_removal_is_never_raced_into_an_orphan() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(
        &podman,
        "[reconcile]\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n",
    );
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\nrestart = \"no\"\n\
             cmd = [\"sleep\", \"100000\"]\n"
        ),
    );
    let d = agent.start_daemon(&[]);
    let id_of = |podman: &PrivatePodman| {
        let v = podman.inspect("s-app")?;
        (v["State"]["Running"].as_bool() == Some(true))
            .then(|| v["Id"].as_str().unwrap_or("").to_string())
    };
    wait_for("s-app running", Duration::from_secs(20), || {
        id_of(&podman).is_some()
    });
    let mut orphans = Vec::new();
    for round in 0..12 {
        let old = id_of(&podman).expect("running");
        // The watch of a container just started is set up by an inspect after it.
        std::thread::sleep(Duration::from_millis(300));
        podman.podman_ok(&["rm", "-f", "-t", "0", "s-app"]);
        wait_for(
            &format!("round {round}: a new s-app running"),
            Duration::from_secs(10),
            || id_of(&podman).is_some_and(|id| id != old),
        );
        // A removed container's conmon exits with its process; an orphan's stays.
        let left = common::poll_until(Duration::from_secs(2), || conmons_of(&old).is_empty());
        if left.is_none() {
            orphans.push((round, old.clone(), conmons_of(&old)));
        }
    }
    for (_, _, pids) in &orphans {
        pids.iter().copied().for_each(end_orphan);
    }
    assert!(
        !d.log()
            .contains("main process exited trigger=\"pidfd\" component=s/app crashed=true"),
        "a removal taken for a crash:\n{}",
        d.log()
    );
    assert!(
        orphans.is_empty(),
        "orphans left by starts racing podman's removal: {orphans:?}\n{}",
        d.log()
    );
}

/// What podman's own database had saved at the moment of a death, read at the pidfd
/// (`src/runtime/libpod_db.rs`): a crash (SIGKILL from outside podman) shows the run still
/// `running` with its pid; `podman rm -f` and `podman stop` saved `stopping` before they
/// signalled. Once anything syncs the container the two look the same; the read comes
/// first. Five of each, on the real podman, through the daemon's own watch.
#[test]
fn podmans_database_tells_a_crash_from_a_stop_at_the_death() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let root = common::block_on(rt.graph_root())
        .unwrap()
        .expect("podman says its graph root");
    assert_eq!(
        root,
        podman.root_dir(),
        "podman info's DockerRootDir is its --root"
    );
    let db = LibpodDb::under_graph_root(&root).expect("podman 4's bolt_state.db is there");
    let mut seen = Vec::new();
    common::block_on(async {
        let (deaths, mut rx) = Deaths::new();
        deaths.set_db(Some(db.clone()));
        for round in 0..5 {
            for how in ["kill", "rm", "stop"] {
                let name = format!("d-{how}-{round}");
                let id =
                    podman.podman_ok(&["run", "-d", "--name", &name, IMAGE, "sleep", "100000"]);
                let id = id.trim().to_string();
                let pid = rt.main_pid(&id).await.unwrap().expect("a running pid");
                let saved = db.saved(&id).unwrap().expect("in podman's database");
                assert_eq!(
                    (saved.state, saved.pid),
                    (RUNNING, i64::from(pid)),
                    "{name}"
                );
                deaths.watch_pid(id.clone(), pid);
                match how {
                    "kill" => sigkill(pid),
                    "rm" => {
                        podman.podman_ok(&["rm", "-f", "-t", "0", &name]);
                    }
                    _ => {
                        podman.podman_ok(&["stop", "-t", "0", &name]);
                    }
                }
                let told = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("the death told within 10 s")
                    .expect("the watch is there");
                seen.push((how, told.crashed));
                assert_eq!(
                    told,
                    Died {
                        id: id.clone(),
                        crashed: how == "kill"
                    },
                    "{name}: a crash is one, a stop of podman's is not"
                );
                podman.podman_ok(&["rm", "-f", "--ignore", "-t", "0", &name]);
            }
        }
        // Gone from the database: absent, not an error.
        assert_eq!(db.saved(&"0".repeat(64)).unwrap(), None);
    });
    eprintln!("{seen:?}");
}
