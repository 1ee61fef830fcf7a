//! The agent's own configuration file (docs/design.md §2): parsing, defaults and
//! validation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Location;

/// Where the config is read from when neither `--config` nor `MCP_AGENT_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mcp-agent/mcp-agent.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: crate::spec::input::InputError,
    },
    #[error("{path}:{at}: {reason}")]
    Invalid {
        path: PathBuf,
        at: Location,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentSection,
    pub database: DatabaseSection,
    pub podman: PodmanSection,
    pub reconcile: ReconcileSection,
    pub ports: PortsSection,
    pub proxy: ProxySection,
    pub certs: CertsSection,
    pub metrics: MetricsSection,
    pub volumes: VolumesSection,
    pub networks: NetworksSection,
    pub health: HealthSection,
    pub log: LogSection,
}

/// `[health]`: the agent's health checks (issue 14).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Probes under way at once, across all components.
    pub concurrency: Positive,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            concurrency: Positive(4),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (README "Metrics"); off when `listen` is absent.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `host:port`, or an absolute unix socket path (`unix:` prefix optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl MetricsSection {
    /// Where to serve, when at all (validated at parse).
    pub fn listen(&self) -> Option<crate::metrics::Listen> {
        self.listen
            .as_deref()
            .and_then(|s| crate::metrics::Listen::parse(s).ok())
    }
}

/// Networks (issue 13 §1).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworksSection {
    /// A component with neither `network` nor `networks` joins its service's network
    /// (`mcp-<service>`, with its name as a DNS alias) instead of podman's default bridge.
    /// On by default, as compose does for a project; `false` keeps podman's bridge.
    pub service_default: bool,
}

impl Default for NetworksSection {
    fn default() -> NetworksSection {
        NetworksSection {
            service_default: true,
        }
    }
}

/// Where named volumes live (issue 13 §2).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VolumesSection {
    /// Absent: `volumes` beside the registry (`[database] path`'s directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
}

