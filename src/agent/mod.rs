//! The agent (docs/design.md §5): one loop that keeps podman's containers, the proxy's
//! routes and the certificates equal to the registry, run two ways — as the daemon
//! ([`Agent::run`]) until told to stop, or once ([`Agent::once`]) until every piece of
//! work has reported, with backoff off.
//!
//! The loop owns the state and never waits on podman, SQLite or the proxy: each piece of
//! work (a component, the container list, the proxy, the certificates, podman's health,
//! the registry poll) is a key in a [`Scheduler`] and runs as a task of its own; its
//! outcome comes back to the loop. Triggers only make work due, so a storm of events is
//! a few passes. Podman is judged up or down only by a ping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::certs::{self, AnyIssuer, Certs, Wanted};
use crate::config::Config;
use crate::container::{ComponentKey, ContainerSpec, Us};
use crate::control::{Backoff, BackoffPolicy, Backoffs, Scheduler};
use crate::error::Failure;
use crate::plan::{Action, Book, Desired};
use crate::proxy::{AnyProxy, ProxyRoute};
use crate::reconcile::{self, Status, StorageNames};
use crate::registry::{CertStatus, Registry, RouteProxyState};
use crate::routes;
use crate::runtime::deaths::Deaths;
use crate::runtime::podman::Podman;
use crate::runtime::{Runtime, RuntimeError, Trigger};
use crate::spec::Service;

mod containers;
mod edge;
mod health;
mod metrics;
pub mod notify;
mod pulls;
mod status;
mod watch;
mod work;
mod writer;

pub use edge::CertsOutcome;
pub use pulls::PullReport;
pub use work::OnceReport;

use notify::Notifier;
use work::{Outcome, Work};

/// How long podman's own restart policy is given to bring a dead container back before
/// the agent acts (podman restarts in ≈ 70 ms here).
pub const RESTART_GRACE: Duration = Duration::from_secs(1);
/// How often the registry is asked whether another process changed it.
pub const REGISTRY_POLL: Duration = Duration::from_millis(250);
/// After SIGTERM, operations on containers get this long to finish; the rest are
/// cancelled. With the writer's limit below, the daemon exits within 10 s.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(7);
/// How long the status writer may take to flush at exit.
pub const WRITER_CLOSE: Duration = Duration::from_millis(1500);
/// A pass that could not list containers, or a removal that failed, is retried after this.
pub const LIST_RETRY: Duration = Duration::from_secs(1);
pub use crate::runtime::PING_TIMEOUT;
/// A list that takes longer than this makes the agent check podman's health.
pub const SLOW_LIST: Duration = Duration::from_secs(3);
/// Pings while podman is down: quick, so work resumes within a second of its return.
pub const PODMAN_RETRY: BackoffPolicy = BackoffPolicy::doubling(
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(30),
);
/// Route registration while the proxy is down: doubling, capped, so the routes follow
/// within seconds of the proxy coming back.
pub const PROXY_RETRY: BackoffPolicy = BackoffPolicy::doubling(
    Duration::from_millis(500),
    Duration::from_secs(5),
    Duration::from_secs(30),
);
/// A certificate retry wakes the loop this long after it is due.
pub const CERT_RETRY_SLACK: Duration = Duration::from_millis(50);
/// How often the daemon checks that the proxy still has its routes when nothing else
/// asks (a Caddy restarted empty says nothing): one read of the routes, which writes only
/// when they are not as wanted.
pub const PROXY_CHECK: Duration = Duration::from_secs(3);

/// The outside systems the agent works on, built by the command and passed in.
pub struct Context<R> {
    pub runtime: Arc<R>,
    pub proxy: Arc<AnyProxy>,
    pub issuer: Arc<AnyIssuer>,
    /// Builds the proxy and the issuer anew from a reloaded config.
    pub rebuild: fn(&Config) -> (AnyProxy, AnyIssuer),
}

fn from_config(config: &Config) -> (AnyProxy, AnyIssuer) {
    (
        AnyProxy::from_config(config),
        AnyIssuer::from_config(config),
    )
}

