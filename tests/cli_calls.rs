//! How many podman CLI processes freeing storage-held names costs after podman's database
//! is lost (README: "The podman CLI is used in one case only"), counted with a shim the
//! agent runs as its `[podman].cli`: one `ps` and one `rm` per pass, for every held name
//! of the pass, with `--once` and with the daemon.

mod agentkit;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentkit::Agent;
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";
const NAMES: [&str; 8] = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"];

/// A shim in front of podman that appends its subcommand to `calls`.
fn shim(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("cli-calls");
    let shim = dir.join("podman-shim");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n# the subcommand: the first argument after the --root/--runroot pairs\n\
             a=\"$*\"; echo \"$a\" >> '{}'\nexec podman \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    (shim, calls)
}

/// An agent whose `[podman].cli` is the counting shim.
fn agent(podman: &PrivatePodman) -> (Agent, PathBuf) {
    let agent = Agent::new(podman, "[reconcile]\ninterval = \"1h\"\n");
    let (shim, calls) = shim(agent.path());
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let config = config.replacen(
        "cli = [\"podman\"",
        &format!("cli = [{:?}", shim.display().to_string()),
        1,
    );
    assert!(config.contains("podman-shim"), "{config}");
    std::fs::write(&agent.config, config).unwrap();
    for n in NAMES {
        agent.apply(
            &format!("{n}.toml"),
            &format!("name = \"{n}\"\n[[components]]\nname = \"{n}\"\nimage = \"{IMAGE}\"\n"),
        );
    }
    (agent, calls)
}

/// (`ps` calls, `rm` calls) the shim saw.
fn counts(calls: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(calls).unwrap_or_default();
    let sub = |l: &str, s: &str| l.split_whitespace().any(|w| w == s);
    (
        text.lines().filter(|l| sub(l, "ps")).count(),
        text.lines().filter(|l| sub(l, "rm")).count(),
    )
}

fn all_running(podman: &PrivatePodman) -> bool {
    NAMES.iter().all(|n| podman.running(n))
}

#[test]
fn once_frees_every_held_name_of_a_pass_with_one_ps_and_one_rm() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let (agent, calls) = agent(&podman);
    agent.ok(&["--once"]);
    assert!(all_running(&podman));
    assert_eq!(counts(&calls), (0, 0), "no CLI call without a loss");
    podman.lose_database();
    let r = agent.ok(&["--once"]);
    assert!(all_running(&podman), "{r}");
    assert_eq!(
        counts(&calls),
        (1, 1),
        "8 held names, concurrency 4: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn the_daemon_frees_every_held_name_of_a_pass_with_one_ps_and_one_rm() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let (agent, calls) = agent(&podman);
    let d = agent.start_daemon(&[]);
    wait_for("all run", Duration::from_secs(30), || all_running(&podman));
    podman.lose_database();
    wait_for(
        "all run again after the loss",
        Duration::from_secs(60),
        || all_running(&podman),
    );
    assert_eq!(
        counts(&calls),
        (1, 1),
        "8 held names, concurrency 4: {}\n{}",
        std::fs::read_to_string(&calls).unwrap_or_default(),
        d.log()
    );
}

/// A removal under the daemon is repaired through the API alone: the agent learns of it
/// early (the process's exit, the `remove` event) and may find the name still held while
/// podman finishes the removal; it waits for that (a few short retries of the create),
/// never taking it for a name held by storage after a database loss (the CLI remedy).
#[test]
fn removals_under_the_daemon_never_run_the_cli() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let (agent, calls) = agent(&podman);
    let _d = agent.start_daemon(&[]);
    wait_for("all running", Duration::from_secs(60), || {
        all_running(&podman)
    });
    for i in 0..20 {
        let name = NAMES[i % NAMES.len()];
        let before = agentkit::container_id(&podman, name);
        podman.podman_ok(&["rm", "-f", "-t", "0", name]);
        wait_for(
            &format!("removal {i}: {name} back"),
            Duration::from_secs(20),
            || podman.running(name) && agentkit::container_id(&podman, name) != before,
        );
    }
    assert_eq!(counts(&calls), (0, 0), "CLI calls for 20 removals");
}
