//! Issue 13 §7 against a real, private podman 4.3 and a private registry on loopback
//! (Debian's `docker-registry`): `pull = "missing"` brings a removed image back (by tag
//! and by digest) and the component up; `[podman] pull` defaults to "never"; the registry
//! down is `image-missing` with the registry's reason while the other components are
//! unaffected, and it recovers when the registry is back; podman's storage lost (as
//! `podman system reset` loses it, images included) is recovered by pulling. Pulls are
//! work of their own: a slow pull (through a throttling loopback proxy of the test's own)
//! never holds back a component whose image is local, two components of one image pull
//! it once, `status` shows `pulling` with the progress meanwhile, `--once` gives a pull up
//! at its `--timeout`, SIGTERM during a pull exits at once, and podman SIGSTOPped in the
//! middle of a pull holds neither the watchdog nor, once it answers, the pull or a repair.

mod agentkit;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit::{summary, Agent, NotifySocket};
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

/// A loopback TCP proxy in front of the registry that passes the registry's answers at
/// `rate` bytes a second per connection (the client's requests at full speed), and counts
/// the bytes it passed. Dropping it closes every connection.
struct Throttle {
    port: u16,
    relayed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Throttle {
    fn start(upstream: u16, rate: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let relayed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (relayed2, stop2, open2) = (relayed.clone(), stop.clone(), open.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut o = open2.lock().unwrap();
                    o.push(down.try_clone().unwrap());
                    o.push(up.try_clone().unwrap());
                }
                let (mut from, mut to) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
                let (mut from, mut to, relayed) = (up, down, relayed2.clone());
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let mut sent = 0u64;
                    let mut buf = [0u8; 16384];
                    loop {
                        let k = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => k,
                        };
                        if to.write_all(&buf[..k]).is_err() {
                            break;
                        }
                        sent += k as u64;
                        relayed.fetch_add(k as u64, Ordering::Relaxed);
                        // The pace: `sent` bytes are due at sent / rate seconds.
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(t.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                });
            }
        });
        Throttle {
            port,
            relayed,
            stop,
            open,
        }
    }

    fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Bytes of random data in the big image: one incompressible layer of about this size.
const BIG: u64 = 24_000_000;

/// A private podman that trusts the registry and the proxies on these ports (plain
/// HTTP), with `LOCAL` imported and a big image (busybox and [`BIG`] random bytes)
/// pushed to the registry as `big:1` and removed from the store.
fn podman_with_big_image(registry: &Registry, proxies: &[u16]) -> PrivatePodman {
    let mut podman = PrivatePodman::start();
    let mut conf = String::new();
    for port in std::iter::once(registry.port).chain(proxies.iter().copied()) {
        conf.push_str(&format!(
            "[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"
        ));
    }
    std::fs::write(podman.registries_conf(), conf).unwrap();
    podman.stop_service();
    podman.start_service();
    podman.import_busybox(LOCAL);
    let rootfs = podman.dir().join("big-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut big = std::fs::File::create(rootfs.join("big.bin")).unwrap();
    std::io::copy(&mut (&mut random).take(BIG), &mut big).unwrap();
    drop(big);
    let tar = podman.dir().join("big.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar of the big image");
    std::fs::remove_dir_all(&rootfs).unwrap();
    podman.podman_ok(&[
        "import",
        "--quiet",
        "--change",
        r#"CMD ["sleep","infinity"]"#,
        tar.to_str().unwrap(),
        "localhost/big:1",
    ]);
    std::fs::remove_file(&tar).unwrap();
    podman.podman_ok(&[
        "push",
        "--tls-verify=false",
        "localhost/big:1",
        &registry.image("big:1"),
    ]);
    podman.podman_ok(&["rmi", "-f", "localhost/big:1"]);
    podman
}

fn slow_service(image: &str) -> String {
    format!(
        r#"
name = "slow"

[[components]]
name = "big1"
image = "{image}"
pull = "missing"
cmd = ["sleep", "1000"]

[[components]]
name = "big2"
image = "{image}"
pull = "missing"
cmd = ["sleep", "1000"]

[[components]]
name = "local"
image = "{LOCAL}"
cmd = ["sleep", "1000"]
"#
    )
}

/// `status slow --json`'s row of `component`.
fn status_row(agent: &Agent, component: &str) -> serde_json::Value {
    let r = agent.run(&["status", "slow", "--json"]);
    let doc: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {r}"));
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == component)
        .cloned()
        .unwrap_or_else(|| panic!("no {component} in {r}"))
}

