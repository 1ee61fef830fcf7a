//! The edge of the node: the proxy's routes and the TLS certificates. Both are desired
//! state like the containers, each in a task of its own, so a proxy or CA that is down
//! never holds back containers.

use std::time::SystemTime;

use tokio::time::Instant;

use super::work::{Work, SOON, URGENT};
use super::{Agent, Mode, CERT_RETRY_SLACK};
use crate::certs::{self, EnsureReport};
use crate::control::Requeue;
use crate::proxy::{ProxyError, SyncReport};
use crate::registry::CertStatus;
use crate::routes;
use crate::runtime::Runtime;

/// What became of the certificates in `--once`.
#[derive(Debug)]
pub enum CertsOutcome {
    /// Not attempted: the proxy, which answers HTTP-01 and loads them, is down.
    Pending {
        states: Vec<CertStatus>,
        error: String,
    },
    Ensured(EnsureReport),
}

impl<R: Runtime + 'static> Agent<R> {
    pub(super) fn on_routes_synced(&mut self, result: Result<SyncReport, ProxyError>) -> Requeue {
        let line = routes::describe(&result, self.wanted_routes.len());
        let now = Instant::now();
        let mut requeue = Requeue::OnChange;
        // Whether the proxy's certificates need a look: the routes changed, the proxy
        // was away, or a resync interval has passed since the last look.
        let mut certs_due = self
            .certs_asked
            .is_none_or(|t| now.saturating_duration_since(t) >= self.resync);
        match &result {
            Ok(report) => {
                certs_due |= !report.is_noop() || self.proxy_error.is_some();
                // The daemon looks again soon: a proxy restarted empty tells nobody.
                if self.mode == Mode::Daemon && self.ctx.proxy.serves_routes() {
                    requeue = Requeue::After(super::PROXY_CHECK);
                }
                if self.proxy_error.take().is_some() {
                    tracing::info!(routes = %line, "proxy reachable again; routes registered");
                } else if !report.is_noop() {
                    tracing::info!(
                        added = %report.added.join(","), updated = %report.updated.join(","),
                        deleted = %report.deleted.join(","),
                        "routes registered with the proxy"
                    );
                }
                self.proxy_retry.reset();
            }
            Err(e) => {
                if self.proxy_error.is_none() {
                    tracing::warn!(error = %e, "cannot register routes with the proxy; containers are unaffected, retrying");
                }
                self.proxy_error = Some(e.to_string());
                requeue = Requeue::After(self.proxy_retry.next_delay(now));
            }
        }
        let (served, withheld): (Vec<_>, Vec<_>) = self
            .wanted_routes
            .iter()
            .cloned()
            .partition(|(k, ..)| self.serves(k));
        let mut states = routes::states(self.ctx.proxy.serves_routes(), &served, &result);
        states.extend(withheld.into_iter().map(|(k, r, _)| {
            let health = self
                .health
                .get(&k)
                .map_or("not running", |t| t.state.as_str());
            (
                k,
                r,
                crate::registry::RouteProxyState {
                    state: "withheld".into(),
                    error: Some(format!("health check: {health}")),
                },
            )
        }));
        states.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        if states != self.route_states {
            self.writer.routes(states.clone());
            self.route_states = states;
            self.routes_metrics();
        }
        let proxy_down = result.as_ref().err().filter(|e| e.is_unavailable());
        if !self.ctx.issuer.is_none() {
            match proxy_down {
                // HTTP-01 and loading both need the proxy; the route retries bring the
                // check back.
                Some(e) if self.mode == Mode::Once => {
                    let states = certs::pending(&self.wanted_certs, &e.to_string());
                    self.writer.certs(states.clone());
                    self.report.certs = Some(CertsOutcome::Pending {
                        states,
                        error: e.to_string(),
                    });
                }
                Some(_) => {}
                None if certs_due => {
                    self.certs_asked = Some(now);
                    self.sched.schedule(Work::Certs, SOON, now);
                }
                None => {}
            }
        }
        if self.mode == Mode::Once {
            self.report.routes = Some(result);
        }
        requeue
    }

    pub(super) fn on_certs(&mut self, report: EnsureReport) -> Requeue {
        let now = Instant::now();
        if self.mode == Mode::Daemon {
            self.certs_metrics(&report);
        }
        match &report.load {
            Ok(written) => {
                if self.cert_load_error.take().is_some() || *written {
                    tracing::info!(certs = %report.describe(), "certificates loaded into the proxy");
                }
            }
            Err(e) => {
                if self.cert_load_error.is_none() {
                    tracing::warn!(error = %e, "cannot load certificates into the proxy; retrying");
                }
                self.cert_load_error = Some(e.to_string());
                if self.mode == Mode::Daemon {
                    let delay = self.proxy_retry.next_delay(now);
                    self.sched.schedule(Work::Routes, URGENT, now + delay);
                }
            }
        }
        // A little after a failed order's retry is due, so the check that wakes finds
        // it due.
        let requeue = match report.next_retry() {
            Some(at) => Requeue::After(
                at.duration_since(SystemTime::now()).unwrap_or_default() + CERT_RETRY_SLACK,
            ),
            None => Requeue::OnChange,
        };
        let states = report.statuses();
        let same = |a: &[CertStatus], b: &[CertStatus]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    CertStatus {
                        updated_ms: 0,
                        ..x.clone()
                    } == CertStatus {
                        updated_ms: 0,
                        ..y.clone()
                    }
                })
        };
        if self.mode == Mode::Once || !same(&states, &self.cert_states) {
            self.writer.certs(states.clone());
            self.cert_states = states;
        }
        if self.mode == Mode::Once {
            self.report.certs = Some(CertsOutcome::Ensured(report));
        }
        requeue
    }
}
