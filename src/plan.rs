//! The reconcile plan (docs/design.md §4.1): a pure function from desired state, the runtime's
//! container list, the backoff book and the time to the actions that close the gap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::container::{owner, ComponentKey, Owner, Us};
use crate::model::Condition;
use crate::runtime::{Actual, State};
use crate::spec::{DesiredState, RestartPolicy};

/// What the registry wants of one component, reduced to what planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub key: ComponentKey,
    pub container_name: String,
    pub spec_hash: String,
    pub state: DesiredState,
    pub restart: RestartPolicy,
    /// Why its spec cannot be known (an env file or secret missing or unreadable): it is
    /// not brought up, and its container is left as it is (`config-missing`).
    pub blocked: Option<String>,
    /// Runs to exit 0 once per spec (`oneshot = true`).
    pub oneshot: bool,
    /// Has a health check: it counts as healthy only once the check passes.
    pub checked: bool,
    /// What must hold of other components before it is created or started.
    pub depends: Vec<(ComponentKey, Condition)>,
}

/// Memory of the control loop that planning consults: when each component may be retried,
/// and when podman last saw a container die.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub retry_at: HashMap<ComponentKey, Instant>,
    pub died_at: HashMap<String, Instant>,
    /// How long a dead container whose restart policy podman honours is left to podman.
    pub restart_grace: Duration,
    /// Containers whose health check passes now (ids).
    pub healthy: HashSet<String>,
    /// Running containers to restart, and why (ids).
    pub restart: HashMap<String, RestartWhy>,
    /// One-shot components done, with the spec hash they completed.
    pub completed: HashMap<ComponentKey, String>,
}

/// Why a running container is restarted in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartWhy {
    /// Its health check failed `retries` times.
    Unhealthy,
    /// A dependency of it with `restart_with` was recreated or restarted.
    Dependency(ComponentKey),
}

impl RestartWhy {
    pub fn describe(&self) -> String {
        match self {
            RestartWhy::Unhealthy => "its health check failed".to_string(),
            RestartWhy::Dependency(k) => format!("{k}, which it restarts with, was restarted"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Its `mcp.spec-hash` differs from the registry's spec.
    SpecChanged,
    /// Ours, but labelled for another component: a leftover holding the name.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    Backoff,
    /// Podman's restart policy will bring it back; reacting too would race podman.
    PodmanRestart,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::Backoff => "backing off",
            WaitReason::PodmanRestart => "left to podman's restart policy",
        }
    }
}

/// What an action does, as logs and `--once` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Recreate,
    Start,
    /// Stopped and started again, in place.
    Restart,
    Stop,
    Remove,
    Conflict,
    /// Not brought up: its configuration files cannot be read.
    Skip,
    Wait,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Recreate => "recreate",
            Verb::Start => "start",
            Verb::Restart => "restart",
            Verb::Stop => "stop",
            Verb::Remove => "remove",
            Verb::Conflict => "conflict",
            Verb::Skip => "skip",
            Verb::Wait => "wait",
        }
    }

    /// Whether it brings a component up (and so is subject to backoff).
    pub fn brings_up(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Recreate | Verb::Start | Verb::Restart
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        key: ComponentKey,
        /// Other containers labelled for this component, removed first (see `plan`).
        strays: Vec<String>,
    },
    Recreate {
        key: ComponentKey,
        old_id: String,
        drift: Drift,
        strays: Vec<String>,
    },
    Start {
        key: ComponentKey,
        id: String,
        strays: Vec<String>,
    },
    /// A running container stopped and started again (unhealthy, or a dependency it
    /// restarts with restarted).
    Restart {
        key: ComponentKey,
        id: String,
        why: RestartWhy,
        strays: Vec<String>,
    },
    Stop {
        key: ComponentKey,
        id: String,
        strays: Vec<String>,
    },
    /// A container of ours that no desired component owns.
    Remove {
        id: String,
        name: String,
        owner: ComponentKey,
        reason: RemoveReason,
        /// No component of the owner's service is wanted: its service's network
        /// (`mcp-<service>`) goes after it, if the agent made it and nothing uses it.
        service_gone: bool,
    },
    /// The name is taken by a container that is not ours: reported, never touched.
    Conflict {
        key: ComponentKey,
        id: String,
        /// When the holder is an orphan: the registry its labels name (see
        /// [`Holding::Orphan`]; "(none: unlabelled)" for none).
        orphan_of: Option<String>,
    },
    /// Its configuration files cannot be read: reported; its container, if any, is left
    /// as it is.
    ConfigMissing { key: ComponentKey, why: String },
    Wait {
        key: ComponentKey,
        until: Instant,
        reason: WaitReason,
    },
    /// Not brought up until dependency `on` meets `condition`.
    Blocked {
        key: ComponentKey,
        on: ComponentKey,
        condition: Condition,
    },
}

