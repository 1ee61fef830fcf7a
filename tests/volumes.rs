//! Bind volumes against a real, private podman and the real binary: a missing host path is
//! an error naming it (podman would create it empty), never created behind the operator's
//! back; `create_host_path = true` creates it owned by the component's user.

mod agentkit;
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use agentkit::Agent;
use common::{poll_until, wait_for, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

fn service(user: Option<&str>, volume: &str) -> String {
    let user = user.map_or(String::new(), |u| format!("user = \"{u}\"\n"));
    format!(
        "name = \"v\"\n[[components]]\nname = \"v\"\nimage = \"{IMAGE}\"\n{user}volumes = [{volume}]\n\
         [[components]]\nname = \"other\"\nimage = \"{IMAGE}\"\n"
    )
}

fn state(agent: &Agent) -> (String, String) {
    let st: serde_json::Value =
        serde_json::from_str(&agent.ok(&["status", "v", "--json"]).stdout).unwrap();
    let c = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "v")
        .unwrap_or_else(|| panic!("no v/v in {st}"))
        .clone();
    (
        c["last_pass_state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        c["last_error"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_missing_bind_source_fails_the_component_naming_the_path_and_is_never_created() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let data = agent.path().join("data");
    agent.apply(
        "v.toml",
        &service(None, &format!("\"{}:/data\"", data.display())),
    );

    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("failed") && l.contains("v/v"))
        .unwrap_or_else(|| panic!("no failed line for v/v:\n{r}"));
    assert!(
        line.contains(&format!(
            "volume host path {} does not exist",
            data.display()
        )),
        "{r}"
    );
    assert!(!data.exists(), "the host path was created");
    assert!(
        podman.inspect("v").is_none(),
        "no container without its data"
    );
    assert!(
        podman.running("v-other"),
        "the other component is unaffected"
    );
    let (state, error) = state(&agent);
    assert_eq!(state, "volume-missing");
    assert!(error.contains(&data.display().to_string()), "{error}");

    // The status table says why too.
    let table = agent.ok(&["status"]).stdout;
    assert!(
        table.contains(&format!(
            "volume host path {} does not exist",
            data.display()
        )),
        "{table}"
    );
}

#[test]
fn the_daemon_logs_a_missing_bind_source_once_retries_and_recovers_when_it_appears() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1s\"\n");
    let data = agent.path().join("data");
    agent.apply(
        "v.toml",
        &service(None, &format!("\"{}:/data:ro\"", data.display())),
    );
    let d = agent.start_daemon(&[]);
    let retries = |log: &str| log.matches("still not reconciled, as before").count();
    wait_for("three retries of v/v", Duration::from_secs(20), || {
        retries(&d.log()) >= 3
    });
    let log = d.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("does not exist"))
        .collect();
    assert_eq!(warnings.len(), 1, "logged once:\n{log}");
    assert!(warnings[0].contains(&data.display().to_string()), "{log}");
    assert!(!data.exists());

    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "hello").unwrap();
    wait_for(
        "v runs once its data is there",
        Duration::from_secs(20),
        || podman.running("v"),
    );
    assert_eq!(
        podman.podman_ok(&["exec", "v", "cat", "/data/f"]),
        "hello",
        "the host path is what is mounted"
    );
    poll_until(Duration::from_secs(10), || state(&agent).0 == "running")
        .expect("status says running");
}

#[test]
fn create_host_path_makes_the_directory_owned_by_the_components_user() {
    let podman = podman();
    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    let data = agent.path().join("srv/data");
    let vol = |p: &Path| {
        format!(
            "{{ source = \"{}\", target = \"/data\", options = \"rw\", create_host_path = true }}",
            p.display()
        )
    };
    agent.apply("v.toml", &service(Some("4321:4322"), &vol(&data)));
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    let m = std::fs::metadata(&data).expect("created");
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.gid()), (4321, 4322));
    assert!(podman.running("v"));
    // The container's user writes into it.
    podman.podman_ok(&["exec", "v", "sh", "-c", "echo x > /data/written"]);
    assert_eq!(std::fs::metadata(data.join("written")).unwrap().uid(), 4321);

    // export | apply round-trips the table form.
    let exported = agent.ok(&["export", "v"]).stdout;
    assert!(exported.contains("create_host_path = true"), "{exported}");
    agent.apply("v-again.toml", &exported);
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        !r.stdout.contains("recreate"),
        "the round trip changed the spec:\n{r}"
    );

    // A user name this host does not know: said, and nothing created.
    let other = agent.path().join("srv/other");
    agent.apply("v.toml", &service(Some("appuser"), &vol(&other)));
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("\"appuser\": no such user on this host"),
        "{r}"
    );
    assert!(!other.exists());
}