impl Config {
    /// The directory of named volumes: `[volumes] root`, else `<registry's dir>/volumes`.
    pub fn volumes_root(&self) -> PathBuf {
        self.volumes.root.clone().unwrap_or_else(|| {
            self.database
                .path
                .parent()
                .unwrap_or(Path::new("/"))
                .join("volumes")
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Stamped on container labels (`mcp.node`); containers of other nodes are never ours.
    pub node: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PodmanSection {
    pub socket: SocketUri,
    /// argv prefix of the podman CLI, used only to free names held by container storage.
    pub cli: Argv,
    /// When images are pulled, for components without `pull` of their own.
    pub pull: crate::model::PullPolicy,
    /// Pulls under way at once (one per image), apart from the bring-ups' slots.
    pub pull_concurrency: Positive,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSection {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub concurrency: Positive,
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    pub backoff_multiplier: Multiplier,
    #[serde(with = "humantime_serde")]
    pub stable_after: Duration,
    /// READY=1 waits at most this long for every component that can come up.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PortsSection {
    pub range: PortRange,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Caddy,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub kind: ProxyKind,
    pub admin_socket: PathBuf,
    pub server: String,
    pub http_listen: String,
    pub https_listen: String,
    pub cert_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IssuerKind {
    Acme,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CertsSection {
    pub issuer: IssuerKind,
    pub directory_url: String,
    pub contact: Vec<String>,
    pub ca_bundle: Option<PathBuf>,
    #[serde(with = "long_duration")]
    pub renew_before: Duration,
    /// First retry delay of a service whose certificate could not be obtained; doubles
    /// (with jitter) up to `backoff_max`. Kept apart from `[reconcile]`: a CA counts
    /// failed validations against rate limits, so retries are slower than for containers.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    pub level: LogLevel,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection { node: hostname() }
    }
}

/// Where the defaults put the agent's files: root's system paths, or, for any other user,
/// that user's XDG directories, so a rootless agent (a `systemctl --user` unit) talks to
/// its user's podman and keeps its registry in its user's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The registry, certificates and account key live here.
    pub state: PathBuf,
    /// Podman's and Caddy's sockets live under here.
    pub runtime: PathBuf,
}

impl Dirs {
    /// The directories for `uid`, reading `XDG_STATE_HOME`, `XDG_RUNTIME_DIR` and `HOME`
    /// through `env`. Relative XDG values are ignored, as the XDG spec says; a non-root
    /// user without `HOME` or `XDG_STATE_HOME` gets root's state directory (and the
    /// config must then name its paths).
    pub fn for_user(uid: u32, env: impl Fn(&str) -> Option<String>) -> Dirs {
        if uid == 0 {
            return Dirs {
                state: "/var/lib/mcp-agent".into(),
                runtime: "/run".into(),
            };
        }
        let abs = |key: &str| env(key).map(PathBuf::from).filter(|p| p.is_absolute());
        let state = abs("XDG_STATE_HOME")
            .or_else(|| abs("HOME").map(|h| h.join(".local/state")))
            .map_or_else(|| "/var/lib/mcp-agent".into(), |s| s.join("mcp-agent"));
        let runtime = abs("XDG_RUNTIME_DIR").unwrap_or_else(|| format!("/run/user/{uid}").into());
        Dirs { state, runtime }
    }

    /// The directories of the user this process runs as (its effective uid).
    pub fn current() -> Dirs {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Dirs::for_user(uid, |k| std::env::var(k).ok())
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            path: Dirs::current().state.join("registry.db"),
        }
    }
}

impl Default for PodmanSection {
    fn default() -> Self {
        let socket = Dirs::current().runtime.join("podman/podman.sock");
        PodmanSection {
            socket: SocketUri(format!("unix://{}", socket.display())),
            cli: Argv(vec!["podman".into()]),
            pull: crate::model::PullPolicy::Never,
            pull_concurrency: Positive(2),
        }
    }
}

impl Default for ReconcileSection {
    fn default() -> Self {
        ReconcileSection {
            interval: Duration::from_secs(30),
            concurrency: Positive(4),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            backoff_multiplier: Multiplier(2.0),
            stable_after: Duration::from_secs(600),
            ready_timeout: Duration::from_secs(120),
        }
    }
}

impl Default for PortsSection {
    fn default() -> Self {
        PortsSection {
            range: PortRange {
                first: 20000,
                last: 29999,
            },
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        let dirs = Dirs::current();
        ProxySection {
            kind: ProxyKind::None,
            admin_socket: dirs.runtime.join("caddy/admin.sock"),
            server: "mcp".into(),
            http_listen: ":80".into(),
            https_listen: ":443".into(),
            cert_dir: dirs.state.join("certs"),
        }
    }
}

impl Default for CertsSection {
    fn default() -> Self {
        CertsSection {
            issuer: IssuerKind::None,
            directory_url: String::new(),
            contact: Vec::new(),
            ca_bundle: None,
            renew_before: Duration::from_secs(720 * 3600),
            backoff_initial: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Auto,
            level: LogLevel("info".into()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `unix:///path` — the podman API socket. Only unix sockets: the API is root-equivalent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SocketUri(pub String);

impl SocketUri {
    pub fn path(&self) -> &Path {
        Path::new(self.0.strip_prefix("unix://").unwrap_or(&self.0))
    }
}

impl<'de> Deserialize<'de> for SocketUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Ok(SocketUri(s)),
            _ => Err(serde::de::Error::custom(format!(
                "podman socket {s:?} must be unix:///absolute/path"
            ))),
        }
    }
}

/// A non-empty argv prefix (no shell: each element is one argument).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.is_empty() || v[0].is_empty() {
            return Err(serde::de::Error::custom(
                "cli must be a non-empty list, e.g. [\"podman\"]",
            ));
        }
        if v.iter().any(|a| a.contains('\0')) {
            return Err(serde::de::Error::custom(
                "cli arguments must not contain NUL",
            ));
        }
        Ok(Argv(v))
    }
}

/// A count of at least one.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Positive(pub usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=1024).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} is out of range: expected 1 to 1024"
            )));
        }
        Ok(Positive(n as usize))
    }
}

