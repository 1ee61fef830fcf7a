//! One reconcile pass (docs/design.md §4): desired state from the registry, one list of the actual
//! containers, the pure plan, then its execution with bounded concurrency.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::container::{owner, ComponentKey, ContainerSpec, Owner, Us, DEFAULT_STOP_TIMEOUT_SECS};
use crate::plan::{self, Action, Book, Desired, InSync, Plan, RemoveReason, Verb, WaitReason};
use crate::registry::{now_ms, ComponentStatus};
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::Service;

/// Where a component stands after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Stopped,
    /// Paused, restarting, stopping: podman is in the middle of something.
    Transient,
    /// Its image is not in the local store (and its `pull` did not bring it).
    ImageMissing,
    /// A volume's host path does not exist (and may not be created): podman would create
    /// it empty.
    VolumeMissing,
    /// Its name is held by a container that is not ours.
    Conflict,
    /// A network it joins exists with other options than its service file's.
    NetworkConflict,
    /// An env file or secret of it is missing or unreadable.
    ConfigMissing,
    Failed,
    /// Held back by backoff, or left to podman's restart policy for a moment.
    Waiting,
    /// A one-shot component that exited 0 for its current spec.
    Completed,
    /// Not brought up until a dependency meets its condition.
    Blocked,
    /// Its image is being pulled (the agent's pull, work of its own): brought up once it
    /// is local.
    Pulling,
}

impl From<InSync> for Status {
    fn from(s: InSync) -> Status {
        match s {
            InSync::Running => Status::Running,
            InSync::Stopped => Status::Stopped,
            InSync::Transient => Status::Transient,
            InSync::Completed => Status::Completed,
        }
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Transient => "transient",
            Status::ImageMissing => "image-missing",
            Status::VolumeMissing => "volume-missing",
            Status::Conflict => "conflict",
            Status::NetworkConflict => "network-conflict",
            Status::ConfigMissing => "config-missing",
            Status::Failed => "failed",
            Status::Waiting => "backing-off",
            Status::Completed => "completed",
            Status::Blocked => "waiting",
            Status::Pulling => "pulling",
        }
    }

    /// Whether the component failed to reach its desired state.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::ImageMissing
                | Status::VolumeMissing
                | Status::Conflict
                | Status::NetworkConflict
                | Status::ConfigMissing
                | Status::Failed
        )
    }
}

/// Why an action did not bring its component to the desired state. Never holds env
/// values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("image {0} is not in the local image store (pull = \"never\"); load it, e.g. with podman load, or set pull = \"missing\"")]
    ImageMissing(String),
    #[error("volume host path {0} does not exist (podman would create it empty); create it, or set create_host_path = true on the volume")]
    VolumeMissing(String),
    #[error("volume host path {0}: {1}")]
    HostPath(String, String),
    /// An external volume (`[volumes.NAME]`, podman's) that podman does not have.
    #[error("external volume {0} does not exist in podman (podman would create it empty); create it: podman volume create {0}")]
    ExternalVolumeMissing(String),
    #[error("a container of that name without our labels exists (id {}); left alone", short(.0))]
    Conflict(String),
    /// Names the file and why, never what it holds.
    #[error("{0}; retried at every pass")]
    ConfigMissing(String),
    #[error("{0}")]
    Volume(String),
    /// A network of the component exists with other options than the file's: never
    /// used as it is, never removed; retried at every pass.
    #[error("network {0} exists with other options than its service file's: {1}; the agent never removes a network: remove it (podman network rm {0}) or declare its options as they are; retried at every pass")]
    NetworkConflict(String, String),
    /// The bring-up needs a pull, which the agent makes as work of its own: the
    /// component is `pulling` meanwhile. `local`: the image is in the store (`always`),
    /// so a failed pull falls back to it.
    #[error("pulling {image}")]
    NeedsPull { image: String, local: bool },
    /// The pull of a missing image failed: `image-missing`, retried with backoff.
    #[error("image {image} is not in the local image store and its pull failed: {reason}")]
    PullFailed { image: String, reason: String },
    #[error("its name is held by container {} (id {}), an orphan of registry {}: made by another registry's agent, left alone until `mcp-agent adopt` or `mcp-agent prune`", .name, short(.id), .registry)]
    Orphan {
        name: String,
        id: String,
        registry: String,
    },
    #[error("waiting for {on} to {}", match .condition {
        crate::model::Condition::Started => "start",
        crate::model::Condition::Healthy => "be healthy",
        crate::model::Condition::Completed => "complete",
    })]
    Dependency {
        on: ComponentKey,
        condition: crate::model::Condition,
    },
    /// `--once` ended with it still waiting: for a dependency, or for its check.
    #[error("{0}")]
    Unmet(String),
    #[error("no desired spec for this component (internal error)")]
    NoSpec,
    #[error("route(s) {} have no host port: [ports].range is exhausted; widen the range or remove routes", .0.join(", "))]
    NoHostPort(Vec<String>),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ActionError {
    /// Podman did not answer: nothing was done to the container, so it is no attempt to
    /// back off from (the agent checks podman's health instead).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ActionError::Runtime(e) if e.is_unavailable())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReport {
    pub key: ComponentKey,
    pub container: String,
    /// The action taken, if any.
    pub verb: Option<Verb>,
    pub status: Status,
    /// Why it failed.
    pub error: Option<ActionError>,
    /// Why it waits.
    pub wait: Option<WaitReason>,
    pub container_id: Option<String>,
    /// Whether this pass brought it (back) up.
    pub recovered: bool,
    /// Its create found the name held by container storage and freed it: podman had
    /// lost its database.
    pub storage_freed: bool,
    /// When the plan said to look again (waits).
    pub until: Option<Instant>,
}

