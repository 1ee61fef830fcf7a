//! The agent's loop driven with the fake runtime under a paused tokio clock.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{Event, State};
use crate::spec::parse_service;

pub(super) struct Harness {
    pub rt: Arc<FakeRuntime>,
    pub triggers: mpsc::Sender<Trigger>,
    pub controls: Controls,
    pub task: tokio::task::JoinHandle<Result<(), Failure>>,
    pub dir: tempfile::TempDir,
    /// What the agent sent to the service manager.
    pub notified: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub(super) const SERVICE: &str = r#"
name = "s"
[[components]]
name = "crash"
image = "img"
[[components]]
name = "ok"
image = "img"
"#;

pub(super) fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.agent.node = "n1".into();
    c.database.path = dir.join("registry.db");
    c.reconcile.interval = Duration::from_secs(3600);
    c.reconcile.backoff_initial = Duration::from_secs(1);
    c.reconcile.backoff_max = Duration::from_secs(60);
    c
}

pub(super) async fn start(service: &str, rt: FakeRuntime) -> Harness {
    start_with(service, rt, |_| {}).await
}

pub(super) async fn start_with(
    service: &str,
    rt: FakeRuntime,
    configure: impl FnOnce(&mut Config),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    configure(&mut cfg);
    let mut reg = Registry::open(&cfg.database.path).unwrap();
    reg.apply(&[parse_service(std::path::Path::new("s.toml"), service).unwrap()])
        .unwrap();
    let rt = Arc::new(rt);
    let d = Agent::new(
        Context::new(rt.clone(), &cfg),
        cfg,
        dir.path().join("none.toml"),
    )
    .unwrap();
    let notified = d.notifier.sent.clone();
    let triggers = rt.event_sender();
    let controls = Controls::default();
    let task = tokio::spawn(d.run(controls.clone()));
    triggers.send(Trigger::Connected).await.unwrap();
    Harness {
        notified,
        rt,
        triggers,
        controls,
        task,
        dir,
    }
}

impl Harness {
    /// Sends the event podman would send for a container.
    pub(super) async fn event(&self, action: &str, c: &crate::runtime::fake::FakeContainer) {
        self.triggers
            .send(Trigger::Event(Event {
                action: action.into(),
                id: c.actual.id.clone(),
                name: c.actual.name.clone(),
                labels: c.actual.labels.clone(),
                time: std::time::SystemTime::now(),
            }))
            .await
            .unwrap();
    }

    /// Sends the `die` event podman would send for the named container.
    async fn died(&self, name: &str) {
        let c = self.rt.by_name(name).expect("container exists");
        self.event("die", &c).await;
    }

    fn starts_of(&self, name: &str) -> Vec<Instant> {
        let st = self.rt.state.lock().unwrap();
        st.started
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    }

