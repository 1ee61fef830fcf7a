//! The agent's kinds of work, how each is started as a task, and how outcomes come back
//! to the loop; readiness and the watchdog, which both follow from the work's progress.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinError;
use tokio::time::Instant;

use super::{Agent, Mode, LIST_RETRY, PING_TIMEOUT, SLOW_LIST};
use crate::certs::{Certs, EnsureReport};
use crate::config::Config;
use crate::container::{ComponentKey, Us};
use crate::control::Requeue;
use crate::plan::Action;
use crate::proxy::{ProxyError, ProxyRoute, SyncReport};
use crate::reconcile::StorageNames;
use crate::reconcile::{self, ComponentReport, PassReport, RemovalReport, Status};
use crate::registry::{Registry, RegistryError};
use crate::routes::{self, Moved};
use crate::runtime::{Actual, Runtime, RuntimeError};
use crate::spec::Service;

/// A key of the scheduler: one of each, and one per component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Work {
    /// Is podman answering?
    Ping,
    /// List the containers and plan a pass.
    List,
    /// Make the proxy serve exactly the routes.
    Routes,
    /// Make every certificate valid and loaded.
    Certs,
    /// Carry out the action the last plan has for this component.
    Component(ComponentKey),
    /// Run this component's health check once.
    Probe(ComponentKey),
    /// Pull this image, for the components waiting for it (one pull per image).
    Pull(String),
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Ping => f.write_str("ping"),
            Work::List => f.write_str("list"),
            Work::Routes => f.write_str("route sync"),
            Work::Certs => f.write_str("certificates"),
            Work::Component(k) => write!(f, "operation on {k}"),
            Work::Probe(k) => write!(f, "health check of {k}"),
            Work::Pull(image) => write!(f, "pull of {image}"),
        }
    }
}

/// Priorities: health, the registry and the list first; then what takes things away or
/// reports (stops, removals, conflicts) and the proxy; then what brings things up.
pub(super) const URGENT: u8 = 0;
pub(super) const SOON: u8 = 1;
pub(super) const NORMAL: u8 = 2;

impl Work {
    /// How long a task of this kind may run before the loop counts as stuck (each
    /// request it makes has a shorter timeout of its own).
    fn limit(&self) -> Option<Duration> {
        match self {
            Work::Ping => Some(PING_TIMEOUT * 5),
            Work::List => Some(Duration::from_secs(150)),
            Work::Routes => Some(Duration::from_secs(300)),
            Work::Component(_) => Some(Duration::from_secs(300)),
            // Cut off by its own timeout (240 s).
            Work::Pull(_) => Some(Duration::from_secs(300)),
            // Bounded by its own timeout (at most a day); the margin covers podman.
            Work::Probe(_) => None,
            // An order may wait on the CA for its own (configured) time.
            Work::Certs => None,
        }
    }
}

pub(super) enum Outcome {
    Ping(Result<(), RuntimeError>),
    List(Option<Registry>, Result<Listed, RuntimeError>),
    Component(Result<ComponentReport, RemovalReport>),
    Routes(Result<SyncReport, ProxyError>),
    Certs(Box<(Certs, EnsureReport)>),
    /// A probe of this container.
    Probe(String, crate::health::ProbeResult),
    Pull(Result<(), RuntimeError>),
}

/// What a registry poll found.
pub(super) struct Polled {
    pub(super) data_version: i64,
    pub(super) generation: i64,
    /// The desired state and whose containers are ours (adoptions are desired state
    /// too), when its generation moved.
    pub(super) services: Option<(Vec<Service>, Us)>,
}

/// What a pass's list found.
pub(super) struct Listed {
    /// When the list was asked for: what it shows is from then or later.
    pub asked: tokio::time::Instant,
    pub actual: Vec<Actual>,
    /// Routes moved off host ports another process took.
    pub moved: Vec<Moved>,
    /// The desired state after such a move.
    pub services: Option<Vec<Service>>,
    /// What the components' env files and secrets hold now.
    pub files: reconcile::Files,
    /// The `networks_due` count the networks were swept for, when they were.
    pub swept: Option<u64>,
}

