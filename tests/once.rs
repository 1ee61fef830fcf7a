//! `mcp-agent --once` against a real, private podman (issue: registry, runtime and the
//! one-shot recovery pass).

mod agentkit;
mod common;

use agentkit::{container_id, summary, Agent, NODE};
use common::{free_port, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

fn podman() -> PrivatePodman {
    let p = PrivatePodman::start();
    p.import_busybox(IMAGE);
    p
}

/// A two-component service using every field a component can have.
fn shop(agent: &Agent, port: u16, log_level: &str) -> String {
    let data = agent.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    format!(
        r#"
name = "shop"

[[components]]
name = "web"
image = "{IMAGE}"
user = "1000:1000"
restart = "on-failure"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/data"]
env = {{ LOG_LEVEL = "{log_level}", GREETING = "hello world" }}
volumes = ["{}:/data:rw"]
ports = ["127.0.0.1:{port}:8080/tcp"]

[[components]]
name = "db"
image = "{IMAGE}"
network = "host"
restart = "unless-stopped"
"#,
        data.display()
    )
}

#[test]
fn once_on_an_empty_podman_creates_every_container_as_specified() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    let port = free_port();
    std::fs::create_dir_all(agent.path().join("data")).unwrap();
    std::fs::write(agent.path().join("data/index.html"), "shop-web\n").unwrap();
    agent.apply("shop.toml", &shop(&agent, port, "info"));
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert!(
        r.stdout.contains("create   shop/web (shop-web): running"),
        "{r}"
    );

    let web = podman.inspect("shop-web").expect("shop-web exists");
    assert_eq!(web["State"]["Running"], true);
    assert_eq!(web["ImageName"], IMAGE);
    let cmd: Vec<&str> = web["Config"]["Cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd, ["httpd", "-f", "-p", "8080", "-h", "/data"]);
    let env: Vec<&str> = web["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"LOG_LEVEL=info"), "{env:?}");
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert_eq!(web["Config"]["User"], "1000:1000");
    assert_eq!(web["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    let binds = web["HostConfig"]["Binds"].as_array().unwrap();
    assert!(
        binds[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:/data", agent.path().join("data").display())),
        "{binds:?}"
    );
    let pb = &web["HostConfig"]["PortBindings"]["8080/tcp"][0];
    assert_eq!(pb["HostIp"], "127.0.0.1");
    assert_eq!(pb["HostPort"], port.to_string());
    let labels = &web["Config"]["Labels"];
    assert_eq!(labels["mcp.managed"], "true");
    assert_eq!(labels["mcp.node"], NODE);
    assert_eq!(labels["mcp.service"], "shop");
    assert_eq!(labels["mcp.component"], "web");
    assert_eq!(labels["mcp.spec-hash"].as_str().unwrap().len(), 32);

    // The published port really reaches the container, as the user it runs as.
    common::wait_for(
        "shop-web answers on its port",
        std::time::Duration::from_secs(10),
        || http_get(port).contains("shop-web"),
    );

    let db = podman.inspect("shop-db").expect("shop-db exists");
    assert_eq!(db["State"]["Running"], true);
    assert_eq!(db["HostConfig"]["NetworkMode"], "host");
    assert_eq!(db["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(
        db["Config"]["Cmd"][0], "sleep",
        "the image's own CMD is kept"
    );
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn removed_or_exited_containers_are_recreated_and_a_second_pass_does_nothing() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply("shop.toml", &shop(&agent, free_port(), "info"));
    agent.ok(&["--once"]);
    let db_id = container_id(&podman, "shop-db");

    podman.podman_ok(&["rm", "-f", "-t", "0", "shop-web"]);
    podman.podman_ok(&["stop", "-t", "0", "shop-db"]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert!(podman.running("shop-web") && podman.running("shop-db"));
    // The exited one, unchanged, was simply started again.
    assert_eq!(container_id(&podman, "shop-db"), db_id);
    assert!(
        r.stdout.contains("start    shop/db (shop-db): running"),
        "{r}"
    );

    let ids = (
        container_id(&podman, "shop-web"),
        container_id(&podman, "shop-db"),
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 2, failed 0, skipped 0",
        "{r}"
    );
    assert_eq!(r.stdout.lines().count(), 1, "no action lines:\n{r}");
    assert_eq!(
        ids,
        (
            container_id(&podman, "shop-web"),
            container_id(&podman, "shop-db")
        )
    );
}

#[test]
fn a_changed_env_recreates_that_one_container_only() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    let port = free_port();
    agent.apply("shop.toml", &shop(&agent, port, "info"));
    agent.ok(&["--once"]);
    let (web, db) = (
        container_id(&podman, "shop-web"),
        container_id(&podman, "shop-db"),
    );
    let r = agent.apply("shop.toml", &shop(&agent, port, "debug"));
    assert!(r.stdout.contains("updated   shop"), "{r}");
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 1, already running 1, failed 0, skipped 0",
        "{r}"
    );
    assert!(r.stdout.contains("recreate shop/web"), "{r}");
    assert_ne!(container_id(&podman, "shop-web"), web);
    assert_eq!(container_id(&podman, "shop-db"), db);
    let env = podman.inspect("shop-web").unwrap()["Config"]["Env"].to_string();
    assert!(env.contains("LOG_LEVEL=debug"), "{env}");
}

#[test]
fn a_missing_image_is_skipped_with_exit_1_and_the_rest_runs() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply(
        "mixed.toml",
        &format!(
            "name = \"mixed\"\n[[components]]\nname = \"ok\"\nimage = \"{IMAGE}\"\n\
             [[components]]\nname = \"gone\"\nimage = \"localhost/not-here:1\"\n"
        ),
    );
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 1",
        "{r}"
    );
    assert!(
        r.stdout.contains("skipped mixed/gone (mixed-gone): image localhost/not-here:1 is not in the local image store"),
        "{r}"
    );
    assert!(podman.running("mixed-ok"));
    assert!(podman.inspect("mixed-gone").is_none());
    let images = podman.podman_ok(&["images", "--format", "{{.Repository}}"]);
    assert!(!images.contains("not-here"), "never pulled: {images}");
    let st = agent.run(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let gone = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "gone")
        .unwrap();
    assert_eq!(gone["last_pass_state"], "image-missing");
    assert!(gone["last_error"].as_str().unwrap().contains("not-here"));
}

#[test]
fn after_podman_loses_its_database_once_brings_everything_back() {
    let mut podman = podman();
    let agent = Agent::new(&podman, "");
    let port = free_port();
    std::fs::create_dir_all(agent.path().join("data")).unwrap();
    std::fs::write(agent.path().join("data/index.html"), "shop-web\n").unwrap();
    agent.apply("shop.toml", &shop(&agent, port, "info"));
    agent.ok(&["--once"]);
    podman.lose_database();
    assert!(
        podman.inspect("shop-web").is_none(),
        "the API sees no containers"
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 2, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert!(podman.running("shop-web") && podman.running("shop-db"));
    common::wait_for(
        "shop-web answers again",
        std::time::Duration::from_secs(10),
        || http_get(port).contains("shop-web"),
    );
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 0, already running 2, failed 0, skipped 0",
        "{r}"
    );
}

#[test]
fn a_hand_made_container_of_the_same_name_is_untouched_and_reported() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    let mine = podman.podman_ok(&["run", "-d", "--name", "solo", IMAGE]);
    agent.apply(
        "solo.toml",
        &format!("name = \"solo\"\n[[components]]\nname = \"solo\"\nimage = \"{IMAGE}\"\nenv = {{ A = \"1\" }}\n"),
    );
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(
        summary(&r),
        "recovered 0, already running 0, failed 1, skipped 0",
        "{r}"
    );
    assert!(
        r.stdout.contains(
            "failed solo/solo (solo): a container of that name without our labels exists"
        ),
        "{r}"
    );
    assert_eq!(container_id(&podman, "solo"), mine.trim());
    assert!(podman.running("solo"));
}

#[test]
fn removing_a_service_removes_its_containers_and_nothing_else() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply("shop.toml", &shop(&agent, free_port(), "info"));
    agent.apply(
        "keep.toml",
        &format!("name = \"keep\"\n[[components]]\nname = \"keep\"\nimage = \"{IMAGE}\"\n"),
    );
    agent.ok(&["--once"]);
    let bystander = podman.podman_ok(&["run", "-d", "--name", "bystander", IMAGE]);
    let r = agent.ok(&["remove", "shop"]);
    assert!(r.stdout.contains("shop: removed"), "{r}");
    let r = agent.ok(&["--once"]);
    assert!(
        r.stdout.contains("remove   shop/web (shop-web): removed"),
        "{r}"
    );
    assert!(
        r.stdout.contains("remove   shop/db (shop-db): removed"),
        "{r}"
    );
    assert!(podman.inspect("shop-web").is_none() && podman.inspect("shop-db").is_none());
    assert!(podman.running("keep"));
    assert_eq!(container_id(&podman, "bystander"), bystander.trim());
}

#[test]
fn stop_and_start_change_the_desired_state() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply(
        "keep.toml",
        &format!("name = \"keep\"\n[[components]]\nname = \"keep\"\nimage = \"{IMAGE}\"\n"),
    );
    agent.ok(&["--once"]);
    agent.ok(&["stop", "keep/keep"]);
    let r = agent.ok(&["--once"]);
    assert!(
        r.stdout.contains("stop     keep/keep (keep): stopped"),
        "{r}"
    );
    assert!(!podman.running("keep"));
    agent.ok(&["start", "keep"]);
    agent.ok(&["--once"]);
    assert!(podman.running("keep"));
    let r = agent.run(&["stop", "nope"]);
    assert_eq!(r.code, 65, "{r}");
    assert!(r.stderr.contains("no service named \"nope\""), "{r}");
}

#[test]
fn export_round_trips_through_apply() {
    let podman = podman();
    let agent = Agent::new(&podman, "");
    agent.apply("shop.toml", &shop(&agent, free_port(), "info"));
    let out = agent.path().join("exported");
    std::fs::create_dir(&out).unwrap();
    agent.ok(&["export", "-o", out.to_str().unwrap()]);
    let r = agent.ok(&["apply", out.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged shop", "{r}");
    let single = agent.ok(&["export", "shop"]).stdout;
    assert!(single.contains("GREETING = \"hello world\""), "{single}");
}

#[test]
fn podman_unreachable_is_exit_69_naming_the_socket() {
    let podman = podman();
    let agent = Agent::with_socket(&podman, "unix:///nonexistent/podman.sock", "");
    agent.apply(
        "keep.toml",
        &format!("name = \"keep\"\n[[components]]\nname = \"keep\"\nimage = \"{IMAGE}\"\n"),
    );
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 69, "{r}");
    assert!(r.stderr.contains("/nonexistent/podman.sock"), "{r}");
}