    pub(super) async fn stop(self) {
        self.controls.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        drop(self.dir);
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_follows_the_backoff_schedule_and_never_slows_a_neighbour() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().crashing.insert("s-crash".into());
    let h = start(SERVICE, rt).await;
    let t0 = Instant::now();
    let mut seen = 0;
    let mut killed_at = None;
    while t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let n = h.starts_of("s-crash").len();
        if n > seen {
            seen = n;
            h.died("s-crash").await;
        }
        if killed_at.is_none() && t0.elapsed() >= Duration::from_secs(5) {
            h.rt.set_state("s-ok", State::Exited);
            h.died("s-ok").await;
            killed_at = Some(Instant::now());
        }
    }
    let starts = h.starts_of("s-crash");
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // Delays 1, 2, 4, 8 s, each with up to +100 % jitter: 0, [1,2), [3,6), [7,14), [15,30).
    assert!((4..=5).contains(&starts.len()), "{gaps:?}");
    for (i, g) in gaps.iter().enumerate() {
        let d = 2f64.powi(i as i32);
        assert!(
            *g >= d && *g < 2.0 * d + 0.05,
            "gap {i} = {g} for delay {d}: {gaps:?}"
        );
    }
    let ok = h.starts_of("s-ok");
    assert_eq!(ok.len(), 2, "started once, restarted once after the kill");
    let repair = ok[1] - killed_at.unwrap();
    assert!(
        repair < Duration::from_millis(50),
        "neighbour repaired after {repair:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn duplicate_triggers_collapse_and_one_component_never_has_two_operations() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().op_delay = Duration::from_secs(2);
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        rt,
    )
    .await;
    // While the create (2 s) is in flight, a storm of triggers for the same component.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..50 {
        h.triggers.send(Trigger::Connected).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.rt.calls("create"), 1);
    assert_eq!(h.rt.calls("start"), 1);
    assert_eq!(h.rt.state.lock().unwrap().max_in_flight_per_name, 1);
    assert_eq!(h.rt.by_name("s-ok").unwrap().actual.state, State::Running);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_registry_change_from_another_connection_is_picked_up_within_a_second() {
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        FakeRuntime::with_images(&["img"]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.rt.by_name("s-ok").is_some());
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .apply(&[parse_service(
            std::path::Path::new("t.toml"),
            "name = \"t\"\n[[components]]\nname = \"t\"\nimage = \"img\"\n",
        )
        .unwrap()])
        .unwrap();
    // SQLite runs on real threads: let its commit land, then advance virtual time.
    let t = Instant::now();
    while h.rt.by_name("t").is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "not picked up within a second"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_operations_that_outlast_the_drain_timeout() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().op_delay = Duration::from_secs(60);
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        rt,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    h.controls.shutdown.cancel();
    h.task.await.unwrap().unwrap();
    let took = t.elapsed();
    assert!(
        took >= DRAIN_TIMEOUT && took < DRAIN_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn work_planned_during_an_operation_is_done_when_it_finishes() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().op_delay = Duration::from_secs(5);
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        rt,
    )
    .await;
    // While the create and start (5 s each) are under way, the service is removed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other.remove("s").unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(11) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No event and no resync tick (1 h) came: the removal still happened.
    assert!(
        h.rt.by_name("s-ok").is_none(),
        "the container outlived its service: list {} create {} remove {}",
        h.rt.calls("list"),
        h.rt.calls("create"),
        h.rt.calls("remove")
    );
    assert_eq!(h.rt.calls("remove"), 1);
    // The start finished after the removal: what it reported is of a component no longer
    // wanted, counted nowhere (the soak's seed 1 saw "5 running" of 4 this way).
    let last = h
        .notified
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m.contains("STATUS="))
        .cloned()
        .unwrap_or_default();
    assert!(
        last.contains("STATUS=0 running, 0 backing off, 0 failed"),
        "{last}"
    );
    let rows = other.statuses().unwrap();
    assert!(
        rows.is_empty(),
        "status rows of a removed service: {rows:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn status_writes_do_not_make_the_daemon_reload_or_pass_again() {
    let h = start(SERVICE, FakeRuntime::with_images(&["img"])).await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One pass brought both components up; the status written for them (on the status
    // writer's connection, which changes data_version) planned nothing more.
    assert!(h.rt.by_name("s-ok").is_some());
    assert_eq!(h.rt.calls("list"), 1);
    // A change of the desired state still does.
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .set_desired("s", Some("ok"), crate::spec::DesiredState::Stopped)
        .unwrap();
    let t = Instant::now();
    while h.rt.calls("list") < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the change was not picked up"
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_container_removed_by_someone_is_replaced_without_waiting_out_the_backoff() {
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        FakeRuntime::with_images(&["img"]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = h.rt.by_name("s-ok").unwrap();
    // Removed 0.1 s after its bring-up, well inside the first backoff step (1-2 s).
    h.rt.remove(&c.actual.id).await.unwrap();
    let removed = Instant::now();
    h.triggers
        .send(Trigger::Event(Event {
            action: "remove".into(),
            id: c.actual.id.clone(),
            name: "s-ok".into(),
            labels: c.actual.labels.clone(),
            time: std::time::SystemTime::now(),
        }))
        .await
        .unwrap();
    while h.rt.by_name("s-ok").is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            removed.elapsed() < Duration::from_millis(500),
            "waited for the backoff"
        );
    }
    h.stop().await;
}

/// A chain of `started` dependencies: nothing but the agent's own bring-up says that a
/// link is up (podman's `start` is not an event the agent follows).
const CHAIN: &str = r#"
name = "s"
[[components]]
name = "db"
image = "img"
[[components]]
name = "app"
image = "img"
depends_on = { db = "started" }
[[components]]
name = "worker"
image = "img"
depends_on = { app = "started" }
"#;

/// `--once` has no events: a component waiting for another to start is planned when that
/// one is brought up, down a chain (the last link has nothing else to wake it).
#[tokio::test(start_paused = true)]
async fn once_brings_up_a_chain_of_started_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut reg = Registry::open(&cfg.database.path).unwrap();
    reg.apply(&[parse_service(std::path::Path::new("s.toml"), CHAIN).unwrap()])
        .unwrap();
    let rt = Arc::new(FakeRuntime::with_images(&["img"]));
    let agent = Agent::new(
        Context::new(rt.clone(), &cfg),
        cfg,
        dir.path().join("none.toml"),
    )
    .unwrap();
    let report = agent.once(Duration::from_secs(60)).await.unwrap();
    let states: Vec<(String, Status)> = report
        .pass
        .components
        .iter()
        .map(|r| (r.key.to_string(), r.status))
        .collect();
    assert_eq!(
        states,
        [
            ("s/app".to_string(), Status::Running),
            ("s/db".to_string(), Status::Running),
            ("s/worker".to_string(), Status::Running),
        ],
        "{report:?}"
    );
}