/// A backoff multiplier: finite and at least 1 (a smaller one would shrink the delays).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Multiplier(pub f64);

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = f64::deserialize(d)?;
        if !n.is_finite() || !(1.0..=100.0).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} is out of range: expected 1.0 to 100.0"
            )));
        }
        Ok(Multiplier(n))
    }
}

/// Host ports handed to routes, inclusive: `"20000-29999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "port range {s:?} must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535"
            ))
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

/// A tracing filter directive such as `info` or `mcp_agent=debug,warn`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLevel(pub String);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        tracing_subscriber::EnvFilter::builder()
            .parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("log level {s:?}: {e}")))?;
        Ok(LogLevel(s))
    }
}

/// The largest config file read (a config is a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The longest duration any key takes: past it, adding it to a clock overflows
/// somewhere (`backoff_max = "400000000000years"` panicked the daemon).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `renew_before` compares with a certificate's expiry, which can be years away (a value
/// beyond a certificate's life renews it at every pass): it takes up to 100 years.
pub const MAX_RENEW_BEFORE: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

fn bounded_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
    max: Duration,
    most: &str,
) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let d = humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("duration {s:?}: {e}")))?;
    if d > max {
        return Err(serde::de::Error::custom(format!(
            "duration {s:?} is longer than the most allowed, {most}"
        )));
    }
    Ok(d)
}

mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::bounded_duration(d, super::MAX_DURATION, "1 year")
    }
}

mod long_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub use super::humantime_serde::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::bounded_duration(d, super::MAX_RENEW_BEFORE, "100 years")
    }
}

impl Config {
    /// Reads and validates the config at `path`; relative paths inside are made relative
    /// to the config file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = crate::spec::input::read_limited(path, MAX_CONFIG_BYTES).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            at: Location::of(
                std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()]).unwrap_or(""),
                usize::MAX,
            ),
            reason: "config is not valid UTF-8".into(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            at: Location::of(text, e.span().map_or(0, |s| s.start)),
            reason: e.message().trim_end().to_string(),
        })?;
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            at: key_location(text, key),
            reason,
        };
        if !crate::model::is_label_value(&cfg.agent.node) {
            return Err(invalid(
                "node",
                format!(
                    "node {:?} must be 1-63 characters of [A-Za-z0-9._-]",
                    cfg.agent.node
                ),
            ));
        }
        if !crate::model::is_name(&cfg.proxy.server) {
            return Err(invalid(
                "server",
                format!(
                    "proxy server {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                    cfg.proxy.server
                ),
            ));
        }
        let r = &cfg.reconcile;
        if r.backoff_initial.is_zero() || r.backoff_initial > r.backoff_max {
            return Err(invalid(
                "backoff_initial",
                "backoff_initial must be above zero and at most backoff_max".into(),
            ));
        }
        if r.interval < Duration::from_secs(1) {
            return Err(invalid("interval", "interval must be at least 1s".into()));
        }
        let c = &cfg.certs;
        if c.backoff_initial.is_zero() || c.backoff_initial > c.backoff_max {
            return Err(invalid(
                "backoff_initial",
                "[certs] backoff_initial must be above zero and at most backoff_max".into(),
            ));
        }
        if cfg.certs.issuer == IssuerKind::Acme {
            if cfg.proxy.kind != ProxyKind::Caddy {
                return Err(invalid(
                    "issuer",
                    "issuer \"acme\" answers HTTP-01 through the proxy: it needs [proxy] kind = \"caddy\"".into(),
                ));
            }
            if !cfg.certs.directory_url.starts_with("https://") {
                return Err(invalid(
                    "directory_url",
                    "directory_url must be an https:// URL when issuer = \"acme\"".into(),
                ));
            }
        }
        if let Some(l) = &cfg.metrics.listen {
            if let Err(reason) = crate::metrics::Listen::parse(l) {
                return Err(invalid("listen", reason));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut cfg.database.path);
        rel(&mut cfg.proxy.admin_socket);
        rel(&mut cfg.proxy.cert_dir);
        if let Some(p) = cfg.certs.ca_bundle.as_mut() {
            rel(p);
        }
        if let Some(p) = cfg.volumes.root.as_mut() {
            rel(p);
        }
        Ok(cfg)
    }

    /// The effective config as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// Where `key = ` first appears in `text` (start of file when absent): semantic errors
