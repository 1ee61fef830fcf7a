//! Properties of the plan over random desired and actual states: it never touches a
//! container without our labels, never gives one desired component two actions or one
//! container two, and once applied (to the fake runtime) leaves nothing to do but wait or report
//! conflicts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::container::{
    Us, LABEL_COMPONENT, LABEL_MANAGED, LABEL_NODE, LABEL_REGISTRY, LABEL_SERVICE, LABEL_SPEC_HASH,
};
use crate::runtime::fake::{FakeContainer, FakeRuntime};
use crate::runtime::{Actual, Runtime};
use crate::spec;

const NODE: &str = "n1";
const REGISTRY: &str = "r1";

/// This node's agent for registry r1, which also adopted container id3 (of another
/// registry, when the strategy made one there).
fn us() -> Us {
    let mut us = Us::new(NODE, REGISTRY);
    us.adopted.insert("id3".into());
    us
}
const SERVICES: &[&str] = &["a", "b", "c"];
const COMPONENTS: &[&str] = &["x", "y", "a"];
const HASHES: &[&str] = &["h0", "h1"];

fn key_strategy() -> impl Strategy<Value = ComponentKey> {
    (0..SERVICES.len(), 0..COMPONENTS.len())
        .prop_map(|(s, c)| ComponentKey::new(SERVICES[s], COMPONENTS[c]))
}