/// The daemon likewise plans each link of the chain when the one before is up, not at the
/// next resync (an hour here).
#[tokio::test(start_paused = true)]
async fn the_daemon_brings_up_a_chain_of_started_dependencies_without_waiting_for_a_resync() {
    let h = start(CHAIN, FakeRuntime::with_images(&["img"])).await;
    let t0 = Instant::now();
    let worker_up = || {
        h.rt.state
            .lock()
            .unwrap()
            .ops
            .iter()
            .any(|(op, name)| *op == "create" && name == "s-worker")
    };
    while !worker_up() && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "s-worker created after {:?}: {:?}",
        t0.elapsed(),
        h.rt.state.lock().unwrap().ops
    );
    h.stop().await;
}

/// Waits (paused clock) until `name` is created, up to 60 s; the time it took.
async fn created_after(h: &Harness, name: &str) -> Duration {
    let t0 = Instant::now();
    let created = || {
        h.rt.state
            .lock()
            .unwrap()
            .ops
            .iter()
            .any(|(op, n)| *op == "create" && n == name)
    };
    while !created() && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// Each link of a chain is planned from the last list as soon as the one before is up, not
/// from a fresh list per link: with lists taking 2 s (podman under load), the worker is
/// created right after the first pass's list, not after three of them.
#[tokio::test(start_paused = true)]
async fn a_chain_of_started_dependencies_waits_for_no_list_per_link() {
    let rt = FakeRuntime::with_images(&["img"]);
    rt.state.lock().unwrap().list_delay = Duration::from_secs(2);
    let h = start(CHAIN, rt).await;
    let took = created_after(&h, "s-worker").await;
    assert!(
        took < Duration::from_millis(2500),
        "s-worker created after {took:?}: {:?}",
        h.rt.state.lock().unwrap().ops
    );
    h.stop().await;
}

/// The same for `"healthy"`: the app is created when the db's first probe passes, not
/// after the list that transition asks for.
#[tokio::test(start_paused = true)]
async fn a_dependent_is_created_when_its_dependency_turns_healthy_without_a_list() {
    const STACK: &str = r#"
name = "s"
[[components]]
name = "db"
image = "img"
[components.health]
test = ["CMD", "check"]
interval = "10s"
start_interval = "1s"
[[components]]
name = "app"
image = "img"
depends_on = { db = "healthy" }
"#;
    let rt = FakeRuntime::with_images(&["img"]);
    {
        let mut st = rt.state.lock().unwrap();
        st.list_delay = Duration::from_secs(2);
        st.exec_script
            .push_back(crate::runtime::fake::FakeExec::exits(0, ""));
    }
    let h = start(STACK, rt).await;
    let took = created_after(&h, "s-app").await;
    // The first list (2 s), the db's first probe (1 s ± 10 %): the app follows at once
    // (a list after the transition would make it 5 s).
    assert!(
        took < Duration::from_millis(3500),
        "s-app created after {took:?}: {:?}",
        h.rt.state.lock().unwrap().ops
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_service_removed_after_podman_lost_its_containers_takes_its_network() {
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        FakeRuntime::with_images(&["img"]),
    )
    .await;
    // A wanted service whose container is not there (its image missing): its network,
    // unused, stays.
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .apply(&[parse_service(
            std::path::Path::new("w.toml"),
            "name = \"w\"\n[[components]]\nname = \"w\"\nimage = \"absent\"\n",
        )
        .unwrap()])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.rt.by_name("s-ok").is_some());
    assert!(h.rt.by_name("w-w").is_none());
    let made = h.rt.state.lock().unwrap().network_labels.clone();
    assert!(made.contains_key("mcp-s"), "{made:?}");
    {
        let mut st = h.rt.state.lock().unwrap();
        st.networks.insert("mcp-w".into());
        let mut l = made["mcp-s"].clone();
        l.insert(crate::container::LABEL_SERVICE.into(), "w".into());
        st.network_labels.insert("mcp-w".into(), l);
    }
    // A network of the same name and service another node made is not ours.
    let mut theirs = made["mcp-s"].clone();
    theirs.insert(crate::container::LABEL_NODE.into(), "n2".into());
    {
        let mut st = h.rt.state.lock().unwrap();
        st.networks.insert("mcp-gone".into());
        let mut l = made["mcp-s"].clone();
        l.insert(crate::container::LABEL_SERVICE.into(), "gone".into());
        st.network_labels.insert("mcp-gone".into(), l);
        st.networks.insert("mcp-theirs".into());
        st.network_labels.insert("mcp-theirs".into(), {
            let mut t = theirs.clone();
            t.insert(crate::container::LABEL_SERVICE.into(), "theirs".into());
            t
        });
        // Podman forgets the container (no event: its database is gone).
        st.containers.clear();
    }
    other.remove("s").unwrap();
    let t0 = Instant::now();
    while h.rt.state.lock().unwrap().networks.contains("mcp-s") {
        assert!(t0.elapsed() < Duration::from_secs(5), "mcp-s kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = h.rt.state.lock().unwrap().networks.clone();
    assert!(!left.contains("mcp-gone"), "{left:?}");
    assert!(left.contains("mcp-theirs"), "{left:?}");
    assert!(
        left.contains("mcp-w"),
        "a wanted service's network went: {left:?}"
    );
    assert!(h.rt.by_name("s-ok").is_none());
    // Swept once more, for the removal of the container the last list had shown (a
    // failed network removal there would be made again); then no more.
    h.triggers.send(Trigger::Connected).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sweeps, lists) = (h.rt.calls("networks"), h.rt.calls("list"));
    h.triggers.send(Trigger::Connected).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.rt.calls("list") > lists, "no pass ran");
    assert_eq!(h.rt.calls("networks"), sweeps);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_network_removal_that_fails_is_swept_again_at_the_next_pass() {
    // Service w never had a container (its image is missing): its removal has no
    // container removal behind it, only the sweep.
    let h = start(
        "name = \"s\"\n[[components]]\nname = \"ok\"\nimage = \"img\"\n",
        FakeRuntime::with_images(&["img"]),
    )
    .await;
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .apply(&[parse_service(
            std::path::Path::new("w.toml"),
            "name = \"w\"\n[[components]]\nname = \"w\"\nimage = \"absent\"\n",
        )
        .unwrap()])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let mut st = h.rt.state.lock().unwrap();
        let mut l = st.network_labels["mcp-s"].clone();
        l.insert(crate::container::LABEL_SERVICE.into(), "w".into());
        st.networks.insert("mcp-w".into());
        st.network_labels.insert("mcp-w".into(), l);
        st.failing_network_removals.insert("mcp-w".into());
    }
    let sweeps = h.rt.calls("networks");
    other.remove("w").unwrap();
    let t0 = Instant::now();
    while h.rt.calls("remove_network") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no sweep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.rt.calls("networks"), sweeps + 1);
    assert!(h.rt.state.lock().unwrap().networks.contains("mcp-w"));
    h.rt.state.lock().unwrap().failing_network_removals.clear();
    h.triggers.send(Trigger::Connected).await.unwrap();
    let t0 = Instant::now();
    while h.rt.state.lock().unwrap().networks.contains("mcp-w") {
        assert!(t0.elapsed() < Duration::from_secs(5), "not swept again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.rt.state.lock().unwrap().networks.contains("mcp-s"));
    h.stop().await;
}