impl ComponentReport {
    /// Why this report's bring-up was a restart, if it was one (not a first creation):
    /// `crash` (an exited container started again), `drift` (recreated: its spec
    /// changed, or it was labelled for another component), `database_loss` (created
    /// after freeing its name from podman's storage) or `removal` (created anew for a
    /// component that had a container: `had_container`).
    pub fn restart_cause(&self, had_container: bool) -> Option<&'static str> {
        if self.status != Status::Running || !self.recovered {
            return None;
        }
        match self.verb? {
            Verb::Start => Some("crash"),
            // Unhealthy, or a dependency it restarts with was restarted.
            Verb::Restart => Some("restart"),
            Verb::Recreate => Some("drift"),
            Verb::Create if self.storage_freed => Some("database_loss"),
            Verb::Create if had_container => Some("removal"),
            _ => None,
        }
    }

    /// A report of no action: the component is as `status` says.
    pub fn in_sync(key: ComponentKey, status: Status, container_id: Option<String>) -> Self {
        ComponentReport {
            container: key.container_name(),
            key,
            verb: None,
            status,
            error: None,
            wait: None,
            container_id,
            recovered: false,
            storage_freed: false,
            until: None,
        }
    }

    /// Why it failed or waits, for people.
    pub fn detail(&self) -> Option<String> {
        match (&self.error, self.wait) {
            (Some(e), _) => Some(e.to_string()),
            (None, Some(w)) => Some(w.as_str().to_string()),
            (None, None) => None,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        self.error.as_ref().is_some_and(ActionError::is_unavailable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalReport {
    pub name: String,
    /// The component its labels name.
    pub owner: ComponentKey,
    pub reason: RemoveReason,
    pub error: Option<RuntimeError>,
}

impl RemovalReport {
    /// Why it was removed, in words.
    pub fn why(&self) -> String {
        self.reason.describe(&self.owner)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub components: Vec<ComponentReport>,
    pub removals: Vec<RemovalReport>,
}

/// The counts of the summary line `recovered N, already running N, failed N, skipped N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub recovered: usize,
    pub already_running: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {}, already running {}, failed {}, skipped {}",
            self.recovered, self.already_running, self.failed, self.skipped
        )
    }
}

impl PassReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.components {
            match c.status {
                Status::Running if c.recovered => s.recovered += 1,
                Status::Running if c.verb.is_none() => s.already_running += 1,
                Status::ImageMissing => s.skipped += 1,
                Status::VolumeMissing
                | Status::Conflict
                | Status::NetworkConflict
                | Status::ConfigMissing
                | Status::Failed => s.failed += 1,
                _ => {}
            }
        }
        s.failed += self.removals.iter().filter(|r| r.error.is_some()).count();
        s
    }

    /// One line per action taken, for `--once`.
    pub fn action_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for c in &self.components {
            let Some(verb) = c.verb else { continue };
            let verb = verb.as_str();
            let what = match (c.detail(), c.status) {
                (Some(d), _) => format!("{}: {d}", c.status.as_str()),
                (None, s) => s.as_str().to_string(),
            };
            lines.push(format!("{verb:<8} {} ({}): {what}", c.key, c.container));
        }
        for r in &self.removals {
            let what = match &r.error {
                None => format!("removed: {}", r.why()),
                Some(e) => format!("failed: {e}"),
            };
            lines.push(format!("{:<8} {} ({}): {what}", "remove", r.owner, r.name));
        }
        lines
    }

    /// The registry's view of each component after this pass.
    pub fn statuses(&self) -> Vec<(ComponentKey, ComponentStatus, bool)> {
        let now = now_ms();
        self.components
            .iter()
            .map(|c| {
                (
                    c.key.clone(),
                    ComponentStatus {
                        state: c.status.as_str().to_string(),
                        container_id: c.container_id.clone(),
                        last_error: c.detail().filter(|_| c.status.is_failure()),
                        restarts: 0,
                        next_retry_ms: None,
                        updated_ms: now,
                        health: None,
                        completed_hash: None,
                    },
                    c.restart_cause(false).is_some(),
                )
            })
            .collect()
    }
}

