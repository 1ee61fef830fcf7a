//! The runtime over podman's Docker-compatible API socket (bollard), plus the podman CLI
//! for the one thing the API cannot do: freeing a name held by container storage.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HostConfig,
    HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};

use super::{api, Actual, Result, Runtime, RuntimeError};
use crate::container::ContainerSpec;
use crate::spec;

/// Timeout of one API request (not of the event stream, which has its own client).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a pull may take: within the 300 s a pull may run before the watchdog
/// counts the agent as stuck. A pull cut short is retried with backoff, and
/// podman keeps the layers already fetched.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(240);
/// One line of a pull's progress as podman's compat API streams it: its step, the layer
/// (a short id) and, while downloading, the bytes so far of the layer's size.
pub fn progress_line(info: &bollard::models::CreateImageInfo) -> String {
    let mut line = info
        .status
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_string();
    if let Some(id) = info.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        line.push(' ');
        line.extend(id.chars().take(12));
    }
    if let Some(d) = &info.progress_detail {
        match (d.current, d.total) {
            (Some(c), Some(t)) if t > 0 => line.push_str(&format!(" {}/{}", bytes(c), bytes(t))),
            (Some(c), _) if c > 0 => line.push_str(&format!(" {}", bytes(c))),
            _ => {}
        }
    }
    // A line of the stream is podman's to word: kept short for `status`.
    line.chars().take(200).collect()
}

/// A byte count as `12.3MB` (decimal units, as podman prints them).
fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n >= 1e9 => format!("{:.1}GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1}MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1}kB", n / 1e3),
        n => format!("{n}B"),
    }
}

/// How often a list is asked for when podman fails it on a container vanishing under it.
const LIST_ATTEMPTS: u32 = 5;
/// Longest the CLI may take to free a storage-held name.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// API version sent in request paths; podman 4.3 answers any `/v1.x/`.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// The path prefix of API requests made without bollard.
pub(crate) fn api_prefix() -> String {
    format!(
        "/v{}.{}",
        API_VERSION.major_version, API_VERSION.minor_version
    )
}

/// `s` as one URL path segment (container names are `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; anything
/// else is percent-encoded).
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct Podman {
    /// Made on first use: bollard refuses to make a client while the socket file is
    /// absent, and podman may come later than the agent.
    docker: std::sync::Mutex<Option<Docker>>,
    /// The connections of exec health checks' requests (`src/runtime/wire.rs`).
    wire: std::sync::Arc<super::wire::Pool>,
    timeout: Duration,
    socket: String,
    cli: Vec<String>,
}

impl Podman {
    /// A client for the API at `socket` (`unix:///...`); connects lazily, per request.
    pub fn new(socket: &str, cli: Vec<String>) -> Podman {
        Self::with_timeout(socket, cli, REQUEST_TIMEOUT)
    }

    pub fn with_timeout(socket: &str, cli: Vec<String>, timeout: Duration) -> Podman {
        Podman {
            docker: std::sync::Mutex::new(None),
            wire: std::sync::Arc::new(super::wire::Pool::new(socket)),
            timeout,
            socket: socket.to_string(),
            cli,
        }
    }

    /// The bollard client, made now if it was not yet.
    pub fn docker(&self) -> Result<Docker> {
        let mut d = self.docker.lock().expect("podman client lock");
        if let Some(d) = d.as_ref() {
            return Ok(d.clone());
        }
        let docker =
            super::transport::connect(&self.socket, self.timeout, &API_VERSION).map_err(|e| {
                RuntimeError::Unavailable {
                    socket: self.socket.clone(),
                    reason: crate::error::chain(&e),
                }
            })?;
        *d = Some(docker.clone());
        Ok(docker)
    }

    /// The connections exec health checks' requests go over.
    pub(crate) fn wire(&self) -> std::sync::Arc<super::wire::Pool> {
        self.wire.clone()
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    pub(crate) fn map_err(&self, e: BollardError) -> RuntimeError {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => {
                match classify_in_use(&message) {
                    Some(InUse::Port) => {
                        return RuntimeError::PortInUse {
                            message: message.trim().to_string(),
                        }
                    }
                    Some(InUse::Name) => {
                        return RuntimeError::NameInUse {
                            name: message.clone(),
                        }
                    }
                    None => {}
                }
                if status_code == 404 || message.contains("no such container") {
                    // Podman 4.3 answers 500 "... does not exist in database: no such
                    // container" when the container vanished mid-operation (a racing rm).
                    RuntimeError::NotFound(message)
                } else {
                    RuntimeError::Api(format!("{status_code}: {}", message.trim()))
                }
            }
            BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
                RuntimeError::Api(e.to_string())
            }
            other => RuntimeError::Unavailable {
                socket: self.socket.clone(),
                reason: crate::error::chain(&other),
            },
        }
    }
}

