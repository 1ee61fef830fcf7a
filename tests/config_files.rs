//! Issue 13 §3 against a real, private podman 4.3: env files and secrets. Their contents
//! reach the container (env, a read-only bind mount), an edited env file and a rotated
//! secret recreate only their component, a missing file is `config-missing` (exit 1,
//! naming the file; the container left as it is) until it is back, and no value ever
//! shows in the output, the log, `status` or `export`.

mod agentkit;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agentkit::{summary, Agent};
use common::PrivatePodman;

const IMAGE: &str = "localhost/busybox:latest";

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn id(podman: &PrivatePodman, name: &str) -> String {
    podman.inspect(name).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn env_files_and_secrets_reach_the_container_and_their_edits_recreate_only_their_component() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    let etc = agent.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let (env1, env2, pw) = (etc.join("app.env"), etc.join("more.env"), etc.join("pw"));
    write(
        &env1,
        "# the app\nDB_HOST=db\nexport GREETING=\"hello\\tworld\"  # quoted\nOVER=file\n",
        0o644,
    );
    write(&env2, "LEVEL='from-second-file'\n", 0o644);
    write(&pw, "s3cr3t-one", 0o600);
    agent.apply(
        "cfg.toml",
        &format!(
            r#"
name = "cfg"

[[components]]
name = "app"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
env_file = ["{}", "{}"]
env = {{ OVER = "component" }}

[[components]]
name = "db"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
secrets = [{{ source = "{}", target = "/run/secrets/db_password" }}]

[[components]]
name = "plain"
image = "{IMAGE}"
cmd = ["sleep", "1000"]
"#,
            env1.display(),
            env2.display(),
            pw.display()
        ),
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 3, already running 0, failed 0, skipped 0",
        "{r}"
    );
    let env = podman.podman_ok(&["exec", "cfg-app", "env"]);
    for want in [
        "DB_HOST=db",
        "GREETING=hello\tworld",
        "LEVEL=from-second-file",
        "OVER=component",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    let inside = podman.podman_ok(&[
        "exec",
        "cfg-db",
        "sh",
        "-c",
        "cat /run/secrets/db_password; echo; grep ' /run/secrets/db_password ' /proc/mounts; \
         (echo x > /run/secrets/db_password) 2>/dev/null && echo writable; true",
    ]);
    assert!(inside.starts_with("s3cr3t-one\n"), "{inside}");
    let mount = inside.lines().nth(1).unwrap_or_default();
    assert!(
        mount
            .split(' ')
            .nth(3)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "ro"),
        "mounted read-only: {inside}"
    );
    assert!(!inside.contains("writable"), "{inside}");

    // export prints the paths, never the contents; export | apply changes nothing.
    let exported = agent.ok(&["export", "cfg"]).stdout;
    assert!(exported.contains(&env1.display().to_string()), "{exported}");
    assert!(exported.contains("/run/secrets/db_password"), "{exported}");
    for value in ["hello", "from-second-file", "s3cr3t"] {
        assert!(!exported.contains(value), "{value} in:\n{exported}");
    }
    let back = agent.service_file("back.toml", &exported);
    let r = agent.ok(&["apply", back.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged cfg", "{r}");

    // An edited env file recreates its component, and only it.
    let ids = |p: &PrivatePodman| ["cfg-app", "cfg-db", "cfg-plain"].map(|n| id(p, n));
    let before = ids(&podman);
    write(&env2, "LEVEL=edited\n", 0o644);
    let r = agent.ok(&["--once"]);
    assert!(r.stdout.contains("recreate cfg/app"), "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 2, failed 0, skipped 0",
        "{r}"
    );
    let after = ids(&podman);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1..], before[1..]);
    let env = podman.podman_ok(&["exec", "cfg-app", "env"]);
    assert!(env.lines().any(|l| l == "LEVEL=edited"), "{env}");
    // A comment is no change of what the container gets.
    write(&env2, "# a comment\nLEVEL=edited\n", 0o644);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 3, failed 0, skipped 0",
        "{r}"
    );

    // A rotated secret recreates its component, and only it.
    let before = ids(&podman);
    write(&pw, "s3cr3t-two", 0o600);
    let r = agent.ok(&["--once"]);
    assert!(r.stdout.contains("recreate cfg/db"), "{r}");
    let after = ids(&podman);
    assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));
    assert_ne!(after[1], before[1]);
    let inside = podman.podman_ok(&["exec", "cfg-db", "cat", "/run/secrets/db_password"]);
    assert_eq!(inside, "s3cr3t-two");

    // A missing env file: config-missing, naming the file; the container is left running.
    let before = ids(&podman);
    std::fs::remove_file(&env1).unwrap();
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains(&format!(
            "skip     cfg/app (cfg-app): config-missing: env_file {}: No such file",
            env1.display()
        )),
        "{r}"
    );
    assert_eq!(
        summary(&r),
        "recovered 0, already running 2, failed 1, skipped 0",
        "{r}"
    );
    assert_eq!(ids(&podman), before);
    let status = agent.run(&["status", "cfg"]);
    assert!(status.stdout.contains("config-missing"), "{status}");
    assert!(status.stdout.contains("app.env"), "{status}");
    // A secret readable by others is refused at the pass too, with the reason.
    write(
        &env1,
        "DB_HOST=db\nexport GREETING=\"hello\\tworld\"\nOVER=file\n",
        0o644,
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("cfg/db (cfg-db): config-missing: secret")
            && r.stdout
                .contains("readable by its group and others (mode 0644)"),
        "{r}"
    );
    // Back as they were: nothing to recreate.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 3, failed 0, skipped 0",
        "{r}"
    );
    assert_eq!(ids(&podman), before);
    let all = agent.ok(&["status", "--json"]);
    for value in ["hello", "from-second-file", "edited", "s3cr3t"] {
        assert!(!all.stdout.contains(value), "{value} in status: {all}");
    }
}

