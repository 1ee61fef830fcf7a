//! Health checks in the loop, with the fake runtime under a paused clock: restarts on
//! unhealthy under the backoff, probes that never pile up.

use std::time::Duration;

use tokio::time::Instant;

use super::tests::start_with;
use crate::runtime::fake::{FakeExec, FakeRuntime};

fn checked(n: usize, interval: &str, retries: u32) -> String {
    let mut s = String::from("name = \"s\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i}\"\nimage = \"img\"\n[components.health]\n\
             test = [\"CMD\", \"check\"]\ninterval = \"{interval}\"\nstart_interval = \"{interval}\"\n\
             timeout = \"10s\"\nretries = {retries}\n"
        ));
    }
    s
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_component_is_restarted_in_place_then_checked_again() {
    let rt = FakeRuntime::with_images(&["img"]);
    {
        let mut st = rt.state.lock().unwrap();
        // Passes once, then fails twice (unhealthy), then passes for good.
        st.exec_script.push_back(FakeExec::exits(0, ""));
        st.exec_script.push_back(FakeExec::exits(1, "down"));
        st.exec_script.push_back(FakeExec::exits(1, "down"));
    }
    let h = start_with(&checked(1, "1s", 2), rt, |_| {}).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let st = h.rt.state.lock().unwrap();
        let stops = st
            .ops
            .iter()
            .filter(|(op, n)| *op == "stop" && n == "s-c0")
            .count();
        let starts = st.started.iter().filter(|(n, _)| n == "s-c0").count();
        // One create (its start) and one restart: stopped once, started twice, not recreated.
        assert_eq!(stops, 1, "{:?}", st.ops);
        assert_eq!(starts, 2, "{:?}", st.started);
        assert_eq!(st.calls.get("create").copied(), Some(1));
        // Probes went on after the restart (≈ one a second).
        assert!(st.execs.len() >= 8, "{} probes", st.execs.len());
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn probes_slower_than_their_interval_run_late_and_never_pile_up() {
    let rt = FakeRuntime::with_images(&["img"]);
    {
        let mut st = rt.state.lock().unwrap();
        for _ in 0..1000 {
            st.exec_script
                .push_back(FakeExec::runs(Duration::from_secs(5)));
        }
    }
    // 20 components, each probed every second, each probe taking 5 s; 4 at once.
    let h = start_with(&checked(20, "1s", 3), rt, |c| c.health.concurrency.0 = 4).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = h.rt.state.lock().unwrap().execs.len();
    // 4 slots × 30 s / 5 s = 24 probes started at most (+4 under way at the end); an
    // unbounded schedule would have started one per component per second: 600.
    assert!(n <= 28, "{n} probes started in 30 s");
    assert!(n >= 20, "only {n} probes: slots left idle");
    h.stop().await;
}
