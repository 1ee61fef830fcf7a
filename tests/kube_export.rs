//! Issue 18: `mcp-agent export --format kube`. Every export (of the example services and
//! of a service using every key, in each of its shapes) validates offline against the
//! Kubernetes 1.31 schemas with PyPI's kubernetes-validate (pinned in scripts/install-deps);
//! and `podman kube play` of the export, on a private podman 4.3, runs the containers the
//! agent itself runs for the same services — image, command, env, ports, mounts, user,
//! capabilities, read-only root and privileged compared from `podman inspect` — which
//! `podman kube down` removes.

mod agentkit;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentkit::Agent;
use common::{free_port, wait_for, PrivatePodman};
use serde_json::Value;

const IMAGE: &str = "localhost/busybox:latest";
/// The Kubernetes version whose schemas the exports are validated against (one that
/// kubernetes-validate 1.37.0 bundles).
const KUBERNETES: &str = "1.31.0";
/// The host ports routes are allocated from (distinct from every other test's range).
const ROUTE_RANGE: (u16, u16) = (25400, 25419);
/// An external volume: podman's, made by the test before the agent mounts it.
const EXTERNAL: &str = "kube-ext";

/// kubernetes-validate, as scripts/install-deps installs it (a venv under target/), or
/// `MCP_KUBE_VALIDATE`. Missing, the test fails: CI must run it.
fn validator() -> PathBuf {
    let p = std::env::var_os("MCP_KUBE_VALIDATE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/kube-validate/bin/kubernetes-validate")
        },
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} is missing: scripts/install-deps installs kubernetes-validate there",
        p.display()
    );
    p
}

/// Validates a YAML file against the Kubernetes schemas, strictly (unknown fields fail).
fn validate(file: &Path) {
    let out = Command::new(validator())
        .args(["-k", KUBERNETES, "--strict", "--quiet"])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "{} does not validate against Kubernetes {KUBERNETES}:\n{text}\n{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// The files the services read, under `dir`.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        let f = |p: &str, text: &str| {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        f("shop/app.env", "DB_HOST=db\nDB_PORT=5432\n");
        f("shop/db_password", "s3cret-shop\n");
        // The db runs as 1000:1000 and reads its secret through the agent's bind mount.
        std::os::unix::fs::chown(dir.join("shop/db_password"), Some(1000), Some(1000)).unwrap();
        f("www/index.html", "hello\n");
        f(
            "full/app.env",
            "FROM_FILE=one\nSHADOWED=file\nexport SPACED='two words'\n",
        );
        f("full/more.env", "MORE=\"x\\ny\"\n");
        f("full/pw", "hunter2\n");
        f("full/token", "t0ken");
        std::fs::create_dir_all(dir.join("full/host")).unwrap();
        Files {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).display().to_string()
    }
}

/// config/examples/*.toml, on this test's image, files and free ports.
fn examples(files: &Files) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("localhost/mcp-demo:latest", IMAGE)
                .replace("/tmp/mcp-demo-shop", &files.path("shop"))
                .replace("/tmp/mcp-demo-www", &files.path("www"))
                .replace(":18480:", &format!(":{}:", free_port()))
                .replace(":18481:", &format!(":{}:", free_port()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 2, "{out:?}");
    out
}

