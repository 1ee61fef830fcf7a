//! The keys of a compose service, one by one: short and long syntaxes, what each becomes
//! in the service file, and every refusal with its text.

use super::tests::{component, import_one, import_with, lines_of, problems, service};
use super::*;
use crate::model::{Component, Condition, Probe, Ulimit};

/// The one component of `app` with `keys` (YAML lines at the service's indentation).
fn app(keys: &str) -> Component {
    let (i, d) = import_one(&format!("name: s\nservices:\n  app:\n    image: a\n{keys}"));
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    component(&service(&i), "app").clone()
}

/// The problems of `app` with `keys`; the image is on line 4, `keys` start on line 5.
fn refused(keys: &str) -> Vec<String> {
    let (i, d) = import_one(&format!("name: s\nservices:\n  app:\n    image: a\n{keys}"));
    problems(&i, d.path())
        .into_iter()
        .map(|l| l.trim_start_matches("D/compose.yaml:").to_string())
        .collect()
}

#[test]
fn ports_short_and_long() {
    let c = app("    ports:\n      - '8080:80'\n      - 127.0.0.1:5353:53/udp\n      - '[::1]:9000:9000'\n      - 7000-7001:8000-8001\n      - target: 443\n        published: '8443'\n        host_ip: 127.0.0.1\n        protocol: tcp\n        mode: host\n");
    let p: Vec<String> = c.ports.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        p,
        [
            "8080:80/tcp",
            "127.0.0.1:5353:53/udp",
            "[::1]:9000:9000/tcp",
            "7000:8000/tcp",
            "7001:8001/tcp",
            "127.0.0.1:8443:443/tcp",
        ]
    );
    assert_eq!(
        refused("    ports: ['80', '8000-8010:80', 'x:80', {target: 81}, '1:1/icmp']\n"),
        [
            "5:13: services.app.ports: not supported: a port without a host port is published by podman on a port it picks: the agent's ports are fixed, write HOST:CONTAINER",
            "5:19: services.app.ports: not supported: host ports 8000-8010 for container ports 80: podman picks one of a range, the agent's ports are fixed",
            "5:35: services.app.ports: \"x\" is not a host port or range",
            "5:43: services.app.ports: not supported: a port without a host port is published by podman on a port it picks: the agent's ports are fixed, write HOST:CONTAINER",
            "5:57: services.app.ports: protocol \"icmp\" must be tcp, udp or sctp",
        ]
    );
}

#[test]
fn volumes_short_and_long() {
    let (i, d) = import_one(
        "name: s\nservices:\n  app:\n    image: a\n    volumes:\n      - ./data:/data\n      - ../up/x:/x:ro,z\n      - ~/cfg:/cfg:cached\n      - db:/var/lib/db\n      - db:/suid:suid,ro\n      - type: bind\n        source: ./conf\n        target: /conf\n        read_only: true\n        bind: {propagation: rshared, create_host_path: true}\n      - type: volume\n        source: db\n        target: /db2\n        volume: {nocopy: true}\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {size: 64m, mode: 1777}\n      - bindvol:/b\nvolumes:\n  db:\n  bindvol:\n    driver_opts: {type: none, o: bind, device: ./host}\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let c = component(&service(&i), "app").clone();
    let root = d.path().join("shop").display().to_string();
    let v: Vec<String> = c
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{}{}",
                v.bind().replace(&root, "D"),
                if v.create_host_path { " +create" } else { "" }
            )
        })
        .collect();
    let up = d.path().join("up").display().to_string();
    assert_eq!(
        v,
        [
            "D/data:/data +create".to_string(),
            format!("{up}/x:/x:ro,z +create"),
            "/home/u/cfg:/cfg +create".to_string(),
            // Named volumes as podman mounts its own: nodev,nosuid unless asked otherwise.
            "db:/var/lib/db:nodev,nosuid".to_string(),
            "db:/suid:suid,ro,nodev".to_string(),
            "D/conf:/conf:ro,rshared +create".to_string(),
            "db:/db2:nocopy,nodev,nosuid".to_string(),
            "D/host:/b".to_string(),
        ]
    );
    assert_eq!(c.settings.tmpfs, ["/scratch:size=64m,mode=1777"]);
    assert_eq!(
        refused("    volumes:\n      - /anon\n      - nope:/x\n      - ./a:/a:weird\n      - {type: volume, target: /t}\n      - {type: volume, source: v, target: /s, volume: {subpath: sub}}\n      - {type: npipe, source: x, target: /p}\nvolumes:\n  v:\n"),
        [
            "6:9: services.app.volumes: not supported: \"/anon\" is an anonymous volume, podman's and kept in its database: name it (NAME:/anon) to make it the agent's",
            "7:9: services.app.volumes: volume \"nope\" is not defined in the top-level volumes:",
            "8:9: services.app.volumes: not supported: volume mode \"weird\" is not one of ro, rw, z, Z, U, shared, slave, private, rshared, rslave, rprivate, nocopy, noexec, exec, nosuid, suid, nodev, dev",
            "9:9: services.app.volumes: not supported: a volume without source is anonymous, podman's and kept in its database: name it to make it the agent's (/t)",
            "10:65: services.app.volumes.volume.subpath: not supported: a named volume's subpath: the agent mounts the volume's whole directory",
            "11:9: services.app.volumes: not supported: volumes of type \"npipe\": the agent mounts binds, its named volumes and tmpfs",
        ]
    );
}

