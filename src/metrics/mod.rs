//! The daemon's Prometheus metrics (`[metrics] listen`, README "Metrics"): counters,
//! gauges and histograms in memory, updated by the loop and the podman client as things
//! happen, and encoded (OpenMetrics text, by the Prometheus project's `prometheus-client`)
//! at each scrape — a scrape reads these atomics only, never the registry or podman.
//!
//! One set per process ([`global`]): the daemon is one agent, and the podman client and
//! the event watcher count into it without being handed anything.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub mod server;

pub use server::{Listen, Server};

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];
type L3 = [(&'static str, String); 3];
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the daemon exports (names without the `mcp_agent_` prefix the registry
/// adds; counters get `_total` when encoded).
pub struct Metrics {
    registry: Registry,
    /// Components by desired state and the state the loop last knew.
    pub components: Family<L2, Gauge>,
    /// 1 while a component desired running is running (as the loop knows it), else 0.
    pub component_running: Family<L2, Gauge>,
    /// Restarts and recreations the agent made, by component and cause.
    pub restarts: Family<L3, Counter>,
    /// Operations on containers by kind and result.
    pub actions: Family<L2, Counter>,
    /// Passes (list + plan) by what asked for them.
    pub passes: Family<L1, Counter>,
    pub pass_duration: Histogram,
    pub podman_duration: HistFamily<L1>,
    pub podman_errors: Family<L2, Counter>,
    pub event_reconnects: Counter,
    pub event_lag: Histogram,
    pub backoff_waiting: Gauge,
    pub backoff_next_retry: Family<L2, Gauge>,
    pub routes_pending: Gauge,
    pub cert_expiry: Family<L1, Gauge>,
    pub cert_order_failures: Family<L1, Counter>,
    pub probes: Family<L1, Counter>,
    pub probe_duration: Histogram,
    pub probe_late: Histogram,
}

/// How late a probe started: 1 ms … 100 s, with 1 s a bound (probes late by more than a
/// second are the ones an operator looks for).
pub const PROBE_LATE_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

fn podman_histogram() -> Histogram {
    // 0.5 ms … ≈ 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mcp_agent");
        let m = Metrics {
            components: Family::default(),
            component_running: Family::default(),
            restarts: Family::default(),
            actions: Family::default(),
            passes: Family::default(),
            pass_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            podman_duration: Family::new_with_constructor(podman_histogram),
            podman_errors: Family::default(),
            event_reconnects: Counter::default(),
            event_lag: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            backoff_waiting: Gauge::default(),
            backoff_next_retry: Family::default(),
            routes_pending: Gauge::default(),
            cert_expiry: Family::default(),
            cert_order_failures: Family::default(),
            probes: Family::default(),
            probe_duration: podman_histogram(),
            probe_late: Histogram::new(PROBE_LATE_BUCKETS),
            registry: Registry::default(),
        };
        let build: Family<L1, Gauge> = Family::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("build_info", "Always 1; the labels name this build", build);
        registry.register(
            "components",
            "Components by desired state and actual state (as the agent last saw it; \
             `unknown` until a pass has seen it)",
            m.components.clone(),
        );
        registry.register(
            "component_running",
            "1 while a component whose desired state is running runs, else 0",
            m.component_running.clone(),
        );
        registry.register(
            "restarts",
            "Restarts and recreations the agent made, by component and cause \
             (crash, removal, drift, database_loss)",
            m.restarts.clone(),
        );
        registry.register(
            "actions",
            "Operations on containers by action and result (ok, failed, unavailable)",
            m.actions.clone(),
        );
        registry.register(
            "passes",
            "Reconcile passes (a container list and a plan) by what asked for them",
            m.passes.clone(),
        );
        registry.register_with_unit(
            "pass_duration",
            "How long a pass's container list and plan took",
            prometheus_client::registry::Unit::Seconds,
            m.pass_duration.clone(),
        );
        registry.register_with_unit(
            "podman_request_duration",
            "Podman API requests by call",
            prometheus_client::registry::Unit::Seconds,
            m.podman_duration.clone(),
        );
        registry.register(
            "podman_request_errors",
            "Podman API requests that failed, by call and kind of error",
            m.podman_errors.clone(),
        );
        registry.register(
            "event_stream_reconnects",
            "Times podman's event stream was opened again after it closed",
            m.event_reconnects.clone(),
        );
        registry.register_with_unit(
            "event_lag",
            "Delay between podman's timestamp of an event and the agent receiving it",
            prometheus_client::registry::Unit::Seconds,
            m.event_lag.clone(),
        );
        registry.register(
            "backoff_components",
            "Components waiting out a backoff before their next attempt",
            m.backoff_waiting.clone(),
        );
        registry.register(
            "backoff_next_retry_timestamp_seconds",
            "Unix time of a backing-off component's next attempt",
            m.backoff_next_retry.clone(),
        );
        registry.register(
            "routes_pending",
            "Routes wanted that the proxy does not serve yet",
            m.routes_pending.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time at which a service's current certificate expires",
            m.cert_expiry.clone(),
        );
        registry.register(
            "certificate_order_failures",
            "Certificate orders that failed, by service",
            m.cert_order_failures.clone(),
        );
        registry.register(
            "health_probes",
            "Health check probes run, by result (ok, failed)",
            m.probes.clone(),
        );
        registry.register_with_unit(
            "health_probe_duration",
            "How long a health check probe took",
            prometheus_client::registry::Unit::Seconds,
            m.probe_duration.clone(),
        );
        registry.register_with_unit(
            "health_probe_late",
            "How long after it was due a health check probe started (it waits for one of \
             `[health] concurrency` slots: probes slower than their interval run late)",
            prometheus_client::registry::Unit::Seconds,
            m.probe_late.clone(),
        );
        Metrics { registry, ..m }
    }

    fn probe_started(&self, late: Duration) {
        self.probe_late.observe(late.as_secs_f64());
    }

    /// The exposition, as served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// One podman API call: how long it took, and the kind of its error if it failed.
pub fn podman_request(call: &'static str, took: Duration, error: Option<&'static str>) {
    let m = global();
    m.podman_duration
        .get_or_create(&[("call", call.to_string())])
        .observe(took.as_secs_f64());
    if let Some(kind) = error {
        m.podman_errors
            .get_or_create(&[("call", call.to_string()), ("kind", kind.to_string())])
            .inc();
    }
}

/// One health check probe: whether it passed, and how long it took.
pub fn probe(ok: bool, took: Duration) {
    let m = global();
    let result = if ok { "ok" } else { "failed" };
    m.probes
        .get_or_create(&[("result", result.to_string())])
        .inc();
    m.probe_duration.observe(took.as_secs_f64());
}

/// A probe starts, `late` after it was due.
pub fn probe_started(late: Duration) {
    global().probe_started(late);
}

/// Seconds since the Unix epoch of `t`, rounded down.
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Records a podman event's delay (podman stamps events to the nanosecond).
pub fn event_received(at: SystemTime) {
    let lag = SystemTime::now()
        .duration_since(at)
        .unwrap_or(Duration::ZERO);
    global().event_lag.observe(lag.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_the_prefix() {
        let m = global();
        m.actions
            .get_or_create(&[("action", "create".into()), ("result", "ok".into())])
            .inc();
        let text = m.encode();
        for name in [
            "mcp_agent_build_info",
            "mcp_agent_actions_total{action=\"create\",result=\"ok\"} ",
            "# TYPE mcp_agent_pass_duration_seconds histogram",
            "mcp_agent_event_stream_reconnects_total 0",
            "mcp_agent_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The count in `text` of the probe lateness bucket `le`.
    fn late_bucket(text: &str, le: &str) -> u64 {
        let line = format!("mcp_agent_health_probe_late_seconds_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line} in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_probe_started_late_is_counted_in_its_bucket() {
        // Metrics of its own: other tests' probes count in the process's.
        let m = Metrics::new();
        let before = m.encode();
        m.probe_started(Duration::from_millis(1500));
        let after = m.encode();
        let grew = |le: &str| late_bucket(&after, le) - late_bucket(&before, le);
        assert_eq!(grew("1.0"), 0, "1.5 s late counted within 1 s");
        assert_eq!(grew("2.0"), 1);
        assert_eq!(grew("+Inf"), 1);
    }
}
