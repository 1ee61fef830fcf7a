//! One reconcile pass (docs/design.md §4): desired state from the registry, one list of the actual
//! containers, the pure plan, then its execution with bounded concurrency.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::container::{owner, ComponentKey, ContainerSpec, Owner, Us, DEFAULT_STOP_TIMEOUT_SECS};
use crate::plan::{self, Action, Book, Desired, InSync, Plan, Verb, WaitReason};
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
    /// Its name is held by a container that is not ours.
    Conflict,
    /// An env file or secret of it is missing or unreadable.
    ConfigMissing,
    Failed,
    /// Held back by backoff, or left to podman's restart policy for a moment.
    Waiting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Transient => "transient",
            Status::ImageMissing => "image-missing",
            Status::Conflict => "conflict",
            Status::ConfigMissing => "config-missing",
            Status::Failed => "failed",
            Status::Waiting => "backing-off",
        }
    }

    /// Whether the component failed to reach its desired state.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::ImageMissing | Status::Conflict | Status::ConfigMissing | Status::Failed
        )
    }
}

/// Why an action did not bring its component to the desired state. Never holds env
/// values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("image {0} is not in the local image store (pull = \"never\"); load it, e.g. with podman load, or set pull = \"missing\"")]
    ImageMissing(String),
    #[error("a container of that name without our labels exists (id {}); left alone", short(.0))]
    Conflict(String),
    /// Names the file and why, never what it holds.
    #[error("{0}; retried at every pass")]
    ConfigMissing(String),
    #[error("{0}")]
    Volume(String),
    /// The pull of a missing image failed: `image-missing`, retried with backoff.
    #[error("image {image} is not in the local image store and its pull failed: {reason}")]
    PullFailed { image: String, reason: String },
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
    /// When the plan said to look again (waits).
    pub until: Option<Instant>,
}

