//! The plan's rules, one case at a time.

use super::*;
use crate::container::{
    Us, LABEL_COMPONENT, LABEL_MANAGED, LABEL_NODE, LABEL_REGISTRY, LABEL_SERVICE, LABEL_SPEC_HASH,
};

const NODE: &str = "n1";
const REGISTRY: &str = "r1";

pub(super) fn us() -> Us {
    Us::new(NODE, REGISTRY)
}

pub(super) fn key(c: &str) -> ComponentKey {
    ComponentKey::new("svc", c)
}

fn want(c: &str, hash: &str, state: DesiredState, restart: RestartPolicy) -> Desired {
    Desired {
        key: key(c),
        container_name: format!("svc-{c}"),
        spec_hash: hash.into(),
        state,
        restart,
        blocked: None,
        oneshot: false,
        checked: false,
        depends: Vec::new(),
    }
}

pub(super) fn run(c: &str, hash: &str) -> Desired {
    want(c, hash, DesiredState::Running, RestartPolicy::No)
}

pub(super) fn ours(id: &str, svc: &str, c: &str, hash: &str, state: State) -> Actual {
    Actual {
        id: id.into(),
        name: format!("{svc}-{c}"),
        state,
        labels: BTreeMap::from([
            (LABEL_MANAGED.into(), "true".into()),
            (LABEL_NODE.into(), NODE.into()),
            (LABEL_REGISTRY.into(), REGISTRY.into()),
            (LABEL_SERVICE.into(), svc.into()),
            (LABEL_COMPONENT.into(), c.into()),
            (LABEL_SPEC_HASH.into(), hash.into()),
        ]),
        exit_code: None,
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
        exit_code: None,
    }
}

fn p(desired: &[Desired], actual: &[Actual]) -> Vec<Action> {
    plan(desired, actual, &us(), &Book::default(), Instant::now()).actions
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
    let pl = plan(&[d], &[], &us(), &Book::default(), Instant::now());
    assert!(pl.actions.is_empty());
    assert_eq!(pl.in_sync[0].1, InSync::Stopped);
}