/// found after parsing still point at the line to fix.
fn key_location(text: &str, key: &str) -> Location {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Location::of(text, offset + (line.len() - t.len()));
            }
        }
        offset += line.len();
    }
    Location { line: 1, col: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/x/agent.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_duration_over_a_year_is_refused_at_its_position() {
        let e = parse("[reconcile]\nbackoff_max = \"400000000000years\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/x/agent.toml:2:15: duration \"400000000000years\" is longer than the most allowed, 1 year"),
            "{e}"
        );
        let e = parse("[certs]\nbackoff_max = \"367d\"\n").unwrap_err();
        assert!(e.contains("longer than the most allowed, 1 year"), "{e}");
        // A certificate can live for years: renew_before takes up to 100.
        assert!(parse("[certs]\nrenew_before = \"50000h\"\n").is_ok());
        let e = parse("[certs]\nrenew_before = \"101years\"\n").unwrap_err();
        assert!(e.contains("longer than the most allowed, 100 years"), "{e}");
        assert_eq!(
            parse("[reconcile]\nbackoff_max = \"1year\"\n")
                .unwrap()
                .reconcile
                .backoff_max,
            humantime::parse_duration("1year").unwrap()
        );
    }

    #[test]
    fn dev_zero_and_a_fifo_as_config_are_refused_at_once() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/zero: cannot read config: is a character device, not a regular file"
        );
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("c.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Config::load(&fifo).unwrap_err().to_string();
        assert!(
            e.ends_with("cannot read config: is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let big = d.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES + 1]).unwrap();
        let e = Config::load(&big).unwrap_err().to_string();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn empty_config_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.reconcile.interval, Duration::from_secs(30));
        assert_eq!(c.reconcile.concurrency.0, 4);
        assert_eq!(
            c.ports.range,
            PortRange {
                first: 20000,
                last: 29999
            }
        );
        assert_eq!(c.proxy.kind, ProxyKind::None);
        assert_eq!(c.podman.cli.0, vec!["podman".to_string()]);
        assert_eq!(c.podman.pull_concurrency.0, 2);
        assert_eq!(
            parse("[podman]\npull_concurrency = 1\n")
                .unwrap()
                .podman
                .pull_concurrency
                .0,
            1
        );
    }

    #[test]
    fn root_gets_the_system_paths_whatever_its_environment() {
        let env = |k: &str| match k {
            "HOME" => Some("/root".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/0".to_string()),
            _ => None,
        };
        assert_eq!(
            Dirs::for_user(0, env),
            Dirs {
                state: "/var/lib/mcp-agent".into(),
                runtime: "/run".into()
            }
        );
    }

    #[test]
    fn another_user_gets_its_xdg_directories() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/svc".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1001".to_string()),
            _ => None,
        };
        assert_eq!(
            Dirs::for_user(1001, env),
            Dirs {
                state: "/home/svc/.local/state/mcp-agent".into(),
                runtime: "/run/user/1001".into()
            }
        );
        let xdg = |k: &str| match k {
            "HOME" => Some("/home/svc".to_string()),
            "XDG_STATE_HOME" => Some("/srv/state".to_string()),
            _ => None,
        };
        assert_eq!(
            Dirs::for_user(1001, xdg),
            Dirs {
                state: "/srv/state/mcp-agent".into(),
                runtime: "/run/user/1001".into()
            }
        );
    }

    #[test]
    fn relative_or_missing_xdg_values_are_not_used() {
        let rel = |k: &str| match k {
            "HOME" => Some("/home/svc".to_string()),
            "XDG_STATE_HOME" => Some("state".to_string()),
            "XDG_RUNTIME_DIR" => Some("run".to_string()),
            _ => None,
        };
        assert_eq!(
            Dirs::for_user(1001, rel),
            Dirs {
                state: "/home/svc/.local/state/mcp-agent".into(),
                runtime: "/run/user/1001".into()
            }
        );
        assert_eq!(
            Dirs::for_user(1001, |_| None).state,
            PathBuf::from("/var/lib/mcp-agent")
        );
    }

    #[test]
    fn the_path_defaults_follow_the_current_user() {
        let c = parse("").unwrap();
        let d = Dirs::current();
        assert_eq!(c.database.path, d.state.join("registry.db"));
        assert_eq!(c.proxy.cert_dir, d.state.join("certs"));
        assert_eq!(c.proxy.admin_socket, d.runtime.join("caddy/admin.sock"));
        assert_eq!(c.podman.socket.path(), d.runtime.join("podman/podman.sock"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let c = parse("[database]\npath = \"state/r.db\"\n").unwrap();
        assert_eq!(c.database.path, PathBuf::from("/etc/x/state/r.db"));
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let cases = [
            (
                "[reconcile]\nintervall = \"1s\"\n",
                "agent.toml:2:1",
                "unknown field",
            ),
            (
                "[reconcile]\ninterval = 5\n",
                "agent.toml:2:12",
                "expected a string",
            ),
            (
                "[reconcile]\ninterval = \"5 parsecs\"\n",
                "agent.toml:2:12",
                "duration",
            ),
            (
                "[reconcile]\nconcurrency = 0\n",
                "agent.toml:2:15",
                "out of range",
            ),
            ("[ports]\nrange = \"3-1\"\n", "agent.toml:2:9", "port range"),
            (
                "[podman]\nsocket = \"tcp://x\"\n",
                "agent.toml:2:10",
                "unix:///",
            ),
            ("[podman]\ncli = []\n", "agent.toml:2:7", "non-empty"),
            (
                "[podman]\npull_concurrency = 0\n",
                "agent.toml:2:20",
                "out of range",
            ),
            (
                "[proxy]\nkind = \"nginx\"\n",
                "agent.toml:2:8",
                "unknown variant",
            ),
            ("[log]\nlevel = \"x=loud\"\n", "agent.toml:2:9", "log level"),
            ("[agent\n", "agent.toml:1:7", "unclosed table"),
            (
                "\n[reconcile]\nbackoff_initial = \"10m\"\n",
                "agent.toml:3:1",
                "backoff_max",
            ),
            ("[certs]\nissuer = \"acme\"\n", "agent.toml:2:1", "caddy"),
            (
                "[metrics]\n\nlisten = \"localhost:9464\"\n",
                "agent.toml:3:1",
                "IP address and port",
            ),
            ("[metrics]\nlisten = 9464\n", "agent.toml:2:10", "string"),
        ];
        for (text, at, reason) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(at), "{text:?}: {e} should name {at}");
            assert!(e.contains(reason), "{text:?}: {e} should say {reason}");
        }
    }

    #[test]
    fn metrics_are_off_unless_listen_is_set() {
        assert_eq!(parse("").unwrap().metrics.listen(), None);
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            c.metrics.listen(),
            Some(crate::metrics::Listen::Tcp(
                "127.0.0.1:9464".parse().unwrap()
            ))
        );
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        let c = parse("[metrics]\nlisten = \"/run/m.sock\"\n").unwrap();
        assert_eq!(
            c.metrics.listen(),
            Some(crate::metrics::Listen::Unix("/run/m.sock".into()))
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let c = parse("[reconcile]\ninterval = \"2m\"\n").unwrap();
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }
}