/// Why a container of ours is removed, as its labels have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its labels name a component that no active service of the registry has (removed
    /// from the registry, its service inactive — or labels naming one it never had).
    NotDesired,
    /// Its labels name a wanted component whose own container, of the component's name,
    /// is there and needs nothing: this one is a second.
    Duplicate,
}

impl RemoveReason {
    /// The reason in words, for the container labelled as `owner`.
    pub fn describe(&self, owner: &ComponentKey) -> String {
        match self {
            RemoveReason::NotDesired => format!(
                "labelled as component {owner}, which no active service in the registry has"
            ),
            RemoveReason::Duplicate => format!(
                "a duplicate: labelled as component {owner}, whose own container {} is there",
                owner.container_name()
            ),
        }
    }
}

impl Action {
    /// The component this action is about; for `Remove`, the component the container was.
    pub fn key(&self) -> &ComponentKey {
        match self {
            Action::Create { key, .. }
            | Action::Recreate { key, .. }
            | Action::Start { key, .. }
            | Action::Restart { key, .. }
            | Action::Stop { key, .. }
            | Action::Conflict { key, .. }
            | Action::ConfigMissing { key, .. }
            | Action::Wait { key, .. }
            | Action::Blocked { key, .. } => key,
            Action::Remove { owner, .. } => owner,
        }
    }

    pub fn verb(&self) -> Verb {
        match self {
            Action::Create { .. } => Verb::Create,
            Action::Recreate { .. } => Verb::Recreate,
            Action::Start { .. } => Verb::Start,
            Action::Restart { .. } => Verb::Restart,
            Action::Stop { .. } => Verb::Stop,
            Action::Remove { .. } => Verb::Remove,
            Action::Conflict { .. } => Verb::Conflict,
            Action::ConfigMissing { .. } => Verb::Skip,
            Action::Wait { .. } | Action::Blocked { .. } => Verb::Wait,
        }
    }

    fn strays_mut(&mut self) -> Option<&mut Vec<String>> {
        match self {
            Action::Create { strays, .. }
            | Action::Recreate { strays, .. }
            | Action::Start { strays, .. }
            | Action::Restart { strays, .. }
            | Action::Stop { strays, .. } => Some(strays),
            _ => None,
        }
    }

    /// Whether the action brings a component up (and so is subject to backoff).
    pub fn brings_up(&self) -> bool {
        self.verb().brings_up()
    }
}

/// A component that needs nothing this pass, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InSync {
    Running,
    Stopped,
    /// Paused, restarting, stopping, being removed: podman is in the middle of something.
    Transient,
    /// A one-shot component that exited 0 for its current spec.
    Completed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub in_sync: Vec<(ComponentKey, InSync, String)>,
}

/// How the container holding a desired component's name stands to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding<'a> {
    /// Without our labels (or another node's): never touched.
    NotOurs,
    /// This node's, but made by another registry (`None`: one without `mcp.registry`)
    /// and not adopted: never touched until `mcp-agent adopt` or `prune`.
    Orphan(Option<&'a str>),
    /// Ours; drifted from the desired spec, or not.
    Ours(Option<Drift>),
}

/// How an orphan's registry is named to people: its id, or that it has none.
pub fn orphan_registry(registry: Option<&str>) -> &str {
    registry.unwrap_or("(none: unlabelled)")
}

/// Classifies the holder `h` of component `key`'s name, whose desired spec hash is
/// `spec_hash` (the one ownership rule; `status` shows what the plan will do).
pub fn holding<'a>(key: &ComponentKey, spec_hash: &str, h: &'a Actual, us: &Us) -> Holding<'a> {
    match owner(&h.id, &h.labels, us) {
        Owner::Unmanaged | Owner::Foreign => Holding::NotOurs,
        Owner::Orphan { registry, .. } => Holding::Orphan(registry),
        o @ Owner::Ours {
            spec_hash: have, ..
        } => Holding::Ours(if !o.is_for(key) {
            Some(Drift::Stale)
        } else if have != spec_hash {
            Some(Drift::SpecChanged)
        } else {
            None
        }),
    }
}