#[test]
fn running_with_equal_hash_is_in_sync() {
    let pl = plan(
        &[run("a", "h")],
        &[ours("1", "svc", "a", "h", State::Running)],
        &us(),
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
            &us(),
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
        &us(),
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
        plan(&[d], std::slice::from_ref(&a), &us(), &book, later).actions,
        vec![Action::Start {
            key: key("a"),
            id: "1".into(),
            strays: vec![]
        }]
    );
    // Restart policy "no": no grace.
    let d = run("a", "h");
    assert_eq!(
        plan(&[d], &[a], &us(), &book, now).actions,
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
                id: "9".into(),
                orphan_of: None,
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
            owner: ComponentKey::new("gone", "x"),
            reason: RemoveReason::NotDesired,
            service_gone: true,
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
            owner: key("a"),
            reason: RemoveReason::Duplicate,
            service_gone: false,
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
    let actions = plan(&desired, &actual, &us(), &book, now).actions;
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

#[test]
fn holding_is_the_one_ownership_rule_status_and_plan_share() {
    fn h(a: &Actual) -> Holding<'_> {
        holding(&key("web"), "h1", a, &us())
    }
    assert_eq!(
        h(&ours("1", "svc", "web", "h1", State::Running)),
        Holding::Ours(None)
    );
    assert_eq!(
        h(&ours("1", "svc", "web", "h0", State::Running)),
        Holding::Ours(Some(Drift::SpecChanged))
    );
    assert_eq!(
        h(&ours("1", "svc", "db", "h1", State::Running)),
        Holding::Ours(Some(Drift::Stale))
    );
    assert_eq!(h(&foreign("1", "svc-web", &[])), Holding::NotOurs);
    assert_eq!(
        h(&foreign(
            "1",
            "svc-web",
            &[
                (LABEL_MANAGED, "true"),
                (LABEL_NODE, "other"),
                (LABEL_SERVICE, "svc")
            ]
        )),
        Holding::NotOurs
    );
}

/// `ours` made by another registry's agent (`None`: by an agent older than the label).
fn of_registry(id: &str, c: &str, registry: Option<&str>) -> Actual {
    let mut a = ours(id, "svc", c, "h1", State::Running);
    match registry {
        Some(r) => a.labels.insert(LABEL_REGISTRY.into(), r.into()),
        None => a.labels.remove(LABEL_REGISTRY),
    };
    a
}

#[test]
fn another_registrys_containers_are_never_removed_or_replaced() {
    // A registry lost and made anew: the old one's containers hold the names and are
    // wanted by nobody; none is touched, the components wanted are in conflict.
    let actual = [
        of_registry("1", "web", Some("r0")),
        of_registry("2", "db", Some("r0")),
        of_registry("3", "old", None),
    ];
    assert_eq!(
        p(&[run("web", "h1")], &actual),
        vec![Action::Conflict {
            key: key("web"),
            id: "1".into(),
            orphan_of: Some("r0".into()),
        }]
    );
    assert_eq!(
        holding(&key("web"), "h1", &actual[0], &us()),
        Holding::Orphan(Some("r0"))
    );
    assert_eq!(
        holding(&key("old"), "h1", &actual[2], &us()),
        Holding::Orphan(None)
    );
}

#[test]
fn adopted_and_old_unlabelled_containers_are_ours() {
    let mut us = us();
    us.adopted.insert("1".into());
    us.unlabelled = true;
    let actual = [
        of_registry("1", "web", Some("r0")),
        of_registry("2", "db", Some("r0")),
        of_registry("3", "old", None),
    ];
    let pl = plan(
        &[run("web", "h1")],
        &actual,
        &us,
        &Book::default(),
        Instant::now(),
    );
    // web, adopted, is kept as it is (same spec: no recreate); the unlabelled one of an
    // older agent of this registry goes as no longer wanted; r0's db stays.
    assert_eq!(pl.in_sync.len(), 1);
    assert_eq!(
        pl.actions,
        vec![Action::Remove {
            id: "3".into(),
            name: "svc-old".into(),
            owner: key("old"),
            reason: RemoveReason::NotDesired,
            service_gone: false,
        }]
    );
}

#[test]
fn a_component_whose_files_cannot_be_read_is_reported_and_its_container_left_alone() {
    let blocked = |state| Desired {
        blocked: Some("env_file /x: gone".into()),
        ..want("a", "", state, RestartPolicy::No)
    };
    let missing = Action::ConfigMissing {
        key: key("a"),
        why: "env_file /x: gone".into(),
    };
    // Not created, not recreated (its hash is unknown), not removed.
    assert_eq!(
        p(&[blocked(DesiredState::Running)], &[]),
        vec![missing.clone()]
    );
    let running = ours("c1", "svc", "a", "old", State::Running);
    assert_eq!(
        p(
            &[blocked(DesiredState::Running)],
            std::slice::from_ref(&running)
        ),
        vec![missing]
    );
    // A stop needs no files.
    assert_eq!(
        p(&[blocked(DesiredState::Stopped)], &[running]),
        vec![Action::Stop {
            key: key("a"),
            id: "c1".into(),
            strays: vec![]
        }]
    );
    // A name held by someone else is still a conflict.
    let theirs = foreign("x", "svc-a", &[]);
    assert!(matches!(
        p(&[blocked(DesiredState::Running)], &[theirs])[..],
        [Action::Conflict { .. }]
    ));
}

#[test]
fn removal_reasons_say_what_the_labels_say() {
    assert_eq!(
        RemoveReason::NotDesired.describe(&ComponentKey::new("gone", "x")),
        "labelled as component gone/x, which no active service in the registry has"
    );
    assert_eq!(
        RemoveReason::Duplicate.describe(&key("a")),
        "a duplicate: labelled as component svc/a, whose own container svc-a is there"
    );
}
