//! `mcp-agent import compose` end to end (issue 15): compose files written here — a
//! db + migration + app + worker stack in two files merged with `-f`, with a health
//! check, dependency conditions, a one-shot, a named volume, an env file, a `.env`, a
//! relative bind and fixed ports — imported by the real binary, read back by the agent's
//! own parser, applied and brought up with `--once` against a private podman. And a
//! file with what the agent cannot express: refused with file:line:col, nothing written,
//! or written with `--partial` and still taken by `apply`.

mod agentkit;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentkit::{bin, Agent, Run};
use common::{free_port, PrivatePodman};

const IMAGE: &str = "localhost/busybox:latest";

/// Removes the test's networks when it ends (rootful podman's are machine-wide).
struct Networks<'a> {
    podman: &'a PrivatePodman,
    names: Vec<String>,
}

impl Drop for Networks<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.podman.podman(&["network", "rm", "-f", n]);
        }
    }
}

/// `mcp-agent import compose ARGS` in `dir`, with `env` added to its environment.
fn import(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(bin())
        .args(["import", "compose"])
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_PROFILES")
        .output()
        .expect("run mcp-agent import compose");
    Run::from(out)
}

const COMPOSE: &str = r#"name: ${PROJECT}

x-service: &service
  image: localhost/busybox:latest
  restart: unless-stopped

services:
  db:
    <<: *service
    command: ["sh", "-c", "echo up >> /data/starts; echo > /tmp/ready; trap 'exit 0' TERM; while true; do echo pong | nc -l -p 7000 & wait $$!; done"]
    environment:
      DB_PASSWORD: ${DB_PASSWORD:?set it in .env}
    volumes:
      - dbdata:/data
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 500ms
      timeout: 2s
      retries: 3

  migrate:
    image: localhost/busybox:latest
    command: sh -c 'echo migrated >> /data/migrations'
    volumes: [dbdata:/data]
    depends_on:
      db:
        condition: service_healthy

  app:
    <<: *service
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    env_file: ./app.env
    environment:
      - MODE=${MODE:-production}
      - DB_HOST=db
    ports:
      - "127.0.0.1:${APP_PORT}:8080"
    volumes:
      - ./static:/srv/static:ro
    depends_on:
      db:
        condition: service_healthy
        restart: true
      migrate:
        condition: service_completed_successfully

  worker:
    <<: *service
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
    depends_on: [app]
    deploy:
      resources:
        limits:
          memory: 64m

  debug:
    image: localhost/busybox:latest
    profiles: [debug]

volumes:
  dbdata:
"#;

/// The production override: merged over the first file as compose merges it.
const PROD: &str = r#"services:
  app:
    environment:
      MODE: ${MODE:-staging}
    ports:
      - target: 8081
        published: "${ADMIN_PORT}"
        host_ip: 127.0.0.1
  worker:
    environment:
      LEVEL: debug
    stop_grace_period: 3s
"#;

