//! The container runtime as the agent sees it: a small trait over podman's API, with the
//! bollard implementation in `podman.rs` (its event stream in `events.rs`) and an
//! in-memory fake for unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use crate::container::ContainerSpec;

pub mod api;
pub mod deaths;
pub mod events;
pub mod exec;
#[cfg(test)]
pub mod fake;
pub mod libpod_db;
pub mod podman;
mod transport;
pub(crate) mod wire;

pub use events::Trigger;

/// Container state as podman reports it (list, inspect). Any string maps to one of these:
/// Docker's names and libpod's own (`configured`, `stopped`, `stopping`, `removing`, …);
/// one it does not know is `Other` — unknown, treated as transient by the plan (looked at
/// again at the next event or pass), never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> State {
        match s {
            "created" | "configured" | "initialized" => State::Created,
            "running" => State::Running,
            "paused" => State::Paused,
            "restarting" => State::Restarting,
            "exited" | "stopped" | "dead" => State::Exited,
            other => State::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Restarting => "restarting",
            State::Exited => "exited",
            State::Other(s) => s,
        }
    }

    /// Whether the container's process is there (running, paused or being restarted).
    pub fn is_up(&self) -> bool {
        matches!(self, State::Running | State::Paused | State::Restarting)
    }
}

/// One container from the runtime's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    pub id: String,
    pub name: String,
    pub state: State,
    pub labels: BTreeMap<String, String>,
    /// An exited container's exit code, when podman's list tells it.
    pub exit_code: Option<i64>,
}

/// A container lifecycle event of interest to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: String,
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub time: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("podman is unreachable at {socket}: {reason}")]
    Unavailable { socket: String, reason: String },
    #[error("the container name {name:?} is already in use")]
    NameInUse { name: String },
    /// A host port the container publishes is bound by something else: an ordinary
    /// failure (backoff), never a storage-held name.
    #[error("a host port is already in use: {message}")]
    PortInUse { message: String },
    #[error("no such container or object: {0}")]
    NotFound(String),
    #[error("podman API: {0}")]
    Api(String),
    #[error("{0}")]
    Cli(String),
    /// A network of that name exists with other options than the service file's: the
    /// agent neither uses it as it is nor removes it.
    #[error("network {network} exists with other options: {difference}")]
    NetworkMismatch { network: String, difference: String },
}

impl RuntimeError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable { .. })
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The most output an exec keeps: stdout and stderr together, in the order they came.
pub const EXEC_OUTPUT_MAX: usize = 4096;

/// What a command run in a container by exec did ([`Runtime::exec`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Its exit code; `None` when it ran past the timeout (or podman could not tell it).
    pub exit_code: Option<i64>,
    /// Its stdout and stderr as they came, read as UTF-8 (invalid bytes replaced), cut to
    /// the first [`EXEC_OUTPUT_MAX`] bytes. On a timeout: what came before it.
    pub output: String,
    /// It ran past the timeout. Its process group was then SIGKILLed, unless
    /// `kill_error` says why not.
    pub timed_out: bool,
    /// Why a process that ran past the timeout could not be killed (or could not be seen
    /// to die): it may still run in the container.
    pub kill_error: Option<String>,
}

/// A ping podman does not answer in this long counts as podman down.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A ping that podman must answer within `limit`: a hung podman (SIGSTOPped, a stalled
/// API) answers nothing, and that counts as unreachable.
pub async fn ping_within<R: Runtime>(
    rt: &R,
    limit: std::time::Duration,
    socket: &str,
) -> Result<()> {
    tokio::time::timeout(limit, rt.ping())
        .await
        .unwrap_or_else(|_| {
            Err(RuntimeError::Unavailable {
                socket: socket.to_string(),
                reason: format!("no answer to a ping within {limit:?}"),
            })
        })
}

/// Times one podman API call and counts its failure, by kind (the metrics of
/// `podman_request_duration_seconds` and `podman_request_errors_total`).
pub async fn timed<T>(call: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
    let t = std::time::Instant::now();
    let r = f.await;
    let kind = r.as_ref().err().map(|e| match e {
        RuntimeError::Unavailable { .. } => "unavailable",
        RuntimeError::NameInUse { .. } => "name_in_use",
        RuntimeError::PortInUse { .. } => "port_in_use",
        RuntimeError::NotFound(_) => "not_found",
        RuntimeError::Api(_) => "api",
        RuntimeError::Cli(_) => "cli",
        RuntimeError::NetworkMismatch { .. } => "network_mismatch",
    });
    crate::metrics::podman_request(call, t.elapsed(), kind);
    r
}