impl<R> Context<R> {
    /// The runtime given, with the proxy and issuer `config` names.
    pub fn new(runtime: Arc<R>, config: &Config) -> Context<R> {
        let (proxy, issuer) = from_config(config);
        Context {
            runtime,
            proxy: Arc::new(proxy),
            issuer: Arc::new(issuer),
            rebuild: from_config,
        }
    }
}

impl Context<Podman> {
    /// Podman at `[podman].socket`, and the proxy and issuer of the config.
    pub fn podman(config: &Config) -> Context<Podman> {
        let podman = Podman::new(&config.podman.socket.0, config.podman.cli.0.clone());
        Context::new(Arc::new(podman), config)
    }
}

/// What tells the daemon to stop or reload: handled by the process's signal task, never
/// blocked by the loop (a reload requested many times before the loop sees it is one).
#[derive(Clone, Default)]
pub struct Controls {
    pub shutdown: CancellationToken,
    pub reload: Arc<Notify>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Daemon,
    Once,
}

/// Podman's health as the agent's pings last found it.
struct Health {
    /// `None` until the first ping answers or fails.
    up: Option<bool>,
    error: Option<String>,
    retry: Backoff,
}

/// A container whose death the agent learnt from its pidfd, before podman's event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suspect {
    /// When its pidfd told.
    since: Instant,
    /// Lists that still showed it up or in transition.
    tries: u32,
    /// A list asked for after the death still showed it running: podman had not begun a
    /// stop of its own (podman's stop saves `stopping` before it signals), so the process
    /// crashed or was killed from outside, and no removal of podman's is under way.
    crashed: bool,
    /// Podman's database said the same at the death itself (its pidfd, before any sync):
    /// the start goes ahead as soon as a list shows it exited.
    confirmed: bool,
    /// When a list first showed it exited: its start waits [`START_CONFIRM`] (or
    /// [`STOP_CONFIRM`]) and another list, since a `podman rm -f` shows the same death
    /// and then removes it.
    exited_at: Option<Instant>,
}

impl Suspect {
    pub(crate) fn new(since: Instant, confirmed: bool) -> Suspect {
        Suspect {
            since,
            tries: 0,
            crashed: confirmed,
            confirmed,
            exited_at: None,
        }
    }

    /// When its start may go ahead, a list after that still showing it exited.
    fn start_at(&self, exited_at: Instant) -> Instant {
        if self.confirmed {
            return exited_at;
        }
        let confirmed = exited_at + START_CONFIRM;
        if self.crashed {
            confirmed
        } else {
            confirmed.max(self.since + STOP_CONFIRM)
        }
    }
}

/// How long a container seen exited after its pidfd told its death waits before the agent
/// starts it, with a list after it, when a list showed it running after the death (a
/// crash): short against podman's own restart (≈ 0.1 s).
pub const START_CONFIRM: Duration = Duration::from_millis(20);

/// The same wait, from the death, when no list showed it running after it (it was
/// `stopping`, or already exited): podman may be stopping it for a `podman rm -f`. Its
/// removal lets go of the container's lock while it kills, polls the process every
/// 100 ms, then takes the lock again and removes the container without looking at its
/// state; a start in that gap runs a container podman then deletes, whose conmon and
/// process live on with its ports (an orphan). After this the removal holds the lock,
/// and a start waits for it and finds the container gone.
pub const STOP_CONFIRM: Duration = Duration::from_millis(150);