#[test]
fn a_slow_pull_holds_no_other_component_back_pulls_once_and_shows_its_progress() {
    let registry = Registry::start();
    // 24 MB at 3 MB/s: about 8 s of pulling.
    let throttle = Throttle::start(registry.port, 3_000_000);
    let podman = podman_with_big_image(&registry, &[throttle.port]);
    let image = throttle.image("big:1");
    // One bring-up slot: a pull that took it would hold `local` (planned last) back.
    let agent = Agent::new(&podman, "[reconcile]\nconcurrency = 1\n");
    agent.apply("slow.toml", &slow_service(&image));

    let daemon = agent.start_daemon(&[]);
    let t = Instant::now();
    common::wait_for("slow/local running", Duration::from_secs(20), || {
        podman.running("slow-local")
    });
    let local_up = t.elapsed();
    let relayed = throttle.relayed();
    assert!(
        relayed < BIG / 2,
        "the local component came up after {local_up:?}, with {relayed} bytes of the pull passed: \
         it waited for the pull\n{}",
        daemon.log()
    );
    // `status` shows both pulled components pulling, with the pull's progress.
    let mut seen = None;
    common::poll_until(Duration::from_secs(20), || {
        let (a, b) = (status_row(&agent, "big1"), status_row(&agent, "big2"));
        let shown = a["last_error"].as_str().unwrap_or_default().to_string();
        let pulling = a["last_pass_state"] == "pulling"
            && b["last_pass_state"] == "pulling"
            && a["actual"] == "pulling"
            // Podman's step, the layer and the bytes so far: `Downloading 7a1a7fc827a3
            // 3.0MB/25.1MB`.
            && shown.starts_with(&format!("pulling {image}: Downloading "))
            && shown.contains("MB/");
        if pulling {
            seen = Some(shown);
        }
        pulling
    });
    let shown = seen.unwrap_or_else(|| {
        panic!(
            "status never showed pulling with progress: {}\n{}",
            status_row(&agent, "big1"),
            daemon.log()
        )
    });
    assert!(
        throttle.relayed() < BIG,
        "seen only after the pull: {shown}"
    );
    let text = agent.run(&["status", "slow"]);
    assert!(
        text.stdout.contains("pulling") && text.stdout.contains("2 pulling"),
        "{text}"
    );
    common::wait_for(
        "both pulled components running",
        Duration::from_secs(90),
        || podman.running("slow-big1") && podman.running("slow-big2"),
    );
    // One pull for the two: one layer's bytes, not two.
    let relayed = throttle.relayed();
    assert!(
        relayed > BIG && relayed < BIG * 3 / 2,
        "{relayed} bytes passed for an image of {BIG}"
    );
    let log = daemon.log();
    assert_eq!(log.matches("pulled the image").count(), 1, "{log}");
    assert!(
        status_row(&agent, "big1")["last_error"].is_null(),
        "{}",
        status_row(&agent, "big1")
    );
    drop(daemon);
}

#[test]
fn once_gives_a_pull_up_at_its_timeout_and_sigterm_during_a_pull_exits_at_once() {
    let registry = Registry::start();
    // 100 kB/s: the 24 MB image would take 4 minutes.
    let throttle = Throttle::start(registry.port, 100_000);
    let podman = podman_with_big_image(&registry, &[throttle.port]);
    let image = throttle.image("big:1");
    let agent = Agent::new(&podman, "");
    agent.apply("slow.toml", &slow_service(&image));

    let t = Instant::now();
    let r = agent.run(&["--once", "--timeout", "4s"]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}\n{r}");
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 2, skipped 0",
        "{r}"
    );
    assert!(podman.running("slow-local"), "{r}");
    assert!(
        r.stdout.contains(&format!(
            "failed slow/big1 (slow-big1): still pulling {image}"
        )) && r.stdout.contains("(--timeout ran out)"),
        "{r}"
    );

    // The daemon, SIGTERMed in the middle of the pull: out within its drain limit (the
    // pull is dropped at once).
    let mut daemon = agent.start_daemon(&[]);
    common::wait_for("pulling in the status", Duration::from_secs(20), || {
        status_row(&agent, "big1")["last_pass_state"] == "pulling"
    });
    let (code, took) = daemon.terminate(Duration::from_secs(12));
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(3), "{took:?}\n{}", daemon.log());
    assert!(!podman.running("slow-big1"));
}

#[test]
fn podman_stopped_in_the_middle_of_a_pull_holds_neither_the_watchdog_nor_the_rest() {
    let registry = Registry::start();
    // 24 MB at 3 MB/s: about 8 s of pulling, with podman frozen for 8 s of it.
    let throttle = Throttle::start(registry.port, 3_000_000);
    let podman = podman_with_big_image(&registry, &[throttle.port]);
    let image = throttle.image("big:1");
    let agent = Agent::new(&podman, "");
    agent.apply("slow.toml", &slow_service(&image));
    let watchdog = Duration::from_secs(2);
    let mut n = NotifySocket::bind(agent.path());
    let daemon = agent.start_daemon(&[
        ("NOTIFY_SOCKET", n.path.to_str().unwrap()),
        ("WATCHDOG_USEC", &watchdog.as_micros().to_string()),
    ]);
    assert!(
        n.until("READY=1", Duration::from_secs(20)),
        "{:?}",
        n.messages()
    );
    common::wait_for("slow/local running", Duration::from_secs(20), || {
        podman.running("slow-local")
    });
    common::wait_for("the pull under way", Duration::from_secs(20), || {
        throttle.relayed() > 1_000_000
    });

    let mut frozen = podman.freeze();
    let stopped_at = Instant::now();
    let relayed = throttle.relayed();
    // Behind the frozen service's back (the CLI needs none): the local one removed.
    podman.podman_ok(&["rm", "-f", "-t", "0", "slow-local"]);
    // The fault's length, not a synchronisation.
    std::thread::sleep(Duration::from_secs(8));
    let thawed = frozen.thaw();
    // Watchdog pings every second while podman hangs (the daemon is only waiting), and
    // the pull stood still.
    let pings = n.count("WATCHDOG=1", stopped_at + watchdog) - n.count("WATCHDOG=1", thawed);
    assert!(
        pings >= 4,
        "{pings} pings in 6 s of a frozen podman\n{:?}",
        n.messages()
    );
    assert!(
        throttle.relayed() < relayed + 2_000_000,
        "podman read {} bytes while frozen",
        throttle.relayed() - relayed
    );

    common::wait_for(
        "slow/local repaired after podman answers",
        Duration::from_secs(15),
        || podman.running("slow-local"),
    );
    common::wait_for(
        "both pulled components running",
        Duration::from_secs(90),
        || podman.running("slow-big1") && podman.running("slow-big2"),
    );
    let log = daemon.log();
    assert!(log.contains("pulled the image"), "{log}");
    assert!(
        status_row(&agent, "big1")["last_error"].is_null(),
        "{}",
        status_row(&agent, "big1")
    );
    drop(daemon);
}