/// Everything the agent does to containers. One real implementation (podman through its
/// Docker-compatible API) and a fake; methods return `Send` futures so passes can run on
/// any runtime thread.
pub trait Runtime: Send + Sync {
    /// Starts watching the runtime's events: container events that may mean work, and
    /// the stream's connection state. The watcher ends when the receiver is dropped.
    fn events(&self) -> tokio::sync::mpsc::Receiver<Trigger>;
    /// Cheap liveness check.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Every container, running or not, in one call.
    fn list(&self) -> impl Future<Output = Result<Vec<Actual>>> + Send;
    /// Whether the image is in the local store (never pulls).
    fn image_exists(&self, image: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Whether podman has a volume of exactly this name (never creates one).
    fn volume_exists(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Pulls `image` into the local store; the error carries the registry's reason. The
    /// latest progress line (`Downloading 0a1b2c3d4e5f 3.1MB/12.0MB`) is kept in
    /// `progress` as it changes: whoever shows it reads it at its own pace.
    fn pull(
        &self,
        image: &str,
        progress: &tokio::sync::watch::Sender<String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates a bridge network if none of that name exists: with podman's default
    /// settings, or with `options`. With `options`, a network of that name that exists
    /// with other subnets, gateways, `internal`, IPv6 or MTU is `NetworkMismatch`.
    /// A network it makes carries `labels` (the agent's own: which node made it, and for
    /// whose service).
    fn ensure_network(
        &self,
        name: &str,
        options: Option<&crate::model::NetworkOptions>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes network `name` when its labels are all of `labels` (the agent made it,
    /// for that service) and no container uses it: `Ok(true)` when removed, `Ok(false)`
    /// when it is not there, not ours or in use.
    fn remove_network(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The networks whose labels include all of `labels`: each one's name and labels.
    fn networks(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<(String, BTreeMap<String, String>)>>> + Send;
    /// Creates the container; returns its id. A taken name is `NameInUse`.
    fn create(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// The pid (on this host) of a running container's main process; `None` when it does
    /// not run or has no pid podman can tell.
    fn main_pid(&self, id: &str) -> impl Future<Output = Result<Option<u32>>> + Send;
    /// Podman's graph root (`store.graphRoot`), under which its database is: read at
    /// deaths ([`libpod_db`]). `None` where the runtime has none.
    fn graph_root(&self) -> impl Future<Output = Result<Option<std::path::PathBuf>>> + Send {
        async { Ok(None) }
    }
    fn stop(&self, id: &str, timeout_secs: i64) -> impl Future<Output = Result<()>> + Send;
    /// Force-removes a container by id or name; `NotFound` when the API cannot see it.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// The id and labels of the container of exactly that name, if the API can see one.
    /// (Podman resolves a reference that names no container as an id prefix: "db" would
    /// find a container whose id starts with "db". Only an exact name counts here.)
    fn holder(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<(String, BTreeMap<String, String>)>>> + Send;
    /// Frees names held by container storage after podman's database was lost: the one
    /// case the API cannot handle. Through the CLI (argv, no shell): `<cli> ps --all
    /// --external` finds the storage-only containers holding those exact names, and
    /// `<cli> rm --force --ignore ID…` removes them by full id (never by name, which podman
    /// would also resolve as an id prefix). A name that nothing holds is no error.
    fn free_storage_names(&self, names: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// Runs `argv` in the running container `id` by exec (no shell, no tty, no stdin) and
    /// waits for it to end, at most `timeout`: then its process is SIGKILLed and the
    /// answer says `timed_out` (podman's returns within `timeout` +
    /// [`exec::KILL_WAIT`]). An error means it could not be run (no such container, not
    /// running, podman unreachable); a command that fails is an `Ok` with its exit code.
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Before the process exits: waits (a bounded while) for what the runtime still does
    /// on its own for work given up — the kill of an exec whose caller was dropped.
    fn settle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The address the host reaches the container at: the IP of its first network that
    /// has one (by network name), `127.0.0.1` for network mode `host`, `None` when it has
    /// none (network `none`, not running, or a rootless network the host cannot reach).
    fn address(&self, id: &str) -> impl Future<Output = Result<Option<std::net::IpAddr>>> + Send;
}

/// What differs between the options a service file declares for a network (`want`) and
/// those of the network found (`have`), as far as podman's compat API shows them: the
/// subnets of each address family the file declares (and each gateway it names), `internal`, IPv6, the MTU. `None`: none of
/// those. A range (`ip_range`), the bridge's name and labels are not compared: podman
/// 4.3's compat inspect does not show the first two, and labels change nothing.
pub fn network_difference(
    want: &crate::model::NetworkOptions,
    have: &crate::model::NetworkOptions,
) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    // Per address family the file declares subnets of: podman picks the subnet of a
    // family the file leaves out (an IPv6 one for enable_ipv6 alone), which is no
    // difference.
    let v6 = |s: &crate::model::Subnet| s.subnet.contains(':');
    for family in [false, true] {
        let list = |o: &crate::model::NetworkOptions| {
            let mut v: Vec<String> = o
                .subnets
                .iter()
                .filter(|s| v6(s) == family)
                .map(|s| s.subnet.clone())
                .collect();
            v.sort();
            v
        };
        let (w, h) = (list(want), list(have));
        if w.is_empty() {
            continue;
        }
        if w != h {
            out.push(format!(
                "subnets {} (the file: {})",
                if h.is_empty() {
                    "none".into()
                } else {
                    h.join(", ")
                },
                w.join(", ")
            ));
            continue;
        }
        for ws in want.subnets.iter().filter(|s| v6(s) == family) {
            let Some(g) = &ws.gateway else { continue };
            let found = have
                .subnets
                .iter()
                .find(|s| s.subnet == ws.subnet)
                .and_then(|s| s.gateway.clone());
            if found.as_deref() != Some(g.as_str()) {
                out.push(format!(
                    "gateway of {} {} (the file: {g})",
                    ws.subnet,
                    found.as_deref().unwrap_or("none")
                ));
            }
        }
    }
    if want.internal != have.internal {
        out.push(format!(
            "internal {} (the file: {})",
            have.internal, want.internal
        ));
    }
    if want.enable_ipv6 != have.enable_ipv6 {
        out.push(format!(
            "enable_ipv6 {} (the file: {})",
            have.enable_ipv6, want.enable_ipv6
        ));
    }
    if want.mtu() != have.mtu() {
        out.push(format!(
            "mtu {} (the file: {})",
            have.mtu().unwrap_or("podman's default"),
            want.mtu().unwrap_or("podman's default")
        ));
    }
    (!out.is_empty()).then(|| out.join(", "))
}

#[cfg(test)]
mod network_tests {
    use super::network_difference;
    use crate::model::{NetworkOptions, Subnet};

    fn net(subnets: &[(&str, Option<&str>)], internal: bool, v6: bool) -> NetworkOptions {
        NetworkOptions {
            subnets: subnets
                .iter()
                .map(|(s, g)| Subnet {
                    subnet: s.to_string(),
                    gateway: g.map(str::to_string),
                    ip_range: None,
                })
                .collect(),
            internal,
            enable_ipv6: v6,
            ..Default::default()
        }
    }

    #[test]
    fn only_what_the_file_declares_and_podman_shows_is_compared() {
        let want = net(&[("10.1.0.0/24", None)], false, true);
        // podman 4.3 adds an IPv6 subnet of its own for enable_ipv6 with an IPv4 subnet
        // alone (measured here), and gateways the file does not name: no difference.
        let have = net(
            &[
                ("10.1.0.0/24", Some("10.1.0.1")),
                ("fd00:aa::/64", Some("fd00:aa::1")),
            ],
            false,
            true,
        );
        assert_eq!(network_difference(&want, &have), None);
        let mut labelled = want.clone();
        labelled.labels.insert("a".into(), "b".into());
        labelled.subnets[0].ip_range = Some("10.1.0.128/25".into());
        assert_eq!(network_difference(&labelled, &have), None);
        // Nothing declared: any network of the name is the one.
        assert_eq!(
            network_difference(
                &NetworkOptions::default(),
                &net(&[("10.9.0.0/24", None)], false, false)
            ),
            None
        );
        let gw = net(&[("10.1.0.0/24", Some("10.1.0.254"))], true, false);
        assert_eq!(
            network_difference(&gw, &have).as_deref(),
            Some("gateway of 10.1.0.0/24 10.1.0.1 (the file: 10.1.0.254), internal false (the file: true), enable_ipv6 true (the file: false)")
        );
        let mut mtu = net(&[], false, false);
        mtu.driver_opts
            .insert("com.docker.network.driver.mtu".into(), "1400".into());
        let mut found = net(&[], false, false);
        assert_eq!(
            network_difference(&mtu, &found).as_deref(),
            Some("mtu podman's default (the file: 1400)")
        );
        found.driver_opts.insert("mtu".into(), "1400".into());
        assert_eq!(network_difference(&mtu, &found), None);
        let other = net(&[("fd00:bb::/64", None)], false, true);
        assert_eq!(
            network_difference(&other, &have).as_deref(),
            Some("subnets fd00:aa::/64 (the file: fd00:bb::/64)")
        );
    }
}
