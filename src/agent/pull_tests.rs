//! Pulls as work of their own (issue 13 §7): slow pulls never hold a bring-up slot, one
//! pull per image, a failed pull backs off, and `status` shows `pulling` with the pull's
//! progress — the fake runtime under a paused tokio clock.

use std::time::Duration;

use tokio::time::Instant;

use super::tests::{start_with, Harness};
use super::*;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::State;
use crate::spec::parse_service;

/// Polls `cond` every 10 ms of virtual time; returns how long it took, or panics.
async fn within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

fn running(h: &Harness, name: &str) -> bool {
    h.rt.by_name(name)
        .is_some_and(|c| c.actual.state == State::Running)
}

/// The status row the daemon wrote for `s/<component>`, read as `status` reads it.
fn status_of(h: &Harness, component: &str) -> Option<crate::registry::ComponentStatus> {
    let reg = Registry::open_read_only(&h.dir.path().join("registry.db")).ok()?;
    let statuses = reg.statuses().ok()?;
    statuses
        .into_iter()
        .find(|(k, _)| k.service == "s" && k.component == component)
        .map(|(_, s)| s)
}

/// `n` components `p0`.. each of its own image to pull (`reg/p<i>:1`), then `local`,
/// whose image is in the store.
fn pulled_and_local(n: usize) -> String {
    let mut s = String::from("name = \"s\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"p{i}\"\nimage = \"reg/p{i}:1\"\npull = \"missing\"\n"
        ));
    }
    s.push_str("[[components]]\nname = \"local\"\nimage = \"img\"\n");
    s
}

fn slow_registry(images: impl IntoIterator<Item = String>, delay: Duration) -> FakeRuntime {
    let rt = FakeRuntime::with_images(&["img"]);
    {
        let mut st = rt.state.lock().unwrap();
        st.pullable.extend(images);
        st.pull_delay = delay;
    }
    rt
}

