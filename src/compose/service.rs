//! One compose service to one component: the dispatch over its keys, and the process,
//! security, resource and metadata keys (storage, networks and the lifecycle keys have
//! modules of their own). Each key is carried over, or reported with the reason.

use std::collections::BTreeSet;

use super::project::Project;
use super::values::{parse_duration, parse_size, shell_words};
use super::yaml::{Node, Pos, Value};
use crate::model::{Bytes, Component, DesiredState, PullPolicy, RestartPolicy, Seconds, Settings};

/// A compose service mapped: its component and where each of the component's keys came
/// from (the service file's key, the compose position and key path), so that a value
/// the agent's own rules refuse is reported at its compose key.
pub(super) struct Mapped {
    pub compose: String,
    pub component: Component,
    pub origins: Vec<(String, Pos, String)>,
    /// No component can be made of it (it has no image, only `build:`).
    pub skip: bool,
}

/// The mapping of one service under way.
pub(super) struct Svc<'p> {
    pub p: &'p mut Project,
    pub name: String,
    pub c: Component,
    pub origins: Vec<(String, Pos, String)>,
    /// Another service waits for this one to complete: it is a one-shot component.
    pub oneshot: bool,
}

/// Keys a compose service may have that the agent cannot express, with the reason.
pub(super) const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "build",
        "the agent never builds: build the image and name it in image:",
    ),
    (
        "annotations",
        "podman's OCI annotations are not among the agent's keys",
    ),
    (
        "blkio_config",
        "block I/O weights and limits are not among the agent's keys",
    ),
    ("cpu_count", "a Windows setting"),
    ("cpu_percent", "a Windows setting"),
    (
        "cpu_shares",
        "CPU shares are not among the agent's keys: limit with cpus",
    ),
    (
        "cpu_period",
        "the CFS period is not among the agent's keys: limit with cpus",
    ),
    (
        "cpu_quota",
        "the CFS quota is not among the agent's keys: limit with cpus",
    ),
    (
        "cpu_rt_runtime",
        "real-time scheduling is not among the agent's keys",
    ),
    (
        "cpu_rt_period",
        "real-time scheduling is not among the agent's keys",
    ),
    ("cpuset", "CPU pinning is not among the agent's keys"),
    (
        "cgroup",
        "the agent gives each container its own cgroup namespace, podman's default",
    ),
    (
        "cgroup_parent",
        "the agent's containers are in podman's default cgroup parent",
    ),
    ("credential_spec", "a Windows setting"),
    (
        "device_cgroup_rules",
        "device cgroup rules are not among the agent's keys: name the devices",
    ),
    (
        "domainname",
        "the NIS domain name is not among the agent's keys",
    ),
    (
        "external_links",
        "links to containers outside the project: join their network instead",
    ),
    (
        "gpus",
        "GPUs are not among the agent's keys: name the devices",
    ),
    (
        "ipc",
        "the agent gives each container its own IPC namespace",
    ),
    ("isolation", "a Windows setting"),
    ("label_file", "label files are not read: write the labels"),
    ("mac_address", "the agent sets no addresses on its networks"),
    ("mem_swappiness", "swappiness is not among the agent's keys"),
    (
        "memswap_limit",
        "the swap limit is not among the agent's keys",
    ),
    (
        "models",
        "AI models are docker's model runner, which podman has not",
    ),
    (
        "oom_score_adj",
        "the OOM score is not among the agent's keys",
    ),
    (
        "pid",
        "the agent gives each container its own PID namespace",
    ),
    (
        "post_start",
        "lifecycle hooks are not among the agent's keys",
    ),
    ("pre_stop", "lifecycle hooks are not among the agent's keys"),
    ("provider", "provider services are docker compose plugins"),
    ("runtime", "the agent uses podman's default OCI runtime"),
    (
        "storage_opt",
        "storage driver options are not among the agent's keys",
    ),
    (
        "use_api_socket",
        "the agent does not mount the engine's API socket into containers",
    ),
    (
        "uts",
        "the agent gives each container its own UTS namespace",
    ),
    (
        "volumes_from",
        "the agent mounts what a component names: repeat the volumes",
    ),
];

/// Compose's `stop_grace_period` when a service has none.
pub(super) const COMPOSE_STOP_GRACE_SECS: u32 = 10;

