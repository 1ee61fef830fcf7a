//! Pulls as work of their own (docs/design.md §5.1, issue 13 §7): a bring-up that needs
//! a pull ends at once `pulling`, without touching anything; the image is pulled by a
//! `Pull(image)` key with `[podman] pull_concurrency` slots of its own — one pull per
//! image however many components use it — while the bring-up slots serve the others.
//! The pull's progress is the waiting components' status; its end plans them again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::work::{Work, NORMAL};
use super::{Agent, Mode};
use crate::container::ComponentKey;
use crate::plan::{self, Verb};
use crate::reconcile::{ActionError, ComponentReport, PullStep, Status};
use crate::runtime::{Runtime, RuntimeError};

/// The waiting components' status shows the pull's progress at most this often (it is
/// written only when the text shown changes).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A pull of an image that ended well this recently serves a bring-up that looked for the
/// image before it ended: not pulled twice.
const RECENT_PULL: Duration = Duration::from_secs(5);

/// A pull waiting or under way, and the components waiting for it.
#[derive(Debug)]
pub(super) struct PullWait {
    pub(super) waiters: BTreeMap<ComponentKey, Waiter>,
    /// The latest progress line shown.
    pub(super) progress: Option<String>,
    pub(super) since: Instant,
}

/// What a waiting component's bring-up is, for its report when the pull fails.
#[derive(Debug, Clone)]
pub(super) struct Waiter {
    verb: Verb,
    /// The image is local (`pull = "always"`): a failed pull falls back to it.
    local: bool,
    container_id: Option<String>,
}

/// What `--once` pulled.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub image: String,
    /// The components that waited for it.
    pub components: Vec<ComponentKey>,
    /// How long it took, or why it failed.
    pub result: Result<Duration, String>,
}

/// The status text of a component waiting for a pull.
fn detail(image: &str, progress: Option<&str>) -> String {
    match progress {
        Some(p) => format!("pulling {image}: {p}"),
        None => format!("pulling {image}"),
    }
}