#[test]
fn a_component_whose_file_is_missing_from_the_start_is_not_created_until_it_is_there() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    let env = agent.path().join("late.env");
    agent.apply(
        "late.toml",
        &format!(
            "name = \"late\"\n[[components]]\nname = \"late\"\nimage = \"{IMAGE}\"\n\
             cmd = [\"sleep\", \"1000\"]\nenv_file = [\"{}\"]\n",
            env.display()
        ),
    );
    let r = agent.run(&["--once", "--log-level", "debug"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("config-missing: env_file"), "{r}");
    assert!(
        r.stdout.contains("failed late/late (late): env_file"),
        "{r}"
    );
    assert!(podman.inspect("late").is_none());
    write(&env, "TOKEN=\"tok-value\"\n", 0o600);
    let r = agent.ok(&["--once", "--log-level", "debug"]);
    assert!(r.stdout.contains("create   late/late"), "{r}");
    assert!(
        !r.stdout.contains("tok-value") && !r.stderr.contains("tok-value"),
        "{r}"
    );
    // A line that is not KEY=VALUE: the line is named, never its text.
    write(&env, "TOKEN=ok\ntok-value-without-a-key\n", 0o600);
    let r = agent.run(&["--once", "--log-level", "debug"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("line 2: expected KEY=VALUE"), "{r}");
    assert!(
        !r.stdout.contains("tok-value") && !r.stderr.contains("tok-value"),
        "{r}"
    );
    assert!(podman.running("late"));
}

/// The daemon reads the files at each resync and at SIGHUP: an edit is a recreate of its
/// component alone, without a registry change or a podman event.
#[test]
fn the_daemon_rereads_the_files_at_sighup() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    // No resync within the test: only the SIGHUP makes the daemon look again.
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let env = agent.path().join("d.env");
    write(&env, "V=1\n", 0o644);
    agent.apply(
        "d.toml",
        &format!(
            "name = \"d\"\n[[components]]\nname = \"app\"\nimage = \"{IMAGE}\"\n\
             cmd = [\"sleep\", \"1000\"]\nenv_file = [\"{}\"]\n\n\
             [[components]]\nname = \"other\"\nimage = \"{IMAGE}\"\ncmd = [\"sleep\", \"1000\"]\n",
            env.display()
        ),
    );
    let daemon = agent.start_daemon(&[]);
    common::wait_for("both run", std::time::Duration::from_secs(20), || {
        podman.running("d-app") && podman.running("d-other")
    });
    let (app, other) = (id(&podman, "d-app"), id(&podman, "d-other"));
    write(&env, "V=2\n", 0o644);
    daemon.signal("HUP");
    common::wait_for(
        "d-app recreated",
        std::time::Duration::from_secs(15),
        // One inspect: between two the old container may be gone and the new one not
        // made yet.
        || {
            podman.inspect("d-app").is_some_and(|v| {
                v["State"]["Running"].as_bool() == Some(true) && v["Id"].as_str() != Some(&app)
            })
        },
    );
    assert_eq!(id(&podman, "d-other"), other);
    let e = podman.podman_ok(&["exec", "d-app", "env"]);
    assert!(e.lines().any(|l| l == "V=2"), "{e}");
}
