//! The raw shapes of a service file: what TOML gives, with spans, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{DesiredState, RestartPolicy, RouteMode};

pub(super) fn yes() -> bool {
    true
}

pub(super) fn empty<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    #[serde(default = "yes")]
    pub(super) active: bool,
    /// `[volumes.NAME]`: the service's external volumes, by the name its components'
    /// volumes give as their source.
    #[serde(default = "empty")]
    pub(super) volumes: Spanned<BTreeMap<Spanned<String>, Spanned<RawServiceVolume>>>,
    #[serde(default)]
    pub(super) components: Vec<Spanned<RawComponent>>,
    /// `[networks.NAME]`: the options of a network its components join.
    #[serde(default)]
    pub(super) networks: BTreeMap<Spanned<String>, Spanned<RawNetwork>>,
}

/// `[networks.NAME]`, named as compose names a network's keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    #[serde(default = "empty")]
    pub(super) subnets: Spanned<Vec<Spanned<RawSubnet>>>,
    pub(super) internal: Option<Spanned<bool>>,
    pub(super) enable_ipv6: Option<Spanned<bool>>,
    #[serde(default = "empty")]
    pub(super) driver_opts: Spanned<BTreeMap<Spanned<String>, Spanned<Word>>>,
    #[serde(default = "empty")]
    pub(super) labels: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
}

/// `{ subnet = "10.1.0.0/24", gateway = "10.1.0.1", ip_range = "10.1.0.128/25" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubnet {
    pub(super) subnet: Spanned<String>,
    pub(super) gateway: Option<Spanned<String>>,
    pub(super) ip_range: Option<Spanned<String>>,
}

/// A `networks` entry written as a table: `{ name = "backend", aliases = ["db"],
/// ipv4_address = "10.1.0.5" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetworkEntry {
    pub(super) name: String,
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    pub(super) ipv4_address: Option<String>,
    pub(super) ipv6_address: Option<String>,
}

/// `[volumes.NAME]`: `external = true` (podman's volume, created outside the agent), and
/// its podman name when it is not NAME.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceVolume {
    pub(super) external: Option<Spanned<bool>>,
    pub(super) name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) name: Spanned<String>,
    pub(super) image: Spanned<String>,
    #[serde(default)]
    pub(super) desired_state: DesiredState,
    /// Empty when not set: the agent's default.
    #[serde(default = "empty")]
    pub(super) network: Spanned<String>,
    pub(super) user: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) restart: RestartPolicy,
    #[serde(default = "empty")]
    pub(super) cmd: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) env: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) volumes: Spanned<Vec<Spanned<toml::Value>>>,
    #[serde(default = "empty")]
    pub(super) ports: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) routes: Spanned<Vec<Spanned<RawRoute>>>,
    // The process.
    pub(super) entrypoint: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) working_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) init: bool,
    pub(super) stop_signal: Option<Spanned<Word>>,
    pub(super) stop_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tty: bool,
    #[serde(default)]
    pub(super) stdin_open: bool,
    // Security and resources.
    #[serde(default = "empty")]
    pub(super) cap_add: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) cap_drop: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) privileged: bool,
    #[serde(default = "empty")]
    pub(super) security_opt: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) devices: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) sysctls: Spanned<BTreeMap<Spanned<String>, Spanned<Word>>>,
    #[serde(default = "empty")]
    pub(super) ulimits: Spanned<BTreeMap<Spanned<String>, Spanned<RawUlimit>>>,
    pub(super) shm_size: Option<Spanned<Word>>,
    pub(super) memory: Option<Spanned<Word>>,
    pub(super) memory_reservation: Option<Spanned<Word>>,
    pub(super) cpus: Option<Spanned<f64>>,
    pub(super) pids_limit: Option<Spanned<i64>>,
    pub(super) userns: Option<Spanned<String>>,
    #[serde(default = "empty")]
    pub(super) group_add: Spanned<Vec<Spanned<Word>>>,
    // Metadata.
    #[serde(default = "empty")]
    pub(super) labels: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) log_driver: Option<Spanned<String>>,
    #[serde(default = "empty")]
    pub(super) log_opts: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    // Configuration from files of the host.
    #[serde(default = "empty")]
    pub(super) env_file: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) secrets: Spanned<Vec<Spanned<RawSecret>>>,
    // Storage.
    #[serde(default = "empty")]
    pub(super) tmpfs: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) read_only: bool,
    // Networks and names.
    /// Each entry a network's name or a table ([`RawNetworkEntry`]), checked by hand.
    #[serde(default = "empty")]
    pub(super) networks: Spanned<Vec<Spanned<toml::Value>>>,
    #[serde(default = "empty")]
    pub(super) aliases: Spanned<Vec<Spanned<String>>>,
    pub(super) hostname: Option<Spanned<String>>,
    #[serde(default = "empty")]
    pub(super) dns: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) dns_search: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) extra_hosts: Spanned<Vec<Spanned<String>>>,
    // The image.
    pub(super) pull: Option<crate::model::PullPolicy>,
    // Health, one-shot runs and dependency order (issue 14).
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) oneshot: Option<Spanned<bool>>,
    /// Each entry a condition or a table `{ condition, restart_with }`, checked by hand
    /// for reasons better than an untagged enum's.
    #[serde(default = "empty")]
    pub(super) depends_on: Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
}

/// `[components.health]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) test: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) http: Option<Spanned<RawHttpProbe>>,
    pub(super) tcp: Option<Spanned<RawTcpProbe>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) start_period: Option<Spanned<String>>,
    pub(super) start_interval: Option<Spanned<String>>,
    pub(super) on_failure: Option<crate::model::OnFailure>,
}

/// `http = { port = 8080, path = "/healthz" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpProbe {
    pub(super) port: Spanned<i64>,
    pub(super) path: Option<Spanned<String>>,
}

/// `tcp = { port = 5432 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcpProbe {
    pub(super) port: Spanned<i64>,
}

/// `{ source = "/etc/app/db_password", target = "/run/secrets/db_password" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub(super) source: Spanned<String>,
    pub(super) target: Spanned<String>,
}

/// A string, or an integer written for one (`stop_signal = 15`, `memory = 1048576`,
/// `group_add = [10]`, a sysctl's `1`): compose accepts both.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an integer")]
pub(super) enum Word {
    Int(i64),
    Str(String),
}

impl Word {
    pub(super) fn text(&self) -> String {
        match self {
            Word::Int(n) => n.to_string(),
            Word::Str(s) => s.clone(),
        }
    }
}

/// compose's `nofile = 1024` or `nofile = { soft = 1024, hard = 2048 }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a limit: an integer (-1 or \"unlimited\" for none), or a table { soft = LIMIT, hard = LIMIT }"
)]
pub(super) enum RawUlimit {
    One(RawLimit),
    Two(RawUlimitPair),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUlimitPair {
    pub(super) soft: RawLimit,
    pub(super) hard: RawLimit,
}

/// One limit: an integer (-1: none, as compose writes it) or the string "unlimited",
/// checked by hand.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawLimit {
    Int(i64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) port: Spanned<i64>,
    #[serde(default)]
    pub(super) mode: RouteMode,
    pub(super) hostname: Option<Spanned<String>>,
}