/// Keys handled by the other modules, or before the mapping.
const ELSEWHERE: &[&str] = &[
    "profiles",
    "extends",
    "healthcheck",
    "depends_on",
    "restart",
    "deploy",
    "networks",
    "network_mode",
    "hostname",
    "dns",
    "dns_search",
    "dns_opt",
    "extra_hosts",
    "container_name",
    "links",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "secrets",
    "configs",
    "env_file",
];

impl Svc<'_> {
    pub fn key(&self, k: &str) -> String {
        format!("services.{}.{k}", self.name)
    }

    /// Records that service-file key `agent` came from `node` at compose key `k`.
    pub fn from(&mut self, agent: &str, node: &Node, k: &str) {
        let key = self.key(k);
        self.origins.push((agent.to_string(), node.at, key));
    }

    pub fn unsupported(&mut self, node: &Node, k: &str, why: impl Into<String>) {
        let key = self.key(k);
        self.p.findings.unsupported(node.at, &key, why);
    }

    pub fn invalid(&mut self, node: &Node, k: &str, why: impl Into<String>) {
        let key = self.key(k);
        self.p.findings.invalid(node.at, &key, why);
    }

    pub fn note(&mut self, node: &Node, k: &str, why: impl Into<String>) {
        let key = self.key(k);
        self.p.findings.note(node.at, &key, why);
    }

    pub fn text(&mut self, n: &Node, k: &str) -> Option<String> {
        let key = self.key(k);
        self.p.findings.text(n, &key)
    }

    pub fn texts(&mut self, n: &Node, k: &str) -> Vec<String> {
        let key = self.key(k);
        self.p.findings.texts(n, &key)
    }

    pub fn bool(&mut self, n: &Node, k: &str) -> bool {
        let key = self.key(k);
        self.p.findings.bool(n, &key).unwrap_or(false)
    }

    pub fn s(&mut self) -> &mut Settings {
        &mut self.c.settings
    }

    /// A size key (`512m`, `1.5g`, bytes).
    pub fn size(&mut self, n: &Node, k: &str) -> Option<Bytes> {
        let t = self.text(n, k)?;
        match parse_size(&t) {
            Ok(b) if b > 0 => Some(Bytes(b)),
            Ok(_) => {
                self.unsupported(
                    n,
                    k,
                    format!("{t:?}: a size of 0 (no limit) is podman's default: leave the key out"),
                );
                None
            }
            Err(e) => {
                self.invalid(n, k, e);
                None
            }
        }
    }

    /// A command or entrypoint: a list, or a string split into words.
    fn words(&mut self, n: &Node, k: &str) -> Option<Vec<String>> {
        match &n.value {
            Value::Null => None,
            Value::Scalar { text, .. } => match shell_words(text) {
                Ok(w) => Some(w),
                Err(e) => {
                    self.invalid(n, k, e);
                    None
                }
            },
            Value::Seq(_) => Some(self.texts(n, k)),
            Value::Map(_) => {
                self.invalid(n, k, "must be a string or a list of strings");
                None
            }
        }
    }

    pub fn key_values(
        &mut self,
        n: &Node,
        k: &str,
    ) -> std::collections::BTreeMap<String, Option<String>> {
        let key = self.key(k);
        self.p.findings.key_values(n, &key)
    }
}

impl Project {
    /// Every enabled service as a component, in order.
    pub(super) fn map_services(&mut self) -> Vec<Mapped> {
        let oneshots = self.oneshots();
        let services = self.services.clone();
        let mut out = Vec::new();
        for (k, node) in services {
            self.findings.service = Some(k.name.clone());
            let mut svc = Svc {
                name: k.name.clone(),
                c: Component {
                    name: self.components.get(&k.name).cloned().unwrap_or_default(),
                    image: String::new(),
                    desired_state: DesiredState::Running,
                    network: String::new(),
                    user: None,
                    restart: RestartPolicy::No,
                    cmd: Vec::new(),
                    env: Default::default(),
                    volumes: Vec::new(),
                    ports: Vec::new(),
                    settings: Settings::default(),
                    routes: Vec::new(),
                },
                origins: Vec::new(),
                oneshot: oneshots.contains(&k.name),
                p: self,
            };
            svc.origins
                .push(("name".into(), k.at, format!("services.{}", k.name)));
            svc.map(&node, k.at);
            let skip = node.get("image").is_none();
            out.push(Mapped {
                compose: svc.name,
                component: svc.c,
                origins: svc.origins,
                skip,
            });
        }
        self.findings.service = None;
        out
    }