/// What an "already in use" answer of podman is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InUse {
    /// `the container name "x" is already in use by <id>. You have to remove that
    /// container to be able to reuse that name: that name is already in use`
    Name,
    /// `cannot listen on the TCP port: listen tcp4 :20000: bind: address already in use`
    /// (and `rootlessport listen tcp 0.0.0.0:20000: bind: address already in use`)
    Port,
}

/// Classifies podman's texts: both a taken name and a taken host port say "already in
/// use"; only the first may be a name held by storage.
pub fn classify_in_use(message: &str) -> Option<InUse> {
    let m = message.to_ascii_lowercase();
    if !m.contains("already in use") && !m.contains("already allocated") {
        return None;
    }
    if m.contains("address already in use")
        || m.contains("cannot listen on the")
        || m.contains("port is already allocated")
    {
        Some(InUse::Port)
    } else {
        Some(InUse::Name)
    }
}

fn restart_policy(r: spec::RestartPolicy) -> RestartPolicy {
    let name = match r {
        spec::RestartPolicy::No => RestartPolicyNameEnum::NO,
        spec::RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        spec::RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        spec::RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: None,
    }
}

/// The create request for a spec.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        port_bindings
            .entry(format!("{}/{}", p.container_port, p.proto.as_str()))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.ip.map(|ip| ip.to_string()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let x = &spec.settings;
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let yes = |b: bool| b.then_some(true);
    let binds = spec.binds();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: spec.user.clone(),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        entrypoint: x.entrypoint.clone(),
        working_dir: x.working_dir.clone(),
        tty: yes(x.tty),
        open_stdin: yes(x.stdin_open),
        stop_signal: x.stop_signal.clone(),
        stop_timeout: x.stop_timeout.map(|s| s.0.into()),
        hostname: x.hostname.clone(),
        networking_config: (!spec.endpoints.is_empty()).then(|| NetworkingConfig {
            endpoints_config: Some(
                spec.endpoints
                    .iter()
                    .map(|e| {
                        (
                            e.network.clone(),
                            EndpointSettings {
                                aliases: Some(e.aliases.clone()),
                                ipam_config: (e.ipv4_address.is_some() || e.ipv6_address.is_some())
                                    .then(|| EndpointIpamConfig {
                                        ipv4_address: e.ipv4_address.clone(),
                                        ipv6_address: e.ipv6_address.clone(),
                                        ..Default::default()
                                    }),
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
            ),
        }),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            tmpfs: (!x.tmpfs.is_empty()).then(|| {
                x.tmpfs
                    .iter()
                    .map(|t| match t.split_once(':') {
                        Some((path, opts)) => (path.to_string(), opts.to_string()),
                        None => (t.clone(), String::new()),
                    })
                    .collect()
            }),
            readonly_rootfs: yes(x.read_only),
            dns: list(&x.dns),
            dns_search: list(&x.dns_search),
            extra_hosts: list(&x.extra_hosts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: Some(restart_policy(spec.restart)),
            network_mode: Some(spec.network.clone()),
            init: yes(x.init),
            cap_add: list(&x.cap_add),
            cap_drop: list(&x.cap_drop),
            privileged: yes(x.privileged),
            security_opt: list(&x.security_opt),
            devices: (!x.devices.is_empty())
                .then(|| x.devices.iter().map(|d| device_mapping(d)).collect()),
            sysctls: (!x.sysctls.is_empty()).then(|| x.sysctls.clone().into_iter().collect()),
            ulimits: (!x.ulimits.is_empty()).then(|| {
                x.ulimits
                    .iter()
                    .map(|(name, u)| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            shm_size: x.shm_size.map(|b| b.0),
            memory: x.memory.map(|b| b.0),
            memory_reservation: x.memory_reservation.map(|b| b.0),
            nano_cpus: x.cpus.map(|c| c.0),
            pids_limit: x.pids_limit,
            userns_mode: x.userns.clone(),
            group_add: list(&x.group_add),
            log_config: x.log_driver.as_ref().map(|d| HostConfigLogConfig {
                typ: Some(d.clone()),
                config: (!x.log_opts.is_empty()).then(|| x.log_opts.clone().into_iter().collect()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The create of network `name`: a bridge, with podman's defaults or `options` (podman
/// 4.3's compat API reads `com.docker.network.bridge.name` as the interface's name and
/// `com.docker.network.driver.mtu` as `mtu`).
pub fn network_create_request(
    name: &str,
    options: Option<&crate::model::NetworkOptions>,
) -> NetworkCreateRequest {
    let mut req = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        ..Default::default()
    };
    let Some(o) = options else { return req };
    if !o.subnets.is_empty() {
        req.ipam = Some(Ipam {
            driver: Some("default".into()),
            config: Some(
                o.subnets
                    .iter()
                    .map(|s| IpamConfig {
                        subnet: Some(s.subnet.clone()),
                        gateway: s.gateway.clone(),
                        ip_range: s.ip_range.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            options: None,
        });
    }
    req.internal = o.internal.then_some(true);
    req.enable_ipv6 = o.enable_ipv6.then_some(true);
    req.options = (!o.driver_opts.is_empty()).then(|| o.driver_opts.clone().into_iter().collect());
    req.labels = (!o.labels.is_empty()).then(|| o.labels.clone().into_iter().collect());
    req
}

/// `HOST[:CONTAINER[:PERMISSIONS]]` (checked by `apply`) as podman's device mapping.
fn device_mapping(d: &str) -> DeviceMapping {
    let mut parts = d.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_string();
    let inside = parts.next().map_or_else(|| host.clone(), str::to_string);
    DeviceMapping {
        path_on_host: Some(host),
        path_in_container: Some(inside),
        cgroup_permissions: Some(parts.next().unwrap_or("rwm").to_string()),
    }
}

impl Runtime for Podman {
    fn events(&self) -> tokio::sync::mpsc::Receiver<super::Trigger> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(super::events::watch(self.socket.clone(), tx));
        rx
    }

    async fn ping(&self) -> Result<()> {
        super::timed("ping", async move {
            self.docker()?
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| self.map_err(e))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Actual>> {
        super::timed("list", async move {
            // Not bollard's `list_containers`: its closed state enum fails the whole list on
            // one container in a state it does not know (podman 4.3's `stopped`).
            let path = format!("{}/containers/json?all=true", api_prefix());
            let mut attempt = 1;
            let (status, body) = loop {
                let (status, body) = api::get(&self.socket, &path, self.timeout).await?;
                // Podman 4.3 fails the whole list when a container dies while it is read
                // ("500: read /proc/PID/cgroup: no such process"): asked again, it answers.
                if status.is_server_error() && attempt < LIST_ATTEMPTS && api::is_vanished(&body) {
                    tracing::debug!(
                        attempt,
                        "a container vanished while podman listed; listing again"
                    );
                    attempt += 1;
                    continue;
                }
                break (status, body);
            };
            if !status.is_success() {
                return Err(api::answer_error(&path, status, &body));
            }
            let list = api::parse_list(&body)?;
            tracing::debug!(containers = list.len(), "listed containers");
            Ok(list)
        })
        .await
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        super::timed("image_exists", async move {
            match self.docker()?.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(false),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    async fn volume_exists(&self, name: &str) -> Result<bool> {
        super::timed("volume_exists", async move {
            match self.docker()?.inspect_volume(name).await {
                // Podman resolves a volume by a unique prefix of its name too: only the
                // exact name counts.
                Ok(v) => Ok(v.name == name),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(false),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    async fn pull(&self, image: &str, progress: &tokio::sync::watch::Sender<String>) -> Result<()> {
        use futures_util::StreamExt;
        // The whole reference as fromImage (podman pulls exactly it: a tag or a digest);
        // a pull may take long, within the pull's limit (docs/design.md §5.1).
        let opts = bollard::query_parameters::CreateImageOptionsBuilder::new()
            .from_image(image)
            .build();
        let docker = self.docker()?.with_timeout(PULL_TIMEOUT);
        let mut stream = docker.create_image(Some(opts), None, None);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match e {
                // Podman answered, and the pull failed on the registry's side.
                BollardError::DockerStreamError { error } => {
                    RuntimeError::Api(format!("pull {image}: {}", error.trim()))
                }
                e => match self.map_err(e) {
                    RuntimeError::Api(m) => RuntimeError::Api(format!("pull {image}: {m}")),
                    other => other,
                },
            })?;
            if let Some(e) = info.error_detail.as_ref().and_then(|d| d.message.as_ref()) {
                return Err(RuntimeError::Api(format!("pull {image}: {}", e.trim())));
            }
            let line = progress_line(&info);
            if !line.is_empty() {
                progress.send_if_modified(|p| {
                    let changed = *p != line;
                    if changed {
                        p.clone_from(&line);
                    }
                    changed
                });
            }
            // The log gets each new step, not every byte count.
            let status = info.status.unwrap_or_default();
            if !status.is_empty() && status != last {
                tracing::info!(image, progress = %line, "pulling");
                last = status;
            }
        }
        Ok(())
    }

    async fn ensure_network(
        &self,
        name: &str,
        options: Option<&crate::model::NetworkOptions>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        super::timed("ensure_network", async move {
            if matches!(name, "bridge" | "host" | "none" | "podman") {
                return Ok(());
            }
            let mut req = network_create_request(name, options);
            req.labels
                .get_or_insert_with(Default::default)
                .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            let exists = match self.docker()?.create_network(req).await {
                Ok(_) => false,
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => true,
                Err(BollardError::DockerResponseServerError { message, .. })
                    if message.contains("already exists") =>
                {
                    true
                }
                Err(e) => return Err(self.map_err(e)),
            };
            let Some(want) = options.filter(|_| exists) else {
                return Ok(());
            };
            // The name is taken: by a network of the same options, or it is not ours to use.
            let path = format!("{}/networks/{}", api_prefix(), path_segment(name));
            let v: serde_json::Value = api::get_json(&self.socket, &path, self.timeout).await?;
            match super::network_difference(want, &api::network_options(&v)) {
                None => Ok(()),
                Some(difference) => Err(RuntimeError::NetworkMismatch {
                    network: name.to_string(),
                    difference,
                }),
            }
        })
        .await
    }

    async fn remove_network(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool> {
        super::timed("remove_network", async move {
            let path = format!("{}/networks/{}", api_prefix(), path_segment(name));
            let v: serde_json::Value = match api::get_json(&self.socket, &path, self.timeout).await
            {
                Err(RuntimeError::NotFound(_)) => return Ok(false),
                r => r?,
            };
            let have = &v["Labels"];
            if !labels.iter().all(|(k, val)| have[k].as_str() == Some(val)) {
                return Ok(false);
            }
            // Not forced: podman refuses while a container is on it.
            match self.docker()?.remove_network(name).await {
                Ok(()) => Ok(true),
                // Podman 4.3: 500, "… has associated containers with it … network is
                // being used"; gone meanwhile: 404.
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) if status_code == 404 || message.contains("being used") => {
                    tracing::debug!(network = name, reason = %message, "network kept");
                    Ok(false)
                }
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    async fn networks(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        super::timed("networks", async move {
            let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let filters = serde_json::json!({ "label": wanted }).to_string();
            let path = format!(
                "{}/networks?filters={}",
                api_prefix(),
                api::query_value(&filters)
            );
            let v: serde_json::Value = api::get_json(&self.socket, &path, self.timeout).await?;
            let mut out = Vec::new();
            for n in v.as_array().into_iter().flatten() {
                let Some(name) = n["Name"].as_str() else {
                    continue;
                };
                let have: BTreeMap<String, String> = n["Labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                // The filter is podman's; the check is ours.
                if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
                    out.push((name.to_string(), have));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        super::timed("create", async move {
            let opts = CreateContainerOptionsBuilder::new()
                .name(&spec.name)
                .build();
            match self
                .docker()?
                .create_container(Some(opts), create_body(spec))
                .await
            {
                Ok(r) => Ok(r.id),
                Err(e) => match self.map_err(e) {
                    RuntimeError::NameInUse { .. } => Err(RuntimeError::NameInUse {
                        name: spec.name.clone(),
                    }),
                    other => Err(other),
                },
            }
        })
        .await
    }

    async fn start(&self, id: &str) -> Result<()> {
        super::timed("start", async move {
            match self.docker()?.start_container(id, None).await {
                // 304: already running, which is what was wanted.
                Err(BollardError::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                r => r.map_err(|e| self.map_err(e)),
            }
        })
        .await
    }

    async fn main_pid(&self, id: &str) -> Result<Option<u32>> {
        super::timed("main_pid", async move {
            // The lenient reader: a container in a state bollard's enum does not know is
            // still read.
            let path = format!("{}/containers/{}/json", api_prefix(), path_segment(id));
            let v: serde_json::Value = match api::get_json(&self.socket, &path, self.timeout).await
            {
                Err(RuntimeError::NotFound(_)) => return Ok(None),
                r => r?,
            };
            let state = &v["State"];
            if state["Running"].as_bool() != Some(true) {
                return Ok(None);
            }
            Ok(state["Pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0))
        })
        .await
    }

    async fn graph_root(&self) -> Result<Option<std::path::PathBuf>> {
        super::timed("info", async move {
            // Compat info's `DockerRootDir` is podman's `store.graphRoot`.
            let path = format!("{}/info", api_prefix());
            let v: serde_json::Value = api::get_json(&self.socket, &path, self.timeout).await?;
            Ok(v["DockerRootDir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from))
        })
        .await
    }

    async fn stop(&self, id: &str, timeout_secs: i64) -> Result<()> {
        super::timed("stop", async move {
            let opts = StopContainerOptionsBuilder::new()
                .t(timeout_secs.clamp(0, i32::MAX as i64) as i32)
                .build();
            // The request lasts as long as the stop may: the component's `stop_timeout`.
            let docker = self.docker()?;
            let waits = Duration::from_secs(timeout_secs.clamp(0, i32::MAX as i64) as u64);
            let docker = docker.with_timeout(self.timeout + waits);
            match docker.stop_container(id, Some(opts)).await {
                Err(BollardError::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                r => r.map_err(|e| self.map_err(e)),
            }
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        super::timed("remove", async move {
            let opts = RemoveContainerOptionsBuilder::new().force(true).build();
            // A forced removal of a running container stops it first with the container's
            // own stop signal and `StopTimeout` (measured with podman 4.3): it may last that
            // long, up to the largest `stop_timeout` a service file may set.
            let waits = Duration::from_secs(crate::model::MAX_STOP_TIMEOUT_SECS.into());
            self.docker()?
                .with_timeout(self.timeout + waits)
                .remove_container(id, Some(opts))
                .await
                .map_err(|e| self.map_err(e))
        })
        .await
    }

    async fn holder(&self, name: &str) -> Result<Option<(String, BTreeMap<String, String>)>> {
        super::timed("holder", async move {
            // Through bollard's pooled connection first: a recovery after a database loss
            // asks this for every name, and a connection per request costs podman (a mass
            // recovery of 200 ran 3–4 % slower). Its inspect model has the closed state enum
            // of the list, so a container in a state it does not know (podman 4.3's
            // `stopped`) is read again through the lenient reader.
            match self.docker()?.inspect_container(name, None).await {
                // An id-prefix match is another container, not the holder of the name.
                Ok(c) if c.name.as_deref().map(|n| n.trim_start_matches('/')) != Some(name) => {
                    return Ok(None)
                }
                Ok(c) => {
                    return Ok(Some((
                        c.id.unwrap_or_default(),
                        c.config
                            .and_then(|c| c.labels)
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    )))
                }
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {}
                Err(e) => return Err(self.map_err(e)),
            }
            let path = format!("{}/containers/{}/json", api_prefix(), path_segment(name));
            let c: api::Inspected = match api::get_json(&self.socket, &path, self.timeout).await {
                Err(RuntimeError::NotFound(_)) => return Ok(None),
                r => r?,
            };
            // An id-prefix match is another container, not the holder of the name.
            if c.name.as_deref().map(|n| n.trim_start_matches('/')) != Some(name) {
                return Ok(None);
            }
            Ok(Some((
                c.id,
                c.config.and_then(|c| c.labels).unwrap_or_default(),
            )))
        })
        .await
    }

    async fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<super::ExecOutput> {
        super::timed("exec", super::exec::run(self, id, argv, timeout)).await
    }

    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + 2 * super::exec::KILL_WAIT;
        if !super::exec::execs_settled(deadline).await {
            tracing::warn!("an abandoned exec was still being ended at exit");
        }
    }

    async fn address(&self, id: &str) -> Result<Option<std::net::IpAddr>> {
        super::timed("address", async move {
            // The lenient reader, as for `main_pid`.
            let path = format!("{}/containers/{}/json", api_prefix(), path_segment(id));
            let v: serde_json::Value = api::get_json(&self.socket, &path, self.timeout).await?;
            Ok(api::address_of(&v))
        })
        .await
    }

    async fn free_storage_names(&self, names: &[String]) -> Result<()> {
        super::timed("free_storage_names", async move {
            const PS: [&str; 6] = [
                "ps",
                "--all",
                "--external",
                "--no-trunc",
                "--format",
                "json",
            ];
            let listed = self.cli_run(&PS).await?;
            let ids = storage_holders(&listed, names).map_err(|e| {
                RuntimeError::Cli(format!(
                    "`{}` printed what the agent cannot read ({e}); {}",
                    self.argv(&PS),
                    self.by_hand()
                ))
            })?;
            for chunk in ids.chunks(100) {
                let mut args = vec!["rm", "--force", "--ignore"];
                args.extend(chunk.iter().map(String::as_str));
                self.cli_run(&args).await?;
            }
            Ok(())
        })
        .await
    }
}

impl Podman {
    /// What an operator can do when the CLI fails.
    fn by_hand(&self) -> String {
        let cli = self.cli.join(" ");
        format!(
            "names held by container storage stay held until freed by hand: `{cli} ps --all --external` shows them, `{cli} rm --force ID` frees one"
        )
    }

    fn argv(&self, args: &[&str]) -> String {
        let mut v = self.cli.clone();
        v.extend(args.iter().map(|a| a.to_string()));
        v.join(" ")
    }

    /// Runs the podman CLI with `args` (argv, no shell); its stdout, or an error naming the
    /// command so that an operator can run it by hand.
    async fn cli_run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let (prog, prefix) = self
            .cli
            .split_first()
            .ok_or_else(|| RuntimeError::Cli("[podman].cli is empty".into()))?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(prefix)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| {
                RuntimeError::Cli(format!(
                    "`{}` took longer than {CLI_TIMEOUT:?}; {}",
                    self.argv(args),
                    self.by_hand()
                ))
            })?
            .map_err(|e| {
                RuntimeError::Cli(format!(
                    "cannot run `{}`: {e}; check [podman].cli; {}",
                    self.argv(args),
                    self.by_hand()
                ))
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::Cli(format!(
                "`{}` failed ({}): {}; {}",
                self.argv(args),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.by_hand()
            )))
        }
    }
}

/// The full ids of the storage-only containers (state "storage": in container storage,
/// unknown to podman's database) that hold one of `names`, from `podman ps --all
/// --external --no-trunc --format json`.
pub fn storage_holders(
    listed: &[u8],
    names: &[String],
) -> std::result::Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Listed {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Names", default)]
        names: Vec<String>,
        #[serde(rename = "State", default)]
        state: String,
    }
    let listed: Vec<Listed> = serde_json::from_slice(listed).map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .filter(|c| c.state.eq_ignore_ascii_case("storage"))
        .filter(|c| c.names.iter().any(|n| names.contains(n)))
        .filter(|c| c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|c| c.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{classify_in_use, storage_holders, InUse};

    #[test]
    fn podmans_two_already_in_use_texts_are_told_apart() {
        let name = "creating container storage: the container name \"web\" is already in use by 3f1e. You have to remove that container to be able to reuse that name: that name is already in use";
        let port = "something went wrong with the request: \"cannot listen on the TCP port: listen tcp4 :20000: bind: address already in use\\n\"";
        let rootless = "rootlessport listen tcp 0.0.0.0:20000: bind: address already in use";
        assert_eq!(classify_in_use(name), Some(InUse::Name));
        assert_eq!(classify_in_use(port), Some(InUse::Port));
        assert_eq!(classify_in_use(rootless), Some(InUse::Port));
        assert_eq!(classify_in_use("no such container"), None);
    }

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn only_storage_only_containers_holding_exactly_those_names_are_picked() {
        let listed = serde_json::json!([
            { "Id": id('a'), "Names": ["db"], "State": "storage" },
            // Known to podman's database: never removed by the CLI here.
            { "Id": id('b'), "Names": ["web"], "State": "created" },
            // Storage-only but not one of ours: left alone.
            { "Id": id('c'), "Names": ["buildah-working-container"], "State": "storage" },
            // Its id starts with "db": a prefix is not a name.
            { "Id": format!("db{}", "0".repeat(62)), "Names": ["other"], "State": "storage" },
            { "Id": id('d'), "Names": ["api"], "State": "Storage" },
        ])
        .to_string();
        let names = ["db".to_string(), "web".to_string(), "api".to_string()];
        assert_eq!(
            storage_holders(listed.as_bytes(), &names).unwrap(),
            vec![id('a'), id('d')]
        );
        assert_eq!(
            storage_holders(b"[]", &names).unwrap(),
            Vec::<String>::new()
        );
        assert!(storage_holders(b"not json", &names).is_err());
    }
}
