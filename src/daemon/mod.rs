//! The daemon (DESIGN §5): a control loop that keeps reconciling. Work is triggered by
//! podman events, registry changes made by other processes, due backoff timers and the
//! periodic resync; it is level-triggered (every pass plans from the whole picture) and
//! never runs two operations on one component at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::certs::{self, AnyIssuer, Certs, EnsureReport, Wanted};
use crate::config::Config;
use crate::config::ProxyKind;
use crate::container::{owner, ComponentKey, ContainerSpec, Owner};
use crate::error::Failure;
use crate::plan::{self, Action, Book, Desired, InSync};
use crate::proxy::{AnyProxy, Proxy, ProxyError, ProxyRoute, SyncReport};
use crate::reconcile::{self, ComponentReport, RemovalReport, Status};
use crate::registry::RouteProxyState;
use crate::registry::{now_ms, CertStatus, ComponentStatus, Registry};
use crate::routes;
use crate::runtime::Runtime;
use crate::spec::Service;

pub mod backoff;
pub mod events;
pub mod notify;
mod writer;

use backoff::{Backoffs, Policy};
use events::Trigger;
use notify::Notifier;

/// How long podman's own restart policy is given to bring a dead container back before
/// the agent acts (podman restarts in ≈ 70 ms here).
pub const RESTART_GRACE: Duration = Duration::from_secs(1);
/// How often the registry is asked whether another process changed it.
pub const REGISTRY_POLL: Duration = Duration::from_millis(250);
/// In-flight operations get this long to finish after SIGTERM; the rest are cancelled.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// A pass that could not list containers is retried after this long.
pub const LIST_RETRY: Duration = Duration::from_secs(1);
/// Retry delays of route registration while the proxy is down: doubling, capped, so the
/// routes follow within seconds of the proxy coming back.
pub const PROXY_RETRY_MIN: Duration = Duration::from_millis(500);
pub const PROXY_RETRY_MAX: Duration = Duration::from_secs(5);
/// A certificate retry wakes the loop this long after it is due.
pub const CERT_RETRY_SLACK: Duration = Duration::from_millis(50);

/// What the process's signal handling asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Shutdown,
    Reload,
}

/// Where a reload reads the config from.
pub struct Options {
    pub config_path: PathBuf,
}

/// An operation in flight: on a component (removals count for the component the
/// container is labelled for), or the proxy or certificate task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Component(ComponentKey),
    /// The one route sync with the proxy.
    Proxy,
    /// The one certificate check (and orders) after a route sync.
    Certs,
}

enum Outcome {
    Op(Result<ComponentReport, RemovalReport>),
    Proxy(Result<SyncReport, ProxyError>),
    /// The certificate manager comes back with its report.
    Certs(Box<(Certs, EnsureReport)>),
}

impl Slot {
    /// A removal waits for an operation already running on the same component (a stop,
    /// say): podman mishandles a forced removal racing a stop, and can lose track of a
    /// container whose process keeps running.
    fn of(a: &Action) -> Slot {
        Slot::Component(a.key().clone())
    }
}

type TaskResult = (Slot, Outcome);

