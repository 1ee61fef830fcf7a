//! External volumes (issue 15) against a real, private podman 4.3 and the real binary: a
//! `[volumes.NAME]` with `external = true` is podman's volume, mounted as one (type
//! `volume`), never created by the agent — a missing one makes its component
//! `volume-missing` with the command that makes it, the others come up — and never
//! removed, not by `remove --volumes` either. After podman's database is lost the volume
//! is podman's and gone with it: the component waits for the operator again.

mod agentkit;
mod common;

use std::time::Duration;

use agentkit::{summary, Agent};
use common::{poll_until, wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

const SERVICE: &str = r#"
name = "ext"

[volumes.data]
external = true
name = "ext-data"

[[components]]
name = "app"
image = "localhost/busybox:latest"
volumes = ["data:/data:ro"]

[[components]]
name = "web"
image = "localhost/busybox:latest"
"#;

const REASON: &str = "external volume ext-data does not exist in podman (podman would create it empty); create it: podman volume create ext-data";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

fn volume_exists(podman: &PrivatePodman) -> bool {
    podman
        .podman(&["volume", "exists", "ext-data"])
        .status
        .success()
}

/// Creates podman's volume and puts `text` in its file `f`, through the host path podman
/// gives it.
fn create_volume(podman: &PrivatePodman, text: &str) {
    podman.podman_ok(&["volume", "create", "ext-data"]);
    let mountpoint = podman.podman_ok(&[
        "volume",
        "inspect",
        "ext-data",
        "--format",
        "{{.Mountpoint}}",
    ]);
    std::fs::write(std::path::Path::new(mountpoint.trim()).join("f"), text).unwrap();
}

/// `app`'s `(last_pass_state, last_error)` from `status --json`.
fn state(agent: &Agent) -> (String, String) {
    let st: serde_json::Value =
        serde_json::from_str(&agent.ok(&["status", "ext", "--json"]).stdout).unwrap();
    let c = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "app")
        .unwrap_or_else(|| panic!("no ext/app in {st}"))
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("last_pass_state"), s("last_error"))
}

fn assert_missing(agent: &Agent, podman: &PrivatePodman) {
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("failed") && l.contains("ext/app"))
        .unwrap_or_else(|| panic!("no failed line for ext/app:\n{r}"));
    assert!(line.ends_with(REASON), "{r}");
    assert!(
        r.stdout
            .contains(&format!("ext/app (ext-app): volume-missing: {REASON}\n")),
        "{r}"
    );
    assert!(
        podman.inspect("ext-app").is_none(),
        "no container without its volume"
    );
    assert!(!volume_exists(podman), "the agent created the volume");
    assert!(
        podman.running("ext-web"),
        "the other component is unaffected:\n{r}"
    );
    assert_eq!(
        state(agent),
        ("volume-missing".to_string(), REASON.to_string())
    );
}

#[test]
fn an_external_volume_is_podmans_mounted_as_one_and_never_created_nor_removed() {
    let mut podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let file = agent.service_file("ext.toml", SERVICE);
    agent.ok(&["apply", file.to_str().unwrap()]);

    // Missing: said, with the way to make it; the neighbour comes up. Asked again, the
    // same (no backoff in --once, nothing created meanwhile).
    assert_missing(&agent, &podman);
    assert_missing(&agent, &podman);
    let table = agent.ok(&["status"]).stdout;
    assert!(table.contains(REASON), "{table}");

    // Once podman has it, the next pass brings the component up on it.
    create_volume(&podman, "podman's");
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 1, failed 0, skipped 0",
        "{r}"
    );
    let c = podman.inspect("ext-app").unwrap();
    let mounts = c["Mounts"].as_array().unwrap();
    let m = mounts
        .iter()
        .find(|m| m["Destination"] == "/data")
        .unwrap_or_else(|| panic!("no mount at /data: {mounts:?}"));
    assert_eq!(m["Type"], "volume", "{m}");
    assert_eq!(m["Name"], "ext-data", "{m}");
    assert_eq!(m["RW"], false, "{m}");
    assert_eq!(
        podman.podman_ok(&["exec", "ext-app", "cat", "/data/f"]),
        "podman's"
    );
    assert_eq!(state(&agent).0, "running");
    // No directory of the agent's was made for it.
    assert!(!agent.path().join("state/volumes/ext").exists());

    // export | apply round-trips: the same service, nothing recreated.
    let exported = agent.ok(&["export", "ext"]).stdout;
    assert!(
        exported.contains("[volumes.data]\nexternal = true\nname = \"ext-data\"\n"),
        "{exported}"
    );
    let again = agent.service_file("again.toml", &exported);
    let r = agent.ok(&["apply", again.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged ext", "{r}");

    // Podman's database lost: the volume is podman's and gone with it (from podman's
    // view); the component waits for the operator again, the neighbour is recreated.
    podman.lose_database();
    assert!(!volume_exists(&podman), "podman still has the volume");
    assert_missing(&agent, &podman);
    create_volume(&podman, "made again");
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        podman.podman_ok(&["exec", "ext-app", "cat", "/data/f"]),
        "made again"
    );

    // remove --volumes leaves podman's volume, and says so.
    let r = agent.ok(&["remove", "ext", "--volumes"]);
    assert!(
        r.stdout.contains("external volumes kept, podman's (the agent never removes them, --volumes or not; podman volume rm deletes them): ext-data"),
        "{r}"
    );
    agent.ok(&["--once"]);
    assert!(podman.inspect("ext-app").is_none());
    assert!(podman.inspect("ext-web").is_none());
    assert!(
        volume_exists(&podman),
        "remove --volumes removed podman's volume"
    );
    podman.podman_ok(&["run", "--rm", "-v", "ext-data:/d", IMAGE, "cat", "/d/f"]);
}

#[test]
fn the_daemon_brings_the_component_up_once_the_volume_is_created_without_backoff() {
    let podman = podman();
    // Backoff that would hold a retry for an hour: a volume-missing component is not
    // backed off, it is looked at again at each pass (here every second).
    let agent = Agent::new(
        &podman,
        "[reconcile]\ninterval = \"1s\"\nbackoff_initial = \"1h\"\nbackoff_max = \"1h\"\n",
    );
    agent.apply("ext.toml", SERVICE);
    let d = agent.start_daemon(&[]);
    wait_for("ext/web up", Duration::from_secs(20), || {
        podman.running("ext-web")
    });
    poll_until(Duration::from_secs(20), || {
        state(&agent).0 == "volume-missing"
    })
    .unwrap_or_else(|| panic!("not volume-missing: {:?}\n{}", state(&agent), d.log()));
    assert!(!volume_exists(&podman));

    create_volume(&podman, "later");
    wait_for(
        "ext-app runs once its volume is there",
        Duration::from_secs(20),
        || podman.running("ext-app"),
    );
    assert_eq!(
        podman.podman_ok(&["exec", "ext-app", "cat", "/data/f"]),
        "later"
    );
    poll_until(Duration::from_secs(10), || state(&agent).0 == "running")
        .expect("status says running");
    drop(d);
}