fn env_of(podman: &PrivatePodman, name: &str) -> Vec<String> {
    podman.inspect(name).unwrap()["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// What `nc db 7000` from `from` answers, retried (db listens again between
/// connections).
fn reach(podman: &PrivatePodman, from: &str, name: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let out = podman.podman(&[
            "exec",
            from,
            "sh",
            "-c",
            &format!("nc {name} 7000 </dev/null"),
        ]);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == "pong" {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

#[test]
fn a_compose_stack_is_imported_applied_and_brought_up_in_order() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let project = format!("ic{}", std::process::id());
    let _nets = Networks {
        podman: &podman,
        names: vec![format!("mcp-{project}")],
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (app_port, admin_port) = (free_port(), free_port());
    std::fs::write(d.join("compose.yaml"), COMPOSE).unwrap();
    std::fs::write(d.join("compose.prod.yaml"), PROD).unwrap();
    std::fs::write(
        d.join(".env"),
        format!(
            "DB_PASSWORD=s3cret\nAPP_PORT={app_port}\nADMIN_PORT={admin_port}\nMODE=from-dotenv\n"
        ),
    )
    .unwrap();
    std::fs::write(d.join("app.env"), "GREETING=hello\n").unwrap();
    std::fs::create_dir(d.join("static")).unwrap();
    std::fs::write(d.join("static/index.html"), "hi\n").unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();

    // A required variable missing: refused at its place, nothing written.
    std::fs::rename(d.join(".env"), d.join("saved.env")).unwrap();
    let r = import(
        d,
        &["-f", "compose.yaml", "-o", "out"],
        &[("PROJECT", &project)],
    );
    assert_eq!(r.code, 65, "{r}");
    assert!(
        r.stderr.contains("compose.yaml:12:20: services.db.environment.DB_PASSWORD: required variable DB_PASSWORD is missing a value: set it in .env"),
        "{r}"
    );
    assert!(
        std::fs::read_dir(&out).unwrap().next().is_none(),
        "something written"
    );
    std::fs::rename(d.join("saved.env"), d.join(".env")).unwrap();

    let r = import(
        d,
        &["-f", "compose.yaml", "-f", "compose.prod.yaml", "-o", "out"],
        &[("PROJECT", &project), ("MODE", "from-process")],
    );
    assert_eq!(r.code, 0, "{r}");
    let file = out.join(format!("{project}.toml"));
    assert_eq!(r.stdout.trim(), format!("out/{project}.toml"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        r.stderr
            .contains("services.debug: note: left out: none of its profiles (debug) is enabled"),
        "{r}"
    );
    assert!(!r.stderr.contains("not supported"), "{r}");

    // The agent's own parser takes it, with compose's meaning.
    let files = mcp_agent::spec::read_service_files(std::slice::from_ref(&file))
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&file).unwrap()));
    let s = &files[0].service;
    assert_eq!(s.name, project);
    let names: Vec<&str> = s.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["db", "migrate", "app", "worker"]);
    let app = &s.components[2];
    assert_eq!(
        app.env["MODE"], "from-process",
        "the process environment wins over .env"
    );
    assert_eq!(
        app.volumes[0].source,
        d.join("static").display().to_string()
    );
    assert!(s.components[1].settings.oneshot);

    let agent = Agent::new(&podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.ok(&["apply", file.to_str().unwrap()]);
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    let c = |n: &str| format!("{project}-{n}");
    for n in ["db", "app", "worker"] {
        assert!(podman.running(&c(n)), "{n} not running\n{r}");
    }
    let mig = podman.inspect(&c("migrate")).unwrap();
    assert_eq!(mig["State"]["ExitCode"], 0, "{mig}");
    let vol = agent.path().join(format!("state/volumes/{project}/dbdata"));
    assert_eq!(
        std::fs::read_to_string(vol.join("migrations")).unwrap(),
        "migrated\n"
    );

    // What podman was given, as compose would give it.
    let env = env_of(&podman, &c("app"));
    for want in ["GREETING=hello", "MODE=from-process", "DB_HOST=db"] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    assert!(env_of(&podman, &c("db"))
        .iter()
        .any(|e| e == "DB_PASSWORD=s3cret"));
    assert!(env_of(&podman, &c("worker"))
        .iter()
        .any(|e| e == "LEVEL=debug"));
    let app = podman.inspect(&c("app")).unwrap();
    let bindings = &app["HostConfig"]["PortBindings"];
    assert_eq!(
        bindings["8080/tcp"][0]["HostPort"],
        app_port.to_string(),
        "{bindings}"
    );
    assert_eq!(bindings["8080/tcp"][0]["HostIp"], "127.0.0.1", "{bindings}");
    assert_eq!(
        bindings["8081/tcp"][0]["HostPort"],
        admin_port.to_string(),
        "{bindings}"
    );
    let mounts = app["Mounts"].as_array().unwrap();
    let stat = mounts
        .iter()
        .find(|m| m["Destination"] == "/srv/static")
        .unwrap_or_else(|| panic!("{mounts:?}"));
    assert_eq!(stat["RW"], false, "{stat}");
    assert_eq!(app["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    let worker = podman.inspect(&c("worker")).unwrap();
    assert_eq!(worker["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(worker["Config"]["StopTimeout"], 3);
    // Service-name DNS on the project's network, as compose gives it.
    assert_eq!(reach(&podman, &c("app"), "db"), "pong");
    // Applied again, it is converged: nothing recreated, the migration not run again.
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        std::fs::read_to_string(vol.join("migrations")).unwrap(),
        "migrated\n"
    );
    assert_eq!(std::fs::read_to_string(vol.join("starts")).unwrap(), "up\n");
}

const UNSUPPORTED: &str = r#"services:
  web:
    build: ./web
    image: localhost/busybox:latest
    restart: on-failure:5
    ports:
      - "8080"
  cache:
    image: localhost/busybox:latest
    network_mode: service:web
    deploy:
      placement:
        constraints: [node.role == manager]
  ok:
    image: localhost/busybox:latest
    expose: ["80"]
"#;

#[test]
fn what_cannot_be_carried_over_is_refused_all_at_once_or_left_as_comments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("Legacy_App");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("docker-compose.yml"), UNSUPPORTED).unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let r = import(&d, &["-o", "out"], &[]);
    assert_eq!(r.code, 65, "{r}");
    let f = d.join("docker-compose.yml").display().to_string();
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(": not supported: "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("mcp-agent: {f}:3:5: services.web.build: not supported: the agent never builds: build the image and name it in image:"),
            format!("mcp-agent: {f}:5:14: services.web.restart: not supported: \"on-failure:5\": the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept (write on-failure)"),
            format!("mcp-agent: {f}:7:9: services.web.ports: not supported: a port without a host port is published by podman on a port it picks: the agent's ports are fixed, write HOST:CONTAINER"),
            format!("mcp-agent: {f}:10:19: services.cache.network_mode: not supported: \"service:web\": the agent gives each container its own network namespace (join a network both are on instead)"),
            format!("mcp-agent: {f}:12:7: services.cache.deploy.placement: not supported: swarm's, with no meaning for one node's containers"),
        ]
    );
    assert!(
        r.stderr
            .contains("services.ok.expose: note: no effect in the agent"),
        "{r}"
    );
    assert!(r.stderr.ends_with("mcp-agent: nothing written: 5 not supported (--partial writes the file without them, each as a comment)\n"), "{r}");
    assert!(std::fs::read_dir(&out).unwrap().next().is_none());

    // --partial: written, each dropped key a comment at its component, and apply takes it.
    let r = import(&d, &["-o", "out", "--partial"], &[]);
    assert_eq!(r.code, 0, "{r}");
    let file = out.join("legacy-app.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("[[components]]\n# not imported: services.web.build (docker-compose.yml:3:5): the agent never builds"), "{text}");
    assert!(text.contains("[[components]]\n# not imported: services.cache.network_mode (docker-compose.yml:10:19)"), "{text}");
    let files = mcp_agent::spec::read_service_files(std::slice::from_ref(&file)).unwrap();
    let s = &files[0].service;
    assert_eq!(s.name, "legacy-app");
    assert_eq!(s.components[0].restart, mcp_agent::model::RestartPolicy::No);
    assert!(s.components[0].ports.is_empty());
    // apply's registry rules too, without a podman: apply touches no container.
    let agent_dir = tempfile::tempdir().unwrap();
    let db = agent_dir.path().join("registry.db");
    let config = agent_dir.path().join("mcp-agent.toml");
    std::fs::write(
        &config,
        format!("[database]\npath = {:?}\n", db.display().to_string()),
    )
    .unwrap();
    let out = Command::new(bin())
        .args([
            "--config",
            config.to_str().unwrap(),
            "apply",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "{r}");
}