/// The loop's state. Generic over the runtime so tests can drive it with the fake.
pub struct Daemon<R: Runtime + 'static> {
    rt: Arc<R>,
    config: Config,
    options: Options,
    reader: Registry,
    writer: writer::StatusWriter,
    notifier: Notifier,
    data_version: i64,
    /// The desired-state generation the cached services belong to.
    generation: i64,
    services: Vec<Service>,
    desired: Vec<Desired>,
    specs: HashMap<ComponentKey, ContainerSpec>,
    book: Book,
    backoffs: Backoffs,
    inflight: HashSet<Slot>,
    /// Components a pass had work for while an operation on them was under way.
    deferred: HashSet<Slot>,
    /// The container each component's last bring-up started.
    brought_up: HashMap<ComponentKey, String>,
    tasks: JoinSet<TaskResult>,
    permits: Arc<Semaphore>,
    status: BTreeMap<ComponentKey, (Status, Option<String>, Option<String>)>,
    podman_up: bool,
    podman_error: Option<String>,
    proxy: Arc<AnyProxy>,
    wanted_routes: Vec<(ComponentKey, String, ProxyRoute)>,
    route_states: Vec<(ComponentKey, String, RouteProxyState)>,
    proxy_error: Option<String>,
    proxy_retry: Duration,
    issuer: Arc<AnyIssuer>,
    /// `None` while the certificate task has it (or when certificates are off).
    certs: Option<Certs>,
    wanted_certs: Vec<Wanted>,
    /// What the registry holds for the certificates (compared without `updated_ms`).
    cert_states: Vec<CertStatus>,
    cert_load_error: Option<String>,
    /// A check was asked for while one was running: run another when it is done.
    certs_again: bool,
    /// A reload happened while the manager was out in its task.
    certs_reconfigure: bool,
    dirty: bool,
    wake: Option<Instant>,
    passes: u64,
    ready: bool,
    last_status_line: String,
}