/// Compose's external volumes (`external: true`, with `name:`; the legacy
/// `external: { name }`) are the service file's `[volumes.NAME]`: podman's volume,
/// mounted, never created by the agent.
#[test]
fn external_volumes_become_the_service_files_external_volumes() {
    let (i, d) = import_one(
        "name: s\nservices:\n  app:\n    image: a\n    volumes:\n      - data:/data\n      - pg:/pg:ro\n      - {type: volume, source: old, target: /old, read_only: true}\n      - own:/own\n  b:\n    image: a\n    volumes: [data:/data]\nvolumes:\n  data: {external: true}\n  pg:\n    external: true\n    name: sentry-postgres\n  old:\n    external: {name: legacy-vol}\n  own:\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let text = i.text.clone().unwrap();
    assert!(
        text.contains("[volumes.data]\nexternal = true\n\n[volumes.old]\nexternal = true\nname = \"legacy-vol\"\n\n[volumes.pg]\nexternal = true\nname = \"sentry-postgres\"\n\n[[components]]"),
        "{text}"
    );
    let s = service(&i);
    let v: Vec<String> = component(&s, "app")
        .volumes
        .iter()
        .map(|v| format!("{} {:?}", v.bind(), v.external))
        .collect();
    assert_eq!(
        v,
        [
            "data:/data:nodev,nosuid Some(\"data\")",
            "pg:/pg:ro,nodev,nosuid Some(\"sentry-postgres\")",
            "old:/old:ro,nodev,nosuid Some(\"legacy-vol\")",
            "own:/own:nodev,nosuid None",
        ]
    );
    assert_eq!(
        component(&s, "b").volumes[0].external.as_deref(),
        Some("data")
    );
    assert!(i.report.whole().contains(&"app"), "{:?}", i.report.findings);
}

#[test]
fn an_external_volume_takes_no_other_key_as_compose_refuses_them() {
    assert_eq!(
        refused("    volumes: [a:/a, b:/b, c:/c, d:/d, e:/e]\nvolumes:\n  a:\n    external: true\n    driver: local\n    driver_opts: {type: tmpfs}\n    labels: [x=y]\n    x-note: fine\n  b:\n    external: {name: one}\n    name: two\n  c:\n    external: {name: c1, other: 2}\n  d:\n    external: true\n    name: -bad\n  e:\n    external: maybe\n"),
        [
            "9:13: volumes.a.driver: conflicting parameters \"external\" and \"driver\" specified for volume \"a\"",
            "10:18: volumes.a.driver_opts: conflicting parameters \"external\" and \"driver_opts\" specified for volume \"a\"",
            "11:13: volumes.a.labels: conflicting parameters \"external\" and \"labels\" specified for volume \"a\"",
            "14:22: volumes.b.external.name: volume.external.name and volume.name conflict (\"one\", \"two\"); only use volume.name",
            "17:33: volumes.c.external.other: external is true, false or { name: NAME }",
            "20:11: volumes.d.name: \"-bad\" is not a podman volume name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 255 bytes)",
            "22:15: volumes.e.external: external is true, false or { name: NAME }",
        ]
    );
}

#[test]
fn environment_lists_and_maps_and_env_files() {
    let (i, d) = import_with(
        &[
            ("compose.yaml", "name: s\nservices:\n  app:\n    image: a\n    environment: [A=1, 'B=x=y', FROM_HOST, MISSING]\n    env_file: [app.env, {path: opt.env, required: false}]\n  b:\n    image: a\n    environment: {N: 5, T: true, E: ''}\n    env_file: dollar.env\n"),
            ("app.env", "K=v\n"),
            ("dollar.env", "# $ in a comment\nQ='$lit'\nX=${HOME}\n"),
        ],
        |o| {
            o.env.insert("FROM_HOST".into(), "h".into());
        },
    );
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:10:15: services.b.env_file: not supported: D/dollar.env: line 3 uses $, which compose interpolates and the agent's env files take as it is"]
    );
    let s = service(&i);
    let a = component(&s, "app");
    assert_eq!(a.env["A"], "1");
    assert_eq!(a.env["B"], "x=y");
    assert_eq!(a.env["FROM_HOST"], "h");
    assert!(!a.env.contains_key("MISSING"));
    assert_eq!(
        a.settings.env_file,
        [d.path().join("shop/app.env").display().to_string()]
    );
    let b = component(&s, "b");
    assert_eq!(
        (
            b.env["N"].as_str(),
            b.env["T"].as_str(),
            b.env["E"].as_str()
        ),
        ("5", "true", "")
    );
    assert!(lines_of(&i, d.path(), &[Kind::Note])
        .iter()
        .any(|l| l.contains(
            "services.app.env_file: note: left out: D/opt.env is not there (required: false)"
        )));
    assert_eq!(
        refused("    env_file: gone.env\n"),
        [format!(
            "5:15: services.app.env_file: env file {} not found",
            "D/gone.env"
        )]
    );
}