/// The loop's state. Generic over the runtime so tests can drive it with the fake.
pub struct Agent<R: Runtime + 'static> {
    ctx: Context<R>,
    config: Config,
    config_path: PathBuf,
    mode: Mode,
    /// This node's agent for this registry: whose containers are ours.
    us: Arc<Us>,
    /// Why the daemon must stop (its registry replaced under it); ends the loop.
    fatal: Option<Failure>,
    /// The registry connection the watcher thread takes when the daemon starts.
    poll_reg: Option<Registry>,
    /// The registry connection of the port moves a pass makes (taken while it runs).
    pass_reg: Option<Registry>,
    writer: writer::StatusWriter,
    notifier: Notifier,
    data_version: i64,
    /// The desired-state generation the cached services belong to.
    generation: i64,
    /// Shared with each pass's list task (cloned by reference, not by value: 200
    /// services' deep copy was a quarter of an idle daemon's CPU).
    services: Arc<Vec<Service>>,
    desired: Vec<Desired>,
    specs: HashMap<ComponentKey, ContainerSpec>,
    /// Counts the times services stopped being wanted (1 at start: the services removed
    /// while no agent ran); a pass's list sweeps their networks while `networks_swept`,
    /// the count its last sweep was for, is behind.
    networks_due: u64,
    networks_swept: u64,
    /// [`Self::wanted_services`] as of now, for a sweep under way to ask before each
    /// removal (the desired state may have changed since it began).
    wanted_now: Arc<std::sync::Mutex<HashSet<String>>>,
    /// What the components' env files and secrets held at the last pass's read.
    files: reconcile::Files,
    book: Book,
    backoffs: Backoffs<ComponentKey>,
    sched: Scheduler<Work>,
    /// The action the last plan has for each component waiting in the scheduler.
    pending: HashMap<ComponentKey, (Action, Arc<StorageNames>)>,
    /// The storage-held names of the creates planned, freed in batches (see
    /// [`StorageNames`]): one for the agent's lifetime, so that the creates of successive
    /// passes — the daemon plans again at every event — join one batch.
    storage_names: Arc<StorageNames>,
    /// Components a plan had work for while an operation on them was under way: a pass
    /// follows when it is done.
    deferred: HashSet<ComponentKey>,
    /// The container each component's last bring-up started.
    brought_up: HashMap<ComponentKey, String>,
    /// The last pass's list of containers.
    last_actual: Option<Vec<crate::runtime::Actual>>,
    /// The daemon's pidfd watches of its running containers (issue 16): a death is told
    /// the moment it happens, not when podman's event about it comes.
    deaths: Option<Arc<Deaths>>,
    /// Containers whose main process exited (their pidfd), until podman has finished with
    /// them: looked at again after a short, growing delay.
    suspects: HashMap<String, Suspect>,
    /// Components whose bring-up is under way (the other operations have a lane of
    /// their own).
    bringing_up: HashSet<ComponentKey>,
    /// Components with any operation under way.
    operating: HashSet<ComponentKey>,
    /// Components being recreated (one at a time per service).
    recreating: HashSet<ComponentKey>,
    tasks: JoinSet<(Work, Outcome)>,
    running: HashMap<tokio::task::Id, (Work, Instant, AbortHandle)>,
    status: BTreeMap<ComponentKey, (Status, Option<String>, Option<String>)>,
    podman: Health,
    /// A pass has completed since podman was last found up.
    synced: bool,
    wanted_routes: Vec<(ComponentKey, String, ProxyRoute)>,
    route_states: Vec<(ComponentKey, String, RouteProxyState)>,
    proxy_error: Option<String>,
    proxy_retry: Backoff,
    /// `None` while the certificate task has it.
    certs: Option<Certs>,
    wanted_certs: Vec<Wanted>,
    /// What the registry holds for the certificates (compared without `updated_ms`).
    cert_states: Vec<CertStatus>,
    cert_load_error: Option<String>,
    /// A reload happened while the manager was out in its task.
    certs_reconfigure: bool,
    /// When a route sync last asked for a certificate check.
    certs_asked: Option<Instant>,
    resync: Duration,
    passes: u64,
    ready: bool,
    last_status_line: String,
    /// Why the watchdog is withheld, once said.
    stuck: Option<String>,
    report: OnceReport,
    /// What asked first for the pass that is waiting (the `passes` metric's trigger).
    pass_trigger: Option<&'static str>,
    /// When the pass under way started its list, and what asked for it.
    pass_started: Option<(Instant, &'static str)>,
    /// A status changed since the components' gauges were last set.
    metrics_dirty: bool,
    metric_series: metrics::Series,
    /// `[metrics] listen`'s endpoint while the daemon runs.
    metrics_server: Option<crate::metrics::Server>,
    /// The components' health checks, from the desired state.
    checks: HashMap<ComponentKey, crate::model::HealthCheck>,
    /// Each checked component's check of its current container.
    health: HashMap<ComponentKey, health::Tracker>,
    /// Probes under way.
    probing: usize,
    /// The dependents of each component that restart with it (`restart_with`).
    restart_with: HashMap<ComponentKey, Vec<ComponentKey>>,
    /// The components some other component depends on (`depends_on`, any condition).
    depended_on: HashSet<ComponentKey>,
    /// The one-shot components.
    oneshots: HashSet<ComponentKey>,
    /// One-shot components `--once` has brought up (it runs each once).
    ran_once: HashSet<ComponentKey>,
    /// Pulls waiting or under way, by image, with the components waiting for each.
    pulls: HashMap<String, pulls::PullWait>,
    /// The image each component waiting for a pull waits for.
    awaiting_pull: HashMap<ComponentKey, String>,
    /// A pull's outcome for the bring-up of each component it was for, until it starts.
    pull_steps: HashMap<ComponentKey, reconcile::PullStep>,
    /// When each image's last pull that ended well did.
    pulled_at: HashMap<String, Instant>,
    /// Pulls under way.
    pulling: usize,
    /// The pulls' progress lines, (image, line), to the loop.
    progress_tx: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    progress_rx: Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>,
}