impl<R: Runtime + 'static> Agent<R> {
    /// A bring-up found that its image must be pulled first (`r` is `pulling`): the
    /// component waits for the image's pull, which is asked for unless it is waiting or
    /// under way already.
    pub(super) fn await_pull(&mut self, r: ComponentReport) {
        let Some(ActionError::NeedsPull { image, local }) = r.error.clone() else {
            return;
        };
        let key = r.key.clone();
        let now = Instant::now();
        if self
            .pulled_at
            .get(&image)
            .is_some_and(|t| now.saturating_duration_since(*t) < RECENT_PULL)
        {
            self.pull_steps.insert(key.clone(), PullStep::Pulled);
            self.readmit(&HashSet::from([key]));
            return;
        }
        let wait = self.pulls.entry(image.clone()).or_insert_with(|| PullWait {
            waiters: BTreeMap::new(),
            progress: None,
            since: now,
        });
        wait.waiters.insert(
            key.clone(),
            Waiter {
                verb: r.verb.unwrap_or(Verb::Create),
                local,
                container_id: r.container_id.clone(),
            },
        );
        let shown = detail(&image, wait.progress.as_deref());
        self.awaiting_pull.insert(key.clone(), image.clone());
        let w = Work::Pull(image);
        if !self.sched.is_running(&w) && !self.sched.is_waiting(&w) {
            self.sched.schedule(w, NORMAL, now);
        }
        self.note(
            &key,
            Status::Pulling,
            Some(shown),
            r.container_id.clone(),
            false,
            false,
        );
        if self.mode == Mode::Once {
            self.report.pass.components.push(r);
        }
    }

    /// Whether the planned action `a` is the bring-up a pull under way is for: it waits
    /// for the pull instead of running again.
    pub(super) fn waits_for_pull(&self, a: &crate::plan::Action) -> bool {
        a.brings_up()
            && self.awaiting_pull.get(a.key()).is_some_and(|image| {
                self.specs
                    .get(a.key())
                    .is_some_and(|spec| spec.image == *image)
            })
    }

    /// `key` no longer waits for a pull (the plan has something else for it, or nothing).
    pub(super) fn forget_pull_wait(&mut self, key: &ComponentKey) {
        let Some(image) = self.awaiting_pull.remove(key) else {
            return;
        };
        if let Some(p) = self.pulls.get_mut(&image) {
            p.waiters.remove(key);
        }
    }

    /// The pull of `image` was dropped (at shutdown, or when `--once` ran out of time):
    /// nothing waits for it any more; the components keep the status it gave them.
    pub(super) fn drop_pull(&mut self, image: &str) {
        if let Some(p) = self.pulls.remove(image) {
            for key in p.waiters.keys() {
                if self.awaiting_pull.get(key).is_some_and(|i| i == image) {
                    self.awaiting_pull.remove(key);
                }
            }
        }
    }

    /// The pull of `image` says how far it is: the waiting components' status shows it
    /// (written when the text changes; the pull's task sends at most one a second).
    pub(super) fn on_pull_progress(&mut self, image: &str, line: String) {
        let Some(p) = self.pulls.get_mut(image) else {
            return;
        };
        if line.is_empty() || p.progress.as_deref() == Some(line.as_str()) {
            return;
        }
        let shown = detail(image, Some(&line));
        p.progress = Some(line);
        let waiters: Vec<(ComponentKey, Option<String>)> = p
            .waiters
            .iter()
            .map(|(k, w)| (k.clone(), w.container_id.clone()))
            .collect();
        for (key, id) in waiters {
            self.note(&key, Status::Pulling, Some(shown.clone()), id, false, false);
        }
    }

    /// The pull of `image` ended. Pulled: its components are planned at once (from the
    /// last list) and brought up in bring-up slots. Failed: each is `image-missing` with
    /// the registry's reason, an attempt under its backoff — or, with `pull = "always"`
    /// and the image local, brought up with the local image. Podman not answering is no
    /// attempt: its health decides, then a pass.
    pub(super) fn on_pulled(&mut self, image: &str, r: Result<(), RuntimeError>) {
        let Some(p) = self.pulls.remove(image) else {
            return;
        };
        let now = Instant::now();
        for key in p.waiters.keys() {
            if self.awaiting_pull.get(key).is_some_and(|i| i == image) {
                self.awaiting_pull.remove(key);
            }
        }
        let took = now.saturating_duration_since(p.since);
        if self.mode == Mode::Once {
            self.report.pulls.push(PullReport {
                image: image.to_string(),
                components: p.waiters.keys().cloned().collect(),
                result: r.as_ref().map(|_| took).map_err(|e| e.to_string()),
            });
        }
        let components = p
            .waiters
            .keys()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        match r {
            Ok(()) => {
                tracing::info!(image, components = %components, took_ms = took.as_millis() as u64, "pulled the image");
                self.pulled_at
                    .retain(|_, t| now.saturating_duration_since(*t) < RECENT_PULL);
                self.pulled_at.insert(image.to_string(), now);
                let keys: HashSet<ComponentKey> = p.waiters.into_keys().collect();
                for k in &keys {
                    self.pull_steps.insert(k.clone(), PullStep::Pulled);
                }
                self.readmit(&keys);
            }
            Err(e) => {
                if !e.is_unavailable() {
                    tracing::warn!(image, components = %components, error = %e, "pull failed");
                }
                let reason = e.to_string();
                let mut fall_back = HashSet::new();
                for (key, w) in p.waiters {
                    if w.local && !e.is_unavailable() {
                        self.pull_steps
                            .insert(key.clone(), PullStep::Failed(reason.clone()));
                        fall_back.insert(key);
                        continue;
                    }
                    let (status, error) = if e.is_unavailable() {
                        (Status::Failed, ActionError::Runtime(e.clone()))
                    } else {
                        (
                            Status::ImageMissing,
                            ActionError::PullFailed {
                                image: image.to_string(),
                                reason: reason.clone(),
                            },
                        )
                    };
                    let report = ComponentReport {
                        verb: Some(w.verb),
                        error: Some(error),
                        container: self
                            .specs
                            .get(&key)
                            .map_or_else(|| key.container_name(), |s| s.name.clone()),
                        ..ComponentReport::in_sync(key.clone(), status, w.container_id)
                    };
                    let requeue = self.on_done(key.clone(), Ok(report));
                    self.requeue(Work::Component(key), requeue);
                }
                if !fall_back.is_empty() {
                    self.readmit(&fall_back);
                }
            }
        }
    }

    /// The bring-ups of `keys`, planned now from the last list (which the agent's own
    /// operations keep up to date), as [`Agent::advance_blocked`] does; without a list, a
    /// pass. What is not planned again drops the pull's outcome kept for it.
    fn readmit(&mut self, keys: &HashSet<ComponentKey>) {
        if self.podman.up != Some(true) || self.last_actual.is_none() {
            for k in keys {
                self.pull_steps.remove(k);
            }
            self.want_progress("pulled");
            return;
        }
        let actual = self.last_actual.take().unwrap_or_default();
        let now = Instant::now();
        let p = plan::plan(&self.desired, &actual, &self.us, &self.book, now);
        let mut pending = std::mem::take(&mut self.pending);
        for a in p.actions {
            let key = a.key().clone();
            if keys.contains(&key)
                && a.brings_up()
                && !pending.contains_key(&key)
                && !self.sched.is_running(&Work::Component(key.clone()))
            {
                self.admit(a, &actual, now, &mut pending);
            }
        }
        for k in keys {
            if !pending.contains_key(k) && !self.sched.is_running(&Work::Component(k.clone())) {
                self.pull_steps.remove(k);
            }
        }
        self.pending = pending;
        self.last_actual = Some(actual);
    }

    /// The outcome of a pull kept for `key`'s bring-up about to start; without one, a
    /// pull it needs is the agent's work ([`PullStep::Deferred`]).
    pub(super) fn take_pull_step(&mut self, key: &ComponentKey) -> PullStep {
        self.pull_steps.remove(key).unwrap_or(PullStep::Deferred)
    }
}

/// Pulls `image`, sending the latest progress line to the loop when it changed, at most
/// every [`PROGRESS_EVERY`].
pub(super) async fn pull_reporting<R: Runtime>(
    rt: &R,
    image: &str,
    to: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> Result<(), RuntimeError> {
    let progress = tokio::sync::watch::Sender::new(String::new());
    let mut seen = progress.subscribe();
    let pull = rt.pull(image, &progress);
    tokio::pin!(pull);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            r = &mut pull => return r,
            _ = tick.tick() => {
                if seen.has_changed().unwrap_or(false) {
                    let line = seen.borrow_and_update().clone();
                    let _ = to.send((image.to_string(), line));
                }
            }
        }
    }
}
