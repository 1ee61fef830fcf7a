//! Health checks (issue 14, docs/design.md §5.9): the agent probes each running container
//! of a component with a check itself, on the scheduler (`Work::Probe`, at most
//! `[health] concurrency` at once, never two on one component), and acts on the result:
//! a component turns healthy at its first passing probe, unhealthy after `retries`
//! failures in a row that count (none inside `start_period` before the first success),
//! and an unhealthy one is restarted in place with the component's backoff (the plan's
//! `Restart`), or only reported (`on_failure = "none"`). Its L7 routes are served only
//! while it is healthy; its dependents wait for it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::work::{Work, NORMAL};
use super::{Agent, Mode};
use crate::container::ComponentKey;
use crate::health::ProbeResult;
use crate::model::{HealthCheck, OnFailure};
use crate::plan::RestartWhy;
use crate::registry::HealthStatus;
use crate::runtime::Runtime;

/// Where a component's check stands for its current container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthState {
    /// Started; no probe has passed yet.
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// One component's check of one container.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    pub id: String,
    pub state: HealthState,
    /// Failures in a row that counted.
    pub failures: u32,
    pub started: Instant,
    pub ever_ok: bool,
    pub last: Option<(bool, String, SystemTime)>,
    pub since: SystemTime,
    /// The container's address, once an http or tcp probe has found it.
    pub address: Option<std::net::IpAddr>,
    /// When its next probe was due (for the log of how late it starts).
    pub due: Instant,
}

impl Tracker {
    fn new(id: String, now: Instant) -> Tracker {
        Tracker {
            id,
            state: HealthState::Starting,
            failures: 0,
            started: now,
            ever_ok: false,
            last: None,
            since: SystemTime::now(),
            address: None,
            due: now,
        }
    }

    /// When the next probe is due: `start_interval` until the first success, then
    /// `interval`; jittered by up to a tenth either way, so checks of one interval
    /// spread out instead of running together.
    fn next_after(&self, check: &HealthCheck, now: Instant) -> Instant {
        let every = if self.ever_ok || self.state == HealthState::Unhealthy {
            check.interval.duration()
        } else {
            check
                .start_interval
                .duration()
                .min(check.interval.duration())
        };
        now + jittered(every, &self.id)
    }

    pub fn status(&self) -> HealthStatus {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        HealthStatus {
            state: self.state.as_str().to_string(),
            failures: self.failures,
            last_ok: self.last.as_ref().map(|l| l.0),
            last_output: self.last.as_ref().map(|l| l.1.clone()),
            last_ms: self.last.as_ref().map(|l| ms(l.2)),
            since_ms: ms(self.since),
        }
    }
}

/// `every` ± 10 %, from a random hash of `seed` and the time.
fn jittered(every: Duration, seed: &str) -> Duration {
    let h = RandomState::new().hash_one((seed, std::time::Instant::now()));
    let tenth = every / 10;
    let span = tenth.as_nanos() as u64 * 2;
    if span == 0 {
        return every;
    }
    every - tenth + Duration::from_nanos(h % span)
}