/// What the env files and secrets of the components that have any hold, read now.
pub fn read_files(services: &[Service]) -> Files {
    services
        .iter()
        .filter(|s| s.active)
        .flat_map(|s| {
            s.components
                .iter()
                .filter(|c| c.settings.reads_files())
                .map(|c| {
                    (
                        ComponentKey::new(s.name.clone(), c.name.clone()),
                        crate::files::load(&c.settings),
                    )
                })
        })
        .collect()
}

/// The files of components, by component (only those that have any).
pub type Files = HashMap<ComponentKey, crate::files::FileRead>;

/// The desired containers of the registry's active services, their env files and
/// secrets read now.
pub fn desired(services: &[Service], us: &Us) -> Vec<(Desired, ContainerSpec)> {
    desired_with(
        services,
        us,
        &read_files(services),
        &crate::container::Host::default(),
    )
}

/// The desired containers of the registry's active services, with what `files` found in
/// their env files and secrets. A component whose files are not there (or not read yet)
/// is blocked: `config-missing`, its container left as it is.
/// `host` says where named volumes live and which network is the default.
pub fn desired_with(
    services: &[Service],
    us: &Us,
    files: &Files,
    host: &crate::container::Host,
) -> Vec<(Desired, ContainerSpec)> {
    // Every service's networks, the inactive ones' too: a network is the machine's.
    let nets = crate::model::network_options_of(services);
    let nets = &nets;
    services
        .iter()
        .filter(|s| s.active)
        .flat_map(|s| {
            s.components.iter().map(move |c| {
                let key = ComponentKey::new(s.name.clone(), c.name.clone());
                let (loaded, blocked) = if c.settings.reads_files() {
                    match files.get(&key) {
                        Some(Ok(l)) => (Some(l), None),
                        Some(Err(e)) => (None, Some(e.clone())),
                        None => (None, Some("its files are not read yet".to_string())),
                    }
                } else {
                    (None, None)
                };
                let spec = ContainerSpec::build_in(us, &s.name, c, loaded, host, nets);
                (
                    Desired {
                        key,
                        container_name: spec.name.clone(),
                        spec_hash: spec.spec_hash().to_string(),
                        state: c.desired_state,
                        restart: c.restart,
                        blocked,
                        oneshot: c.settings.oneshot,
                        checked: c.settings.health.is_some(),
                        depends: c
                            .settings
                            .depends_on
                            .iter()
                            .map(|(name, dep)| {
                                let (svc, comp) = crate::model::dependency_target(&s.name, name);
                                (ComponentKey::new(svc, comp), dep.condition)
                            })
                            .collect(),
                    },
                    spec,
                )
            })
        })
        .collect()
}

/// One full pass: list, plan, execute. Fails only when the runtime cannot be listed.
pub async fn pass<R: Runtime>(
    rt: &R,
    services: &[Service],
    us: &Us,
    book: &Book,
    concurrency: usize,
) -> Result<PassReport, RuntimeError> {
    let desired = desired(services, us);
    let actual = rt.list().await?;
    let (ds, specs): (Vec<Desired>, Vec<ContainerSpec>) = desired.into_iter().unzip();
    let p = plan::plan(&ds, &actual, us, book, Instant::now());
    let specs: HashMap<ComponentKey, ContainerSpec> =
        ds.into_iter().map(|d| d.key).zip(specs).collect();
    Ok(execute(rt, p, &specs, us, concurrency).await)
}