fn desired_strategy() -> impl Strategy<Value = Vec<Desired>> {
    prop::collection::vec(
        (key_strategy(), 0..HASHES.len(), any::<bool>(), 0..4usize),
        0..8,
    )
    .prop_map(|v| {
        let mut seen = HashSet::new();
        v.into_iter()
            .filter(|(k, ..)| seen.insert(k.clone()))
            .map(|(key, h, running, r)| Desired {
                oneshot: false,
                checked: false,
                depends: Vec::new(),
                container_name: key.container_name(),
                key,
                spec_hash: HASHES[h].into(),
                state: if running {
                    DesiredState::Running
                } else {
                    DesiredState::Stopped
                },
                restart: [
                    RestartPolicy::No,
                    RestartPolicy::Always,
                    RestartPolicy::OnFailure,
                    RestartPolicy::UnlessStopped,
                ][r],
                blocked: None,
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Labels {
    None,
    Ours(ComponentKey, usize),
    OtherNode(ComponentKey),
    /// This node's, but another registry's (`None`: unlabelled, of an older agent).
    OtherRegistry(ComponentKey, usize, Option<&'static str>),
    ManagedFalse,
}

fn state_strategy() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Running),
        Just(State::Exited),
        Just(State::Created),
        Just(State::Paused),
        Just(State::Restarting),
        Just(State::Other("stopping".into())),
    ]
}

fn actual_strategy() -> impl Strategy<Value = Vec<Actual>> {
    let labels = prop_oneof![
        Just(Labels::None),
        (key_strategy(), 0..HASHES.len()).prop_map(|(k, h)| Labels::Ours(k, h)),
        key_strategy().prop_map(Labels::OtherNode),
        (
            key_strategy(),
            0..HASHES.len(),
            prop_oneof![Just(None), Just(Some("r2"))]
        )
            .prop_map(|(k, h, r)| Labels::OtherRegistry(k, h, r)),
        Just(Labels::ManagedFalse),
    ];
    // Names: a component's own name, or another one (a stray or a stranger).
    let name = prop_oneof![
        key_strategy().prop_map(|k| k.container_name()),
        (0..3usize).prop_map(|i| format!("other-{i}")),
    ];
    prop::collection::vec((name, state_strategy(), labels), 0..10).prop_map(|v| {
        let mut seen = HashSet::new();
        v.into_iter()
            .filter(|(n, ..)| seen.insert(n.clone()))
            .enumerate()
            .map(|(i, (name, state, l))| {
                let mut labels = BTreeMap::new();
                let mut put = |k: &str, v: &str| {
                    labels.insert(k.to_string(), v.to_string());
                };
                match l {
                    Labels::None => {}
                    Labels::ManagedFalse => put(LABEL_MANAGED, "false"),
                    Labels::Ours(k, h) => {
                        put(LABEL_MANAGED, "true");
                        put(LABEL_NODE, NODE);
                        put(LABEL_REGISTRY, REGISTRY);
                        put(LABEL_SERVICE, &k.service);
                        put(LABEL_COMPONENT, &k.component);
                        put(LABEL_SPEC_HASH, HASHES[h]);
                    }
                    Labels::OtherRegistry(k, h, r) => {
                        put(LABEL_MANAGED, "true");
                        put(LABEL_NODE, NODE);
                        if let Some(r) = r {
                            put(LABEL_REGISTRY, r);
                        }
                        put(LABEL_SERVICE, &k.service);
                        put(LABEL_COMPONENT, &k.component);
                        put(LABEL_SPEC_HASH, HASHES[h]);
                    }
                    Labels::OtherNode(k) => {
                        put(LABEL_MANAGED, "true");
                        put(LABEL_NODE, "n2");
                        put(LABEL_SERVICE, &k.service);
                        put(LABEL_COMPONENT, &k.component);
                    }
                }
                Actual {
                    id: format!("id{i}"),
                    name,
                    state,
                    labels,
                    exit_code: None,
                }
            })
            .collect()
    })
}

/// Backoff deadlines (past or future) for some components, and fresh deaths.
fn book_strategy() -> impl Strategy<Value = (Vec<(ComponentKey, bool)>, Vec<usize>)> {
    (
        prop::collection::vec((key_strategy(), any::<bool>()), 0..4),
        prop::collection::vec(0..10usize, 0..3),
    )
}

fn make_book(now: Instant, spec: &(Vec<(ComponentKey, bool)>, Vec<usize>)) -> Book {
    let mut book = Book {
        restart_grace: Duration::from_secs(1),
        ..Default::default()
    };
    for (k, future) in &spec.0 {
        let t = if *future {
            now + Duration::from_secs(30)
        } else {
            now - Duration::from_secs(1)
        };
        book.retry_at.insert(k.clone(), t);
    }
    for i in &spec.1 {
        book.died_at.insert(format!("id{i}"), now);
    }
    book
}

fn is_ours(a: &Actual) -> bool {
    matches!(owner(&a.id, &a.labels, &us()), Owner::Ours { .. })
}

/// Every container an action would remove, stop or replace.
fn touched(a: &Action) -> Vec<&str> {
    match a {
        Action::Remove { id, .. } => vec![id],
        Action::Stop { id, strays, .. } | Action::Restart { id, strays, .. } => {
            std::iter::once(id.as_str())
                .chain(strays.iter().map(String::as_str))
                .collect()
        }
        Action::Recreate { old_id, strays, .. } => std::iter::once(old_id.as_str())
            .chain(strays.iter().map(String::as_str))
            .collect(),
        Action::Start { strays, .. } | Action::Create { strays, .. } => {
            strays.iter().map(String::as_str).collect()
        }
        Action::Conflict { .. }
        | Action::ConfigMissing { .. }
        | Action::Wait { .. }
        | Action::Blocked { .. } => vec![],
    }
}

/// A spec whose hash is the desired one: the fake stores the labels it is given.
fn spec_for(d: &Desired) -> ContainerSpec {
    let c = spec::Component {
        name: d.key.component.clone(),
        image: "img".into(),
        desired_state: d.state,
        network: "bridge".into(),
        user: None,
        restart: d.restart,
        cmd: vec![],
        env: BTreeMap::new(),
        volumes: vec![],
        ports: vec![],
        settings: Default::default(),
        routes: vec![],
    };
    let mut s = ContainerSpec::build(&us(), &d.key.service, &c);
    s.labels.insert(LABEL_SPEC_HASH.into(), d.spec_hash.clone());
    s
}

use crate::container::ContainerSpec;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_never_touches_what_is_not_ours(
        desired in desired_strategy(), actual in actual_strategy(), book in book_strategy()
    ) {
        let now = Instant::now();
        let p = plan(&desired, &actual, &us(), &make_book(now, &book), now);
        let by_id: HashMap<&str, &Actual> = actual.iter().map(|a| (a.id.as_str(), a)).collect();
        for a in &p.actions {
            for id in touched(a) {
                prop_assert!(is_ours(by_id[id]), "{a:?} touches {:?}", by_id[id]);
            }
        }
    }

    #[test]
    fn one_action_per_component_and_per_container(
        desired in desired_strategy(), actual in actual_strategy(), book in book_strategy()
    ) {
        let now = Instant::now();
        let p = plan(&desired, &actual, &us(), &make_book(now, &book), now);
        // Per component: one action at most on its container (the one of its name).
        // Other containers labelled for it (strays, or all of an unwanted component's)
        // are removed one action per container.
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        for a in &p.actions {
            if !matches!(a, Action::Remove { .. }) {
                prop_assert!(keys.insert(a.key().clone()), "two actions for {}: {:?}", a.key(), p.actions);
            }
            for id in touched(a) {
                prop_assert!(ids.insert(id.to_string()), "two actions on {id}: {:?}", p.actions);
            }
        }
        // A component in sync gets no action but, at most, the removal of a stray.
        for (k, ..) in &p.in_sync {
            let acted = p.actions.iter().any(|a| a.key() == k && !matches!(a, Action::Remove { .. }));
            prop_assert!(!acted, "{k} both in sync and acted on: {:?}", p.actions);
        }
    }

    #[test]
    fn applying_the_plan_leaves_only_waits_and_conflicts(
        desired in desired_strategy(), actual in actual_strategy(), book in book_strategy()
    ) {
        let rt = FakeRuntime::with_images(&["img"]);
        {
            let mut st = rt.state.lock().unwrap();
            for a in &actual {
                st.containers.insert(a.id.clone(), FakeContainer { actual: a.clone(), spec: None });
            }
        }
        let now = Instant::now();
        let book = make_book(now, &book);
        let specs: HashMap<ComponentKey, ContainerSpec> =
            desired.iter().map(|d| (d.key.clone(), spec_for(d))).collect();
        let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        tokio.block_on(async {
            let p = plan(&desired, &actual, &us(), &book, now);
            let report = crate::reconcile::execute(&rt, p, &specs, &us(), 4).await;
            prop_assert!(report.components.iter().all(|c| c.status != crate::reconcile::Status::Failed), "{report:?}");
            let after = rt.list().await.unwrap();
            let again = plan(&desired, &after, &us(), &book, now);
            for a in &again.actions {
                prop_assert!(
                    matches!(a, Action::Wait { .. } | Action::Conflict { .. }),
                    "left to do after applying: {a:?}\nbefore: {actual:?}\nafter: {after:?}"
                );
            }
            Ok(())
        })?;
    }
}