/// A list's sweep of the networks of services no longer wanted
/// ([`reconcile::sweep_service_networks`]).
struct Sweep {
    due: u64,
    us: Arc<Us>,
    /// The agent's wanted services, as they are when each removal is about to be made
    /// (a service applied again meanwhile keeps its network).
    wanted: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// What `--once` did, for `commands/recover.rs` to print.
#[derive(Debug, Default)]
pub struct OnceReport {
    pub pass: PassReport,
    pub moved: Vec<Moved>,
    pub wanted_routes: usize,
    /// Whether a proxy serves the routes (`[proxy] kind` is not "none").
    pub proxy_serves: bool,
    pub routes: Option<Result<SyncReport, ProxyError>>,
    pub certs: Option<super::CertsOutcome>,
    /// The pulls made, in the order they ended.
    pub pulls: Vec<super::PullReport>,
    pub(super) list_error: Option<RuntimeError>,
}

impl<R: Runtime + 'static> Agent<R> {
    /// Work in flight against each kind's slots. Bring-ups and the other operations each
    /// have `concurrency` slots of their own (a stop or removal never waits behind a mass
    /// recovery's creates); probes and pulls theirs.
    fn slots(&self) -> Slots {
        let up = self.bringing_up.len();
        Slots {
            bring_ups: up,
            others: self.operating.len().saturating_sub(up),
            limit: self.config.reconcile.concurrency.0,
            probing: self.probing,
            probe_limit: self.config.health.concurrency.0,
            pulling: self.pulling,
            pull_limit: self.config.podman.pull_concurrency.0,
        }
    }

    /// Components with an operation waiting or under way (their routes never move).
    fn components_in_flight(&self) -> std::collections::HashSet<ComponentKey> {
        self.services
            .iter()
            .flat_map(|s| {
                s.components
                    .iter()
                    .map(|c| ComponentKey::new(s.name.clone(), c.name.clone()))
            })
            .filter(|k| {
                let w = Work::Component(k.clone());
                self.sched.is_running(&w) || self.sched.is_waiting(&w)
            })
            .collect()
    }

    /// Starts every piece of work that is due and may start.
    pub(super) fn start_due_work(&mut self) {
        let now = Instant::now();
        // While podman does not count as up, a ping is always waiting or under way:
        // nothing else can bring it back.
        if self.podman.up != Some(true)
            && !self.sched.is_waiting(&Work::Ping)
            && !self.sched.is_running(&Work::Ping)
        {
            self.sched.schedule(Work::Ping, URGENT, now);
        }
        loop {
            let slots = self.slots();
            let (up, pending) = (self.podman.up == Some(true), &self.pending);
            let recreating = &self.recreating;
            let Some(w) = self
                .sched
                .pop_due(now, |w| may_start(w, up, pending, &slots, recreating))
            else {
                return;
            };
            self.start(w, now);
        }
    }