/// Carries out a plan with at most `concurrency` container operations in flight.
pub async fn execute<R: Runtime>(
    rt: &R,
    p: Plan,
    specs: &HashMap<ComponentKey, ContainerSpec>,
    us: &Us,
    concurrency: usize,
) -> PassReport {
    let mut report = PassReport::default();
    for (key, sync, id) in p.in_sync {
        let status = Status::from(sync);
        report.components.push(ComponentReport::in_sync(
            key,
            status,
            (!id.is_empty()).then_some(id),
        ));
    }
    let names = StorageNames::default();
    for a in &p.actions {
        if let (Action::Create { .. }, Some(spec)) = (a, specs.get(a.key())) {
            names.add(&spec.name);
        }
    }
    let names = &names;
    let results: Vec<Result<ComponentReport, RemovalReport>> = stream::iter(p.actions)
        .map(|a| {
            let spec = specs.get(a.key());
            run_action(rt, a, spec, us, names)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for r in results {
        match r {
            Ok(c) => report.components.push(c),
            Err(r) => report.removals.push(r),
        }
    }
    report.components.sort_by(|a, b| a.key.cmp(&b.key));
    report.removals.sort_by(|a, b| a.name.cmp(&b.name));
    report
}

/// Names held by container storage after podman's database was lost, freed with one CLI
/// `ps` and one `rm` for a whole pass instead of one pair per container (a podman process
/// start each). A create that finds its name held there joins the pass's batch and waits
/// until no other first create of the pass is under way — those find their names held
/// too, after a loss, and join it — then one of them frees the batch: every name found
/// held, and every create of the pass not yet attempted that the API cannot see either.
/// Those creates wait for that call; a name is never freed while a create of ours for it
/// is under way.
#[derive(Debug)]
pub struct StorageNames {
    /// Names of the pass's creates not yet attempted.
    pending: std::sync::Mutex<BTreeSet<String>>,
    /// Names found held by storage, waiting for the batch that frees them.
    held: std::sync::Mutex<BTreeSet<String>>,
    /// How many first creates are under way (their outcome not known yet).
    trying: tokio::sync::watch::Sender<usize>,
    /// Names freed by a batch whose creates have not started yet; its lock is held for
    /// the duration of a batch.
    freed: tokio::sync::Mutex<HashSet<String>>,
    /// Names whose container was seen going away (its `remove` event, its process's
    /// exit), and when: podman may hold such a name a little longer while it finishes
    /// the removal, which is not storage holding it after a database loss.
    going: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a name seen going away may be waited for before the storage remedy.
pub const GOING_AWAY: std::time::Duration = std::time::Duration::from_secs(2);

/// The create's retries while podman finishes removing a name's container: 5 ms,
/// doubling, 7 tries (≈ 0.6 s in all), never a busy loop.
const NAME_RETRIES: u32 = 7;

impl Default for StorageNames {
    fn default() -> Self {
        StorageNames {
            pending: Default::default(),
            held: Default::default(),
            trying: tokio::sync::watch::Sender::new(0),
            freed: Default::default(),
            going: Default::default(),
        }
    }
}

/// A first create under way (see [`StorageNames`]); its end is counted when dropped.
pub struct Attempt<'a> {
    trying: &'a tokio::sync::watch::Sender<usize>,
    /// A batch of another create had freed this name (podman lost its database).
    pub freed: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.trying.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Names per CLI call, to keep the argv short.
const NAMES_PER_CALL: usize = 100;

impl StorageNames {
    /// `name`'s container was seen going away just now.
    pub fn going_away(&self, name: &str) {
        let mut going = self.going.lock().unwrap();
        let now = std::time::Instant::now();
        going.retain(|_, t| now.duration_since(*t) < GOING_AWAY);
        going.insert(name.to_string(), now);
    }

    /// Whether `name`'s container was seen going away within [`GOING_AWAY`].
    fn was_going(&self, name: &str) -> bool {
        self.going
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|t| t.elapsed() < GOING_AWAY)
    }

    /// A create of this pass, not yet attempted.
    pub fn add(&self, name: &str) {
        self.pending.lock().unwrap().insert(name.to_string());
    }

    /// A create planned no longer (the daemon's next plan dropped it): its name is not
    /// freed on its behalf.
    pub fn forget(&self, name: &str) {
        self.pending.lock().unwrap().remove(name);
    }

    /// Called before a create of `name`: takes it off the pending names, and waits until
    /// a batch under way (which may have taken it) is done. The create is under way until
    /// the attempt is dropped.
    pub async fn before_create(&self, name: &str) -> Attempt<'_> {
        self.pending.lock().unwrap().remove(name);
        // Freed for this create, if a batch took it: a later loss frees it again.
        let freed = self.freed.lock().await.remove(name);
        self.trying.send_modify(|n| *n += 1);
        Attempt {
            trying: &self.trying,
            freed,
        }
    }

    /// Frees `name` (held by storage, invisible to the API; its create's `attempt` is
    /// over) with the names the pass's other creates found held and every pending name
    /// that the API cannot see either.
    pub async fn free<R: Runtime>(
        &self,
        rt: &R,
        name: &str,
        attempt: Attempt<'_>,
    ) -> Result<(), RuntimeError> {
        self.held.lock().unwrap().insert(name.to_string());
        drop(attempt);
        // The creates under way find their names held too (after a loss, all of them
        // are): wait for them to join, so that one batch frees them all.
        let mut trying = self.trying.subscribe();
        let _ = trying.wait_for(|n| *n == 0).await;
        let mut freed = self.freed.lock().await;
        if freed.remove(name) {
            // Another create's batch took it.
            return Ok(());
        }
        let mut batch: Vec<String> = std::mem::take(&mut *self.held.lock().unwrap())
            .into_iter()
            .collect();
        let others: Vec<String> = std::mem::take(&mut *self.pending.lock().unwrap())
            .into_iter()
            .collect();
        for chunk in others.chunks(16) {
            let seen = futures_util::future::join_all(chunk.iter().map(|n| rt.holder(n))).await;
            for (n, holder) in chunk.iter().zip(seen) {
                // A name the API shows now is someone's container: never freed here.
                if holder?.is_none() {
                    batch.push(n.clone());
                }
            }
        }
        for chunk in batch.chunks(NAMES_PER_CALL) {
            rt.free_storage_names(chunk).await?;
            freed.extend(chunk.iter().cloned());
        }
        Ok(())
    }
}

/// How a bring-up goes about the pull its component's `pull` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PullStep {
    /// Pulled inside the bring-up (a pass of its own, [`execute`]).
    #[default]
    Inline,
    /// Not pulled here: a bring-up that needs a pull ends `pulling`
    /// ([`ActionError::NeedsPull`]) before it touches anything, and the agent pulls as
    /// work of its own (docs/design.md §5.1).
    Deferred,
    /// The agent's pull for this bring-up succeeded: not pulled again.
    Pulled,
    /// The agent's pull for this bring-up failed with this reason: the local image
    /// serves (`always`, with a warning), else `image-missing`.
    Failed(String),
}

