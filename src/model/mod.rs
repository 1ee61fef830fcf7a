//! The vocabulary every layer shares: services, components, routes, their states and
//! keys, and the rules for their names. The ground floor: it imports nothing of the crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod health;
mod names;
mod network;
mod publish;
mod settings;
mod volume;

pub use health::{
    dependency_target, parse_millis, Condition, Dependency, DependsOn, HealthCheck, Millis,
    OnFailure, Probe,
};
pub use names::{is_hostname, is_label_value, is_name, RESERVED_SERVICE_NAMES};
pub use network::{
    Cidr, NetworkOptions, NetworkRef, Subnet, OPT_BRIDGE_NAME, OPT_DOCKER_MTU, OPT_MTU,
};
pub use publish::{PortPublish, Proto};
pub use settings::{
    parse_bytes, parse_seconds, Bytes, NanoCpus, Seconds, Secret, Settings, Ulimit,
    MAX_STOP_TIMEOUT_SECS,
};
pub use volume::Volume;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// Podman's own restart policy, applied within one podman lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether podman itself may bring a dead container of this policy back.
    pub fn podman_restarts(self) -> bool {
        self != RestartPolicy::No
    }
}

/// When a component's image is pulled (issue 13 §7): `never` (it must be in the local
/// store), when `missing` from it, or `always` before each create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    #[default]
    Never,
    Missing,
    Always,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    #[default]
    L7,
    L4,
}

impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::L7 => "l7",
            RouteMode::L4 => "l4",
        }
    }
}

/// One route of a component: a container port that gets a host port from `[ports].range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub name: String,
    pub port: u16,
    pub mode: RouteMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Allocated by the agent and kept in the registry; never written in service files.
    #[serde(skip)]
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    pub name: String,
    pub image: String,
    pub desired_state: DesiredState,
    /// The single-network form: "bridge", "host", "none" or a network's name; empty: not
    /// set (the agent's default, `[networks] service_default`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub restart: RestartPolicy,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub ports: Vec<PortPublish>,
    /// The process, security, resource and metadata keys (each left out when default).
    #[serde(flatten)]
    pub settings: Settings,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub active: bool,
    pub components: Vec<Component>,
    /// `[networks.NAME]`: the options of the networks its components join, by the name
    /// they use (`"default"`: the service's own); a network not listed is podman's
    /// default bridge network.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkOptions>,
}

impl Service {
    /// The agent's (podman's) name of a network a component of this service names.
    pub fn network_name(&self, name: &str) -> String {
        if name == "default" {
            service_network(&self.name)
        } else {
            name.to_string()
        }
    }

    /// The options of each network a component of this service joins, by podman's name.
    pub fn network_options(&self) -> BTreeMap<String, NetworkOptions> {
        self.networks
            .iter()
            .map(|(k, v)| (self.network_name(k), v.clone()))
            .collect()
    }
}

/// The options of every network a service of `services` declares, by podman's name.
/// Networks are machine-wide: a component of a service that declares nothing for a
/// network another declares still gets it made with those options (`apply` keeps two
/// declarations of one network equal).
pub fn network_options_of(services: &[Service]) -> BTreeMap<String, NetworkOptions> {
    let mut out = BTreeMap::new();
    for s in services {
        for (k, v) in s.network_options() {
            out.entry(k).or_insert(v);
        }
    }
    out
}

/// The network of a service (`networks = ["default"]`, and the default with
/// `[networks] service_default = true`): `mcp-<service>`.
pub fn service_network(service: &str) -> String {
    format!("mcp-{service}")
}

/// The podman container name of a component: the service name when they are equal,
/// else `service-component`.
pub fn container_name(service: &str, component: &str) -> String {
    if service == component {
        service.to_string()
    } else {
        format!("{service}-{component}")
    }
}

/// The env key that carries a route's container port: `PORT_<ROUTE>`, the route name
/// uppercased with `-` as `_` (docs/design.md §3.2). Both the container and the rule
/// that keeps service files from setting it use this one spelling.
pub fn route_env_key(route: &str) -> String {
    format!("PORT_{}", route.to_ascii_uppercase().replace('-', "_"))
}

/// A named volume (a volume's source without a leading slash): `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn is_volume_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A podman volume's name, as podman takes it (an external volume's, `[volumes.NAME]
/// name`): `[A-Za-z0-9][A-Za-z0-9_.-]*`, here at most 255 bytes.
pub fn is_podman_volume_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The named volume of a bind string `SOURCE:TARGET[:OPTIONS]` (as a
/// [`crate::container::ContainerSpec`] holds its volumes), if its source is one. For a
/// [`Volume`], string or table form, see [`Volume::name`].
pub fn volume_name(v: &str) -> Option<&str> {
    let source = v.split(':').next()?;
    (!source.starts_with('/') && is_volume_name(source)).then_some(source)
}

/// Identifies a component across the registry, plans and status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentKey {
    pub service: String,
    pub component: String,
}

impl ComponentKey {
    pub fn new(service: impl Into<String>, component: impl Into<String>) -> Self {
        ComponentKey {
            service: service.into(),
            component: component.into(),
        }
    }

    pub fn container_name(&self) -> String {
        container_name(&self.service, &self.component)
    }
}

impl std::fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.service, self.component)
    }
}

#[cfg(test)]
mod tests;
