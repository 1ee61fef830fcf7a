//! What the loop tells the metrics (README "Metrics"): counters as things happen, and the
//! gauges of its state set again after a turn that changed it. A scrape reads only these.

use std::collections::{BTreeMap, HashSet};

use tokio::time::Instant;

use super::Agent;
use crate::certs::EnsureReport;
use crate::container::ComponentKey;
use crate::metrics::global;
use crate::reconcile::{ComponentReport, Status};
use crate::runtime::Runtime;
use crate::spec::DesiredState;

type L2 = [(&'static str, String); 2];

/// The label sets of the gauges the loop set last time: those it does not set again are
/// removed (a component that went away leaves no series behind).
#[derive(Default)]
pub(super) struct Series {
    components: HashSet<L2>,
    running: HashSet<L2>,
    next_retry: HashSet<L2>,
    certs: HashSet<String>,
}

fn key_labels(k: &ComponentKey) -> L2 {
    [
        ("service", k.service.clone()),
        ("component", k.component.clone()),
    ]
}

impl<R: Runtime + 'static> Agent<R> {
    /// An operation on a component is done: its action, and the restart it was.
    pub(super) fn count_action(&mut self, r: &ComponentReport, cause: Option<&'static str>) {
        let m = global();
        if let Some(verb) = r.verb {
            let result = if r.is_unavailable() {
                "unavailable"
            } else if r.status.is_failure() {
                "failed"
            } else {
                "ok"
            };
            m.actions
                .get_or_create(&[("action", verb.as_str().into()), ("result", result.into())])
                .inc();
        }
        if let Some(cause) = cause {
            let [s, c] = key_labels(&r.key);
            m.restarts
                .get_or_create(&[s, c, ("cause", cause.to_string())])
                .inc();
        }
    }

    /// A pass was planned: what asked for it, and how long its list and plan took.
    pub(super) fn count_pass(&mut self) {
        if let Some((t, trigger)) = self.pass_started.take() {
            let m = global();
            m.passes
                .get_or_create(&[("trigger", trigger.to_string())])
                .inc();
            m.pass_duration.observe(t.elapsed().as_secs_f64());
        }
    }

    /// The routes' states changed.
    pub(super) fn routes_metrics(&self) {
        let pending = self
            .route_states
            .iter()
            .filter(|(.., s)| s.state == "pending")
            .count();
        global().routes_pending.set(pending as i64);
    }

    /// A certificate check is done: expiry of each current certificate, failed orders.
    pub(super) fn certs_metrics(&mut self, report: &EnsureReport) {
        let m = global();
        let mut seen = HashSet::new();
        for c in &report.certs {
            if c.order_time.is_some() && !c.issued {
                m.cert_order_failures
                    .get_or_create(&[("service", c.service.clone())])
                    .inc();
            }
            if let Some(info) = &c.current {
                m.cert_expiry
                    .get_or_create(&[("service", c.service.clone())])
                    .set(crate::metrics::unix_secs(info.not_after));
                seen.insert(c.service.clone());
            }
        }
        for gone in self.metric_series.certs.difference(&seen) {
            m.cert_expiry.remove(&[("service", gone.clone())]);
        }
        self.metric_series.certs = seen;
    }

    /// Sets the components' gauges again, when a status changed since the last time.
    pub(super) fn refresh_metrics(&mut self) {
        if !std::mem::take(&mut self.metrics_dirty) {
            return;
        }
        let m = global();
        let mut by_state: BTreeMap<L2, i64> = BTreeMap::new();
        let mut running = HashSet::new();
        let mut next_retry = HashSet::new();
        let now = Instant::now();
        let now_unix = crate::metrics::unix_secs(std::time::SystemTime::now());
        for d in &self.desired {
            let status = self.status.get(&d.key).map(|(s, ..)| *s);
            let state = status.map_or("unknown", Status::as_str);
            *by_state
                .entry([
                    ("desired", d.state.as_str().to_string()),
                    ("state", state.to_string()),
                ])
                .or_default() += 1;
            if d.state == DesiredState::Running {
                let l = key_labels(&d.key);
                m.component_running
                    .get_or_create(&l)
                    .set((status == Some(Status::Running)) as i64);
                running.insert(l);
            }
            if status == Some(Status::Waiting) {
                if let Some(at) = self.book.retry_at.get(&d.key).filter(|t| **t > now) {
                    let l = key_labels(&d.key);
                    let secs = (*at - now).as_secs_f64().ceil() as i64;
                    m.backoff_next_retry.get_or_create(&l).set(now_unix + secs);
                    next_retry.insert(l);
                }
            }
        }
        m.backoff_waiting.set(next_retry.len() as i64);
        let components: HashSet<L2> = by_state.keys().cloned().collect();
        for (l, n) in by_state {
            m.components.get_or_create(&l).set(n);
        }
        let s = &mut self.metric_series;
        for gone in s.components.difference(&components) {
            m.components.remove(gone);
        }
        for gone in s.running.difference(&running) {
            m.component_running.remove(gone);
        }
        for gone in s.next_retry.difference(&next_retry) {
            m.backoff_next_retry.remove(gone);
        }
        s.components = components;
        s.running = running;
        s.next_retry = next_retry;
    }
}
