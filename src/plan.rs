//! The reconcile plan (DESIGN §4 step 3): a pure function from desired state, the runtime's
//! container list, the backoff book and the time to the actions that close the gap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::container::{owner, ComponentKey, Owner};
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
}

/// Memory of the control loop that planning consults: when each component may be retried,
/// and when podman last saw a container die.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub retry_at: HashMap<ComponentKey, Instant>,
    pub died_at: HashMap<String, Instant>,
    /// How long a dead container whose restart policy podman honours is left to podman.
    pub restart_grace: Duration,
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
    Stop,
    Remove,
    Conflict,
    Wait,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Recreate => "recreate",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Remove => "remove",
            Verb::Conflict => "conflict",
            Verb::Wait => "wait",
        }
    }

    /// Whether it brings a component up (and so is subject to backoff).
    pub fn brings_up(self) -> bool {
        matches!(self, Verb::Create | Verb::Recreate | Verb::Start)
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
    },
    /// The name is taken by a container that is not ours: reported, never touched.
    Conflict { key: ComponentKey, id: String },
    Wait {
        key: ComponentKey,
        until: Instant,
        reason: WaitReason,
    },
}

impl Action {
    /// The component this action is about; for `Remove`, the component the container was.
    pub fn key(&self) -> &ComponentKey {
        match self {
            Action::Create { key, .. }
            | Action::Recreate { key, .. }
            | Action::Start { key, .. }
            | Action::Stop { key, .. }
            | Action::Conflict { key, .. }
            | Action::Wait { key, .. } => key,
            Action::Remove { owner, .. } => owner,
        }
    }

    pub fn verb(&self) -> Verb {
        match self {
            Action::Create { .. } => Verb::Create,
            Action::Recreate { .. } => Verb::Recreate,
            Action::Start { .. } => Verb::Start,
            Action::Stop { .. } => Verb::Stop,
            Action::Remove { .. } => Verb::Remove,
            Action::Conflict { .. } => Verb::Conflict,
            Action::Wait { .. } => Verb::Wait,
        }
    }