#[tokio::test(start_paused = true)]
async fn slow_pulls_never_delay_a_component_whose_image_is_local() {
    // Six 30 s pulls: more than the 4 bring-up slots. Pulls in bring-up slots would hold
    // `local` (planned last) back for 30 s.
    let rt = slow_registry(
        (0..6).map(|i| format!("reg/p{i}:1")),
        Duration::from_secs(30),
    );
    let h = start_with(&pulled_and_local(6), rt, |_| {}).await;
    let took = within("the local component up", Duration::from_secs(2), || {
        running(&h, "s-local")
    })
    .await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The pulls run in their own slots: `[podman] pull_concurrency`, 2 by default.
    within("two pulls under way", Duration::from_secs(2), || {
        h.rt.state.lock().unwrap().pulls_in_flight == 2
    })
    .await;
    within(
        "every pulled component up",
        Duration::from_secs(120),
        || (0..6).all(|i| running(&h, &format!("s-p{i}"))),
    )
    .await;
    {
        let st = h.rt.state.lock().unwrap();
        assert_eq!(st.max_pulls_in_flight, 2);
        assert_eq!(st.pulls.len(), 6, "{:?}", st.pulls);
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pull_concurrency_is_the_config_s() {
    let rt = slow_registry(
        (0..4).map(|i| format!("reg/p{i}:1")),
        Duration::from_secs(10),
    );
    let h = start_with(&pulled_and_local(4), rt, |c| {
        c.podman.pull_concurrency = crate::config::Positive(3)
    })
    .await;
    within("every pulled component up", Duration::from_secs(60), || {
        (0..4).all(|i| running(&h, &format!("s-p{i}")))
    })
    .await;
    assert_eq!(h.rt.state.lock().unwrap().max_pulls_in_flight, 3);
    h.stop().await;
}

const SHARED: &str = r#"
name = "s"
[[components]]
name = "a"
image = "reg/app:1"
pull = "missing"
[[components]]
name = "b"
image = "reg/app:1"
pull = "missing"
[[components]]
name = "c"
image = "reg/app:1"
pull = "always"
"#;

#[tokio::test(start_paused = true)]
async fn components_of_one_image_cause_one_pull() {
    let rt = slow_registry(["reg/app:1".to_string()], Duration::from_secs(5));
    let h = start_with(SHARED, rt, |_| {}).await;
    within("all three up", Duration::from_secs(20), || {
        ["s-a", "s-b", "s-c"].iter().all(|n| running(&h, n))
    })
    .await;
    {
        let st = h.rt.state.lock().unwrap();
        assert_eq!(st.pulls.len(), 1, "{:?}", st.pulls);
        assert_eq!(st.max_pulls_in_flight, 1);
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn status_shows_pulling_with_the_pull_s_progress() {
    let rt = slow_registry(["reg/app:1".to_string()], Duration::from_secs(10));
    let h = start_with(SHARED, rt, |_| {}).await;
    within("a pulling", Duration::from_secs(2), || {
        status_of(&h, "a").is_some_and(|s| s.state == "pulling")
    })
    .await;
    let first = status_of(&h, "a").unwrap().last_error.unwrap_or_default();
    assert!(first.starts_with("pulling reg/app:1"), "{first}");
    within("the second step shown", Duration::from_secs(8), || {
        status_of(&h, "b").is_some_and(|s| {
            s.state == "pulling"
                && s.last_error.as_deref() == Some("pulling reg/app:1: Downloading layer 2/2")
        })
    })
    .await;
    assert!(
        h.notified
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("3 pulling")),
        "STATUS= says so: {:?}",
        h.notified.lock().unwrap()
    );
    within("pulled and up", Duration::from_secs(20), || {
        status_of(&h, "c").is_some_and(|s| s.state == "running")
    })
    .await;
    assert!(status_of(&h, "a").unwrap().last_error.is_none());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn progress_goes_to_the_loop_only_when_it_changes_and_at_most_once_a_second() {
    // A 3 s pull whose progress changes every millisecond.
    let rt = FakeRuntime::default();
    {
        let mut st = rt.state.lock().unwrap();
        st.pullable.insert("reg/app:1".into());
        st.pull_delay = Duration::from_secs(3);
        st.pull_steps = 3000;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    super::pulls::pull_reporting(&rt, "reg/app:1", tx)
        .await
        .unwrap();
    let mut sent = Vec::new();
    while let Ok((image, line)) = rx.try_recv() {
        assert_eq!(image, "reg/app:1");
        sent.push(line);
    }
    // About one a second (at 0 s, 1 s and 2 s): never the 3000 lines.
    assert!((2..=4).contains(&sent.len()), "{sent:?}");
    assert!(sent.windows(2).all(|w| w[0] != w[1]), "{sent:?}");
    assert!(sent[0].starts_with("Downloading layer "), "{sent:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_image_missing_with_the_reason_and_is_retried_under_the_backoff() {
    let rt = FakeRuntime::with_images(&["img"]);
    let h = start_with(
        "name = \"s\"\n[[components]]\nname = \"a\"\nimage = \"reg/gone:1\"\npull = \"missing\"\n\
         [[components]]\nname = \"local\"\nimage = \"img\"\n",
        rt,
        |_| {},
    )
    .await;
    within("image-missing", Duration::from_secs(2), || {
        status_of(&h, "a").is_some_and(|s| s.state == "image-missing")
    })
    .await;
    let st = status_of(&h, "a").unwrap();
    let why = st.last_error.unwrap_or_default();
    assert!(
        why.contains("its pull failed") && why.contains("manifest unknown"),
        "{why}"
    );
    assert!(st.next_retry_ms.is_some(), "a retry is due");
    assert!(running(&h, "s-local"));
    // No event, no resync (1 h): the retries come from the backoff alone.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let pulls: Vec<Instant> =
        h.rt.state
            .lock()
            .unwrap()
            .pulls
            .iter()
            .map(|p| p.1)
            .collect();
    let gaps: Vec<f64> = pulls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // Delays 1, 2, 4, 8 s, each with up to +100 % jitter.
    assert!((4..=5).contains(&pulls.len()), "{gaps:?}");
    for (i, g) in gaps.iter().enumerate() {
        let d = 2f64.powi(i as i32);
        assert!(
            *g >= d && *g < 2.0 * d + 0.1,
            "gap {i} = {g} for delay {d}: {gaps:?}"
        );
    }
    // The registry has it now: the next retry brings it up.
    h.rt.state
        .lock()
        .unwrap()
        .pullable
        .insert("reg/gone:1".into());
    within("pulled at its next retry", Duration::from_secs(40), || {
        running(&h, "s-a")
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn always_falls_back_to_the_local_image_when_its_pull_fails() {
    let rt = FakeRuntime::with_images(&["img", "local:1"]);
    let h = start_with(
        "name = \"s\"\n[[components]]\nname = \"a\"\nimage = \"local:1\"\npull = \"always\"\n",
        rt,
        |_| {},
    )
    .await;
    within("up on the local image", Duration::from_secs(2), || {
        running(&h, "s-a")
    })
    .await;
    assert_eq!(h.rt.calls("pull"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_pull_cancels_it_at_once() {
    let rt = slow_registry(["reg/app:1".to_string()], Duration::from_secs(3600));
    let h = start_with(SHARED, rt, |_| {}).await;
    within("pulling", Duration::from_secs(2), || {
        h.rt.state.lock().unwrap().pulls_in_flight == 1
    })
    .await;
    let t = Instant::now();
    h.controls.shutdown.cancel();
    h.task.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        h.rt.state.lock().unwrap().pulls_in_flight,
        0,
        "the pull dropped"
    );
}

async fn once_with(
    service: &str,
    rt: FakeRuntime,
    timeout: Duration,
) -> (OnceReport, Arc<FakeRuntime>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = super::tests::config(dir.path());
    let mut reg = Registry::open(&cfg.database.path).unwrap();
    reg.apply(&[parse_service(std::path::Path::new("s.toml"), service).unwrap()])
        .unwrap();
    let rt = Arc::new(rt);
    let agent = Agent::new(
        Context::new(rt.clone(), &cfg),
        cfg,
        dir.path().join("none.toml"),
    )
    .unwrap();
    (agent.once(timeout).await.unwrap(), rt)
}

#[tokio::test(start_paused = true)]
async fn once_pulls_once_per_image_and_brings_the_components_up() {
    let rt = slow_registry(["reg/app:1".to_string()], Duration::from_secs(5));
    let t = Instant::now();
    let (report, rt) = once_with(SHARED, rt, Duration::from_secs(60)).await;
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    assert_eq!(rt.calls("pull"), 1);
    assert_eq!(report.pulls.len(), 1, "{:?}", report.pulls);
    assert_eq!(report.pulls[0].components.len(), 3);
    assert!(report.pulls[0].result.is_ok());
    let s = report.pass.summary();
    assert_eq!(
        (s.recovered, s.failed, s.skipped),
        (3, 0, 0),
        "{:?}",
        report.pass
    );
}

#[tokio::test(start_paused = true)]
async fn once_gives_up_a_pull_at_its_timeout_and_says_it_was_still_pulling() {
    let rt = slow_registry(["reg/p0:1".to_string()], Duration::from_secs(3600));
    let t = Instant::now();
    let (report, _) = once_with(&pulled_and_local(1), rt, Duration::from_secs(3)).await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let s = report.pass.summary();
    assert_eq!((s.recovered, s.failed), (1, 1), "{:?}", report.pass);
    let p0 = report
        .pass
        .components
        .iter()
        .find(|c| c.key.component == "p0")
        .unwrap();
    let why = p0.detail().unwrap();
    assert!(
        why.starts_with("still pulling reg/p0:1: Downloading layer 1/2")
            && why.ends_with("(--timeout ran out)"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn once_reports_a_failed_pull_as_image_missing_with_the_reason() {
    let rt = FakeRuntime::with_images(&["img"]);
    let (report, rt) = once_with(&pulled_and_local(1), rt, Duration::from_secs(60)).await;
    assert_eq!(rt.calls("pull"), 1, "--once tries once");
    let s = report.pass.summary();
    assert_eq!((s.recovered, s.skipped), (1, 1), "{:?}", report.pass);
    assert!(report.pulls[0]
        .result
        .as_ref()
        .is_err_and(|e| e.contains("manifest unknown")));
    let p0 = report
        .pass
        .components
        .iter()
        .find(|c| c.key.component == "p0")
        .unwrap();
    assert_eq!(p0.status, Status::ImageMissing);
    assert!(p0.detail().unwrap().contains("its pull failed"));
}

#[tokio::test(start_paused = true)]
async fn a_new_image_is_pulled_while_the_old_container_keeps_running() {
    let rt = slow_registry(["reg/app:2".to_string()], Duration::from_secs(10));
    rt.state.lock().unwrap().images.insert("reg/app:1".into());
    let one =
        "name = \"s\"\n[[components]]\nname = \"a\"\nimage = \"reg/app:1\"\npull = \"missing\"\n";
    let h = start_with(one, rt, |_| {}).await;
    within("up on the first image", Duration::from_secs(2), || {
        running(&h, "s-a")
    })
    .await;
    let old = h.rt.by_name("s-a").unwrap().actual.id;
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .apply(&[parse_service(
            std::path::Path::new("s.toml"),
            &one.replace("reg/app:1", "reg/app:2"),
        )
        .unwrap()])
        .unwrap();
    within("pulling the new image", Duration::from_secs(3), || {
        status_of(&h, "a").is_some_and(|s| s.state == "pulling")
    })
    .await;
    // The pull takes 10 s; meanwhile the old container serves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = h.rt.by_name("s-a").unwrap();
    assert_eq!(c.actual.id, old);
    assert_eq!(c.actual.state, State::Running);
    within(
        "recreated on the new image",
        Duration::from_secs(10),
        || {
            h.rt.by_name("s-a").is_some_and(|c| {
                c.actual.id != old
                    && c.actual.state == State::Running
                    && c.spec.is_some_and(|s| s.image == "reg/app:2")
            })
        },
    )
    .await;
    assert_eq!(h.rt.calls("pull"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_component_stopped_while_its_image_is_pulled_is_not_brought_up_by_the_pull() {
    let rt = slow_registry(["reg/app:1".to_string()], Duration::from_secs(10));
    let h = start_with(SHARED, rt, |_| {}).await;
    within("pulling", Duration::from_secs(2), || {
        status_of(&h, "a").is_some_and(|s| s.state == "pulling")
    })
    .await;
    let mut other = Registry::open(&h.dir.path().join("registry.db")).unwrap();
    other
        .set_desired("s", Some("a"), crate::spec::DesiredState::Stopped)
        .unwrap();
    within("b and c up after the pull", Duration::from_secs(20), || {
        running(&h, "s-b") && running(&h, "s-c")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.rt.by_name("s-a").is_none(), "brought up though stopped");
    assert_ne!(status_of(&h, "a").unwrap().state, "pulling");
    assert_eq!(h.rt.calls("pull"), 1);
    h.stop().await;
}