impl<R: Runtime + 'static> Agent<R> {
    /// After a pass: a tracker for each component with a check whose container the plan
    /// found running as wanted (a new container, or one started again, starts anew), none
    /// for those whose container is not running.
    pub(super) fn track_health(
        &mut self,
        running: &[(ComponentKey, String)],
        actual: &[crate::runtime::Actual],
    ) {
        let now = Instant::now();
        for (key, id) in running {
            if !self.checks.contains_key(key) {
                continue;
            }
            if self.health.get(key).is_none_or(|t| t.id != *id) {
                self.start_tracking(key, id, now);
            }
        }
        let up: std::collections::HashSet<&str> = actual
            .iter()
            .filter(|a| a.state == crate::runtime::State::Running)
            .map(|a| a.id.as_str())
            .collect();
        let gone: Vec<ComponentKey> = self
            .health
            .iter()
            .filter(|(k, t)| !up.contains(t.id.as_str()) || !self.checks.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.stop_tracking(&key);
        }
    }

    /// A container of `key` (re)started: its check starts over.
    pub(super) fn start_tracking(&mut self, key: &ComponentKey, id: &str, now: Instant) {
        let Some(check) = self.checks.get(key) else {
            return;
        };
        if let Some(old) = self.health.remove(key) {
            self.book.healthy.remove(&old.id);
            self.book.restart.remove(&old.id);
        }
        let mut t = Tracker::new(id.to_string(), now);
        let at = t.next_after(check, now);
        t.due = at;
        self.health.insert(key.clone(), t);
        self.sched.cancel(&Work::Probe(key.clone()));
        self.sched.schedule(Work::Probe(key.clone()), NORMAL, at);
        self.routes_changed();
        self.write_health(key);
    }

    pub(super) fn stop_tracking(&mut self, key: &ComponentKey) {
        if let Some(t) = self.health.remove(key) {
            self.book.healthy.remove(&t.id);
            self.book.restart.remove(&t.id);
            self.sched.cancel(&Work::Probe(key.clone()));
            self.routes_changed();
            self.write_health(key);
        }
    }

    /// A probe's result, for container `id` of `key`.
    pub(super) fn on_probe(&mut self, key: &ComponentKey, id: &str, r: ProbeResult) {
        let now = Instant::now();
        let Some(check) = self.checks.get(key).cloned() else {
            return;
        };
        let Some(t) = self.health.get_mut(key) else {
            return;
        };
        if t.id != id {
            return;
        }
        crate::metrics::probe(r.ok, r.took);
        // Kept while probes pass; a failure looks the address up again (a container
        // podman restarted in place may have a new one).
        t.address = if r.ok { r.address } else { None };
        let before = t.state;
        // What `status` shows, before this probe: written again only when it changes
        // (a steady check costs no registry write).
        let shown = (
            t.failures,
            t.last.as_ref().map(|(ok, out, _)| (*ok, out.clone())),
        );
        t.last = Some((r.ok, r.output.clone(), SystemTime::now()));
        if r.ok {
            t.failures = 0;
            t.ever_ok = true;
            t.state = HealthState::Healthy;
        } else if t.ever_ok
            || now.saturating_duration_since(t.started) >= check.start_period.duration()
        {
            t.failures += 1;
            if t.failures >= check.retries {
                t.state = HealthState::Unhealthy;
            }
        }
        let after = t.state;
        let failures = t.failures;
        let changed = before != after || shown != (failures, Some((r.ok, r.output.clone())));
        let next = t.next_after(&check, now);
        t.due = next;
        if before != after {
            t.since = SystemTime::now();
            match after {
                HealthState::Healthy => {
                    tracing::info!(component = %key, health = "healthy", "health check passes")
                }
                HealthState::Unhealthy => tracing::warn!(
                    component = %key, health = "unhealthy", failures, output = %r.output,
                    on_failure = check.on_failure.as_str(),
                    "component {key} is unhealthy: {failures} checks failed in a row; last: {}",
                    r.output
                ),
                HealthState::Starting => {}
            }
            match after {
                HealthState::Healthy => {
                    self.book.healthy.insert(id.to_string());
                    self.book.restart.remove(id);
                }
                _ => {
                    self.book.healthy.remove(id);
                }
            }
            if after == HealthState::Unhealthy && check.on_failure == OnFailure::Restart {
                self.book
                    .restart
                    .insert(id.to_string(), RestartWhy::Unhealthy);
            }
            self.routes_changed();
            // Dependents may wait for it; an unhealthy one is restarted by the plan.
            self.want_progress("health");
        }
        if changed {
            self.write_health(key);
        }
        // In `--once` a check stops once it has decided (healthy, or unhealthy).
        let decided = matches!(after, HealthState::Healthy | HealthState::Unhealthy);
        if self.mode == Mode::Daemon || !decided {
            self.sched.schedule(Work::Probe(key.clone()), NORMAL, next);
        }
    }

    /// The health of `key` for its status row: its tracker's, or `None`.
    pub(super) fn health_status(&self, key: &ComponentKey) -> Option<HealthStatus> {
        self.health.get(key).map(Tracker::status)
    }

    /// Whether `key`'s L7 routes may be served: it has no check, or it is healthy.
    pub(super) fn serves(&self, key: &ComponentKey) -> bool {
        !self.checks.contains_key(key)
            || self
                .health
                .get(key)
                .is_some_and(|t| t.state == HealthState::Healthy)
    }

    /// The routes the proxy is to serve changed: a sync soon.
    fn routes_changed(&mut self) {
        self.sched
            .schedule(Work::Routes, super::work::SOON, Instant::now());
    }
}