impl<R: Runtime + 'static> Daemon<R> {
    pub fn new(rt: Arc<R>, config: Config, options: Options) -> Result<Self, Failure> {
        let mut reader = Registry::open(&config.database.path)?;
        certs::check_modes(&config).map_err(|e| Failure::unavailable(anyhow::anyhow!(e)))?;
        let writer = writer::StatusWriter::start(Registry::open(&config.database.path)?);
        let data_version = reader.data_version()?;
        let generation = reader.generation()?;
        let mut services = reader.services()?;
        if routes::unallocated(&services) && routes::allocate(&mut reader, &config)? {
            services = reader.services()?;
        }
        let mut d = Daemon {
            proxy: Arc::new(AnyProxy::from_config(&config)),
            wanted_routes: Vec::new(),
            route_states: Vec::new(),
            proxy_error: None,
            proxy_retry: PROXY_RETRY_MIN,
            issuer: Arc::new(AnyIssuer::from_config(&config)),
            certs: Some(Certs::from_config(&config)),
            wanted_certs: Vec::new(),
            cert_states: Vec::new(),
            cert_load_error: None,
            certs_again: false,
            certs_reconfigure: false,
            rt,
            permits: Arc::new(Semaphore::new(config.reconcile.concurrency.0)),
            backoffs: Backoffs::new(Policy::from_config(&config.reconcile)),
            book: Book {
                restart_grace: RESTART_GRACE,
                ..Default::default()
            },
            config,
            options,
            reader,
            writer,
            notifier: Notifier::from_env(),
            data_version,
            generation,
            services: Vec::new(),
            desired: Vec::new(),
            specs: HashMap::new(),
            inflight: HashSet::new(),
            deferred: HashSet::new(),
            brought_up: HashMap::new(),
            tasks: JoinSet::new(),
            status: BTreeMap::new(),
            podman_up: false,
            podman_error: None,
            dirty: true,
            wake: None,
            passes: 0,
            ready: false,
            last_status_line: String::new(),
        };
        d.set_services(&services);
        Ok(d)
    }

    /// Number of passes planned so far (tests and benchmarks read it).
    pub fn passes(&self) -> u64 {
        self.passes
    }

    fn set_services(&mut self, services: &[Service]) {
        self.services = services.to_vec();
        self.wanted_routes = routes::desired(services);
        self.wanted_certs = certs::wanted(services);
        let (desired, specs): (Vec<Desired>, Vec<ContainerSpec>) =
            reconcile::desired(services, &self.config.agent.node)
                .into_iter()
                .unzip();
        self.specs = desired.iter().map(|d| d.key.clone()).zip(specs).collect();
        self.desired = desired;
        let wanted: HashSet<ComponentKey> = self.desired.iter().map(|d| d.key.clone()).collect();
        self.backoffs.retain(|k| wanted.contains(k));
        self.book.retry_at.retain(|k, _| wanted.contains(k));
        self.status.retain(|k, _| wanted.contains(k));
    }

    /// Runs until `control` says stop (or closes). `triggers` carries podman's events and
    /// connection state.
    pub async fn run(
        mut self,
        mut triggers: mpsc::Receiver<Trigger>,
        mut control: mpsc::Receiver<Control>,
    ) -> Result<(), Failure> {
        self.notifier.status("waiting for podman");
        let mut resync = tokio::time::interval(self.config.reconcile.interval);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        resync.reset();
        let mut poll = tokio::time::interval(REGISTRY_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let watchdog_every = notify::watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            if self.dirty && self.podman_up {
                self.dirty = false;
                self.pass().await;
            }
            // Ready once containers and routes are done; a certificate order may wait
            // on the CA for minutes and must not hold back units ordered after us.
            if !self.ready
                && self.passes > 0
                && self.tasks.len() <= usize::from(self.inflight.contains(&Slot::Certs))
            {
                self.ready = true;
                let line = self.status_line();
                tracing::info!(status = %line, "first pass done; ready");
                self.notifier.ready(&line);
                self.last_status_line = line;
            }
            self.update_status_line();
            let wake = self.wake;
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    Some(Control::Reload) => self.reload(&mut resync),
                    Some(Control::Shutdown) | None => break,
                },
                Some(t) = triggers.recv() => self.on_trigger(t),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok((slot, outcome)) => self.on_outcome(slot, outcome),
                    Err(e) => tracing::error!(error = %e, "reconcile task failed"),
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    self.wake = None;
                    self.dirty = true;
                    tracing::debug!(trigger = "timer", "backoff timer due");
                }
                _ = resync.tick() => {
                    self.dirty = true;
                    tracing::debug!(trigger = "resync", "periodic resync");
                }
                _ = poll.tick() => self.poll_registry(),
                _ = watchdog.tick(), if watchdog_every.is_some() => self.notifier.watchdog(),
            }
        }
        self.shutdown().await;
        Ok(())
    }

    fn on_trigger(&mut self, t: Trigger) {
        match t {
            Trigger::Connected => {
                self.podman_up = true;
                self.podman_error = None;
                self.dirty = true;
                tracing::debug!(trigger = "connected", "event stream open; full pass");
            }
            Trigger::Lost(e) => {
                self.podman_up = false;
                self.podman_error = Some(e);
            }
            Trigger::Event(ev) => {
                let ours = match owner(&ev.labels, &self.config.agent.node) {
                    Owner::Ours { .. } => true,
                    // A foreign container leaving may free one of our names.
                    _ => self.desired.iter().any(|d| d.container_name == ev.name),
                };
                if !ours {
                    return;
                }
                if ev.action == "die" {
                    self.book.died_at.insert(ev.id.clone(), Instant::now());
                }
                // Someone removed the container the agent last brought up: that was not
                // a failed attempt, so its replacement need not wait out the backoff.
                if ev.action == "remove" {
                    let key = self
                        .brought_up
                        .iter()
                        .find(|(_, id)| **id == ev.id)
                        .map(|(k, _)| k.clone());
                    if let Some(key) = key {
                        self.brought_up.remove(&key);
                        self.book.retry_at.remove(&key);
                    }
                }
                tracing::debug!(
                    trigger = "event",
                    action = %ev.action,
                    container = %ev.name,
                    "podman event"
                );
                self.dirty = true;
            }
        }
    }

    fn poll_registry(&mut self) {
        match self.reader.data_version() {
            Ok(v) if v == self.data_version => {}
            Ok(v) => {
                self.data_version = v;
                // Status writes (ours included) change data_version too: reload only
                // when the desired state moved.
                match self.reader.generation() {
                    Ok(g) if g == self.generation => return,
                    Ok(g) => self.generation = g,
                    Err(e) => tracing::warn!(error = %e, "cannot read the registry generation"),
                }
                let services = match self.reader.services() {
                    Ok(s) if routes::unallocated(&s) => {
                        match routes::allocate(&mut self.reader, &self.config) {
                            Ok(true) => self.reader.services(),
                            Ok(false) => Ok(s),
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                };
                match services {
                    Ok(s) => {
                        tracing::debug!(trigger = "registry", "registry changed");
                        // What is under way was planned from the old desired state:
                        // look again when each operation is done.
                        let busy: Vec<Slot> = self.inflight.iter().cloned().collect();
                        self.deferred.extend(busy);
                        self.set_services(&s);
                        self.dirty = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the registry; keeping the last desired state")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot poll the registry"),
        }
    }

    /// One level-triggered pass: list, plan, start what is not already in flight.
    async fn pass(&mut self) {
        let actual = match self.rt.list().await {
            Ok(a) => a,
            Err(e) => {
                if e.is_unavailable() {
                    self.podman_up = false;
                }
                tracing::warn!(error = %e, "cannot list containers; retrying");
                self.podman_error = Some(e.to_string());
                self.schedule(Instant::now() + LIST_RETRY);
                return;
            }
        };
        self.passes += 1;
        self.move_taken_ports(&actual);
        let now = Instant::now();
        let horizon = RESTART_GRACE * 10;
        self.book
            .died_at
            .retain(|_, t| now.saturating_duration_since(*t) < horizon);
        let p = plan::plan(
            &self.desired,
            &actual,
            &self.config.agent.node,
            &self.book,
            now,
        );
        for (key, sync, id) in p.in_sync {
            if sync == InSync::Running {
                self.backoffs.observed_running(&key, now);
                if self.backoffs.attempts(&key) == 0 {
                    self.book.retry_at.remove(&key);
                }
            }
            if self.inflight.contains(&Slot::Component(key.clone())) {
                continue;
            }
            let status = match sync {
                InSync::Running => Status::Running,
                InSync::Stopped => Status::Stopped,
                InSync::Transient => Status::Transient,
            };
            self.note(&key, status, None, (!id.is_empty()).then_some(id), false);
        }
        let names = Arc::new(reconcile::StorageNames::default());
        for a in p.actions {
            let slot = Slot::of(&a);
            if self.inflight.contains(&slot) {
                // Planned again once the operation under way is done.
                self.deferred.insert(slot);
                continue;
            }
            if let Action::Wait { key, until, .. } = &a {
                self.schedule(*until);
                let (key, until) = (key.clone(), *until);
                self.note_waiting(&key, until);
                continue;
            }
            let spec = self.specs.get(a.key()).cloned();
            if let (Action::Create { .. }, Some(spec)) = (&a, &spec) {
                names.add(&spec.name);
            }
            let names = names.clone();
            let rt = self.rt.clone();
            let permits = self.permits.clone();
            let node = self.config.agent.node.clone();
            self.inflight.insert(slot.clone());
            self.tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let r = reconcile::run_action(&*rt, a, spec.as_ref(), &node, &names).await;
                (slot, Outcome::Op(r))
            });
        }
        self.sync_routes();
    }

    /// Routes are desired state too: every pass checks them (one read of the proxy when
    /// nothing changed), in a task of their own so a proxy that is down never holds back
    /// containers.
    fn sync_routes(&mut self) {
        if self.config.proxy.kind == ProxyKind::None {
            let none = Ok(SyncReport::default());
            let states = routes::states(&self.config, &self.wanted_routes, &none);
            self.store_route_states(states);
            return;
        }
        if self.inflight.contains(&Slot::Proxy) {
            return;
        }
        self.inflight.insert(Slot::Proxy);
        let proxy = self.proxy.clone();
        let wanted: Vec<ProxyRoute> = self
            .wanted_routes
            .iter()
            .map(|(_, _, r)| r.clone())
            .collect();
        self.tasks.spawn(async move {
            let r = proxy.sync(&wanted).await;
            (Slot::Proxy, Outcome::Proxy(r))
        });
    }

    fn on_outcome(&mut self, slot: Slot, outcome: Outcome) {
        match outcome {
            Outcome::Op(r) => self.on_done(slot, r),
            Outcome::Proxy(r) => {
                self.inflight.remove(&slot);
                self.on_routes_synced(r);
            }
            Outcome::Certs(done) => {
                self.inflight.remove(&slot);
                let (mut certs, report) = *done;
                if std::mem::take(&mut self.certs_reconfigure) {
                    certs.configure(&self.config);
                }
                self.certs = Some(certs);
                self.on_certs(report);
            }
        }
    }

    /// Certificates are checked after every route sync (the files' metadata only, when
    /// nothing is due), in a task of their own: an order that waits on the CA never
    /// holds back containers or routes. Skipped while the proxy is down: HTTP-01 and
    /// loading both need it, and the route retries bring the check back.
    fn ensure_certs(&mut self, proxy: Option<&ProxyError>) {
        if self.issuer.is_none() || proxy.is_some_and(ProxyError::is_unavailable) {
            return;
        }
        let Some(mut manager) = self.certs.take() else {
            self.certs_again = true;
            return;
        };
        self.inflight.insert(Slot::Certs);
        let issuer = self.issuer.clone();
        let proxy = self.proxy.clone();
        let wanted = self.wanted_certs.clone();
        self.tasks.spawn(async move {
            let report = manager
                .ensure(&*issuer, &*proxy, &wanted, SystemTime::now(), false)
                .await;
            (Slot::Certs, Outcome::Certs(Box::new((manager, report))))
        });
    }

    fn on_certs(&mut self, report: EnsureReport) {
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
                self.schedule(Instant::now() + self.proxy_retry);
            }
        }
        if let Some(at) = report.next_retry() {
            // A little after the retry is due, so the check that wakes finds it due.
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            self.schedule(Instant::now() + wait + CERT_RETRY_SLACK);
        }
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
        if !same(&states, &self.cert_states) {
            match self.reader.set_cert_states(&states) {
                Ok(()) => self.cert_states = states,
                Err(e) => tracing::warn!(error = %e, "cannot record certificate state"),
            }
        }
        if std::mem::take(&mut self.certs_again) {
            self.ensure_certs(None);
        }
    }

    fn on_routes_synced(&mut self, result: Result<SyncReport, ProxyError>) {
        let line = routes::describe(&result, self.wanted_routes.len());
        match &result {
            Ok(report) => {
                if self.proxy_error.take().is_some() {
                    tracing::info!(routes = %line, "proxy reachable again; routes registered");
                } else if !report.is_noop() {
                    tracing::info!(
                        added = ?report.added, updated = ?report.updated, deleted = ?report.deleted,
                        "routes registered with the proxy"
                    );
                }
                self.proxy_retry = PROXY_RETRY_MIN;
            }
            Err(e) => {
                if self.proxy_error.is_none() {
                    tracing::warn!(error = %e, "cannot register routes with the proxy; containers are unaffected, retrying");
                }
                self.proxy_error = Some(e.to_string());
                self.schedule(Instant::now() + self.proxy_retry);
                self.proxy_retry = (self.proxy_retry * 2).min(PROXY_RETRY_MAX);
            }
        }
        let states = routes::states(&self.config, &self.wanted_routes, &result);
        self.store_route_states(states);
        self.ensure_certs(result.as_ref().err());
    }

    fn store_route_states(&mut self, states: Vec<(ComponentKey, String, RouteProxyState)>) {
        if states == self.route_states {
            return;
        }
        match self.reader.set_route_proxy_states(&states) {
            Ok(()) => self.route_states = states,
            Err(e) => tracing::warn!(error = %e, "cannot record route state"),
        }
    }

    /// A component about to be brought up whose route's host port another process took
    /// meanwhile gets a new port first (its container could not publish the old one).
    fn move_taken_ports(&mut self, actual: &[crate::runtime::Actual]) {
        if !self
            .services
            .iter()
            .flat_map(|s| &s.components)
            .any(|c| !c.routes.is_empty())
        {
            return;
        }
        let up: HashSet<String> = actual
            .iter()
            .filter(|a| a.state.is_up())
            .map(|a| a.name.clone())
            .collect();
        let services = self.services.clone();
        match routes::reallocate_taken(
            &mut self.reader,
            &self.config,
            &services,
            &up,
            &mut crate::ports::host_port_free,
        ) {
            Ok(moved) if moved.is_empty() => {}
            Ok(_) => match self.reader.services() {
                Ok(s) => self.set_services(&s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the registry after moving routes")
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot move routes off taken host ports"),
        }
    }

    fn schedule(&mut self, at: Instant) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn on_done(&mut self, slot: Slot, result: Result<ComponentReport, RemovalReport>) {
        self.inflight.remove(&slot);
        if self.deferred.remove(&slot) {
            self.dirty = true;
        }
        match result {
            Err(r) => match &r.error {
                None => tracing::info!(
                    action = "remove", service = %r.owner.service, component = %r.owner.component,
                    container = %r.name, "removed container no longer in the registry"
                ),
                Some(e) => {
                    tracing::warn!(
                        action = "remove", service = %r.owner.service, component = %r.owner.component,
                        container = %r.name, error = %e, "could not remove container"
                    );
                    self.schedule(Instant::now() + LIST_RETRY);
                }
            },
            Ok(r) => {
                let now = Instant::now();
                let brought_up = matches!(r.verb, Some("create" | "recreate" | "start"));
                // Image checks and conflicts touch no container: retried at every pass
                // and event, not backed off.
                if brought_up && !matches!(r.status, Status::ImageMissing | Status::Conflict) {
                    let next = self.backoffs.attempted(&r.key, now);
                    self.book.retry_at.insert(r.key.clone(), next);
                    match (&r.container_id, r.status) {
                        (Some(id), Status::Running) => {
                            self.brought_up.insert(r.key.clone(), id.clone());
                        }
                        _ => {
                            self.brought_up.remove(&r.key);
                        }
                    }
                    if r.status == Status::Failed {
                        self.schedule(next);
                    }
                }
                if r.status == Status::Failed
                    && r.detail
                        .as_deref()
                        .is_some_and(|d| d.contains("unreachable"))
                {
                    self.podman_up = false;
                }
                match (r.status.is_failure(), r.verb) {
                    (true, _) => tracing::warn!(
                        action = r.verb.unwrap_or("none"), service = %r.key.service,
                        component = %r.key.component, container = %r.container,
                        error = r.detail.as_deref().unwrap_or(""), state = r.status.as_str(),
                        "component not reconciled"
                    ),
                    (false, Some(verb)) => tracing::info!(
                        action = verb, service = %r.key.service, component = %r.key.component,
                        container = %r.container, state = r.status.as_str(), "reconciled"
                    ),
                    _ => {}
                }
                let key = r.key.clone();
                self.note(&key, r.status, r.detail, r.container_id, r.recovered);
            }
        }
    }

    /// Remembers a component's status and queues a registry write when it changed.
    fn note(
        &mut self,
        key: &ComponentKey,
        status: Status,
        detail: Option<String>,
        id: Option<String>,
        recovered: bool,
    ) {
        let entry = (status, detail.clone(), id.clone());
        if !recovered && self.status.get(key) == Some(&entry) {
            return;
        }
        self.status.insert(key.clone(), entry);
        let next_retry_ms = self.book.retry_at.get(key).and_then(|t| {
            let now = Instant::now();
            (*t > now).then(|| now_ms() + (*t - now).as_millis() as u64)
        });
        self.writer.record(
            key.clone(),
            ComponentStatus {
                state: status.as_str().to_string(),
                container_id: id,
                last_error: detail.filter(|_| status.is_failure()),
                restarts: 0,
                next_retry_ms: next_retry_ms.filter(|_| status != Status::Running),
                updated_ms: now_ms(),
            },
            recovered,
        );
    }

    fn note_waiting(&mut self, key: &ComponentKey, until: Instant) {
        let prev = self.status.get(key).cloned();
        let detail = prev.as_ref().and_then(|p| p.1.clone());
        let entry = (Status::Waiting, detail.clone(), prev.and_then(|p| p.2));
        if self.status.get(key) == Some(&entry) {
            return;
        }
        self.status.insert(key.clone(), entry.clone());
        let now = Instant::now();
        self.writer.record(
            key.clone(),
            ComponentStatus {
                state: Status::Waiting.as_str().to_string(),
                container_id: entry.2,
                last_error: detail,
                restarts: 0,
                next_retry_ms: Some(
                    now_ms() + until.saturating_duration_since(now).as_millis() as u64,
                ),
                updated_ms: now_ms(),
            },
            false,
        );
    }

    /// `12 running, 1 backing off, 0 failed` (or why nothing can be done).
    fn status_line(&self) -> String {
        if !self.podman_up {
            return match &self.podman_error {
                Some(e) => format!("waiting for podman: {e}"),
                None => "waiting for podman".to_string(),
            };
        }
        let count = |f: fn(Status) -> bool| self.status.values().filter(|(s, ..)| f(*s)).count();
        format!(
            "{} running, {} backing off, {} failed",
            count(|s| s == Status::Running),
            count(|s| s == Status::Waiting),
            count(Status::is_failure)
        )
    }

    fn update_status_line(&mut self) {
        let line = self.status_line();
        if line != self.last_status_line {
            self.notifier.status(&line);
            self.last_status_line = line;
        }
    }

    /// SIGHUP: reload the config; a bad one is logged and the old one kept.
    fn reload(&mut self, resync: &mut tokio::time::Interval) {
        self.notifier.reloading();
        match Config::load(&self.options.config_path) {
            Ok(new) => {
                for (what, changed) in [
                    ("[agent].node", new.agent.node != self.config.agent.node),
                    (
                        "[database].path",
                        new.database.path != self.config.database.path,
                    ),
                    (
                        "[podman].socket",
                        new.podman.socket != self.config.podman.socket,
                    ),
                ] {
                    if changed {
                        tracing::warn!(
                            key = what,
                            "changed in the config; takes effect at the next restart"
                        );
                    }
                }
                let mut new = new;
                new.agent.node = self.config.agent.node.clone();
                new.database.path = self.config.database.path.clone();
                new.podman.socket = self.config.podman.socket.clone();
                if new.reconcile.concurrency != self.config.reconcile.concurrency {
                    self.permits = Arc::new(Semaphore::new(new.reconcile.concurrency.0));
                }
                if new.reconcile.interval != self.config.reconcile.interval {
                    *resync = tokio::time::interval(new.reconcile.interval);
                    resync.reset();
                }
                self.backoffs
                    .set_policy(Policy::from_config(&new.reconcile));
                self.proxy = Arc::new(AnyProxy::from_config(&new));
                self.issuer = Arc::new(AnyIssuer::from_config(&new));
                match self.certs.as_mut() {
                    Some(c) => c.configure(&new),
                    // Out in its task: configured when it comes back.
                    None => self.certs_reconfigure = true,
                }
                self.config = new;
                self.dirty = true;
                tracing::info!(path = %self.options.config_path.display(), "config reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config")
            }
        }
        self.notifier.ready(&self.status_line());
    }

    async fn shutdown(mut self) {
        self.notifier.stopping();
        tracing::info!(in_flight = self.tasks.len(), "stopping");
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok((slot, outcome)))) => self.on_outcome(slot, outcome),
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        cancelled = self.tasks.len(),
                        "in-flight operations cancelled at shutdown"
                    );
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests;
