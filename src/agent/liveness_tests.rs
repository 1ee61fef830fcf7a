//! The loop's liveness under storms, hangs and signals, and `--once` taking the same
//! actions as the daemon's first pass — the fake runtime under a paused tokio clock.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::tests::{start, start_with, Harness};
use super::*;
use crate::container::{
    LABEL_COMPONENT, LABEL_MANAGED, LABEL_NODE, LABEL_REGISTRY, LABEL_SERVICE, LABEL_SPEC_HASH,
};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::State;
use crate::spec::{parse_service, DesiredState};

const ONE: &str = "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n";

/// A service of `n` components `c0`..: containers `big-c0`...
fn many(n: usize) -> String {
    let mut s = String::from("name = \"big\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i}\"\nimage = \"img\"\n"
        ));
    }
    s
}

/// Lets virtual time pass in small steps (the loop's tasks run in between).
async fn pass_time(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` every 10 ms of virtual time; returns how long it took, or panics.
async fn within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

impl Harness {
    /// Removes a container behind the agent's back and sends podman's `remove` event.
    async fn removed(&self, name: &str) {
        let c = self.rt.by_name(name).expect("container exists");
        self.rt
            .state
            .lock()
            .unwrap()
            .containers
            .remove(&c.actual.id);
        self.event("remove", &c).await;
    }

    fn running(&self, name: &str) -> bool {
        self.rt
            .by_name(name)
            .is_some_and(|c| c.actual.state == State::Running)
    }

    fn creates(&self) -> usize {
        let st = self.rt.state.lock().unwrap();
        st.ops.iter().filter(|(op, _)| *op == "create").count()
    }

    fn other_registry(&self) -> Registry {
        Registry::open(&self.dir.path().join("registry.db")).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_podman_is_judged_down_by_a_ping_and_repairs_resume_at_once_when_it_answers() {
    let h = start(ONE, FakeRuntime::with_images(&["img"])).await;
    within("first bring-up", Duration::from_secs(2), || {
        h.running("s-ok")
    })
    .await;
    h.rt.hang(true);
    h.removed("s-ok").await;
    pass_time(Duration::from_secs(70)).await;
    assert!(
        h.rt.by_name("s-ok").is_none(),
        "nothing can happen while podman hangs"
    );
    h.rt.hang(false);
    let took = within(
        "the repair after podman answers",
        Duration::from_secs(1),
        || h.running("s-ok"),
    )
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    // And later work still happens: the loop did not give up on podman.
    h.removed("s-ok").await;
    within("a later repair", Duration::from_secs(1), || {
        h.running("s-ok")
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_error_that_says_unreachable_leaves_the_agent_reconciling() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state
        .lock()
        .unwrap()
        .failing_start
        .insert("s-crash".into(), "500: network is unreachable".into());
    let h = start(super::tests::SERVICE, rt).await;
    within("the healthy one up", Duration::from_secs(2), || {
        h.running("s-ok")
    })
    .await;
    pass_time(Duration::from_secs(1)).await;
    assert!(h.rt.calls("start") >= 1);
    h.removed("s-ok").await;
    within("the healthy one repaired", Duration::from_secs(1), || {
        h.running("s-ok")
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_storm_while_podman_hangs_never_blocks_shutdown_and_nothing_starts_after_it() {
    let h = start(ONE, FakeRuntime::with_images(&["img"])).await;
    within("first bring-up", Duration::from_secs(2), || {
        h.running("s-ok")
    })
    .await;
    h.rt.hang(true);
    h.removed("s-ok").await;
    for _ in 0..200 {
        h.controls.reload.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let creates = h.creates();
    let t = Instant::now();
    h.controls.shutdown.cancel();
    let Harness { rt, task, .. } = h;
    task.await.unwrap().unwrap();
    assert!(
        t.elapsed() <= DRAIN_TIMEOUT + Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    rt.hang(false);
    pass_time(Duration::from_secs(5)).await;
    let after = rt
        .state
        .lock()
        .unwrap()
        .ops
        .iter()
        .filter(|(op, _)| *op == "create")
        .count();
    assert_eq!(after, creates, "a create after the shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_mass_recovery_lets_only_the_operations_under_way_finish() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().op_delay = Duration::from_millis(500);
    let h = start(&many(60), rt).await;
    pass_time(Duration::from_secs(3)).await;
    let before = h.rt.calls("create");
    assert!(before > 0 && before < 60, "{before}");
    let t = Instant::now();
    h.controls.shutdown.cancel();
    h.task.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    pass_time(Duration::from_secs(5)).await;
    let after = h.rt.calls("create");
    assert!(
        after - before <= 4,
        "{} creates began after the signal (concurrency is 4)",
        after - before
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_storm_is_a_few_passes_not_one_per_event() {
    let h = start(&many(100), FakeRuntime::with_images(&["img"])).await;
    within("all up", Duration::from_secs(10), || {
        (0..100).all(|i| h.running(&format!("big-c{i}")))
    })
    .await;
    let lists = h.rt.calls("list");
    for i in 0..2000 {
        let c = h.rt.by_name(&format!("big-c{}", i % 100)).unwrap();
        h.event("die", &c).await;
    }
    pass_time(Duration::from_secs(2)).await;
    // Each turn of the loop takes every event waiting; with the fake's instant list a
    // pass can follow each turn, still at most one per 50 events (one per event before).
    let passes = h.rt.calls("list") - lists;
    assert!(
        (1..=40).contains(&passes),
        "{passes} passes for 2000 events"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_mass_recovery_goes_ahead_of_the_creates_waiting() {
    let rt = FakeRuntime::with_images(&["img"]);
    // A bring-up takes 4 s (create 2 s, start 2 s): all four slots stay busy.
    rt.state.lock().unwrap().op_delay = Duration::from_secs(2);
    let h = start(&many(100), rt).await;
    within("the first up", Duration::from_secs(10), || {
        h.running("big-c0")
    })
    .await;
    h.other_registry()
        .set_desired("big", Some("c0"), DesiredState::Stopped)
        .unwrap();
    // SQLite commits on a real thread; the poll is every 250 ms of virtual time.
    let took = within("the stop applied", Duration::from_secs(1), || {
        !h.running("big-c0")
    })
    .await;
    assert!(
        (0..100).any(|i| h.rt.by_name(&format!("big-c{i}")).is_none()),
        "the recovery was over before the stop ({took:?}): the test proves nothing"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_is_applied_at_once_even_while_podman_takes_seconds_to_list() {
    let h = start(&many(20), FakeRuntime::with_images(&["img"])).await;
    within("all up", Duration::from_secs(5), || {
        (0..20).all(|i| h.running(&format!("big-c{i}")))
    })
    .await;
    // From now on every list takes 5 s, as under an `rm -af` storm; one is under way.
    h.rt.state.lock().unwrap().list_delay = Duration::from_secs(5);
    h.removed("big-c19").await;
    pass_time(Duration::from_millis(100)).await;
    h.other_registry()
        .set_desired("big", Some("c3"), DesiredState::Stopped)
        .unwrap();
    within("the stop applied", Duration::from_secs(1), || {
        !h.running("big-c3")
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_of_podman_pings_is_no_storm_of_pings() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().unavailable = true;
    let h = start(ONE, rt).await;
    pass_time(Duration::from_secs(10)).await;
    let pings = h.rt.calls("ping");
    // Every 0.1 s doubling to 0.5 s: about 20 in 10 s, never a tight loop.
    assert!((10..=40).contains(&pings), "{pings} pings in 10 s");
    assert_eq!(
        h.rt.calls("list"),
        0,
        "nothing is listed while podman is down"
    );
    h.rt.state.lock().unwrap().unavailable = false;
    within("up after podman answers", Duration::from_secs(1), || {
        h.running("s-ok")
    })
    .await;
    h.stop().await;
}

// `--once` and the daemon's first pass take the same actions for the same state.

const SERVICES: &[(&str, &[&str])] = &[("a", &["x", "y"]), ("b", &["b", "z"])];

#[derive(Debug, Clone)]
enum Holder {
    Absent,
    Ours { state: usize, fresh: bool },
    NotOurs { state: usize },
}

fn state(i: usize) -> State {
    [
        State::Running,
        State::Exited,
        State::Created,
        State::Paused,
        State::Other("stopping".into()),
    ][i % 5]
        .clone()
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        Just(Holder::Absent),
        (0..5usize, any::<bool>()).prop_map(|(state, fresh)| Holder::Ours { state, fresh }),
        (0..5usize).prop_map(|state| Holder::NotOurs { state }),
    ]
}

/// The registry's services with random desired states, and the runtime's containers.
fn scenario() -> impl Strategy<Value = (Vec<bool>, Vec<Holder>, Vec<usize>)> {
    (
        prop::collection::vec(any::<bool>(), 4),
        prop::collection::vec(holder(), 4),
        // Orphans of ours (a component no longer in the registry), by state.
        prop::collection::vec(0..5usize, 0..3),
    )
}

fn labels(
    service: &str,
    component: &str,
    hash: &str,
) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_MANAGED, "true"),
        (LABEL_NODE, "n1"),
        (LABEL_SERVICE, service),
        (LABEL_COMPONENT, component),
        (LABEL_SPEC_HASH, hash),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs the scenario with `once` or as the daemon, and returns the runtime's operations.
fn run_scenario(
    (running, holders, orphans): &(Vec<bool>, Vec<Holder>, Vec<usize>),
    once: bool,
) -> Vec<(&'static str, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::tests::config(dir.path());
        let mut reg = Registry::open(&cfg.database.path).unwrap();
        let mut files = Vec::new();
        for (s, comps) in SERVICES {
            let mut text = format!("name = \"{s}\"\n");
            for c in *comps {
                text.push_str(&format!(
                    "[[components]]\nname = \"{c}\"\nimage = \"img\"\n"
                ));
            }
            files.push(parse_service(std::path::Path::new("s.toml"), &text).unwrap());
        }
        reg.apply(&files).unwrap();
        let fake = FakeRuntime::with_images(&["img"]);
        let services = reg.services().unwrap();
        let us = reg.identity().unwrap().us("n1");
        let mut i = 0;
        for s in &services {
            for c in &s.components {
                if !running[i] {
                    reg.set_desired(&s.name, Some(&c.name), DesiredState::Stopped)
                        .unwrap();
                }
                let spec = ContainerSpec::build(&us, &s.name, c);
                match &holders[i] {
                    Holder::Absent => {}
                    Holder::Ours { state: st, fresh } => {
                        let hash = if *fresh { spec.spec_hash() } else { "old" };
                        let mut labels = labels(&s.name, &c.name, hash);
                        labels.insert(LABEL_REGISTRY.into(), us.registry.clone());
                        fake.insert(&spec.name, state(*st), labels);
                    }
                    Holder::NotOurs { state: st } => {
                        fake.insert(&spec.name, state(*st), Default::default());
                    }
                }
                i += 1;
            }
        }
        for (n, st) in orphans.iter().enumerate() {
            let name = format!("a-gone{n}");
            let mut labels = labels("a", &format!("gone{n}"), "h");
            labels.insert(LABEL_REGISTRY.into(), us.registry.clone());
            fake.insert(&name, state(*st), labels);
        }
        let fake = Arc::new(fake);
        let agent =
            Agent::new(Context::new(fake.clone(), &cfg), cfg, dir.path().join("x")).unwrap();
        if once {
            agent.once(Duration::from_secs(300)).await.unwrap();
        } else {
            let controls = Controls::default();
            let task = tokio::spawn(agent.run(controls.clone()));
            fake.event_sender().send(Trigger::Connected).await.unwrap();
            // Well inside the first backoff step (1 s): only the first pass acts.
            pass_time(Duration::from_millis(500)).await;
            controls.shutdown.cancel();
            task.await.unwrap().unwrap();
        }
        let mut ops = fake.state.lock().unwrap().ops.clone();
        ops.sort();
        ops
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn once_takes_the_same_actions_as_the_daemons_first_pass(s in scenario()) {
        let once = run_scenario(&s, true);
        let daemon = run_scenario(&s, false);
        prop_assert_eq!(once, daemon);
    }
}

#[test]
fn the_scenario_runner_sees_actions() {
    // A sanity check of the property's harness: an empty runtime means a create per
    // running component, whichever way it runs.
    let s = (
        vec![true, true, false, true],
        vec![Holder::Absent; 4],
        vec![0],
    );
    let ops = run_scenario(&s, true);
    assert_eq!(
        ops.iter().filter(|(o, _)| *o == "create").count(),
        3,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|(o, _)| *o == "remove").count(),
        1,
        "{ops:?}"
    );
    assert_eq!(ops, run_scenario(&s, false));
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_cancels_a_hung_list_at_once() {
    let rt = FakeRuntime::with_images(&["img"]);
    let h = start_with(ONE, rt, |_| {}).await;
    within("first bring-up", Duration::from_secs(2), || {
        h.running("s-ok")
    })
    .await;
    h.rt.hang(true);
    h.triggers.send(Trigger::Connected).await.unwrap();
    pass_time(Duration::from_secs(1)).await;
    let t = Instant::now();
    h.controls.shutdown.cancel();
    h.task.await.unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

// Readiness keeps its promise (docs/design.md §5.4).

impl Harness {
    fn readies(&self) -> Vec<String> {
        let sent = self.notified.lock().unwrap();
        sent.iter()
            .filter(|m| m.contains("READY=1"))
            .cloned()
            .collect()
    }
}

const OK_AND_BAD: &str = "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n\
     [[components]]\nname = \"bad\"\nimage = \"img\"\n";

#[tokio::test(start_paused = true)]
async fn ready_waits_for_every_component_that_can_come_up_until_the_timeout() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state
        .lock()
        .unwrap()
        .failing_start
        .insert("s-bad".into(), "500: crun: cannot start".into());
    let h = start_with(OK_AND_BAD, rt, |c| {
        c.reconcile.ready_timeout = Duration::from_secs(20)
    })
    .await;
    within("the healthy one up", Duration::from_secs(2), || {
        h.running("s-ok")
    })
    .await;
    pass_time(Duration::from_secs(15)).await;
    assert!(
        h.readies().is_empty(),
        "READY with s/bad down: {:?}",
        h.readies()
    );
    within("READY at the timeout", Duration::from_secs(6), || {
        !h.readies().is_empty()
    })
    .await;
    let ready = &h.readies()[0];
    assert!(
        ready.contains("still missing: s/bad (failed: ") && ready.contains("cannot start"),
        "{ready}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_component_that_needs_an_operator_does_not_hold_readiness_back() {
    let text = "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n\
                [[components]]\nname = \"noimg\"\nimage = \"absent\"\n";
    let h = start(text, FakeRuntime::with_images(&["img"])).await;
    within("READY", Duration::from_secs(2), || !h.readies().is_empty()).await;
    assert!(h.running("s-ok"));
    let ready = &h.readies()[0];
    assert!(
        ready.contains("STATUS=1 running, 0 backing off, 1 failed"),
        "{ready}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_podman_down_ready_comes_only_at_the_timeout_and_says_so() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().unavailable = true;
    let h = start_with(ONE, rt, |c| {
        c.reconcile.ready_timeout = Duration::from_secs(30)
    })
    .await;
    pass_time(Duration::from_secs(29)).await;
    assert!(h.readies().is_empty(), "{:?}", h.readies());
    within("READY at the timeout", Duration::from_secs(2), || {
        !h.readies().is_empty()
    })
    .await;
    let ready = &h.readies()[0];
    assert!(
        ready.contains("STATUS=waiting for podman")
            && ready.contains("still missing: s/ok (not seen yet)"),
        "{ready}"
    );
    h.stop().await;
}