/// Plans one pass. `desired` holds active services' components only; every container
/// labelled ours (same node, this registry's or adopted) that no desired component claims
/// is removed, and no container without our labels — another node's, another registry's —
/// is ever removed, stopped or replaced.
pub fn plan(desired: &[Desired], actual: &[Actual], us: &Us, book: &Book, now: Instant) -> Plan {
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(actual.len());
    for (i, a) in actual.iter().enumerate() {
        by_name.insert(a.name.as_str(), i);
    }
    // Listed containers claimed by name by a desired component, by position in `actual`.
    let mut claimed = vec![false; actual.len()];
    let mut out = Plan::default();
    let deps = Conditions::new(desired, actual, &by_name, us, book);

    for d in desired {
        let holder = by_name.get(d.container_name.as_str()).map(|&i| {
            claimed[i] = true;
            &actual[i]
        });
        let action = match holder {
            None if d.blocked.is_some() && d.state == DesiredState::Running => {
                Some(Action::ConfigMissing {
                    key: d.key.clone(),
                    why: d.blocked.clone().unwrap_or_default(),
                })
            }
            None if d.state == DesiredState::Running
                && d.oneshot
                && book.completed.get(&d.key) == Some(&d.spec_hash) =>
            {
                out.in_sync
                    .push((d.key.clone(), InSync::Completed, String::new()));
                None
            }
            None => match d.state {
                DesiredState::Running => Some(Action::Create {
                    key: d.key.clone(),
                    strays: Vec::new(),
                }),
                DesiredState::Stopped => {
                    out.in_sync
                        .push((d.key.clone(), InSync::Stopped, String::new()));
                    None
                }
            },
            Some(h) => match holding(&d.key, &d.spec_hash, h, us) {
                Holding::NotOurs => Some(Action::Conflict {
                    key: d.key.clone(),
                    id: h.id.clone(),
                    orphan_of: None,
                }),
                Holding::Orphan(r) => Some(Action::Conflict {
                    key: d.key.clone(),
                    id: h.id.clone(),
                    orphan_of: Some(orphan_registry(r).to_string()),
                }),
                Holding::Ours(_) if d.blocked.is_some() && d.state == DesiredState::Running => {
                    Some(Action::ConfigMissing {
                        key: d.key.clone(),
                        why: d.blocked.clone().unwrap_or_default(),
                    })
                }
                Holding::Ours(drift) => plan_owned(d, h, drift, book, now, &mut out),
            },
        };
        if let Some(a) = action {
            let a = match a.brings_up().then(|| unmet(d, &deps)).flatten() {
                Some((on, condition)) => Action::Blocked {
                    key: d.key.clone(),
                    on: on.clone(),
                    condition,
                },
                None => gate(a, book, now),
            };
            out.actions.push(a);
        }
    }

    // Containers of ours that no desired component claims by name. Those labelled for a
    // wanted component (a leftover of another name) go with that component's own action,
    // so no component ever gets two; while it waits or is in conflict they stay for now.
    // The lookup tables are built only if such a container exists: in a steady pass every
    // listed container of ours is claimed, and the tables would be most of the work.
    let mut tables: Option<Tables> = None;
    let mut orphans: BTreeMap<&str, Action> = BTreeMap::new();
    let mut strays: Vec<(usize, String)> = Vec::new();
    for (a, _) in actual.iter().zip(&claimed).filter(|(_, &c)| !c) {
        let o = owner(&a.id, &a.labels, us);
        let Some(key) = o.key() else {
            continue;
        };
        let t = tables.get_or_insert_with(|| Tables::new(desired, &out));
        let wanted = t.wanted.contains(&key);
        let acting = t.acting.get(&key).copied();
        if wanted && !t.in_sync.contains(&key) {
            if let Some(i) = acting {
                strays.push((i, a.id.clone()));
            }
            continue;
        }
        if wanted && acting.is_some() {
            continue;
        }
        let reason = if wanted {
            RemoveReason::Duplicate
        } else {
            RemoveReason::NotDesired
        };
        let service_gone = !t.services.contains(key.service.as_str());
        orphans.insert(
            a.id.as_str(),
            Action::Remove {
                id: a.id.clone(),
                name: a.name.clone(),
                owner: key,
                reason,
                service_gone,
            },
        );
    }
    for (i, id) in strays {
        if let Some(v) = out.actions[i].strays_mut() {
            v.push(id);
        }
    }
    out.actions.extend(orphans.into_values());
    out
}

/// The plan's components by role, for placing unclaimed containers of ours.
struct Tables<'a> {
    /// Component → index of its action.
    acting: HashMap<&'a ComponentKey, usize>,
    in_sync: HashSet<&'a ComponentKey>,
    wanted: HashSet<&'a ComponentKey>,
    /// The services with a wanted component.
    services: HashSet<&'a str>,
}

impl<'a> Tables<'a> {
    fn new(desired: &'a [Desired], out: &'a Plan) -> Tables<'a> {
        Tables {
            acting: out
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| (a.key(), i))
                .collect(),
            in_sync: out.in_sync.iter().map(|(k, ..)| k).collect(),
            wanted: desired.iter().map(|d| &d.key).collect(),
            services: desired.iter().map(|d| d.key.service.as_str()).collect(),
        }
    }
}