/// A service using every key of a component (each shape: named, external and host
/// volumes, env files and secrets, routes of both modes, a health check, a one-shot, a
/// privileged and a stopped component).
fn every_key(files: &Files) -> String {
    format!(
        r#"
name = "full"

[volumes.ext]
external = true
name = "{EXTERNAL}"

[[components]]
name = "app"
image = "{IMAGE}"
entrypoint = ["sh", "-c"]
cmd = ["trap 'exit 0' USR1 TERM; while true; do nc -l -p 8080 </dev/null; done"]
working_dir = "/data"
init = true
stop_signal = "SIGUSR1"
stop_timeout = "3s"
stdin_open = true
cap_add = ["NET_ADMIN", "CAP_SYS_TIME"]
cap_drop = ["MKNOD"]
security_opt = ["no-new-privileges"]
devices = ["/dev/null:/dev/mynull:rw"]
sysctls = {{ "net.ipv4.ip_unprivileged_port_start" = "80" }}
ulimits = {{ nofile = {{ soft = 512, hard = 1024 }}, nproc = 1024 }}
shm_size = "32m"
memory = "128m"
memory_reservation = "64m"
cpus = 0.5
pids_limit = 100
group_add = ["10"]
labels = {{ "org.example.tier" = "web", "example.org/note" = "not a label value", "team name" = "a b" }}
log_driver = "k8s-file"
log_opts = {{ max-size = "1m" }}
env = {{ MODE = "full", SHADOWED = "env", QUOTED = "a: b # c", EMPTY = "" }}
env_file = ["{app_env}", "{more_env}"]
secrets = [{{ source = "{pw}", target = "/run/secrets/db_password" }}, {{ source = "{token}", target = "/etc/app/token" }}]
volumes = ["data:/data", "{host}:/x:ro", "ext:/ext", {{ source = "{made}", target = "/made", create_host_path = true }}]
tmpfs = ["/run:size=64m,mode=1777", "/tmp"]
read_only = true
networks = ["default"]
aliases = ["www"]
hostname = "app"
dns = ["10.0.0.53"]
dns_search = ["internal.example.org"]
extra_hosts = ["gw.internal:10.0.0.1"]
pull = "never"
ports = ["127.0.0.1:{p1}:7000/tcp", "{p2}:7001/udp"]
depends_on = {{ job = "completed" }}

# A tcp check, not an exec one: `--once` may exit with an exec check under way, and
# podman 4.3 then keeps that exec session's conmon even after the container is removed.
[components.health]
tcp = {{ port = 8080 }}
interval = "5s"
timeout = "2s"
retries = 2
start_period = "10s"
start_interval = "1s"

[[components.routes]]
name = "http"
port = 8080
hostname = "app.example.org"

[[components.routes]]
name = "raw"
port = 9000
mode = "l4"

[[components]]
name = "priv"
image = "{IMAGE}"
privileged = true
networks = ["default"]

[[components]]
name = "job"
image = "{IMAGE}"
cmd = ["sh", "-c", "echo done"]
oneshot = true

[[components]]
name = "user"
image = "{IMAGE}"
user = "1000:1000"
cmd = ["sleep", "1000"]
restart = "on-failure"
tty = true

[[components]]
name = "off"
image = "{IMAGE}"
desired_state = "stopped"
"#,
        app_env = files.path("full/app.env"),
        more_env = files.path("full/more.env"),
        pw = files.path("full/pw"),
        token = files.path("full/token"),
        host = files.path("full/host"),
        made = files.path("full/made"),
        p1 = free_port(),
        p2 = free_port(),
    )
}

/// The agent's config: routes from [`ROUTE_RANGE`].
fn agent_extra() -> String {
    format!("[ports]\nrange = \"{}-{}\"\n", ROUTE_RANGE.0, ROUTE_RANGE.1)
}

/// The shapes of the export, each validated.
const SHAPES: &[&[&str]] = &[
    &[],
    &["--pod"],
    &["--host-paths"],
    &["--config-maps"],
    &["--pod", "--host-paths", "--config-maps"],
];

fn export(agent: &Agent, flags: &[&str], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec!["export", "--format", "kube", "-o", dir.to_str().unwrap()];
    args.extend(flags);
    let r = agent.ok(&args);
    let files: Vec<PathBuf> = r.stdout.lines().map(PathBuf::from).collect();
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} holds secrets' contents", f.display());
    }
    files
}

