//! Security properties: env values (secrets) never reach logs, status or errors; files
//! the agent creates have explicit modes; an unsafe registry is refused; no shell.

mod agentkit;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agentkit::Agent;
use common::{wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";
const SECRET: &str = "hunter2-4c3f9e";

#[test]
fn env_values_appear_only_in_export() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.apply(
        "s.toml",
        &format!(
            "name = \"s\"\n[[components]]\nname = \"s\"\nimage = \"{IMAGE}\"\nenv = {{ TOKEN = \"{SECRET}\" }}\n\
             [[components]]\nname = \"gone\"\nimage = \"localhost/missing:1\"\nenv = {{ TOKEN = \"{SECRET}\" }}\n"
        ),
    );
    let mut seen = Vec::new();
    let once = agent.run(&["--log-level", "trace", "--once"]);
    seen.push(format!("{once}"));
    for args in [&["status"][..], &["status", "--json"], &["check-config"]] {
        seen.push(format!("{}", agent.run(args)));
    }
    let d = agent.start_daemon_with(&["--log-format", "json", "--log-level", "trace"], &[]);
    wait_for("s runs", Duration::from_secs(20), || podman.running("s"));
    podman.podman_ok(&["rm", "-f", "-t", "0", "s"]);
    wait_for("s back", Duration::from_secs(10), || podman.running("s"));
    wait_for("repair logged", Duration::from_secs(5), || {
        d.log().contains("reconciled")
    });
    seen.push(d.log());
    for text in &seen {
        assert!(!text.contains(SECRET), "a secret leaked:\n{text}");
    }
    // The container does get it, and export prints it (to stdout only).
    let env = podman.inspect("s").unwrap()["Config"]["Env"].to_string();
    assert!(env.contains(SECRET));
    let export = agent.ok(&["export", "s"]);
    assert!(export.stdout.contains(SECRET) && !export.stderr.contains(SECRET));
}

#[test]
fn an_unsafe_registry_is_refused_with_the_reason() {
    let podman = PrivatePodman::start();
    let agent = Agent::new(&podman, "");
    agent.apply(
        "s.toml",
        &format!("name = \"s\"\n[[components]]\nname = \"s\"\nimage = \"{IMAGE}\"\n"),
    );
    let mode = std::fs::metadata(&agent.db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the registry is created 0600");
    for unsafe_mode in [0o620, 0o602] {
        std::fs::set_permissions(&agent.db, std::fs::Permissions::from_mode(unsafe_mode)).unwrap();
        let file = agent.path().join("s.toml");
        for args in [
            &["run"][..],
            &["--once"],
            &["apply", file.to_str().unwrap()],
        ] {
            let r = agent.run(args);
            assert_eq!(r.code, 69, "{args:?} with mode {unsafe_mode:o}: {r}");
            assert!(
                r.stderr.contains("group- or world-writable") && r.stderr.contains("chmod 600"),
                "{r}"
            );
        }
    }
}

/// Every external command is an argv: no shell anywhere in the agent's sources.
#[test]
fn no_shell_is_ever_run() {
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut commands = 0;
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.contains("Command::new(") {
                commands += 1;
                for shell in ["\"sh\"", "\"bash\"", "\"/bin/sh\"", "\"-c\""] {
                    assert!(!line.contains(shell), "{}:{}: {line}", p.display(), i + 1);
                }
            }
            // A `CMD-SHELL` health check is compose's: its line run by the container's
            // own `/bin/sh`, inside the container, by exec through podman's API — never
            // a shell on the host. `src/health/` (which runs no Command) may name it.
            let container_shell = p.components().any(|c| c.as_os_str() == "health");
            assert!(
                container_shell || !line.contains("\"/bin/sh\""),
                "{}:{}: {line}",
                p.display(),
                i + 1
            );
        }
    }
    assert!(commands >= 1, "the podman CLI call should have been found");
}

#[test]
fn writable_key_material_is_refused_with_the_reason() {
    let podman = PrivatePodman::start();
    let agent = Agent::new(
        &podman,
        "[proxy]\nkind = \"caddy\"\nadmin_socket = \"caddy.sock\"\ncert_dir = \"certs\"\n\
         [certs]\nissuer = \"acme\"\ndirectory_url = \"https://127.0.0.1:9/dir\"\n",
    );
    // Only `apply` creates a registry; the daemon and `--once` refuse a missing one.
    agent.apply(
        "s.toml",
        "name = \"s\"\n[[components]]\nname = \"s\"\nimage = \"localhost/x:1\"\n",
    );
    let certs = agent.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let refused = |what: &str| {
        for args in [&["--once"][..], &["run"]] {
            let r = agent.run(args);
            assert_eq!(r.code, 69, "{args:?}: {r}");
            assert!(
                r.stderr.contains(what) && r.stderr.contains("group- or world-writable"),
                "{r}"
            );
        }
    };
    set(&certs, 0o777);
    refused("the certificate directory");
    set(&certs, 0o700);
    let key = certs.join("shop.key");
    std::fs::write(&key, "not really a key").unwrap();
    set(&key, 0o666);
    refused("the private key");
    set(&key, 0o600);
    let account = agent.db.parent().unwrap().join("acme-account.json");
    std::fs::write(&account, "{}").unwrap();
    set(&account, 0o620);
    refused("the ACME account key");
    set(&account, 0o600);
    // All safe: the agent gets past the check (and fails later, on podman/the proxy).
    let r = agent.run(&["--once"]);
    assert!(!r.stderr.contains("writable"), "{r}");
}