    fn strays_mut(&mut self) -> Option<&mut Vec<String>> {
        match self {
            Action::Create { strays, .. }
            | Action::Recreate { strays, .. }
            | Action::Start { strays, .. }
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub in_sync: Vec<(ComponentKey, InSync, String)>,
}

/// Plans one pass. `desired` holds active services' components only; every container
/// labelled ours (same node) that no desired component claims is removed, and no container
/// without our labels is ever removed, stopped or replaced.
pub fn plan(desired: &[Desired], actual: &[Actual], node: &str, book: &Book, now: Instant) -> Plan {
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(actual.len());
    for (i, a) in actual.iter().enumerate() {
        by_name.insert(a.name.as_str(), i);
    }
    // Listed containers claimed by name by a desired component, by position in `actual`.
    let mut claimed = vec![false; actual.len()];
    let mut out = Plan::default();

    for d in desired {
        let holder = by_name.get(d.container_name.as_str()).map(|&i| {
            claimed[i] = true;
            &actual[i]
        });
        let action = match holder {
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
            Some(h) => match owner(&h.labels, node) {
                Owner::Unmanaged | Owner::Foreign => Some(Action::Conflict {
                    key: d.key.clone(),
                    id: h.id.clone(),
                }),
                o @ Owner::Ours { spec_hash, .. } => {
                    let drift = if !o.is_for(&d.key) {
                        Some(Drift::Stale)
                    } else if spec_hash != d.spec_hash {
                        Some(Drift::SpecChanged)
                    } else {
                        None
                    };
                    plan_owned(d, h, drift, book, now, &mut out)
                }
            },
        };
        if let Some(a) = action {
            out.actions.push(gate(a, book, now));
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
        let o = owner(&a.labels, node);
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
        orphans.insert(
            a.id.as_str(),
            Action::Remove {
                id: a.id.clone(),
                name: a.name.clone(),
                owner: key,
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
                    out.in_sync.push((key, InSync::Running, id));
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
mod tests {
    use super::*;
    use crate::container::{
        LABEL_COMPONENT, LABEL_MANAGED, LABEL_NODE, LABEL_SERVICE, LABEL_SPEC_HASH,
    };

    const NODE: &str = "n1";

    fn key(c: &str) -> ComponentKey {
        ComponentKey::new("svc", c)
    }

    fn want(c: &str, hash: &str, state: DesiredState, restart: RestartPolicy) -> Desired {
        Desired {
            key: key(c),
            container_name: format!("svc-{c}"),
            spec_hash: hash.into(),
            state,
            restart,
        }
    }

    fn run(c: &str, hash: &str) -> Desired {
        want(c, hash, DesiredState::Running, RestartPolicy::No)
    }

    fn ours(id: &str, svc: &str, c: &str, hash: &str, state: State) -> Actual {
        Actual {
            id: id.into(),
            name: format!("{svc}-{c}"),
            state,
            labels: BTreeMap::from([
                (LABEL_MANAGED.into(), "true".into()),
                (LABEL_NODE.into(), NODE.into()),
                (LABEL_SERVICE.into(), svc.into()),
                (LABEL_COMPONENT.into(), c.into()),
                (LABEL_SPEC_HASH.into(), hash.into()),
            ]),
        }
    }

    fn foreign(id: &str, name: &str, labels: &[(&str, &str)]) -> Actual {
        Actual {
            id: id.into(),
            name: name.into(),
            state: State::Running,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn p(desired: &[Desired], actual: &[Actual]) -> Vec<Action> {
        plan(desired, actual, NODE, &Book::default(), Instant::now()).actions
    }

    #[test]
    fn absent_running_component_is_created() {
        assert_eq!(
            p(&[run("a", "h")], &[]),
            vec![Action::Create {
                key: key("a"),
                strays: vec![]
            }]
        );
    }

    #[test]
    fn absent_stopped_component_needs_nothing() {
        let d = want("a", "h", DesiredState::Stopped, RestartPolicy::No);
        let pl = plan(&[d], &[], NODE, &Book::default(), Instant::now());
        assert!(pl.actions.is_empty());
        assert_eq!(pl.in_sync[0].1, InSync::Stopped);
    }

    #[test]
    fn running_with_equal_hash_is_in_sync() {
        let pl = plan(
            &[run("a", "h")],
            &[ours("1", "svc", "a", "h", State::Running)],
            NODE,
            &Book::default(),
            Instant::now(),
        );
        assert!(pl.actions.is_empty());
        assert_eq!(pl.in_sync, vec![(key("a"), InSync::Running, "1".into())]);
    }

    #[test]
    fn running_with_other_hash_is_recreated() {
        assert_eq!(
            p(
                &[run("a", "new")],
                &[ours("1", "svc", "a", "old", State::Running)]
            ),
            vec![Action::Recreate {
                key: key("a"),
                old_id: "1".into(),
                drift: Drift::SpecChanged,
                strays: vec![]
            }]
        );
    }

    #[test]
    fn exited_or_created_with_equal_hash_is_started_again() {
        for s in [State::Exited, State::Created] {
            assert_eq!(
                p(&[run("a", "h")], &[ours("1", "svc", "a", "h", s)]),
                vec![Action::Start {
                    key: key("a"),
                    id: "1".into(),
                    strays: vec![]
                }]
            );
        }
    }

    #[test]
    fn exited_with_other_hash_is_recreated() {
        assert_eq!(
            p(
                &[run("a", "new")],
                &[ours("1", "svc", "a", "old", State::Exited)]
            ),
            vec![Action::Recreate {
                key: key("a"),
                old_id: "1".into(),
                drift: Drift::SpecChanged,
                strays: vec![]
            }]
        );
    }

    #[test]
    fn podman_restarting_or_paused_containers_are_left_to_podman() {
        for s in [
            State::Restarting,
            State::Paused,
            State::Other("stopping".into()),
        ] {
            let pl = plan(
                &[run("a", "h")],
                &[ours("1", "svc", "a", "h", s.clone())],
                NODE,
                &Book::default(),
                Instant::now(),
            );
            assert!(pl.actions.is_empty(), "{s:?}");
            assert_eq!(pl.in_sync[0].1, InSync::Transient);
        }
    }

    #[test]
    fn a_fresh_death_under_a_restart_policy_is_left_to_podman_for_the_grace() {
        let now = Instant::now();
        let d = want("a", "h", DesiredState::Running, RestartPolicy::Always);
        let a = ours("1", "svc", "a", "h", State::Exited);
        let mut book = Book {
            restart_grace: Duration::from_secs(2),
            ..Default::default()
        };
        book.died_at.insert("1".into(), now);
        let pl = plan(
            std::slice::from_ref(&d),
            std::slice::from_ref(&a),
            NODE,
            &book,
            now,
        );
        assert_eq!(
            pl.actions,
            vec![Action::Wait {
                key: key("a"),
                until: now + Duration::from_secs(2),
                reason: WaitReason::PodmanRestart
            }]
        );
        // After the grace, podman evidently did not restart it: ours to start.
        let later = now + Duration::from_secs(3);
        assert_eq!(
            plan(&[d], std::slice::from_ref(&a), NODE, &book, later).actions,
            vec![Action::Start {
                key: key("a"),
                id: "1".into(),
                strays: vec![]
            }]
        );
        // Restart policy "no": no grace.
        let d = run("a", "h");
        assert_eq!(
            plan(&[d], &[a], NODE, &book, now).actions,
            vec![Action::Start {
                key: key("a"),
                id: "1".into(),
                strays: vec![]
            }]
        );
    }

    #[test]
    fn desired_stopped_stops_a_running_container_and_leaves_an_exited_one() {
        let d = want("a", "h", DesiredState::Stopped, RestartPolicy::No);
        for s in [State::Running, State::Restarting, State::Paused] {
            assert_eq!(
                p(std::slice::from_ref(&d), &[ours("1", "svc", "a", "h", s)]),
                vec![Action::Stop {
                    key: key("a"),
                    id: "1".into(),
                    strays: vec![]
                }]
            );
        }
        assert!(p(
            std::slice::from_ref(&d),
            &[ours("1", "svc", "a", "x", State::Exited)]
        )
        .is_empty());
    }

    #[test]
    fn same_name_without_our_labels_is_a_conflict_and_never_touched() {
        for a in [
            foreign("9", "svc-a", &[]),
            foreign("9", "svc-a", &[(LABEL_MANAGED, "false")]),
            foreign(
                "9",
                "svc-a",
                &[
                    (LABEL_MANAGED, "true"),
                    (LABEL_NODE, "other"),
                    (LABEL_SERVICE, "svc"),
                    (LABEL_COMPONENT, "a"),
                ],
            ),
        ] {
            assert_eq!(
                p(&[run("a", "h")], &[a]),
                vec![Action::Conflict {
                    key: key("a"),
                    id: "9".into()
                }]
            );
        }
    }

    #[test]
    fn our_stale_container_holding_the_name_is_replaced() {
        // Labelled ours, but for a component that is not this one.
        let a = Actual {
            name: "svc-a".into(),
            ..ours("1", "svc", "b", "h", State::Running)
        };
        assert_eq!(
            p(&[run("a", "h")], &[a]),
            vec![Action::Recreate {
                key: key("a"),
                old_id: "1".into(),
                drift: Drift::Stale,
                strays: vec![]
            }]
        );
    }

    #[test]
    fn our_containers_without_a_desired_component_are_removed_and_nothing_else() {
        let actual = [
            ours("1", "gone", "x", "h", State::Running),
            ours("2", "svc", "a", "h", State::Running),
            foreign("3", "hand-made", &[]),
            foreign(
                "4",
                "other-node",
                &[
                    (LABEL_MANAGED, "true"),
                    (LABEL_NODE, "n2"),
                    (LABEL_SERVICE, "gone"),
                    (LABEL_COMPONENT, "x"),
                ],
            ),
        ];
        assert_eq!(
            p(&[run("a", "h")], &actual),
            vec![Action::Remove {
                id: "1".into(),
                name: "gone-x".into(),
                owner: ComponentKey::new("gone", "x")
            }]
        );
    }

    #[test]
    fn a_second_container_labelled_for_a_wanted_component_is_removed() {
        let dup = Actual {
            name: "renamed".into(),
            ..ours("7", "svc", "a", "h", State::Running)
        };
        let actual = [ours("2", "svc", "a", "h", State::Running), dup];
        assert_eq!(
            p(&[run("a", "h")], &actual),
            vec![Action::Remove {
                id: "7".into(),
                name: "renamed".into(),
                owner: key("a")
            }]
        );
    }

    #[test]
    fn backoff_holds_back_only_actions_that_bring_a_component_up() {
        let now = Instant::now();
        let until = now + Duration::from_secs(5);
        let mut book = Book::default();
        book.retry_at.insert(key("a"), until);
        book.retry_at.insert(key("b"), until);
        book.retry_at.insert(key("c"), now - Duration::from_secs(1));
        let desired = [
            run("a", "h"),
            want("b", "h", DesiredState::Stopped, RestartPolicy::No),
            run("c", "h"),
        ];
        let actual = [ours("2", "svc", "b", "h", State::Running)];
        let actions = plan(&desired, &actual, NODE, &book, now).actions;
        assert_eq!(
            actions,
            vec![
                Action::Wait {
                    key: key("a"),
                    until,
                    reason: WaitReason::Backoff
                },
                Action::Stop {
                    key: key("b"),
                    id: "2".into(),
                    strays: vec![]
                },
                Action::Create {
                    key: key("c"),
                    strays: vec![]
                },
            ]
        );
    }
}

#[cfg(test)]
mod proptests;
