//! Issue 13 §7 against a real, private podman 4.3 and a private registry on loopback
//! (Debian's `docker-registry`): `pull = "missing"` brings a removed image back (by tag
//! and by digest) and the component up; `[podman] pull` defaults to "never"; the registry
//! down is `image-missing` with the registry's reason while the other components are
//! unaffected, and it recovers when the registry is back; podman's storage lost (as
//! `podman system reset` loses it, images included) is recovered by pulling.

mod agentkit;
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentkit::{summary, Agent};
use common::{free_port, PrivatePodman};

const LOCAL: &str = "localhost/busybox:latest";

/// `docker-registry serve` on 127.0.0.1, storage in a temporary directory.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry {
            port: free_port(),
            dir,
            child: None,
        };
        r.up();
        r
    }

    fn config(&self) -> PathBuf {
        let p = self.dir.path().join("config.yml");
        std::fs::write(
            &p,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{}\n",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .unwrap();
        p
    }

    fn up(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/install-deps installs it)");
        self.child = Some(child);
        common::wait_for("the registry answers /v2/", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}

fn service(registry: &Registry, digest: &str) -> String {
    let tagged = registry.image("busybox:latest");
    let pinned = format!("{}@{digest}", registry.image("busybox"));
    format!(
        r#"
name = "pull"

[[components]]
name = "tagged"
image = "{tagged}"
pull = "missing"
cmd = ["sleep", "1000"]

[[components]]
name = "pinned"
image = "{pinned}"
pull = "missing"
cmd = ["sleep", "1000"]

[[components]]
name = "local"
image = "{LOCAL}"
cmd = ["sleep", "1000"]
"#
    )
}

#[test]
fn missing_images_are_pulled_and_a_registry_down_is_image_missing_with_its_reason() {
    let mut registry = Registry::start();
    let mut podman = PrivatePodman::start();
    std::fs::write(
        podman.registries_conf(),
        format!(
            "[[registry]]\nlocation = \"127.0.0.1:{}\"\ninsecure = true\n",
            registry.port
        ),
    )
    .unwrap();
    podman.stop_service();
    podman.start_service();
    podman.import_busybox(LOCAL);
    let digestfile = podman.dir().join("digest");
    podman.podman_ok(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digestfile.to_str().unwrap(),
        LOCAL,
        &registry.image("busybox:latest"),
    ]);
    let digest = std::fs::read_to_string(&digestfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let agent = Agent::new(&podman, "");
    agent.apply("pull.toml", &service(&registry, &digest));

    // Never pulled by default: with the image gone, the default ("never") is skipped.
    podman.podman_ok(&["rmi", "-f", LOCAL]);
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 1",
        "{r}"
    );
    assert!(r.stdout.contains("skipped pull/local (pull-local): image localhost/busybox:latest is not in the local image store"), "{r}");
    assert!(podman.running("pull-tagged") && podman.running("pull-pinned"));
    assert!(r.stderr.contains("pulling"), "progress in the log: {r}");

    // Storage lost (images too) and the registry down: image-missing with the reason;
    // the component whose image is local is unaffected.
    podman.lose_storage();
    podman.import_busybox(LOCAL);
    registry.down();
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 2",
        "{r}"
    );
    assert!(
        r.stdout
            .contains("pull/tagged (pull-tagged): image-missing: image ")
            && r.stdout.contains("its pull failed")
            && r.stdout.contains("connection refused"),
        "{r}"
    );
    assert!(podman.running("pull-local"));
    let status = agent.run(&["status", "pull"]);
    assert!(status.stdout.contains("its pull failed"), "{status}");

    // The registry back: pulled, up.
    registry.up();
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 1, failed 0, skipped 0",
        "{r}"
    );
    let pinned = podman.inspect("pull-pinned").unwrap();
    assert_eq!(
        pinned["ImageName"],
        format!("{}@{digest}", registry.image("busybox"))
    );
}
