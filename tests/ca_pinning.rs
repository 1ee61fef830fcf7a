//! CA trust as users have it: an ACME server whose certificate is itself in `ca_bundle`
//! (pinning — pebble with its own self-signed certificate, as `openssl req -x509` makes
//! it) is trusted; a server the bundle does not vouch for is refused in words.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::PrivatePebble;
use mcp_agent::certs::acme::Acme;
use mcp_agent::certs::{IssueError, Issuer};

/// A self-signed certificate for localhost and 127.0.0.1 in `dir` (cert.pem, key.pem).
fn self_signed(dir: &Path, cn: &str) -> PathBuf {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("cert.pem")
}

/// Pebble serving a self-signed certificate of its own; returns that certificate.
fn pebble_self_signed() -> (PrivatePebble, PathBuf) {
    let mut pebble =
        PrivatePebble::start_with(common::free_port(), &[("PEBBLE_VA_ALWAYS_VALID", "1")]);
    let dir = pebble.ca_bundle().parent().unwrap().to_path_buf();
    pebble.stop();
    let cert = self_signed(&dir, "pebble-self-signed");
    pebble.start_pebble();
    (pebble, cert)
}

#[test]
fn the_acme_servers_own_self_signed_certificate_as_ca_bundle_is_trusted() {
    let (pebble, cert) = pebble_self_signed();
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("acme-account.json");
    let acme = Acme::new(pebble.directory_url(), vec![], Some(cert), account.clone());
    let e = common::block_on(acme.issue(&["pin.test".to_string()], &mcp_agent::proxy::NoProxy))
        .expect_err("without a proxy the challenge cannot be answered");
    // TLS was trusted: the account exists, and the order went as far as the challenge.
    assert!(matches!(e, IssueError::Proxy(_)), "{e}");
    assert!(account.exists(), "no account was created: {e}");
}

#[test]
fn a_server_the_bundle_does_not_vouch_for_is_refused_in_words() {
    let (pebble, _) = pebble_self_signed();
    let other = tempfile::tempdir().unwrap();
    let unrelated = self_signed(other.path(), "someone-else");
    let dir = tempfile::tempdir().unwrap();
    let acme = Acme::new(
        pebble.directory_url(),
        vec![],
        Some(unrelated),
        dir.path().join("acme-account.json"),
    );
    let e = common::block_on(acme.issue(&["pin.test".to_string()], &mcp_agent::proxy::NoProxy))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("subject \"CN=pebble-self-signed\"")
            && e.contains("is a CA certificate used as the server's own")
            && e.contains("ca_bundle"),
        "{e}"
    );
    assert!(!e.contains("OtherError"), "{e}");
}