    /// The services another waits for with `service_completed_successfully`.
    fn oneshots(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (_, node) in &self.services {
            let Some(deps) = node.get("depends_on").and_then(Node::map) else {
                continue;
            };
            for (k, v) in deps {
                if v.get("condition").and_then(Node::text) == Some("service_completed_successfully")
                {
                    out.insert(k.name.clone());
                }
            }
        }
        out
    }
}

impl Svc<'_> {
    fn map(&mut self, node: &Node, at: Pos) {
        let entries = node.map().unwrap_or(&[]).to_vec();
        // With build: only, the build key says why there is no component.
        if node.get("image").is_none() && node.get("build").is_none() {
            let key = format!("services.{}", self.name);
            self.p
                .findings
                .invalid(at, &key, "a service needs image: (the agent never builds)");
        }
        for (k, v) in &entries {
            let name = k.name.as_str();
            if name.starts_with("x-") || ELSEWHERE.contains(&name) {
                continue;
            }
            // A key refused whole is reported at the key, a value at the value.
            let at_key = Node::new(Value::Null, k.at);
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(u, _)| *u == name) {
                self.unsupported(&at_key, name, *why);
                continue;
            }
            self.key_(name, v, &at_key);
        }
        // Compose waits 10 s after the stop signal by default; the agent, without a
        // stop_timeout, lets podman kill a replaced container at once.
        if node.get("stop_grace_period").is_none() {
            self.origins
                .push(("stop_timeout".into(), at, format!("services.{}", self.name)));
            self.s().stop_timeout = Some(Seconds(COMPOSE_STOP_GRACE_SECS));
        }
        super::storage::map(self, node);
        super::network::map(self, node);
        super::lifecycle::map(self, node);
        // Environment last: the component's env wins over its env files, as in compose.
    }

    fn key_(&mut self, k: &str, v: &Node, at_key: &Node) {
        match k {
            "image" => {
                if let Some(t) = self.text(v, k) {
                    self.from("image", v, k);
                    self.c.image = t;
                }
            }
            "command" => {
                if let Some(w) = self.words(v, k) {
                    self.from("cmd", v, k);
                    self.c.cmd = w;
                }
            }
            "entrypoint" => {
                if let Some(w) = self.words(v, k) {
                    if w.is_empty() {
                        self.unsupported(v, k, "an empty entrypoint clears the image's ENTRYPOINT, which the agent cannot express: name the program");
                    } else {
                        self.from("entrypoint", v, k);
                        self.s().entrypoint = Some(w);
                    }
                }
            }
            "environment" => {
                self.from("env", v, k);
                for (name, value) in self.key_values(v, k) {
                    // `KEY` alone takes the value from the environment, or is left out.
                    let value = match value {
                        Some(v) => Some(v),
                        None => self.p.env.get(&name).cloned(),
                    };
                    if let Some(value) = value {
                        self.c.env.insert(name, value);
                    }
                }
            }
            "user" => {
                if let Some(t) = self.text(v, k) {
                    self.from("user", v, k);
                    self.c.user = Some(t);
                }
            }
            "working_dir" => {
                if let Some(t) = self.text(v, k) {
                    self.from("working_dir", v, k);
                    self.s().working_dir = Some(t);
                }
            }
            "init" => {
                self.from("init", v, k);
                self.c.settings.init = self.bool(v, k);
            }
            "tty" => {
                self.from("tty", v, k);
                self.c.settings.tty = self.bool(v, k);
            }
            "privileged" => {
                self.from("privileged", v, k);
                self.c.settings.privileged = self.bool(v, k);
            }
            "read_only" => {
                self.from("read_only", v, k);
                self.c.settings.read_only = self.bool(v, k);
            }
            "stdin_open" => {
                self.from("stdin_open", v, k);
                self.c.settings.stdin_open = self.bool(v, k);
            }
            "oom_kill_disable" => {
                if self.bool(v, k) {
                    let why = "disabling the OOM killer is not among the agent's keys";
                    self.unsupported(v, k, why);
                }
            }
            "stop_signal" => {
                if let Some(t) = self.text(v, k) {
                    self.from("stop_signal", v, k);
                    self.s().stop_signal = Some(t);
                }
            }
            "stop_grace_period" => {
                let Some(t) = self.text(v, k) else { return };
                match parse_duration(&t) {
                    Ok(d) if d.subsec_nanos() != 0 => self.unsupported(
                        v,
                        k,
                        format!("{t:?}: the agent's stop_timeout is whole seconds"),
                    ),
                    Ok(d) if d.as_secs() > crate::model::MAX_STOP_TIMEOUT_SECS.into() => self
                        .unsupported(
                            v,
                            k,
                            format!(
                                "{t:?}: the agent waits at most {}s for a stop",
                                crate::model::MAX_STOP_TIMEOUT_SECS
                            ),
                        ),
                    Ok(d) => {
                        self.from("stop_timeout", v, k);
                        self.s().stop_timeout = Some(Seconds(d.as_secs() as u32));
                    }
                    Err(e) => self.invalid(v, k, e),
                }
            }
            "cap_add" => {
                self.from("cap_add", v, k);
                self.c.settings.cap_add = self.texts(v, k);
            }
            "cap_drop" => {
                self.from("cap_drop", v, k);
                self.c.settings.cap_drop = self.texts(v, k);
            }
            "security_opt" => {
                self.from("security_opt", v, k);
                self.c.settings.security_opt = self.texts(v, k);
            }
            "group_add" => {
                self.from("group_add", v, k);
                self.c.settings.group_add = self.texts(v, k);
            }
            "devices" => self.devices(v, k),
            "sysctls" => {
                self.from("sysctls", v, k);
                for (name, value) in self.key_values(v, k) {
                    self.c
                        .settings
                        .sysctls
                        .insert(name, value.unwrap_or_default());
                }
            }
            "ulimits" => self.ulimits(v, k),
            "shm_size" => {
                self.from("shm_size", v, k);
                self.c.settings.shm_size = self.size(v, k);
            }
            "mem_limit" => {
                self.from("memory", v, k);
                self.c.settings.memory = self.size(v, k);
            }
            "mem_reservation" => {
                self.from("memory_reservation", v, k);
                self.c.settings.memory_reservation = self.size(v, k);
            }
            "cpus" => self.cpus(v, k),
            "pids_limit" => self.pids(v, k),
            "userns_mode" => {
                if let Some(t) = self.text(v, k) {
                    self.from("userns", v, k);
                    self.s().userns = Some(t);
                }
            }
            "labels" => {
                self.from("labels", v, k);
                for (name, value) in self.key_values(v, k) {
                    self.c
                        .settings
                        .labels
                        .insert(name, value.unwrap_or_default());
                }
            }
            "logging" => self.logging(v, k),
            "pull_policy" => {
                let Some(t) = self.text(v, k) else { return };
                let pull = match t.as_str() {
                    "always" => PullPolicy::Always,
                    "missing" | "if_not_present" => PullPolicy::Missing,
                    "never" => PullPolicy::Never,
                    "build" => {
                        return self.unsupported(
                            v,
                            k,
                            "the agent never builds: build the image and name it in image:",
                        )
                    }
                    _ if t == "daily" || t == "weekly" || t.starts_with("every_") => {
                        return self.unsupported(
                            v,
                            k,
                            format!(
                                "{t:?}: the agent pulls never, when missing or before every create"
                            ),
                        )
                    }
                    _ => return self.invalid(v, k, format!("{t:?} is not a pull policy")),
                };
                self.from("pull", v, k);
                self.s().pull = Some(pull);
            }
            "scale" => {
                let key = self.key(k);
                match self.p.findings.int(v, &key) {
                    Some(1) | None => {}
                    Some(n) => self.unsupported(
                        v,
                        k,
                        format!("{n} replicas: a component is one container"),
                    ),
                }
            }
            "platform" => match self.text(v, k) {
                // `platform: ${DOCKER_PLATFORM:-}` unset: compose takes no platform.
                Some(t) if t.is_empty() => self.note(v, k, "empty: no platform, as compose takes it"),
                _ => self.unsupported(
                    at_key,
                    k,
                    "the agent runs the image as the local store has it: pull the platform's image first",
                ),
            },
            "develop" => self.note(
                v,
                k,
                "compose watch's rules: no effect on the containers, ignored",
            ),
            "attach" => self.note(
                v,
                k,
                "which logs compose up shows: no effect on the containers, ignored",
            ),
            _ => self.invalid(at_key, k, "unknown key (not in the compose specification)"),
        }
    }
}