impl<R: Runtime + 'static> Agent<R> {
    /// Opens the registry (allocating route ports still missing) and readies the loop.
    pub fn new(ctx: Context<R>, config: Config, config_path: PathBuf) -> Result<Self, Failure> {
        let mut reader = Registry::open_existing(&config.database.path)?;
        certs::check_modes(&config).map_err(|e| Failure::unavailable(anyhow::anyhow!(e)))?;
        let us = Arc::new(reader.identity()?.us(&config.agent.node));
        let writer = writer::StatusWriter::start(Registry::open_existing(&config.database.path)?);
        let data_version = reader.data_version()?;
        let generation = reader.generation()?;
        let mut services = reader.services()?;
        if routes::unallocated(&services) && routes::allocate(&mut reader, &config)? {
            services = reader.services()?;
        }
        let pass_reg = Some(Registry::open_existing(&config.database.path)?);
        // One-shot components done before: not run again.
        let completed = reader
            .statuses()?
            .into_iter()
            .filter_map(|(k, s)| Some((k, s.completed_hash?)))
            .collect();
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut a = Agent {
            pulls: HashMap::new(),
            awaiting_pull: HashMap::new(),
            pull_steps: HashMap::new(),
            pulled_at: HashMap::new(),
            pulling: 0,
            progress_tx,
            progress_rx: Some(progress_rx),
            wanted_routes: Vec::new(),
            route_states: Vec::new(),
            proxy_error: None,
            proxy_retry: Backoff::new(PROXY_RETRY),
            certs: Some(Certs::from_config(&config)),
            wanted_certs: Vec::new(),
            cert_states: Vec::new(),
            cert_load_error: None,
            certs_reconfigure: false,
            certs_asked: None,
            backoffs: Backoffs::new(containers::policy(&config)),
            book: Book {
                restart_grace: RESTART_GRACE,
                completed,
                ..Default::default()
            },
            resync: config.reconcile.interval,
            ctx,
            config,
            config_path,
            mode: Mode::Daemon,
            us,
            fatal: None,
            poll_reg: Some(reader),
            pass_reg,
            writer,
            notifier: Notifier::from_env(),
            data_version,
            generation,
            services: Arc::new(Vec::new()),
            desired: Vec::new(),
            specs: HashMap::new(),
            networks_due: 1,
            networks_swept: 0,
            wanted_now: Arc::default(),
            files: HashMap::new(),
            sched: Scheduler::default(),
            pending: HashMap::new(),
            storage_names: Arc::default(),
            deferred: HashSet::new(),
            brought_up: HashMap::new(),
            bringing_up: HashSet::new(),
            operating: HashSet::new(),
            recreating: HashSet::new(),
            last_actual: None,
            deaths: None,
            suspects: HashMap::new(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            status: BTreeMap::new(),
            podman: Health {
                up: None,
                error: None,
                retry: Backoff::new(PODMAN_RETRY),
            },
            synced: false,
            passes: 0,
            ready: false,
            last_status_line: String::new(),
            stuck: None,
            report: OnceReport::default(),
            pass_trigger: None,
            pass_started: None,
            metrics_dirty: true,
            metric_series: metrics::Series::default(),
            metrics_server: None,
            checks: HashMap::new(),
            health: HashMap::new(),
            probing: 0,
            restart_with: HashMap::new(),
            depended_on: HashSet::new(),
            oneshots: HashSet::new(),
            ran_once: HashSet::new(),
        };
        a.set_services(services);
        Ok(a)
    }

    /// Number of passes planned so far (tests and benchmarks read it).
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// The daemon: runs until `controls.shutdown` is cancelled, then lets operations on
    /// containers finish for up to [`DRAIN_TIMEOUT`] and returns.
    pub async fn run(mut self, controls: Controls) -> Result<(), Failure> {
        let mut events = self.ctx.runtime.events();
        let (deaths, mut died) = Deaths::new();
        self.deaths = Some(deaths);
        let mut watch = watch::RegistryWatch::start(
            self.poll_reg.take(),
            self.config.clone(),
            (self.data_version, self.generation),
        );
        self.start_metrics().await;
        self.notifier.status("waiting for podman");
        let now = Instant::now();
        self.sched.schedule(Work::Ping, work::URGENT, now);
        let mut resync = self.resync_timer();
        let watchdog_every = notify::watchdog_interval();
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut events_open = true;
        let mut progress = self.progress_rx.take().expect("the loop runs once");
        let ready_by = crate::control::after(now, self.config.reconcile.ready_timeout);
        loop {
            self.start_due_work();
            self.maybe_ready(ready_by);
            self.update_status_line();
            self.refresh_metrics();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = controls.shutdown.cancelled() => break,
                () = controls.reload.notified() => {
                    if self.reload() {
                        resync = self.resync_timer();
                    }
                    *watch.config.lock().expect("watch config") = self.config.clone();
                }
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.joined(done);
                    while let Some(done) = self.tasks.try_join_next_with_id() {
                        self.joined(done);
                    }
                }
                Some(polled) = watch.rx.recv() => self.on_polled(polled),
                Some((image, line)) = progress.recv() => self.on_pull_progress(&image, line),
                Some(d) = died.recv() => {
                    self.on_death(&d);
                    while let Ok(d) = died.try_recv() {
                        self.on_death(&d);
                    }
                }
                t = events.recv(), if events_open => match t {
                    Some(t) => {
                        self.on_trigger(t);
                        while let Ok(t) = events.try_recv() {
                            self.on_trigger(t);
                        }
                    }
                    None => {
                        tracing::warn!("podman's event stream watcher ended; relying on resyncs");
                        events_open = false;
                    }
                },
                () = sleep_until(wake), if wake.is_some() => {}
                () = tokio::time::sleep_until(ready_by), if !self.ready => {}
                _ = resync.tick() => {
                    tracing::debug!(trigger = "resync", "periodic resync");
                    self.want_pass("resync");
                }
                _ = watchdog.tick(), if watchdog_every.is_some() => self.watchdog(),
            }
            if self.fatal.is_some() {
                break;
            }
        }
        let fatal = self.fatal.take();
        drop(watch);
        self.metrics_server.take();
        self.shutdown().await;
        fatal.map_or(Ok(()), Err)
    }

    /// One recovery pass: podman pinged, the containers listed and brought to the
    /// registry's state without backoff, the routes registered, the certificates
    /// ensured; returns when every piece of that work has reported. Where components
    /// wait for others (a dependency's condition, a health check's first pass, a
    /// one-shot component's exit), more passes follow as they make progress, for at
    /// most `timeout` in all; what is still waiting then is reported as failed.
    pub async fn once(mut self, timeout: Duration) -> Result<OnceReport, Failure> {
        self.mode = Mode::Once;
        self.book = Book {
            completed: std::mem::take(&mut self.book.completed),
            ..Book::default()
        };
        let rt = self.ctx.runtime.clone();
        let unavailable = |e: RuntimeError| Failure::unavailable(anyhow::anyhow!("{e}"));
        crate::runtime::ping_within(&*rt, PING_TIMEOUT * 5, &self.config.podman.socket.0)
            .await
            .map_err(unavailable)?;
        self.podman.up = Some(true);
        let deadline = crate::control::after(Instant::now(), timeout);
        let mut progress = self.progress_rx.take().expect("the loop runs once");
        self.sched
            .schedule(Work::List, work::URGENT, Instant::now());
        let mut timed_out = false;
        loop {
            if !timed_out {
                self.start_due_work();
            }
            let wake = if timed_out { None } else { self.next_wake() };
            if self.tasks.is_empty() && wake.is_none() {
                break;
            }
            tokio::select! {
                done = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    if let Some(done) = done {
                        self.joined(done);
                    }
                }
                () = sleep_until(wake), if wake.is_some() && self.tasks.is_empty() => {}
                Some((image, line)) = progress.recv() => self.on_pull_progress(&image, line),
                () = tokio::time::sleep_until(deadline), if !timed_out => {
                    // Nothing new starts; probes and pulls under way are dropped,
                    // operations on containers finish.
                    timed_out = true;
                    for (w, _, handle) in self.running.values() {
                        if matches!(w, Work::Probe(_) | Work::Pull(_)) {
                            handle.abort();
                        }
                    }
                }
            }
            if let Some(e) = self.report.list_error.take() {
                // What is under way is dropped (probes' execs killed, and waited for).
                self.tasks.abort_all();
                while self.tasks.join_next().await.is_some() {}
                self.writer.close(WRITER_CLOSE).await;
                self.ctx.runtime.settle().await;
                return Err(unavailable(e));
            }
        }
        self.writer.prune();
        self.writer.close(Duration::from_secs(30)).await;
        // A probe aborted at the timeout has its exec killed by a task of its own.
        self.ctx.runtime.settle().await;
        let mut report = std::mem::take(&mut self.report);
        report.pass.components = self.final_reports(report.pass.components, timed_out);
        report.pass.removals.sort_by(|a, b| a.name.cmp(&b.name));
        report.wanted_routes = self.wanted_routes.len();
        report.proxy_serves = self.ctx.proxy.serves_routes();
        Ok(report)
    }

    /// `--once`'s report of each component, from its passes: the last report with an
    /// action (else the last); a component still waiting for a dependency, or whose check
    /// has not passed, has failed.
    fn final_reports(
        &self,
        all: Vec<reconcile::ComponentReport>,
        timed_out: bool,
    ) -> Vec<reconcile::ComponentReport> {
        let mut by_key: BTreeMap<ComponentKey, reconcile::ComponentReport> = BTreeMap::new();
        for r in all {
            let keep_old = by_key.get(&r.key).is_some_and(|old| {
                old.verb.is_some_and(|v| v != crate::plan::Verb::Wait) && r.verb.is_none()
            });
            if keep_old {
                // The action stands; the later look only confirms it (its status wins).
                if let Some(old) = by_key.get_mut(&r.key) {
                    if r.status != Status::Running || old.status != Status::Running {
                        old.status = r.status;
                    }
                }
                continue;
            }
            by_key.insert(r.key.clone(), r);
        }
        let why_late = if timed_out {
            " (--timeout ran out)"
        } else {
            ""
        };
        by_key
            .into_values()
            .map(|mut r| {
                if r.status == Status::Pulling {
                    // Its pull was still under way.
                    let shown = self
                        .status
                        .get(&r.key)
                        .and_then(|(_, d, _)| d.clone())
                        .or_else(|| r.detail())
                        .unwrap_or_default();
                    r.status = Status::Failed;
                    r.error = Some(reconcile::ActionError::Unmet(format!(
                        "still {shown}{why_late}"
                    )));
                } else if r.status == Status::Blocked {
                    r.status = Status::Failed;
                    if let Some(e) = r.error.take() {
                        r.error = Some(reconcile::ActionError::Unmet(format!("{e}{why_late}")));
                    }
                } else if r.status == Status::Running && !self.serves(&r.key) {
                    let t = self.health.get(&r.key);
                    r.status = Status::Failed;
                    r.error = Some(reconcile::ActionError::Unmet(format!(
                        "health check {}{}{why_late}",
                        t.map_or("not run", |t| t.state.as_str()),
                        t.and_then(|t| t.last.as_ref())
                            .map(|l| format!(": {}", l.1))
                            .unwrap_or_default()
                    )));
                }
                r
            })
            .collect()
    }

    /// Serves `[metrics] listen`, if set. One that cannot be bound is logged: the
    /// containers do not wait on their metrics (a reload does not move it).
    async fn start_metrics(&mut self) {
        let Some(listen) = self.config.metrics.listen() else {
            return;
        };
        match crate::metrics::server::start(&listen).await {
            Ok(s) => {
                tracing::info!(listen = %s.local, "serving metrics at /metrics");
                self.metrics_server = Some(s);
            }
            Err(e) => {
                tracing::error!(listen = %listen, error = %e, "cannot serve metrics; running without")
            }
        }
    }

    /// Where the metrics are served (tests ask for port 0).
    pub fn metrics_listen(&self) -> Option<&crate::metrics::Listen> {
        self.metrics_server.as_ref().map(|s| &s.local)
    }

    fn resync_timer(&self) -> tokio::time::Interval {
        let every = self.resync.min(crate::control::FAR);
        let mut t = tokio::time::interval_at(crate::control::after(Instant::now(), every), every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    }

    /// Replaces the cached desired state. What is waiting was planned from the old one:
    /// it is dropped, and a pass plans again (operations under way are looked at again
    /// when they are done).
    fn set_services(&mut self, services: Vec<Service>) {
        self.wanted_routes = routes::desired(&services);
        self.wanted_certs = certs::wanted(&services);
        self.services = Arc::new(services);
        self.rebuild_specs();
        let wanted: HashSet<ComponentKey> = self.desired.iter().map(|d| d.key.clone()).collect();
        self.backoffs.retain(|k| wanted.contains(k));
        self.book.retry_at.retain(|k, _| wanted.contains(k));
        self.status.retain(|k, _| wanted.contains(k));
        self.brought_up.retain(|k, _| wanted.contains(k));
        let gone: Vec<ComponentKey> = self
            .awaiting_pull
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.forget_pull_wait(&k);
        }
        self.metrics_dirty = true;
        for key in self.pending.keys() {
            self.sched.cancel(&Work::Component(key.clone()));
            self.storage_names.forget(&key.container_name());
        }
        self.pending.clear();
        let busy: Vec<ComponentKey> = self
            .running
            .values()
            .filter_map(|(w, ..)| match w {
                Work::Component(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        self.deferred.extend(busy);
        self.want_pass("registry");
        self.reduce_from_last_list();
    }

    /// The active services (those with desired components; each one's network is wanted
    /// too).
    fn wanted_services(&self) -> HashSet<String> {
        self.desired.iter().map(|d| d.key.service.clone()).collect()
    }

    /// The desired containers from the cached services and files.
    fn rebuild_specs(&mut self) {
        let (desired, specs): (Vec<Desired>, Vec<ContainerSpec>) = reconcile::desired_with(
            &self.services,
            &self.us,
            &self.files,
            &crate::container::Host::from_config(&self.config),
        )
        .into_iter()
        .unzip();
        self.specs = desired.iter().map(|d| d.key.clone()).zip(specs).collect();
        self.desired = desired;
        let after = self.wanted_services();
        let mut now = self.wanted_now.lock().unwrap_or_else(|e| e.into_inner());
        if now.iter().any(|s| !after.contains(s)) {
            self.networks_due += 1;
        }
        *now = after;
        drop(now);
        self.checks.clear();
        self.restart_with.clear();
        self.depended_on.clear();
        self.oneshots.clear();
        for s in self.services.iter().filter(|s| s.active) {
            for c in &s.components {
                let key = ComponentKey::new(s.name.clone(), c.name.clone());
                if c.settings.oneshot {
                    self.oneshots.insert(key.clone());
                }
                if let Some(h) = &c.settings.health {
                    self.checks.insert(key.clone(), h.clone());
                }
                for (name, dep) in &c.settings.depends_on {
                    let (svc, comp) = crate::model::dependency_target(&s.name, name);
                    let on = ComponentKey::new(svc, comp);
                    if dep.restart_with {
                        self.restart_with
                            .entry(on.clone())
                            .or_default()
                            .push(key.clone());
                    }
                    self.depended_on.insert(on);
                }
            }
        }
    }

    /// Asks for a pass: one list and plan as soon as podman is up (requests while one is
    /// waiting are the same request; one made while a list runs is another pass after it).
    fn want_pass(&mut self, trigger: &'static str) {
        if self.mode == Mode::Daemon {
            self.pass_trigger.get_or_insert(trigger);
            self.sched
                .schedule(Work::List, work::URGENT, Instant::now());
        }
    }

    /// A pass because a component made progress others may wait on (a check decided, a
    /// one-shot component exited): in `--once` too, which waits for dependencies.
    fn want_progress(&mut self, trigger: &'static str) {
        self.advance_blocked();
        if self.mode == Mode::Once {
            self.sched
                .schedule(Work::List, work::URGENT, Instant::now());
        } else {
            self.want_pass(trigger);
        }
    }

    fn on_trigger(&mut self, t: Trigger) {
        match t {
            Trigger::Connected => {
                tracing::debug!(trigger = "connected", "event stream open; full pass");
                self.sched
                    .schedule(Work::Ping, work::URGENT, Instant::now());
                self.want_pass("connected");
            }
            Trigger::Lost(e) => {
                tracing::debug!(trigger = "lost", error = %e, "event stream lost");
                self.sched
                    .schedule(Work::Ping, work::URGENT, Instant::now());
            }
            Trigger::Event(ev) => {
                crate::metrics::event_received(ev.time);
                if self.on_event(&ev) {
                    tracing::debug!(
                        trigger = "event",
                        action = %ev.action,
                        container = %ev.name,
                        "podman event"
                    );
                    self.want_pass("event");
                }
            }
        }
    }

    /// SIGHUP: reload the config; a bad one is logged and the old one kept. Returns
    /// whether the resync interval changed.
    fn reload(&mut self) -> bool {
        self.notifier.reloading();
        let mut resync_changed = false;
        match Config::load(&self.config_path) {
            Ok(mut new) => {
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
                new.agent.node = self.config.agent.node.clone();
                new.database.path = self.config.database.path.clone();
                new.podman.socket = self.config.podman.socket.clone();
                if new.reconcile.interval != self.resync {
                    self.resync = new.reconcile.interval;
                    resync_changed = true;
                }
                self.backoffs.set_policy(containers::policy(&new));
                let (proxy, issuer) = (self.ctx.rebuild)(&new);
                self.ctx.proxy = Arc::new(proxy);
                self.ctx.issuer = Arc::new(issuer);
                // `[certs]` may have changed (renew_before, the CA): the next route
                // sync looks at the certificates.
                self.certs_asked = None;
                match self.certs.as_mut() {
                    Some(c) => c.configure(&new),
                    // Out in its task: configured when it comes back.
                    None => self.certs_reconfigure = true,
                }
                self.config = new;
                // `[volumes] root` is part of the specs.
                self.rebuild_specs();
                self.want_pass("reload");
                tracing::info!(path = %self.config_path.display(), "config reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config")
            }
        }
        self.notifier.ready(&self.status_line());
        resync_changed
    }

    async fn shutdown(mut self) {
        self.notifier.stopping();
        // Work that changes nothing is cancelled at once (a probe, its exec killed; a
        // pull too: podman keeps the layers fetched, and the next start goes on from
        // there); operations on containers, routes and certificates may finish, for a
        // while.
        for (w, _, handle) in self.running.values() {
            if matches!(w, Work::Ping | Work::List | Work::Probe(_) | Work::Pull(_)) {
                handle.abort();
            }
        }
        tracing::info!(in_flight = self.tasks.len(), "stopping");
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.joined(done),
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
        self.writer.close(WRITER_CLOSE).await;
        self.ctx.runtime.settle().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    tokio::time::sleep_until(at.unwrap_or_else(Instant::now)).await
}

#[cfg(test)]
mod health_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod pull_tests;
#[cfg(test)]
mod tests;
