//! The systemd units: `systemd-analyze verify` clean (when systemd-analyze is present),
//! and the keys the daemon's contract relies on.

use std::process::Command;

fn unit(name: &str) -> String {
    std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
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
        let text = unit(name).replace("/usr/local/bin/mcp-agent", env!("CARGO_BIN_EXE_mcp-agent"));
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