#[test]
fn healthchecks_in_every_form() {
    let c = app("    healthcheck:\n      test: [CMD, curl, -f, http://localhost]\n      interval: 1m30s\n      timeout: 1.5s\n      retries: 0\n      start_period: 40s\n");
    let h = c.settings.health.unwrap();
    assert_eq!(
        h.probe,
        Probe::Cmd(vec!["curl".into(), "-f".into(), "http://localhost".into()])
    );
    assert_eq!(
        (h.interval.0, h.timeout.0, h.retries, h.start_period.0),
        (90_000, 1_500, 3, 40_000)
    );
    assert_eq!(
        h.start_interval.0, 5_000,
        "docker's start_interval inside a start_period"
    );
    let c = app("    healthcheck:\n      test: [CMD-SHELL, 'pg_isready || exit 1']\n      start_interval: 2s\n");
    assert_eq!(
        c.settings.health.unwrap().probe,
        Probe::Shell("pg_isready || exit 1".into())
    );
    assert!(app("    healthcheck:\n      test: [NONE]\n")
        .settings
        .health
        .is_none());
    assert!(
        app("    healthcheck:\n      test: true\n      disable: true\n")
            .settings
            .health
            .is_none()
    );
    // `disable: false` alone (immich's): the image's HEALTHCHECK, as without the key.
    let (i, d) = import_one("name: s\nservices:\n  app:\n    image: a\n    healthcheck:\n      disable: false\n  b:\n    image: b\n    healthcheck: {}\n");
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    assert!(service(&i)
        .components
        .iter()
        .all(|c| c.settings.health.is_none()));
    let notes = lines_of(&i, d.path(), &[Kind::Note]);
    for at in ["6:7: services.app", "9:18: services.b"] {
        assert!(
            notes.contains(&format!("D/compose.yaml:{at}.healthcheck: note: no test, no setting: the image's own HEALTHCHECK, which the agent does not run (as without healthcheck:)")),
            "{notes:?}"
        );
    }
    assert_eq!(
        refused("    healthcheck:\n      interval: 10s\n  b:\n    image: b\n    healthcheck:\n      test: [WHAT]\n      interval: 1us\n      retries: 500\n      bogus: 1\n"),
        [
            "6:7: services.app.healthcheck: not supported: a check without test runs the image's HEALTHCHECK, which the agent does not read: write the test",
            "10:13: services.b.healthcheck.test: must be [\"CMD\", PROGRAM, ARG...], [\"CMD-SHELL\", LINE], [\"NONE\"] or a string (a shell line)",
        ]
    );
    assert_eq!(
        refused("    healthcheck:\n      test: x\n      interval: 1us\n      retries: 500\n      bogus: 1\n"),
        [
            "7:17: services.app.healthcheck.interval: not supported: \"1us\": the agent's durations are whole milliseconds",
            "8:16: services.app.healthcheck.retries: not supported: 500: the agent takes 1-100 failures in a row",
            "9:14: services.app.healthcheck.bogus: unknown key (not in the compose specification)",
        ]
    );
}