/// Carries out one action; `spec` is the desired container of the action's component
/// (needed by create and recreate), `names` the pass's creates (see [`StorageNames`]).
/// A removal reports as `Err`. Pulls are made inside a bring-up ([`PullStep::Inline`]).
pub async fn run_action<R: Runtime>(
    rt: &R,
    a: Action,
    spec: Option<&ContainerSpec>,
    us: &Us,
    names: &StorageNames,
) -> Result<ComponentReport, RemovalReport> {
    run_action_with(rt, a, spec, us, names, PullStep::Inline).await
}

/// [`run_action`], with the bring-up's pull as `pull` says.
pub async fn run_action_with<R: Runtime>(
    rt: &R,
    a: Action,
    spec: Option<&ContainerSpec>,
    us: &Us,
    names: &StorageNames,
    pull: PullStep,
) -> Result<ComponentReport, RemovalReport> {
    let verb = a.verb();
    let done = |key: ComponentKey, status: Status, id: Option<String>| ComponentReport {
        verb: Some(verb),
        ..ComponentReport::in_sync(key, status, id)
    };
    let failed = |key: ComponentKey, e: ActionError, id: Option<String>| ComponentReport {
        error: Some(e),
        ..done(key, Status::Failed, id)
    };
    match a {
        Action::Remove {
            id,
            name,
            owner,
            reason,
            service_gone,
        } => {
            let error = match rt.remove(&id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => None,
                Err(e) => Some(e),
            };
            if service_gone && error.is_none() {
                // A failure is logged; the sweep of the next pass that makes one tries again.
                let _ = remove_service_network(rt, us, &owner.service).await;
            }
            Err(RemovalReport {
                name,
                owner,
                reason,
                error,
            })
        }
        Action::Conflict { key, id, orphan_of } => Ok(ComponentReport {
            error: Some(match orphan_of {
                Some(registry) => ActionError::Orphan {
                    name: key.container_name(),
                    id,
                    registry,
                },
                None => ActionError::Conflict(id),
            }),
            ..done(key, Status::Conflict, None)
        }),
        Action::ConfigMissing { key, why } => Ok(ComponentReport {
            error: Some(ActionError::ConfigMissing(why)),
            ..done(key, Status::ConfigMissing, None)
        }),
        Action::Wait { key, until, reason } => Ok(ComponentReport {
            wait: Some(reason),
            until: Some(until),
            ..ComponentReport::in_sync(key, Status::Waiting, None)
        }),
        Action::Blocked { key, on, condition } => Ok(ComponentReport {
            error: Some(ActionError::Dependency { on, condition }),
            ..ComponentReport::in_sync(key, Status::Blocked, None)
        }),
        Action::Restart {
            key, id, strays, ..
        } => {
            let restarted = match remove_strays(rt, &key, &strays).await {
                Ok(()) => match rt
                    .stop(
                        &id,
                        spec.map_or(DEFAULT_STOP_TIMEOUT_SECS, ContainerSpec::stop_timeout_secs),
                    )
                    .await
                {
                    Ok(()) => rt.start(&id).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            Ok(match restarted {
                Ok(()) => ComponentReport {
                    recovered: true,
                    ..done(key, Status::Running, Some(id))
                },
                // Gone meanwhile: the next pass makes it anew.
                Err(e) => failed(key, e.into(), Some(id)),
            })
        }
        Action::Stop { key, id, strays } => Ok(match remove_strays(rt, &key, &strays).await {
            Err(e) => failed(key, e.into(), Some(id)),
            // The component's `stop_timeout` (podman's default when it sets none).
            Ok(()) => match rt
                .stop(
                    &id,
                    spec.map_or(DEFAULT_STOP_TIMEOUT_SECS, ContainerSpec::stop_timeout_secs),
                )
                .await
            {
                Ok(()) | Err(RuntimeError::NotFound(_)) => done(key, Status::Stopped, Some(id)),
                Err(e) => failed(key, e.into(), Some(id)),
            },
        }),
        Action::Start { key, id, strays } => {
            let started = match remove_strays(rt, &key, &strays).await {
                Ok(()) => rt.start(&id).await,
                Err(e) => Err(e),
            };
            Ok(match started {
                Ok(()) => ComponentReport {
                    recovered: true,
                    ..done(key, Status::Running, Some(id))
                },
                // Removed by someone else between the list and the start (an outside
                // `rm -f` races its own `die` event): bring up a new one instead.
                Err(RuntimeError::NotFound(_)) => {
                    bring_up_report(rt, key, None, spec, us, Verb::Create, names, pull).await
                }
                Err(e) => failed(key, e.into(), Some(id)),
            })
        }
        Action::Create { key, strays } => Ok(match remove_strays(rt, &key, &strays).await {
            Ok(()) => bring_up_report(rt, key, None, spec, us, verb, names, pull).await,
            Err(e) => failed(key, e.into(), None),
        }),
        Action::Recreate {
            key,
            old_id,
            strays,
            ..
        } => Ok(match remove_strays(rt, &key, &strays).await {
            Ok(()) => bring_up_report(rt, key, Some(old_id), spec, us, verb, names, pull).await,
            Err(e) => failed(key, e.into(), Some(old_id)),
        }),
    }
}

/// Removes other containers labelled for a component before acting on it.
async fn remove_strays<R: Runtime>(
    rt: &R,
    key: &ComponentKey,
    strays: &[String],
) -> Result<(), RuntimeError> {
    for id in strays {
        match rt.remove(id).await {
            Ok(()) => tracing::info!(
                component = %key, id = short(id),
                "removed container {}: a duplicate: labelled as component {key}, which is acted on through its own container {}",
                short(id), key.container_name()
            ),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bring_up_report<R: Runtime>(
    rt: &R,
    key: ComponentKey,
    old: Option<String>,
    spec: Option<&ContainerSpec>,
    us: &Us,
    verb: Verb,
    names: &StorageNames,
    pull: PullStep,
) -> ComponentReport {
    let report = |key: ComponentKey, status: Status, id: Option<String>| ComponentReport {
        verb: Some(verb),
        ..ComponentReport::in_sync(key, status, id)
    };
    let Some(spec) = spec else {
        return ComponentReport {
            error: Some(ActionError::NoSpec),
            ..report(key, Status::Failed, old)
        };
    };
    let mut r = match bring_up(rt, spec, old.as_deref(), us, names, pull).await {
        Ok((id, storage_freed)) => ComponentReport {
            recovered: true,
            storage_freed,
            ..report(key, Status::Running, Some(id))
        },
        Err(e) => {
            let (status, id) = match &e {
                ActionError::ImageMissing(_) | ActionError::PullFailed { .. } => {
                    (Status::ImageMissing, old)
                }
                ActionError::NeedsPull { .. } => (Status::Pulling, old),
                ActionError::VolumeMissing(_) | ActionError::ExternalVolumeMissing(_) => {
                    (Status::VolumeMissing, old)
                }
                ActionError::Conflict(_) | ActionError::Orphan { .. } => (Status::Conflict, None),
                ActionError::NetworkConflict(..) => (Status::NetworkConflict, old),
                _ => (Status::Failed, None),
            };
            ComponentReport {
                error: Some(e),
                ..report(key, status, id)
            }
        }
    };
    r.container = spec.name.clone();
    r
}

/// After the last container of a service that is no longer wanted: its network
/// `mcp-<service>`, if this agent made it and no container is on it. (Each container of
/// the service tries after its own removal, so the last to go finds it unused.)
async fn remove_service_network<R: Runtime>(
    rt: &R,
    us: &Us,
    service: &str,
) -> Result<bool, RuntimeError> {
    let name = crate::model::service_network(service);
    let labels = crate::container::network_labels(us, service, &name);
    let r = rt.remove_network(&name, &labels).await;
    match &r {
        Ok(true) => tracing::info!(network = %name, service, "removed the service's network"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(network = %name, service, error = %e, "could not remove the service's network")
        }
    }
    r
}

/// The networks of services no longer wanted: each `mcp-<service>` this agent made for a
/// service `wanted` does not name (asked again just before each removal: the desired
/// state may change meanwhile), removed unless a container is on it (podman refuses then;
/// once it is the agent's own that goes, its removal takes the network after it). A
/// service removed while its containers were already gone — podman lost them, or an
/// operator removed them — has no container removal to take its network. Returns how
/// many went; an error when podman's networks could not be listed or one could not be
/// removed (for another reason than its use), so that the sweep is made again.
pub async fn sweep_service_networks<R: Runtime>(
    rt: &R,
    us: &Us,
    wanted: impl Fn(&str) -> bool,
) -> Result<usize, RuntimeError> {
    let ours = rt
        .networks(&crate::container::our_network_labels(us))
        .await?;
    let mut removed = 0;
    let mut failed = None;
    for (name, labels) in ours {
        let Some(service) = labels.get(crate::container::LABEL_SERVICE) else {
            continue;
        };
        if wanted(service) || name != crate::model::service_network(service) {
            continue;
        }
        match remove_service_network(rt, us, service).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Create = image check → remove our stale container → network → create (freeing a
/// storage-held name once) → start.
async fn bring_up<R: Runtime>(
    rt: &R,
    spec: &ContainerSpec,
    old: Option<&str>,
    us: &Us,
    names: &StorageNames,
    step: PullStep,
) -> Result<(String, bool), ActionError> {
    if !spec.unallocated.is_empty() {
        return Err(ActionError::NoHostPort(spec.unallocated.clone()));
    }
    let mut local = rt.image_exists(&spec.image).await?;
    let pull = match spec.pull {
        crate::model::PullPolicy::Never => false,
        crate::model::PullPolicy::Missing => !local,
        crate::model::PullPolicy::Always => true,
    };
    match (pull, step) {
        (false, _) => {}
        // Before anything is touched: the old container keeps running meanwhile.
        (true, PullStep::Deferred) => {
            return Err(ActionError::NeedsPull {
                image: spec.image.clone(),
                local,
            })
        }
        // Pulled for this bring-up just now: the store says whether it is there.
        (true, PullStep::Pulled) if !local => {
            return Err(ActionError::PullFailed {
                image: spec.image.clone(),
                reason: "pulled, yet not in the local image store".to_string(),
            })
        }
        (true, PullStep::Pulled) => {}
        (true, PullStep::Failed(reason)) if local => {
            tracing::warn!(image = %spec.image, error = %reason, "pull failed; using the local image")
        }
        (true, PullStep::Failed(reason)) => {
            return Err(ActionError::PullFailed {
                image: spec.image.clone(),
                reason,
            })
        }
        (true, PullStep::Inline) => pull_inline(rt, spec, &mut local).await?,
    }
    if !local {
        return Err(ActionError::ImageMissing(spec.image.clone()));
    }
    host_paths(spec)?;
    external_volumes(rt, spec).await?;
    // Before the old container goes: a network found with other options than the file's
    // fails the component with the old container left as it is.
    let service = spec.labels.get(crate::container::LABEL_SERVICE);
    for n in std::iter::once(&spec.network).chain(spec.endpoints.iter().skip(1).map(|e| &e.network))
    {
        let labels = crate::container::network_labels(us, service.map_or("", String::as_str), n);
        match rt
            .ensure_network(n, spec.network_options.get(n), &labels)
            .await
        {
            Ok(()) => {}
            Err(RuntimeError::NetworkMismatch {
                network,
                difference,
            }) => return Err(ActionError::NetworkConflict(network, difference)),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(old) = old {
        // A component with a `stop_timeout` gets its stop before the old container goes
        // (a forced removal would wait the old container's own timeout instead).
        if spec.settings.stop_timeout.is_some() {
            match rt.stop(old, spec.stop_timeout_secs()).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match rt.remove(old).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !spec.volume_dirs.is_empty() {
        crate::volumes::ensure(&spec.volume_dirs, spec.user.as_deref())
            .map_err(ActionError::Volume)?;
    }
    let attempt = names.before_create(&spec.name).await;
    let mut storage_freed = attempt.freed;
    let id = match rt.create(spec).await {
        Ok(id) => {
            drop(attempt);
            id
        }
        Err(RuntimeError::NameInUse { .. }) => {
            match rt.holder(&spec.name).await? {
                // Someone holds the name through the API: ours (a leftover) is replaced,
                // anything else is never touched.
                Some((id, labels)) => {
                    drop(attempt);
                    match owner(&id, &labels, us) {
                        Owner::Ours { .. } => match rt.remove(&id).await {
                            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                            Err(e) => return Err(e.into()),
                        },
                        Owner::Orphan { registry, .. } => {
                            return Err(ActionError::Orphan {
                                name: spec.name.clone(),
                                registry: plan::orphan_registry(registry).to_string(),
                                id,
                            })
                        }
                        _ => return Err(ActionError::Conflict(id)),
                    }
                }
                // Invisible to the API, its container seen going away: podman is still
                // finishing the removal. The create is tried again shortly, and the
                // storage remedy only if the name stays held.
                None if names.was_going(&spec.name) => match retry_create(rt, spec).await {
                    Ok(id) => {
                        drop(attempt);
                        rt.start(&id).await?;
                        return Ok((id, storage_freed));
                    }
                    Err(RuntimeError::NameInUse { .. }) => {
                        names.free(rt, &spec.name, attempt).await?;
                        storage_freed = true;
                    }
                    Err(e) => return Err(e.into()),
                },
                // Invisible to the API: held by container storage after podman's database
                // was lost. Only the CLI can free it.
                None => {
                    names.free(rt, &spec.name, attempt).await?;
                    storage_freed = true;
                }
            }
            rt.create(spec).await?
        }
        Err(e) => return Err(e.into()),
    };
    rt.start(&id).await?;
    Ok((id, storage_freed))
}

/// The pull inside a bring-up ([`PullStep::Inline`]); `local` becomes true once the
/// image is there.
async fn pull_inline<R: Runtime>(
    rt: &R,
    spec: &ContainerSpec,
    local: &mut bool,
) -> Result<(), ActionError> {
    tracing::info!(image = %spec.image, container = %spec.name, "pulling the image");
    let progress = tokio::sync::watch::Sender::new(String::new());
    match rt.pull(&spec.image, &progress).await {
        Ok(()) => *local = true,
        Err(e) if e.is_unavailable() => return Err(e.into()),
        // `always` with the image in the store: the pull failed, the local one serves.
        Err(e) if *local => {
            tracing::warn!(image = %spec.image, error = %e, "pull failed; using the local image")
        }
        Err(e) => {
            return Err(ActionError::PullFailed {
                image: spec.image.clone(),
                reason: e.to_string(),
            })
        }
    }
    Ok(())
}

/// The create again after 5 ms, doubling, while the name is in use and no container the
/// API can see holds it (podman finishing a removal); the last answer.
async fn retry_create<R: Runtime>(rt: &R, spec: &ContainerSpec) -> Result<String, RuntimeError> {
    let mut delay = std::time::Duration::from_millis(5);
    let mut last = Err(RuntimeError::NameInUse {
        name: spec.name.clone(),
    });
    for _ in 0..NAME_RETRIES {
        tokio::time::sleep(delay).await;
        delay *= 2;
        last = rt.create(spec).await;
        match &last {
            Err(RuntimeError::NameInUse { .. }) if rt.holder(&spec.name).await?.is_none() => {}
            _ => break,
        }
    }
    last
}

/// Every volume's host path exists before the container is made: podman would create a
/// missing one empty (and the service would run on no data). One with `create_host_path`
/// is created, a directory owned by the component's user. Named volumes (a source
/// without a leading slash) are the agent's own directories, made by
/// [`crate::volumes::ensure`]: not checked here.
fn host_paths(spec: &ContainerSpec) -> Result<(), ActionError> {
    for bind in &spec.volumes {
        let source = bind.split(':').next().unwrap_or_default();
        if !source.starts_with('/') {
            continue;
        }
        if std::fs::symlink_metadata(source).is_ok() {
            continue;
        }
        if !spec.create_host_paths.iter().any(|p| p == source) {
            return Err(ActionError::VolumeMissing(source.to_string()));
        }
        crate::hostpath::create(std::path::Path::new(source), spec.user.as_deref())
            .map_err(|e| ActionError::HostPath(source.to_string(), e))?;
        tracing::info!(container = %spec.name, path = source, "created volume host path");
    }
    Ok(())
}

/// Every external volume is podman's before the container is made: podman would create a
/// missing one, empty, and the service would run on no data. The agent never creates one.
async fn external_volumes<R: Runtime>(rt: &R, spec: &ContainerSpec) -> Result<(), ActionError> {
    for podman in spec.external_volumes.values() {
        if !rt.volume_exists(podman).await? {
            return Err(ActionError::ExternalVolumeMissing(podman.clone()));
        }
    }
    Ok(())
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests;