impl ComponentReport {
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
    pub owner: ComponentKey,
    pub error: Option<RuntimeError>,
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
                Status::Conflict | Status::ConfigMissing | Status::Failed => s.failed += 1,
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
                None => "removed: no longer in the registry".to_string(),
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
                    },
                    c.recovered,
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
                let spec = ContainerSpec::build_with(us, &s.name, c, loaded, host);
                (
                    Desired {
                        key,
                        container_name: spec.name.clone(),
                        spec_hash: spec.spec_hash().to_string(),
                        state: c.desired_state,
                        restart: c.restart,
                        blocked,
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
        let status = match sync {
            InSync::Running => Status::Running,
            InSync::Stopped => Status::Stopped,
            InSync::Transient => Status::Transient,
        };
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
/// call for a whole pass instead of one per container (a podman process start each): the
/// first create of the pass that finds its name held there frees, with its own, the names
/// of every create of the pass not yet attempted that the API cannot see either (after a
/// database loss, that is all of them). Those creates wait for that call; a name is never
/// freed while a create of ours for it is under way.
#[derive(Debug, Default)]
pub struct StorageNames {
    /// Names of the pass's creates not yet attempted.
    pending: std::sync::Mutex<BTreeSet<String>>,
    /// Names freed this pass; its lock is held for the duration of a batch.
    freed: tokio::sync::Mutex<HashSet<String>>,
}

/// Names per CLI call, to keep the argv short.
const NAMES_PER_CALL: usize = 100;

impl StorageNames {
    /// A create of this pass, not yet attempted.
    pub fn add(&self, name: &str) {
        self.pending.lock().unwrap().insert(name.to_string());
    }

    /// Called before a create of `name`: takes it off the pending names, or, if a batch
    /// already took it, waits until that batch is done.
    async fn before_create(&self, name: &str) {
        if !self.pending.lock().unwrap().remove(name) {
            drop(self.freed.lock().await);
        }
    }

    /// Frees `name` (held by storage, invisible to the API) and every pending name that
    /// the API cannot see either.
    async fn free<R: Runtime>(&self, rt: &R, name: &str) -> Result<(), RuntimeError> {
        let mut freed = self.freed.lock().await;
        if freed.contains(name) {
            return Ok(());
        }
        let others: Vec<String> = std::mem::take(&mut *self.pending.lock().unwrap())
            .into_iter()
            .collect();
        let mut batch = vec![name.to_string()];
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

/// Carries out one action; `spec` is the desired container of the action's component
/// (needed by create and recreate), `names` the pass's creates (see [`StorageNames`]).
/// A removal reports as `Err`.
pub async fn run_action<R: Runtime>(
    rt: &R,
    a: Action,
    spec: Option<&ContainerSpec>,
    us: &Us,
    names: &StorageNames,
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
        Action::Remove { id, name, owner } => {
            let error = match rt.remove(&id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => None,
                Err(e) => Some(e),
            };
            Err(RemovalReport { name, owner, error })
        }
        Action::Conflict { key, id } => Ok(ComponentReport {
            error: Some(ActionError::Conflict(id)),
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
        Action::Stop { key, id, strays } => Ok(match remove_strays(rt, &strays).await {
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
            let started = match remove_strays(rt, &strays).await {
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
                    bring_up_report(rt, key, None, spec, us, Verb::Create, names).await
                }
                Err(e) => failed(key, e.into(), Some(id)),
            })
        }
        Action::Create { key, strays } => Ok(match remove_strays(rt, &strays).await {
            Ok(()) => bring_up_report(rt, key, None, spec, us, verb, names).await,
            Err(e) => failed(key, e.into(), None),
        }),
        Action::Recreate {
            key,
            old_id,
            strays,
            ..
        } => Ok(match remove_strays(rt, &strays).await {
            Ok(()) => bring_up_report(rt, key, Some(old_id), spec, us, verb, names).await,
            Err(e) => failed(key, e.into(), Some(old_id)),
        }),
    }
}

/// Removes other containers labelled for a component before acting on it.
async fn remove_strays<R: Runtime>(rt: &R, strays: &[String]) -> Result<(), RuntimeError> {
    for id in strays {
        match rt.remove(id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn bring_up_report<R: Runtime>(
    rt: &R,
    key: ComponentKey,
    old: Option<String>,
    spec: Option<&ContainerSpec>,
    us: &Us,
    verb: Verb,
    names: &StorageNames,
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
    let mut r = match bring_up(rt, spec, old.as_deref(), us, names).await {
        Ok(id) => ComponentReport {
            recovered: true,
            ..report(key, Status::Running, Some(id))
        },
        Err(e) => {
            let (status, id) = match &e {
                ActionError::ImageMissing(_) | ActionError::PullFailed { .. } => {
                    (Status::ImageMissing, old)
                }
                ActionError::Conflict(_) => (Status::Conflict, None),
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

/// Create = image check → remove our stale container → network → create (freeing a
/// storage-held name once) → start.
async fn bring_up<R: Runtime>(
    rt: &R,
    spec: &ContainerSpec,
    old: Option<&str>,
    us: &Us,
    names: &StorageNames,
) -> Result<String, ActionError> {
    if !spec.unallocated.is_empty() {
        return Err(ActionError::NoHostPort(spec.unallocated.clone()));
    }
    let mut local = rt.image_exists(&spec.image).await?;
    let pull = match spec.pull {
        crate::model::PullPolicy::Never => false,
        crate::model::PullPolicy::Missing => !local,
        crate::model::PullPolicy::Always => true,
    };
    if pull {
        tracing::info!(image = %spec.image, container = %spec.name, "pulling the image");
        match rt.pull(&spec.image).await {
            Ok(()) => local = true,
            Err(e) if e.is_unavailable() => return Err(e.into()),
            // `always` with the image in the store: the pull failed, the local one serves.
            Err(e) if local => {
                tracing::warn!(image = %spec.image, error = %e, "pull failed; using the local image")
            }
            Err(e) => {
                return Err(ActionError::PullFailed {
                    image: spec.image.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }
    if !local {
        return Err(ActionError::ImageMissing(spec.image.clone()));
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
    rt.ensure_network(&spec.network).await?;
    for e in spec.endpoints.iter().skip(1) {
        rt.ensure_network(&e.network).await?;
    }
    if !spec.volume_dirs.is_empty() {
        crate::volumes::ensure(&spec.volume_dirs, spec.user.as_deref())
            .map_err(ActionError::Volume)?;
    }
    names.before_create(&spec.name).await;
    let id = match rt.create(spec).await {
        Ok(id) => id,
        Err(RuntimeError::NameInUse { .. }) => {
            match rt.holder(&spec.name).await? {
                // Someone holds the name through the API: ours (a leftover) is replaced,
                // anything else is never touched.
                Some((id, labels)) => match owner(&id, &labels, us) {
                    Owner::Ours { .. } => match rt.remove(&id).await {
                        Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    },
                    _ => return Err(ActionError::Conflict(id)),
                },
                // Invisible to the API: held by container storage after podman's database
                // was lost. Only the CLI can free it.
                None => names.free(rt, &spec.name).await?,
            }
            rt.create(spec).await?
        }
        Err(e) => return Err(e.into()),
    };
    rt.start(&id).await?;
    Ok(id)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests;