#[test]
fn depends_on_short_and_long_and_one_shots() {
    let (i, d) = import_one(
        "name: s\nservices:\n  db:\n    image: a\n  init:\n    image: a\n    restart: always\n    healthcheck: {test: x}\n  app:\n    image: a\n    depends_on: [db]\n  web:\n    image: a\n    depends_on:\n      db: {condition: service_healthy, restart: true}\n      init: {condition: service_completed_successfully}\n      app:\n",
    );
    assert_eq!(
        problems(&i, d.path()),
        [
            "D/compose.yaml:7:14: services.init.restart: not supported: \"always\" on a service another waits for to complete (service_completed_successfully): the agent runs such a one-shot to exit 0 once, never again",
            "D/compose.yaml:8:18: services.init.healthcheck: not supported: a check on a one-shot component (another service waits for it to complete): the agent checks only what keeps running",
        ]
    );
    let s = service(&i);
    assert_eq!(
        component(&s, "app").settings.depends_on["db"].condition,
        Condition::Started
    );
    let web = &component(&s, "web").settings.depends_on;
    assert_eq!(web["db"].condition, Condition::Healthy);
    assert!(web["db"].restart_with);
    assert_eq!(web["init"].condition, Condition::Completed);
    assert_eq!(web["app"].condition, Condition::Started);
    let init = component(&s, "init");
    assert!(init.settings.oneshot);
    assert_eq!(init.restart, crate::model::RestartPolicy::No);
    assert_eq!(
        refused("    depends_on: [web]\n    volumes: ['${NOPE}:/media']\n  web:\n    build: .\n"),
        [
            "5:18: services.app.depends_on.web: not supported: \"web\" is not imported (it has build: and no image:)",
            "6:15: services.app.volumes: the volume's source is empty (an unset variable?)",
            "8:5: services.web.build: not supported: the agent never builds: build the image and name it in image:",
        ]
    );
    assert_eq!(
        refused("    depends_on: {app: {condition: service_started}}\n"),
        ["5:17: services.app.depends_on: not supported: the agent refuses it: component \"app\" depends on itself"]
    );
}