#[test]
fn every_export_validates_against_the_kubernetes_schemas() {
    // No podman needed: `apply` and `export` touch no container.
    let podman_free = tempfile::tempdir().unwrap();
    let files = Files::new(podman_free.path());
    let db = podman_free.path().join("state/registry.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let config = podman_free.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nnode = \"testnode\"\n[database]\npath = \"{}\"\n[podman]\nsocket = \"unix:///nonexistent/podman.sock\"\n{}",
            db.display(),
            agent_extra()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(agentkit::bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("MCP_AGENT_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let mut paths = Vec::new();
    for (name, text) in examples(&files)
        .into_iter()
        .chain([("full.toml".to_string(), every_key(&files))])
    {
        let p = podman_free.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p.display().to_string());
    }
    let mut args = vec!["apply"];
    args.extend(paths.iter().map(String::as_str));
    run(&args);
    for (i, flags) in SHAPES.iter().enumerate() {
        let dir = podman_free.path().join(format!("out-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["export", "--format", "kube", "-o", dir.to_str().unwrap()];
        args.extend(*flags);
        let out = run(&args);
        let listed: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // What does not carry is on stderr and in the file, and no secret is on stderr.
        for what in [
            "full/app: init = true",
            "full/app: devices",
            "full/app: ulimits",
            "full/app: label \"team name\"",
        ] {
            assert!(stderr.contains(what), "{what} not on stderr:\n{stderr}");
        }
        for secret in ["hunter2", "t0ken", "s3cret-shop", "two words"] {
            assert!(!stderr.contains(secret), "{secret} on stderr:\n{stderr}");
        }
        for f in &listed {
            validate(Path::new(f));
        }
        let full = std::fs::read_to_string(dir.join("full.yaml")).unwrap();
        assert!(full.contains("#   full/app: init = true"), "{full}");
        assert_eq!(
            full.contains("kind: Deployment"),
            !flags.contains(&"--pod"),
            "{flags:?}"
        );
        assert_eq!(full.contains("kind: Job"), !flags.contains(&"--pod"));
        assert_eq!(
            full.contains("hostPath:"),
            flags.contains(&"--host-paths"),
            "{flags:?}"
        );
        assert!(full.contains("kind: Ingress") && full.contains("host: app.example.org"));
        assert!(
            full.contains("tcpSocket:") && full.contains("startupProbe:"),
            "{full}"
        );
        assert!(
            full.contains("example.org/note: \"not a label value\""),
            "{full}"
        );
    }
    // To stdout, every service (or those named) in one stream, which validates too.
    let out = run(&["export", "--format", "kube", "shop", "demo"]);
    let all = podman_free.path().join("all.yaml");
    std::fs::write(&all, &out.stdout).unwrap();
    validate(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("service \"shop\"") && text.contains("service \"demo\""));
    // The flags of kube are refused with toml.
    let bad = Command::new(agentkit::bin())
        .arg("--config")
        .arg(&config)
        .args(["export", "--pod"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// What is compared of a container, from libpod's inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    image: String,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    ports: BTreeSet<String>,
    /// (destination, read-write); a secret's file as its directory (Kubernetes mounts a
    /// Secret's files as a directory), tmpfs left out (below).
    mounts: BTreeSet<(String, bool)>,
    user: String,
    caps: BTreeSet<String>,
    read_only: bool,
    privileged: bool,
}

/// Env podman adds by itself to one or the other.
const PODMAN_ENV: &[&str] = &["PATH", "HOSTNAME", "container", "TERM", "HOME"];

fn seen(c: &Value, secret_targets: &BTreeSet<String>, tmpfs: &BTreeSet<String>) -> Seen {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut argv = vec![c["Path"].as_str().unwrap().to_string()];
    argv.extend(strs(&c["Args"]));
    // `init = true` does not carry (the export says so): the agent's process is podman's
    // init, then the command.
    if argv.starts_with(&["/run/podman-init".to_string(), "--".to_string()]) {
        argv.drain(..2);
    }
    let env = strs(&c["Config"]["Env"])
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (!PODMAN_ENV.contains(&k)).then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    // A pod's container publishes through its pod's infra container: NetworkSettings
    // shows the ports of the network namespace either way.
    let mut ports = BTreeSet::new();
    if let Some(m) = c["NetworkSettings"]["Ports"].as_object() {
        for (inside, binds) in m {
            for b in binds.as_array().into_iter().flatten() {
                ports.insert(format!(
                    "{}:{}:{inside}",
                    b["HostIp"].as_str().unwrap_or(""),
                    b["HostPort"].as_str().unwrap_or("")
                ));
            }
        }
    }
    let mounts = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let d = m["Destination"].as_str().unwrap();
            if tmpfs.contains(d) {
                return None;
            }
            let d = if secret_targets.contains(d) {
                d.rsplit_once('/').unwrap().0.to_string()
            } else {
                d.to_string()
            };
            Some((d, m["RW"].as_bool().unwrap()))
        })
        .collect();
    Seen {
        image: c["ImageName"].as_str().unwrap().to_string(),
        argv,
        env,
        ports,
        mounts,
        user: c["Config"]["User"].as_str().unwrap_or("").to_string(),
        caps: strs(&c["EffectiveCaps"]).into_iter().collect(),
        read_only: c["HostConfig"]["ReadonlyRootfs"].as_bool().unwrap_or(false),
        privileged: c["HostConfig"]["Privileged"].as_bool().unwrap_or(false),
    }
}

/// Inside a running container: each secret's contents, and whether each tmpfs path is
/// a mount point.
fn inside(podman: &PrivatePodman, name: &str, secrets: &[String], tmpfs: &[String]) -> String {
    let mut script = String::new();
    for s in secrets {
        script.push_str(&format!("echo {s}; cat {s}; echo; "));
    }
    for t in tmpfs {
        script.push_str(&format!("echo {t}; grep -c ' {t} ' /proc/mounts; "));
    }
    if script.is_empty() {
        return String::new();
    }
    podman.podman_ok(&["exec", name, "sh", "-c", &script])
}

/// One component as the test knows it: its container's name, which of its mounts are
/// secrets and tmpfs, and whether it runs (a one-shot exits; a stopped one has none).
struct Expect {
    service: String,
    component: String,
    secrets: Vec<String>,
    tmpfs: Vec<String>,
    oneshot: bool,
    stopped: bool,
}

/// The components of the examples and of [`every_key`].
fn components() -> Vec<Expect> {
    let list = [
        ("demo", "web"),
        ("demo", "worker"),
        ("shop", "db"),
        ("shop", "app"),
        ("shop", "worker"),
        ("full", "app"),
        ("full", "priv"),
        ("full", "job"),
        ("full", "user"),
        ("full", "off"),
    ];
    list.into_iter()
        .map(|(service, component)| {
            let full = service == "full";
            Expect {
                secrets: match (full, component) {
                    (true, "app") => {
                        vec!["/run/secrets/db_password".into(), "/etc/app/token".into()]
                    }
                    (false, "db") => vec!["/run/secrets/db_password".into()],
                    _ => vec![],
                },
                tmpfs: match (full, component) {
                    (true, "app") => vec!["/run".into(), "/tmp".into()],
                    (false, "app") => vec!["/www".into()],
                    _ => vec![],
                },
                oneshot: full && component == "job",
                stopped: full && component == "off",
                service: service.into(),
                component: component.into(),
            }
        })
        .collect()
}

/// Every container's fields, by component, and what is inside the running ones.
fn observe(
    podman: &PrivatePodman,
    expect: &[Expect],
    name_of: &dyn Fn(&Expect) -> String,
) -> BTreeMap<String, (Seen, String)> {
    let mut out = BTreeMap::new();
    for e in expect {
        let name = name_of(e);
        let Some(c) = podman.inspect(&name) else {
            assert!(
                e.stopped,
                "no container {name} for {}/{}: {}",
                e.service,
                e.component,
                podman.podman_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
            );
            continue;
        };
        assert!(!e.stopped, "{name} exists for a stopped component");
        let s = seen(
            &c,
            &e.secrets.iter().cloned().collect(),
            &e.tmpfs.iter().cloned().collect(),
        );
        let within = if e.oneshot {
            String::new()
        } else {
            inside(podman, &name, &e.secrets, &e.tmpfs)
        };
        out.insert(format!("{}/{}", e.service, e.component), (s, within));
    }
    out
}

fn ps(podman: &PrivatePodman) -> String {
    podman.podman_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
}

/// Removes every pod of `podman` when dropped (declared after it, so it runs first):
/// a failed assertion leaves no pod's infra container for the harness to kill.
struct Pods<'a>(&'a PrivatePodman);

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        let _ = self.0.podman(&["pod", "rm", "-af", "-t", "0"]);
    }
}

#[test]
fn kube_play_of_the_export_runs_the_containers_the_agent_runs_and_kube_down_removes_them() {
    let podman = PrivatePodman::start();
    let _pods = Pods(&podman);
    podman.import_busybox_with(IMAGE, &["ENV PATH=/bin"]);
    podman.podman_ok(&["volume", "create", EXTERNAL]);
    let work = tempfile::tempdir().unwrap();
    let files = Files::new(work.path());
    let agent = Agent::new(&podman, &agent_extra());
    let mut services = examples(&files);
    services.push(("full.toml".into(), every_key(&files)));
    for (name, text) in &services {
        agent.apply(name, text);
    }
    let r = agent.ok(&["--once"]);
    assert!(r.stdout.contains(", failed 0,"), "{r}");
    let expect = components();
    let container = |e: &Expect| {
        if e.service == e.component {
            e.service.clone()
        } else {
            format!("{}-{}", e.service, e.component)
        }
    };
    wait_for("the one-shot to exit", Duration::from_secs(30), || {
        podman
            .inspect("full-job")
            .is_some_and(|c| c["State"]["Status"] == "exited")
    });
    let mut by_agent = observe(&podman, &expect, &container);
    // The agent's loopback publish of the l7 route is its proxy's, which an Ingress
    // replaces: not carried (the export says so).
    let (app, _) = by_agent.get_mut("full/app").unwrap();
    let l7: Vec<String> = app
        .ports
        .iter()
        .filter(|p| p.starts_with("127.0.0.1:") && p.ends_with(":8080/tcp"))
        .cloned()
        .collect();
    assert_eq!(l7.len(), 1, "{:?}", app.ports);
    app.ports.remove(&l7[0]);
    assert_eq!(
        app.ports.len(),
        3,
        "two fixed publishes and the l4 route: {:?}",
        app.ports
    );
    // The agent's own containers go: kube play's take their ports and names' places.
    podman.podman_ok(&["rm", "-af", "-t", "0"]);

    for (shape, flags) in [
        ("pods", &["--pod", "--host-paths", "--config-maps"][..]),
        ("deployments", &["--host-paths", "--config-maps"][..]),
    ] {
        let out = work.path().join(shape);
        let yamls = export(&agent, flags, &out);
        assert_eq!(yamls.len(), services.len());
        for y in &yamls {
            validate(y);
            let r = podman.podman(&["kube", "play", y.to_str().unwrap()]);
            assert!(
                r.status.success(),
                "{shape}: podman kube play {}: {}\n{}",
                y.display(),
                String::from_utf8_lossy(&r.stderr),
                std::fs::read_to_string(y).unwrap()
            );
        }
        // Podman names a pod's container POD-CONTAINER, a Deployment's pod NAME-pod-0.
        let played = |e: &Expect| {
            let pod = container(&Expect {
                service: e.service.clone(),
                component: e.component.clone(),
                secrets: vec![],
                tmpfs: vec![],
                oneshot: false,
                stopped: false,
            });
            if shape == "pods" {
                format!("{pod}-{}", e.component)
            } else {
                format!("{pod}-pod-0-{}", e.component)
            }
        };
        // Kubernetes has no Job in podman 4.3's kube play (ignored): a one-shot runs
        // only as a Pod (--pod).
        let expect_here: Vec<Expect> = expect
            .iter()
            .filter(|e| shape == "pods" || !e.oneshot)
            .map(|e| Expect {
                service: e.service.clone(),
                component: e.component.clone(),
                secrets: e.secrets.clone(),
                tmpfs: e.tmpfs.clone(),
                oneshot: e.oneshot,
                stopped: e.stopped,
            })
            .collect();
        if shape == "pods" {
            wait_for("the one-shot pod to exit", Duration::from_secs(30), || {
                podman
                    .inspect("full-job-job")
                    .is_some_and(|c| c["State"]["Status"] == "exited")
            });
        } else {
            assert!(
                podman.inspect("full-job-pod-0-job").is_none(),
                "{}",
                ps(&podman)
            );
        }
        for e in expect_here.iter().filter(|e| !e.oneshot && !e.stopped) {
            let name = played(e);
            wait_for(&format!("{name} to run"), Duration::from_secs(30), || {
                podman.running(&name)
            });
        }
        let by_kube = observe(&podman, &expect_here, &played);
        let mut compared = 0;
        for (key, (kube, kube_inside)) in &by_kube {
            let (agent_seen, agent_inside) = &by_agent[key];
            assert_eq!(
                agent_seen, kube,
                "{shape}: {key} differs (left: the agent's, right: kube play's)"
            );
            assert_eq!(agent_inside, kube_inside, "{shape}: {key} inside");
            compared += 1;
        }
        let want = expect_here.iter().filter(|e| !e.stopped).count();
        assert_eq!(compared, want, "{shape}");
        // The file's env, secrets and mounts really are there.
        let (app, app_inside) = &by_kube["full/app"];
        assert_eq!(app.env["FROM_FILE"], "one");
        assert_eq!(app.env["SHADOWED"], "env");
        assert_eq!(app.env["MORE"], "x\ny");
        assert_eq!(app.env["PORT_RAW"], "9000");
        assert!(
            app_inside.contains("/run/secrets/db_password\nhunter2\n"),
            "{app_inside}"
        );
        assert!(app.caps.contains("CAP_NET_ADMIN") && !app.caps.contains("CAP_MKNOD"));

        // kube down removes every container and pod it made.
        for y in &yamls {
            podman.podman_ok(&["kube", "down", y.to_str().unwrap()]);
        }
        assert_eq!(ps(&podman), "", "{shape}: left after kube down");
        assert_eq!(podman.podman_ok(&["pod", "ls", "-q"]), "", "{shape}");
        // Podman 4.3's kube down leaves the volumes kube play made (claims, ConfigMaps):
        // removed here, but the external one, which is the test's.
        for v in podman
            .podman_ok(&["volume", "ls", "-q"])
            .lines()
            .filter(|v| *v != EXTERNAL)
        {
            podman.podman_ok(&["volume", "rm", v]);
        }
    }
    podman.podman_ok(&["volume", "rm", EXTERNAL]);
}
