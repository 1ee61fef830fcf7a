//! The test harness itself: a private podman, the busybox image, and the
//! database-loss recipe that later tests rely on.

mod common;

use std::time::Instant;

use common::PrivatePodman;

const IMAGE: &str = "localhost/busybox:latest";

#[test]
fn private_podman_and_database_loss() {
    let t = Instant::now();
    let mut podman = PrivatePodman::start();
    eprintln!("service up in {:?}", t.elapsed());

    let (status, body) = podman.api("GET", "/v1.41/containers/json?all=true");
    assert_eq!((status, body.trim()), (200, "[]"));

    let t = Instant::now();
    podman.import_busybox(IMAGE);
    eprintln!("busybox imported in {:?}", t.elapsed());

    podman.podman_ok(&["run", "-d", "--name", "smoke", IMAGE]);
    assert!(podman.running("smoke"), "smoke should be running");
    assert!(podman.inspect("no-such-container").is_none());

    let t = Instant::now();
    podman.lose_database();
    eprintln!("database lost and service back in {:?}", t.elapsed());

    let listed = podman.podman_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(listed.is_empty(), "podman ps -a still lists: {listed}");
    let (status, body) = podman.api("GET", "/v1.41/containers/json?all=true");
    assert_eq!((status, body.trim()), (200, "[]"));
    assert!(!podman.running("smoke"));

    let create = podman.podman(&["create", "--name", "smoke", IMAGE]);
    let stderr = String::from_utf8_lossy(&create.stderr);
    assert!(
        !create.status.success() && stderr.contains("already in use"),
        "create of a storage-held name should fail with 'already in use', got {}: {stderr}",
        create.status
    );

    podman.podman_ok(&["rm", "--force", "smoke"]);
    podman.podman_ok(&["create", "--name", "smoke", IMAGE]);
    assert!(podman.inspect("smoke").is_some());
}