#[test]
fn process_resource_and_metadata_keys() {
    let c = app(concat!(
        "    command: sh -c 'echo \"hi there\"'\n",
        "    entrypoint: [/bin/tini, --]\n",
        "    user: 1000\n    working_dir: /srv\n    init: true\n    tty: true\n    read_only: true\n",
        "    stop_signal: SIGINT\n    stop_grace_period: 1m\n",
        "    cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n    security_opt: [no-new-privileges:true]\n",
        "    devices: [/dev/fuse, {source: /dev/null, target: /dev/n, permissions: r}]\n",
        "    sysctls: [net.core.somaxconn=1024]\n",
        "    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}\n",
        "    shm_size: 64m\n    mem_limit: 1.5g\n    mem_reservation: 256M\n    cpus: 0.5\n    pids_limit: 100\n",
        "    userns_mode: host\n    group_add: [dialout, 20]\n",
        "    labels: [a=1, b=2]\n",
        "    logging: {driver: json-file, options: {max-size: 10m}}\n",
        "    pull_policy: if_not_present\n    restart: unless-stopped\n",
        "    stdin_open: false\n    scale: 1\n",
    ));
    assert_eq!(c.cmd, ["sh", "-c", "echo \"hi there\""]);
    let s = &c.settings;
    assert_eq!(
        s.entrypoint.as_deref(),
        Some(&["/bin/tini".to_string(), "--".to_string()][..])
    );
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(s.working_dir.as_deref(), Some("/srv"));
    assert!(s.init && s.tty && s.read_only);
    assert_eq!(s.stop_timeout.unwrap().0, 60);
    // Without stop_grace_period, compose's 10 s (podman-compose gives podman's default,
    // StopTimeout 10; the agent's own default lets podman kill a replaced one at once).
    assert_eq!(app("").settings.stop_timeout.unwrap().0, 10);
    assert_eq!(s.devices, ["/dev/fuse", "/dev/null:/dev/n:r"]);
    assert_eq!(s.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(
        s.ulimits["nofile"],
        Ulimit {
            soft: 1024,
            hard: 2048
        }
    );
    assert_eq!(
        s.ulimits["nproc"],
        Ulimit {
            soft: 512,
            hard: 512
        }
    );
    assert_eq!(s.memory.unwrap().0, 3 << 29);
    assert_eq!(s.memory_reservation.unwrap().0, 256 << 20);
    assert_eq!(s.cpus.unwrap().0, 500_000_000);
    assert_eq!(s.pids_limit, Some(100));
    assert_eq!(s.group_add, ["dialout", "20"]);
    assert_eq!(s.labels["b"], "2");
    assert_eq!(s.log_driver.as_deref(), Some("json-file"));
    assert_eq!(s.pull, Some(crate::model::PullPolicy::Missing));
    assert_eq!(c.restart, crate::model::RestartPolicy::UnlessStopped);
}

/// Compose's unlimited ulimit, -1 (elasticsearch's `memlock: -1`, or `{soft: -1, hard:
/// -1}`), is the service file's -1; `stdin_open` is the component's. Other negative
/// limits, an unlimited nofile and a soft limit above its hard one are refused as `apply`
/// refuses them, at their compose key.
#[test]
fn unlimited_ulimits_and_stdin_open() {
    let (i, d) = import_one("name: s\nservices:\n  app:\n    image: a\n    stdin_open: true\n    ulimits:\n      memlock: -1\n      core: {soft: 0, hard: -1}\n      stack: {soft: '-1', hard: -1}\n      nofile: 65536\n  b:\n    image: b\n    stdin_open: false\n");
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let text = i.text.clone().unwrap();
    assert!(
        text.contains("\nstdin_open = true\n")
            && text.contains("\n[components.ulimits]\nmemlock = -1\nnofile = 65536\nstack = -1\n\n[components.ulimits.core]\nsoft = 0\nhard = -1\n"),
        "{text}"
    );
    assert_eq!(text.matches("stdin_open").count(), 1, "{text}");
    let s = service(&i);
    let a = &component(&s, "app").settings;
    assert!(a.stdin_open);
    assert_eq!(a.ulimits["memlock"], Ulimit { soft: -1, hard: -1 });
    assert_eq!(a.ulimits["core"], Ulimit { soft: 0, hard: -1 });
    assert!(!component(&s, "b").settings.stdin_open);
    assert_eq!(
        refused("    ulimits:\n      memlock: -2\n      nofile: -1\n      core: {soft: -1, hard: 10}\n"),
        [
            "6:7: services.app.ulimits: not supported: the agent refuses it: ulimit \"core\": soft limit unlimited is above hard limit 10",
            "6:7: services.app.ulimits: not supported: the agent refuses it: ulimit \"memlock\": -2 is negative: a limit is 0 or more, or -1 (or \"unlimited\") for none",
            "6:7: services.app.ulimits: not supported: the agent refuses it: ulimit \"nofile\" cannot be unlimited: Linux caps open files at fs.nr_open, and the container would not start (\"setrlimit: operation not permitted\"): give a number",
        ]
    );
}

#[test]
fn deploy_resources_and_restart_policy() {
    let c = app("    deploy:\n      replicas: 1\n      resources:\n        limits: {cpus: '1.5', memory: 512m, pids: 64}\n        reservations: {memory: 128m}\n      restart_policy: {condition: on-failure}\n");
    assert_eq!(c.settings.cpus.unwrap().0, 1_500_000_000);
    assert_eq!(c.settings.memory.unwrap().0, 512 << 20);
    assert_eq!(c.settings.memory_reservation.unwrap().0, 128 << 20);
    assert_eq!(c.settings.pids_limit, Some(64));
    assert_eq!(c.restart, crate::model::RestartPolicy::OnFailure);
    assert_eq!(
        refused("    deploy:\n      replicas: 3\n      placement: {constraints: [x]}\n      resources:\n        reservations: {cpus: '1', devices: [{capabilities: [gpu]}]}\n      restart_policy: {condition: any, max_attempts: 3, delay: 5s}\n"),
        [
            "6:17: services.app.deploy.replicas: not supported: a component is one container",
            "7:7: services.app.deploy.placement: not supported: swarm's, with no meaning for one node's containers",
            "9:30: services.app.deploy.resources.reservations.cpus: not supported: a CPU reservation is not among the agent's keys: limit with cpus",
            "9:44: services.app.deploy.resources.reservations.devices: not supported: device reservations (GPUs) are not among the agent's keys: name the devices",
            "10:54: services.app.deploy.restart_policy.max_attempts: not supported: the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept",
            "10:64: services.app.deploy.restart_policy.delay: not supported: the agent's restart delays are its backoff ([reconcile] backoff_initial, backoff_max)",
        ]
    );
}

#[test]
fn networks_aliases_and_names() {
    let (i, d) = import_one(
        "name: shop\nservices:\n  app:\n    image: a\n    networks:\n      default:\n      back: {aliases: [api]}\n      front: {aliases: [api]}\n    container_name: shop-api\n    hostname: app1\n    dns: 1.1.1.1\n    extra_hosts: ['gw:10.0.0.1', 'v6=::1']\n  db:\n    image: a\n    networks: [back]\n  host:\n    image: a\n    network_mode: host\nnetworks:\n  back:\n  front:\n    external: true\n    name: edge\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    let a = component(&s, "app");
    // Aliases that differ between networks: each network's own on its entry.
    let names: Vec<&str> = a
        .settings
        .networks
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["default", "shop_back", "edge"]);
    let per: Vec<&[String]> = a
        .settings
        .networks
        .iter()
        .map(|e| e.aliases.as_slice())
        .collect();
    assert_eq!(
        per,
        [&[][..], &["api".to_string()][..], &["api".to_string()][..]]
    );
    assert_eq!(a.settings.aliases, ["shop-api"]);
    assert!(
        s.to_toml()
            .contains(r#"{ name = "shop_back", aliases = ["api"] }"#),
        "{}",
        s.to_toml()
    );
    let (i, d) = import_one(
        "name: shop\nservices:\n  app:\n    image: a\n    networks:\n      back: {aliases: [api]}\n    container_name: shop-api\n    hostname: app1\n    dns: 1.1.1.1\n    extra_hosts: ['gw:10.0.0.1', 'v6=::1']\n  db:\n    image: a\n    networks: [back]\n  host:\n    image: a\n    network_mode: host\nnetworks:\n  back:\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    let a = component(&s, "app");
    assert_eq!(a.settings.networks, ["shop_back"]);
    assert_eq!(a.settings.aliases, ["api", "shop-api"]);
    assert_eq!(a.settings.hostname.as_deref(), Some("app1"));
    assert_eq!(a.settings.dns, ["1.1.1.1"]);
    assert_eq!(a.settings.extra_hosts, ["gw:10.0.0.1", "v6:::1"]);
    assert_eq!(component(&s, "db").settings.networks, ["shop_back"]);
    let h = component(&s, "host");
    assert_eq!(h.network, "host");
    assert!(h.settings.networks.is_empty());
    assert_eq!(
        refused("    network_mode: service:db\n  b:\n    image: b\n    network_mode: host\n    networks: [x]\n  c:\n    image: c\n    networks: {n: {ipv4_address: 10.0.0.2}, default: {aliases: [c1]}}\nnetworks:\n  n:\n    ipam: {config: [{subnet: 10.0.0.0/24}]}\n    driver: macvlan\n"),
        [
            "5:19: services.app.network_mode: not supported: \"service:db\": the agent gives each container its own network namespace (join a network both are on instead)",
            "9:15: services.b.networks: network_mode and networks cannot be combined",
            "16:13: networks.n.driver: not supported: the agent creates bridge networks (podman's default driver)",
        ]
    );
}

/// A network's `ipam` (default driver), `driver_opts`, `internal`, `enable_ipv6` and
/// `labels` become its `[networks.NAME]`; `ipv4_address`/`ipv6_address` the entry's
/// addresses; what podman 4.3 would ignore is reported.
#[test]
fn network_options_and_static_addresses() {
    let (i, d) = import_one(
        "name: shop\nservices:\n  dns:\n    image: a\n    networks:\n      net:\n        ipv4_address: 172.22.1.254\n        ipv6_address: fd4d::5\n        aliases: [resolver]\n  app:\n    image: a\n    networks: [net, back]\nnetworks:\n  net:\n    driver: bridge\n    driver_opts:\n      com.docker.network.bridge.name: br-shop\n      com.docker.network.driver.mtu: 1400\n    enable_ipv6: true\n    labels: [team=shop]\n    ipam:\n      driver: default\n      config:\n        - subnet: 172.22.1.0/24\n          gateway: 172.22.1.1\n          ip_range: 172.22.1.128/25\n        - subnet: fd4d::/64\n  back:\n    internal: true\n    driver_opts: {com.docker.network.enable_ipv6: 'false'}\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    let net = &s.networks["shop_net"];
    assert!(net.enable_ipv6 && !net.internal);
    assert_eq!(net.driver_opts["com.docker.network.bridge.name"], "br-shop");
    assert_eq!(net.driver_opts["com.docker.network.driver.mtu"], "1400");
    assert_eq!(net.labels["team"], "shop");
    let subnets: Vec<String> = net
        .subnets
        .iter()
        .map(|s| format!("{} {:?} {:?}", s.subnet, s.gateway, s.ip_range))
        .collect();
    assert_eq!(
        subnets,
        [
            "172.22.1.0/24 Some(\"172.22.1.1\") Some(\"172.22.1.128/25\")",
            "fd4d::/64 None None"
        ]
    );
    let back = &s.networks["shop_back"];
    assert!(back.internal && !back.enable_ipv6 && back.driver_opts.is_empty());
    let e = &component(&s, "dns").settings.networks[0];
    assert_eq!(e.name, "shop_net");
    assert_eq!(e.ipv4_address.as_deref(), Some("172.22.1.254"));
    assert_eq!(e.ipv6_address.as_deref(), Some("fd4d::5"));
    assert_eq!(component(&s, "dns").settings.aliases, ["resolver"]);
    assert_eq!(
        component(&s, "app").settings.networks,
        ["shop_net", "shop_back"]
    );
    assert_eq!(
        refused("    networks:\n      n: {ipv4_address: 10.9.0.5}\n      m: {ipv4_address: 10.0.0.300}\n      x: {ipv4_address: 10.0.0.5}\n      y: {}\nnetworks:\n  n:\n    ipam: {config: [{subnet: 10.0.0.0/24, aux_addresses: {a: 10.0.0.9}}, {gateway: 10.0.0.1}], options: {o: '1'}}\n    driver_opts: {com.docker.network.bridge.enable_icc: 'true'}\n  m:\n    ipam: {driver: dhcp}\n  x:\n    external: true\n    internal: true\n  y:\n    ipam: {config: [{subnet: fd00::/64}]}\n"),
        [
            "6:25: services.app.networks.n.ipv4_address: not supported: 10.9.0.5: the agent sets an address only inside a subnet the network's ipam.config declares",
            "7:25: services.app.networks.m.ipv4_address: \"10.0.0.300\" is not an IPv4 address",
            "8:25: services.app.networks.x.ipv4_address: not supported: 10.0.0.5: the agent sets an address only inside a subnet the network's ipam.config declares",
            "12:58: networks.n.ipam.config.aux_addresses: not supported: podman's compat API takes no auxiliary addresses",
            "12:74: networks.n.ipam.config: not supported: a config entry without a subnet (podman picks a network's subnet whole)",
            "12:105: networks.n.ipam.options: not supported: podman's compat API takes no IPAM driver options",
            "13:57: networks.n.driver_opts.com.docker.network.bridge.enable_icc: not supported: driver option \"com.docker.network.bridge.enable_icc\": podman 4.3's API ignores it (it honours com.docker.network.bridge.name, com.docker.network.driver.mtu and mtu)",
            "15:20: networks.m.ipam.driver: not supported: podman's compat API takes the default IPAM driver only",
            "18:15: networks.x: not supported: an external network is made outside the project: its options are not the project's to declare",
            "20:11: networks.y.ipam: not supported: subnet \"fd00::/64\" is IPv6, and the network has no enable_ipv6 = true",
        ]
    );
}

/// A service without `networks:` is on the project's default network, with the options
/// and the name the top level gives it.
#[test]
fn the_default_network_takes_its_top_level_options() {
    let (i, d) = import_one(
        "name: shop\nservices:\n  app:\n    image: a\nnetworks:\n  default:\n    ipam: {config: [{subnet: 10.30.0.0/24}]}\n",
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let s = service(&i);
    assert_eq!(component(&s, "app").settings.networks, ["default"]);
    assert_eq!(s.networks["default"].subnets[0].subnet, "10.30.0.0/24");
    let (i, _d) = import_one(
        "name: shop\nservices:\n  app:\n    image: a\nnetworks:\n  default:\n    name: edge\n",
    );
    assert_eq!(component(&service(&i), "app").settings.networks, ["edge"]);
}

#[test]
fn secrets_and_configs() {
    let (i, d) = import_with(
        &[("compose.yaml", "name: s\nservices:\n  app:\n    image: a\n    secrets: [db_pass, {source: api_key, target: key}]\n    configs: [nginx, {source: nginx, target: /etc/nginx.conf}]\nsecrets:\n  db_pass: {file: ./db_pass.txt}\n  api_key: {file: /abs/key}\nconfigs:\n  nginx: {file: ./nginx.conf}\n")],
        |_| {},
    );
    assert!(
        problems(&i, d.path()).is_empty(),
        "{:?}",
        problems(&i, d.path())
    );
    let c = component(&service(&i), "app").clone();
    let root = d.path().join("shop").display().to_string();
    let sec: Vec<String> = c
        .settings
        .secrets
        .iter()
        .map(|s| format!("{}>{}", s.source.replace(&root, "D"), s.target))
        .collect();
    assert_eq!(
        sec,
        [
            "D/db_pass.txt>/run/secrets/db_pass",
            "/abs/key>/run/secrets/key"
        ]
    );
    let v: Vec<String> = c
        .volumes
        .iter()
        .map(|v| v.bind().replace(&root, "D"))
        .collect();
    assert_eq!(
        v,
        ["D/nginx.conf:/nginx:ro", "D/nginx.conf:/etc/nginx.conf:ro"]
    );
    assert_eq!(
        refused("    secrets: [{source: s, target: t, mode: 0400}, nope]\nsecrets:\n  s: {environment: PASS}\n"),
        [
            "5:44: services.app.secrets.mode: not supported: the agent bind-mounts the file as it is: set its owner and mode on the host",
            "5:51: services.app.secrets: \"nope\" is not defined in the top-level secrets:",
            "7:20: secrets.s.environment: not supported: from a variable or inline: write it to a file (chmod 600 for a secret) and name it in file:",
        ]
    );
}

#[test]
fn restart_policies() {
    use crate::model::RestartPolicy as R;
    for (v, want) in [
        ("'no'", R::No),
        ("always", R::Always),
        ("on-failure", R::OnFailure),
        ("unless-stopped", R::UnlessStopped),
    ] {
        assert_eq!(app(&format!("    restart: {v}\n")).restart, want, "{v}");
    }
    assert_eq!(
        refused("    restart: sometimes\n"),
        ["5:14: services.app.restart: \"sometimes\" is not one of no, always, unless-stopped, on-failure[:N]"]
    );
}

#[test]
fn every_key_the_agent_cannot_express_is_refused_with_its_reason() {
    for (key, why) in super::service::UNSUPPORTED {
        let got = refused(&format!("    {key}: x\n"));
        assert_eq!(
            got,
            [format!("5:5: services.app.{key}: not supported: {why}")],
            "{key}"
        );
    }
    assert_eq!(
        refused("    oom_kill_disable: true\n    entrypoint: ''\n    stop_grace_period: 1500ms\n    pull_policy: daily\n    scale: 2\n    dns_opt: [use-vc]\n    logging: {driver: syslog}\n  b:\n    image: b\n    logging: {options: {max-size: 1m, max-file: '3'}}\n    extra_hosts: ['h:host-gateway']\n    links: ['app:alias']\n"),
        [
            "5:23: services.app.oom_kill_disable: not supported: disabling the OOM killer is not among the agent's keys",
            "6:17: services.app.entrypoint: not supported: an empty entrypoint clears the image's ENTRYPOINT, which the agent cannot express: name the program",
            "7:24: services.app.stop_grace_period: not supported: \"1500ms\": the agent's stop_timeout is whole seconds",
            "8:18: services.app.pull_policy: not supported: \"daily\": the agent pulls never, when missing or before every create",
            "9:12: services.app.scale: not supported: 2 replicas: a component is one container",
            "10:14: services.app.dns_opt: not supported: resolver options are not among the agent's keys",
            "11:14: services.app.logging.driver: not supported: log driver \"syslog\": podman has json-file (k8s-file), journald, none and passthrough",
            "14:49: services.b.logging.options.max-file: not supported: podman 4.3's API applies only the log options max-size and path (it ignores the others)",
            "15:19: services.b.extra_hosts: not supported: h:host-gateway: the agent takes an IP address",
            "16:13: services.b.links: not supported: the alias \"alias\": a link's alias is seen by one container, the agent's aliases by all",
        ]
    );
    // An empty platform (sentry's `${DOCKER_PLATFORM:-}` unset) is no platform.
    let (i, d) = import_one("name: s\nservices:\n  app:\n    image: a\n    platform: ''\n  b:\n    image: b\n    platform: linux/arm64\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:8:5: services.b.platform: not supported: the agent runs the image as the local store has it: pull the platform's image first"]
    );
    assert!(lines_of(&i, d.path(), &[Kind::Note]).contains(
        &"D/compose.yaml:5:15: services.app.platform: note: empty: no platform, as compose takes it".to_string()
    ));
    assert_eq!(
        refused("    build: .\n    image: again\n"),
        ["6:5: yaml: mapping key \"image\" already defined at line 4"]
    );
    let (i, d) = import_one("name: s\nservices:\n  app:\n    build: .\n  db:\n    image: pg\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:4:5: services.app.build: not supported: the agent never builds: build the image and name it in image:"]
    );
    // With --partial: the other services, and the one that needs a build named at the top.
    let text = i.text.as_ref().unwrap();
    assert!(
        text.contains("\n# not imported: services.app.build (compose.yaml:4:5)"),
        "{text}"
    );
    assert_eq!(service(&i).components.len(), 1);
    let (i, d) = import_one("name: s\nservices:\n  app:\n    user: x\n");
    assert_eq!(
        problems(&i, d.path()),
        ["D/compose.yaml:3:3: services.app: a service needs image: (the agent never builds)"]
    );
}
