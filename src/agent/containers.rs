//! The containers' part of the loop: a pass's plan turned into keyed work, podman's
//! events read for what they mean to the plan, and each operation's outcome recorded —
//! status, backoff, the next pass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::work::{Listed, Work, NORMAL, SOON, URGENT};
use super::{Agent, Mode, Suspect, LIST_RETRY, RESTART_GRACE};
use crate::config::Config;
use crate::container::{owner, ComponentKey, Owner};
use crate::control::{BackoffPolicy, Requeue};
use crate::plan::{self, Action, InSync, Verb};
use crate::reconcile::{ActionError, ComponentReport, RemovalReport, Status, StorageNames};
use crate::runtime::{Event, Runtime};

/// How often `--once` lists again while a one-shot component runs.
const ONCE_RELIST: Duration = Duration::from_millis(200);

/// The components' backoff, from `[reconcile]`.
pub(super) fn policy(config: &Config) -> BackoffPolicy {
    let r = &config.reconcile;
    BackoffPolicy {
        initial: r.backoff_initial,
        max: r.backoff_max,
        multiplier: r.backoff_multiplier.0,
        reset_after: r.stable_after,
        jitter: true,
    }
}

impl<R: Runtime + 'static> Agent<R> {
    /// A podman event: returns whether it can mean work (a container of ours, or one
    /// holding a name we want).
    pub(super) fn on_event(&mut self, ev: &Event) -> bool {
        let ours = match owner(&ev.id, &ev.labels, &self.us) {
            Owner::Ours { .. } => true,
            // A foreign container leaving may free one of our names.
            _ => self.desired.iter().any(|d| d.container_name == ev.name),
        };
        if !ours {
            return false;
        }
        if ev.action == "die" {
            self.book.died_at.insert(ev.id.clone(), Instant::now());
        }
        // Someone removed the container the agent last brought up: that was not a
        // failed attempt, so its replacement need not wait out the backoff.
        if ev.action == "remove"
            && matches!(owner(&ev.id, &ev.labels, &self.us), Owner::Ours { .. })
        {
            self.storage_names.going_away(&ev.name);
        }
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
        true
    }

    /// The main process of a watched container exited (its pidfd): as a `die` event,
    /// only sooner. Podman may not have noticed yet; the pass looks again shortly if it
    /// still lists the container running.
    pub(super) fn on_death(&mut self, died: &crate::runtime::deaths::Died) {
        let id = died.id.as_str();
        let key = self.last_actual.as_ref().and_then(|list| {
            let a = list.iter().find(|a| a.id == id)?;
            match owner(&a.id, &a.labels, &self.us) {
                Owner::Ours {
                    service, component, ..
                } => Some(ComponentKey::new(service, component)),
                _ => None,
            }
        });
        let Some(key) = key else { return };
        // The agent's own stop or recreate: nothing to repair.
        if self.operating.contains(&key) {
            return;
        }
        tracing::debug!(trigger = "pidfd", component = %key, crashed = died.crashed, "main process exited");
        self.storage_names.going_away(&key.container_name());
        self.book.died_at.insert(id.to_string(), Instant::now());
        self.suspects
            .insert(id.to_string(), Suspect::new(Instant::now(), died.crashed));
        self.want_pass("pidfd");
    }

    /// After a pass: watch every running container of ours that has no watch yet, drop
    /// the watches of the others, and look again soon at those whose death podman has
    /// not finished with (still `running`, or `stopping`/`removing`): 5 ms, doubling, up
    /// to 7 times (≈ 0.6 s in all); then podman's events decide.
    fn watch_deaths(&mut self, actual: &[crate::runtime::Actual], asked: Instant) {
        let Some(deaths) = self.deaths.clone() else {
            return;
        };
        let mut running = HashSet::new();
        let mut again: Option<Duration> = None;
        let mut seen = HashSet::new();
        for a in actual {
            if !matches!(owner(&a.id, &a.labels, &self.us), Owner::Ours { .. }) {
                continue;
            }
            let transient = matches!(a.state, crate::runtime::State::Other(_));
            if a.state.is_up() {
                running.insert(a.id.as_str());
            }
            if let Some(s) = self.suspects.get_mut(&a.id) {
                if a.state.is_up() && asked >= s.since {
                    s.crashed = true;
                }
                if (a.state.is_up() || transient) && s.tries < 7 {
                    let delay = Duration::from_millis(5 << s.tries);
                    s.tries += 1;
                    again = Some(again.map_or(delay, |d| d.min(delay)));
                    seen.insert(a.id.as_str());
                } else if s.exited_at.is_some() {
                    // Its start waits for the confirming list (see `confirm_starts`).
                    seen.insert(a.id.as_str());
                }
            } else if a.state.is_up() {
                deaths.watch_running(&self.ctx.runtime, &a.id);
            }
        }
        // A suspect gone from the list, exited, or looked at enough is the plan's now.
        self.suspects.retain(|id, _| seen.contains(id.as_str()));
        deaths.retain(|id| running.contains(id));
        if let Some(d) = again {
            self.sched.schedule(Work::List, URGENT, Instant::now() + d);
        }
    }

    /// Whether the plan's start of container `id` goes ahead now. A container whose death
    /// podman's database showed to be a crash (read at the pidfd) is started at once. Any
    /// other whose death only its pidfd told is started once a list [`START_CONFIRM`] after the first that
    /// showed it exited still shows it so — and, unless a list showed it running after
    /// the death (a crash), [`STOP_CONFIRM`] after the death: a `podman rm -f` kills
    /// first and removes after, and a start in between would race podman's removal.
    fn confirm_start(&mut self, id: &str, now: Instant) -> bool {
        let Some(s) = self.suspects.get_mut(id) else {
            return true;
        };
        if s.exited_at.is_none() && !s.confirmed {
            tracing::debug!(
                container = %crate::reconcile::short(id),
                crashed = s.crashed,
                "exited after its pidfd told; the start waits for a confirming list"
            );
        }
        let exited_at = *s.exited_at.get_or_insert(now);
        let at = s.start_at(exited_at);
        if now < at {
            self.sched.schedule(Work::List, URGENT, at);
            return false;
        }
        self.suspects.remove(id);
        true
    }

    /// A pass: plan from the list, and make the plan's actions the components' work.
    pub(super) fn on_listed(&mut self, listed: Listed) -> Requeue {
        self.passes += 1;
        self.synced = true;
        if let Some(due) = listed.swept {
            self.networks_swept = self.networks_swept.max(due);
        }
        if self.mode == Mode::Once {
            self.report.moved = listed.moved;
        }
        if let Some(s) = listed.services {
            self.set_services(s);
        }
        // An edited env file or a rotated secret is a new spec for its component.
        if listed.files != self.files {
            self.files = listed.files;
            self.rebuild_specs();
        }
        let now = Instant::now();
        let horizon = RESTART_GRACE * 10;
        self.book
            .died_at
            .retain(|_, t| now.saturating_duration_since(*t) < horizon);
        // Restarts asked for containers that are gone are moot.
        if !self.book.restart.is_empty() {
            let ids: HashSet<&str> = listed.actual.iter().map(|a| a.id.as_str()).collect();
            self.book.restart.retain(|id, _| ids.contains(id.as_str()));
        }
        let p = plan::plan(&self.desired, &listed.actual, &self.us, &self.book, now);
        let running: Vec<(ComponentKey, String)> = p
            .in_sync
            .iter()
            .filter(|(_, sync, _)| *sync == InSync::Running)
            .map(|(k, _, id)| (k.clone(), id.clone()))
            .collect();
        for (key, sync, _) in &p.in_sync {
            if *sync == InSync::Completed {
                self.completed(key);
            }
        }
        for (key, sync, id) in p.in_sync {
            if sync == InSync::Running {
                self.backoffs.observed_ok(&key, now);
                if self.backoffs.attempts(&key) == 0 {
                    self.book.retry_at.remove(&key);
                }
            }
            if self.sched.is_running(&Work::Component(key.clone())) {
                continue;
            }
            // In sync: a pull it waited for is no longer its business.
            self.forget_pull_wait(&key);
            let status = Status::from(sync);
            let id = (!id.is_empty()).then_some(id);
            if self.mode == Mode::Once {
                self.report.pass.components.push(ComponentReport::in_sync(
                    key.clone(),
                    status,
                    id.clone(),
                ));
            }
            self.note(&key, status, None, id, false, false);
        }
        let mut pending = HashMap::with_capacity(p.actions.len());
        for a in p.actions {
            let key = a.key().clone();
            if self.sched.is_running(&Work::Component(key.clone())) || pending.contains_key(&key) {
                // Planned again once the operation under way is done.
                self.deferred.insert(key);
                continue;
            }
            self.admit(a, &listed.actual, now, &mut pending);
        }
        // What the last plan wanted and this one does not is no longer to be done.
        for key in self.pending.keys() {
            if !pending.contains_key(key) {
                self.sched.cancel(&Work::Component(key.clone()));
                self.storage_names.forget(&key.container_name());
            }
        }
        self.pull_steps.retain(|k, _| pending.contains_key(k));
        self.pending = pending;
        self.watch_deaths(&listed.actual, listed.asked);
        self.track_health(&running, &listed.actual);
        // `--once` has no events: a one-shot component running is looked at again soon.
        if self.mode == Mode::Once && running.iter().any(|(k, _)| self.oneshots.contains(k)) {
            self.sched.schedule(Work::List, URGENT, now + ONCE_RELIST);
        }
        self.last_actual = Some(listed.actual);
        self.sched.schedule(Work::Routes, SOON, now);
        if self.mode == Mode::Daemon {
            self.count_pass();
        }
        // Events, the registry, timers and the resync ask for the next pass.
        Requeue::OnChange
    }

    /// A planned action becomes the component's work (queued in `pending`), a wait, or —
    /// in `--once`, for a one-shot component that already ran — a failure reported.
    pub(super) fn admit(
        &mut self,
        a: Action,
        actual: &[crate::runtime::Actual],
        now: Instant,
        pending: &mut HashMap<ComponentKey, (Action, Arc<StorageNames>)>,
    ) {
        let key = a.key().clone();
        let work = Work::Component(key.clone());
        let names = self.storage_names.clone();
        // Its bring-up waits for the pull under way; anything else ends that wait.
        if self.waits_for_pull(&a) {
            return;
        }
        self.forget_pull_wait(&key);
        if let Action::Start { id, .. } = &a {
            if !self.confirm_start(id, now) {
                return;
            }
        }
        // `--once` runs a one-shot component once: exited non-zero, it has failed.
        if self.mode == Mode::Once && a.brings_up() && self.ran_once.contains(&key) {
            let code = actual
                .iter()
                .find(|x| x.name == key.container_name())
                .and_then(|x| x.exit_code);
            self.report.pass.components.push(ComponentReport {
                error: Some(ActionError::Unmet(match code {
                    Some(c) => format!("one-shot component exited with code {c}"),
                    None => "one-shot component did not complete".to_string(),
                })),
                ..ComponentReport::in_sync(key.clone(), Status::Failed, None)
            });
            return;
        }
        if self.mode == Mode::Once && a.brings_up() && self.oneshots.contains(&key) {
            self.ran_once.insert(key.clone());
        }
        if let Action::Wait { until, .. } = &a {
            let until = *until;
            self.sched.schedule(Work::List, URGENT, until);
            self.note_waiting(&key, until);
            return;
        }
        if let (Action::Create { .. }, Some(spec)) = (&a, self.specs.get(&key)) {
            names.add(&spec.name);
        }
        let priority = if a.brings_up() { NORMAL } else { SOON };
        self.sched.schedule(work, priority, now);
        pending.insert(key, (a, names));
    }

    /// Progress that others may wait on (a check passed, a component brought up, a
    /// one-shot component done): the components the last pass held back are planned at
    /// once from the last list, which the agent's own operations keep up to date
    /// ([`Agent::remember`]), besides the fresh pass asked for. Under load a list takes up
    /// to half a second, and every link of a dependency chain would wait for one. Only
    /// bring-ups of components shown waiting, with nothing under way or queued for them:
    /// a container someone else made or removed since makes that operation fail as a
    /// conflict or as gone, and the fresh pass mends it.
    pub(super) fn advance_blocked(&mut self) {
        if self.podman.up != Some(true) {
            return;
        }
        let blocked: HashSet<ComponentKey> = self
            .status
            .iter()
            .filter(|(_, (s, ..))| *s == Status::Blocked)
            .map(|(k, _)| k.clone())
            .collect();
        if blocked.is_empty() {
            return;
        }
        let Some(actual) = self.last_actual.take() else {
            return;
        };
        let now = Instant::now();
        let p = plan::plan(&self.desired, &actual, &self.us, &self.book, now);
        let mut pending = std::mem::take(&mut self.pending);
        for a in p.actions {
            let key = a.key();
            if a.brings_up()
                && blocked.contains(key)
                && !pending.contains_key(key)
                && !self.sched.is_running(&Work::Component(key.clone()))
            {
                tracing::debug!(component = %key, "no longer held back: planned from the last list");
                self.admit(a, &actual, now, &mut pending);
            }
        }
        self.pending = pending;
        self.last_actual = Some(actual);
    }

    /// A change of the desired state is acted on at once for what it takes away — stops
    /// and removals, planned from the last list — while the fresh pass it asked for waits
    /// for its list (under an event storm podman can take seconds to answer one).
    /// Bring-ups wait for that list: a stale one could take a container just made for
    /// missing. An id that is gone by now is no error (the fresh pass looks again).
    pub(super) fn reduce_from_last_list(&mut self) {
        if self.mode != Mode::Daemon || self.podman.up != Some(true) {
            return;
        }
        let Some(actual) = &self.last_actual else {
            return;
        };
        let now = Instant::now();
        let p = plan::plan(&self.desired, actual, &self.us, &self.book, now);
        for a in p.actions {
            if !matches!(a, Action::Stop { .. } | Action::Remove { .. }) {
                continue;
            }
            let key = a.key().clone();
            let work = Work::Component(key.clone());
            if self.sched.is_running(&work) || self.pending.contains_key(&key) {
                continue;
            }
            self.forget_pull_wait(&key);
            self.sched.schedule(work, SOON, now);
            self.pending
                .insert(key, (a, Arc::new(StorageNames::default())));
        }
    }

    /// Keeps the last list up to date with what the agent's own operations did, so a
    /// plan from it (see [`Agent::reduce_from_last_list`]) knows the containers made since.
    fn remember(&mut self, r: &ComponentReport) {
        let (Some(known), Some(spec)) = (self.last_actual.as_mut(), self.specs.get(&r.key)) else {
            return;
        };
        match (r.verb, r.status, &r.container_id) {
            (Some(v), Status::Running, Some(id)) if v.brings_up() => {
                known.retain(|a| a.name != spec.name);
                known.push(crate::runtime::Actual {
                    id: id.clone(),
                    name: spec.name.clone(),
                    state: crate::runtime::State::Running,
                    labels: spec.labels.clone(),
                    exit_code: None,
                });
            }
            (Some(Verb::Stop), Status::Stopped, Some(id)) => {
                for a in known.iter_mut().filter(|a| a.id == *id) {
                    a.state = crate::runtime::State::Exited;
                }
            }
            _ => {}
        }
    }

    /// A one-shot component exited 0 for its current spec: recorded (the registry keeps
    /// it, so it is not run again after podman forgets the container), and its
    /// dependents looked at.
    fn completed(&mut self, key: &ComponentKey) {
        let Some(hash) = self
            .desired
            .iter()
            .find(|d| d.key == *key)
            .map(|d| d.spec_hash.clone())
        else {
            return;
        };
        if self.book.completed.get(key) == Some(&hash) {
            return;
        }
        tracing::info!(component = %key, "one-shot component completed");
        self.book.completed.insert(key.clone(), hash);
        self.want_progress("completed");
    }

    /// A component was brought up again (restarted, recreated, started after a crash):
    /// its dependents with `restart_with` are restarted in place, once it meets their
    /// condition (the plan holds a restart back like any bring-up).
    fn restart_dependents(&mut self, key: &ComponentKey) {
        let Some(dependents) = self.restart_with.get(key).cloned() else {
            return;
        };
        for d in dependents {
            let Some((Status::Running, _, Some(id))) = self.status.get(&d).cloned() else {
                continue;
            };
            tracing::info!(component = %d, dependency = %key, "restarting with its dependency");
            self.book
                .restart
                .insert(id, plan::RestartWhy::Dependency(key.clone()));
            self.want_pass("restart_with");
        }
    }

    /// An operation on a component is done.
    pub(super) fn on_done(
        &mut self,
        key: ComponentKey,
        result: Result<ComponentReport, RemovalReport>,
    ) -> Requeue {
        if self.deferred.remove(&key) {
            self.want_pass("deferred");
        }
        // Its service was removed (or the component dropped) while the operation ran:
        // nothing of it is kept — no status, backoff, pull wait or health tracking of a
        // component no longer wanted. The pass the removal asked for removes what it made.
        if let Ok(r) = &result {
            if !self.specs.contains_key(&r.key) {
                tracing::info!(
                    action = r.verb.map_or("none", Verb::as_str), component = %r.key,
                    state = r.status.as_str(),
                    "operation done on a component no longer in the registry; nothing kept"
                );
                return Requeue::OnChange;
            }
        }
        // Its image must be pulled first: it waits for the pull (no attempt, no backoff).
        if let Ok(r) = &result {
            if r.status == Status::Pulling {
                if let Ok(r) = result {
                    self.await_pull(r);
                }
                return Requeue::OnChange;
            }
        }
        let mut requeue = Requeue::OnChange;
        match result {
            Err(r) => {
                match &r.error {
                    None => tracing::info!(
                        action = "remove", service = %r.owner.service, component = %r.owner.component,
                        container = %r.name, "removed container {}: {}", r.name, r.why()
                    ),
                    Some(e) => {
                        tracing::warn!(
                            action = "remove", service = %r.owner.service, component = %r.owner.component,
                            container = %r.name, error = %e, "could not remove container"
                        );
                        requeue = Requeue::After(LIST_RETRY);
                    }
                }
                if r.error.is_none() {
                    if let Some(known) = self.last_actual.as_mut() {
                        known.retain(|a| a.name != r.name);
                    }
                }
                if self.mode == Mode::Daemon {
                    let result = match &r.error {
                        None => "ok",
                        Some(e) if e.is_unavailable() => "unavailable",
                        Some(_) => "failed",
                    };
                    crate::metrics::global()
                        .actions
                        .get_or_create(&[("action", "remove".into()), ("result", result.into())])
                        .inc();
                }
                // The last container of a service no longer wanted takes its network: if
                // that failed, the next pass's list sweeps it again.
                let gone = !self
                    .wanted_now
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&r.owner.service);
                if gone {
                    self.networks_due += 1;
                }
                if self.mode == Mode::Once {
                    self.report.pass.removals.push(r);
                }
            }
            Ok(r) => {
                let now = Instant::now();
                let brought_up = r.verb.is_some_and(Verb::brings_up);
                // Known before the bookkeeping below forgets the old container.
                let had_container = self.brought_up.contains_key(&r.key)
                    || self
                        .status
                        .get(&r.key)
                        .is_some_and(|(_, _, id)| id.is_some());
                let cause = r.restart_cause(had_container);
                if self.mode == Mode::Daemon {
                    self.count_action(&r, cause);
                }
                if r.is_unavailable() {
                    // Podman did not answer: nothing happened to the container. Its
                    // health decides; the work is planned again after that.
                    self.sched.schedule(Work::Ping, URGENT, now);
                    requeue = Requeue::After(LIST_RETRY);
                } else if brought_up
                    && self.mode == Mode::Daemon
                    // Image checks and conflicts touch no container: retried at every
                    // pass and event, not backed off.
                    && (!matches!(
                        r.status,
                        Status::ImageMissing
                            | Status::VolumeMissing
                            | Status::Conflict
                            | Status::NetworkConflict
                    )
                        // A failed pull asked a registry: backed off like any attempt.
                        || matches!(r.error, Some(ActionError::PullFailed { .. })))
                {
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
                    // A failed pull too: its retry is due then, whatever else happens.
                    if r.status == Status::Failed
                        || matches!(r.error, Some(ActionError::PullFailed { .. }))
                    {
                        requeue = Requeue::After(next - now);
                    }
                }
                let action = r.verb.map_or("none", Verb::as_str);
                let detail = r.detail();
                // The same failure for the same reason as last time (an image or a
                // volume path still missing, at every pass and event) is logged once.
                let repeated = self
                    .status
                    .get(&r.key)
                    .is_some_and(|(s, d, _)| *s == r.status && *d == detail);
                // `--once` prints a line per action on stdout; its log says no more.
                match (r.status.is_failure(), r.verb) {
                    (true, _) if repeated && self.mode == Mode::Daemon => tracing::debug!(
                        action, component = %r.key, state = r.status.as_str(),
                        error = detail.as_deref().unwrap_or(""), "still not reconciled, as before"
                    ),
                    _ if self.mode == Mode::Once => tracing::debug!(
                        action, component = %r.key, state = r.status.as_str(),
                        error = detail.as_deref().unwrap_or(""), "reconciled once"
                    ),
                    (true, _) => tracing::warn!(
                        action, service = %r.key.service,
                        component = %r.key.component, container = %r.container,
                        error = detail.as_deref().unwrap_or(""), state = r.status.as_str(),
                        "component {} not reconciled: {}", r.key, detail.as_deref().unwrap_or(r.status.as_str())
                    ),
                    (false, Some(_)) => tracing::info!(
                        action, service = %r.key.service, component = %r.key.component,
                        container = %r.container, state = r.status.as_str(), "reconciled"
                    ),
                    _ => {}
                }
                self.remember(&r);
                if let (true, Status::Running, Some(id)) = (brought_up, r.status, &r.container_id) {
                    if r.verb == Some(Verb::Restart) {
                        self.book.restart.remove(id);
                    }
                    self.start_tracking(&r.key.clone(), &id.clone(), now);
                    // `--once` has no events: it looks for the one-shot's exit.
                    if self.mode == Mode::Once && self.oneshots.contains(&r.key) {
                        self.sched.schedule(Work::List, URGENT, now + ONCE_RELIST);
                    } else if self.depended_on.contains(&r.key) {
                        // Podman's `start` is no event the agent follows: a dependent
                        // waiting for this one to have started is planned now.
                        self.want_progress("started");
                    }
                    if had_container && cause.is_some() || r.verb == Some(Verb::Restart) {
                        self.restart_dependents(&r.key.clone());
                    }
                }
                let key = r.key.clone();
                self.note(
                    &key,
                    r.status,
                    detail,
                    r.container_id.clone(),
                    r.recovered,
                    cause.is_some(),
                );
                if self.mode == Mode::Once {
                    self.report.pass.components.push(r);
                }
            }
        }
        requeue
    }
}
