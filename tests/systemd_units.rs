//! The systemd units: `systemd-analyze verify` clean (when systemd-analyze is present),
//! and the keys the daemon's contract relies on. `scripts/systemd-guest-test` runs them
//! under a real systemd; these are the fast checks of the same files.

use std::process::Command;

fn unit(name: &str) -> String {
    std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace())
        .collect()
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

#[test]
fn the_daemon_unit_has_the_contracted_keys() {
    let u = unit("mcp-agent.service");
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "Wants=podman.socket network-online.target",
        "After=podman.socket podman.service network-online.target",
        "StateDirectory=mcp-agent",
        "ConfigurationDirectory=mcp-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/mcp-agent --config /etc/mcp-agent/mcp-agent.toml run",
    ] {
        assert!(has(&u, line), "mcp-agent.service lacks {line:?}");
    }
    assert!(u.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(u
        .lines()
        .any(|l| l.starts_with("ReadWritePaths=") && l.contains("/run/podman")));
    let r = unit("mcp-agent-recover.service");
    assert!(has(&r, "Type=oneshot"));
    assert!(r
        .lines()
        .any(|l| l.starts_with("ExecStart=") && l.ends_with("--once")));
}

#[test]
fn reload_validates_the_config_before_signalling() {
    for u in [unit("mcp-agent.service"), unit("user/mcp-agent.service")] {
        let reloads: Vec<&str> = u.lines().filter(|l| l.starts_with("ExecReload=")).collect();
        assert_eq!(reloads.len(), 2, "{reloads:?}");
        assert!(reloads[0].ends_with(" check-config"), "{reloads:?}");
        assert_eq!(reloads[1], "ExecReload=/bin/kill -HUP $MAINPID");
    }
}

#[test]
fn every_required_writable_path_is_made_by_the_tmpfiles_file() {
    let tmpfiles = unit("tmpfiles.d/mcp-agent.conf");
    let made: Vec<&str> = tmpfiles
        .lines()
        .filter(|l| l.starts_with("d "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for name in ["mcp-agent.service", "mcp-agent-recover.service"] {
        let u = unit(name);
        let paths = values(&u, "ReadWritePaths");
        assert!(
            paths.contains(&"/etc/containers/networks"),
            "{name}: {paths:?}"
        );
        for p in paths {
            // "-" marks an optional path: a missing one is skipped, not a 226/NAMESPACE.
            if !p.starts_with('-') {
                assert!(
                    made.contains(&p),
                    "{name}: {p} is not in the tmpfiles.d file"
                );
            }
        }
        assert!(
            u.contains("systemd-tmpfiles-setup.service"),
            "{name}: not ordered after tmpfiles"
        );
        // The podman CLI calls seccomp(2); SIGSYS without it.
        assert!(
            values(&u, "SystemCallFilter").contains(&"seccomp"),
            "{name}"
        );
        // openat2 must work for containers/storage (see the unit's comment).
        assert!(has(&u, "RestrictSUIDSGID=no"), "{name}");
    }
}

#[test]
fn the_user_unit_runs_with_the_users_defaults() {
    let u = unit("user/mcp-agent.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/mcp-agent run",
        "StateDirectory=mcp-agent",
        "Wants=podman.socket",
        "WantedBy=default.target",
    ] {
        assert!(has(&u, line), "user/mcp-agent.service lacks {line:?}");
    }
    // No paths of root's: they follow the user (src/config.rs Dirs).
    assert!(!u.contains("/var/lib/mcp-agent") && !u.contains("/run/podman"));
    // newuidmap is setuid: NoNewPrivileges would break rootless podman's CLI.
    assert!(!has(&u, "NoNewPrivileges=yes"));
}

#[test]
fn the_deb_ships_the_units_the_tmpfiles_file_and_the_config() {
    let cargo =
        std::fs::read_to_string(format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let deb = &cargo[cargo.find("[package.metadata.deb]").expect("deb metadata")..];
    for asset in [
        "[\"target/release/mcp-agent\", \"usr/bin/\", \"755\"]",
        "[\"config/mcp-agent.toml\", \"etc/mcp-agent/mcp-agent.toml\", \"644\"]",
        "[\"systemd/user/mcp-agent.service\", \"usr/lib/systemd/user/mcp-agent.service\", \"644\"]",
        "[\"systemd/tmpfiles.d/mcp-agent.conf\", \"usr/lib/tmpfiles.d/mcp-agent.conf\", \"644\"]",
        "[\"README.md\", \"usr/share/doc/mcp-agent/README.md\", \"644\"]",
    ] {
        assert!(deb.contains(asset), "the .deb lacks {asset}");
    }
    for unit in ["mcp-agent", "mcp-agent-recover"] {
        assert!(deb.contains(&format!("unit-name = \"{unit}\"")), "{unit}");
    }
    // The shipped config leaves the user-dependent paths to the defaults.
    let conf = std::fs::read_to_string(format!(
        "{}/config/mcp-agent.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for key in ["path", "socket", "admin_socket", "cert_dir"] {
        assert!(
            !conf
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
            "config/mcp-agent.toml sets {key}: a rootless agent would use root's"
        );
    }
}

#[test]
fn systemd_analyze_verify_is_clean() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: verified the keys only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["mcp-agent.service", "mcp-agent-recover.service"] {
        // verify checks that ExecStart exists: point it at the binary under test.
        let text = unit(name).replace("/usr/bin/mcp-agent", env!("CARGO_BIN_EXE_mcp-agent"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "mcp-agent.service",
            "mcp-agent-recover.service",
        ])
        .current_dir(dir.path())
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("mcp-agent")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}