fn plan_owned(
    d: &Desired,
    h: &Actual,
    drift: Option<Drift>,
    book: &Book,
    now: Instant,
    out: &mut Plan,
) -> Option<Action> {
    let key = d.key.clone();
    let id = h.id.clone();
    match d.state {
        DesiredState::Stopped => match h.state {
            State::Running | State::Paused | State::Restarting => Some(Action::Stop {
                key,
                id,
                strays: Vec::new(),
            }),
            _ => {
                out.in_sync.push((key, InSync::Stopped, id));
                None
            }
        },
        DesiredState::Running => {
            if let Some(drift) = drift {
                // A container mid-removal or mid-stop is replaced once podman is done.
                if matches!(h.state, State::Other(_)) {
                    out.in_sync.push((key, InSync::Transient, id));
                    return None;
                }
                return Some(Action::Recreate {
                    key,
                    old_id: id,
                    drift,
                    strays: Vec::new(),
                });
            }
            match h.state {
                State::Running => {
                    if let Some(why) = book.restart.get(&id) {
                        return Some(Action::Restart {
                            key,
                            id,
                            why: why.clone(),
                            strays: Vec::new(),
                        });
                    }
                    out.in_sync.push((key, InSync::Running, id));
                    None
                }
                State::Exited if d.oneshot && h.exit_code == Some(0) => {
                    out.in_sync.push((key, InSync::Completed, id));
                    None
                }
                State::Paused | State::Restarting | State::Other(_) => {
                    out.in_sync.push((key, InSync::Transient, id));
                    None
                }
                State::Exited | State::Created => {
                    if d.restart.podman_restarts() && h.state == State::Exited {
                        if let Some(died) = book.died_at.get(&h.id) {
                            let until = *died + book.restart_grace;
                            if until > now {
                                return Some(Action::Wait {
                                    key,
                                    until,
                                    reason: WaitReason::PodmanRestart,
                                });
                            }
                        }
                    }
                    Some(Action::Start {
                        key,
                        id,
                        strays: Vec::new(),
                    })
                }
            }
        }
    }
}

/// What the components a plan's dependents wait on have met, from the list and the book.
struct Conditions<'a> {
    desired: HashMap<&'a ComponentKey, &'a Desired>,
    actual: &'a [Actual],
    by_name: &'a HashMap<&'a str, usize>,
    us: &'a Us,
    book: &'a Book,
}

impl<'a> Conditions<'a> {
    fn new(
        desired: &'a [Desired],
        actual: &'a [Actual],
        by_name: &'a HashMap<&'a str, usize>,
        us: &'a Us,
        book: &'a Book,
    ) -> Conditions<'a> {
        // Built only when some component has dependencies.
        let any = desired.iter().any(|d| !d.depends.is_empty());
        Conditions {
            desired: if any {
                desired.iter().map(|d| (&d.key, d)).collect()
            } else {
                HashMap::new()
            },
            actual,
            by_name,
            us,
            book,
        }
    }

    /// Whether `on` meets `condition` now. A component the registry does not want
    /// running (removed, stopped, its service inactive) meets none.
    fn met(&self, on: &ComponentKey, condition: Condition) -> bool {
        let Some(d) = self.desired.get(on) else {
            return false;
        };
        if d.state != DesiredState::Running {
            return false;
        }
        if condition == Condition::Completed && self.book.completed.get(on) == Some(&d.spec_hash) {
            return true;
        }
        let Some(h) = self
            .by_name
            .get(d.container_name.as_str())
            .map(|&i| &self.actual[i])
        else {
            return false;
        };
        if holding(on, &d.spec_hash, h, self.us) != Holding::Ours(None) {
            return false;
        }
        match condition {
            Condition::Started => h.state == State::Running,
            Condition::Healthy => {
                h.state == State::Running && (!d.checked || self.book.healthy.contains(&h.id))
            }
            Condition::Completed => h.state == State::Exited && h.exit_code == Some(0),
        }
    }
}

/// The first dependency of `d` that does not meet its condition.
fn unmet<'a>(d: &'a Desired, c: &Conditions<'_>) -> Option<(&'a ComponentKey, Condition)> {
    d.depends
        .iter()
        .find(|(on, condition)| !c.met(on, *condition))
        .map(|(on, condition)| (on, *condition))
}

/// Holds back an action that brings a component up while its backoff has not expired.
fn gate(a: Action, book: &Book, now: Instant) -> Action {
    if a.brings_up() {
        if let Some(&until) = book.retry_at.get(a.key()) {
            if until > now {
                return Action::Wait {
                    key: a.key().clone(),
                    until,
                    reason: WaitReason::Backoff,
                };
            }
        }
    }
    a
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lifecycle_tests;

#[cfg(test)]
mod proptests;