    /// When the loop must wake for work that is not due yet.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let slots = self.slots();
        let up = self.podman.up == Some(true);
        self.sched
            .next_due(|w| may_start(w, up, &self.pending, &slots, &self.recreating))
    }

    fn start(&mut self, w: Work, now: Instant) {
        let handle = match &w {
            Work::Ping => {
                let rt = self.ctx.runtime.clone();
                let socket = self.config.podman.socket.0.clone();
                self.tasks.spawn(async move {
                    let r = crate::runtime::ping_within(&*rt, PING_TIMEOUT, &socket).await;
                    (Work::Ping, Outcome::Ping(r))
                })
            }
            Work::List => {
                let rt = self.ctx.runtime.clone();
                let moves = self
                    .services
                    .iter()
                    .flat_map(|s| &s.components)
                    .any(|c| !c.routes.is_empty());
                let reg = if moves { self.pass_reg.take() } else { None };
                let config = self.config.clone();
                let services = Arc::clone(&self.services);
                let busy = self.components_in_flight();
                let sweep = (self.networks_swept < self.networks_due).then(|| Sweep {
                    due: self.networks_due,
                    us: Arc::clone(&self.us),
                    wanted: Arc::clone(&self.wanted_now),
                });
                self.pass_started = Some((now, self.pass_trigger.take().unwrap_or("timer")));
                // A list podman does not answer soon makes the agent look at its health.
                self.sched.schedule(Work::Ping, URGENT, now + SLOW_LIST);
                self.tasks.spawn(async move {
                    let t = Instant::now();
                    let r = list(&*rt, moves, reg, config, services, busy, sweep).await;
                    tracing::debug!(
                        took_ms = t.elapsed().as_millis() as u64,
                        ok = r.1.is_ok(),
                        "listed containers"
                    );
                    (Work::List, Outcome::List(r.0, r.1))
                })
            }
            Work::Routes => {
                let proxy = self.ctx.proxy.clone();
                // An unhealthy (or not yet healthy) component's routes are withheld: the
                // proxy answers 503 for them.
                let wanted: Vec<_> = self
                    .wanted_routes
                    .iter()
                    .map(|(k, _, r)| ProxyRoute {
                        withheld: !self.serves(k),
                        ..r.clone()
                    })
                    .collect();
                self.tasks.spawn(async move {
                    use crate::proxy::Proxy;
                    let r = proxy.sync(&wanted).await;
                    (Work::Routes, Outcome::Routes(r))
                })
            }
            Work::Certs => {
                let Some(mut manager) = self.certs.take() else {
                    self.sched.finish(&w);
                    return;
                };
                let issuer = self.ctx.issuer.clone();
                let proxy = self.ctx.proxy.clone();
                let wanted = self.wanted_certs.clone();
                let ignore_backoff = self.mode == Mode::Once;
                self.tasks.spawn(async move {
                    let report = manager
                        .ensure(
                            &*issuer,
                            &*proxy,
                            &wanted,
                            std::time::SystemTime::now(),
                            ignore_backoff,
                        )
                        .await;
                    (Work::Certs, Outcome::Certs(Box::new((manager, report))))
                })
            }
            Work::Probe(key) => {
                let (Some(check), Some(t)) = (self.checks.get(key), self.health.get(key)) else {
                    self.sched.finish(&w);
                    return;
                };
                let rt = self.ctx.runtime.clone();
                let (probe, timeout, id, known) = (
                    check.probe.clone(),
                    check.timeout.duration(),
                    t.id.clone(),
                    t.address,
                );
                // Probes wait for a free slot of `[health] concurrency`: how long after
                // its due time this one starts says whether they keep up.
                let late = now.saturating_duration_since(t.due);
                crate::metrics::probe_started(late);
                tracing::debug!(
                    component = %key,
                    late_ms = late.as_millis() as u64,
                    probing = self.probing,
                    "probe starts"
                );
                let key = key.clone();
                self.probing += 1;
                self.tasks.spawn(async move {
                    let r = crate::health::probe::run_at(&*rt, &id, &probe, timeout, known).await;
                    (Work::Probe(key), Outcome::Probe(id, r))
                })
            }
            Work::Pull(image) => {
                let rt = self.ctx.runtime.clone();
                let to = self.progress_tx.clone();
                let image = image.clone();
                let waiting = self.pulls.get(&image).map_or(0, |p| p.waiters.len());
                tracing::info!(image = %image, components = waiting, "pulling the image");
                self.pulling += 1;
                self.tasks.spawn(async move {
                    let r = super::pulls::pull_reporting(&*rt, &image, to).await;
                    (Work::Pull(image), Outcome::Pull(r))
                })
            }
            Work::Component(key) => {
                let Some((action, names)) = self.pending.remove(key) else {
                    self.sched.finish(&w);
                    return;
                };
                let pull = if action.brings_up() {
                    self.take_pull_step(key)
                } else {
                    reconcile::PullStep::Deferred
                };
                if action.brings_up() {
                    self.bringing_up.insert(key.clone());
                }
                if matches!(action, Action::Recreate { .. }) {
                    self.recreating.insert(key.clone());
                }
                self.operating.insert(key.clone());
                let spec = self.specs.get(action.key()).cloned();
                let rt = self.ctx.runtime.clone();
                let us = self.us.clone();
                let key = key.clone();
                tracing::debug!(action = action.verb().as_str(), component = %key, "operation starts");
                let deaths = self.deaths.clone();
                self.tasks.spawn(async move {
                    let r =
                        reconcile::run_action_with(&*rt, action, spec.as_ref(), &us, &names, pull)
                            .await;
                    // Brought up: its main process is watched from now on.
                    if let (
                        Some(deaths),
                        Ok(ComponentReport {
                            status: Status::Running,
                            container_id: Some(id),
                            ..
                        }),
                    ) = (deaths, &r)
                    {
                        deaths.forget(id);
                        deaths.watch_running(&rt, id);
                    }
                    (Work::Component(key), Outcome::Component(r))
                })
            }
        };
        self.running.insert(handle.id(), (w, now, handle));
    }

    /// A task ended: its key is free again and its outcome goes to the loop.
    pub(super) fn joined(&mut self, done: Result<(tokio::task::Id, (Work, Outcome)), JoinError>) {
        let (id, outcome, cancelled) = match done {
            Ok((id, (w, outcome))) => (id, Some((w, outcome)), false),
            Err(e) => (e.id(), None, e.is_cancelled()),
        };
        let Some((w, ..)) = self.running.remove(&id) else {
            return;
        };
        self.sched.finish(&w);
        if let Work::Component(k) = &w {
            self.bringing_up.remove(k);
            self.operating.remove(k);
            self.recreating.remove(k);
        }
        if let Work::Probe(_) = &w {
            self.probing = self.probing.saturating_sub(1);
        }
        if let Work::Pull(image) = &w {
            self.pulling = self.pulling.saturating_sub(1);
            if outcome.is_none() {
                // Dropped at shutdown or when `--once` ran out of time: the components
                // waiting show it; nothing is tried again.
                if cancelled {
                    tracing::debug!(image = %image, "pull cancelled");
                    let image = image.clone();
                    self.drop_pull(&image);
                } else {
                    tracing::error!(work = %w, "a task of the agent ended without a result");
                    let image = image.clone();
                    self.on_pulled(
                        &image,
                        Err(RuntimeError::Api("the pull's task failed".into())),
                    );
                }
                return;
            }
        }
        match outcome {
            Some((_, outcome)) => self.on_outcome(w, outcome),
            None => {
                // Cancelled at shutdown, or a panic (a bug): what the task held is
                // made anew, and the work is tried again.
                tracing::error!(work = %w, "a task of the agent ended without a result");
                match &w {
                    Work::Certs => self.certs = Some(Certs::from_config(&self.config)),
                    Work::Component(k) => {
                        self.deferred.insert(k.clone());
                    }
                    _ => {}
                }
                self.sched.schedule(w, URGENT, Instant::now() + LIST_RETRY);
            }
        }
    }

    /// Each kind of work's reconcile: records the outcome and says when to run again.
    fn on_outcome(&mut self, w: Work, outcome: Outcome) {
        let requeue = match outcome {
            Outcome::Ping(r) => self.on_ping(r),
            Outcome::List(reg, r) => {
                if reg.is_some() {
                    self.pass_reg = reg;
                }
                // The list answered: the check its slowness asked for is not needed
                // (while podman counts as down, its pings go on: only they decide).
                if self.podman.up == Some(true) {
                    self.sched.cancel(&Work::Ping);
                }
                match r {
                    Ok(listed) => self.on_listed(listed),
                    Err(e) => {
                        self.pass_started = None;
                        self.on_list_failed(e)
                    }
                }
            }
            Outcome::Component(r) => match &w {
                Work::Component(key) => self.on_done(key.clone(), r),
                _ => Requeue::OnChange,
            },
            Outcome::Routes(r) => self.on_routes_synced(r),
            Outcome::Probe(id, r) => {
                if let Work::Probe(key) = &w {
                    self.on_probe(key, &id, r);
                }
                Requeue::OnChange
            }
            Outcome::Pull(r) => {
                if let Work::Pull(image) = &w {
                    if r.as_ref().is_err_and(RuntimeError::is_unavailable) {
                        self.sched.schedule(Work::Ping, URGENT, Instant::now());
                    }
                    self.on_pulled(image, r);
                }
                Requeue::OnChange
            }
            Outcome::Certs(done) => {
                let (mut certs, report) = *done;
                if std::mem::take(&mut self.certs_reconfigure) {
                    certs.configure(&self.config);
                }
                self.certs = Some(certs);
                self.on_certs(report)
            }
        };
        self.requeue(w, requeue);
    }

    /// Applies a reconcile's [`Requeue`]: `After` runs the same key again then (never in
    /// `--once`, which runs each piece of work until it has reported once). A component's
    /// retry is a pass: the plan decides what it needs by then.
    pub(super) fn requeue(&mut self, w: Work, requeue: Requeue) {
        let Requeue::After(delay) = requeue else {
            return;
        };
        if self.mode == Mode::Once {
            return;
        }
        let at = crate::control::after(Instant::now(), delay);
        match w {
            Work::Component(_) => self.sched.schedule(Work::List, URGENT, at),
            Work::Certs | Work::Routes => self.sched.schedule(w, SOON, at),
            Work::Probe(_) | Work::Pull(_) => self.sched.schedule(w, NORMAL, at),
            w => self.sched.schedule(w, URGENT, at),
        }
    }

    fn on_ping(&mut self, r: Result<(), RuntimeError>) -> Requeue {
        let now = Instant::now();
        match r {
            Ok(()) => {
                if self.podman.up != Some(true) {
                    if self.podman.up == Some(false) {
                        tracing::info!("podman answers again");
                    }
                    self.podman.up = Some(true);
                    self.podman.error = None;
                    self.synced = false;
                    self.want_pass("podman");
                    self.find_podman_db();
                }
                self.podman.retry.reset();
                Requeue::OnChange
            }
            Err(e) => {
                if self.podman.up != Some(false) {
                    tracing::warn!(error = %e, "podman does not answer; waiting for it");
                }
                self.podman.up = Some(false);
                self.podman.error = Some(e.to_string());
                Requeue::After(self.podman.retry.next_delay(now))
            }
        }
    }

    /// Asks podman (again: it may have come back on another root) where its database is,
    /// for the deaths' reads of it; off the loop, one request.
    fn find_podman_db(&self) {
        let Some(deaths) = self.deaths.clone() else {
            return;
        };
        let rt = self.ctx.runtime.clone();
        tokio::spawn(async move {
            let db = match rt.graph_root().await {
                Ok(root) => {
                    root.and_then(|r| crate::runtime::libpod_db::LibpodDb::under_graph_root(&r))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "podman info failed: its database is not read at deaths");
                    None
                }
            };
            deaths.set_db(db);
        });
    }

    /// What the registry watcher found (docs/design.md §5.1): only changes come here.
    pub(super) fn on_polled(&mut self, r: Result<Polled, RegistryError>) {
        match r {
            Ok(p) => {
                self.data_version = p.data_version;
                self.generation = p.generation;
                if let Some((s, us)) = p.services {
                    tracing::debug!(trigger = "registry", "registry changed");
                    self.us = std::sync::Arc::new(us);
                    self.set_services(s);
                }
            }
            // Deleted, replaced or emptied under the daemon: whatever is at the path now
            // is not what it was acting on. It stops (the loop ends on `fatal`) and exits
            // 69; systemd starts it again on what is there, which the registry's identity
            // makes safe.
            Err(e) if e.is_replaced() => {
                tracing::error!(error = %e, "the registry is not the one the agent opened; stopping");
                self.fatal = Some(crate::error::Failure::unavailable(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registry; keeping the last desired state")
            }
        }
    }

    fn on_list_failed(&mut self, e: RuntimeError) -> Requeue {
        if self.mode == Mode::Once {
            self.report.list_error = Some(e);
            return Requeue::OnChange;
        }
        tracing::warn!(error = %e, "cannot list containers; retrying");
        if e.is_unavailable() {
            self.sched.schedule(Work::Ping, URGENT, Instant::now());
        }
        Requeue::After(LIST_RETRY)
    }

    /// Readiness (docs/design.md §5.4): the containers are back — podman answers, a pass
    /// has listed them, nothing planned is still to do, the routes are synced, and every
    /// component that can come up is up; or `ready_timeout` ran out, and STATUS= says
    /// what is missing. Certificates are not waited for.
    pub(super) fn maybe_ready(&mut self, ready_by: Instant) {
        if self.ready || self.mode == Mode::Once {
            return;
        }
        let timed_out = Instant::now() >= ready_by;
        let busy = |w: &Work| matches!(w, Work::Component(_) | Work::Routes | Work::Pull(_));
        let settled = self.podman.up == Some(true)
            && self.synced
            && self.sched.count_waiting(busy) + self.sched.count_running(busy) == 0;
        // The missing list costs a string per component: only once it can decide.
        if !settled && !timed_out {
            return;
        }
        let missing = self.missing();
        let back = settled && missing.is_empty();
        if !back && !timed_out {
            return;
        }
        self.ready = true;
        let mut line = self.status_line();
        if !back {
            let what = if missing.is_empty() {
                "the first pass".to_string()
            } else {
                missing.join(", ")
            };
            line = format!(
                "{line}; ready after {}s, still missing: {what}",
                self.config.reconcile.ready_timeout.as_secs()
            );
            tracing::warn!(status = %line, "ready_timeout ran out; ready with components missing");
        } else {
            tracing::info!(status = %line, "first pass done; ready");
        }
        self.notifier.ready(&line);
        self.last_status_line = line;
    }

    /// The wanted-running components that are not up yet and could be: `service/component
    /// (state: why)`.
    fn missing(&self) -> Vec<String> {
        use crate::reconcile::Status;
        self.desired
            .iter()
            .filter(|d| d.state == crate::spec::DesiredState::Running)
            .filter_map(|d| match self.status.get(&d.key) {
                // Up only once its check has passed.
                Some((Status::Running, ..)) if !self.serves(&d.key) => Some(format!(
                    "{} (running, health check {})",
                    d.key,
                    self.health
                        .get(&d.key)
                        .map_or("not started", |t| t.state.as_str())
                )),
                Some((
                    Status::Running
                    | Status::Completed
                    | Status::ImageMissing
                    | Status::VolumeMissing
                    | Status::Conflict
                    | Status::NetworkConflict
                    | Status::ConfigMissing,
                    ..,
                )) => None,
                Some((s, detail, _)) => Some(match detail {
                    Some(why) => format!("{} ({}: {why})", d.key, s.as_str()),
                    None => format!("{} ({})", d.key, s.as_str()),
                }),
                None => Some(format!("{} (not seen yet)", d.key)),
            })
            .collect()
    }

    /// WATCHDOG=1 only while the loop makes progress: it turns (this runs on it), and no
    /// task has outlived its limit.
    pub(super) fn watchdog(&mut self) {
        let now = Instant::now();
        let stuck = self.running.values().find_map(|(w, started, _)| {
            let limit = w.limit()?;
            (now.saturating_duration_since(*started) > limit)
                .then(|| format!("{w} running for over {}s", limit.as_secs()))
        });
        match stuck {
            None => {
                if self.stuck.take().is_some() {
                    tracing::info!("the agent makes progress again; watchdog resumed");
                }
                self.notifier.watchdog();
            }
            Some(why) => {
                if self.stuck.is_none() {
                    tracing::error!(reason = %why, "the agent is stuck; withholding the watchdog");
                }
                self.stuck = Some(why);
            }
        }
    }
}

/// Work in flight, and each kind's slots.
struct Slots {
    bring_ups: usize,
    others: usize,
    /// `[reconcile] concurrency`, for bring-ups and for the other operations each.
    limit: usize,
    probing: usize,
    probe_limit: usize,
    pulling: usize,
    pull_limit: usize,
}

/// Whether `w` may start: the list, operations, probes and pulls only while podman is up;
/// an operation only while its lane (bring-ups, or stops, removals and reports) has a
/// free slot, a probe or a pull while theirs has; a recreate only while no other
/// component of its service is being recreated (a changed spec — an upgrade that changes
/// every container's — rolls through a service one container at a time).
fn may_start(
    w: &Work,
    up: bool,
    pending: &HashMap<ComponentKey, (Action, Arc<StorageNames>)>,
    slots: &Slots,
    recreating: &std::collections::HashSet<ComponentKey>,
) -> bool {
    match w {
        Work::List => up,
        Work::Probe(_) => up && slots.probing < slots.probe_limit,
        Work::Pull(_) => up && slots.pulling < slots.pull_limit,
        Work::Component(k) => {
            let action = pending.get(k).map(|(a, _)| a);
            let brings_up = action.is_some_and(Action::brings_up);
            let rolling = matches!(action, Some(Action::Recreate { .. }))
                && recreating.iter().any(|r| r.service == k.service && r != k);
            let busy = if brings_up {
                slots.bring_ups
            } else {
                slots.others
            };
            up && !rolling && busy < slots.limit
        }
        _ => true,
    }
}

/// The registry poll's cheap part: is the file still the one opened, and did another
/// connection commit? (`PRAGMA data_version` reads SQLite's WAL index: no lock to wait
/// for.) Returns the data version.
pub(super) fn probe(reg: &mut Registry) -> Result<i64, RegistryError> {
    reg.check_file()?;
    reg.data_version()
}

/// The registry poll's full part, after [`probe`] saw a commit: the services only when
/// the desired state's generation moved (status writes, ours included, change the data
/// version but not the generation), route ports still missing allocated.
pub(super) fn poll(
    reg: &mut Registry,
    config: &Config,
    seen: (i64, i64),
) -> Result<Polled, RegistryError> {
    let data_version = probe(reg)?;
    let unchanged = Polled {
        data_version,
        generation: seen.1,
        services: None,
    };
    if data_version == seen.0 {
        return Ok(unchanged);
    }
    let generation = reg.generation()?;
    if generation == seen.1 {
        return Ok(unchanged);
    }
    let mut services = reg.services()?;
    if routes::unallocated(&services) && routes::allocate(reg, config)? {
        services = reg.services()?;
    }
    let us = reg.identity()?.us(&config.agent.node);
    Ok(Polled {
        data_version,
        generation,
        services: Some((services, us)),
    })
}

/// A pass's list, then (when routes exist) the move of routes whose host port another
/// process took while their container was down, off the loop.
async fn list<R: Runtime>(
    rt: &R,
    moves: bool,
    reg: Option<Registry>,
    config: Config,
    services: Arc<Vec<Service>>,
    busy: std::collections::HashSet<ComponentKey>,
    sweep: Option<Sweep>,
) -> (Option<Registry>, Result<Listed, RuntimeError>) {
    let asked = tokio::time::Instant::now();
    // The sweep beside the list, not before the pass's plan (at start-up, the recovery).
    let sweeping = async {
        let sw = sweep?;
        let wanted = |s: &str| {
            sw.wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(s)
        };
        match reconcile::sweep_service_networks(rt, &sw.us, wanted).await {
            Ok(_) => Some(sw.due),
            Err(e) => {
                tracing::warn!(error = %e, "the networks of removed services were not all swept; again at the next pass");
                None
            }
        }
    };
    let (actual, swept) = tokio::join!(rt.list(), sweeping);
    let actual = match actual {
        Ok(a) => a,
        Err(e) => return (reg, Err(e)),
    };
    // Env files and secrets are read at every pass, off the loop (each one bounded).
    let files = if services
        .iter()
        .flat_map(|s| &s.components)
        .any(|c| c.settings.reads_files())
    {
        let s = services.clone();
        tokio::task::spawn_blocking(move || reconcile::read_files(&s))
            .await
            .unwrap_or_default()
    } else {
        reconcile::Files::default()
    };
    let mut listed = Listed {
        asked,
        actual,
        moved: Vec::new(),
        services: None,
        files,
        swept,
    };
    if !moves {
        return (reg, Ok(listed));
    }
    let holding = routes::Holding {
        listed: listed.actual.iter().map(|a| a.name.clone()).collect(),
        busy,
        created: listed
            .actual
            .iter()
            .filter(|a| a.state == crate::runtime::State::Created)
            .map(|a| a.name.clone())
            .collect(),
    };
    let known: std::collections::HashSet<String> =
        listed.actual.iter().map(|a| a.id.clone()).collect();
    let moved = tokio::task::spawn_blocking(move || {
        let mut reg = match reg {
            Some(r) => r,
            None => Registry::open_existing(&config.database.path)?,
        };
        let moved = routes::reallocate_taken(
            &mut reg,
            &config,
            &services,
            &holding,
            &mut crate::ports::taken_by_foreign_process,
            &mut |p| crate::ports::held_by_orphans(p, &known),
            &mut crate::ports::host_port_free,
        );
        let services = match &moved {
            Ok(m) if !m.is_empty() => Some(reg.services()),
            _ => None,
        };
        Ok::<_, RegistryError>((reg, moved, services))
    })
    .await;
    let reg = match moved {
        Ok(Ok((reg, moved, services))) => {
            match moved {
                Ok(m) => listed.moved = m,
                Err(e) => tracing::warn!(error = %e, "cannot move routes off taken host ports"),
            }
            match services {
                Some(Ok(s)) => listed.services = Some(s),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the registry after moving routes")
                }
                None => {}
            }
            Some(reg)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot open the registry to move routes");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the route move task failed");
            None
        }
    };
    (reg, Ok(listed))
}
