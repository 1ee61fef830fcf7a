//! What podman 4.3 really does, against a real private podman: states bollard 0.21 does
//! not know (`stopped`, bollard #701) from containers crash-looping beside the agent's,
//! and podman's two "already in use" texts (a taken name, a taken host port).

mod agentkit;
mod common;

use std::time::{Duration, Instant};

use agentkit::Agent;
use common::PrivatePodman;
use mcp_agent::container::ContainerSpec;
use mcp_agent::model::{PortPublish, Proto, RestartPolicy};
use mcp_agent::runtime::podman::Podman;
use mcp_agent::runtime::{Runtime, RuntimeError};

const IMAGE: &str = "localhost/busybox:latest";
const LOOPERS: [&str; 3] = ["loop-1", "loop-2", "loop-3"];

fn spec(name: &str, ports: Vec<PortPublish>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: IMAGE.to_string(),
        cmd: vec!["sleep".into(), "infinity".into()],
        env: Default::default(),
        user: None,
        network: "bridge".into(),
        restart: RestartPolicy::No,
        volumes: vec![],
        create_host_paths: vec![],
        ports,
        settings: Default::default(),
        secret_digests: vec![],
        volume_dirs: Default::default(),
        external_volumes: Default::default(),
        endpoints: vec![],
        network_options: Default::default(),
        pull: Default::default(),
        labels: Default::default(),
        unallocated: vec![],
    }
}

/// Three unmanaged `restart=always` containers that die at once, forever.
/// Removes the crash loopers (and `others`). Podman 4.3 refuses to remove a
/// `restart=always` container caught in its `stopped` state between a death and the
/// restart ("could not be stopped: container state improper"): asked again, it does.
fn remove_loopers(podman: &PrivatePodman, others: &[&str]) {
    let mut args = vec!["rm", "--force", "--ignore"];
    args.extend(LOOPERS);
    args.extend(others);
    common::wait_for("the crash loopers removed", Duration::from_secs(30), || {
        podman.podman(&args).status.success()
    });
}

fn crash_loopers(podman: &PrivatePodman) {
    for n in LOOPERS {
        podman.podman_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--restart=always",
            IMAGE,
            "sh",
            "-c",
            "exit 1",
        ]);
    }
}

#[test]
fn a_taken_name_and_a_taken_host_port_are_told_apart() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    podman.podman_ok(&["create", "--name", "taken", IMAGE, "sleep", "1"]);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let holder = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    common::block_on(async {
        let e = rt.create(&spec("taken", vec![])).await.unwrap_err();
        assert!(
            matches!(e, RuntimeError::NameInUse { ref name } if name == "taken"),
            "{e:?}"
        );

        let published = PortPublish {
            ip: None,
            host_port: port,
            container_port: 80,
            proto: Proto::Tcp,
        };
        let r = match rt.create(&spec("ported", vec![published])).await {
            Ok(id) => rt.start(&id).await,
            Err(e) => Err(e),
        };
        let e = r.expect_err("the host port is held by this test");
        assert!(matches!(e, RuntimeError::PortInUse { .. }), "{e:?}");
        assert!(e.to_string().contains("address already in use"), "{e}");
    });
    drop(holder);
    podman.podman_ok(&["rm", "--force", "--ignore", "taken", "ported"]);
}

#[test]
fn crash_looping_containers_beside_the_agents_never_fail_a_list() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    crash_loopers(&podman);
    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    let (mut failures, mut stopped_seen) = (Vec::new(), 0);
    common::block_on(async {
        for _ in 0..200 {
            match rt.list().await {
                Ok(list) => {
                    stopped_seen += list.iter().filter(|a| a.state.as_str() == "exited").count()
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    });
    remove_loopers(&podman, &[]);
    assert!(
        failures.is_empty(),
        "{} of 200 lists failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        stopped_seen > 0,
        "the loopers were never seen between death and restart"
    );
}

#[test]
fn the_daemon_and_once_pass_beside_crash_loopers_without_a_list_failure() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    crash_loopers(&podman);
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1s\"\n");
    // The agent's own component crash-loops too (podman restarts it): each death is an
    // event, and each event a pass.
    agent.apply(
        "s.toml",
        &format!("name = \"s\"\n[[components]]\nname = \"s\"\nimage = \"{IMAGE}\"\nrestart = \"always\"\ncmd = [\"sh\", \"-c\", \"sleep 0.1; exit 1\"]\n"),
    );
    for i in 0..20 {
        let r = agent.run(&["--once"]);
        assert!(
            !r.stderr.contains("cannot list") && !r.stdout.contains("cannot list"),
            "--once run {i}:\n{r}"
        );
        assert!(r.code == 0 || r.code == 1, "--once run {i}:\n{r}");
        assert!(
            !format!("{r}").contains("unknown variant"),
            "--once run {i}:\n{r}"
        );
    }
    let mut daemon = agent.start_daemon_with(&["--log-level", "mcp_agent=debug"], &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let passes = loop {
        let log = daemon.log();
        let n = log.matches("listed containers").count();
        if n >= 200 || Instant::now() > deadline {
            break n;
        }
        assert!(daemon.alive(), "the daemon exited:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = daemon.log();
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(15));
    remove_loopers(&podman, &["s"]);
    assert!(passes >= 200, "only {passes} passes within 120 s");
    assert_eq!(log.matches("cannot list containers").count(), 0, "{log}");
}

/// Podman's events beside crash loopers: every event is read by the agent's own lenient
/// reader, so none fails or ends the stream, and a death of the agent's own container is
/// still repaired by its event alone (no resync tick in this test).
#[test]
fn the_event_stream_beside_crash_loopers_never_fails_and_still_delivers_deaths() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    crash_loopers(&podman);
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply(
        "w.toml",
        &format!("name = \"w\"\n[[components]]\nname = \"w\"\nimage = \"{IMAGE}\"\n"),
    );
    let mut daemon = agent.start_daemon_with(&["--log-level", "mcp_agent=debug"], &[]);
    common::wait_for("w runs", Duration::from_secs(20), || podman.running("w"));
    // Seconds of crash loops beside the open stream: a die/init/restart/start per restart.
    let restarts = |n: &str| {
        podman
            .podman(&["inspect", "--format", "{{.RestartCount}}", n])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    let start = restarts(LOOPERS[0]);
    common::wait_for("20 restarts of a looper", Duration::from_secs(60), || {
        restarts(LOOPERS[0]) >= start + 20
    });
    let before = agentkit::container_id(&podman, "w");
    podman.podman_ok(&["kill", "w"]);
    common::wait_for("w repaired on its event", Duration::from_secs(20), || {
        podman.running("w")
    });
    let after = agentkit::container_id(&podman, "w");
    let log = daemon.log();
    daemon.signal("TERM");
    let _ = daemon.wait_exit(Duration::from_secs(15));
    remove_loopers(&podman, &["w"]);
    assert!(log.contains("action=die container=w"), "{log}");
    assert_eq!(after, before, "started again, not replaced");
    for bad in [
        "event stream closed",
        "event cannot be read",
        "unknown variant",
        "cannot list",
    ] {
        assert_eq!(log.matches(bad).count(), 0, "{bad:?} in:\n{log}");
    }
}
