//! The metrics endpoint against the loop with the fake runtime, on the real clock (real
//! sockets): a scrape's cost with 200 components, and scrapers that never send or never
//! read holding neither the loop nor, for long, the endpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::tests::start_with;
use crate::runtime::fake::FakeRuntime;

fn many(n: usize) -> String {
    let mut s = String::from("name = \"big\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[components]]\nname = \"c{i}\"\nimage = \"img\"\n"
        ));
    }
    s
}

async fn scrape(path: &Path) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Scrapes until `pred` holds of the exposition, for at most `limit`.
async fn scrape_until(path: &Path, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let body = scrape(path).await.unwrap_or_default();
        if pred(&body) {
            return body;
        }
        assert!(
            t.elapsed() < limit,
            "not seen within {limit:?}; last:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn total_calls(rt: &FakeRuntime) -> u64 {
    rt.state.lock().unwrap().calls.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_200_components_takes_under_5ms_and_calls_neither_podman_nor_sqlite() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("metrics.sock");
    let listen = sock.display().to_string();
    let h = start_with(&many(200), FakeRuntime::with_images(&["img"]), |c| {
        c.metrics.listen = Some(listen)
    })
    .await;
    let all_up = "mcp_agent_components{desired=\"running\",state=\"running\"} 200\n";
    scrape_until(&sock, Duration::from_secs(30), |b| b.contains(all_up)).await;
    // Settled: the loop makes no call of its own now.
    let mut before = total_calls(&h.rt);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = total_calls(&h.rt);
        if now == before {
            break;
        }
        before = now;
    }
    let mut took = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let body = scrape(&sock).await.unwrap();
        took.push(t.elapsed());
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        assert!(body.contains(all_up));
    }
    assert_eq!(total_calls(&h.rt), before, "a scrape called the runtime");
    took.sort();
    let (median, p90, max) = (took[100], took[180], took[199]);
    eprintln!(
        "scrape of 200 components over a unix socket: median {median:?}, p90 {p90:?}, max {max:?}"
    );
    assert!(
        median <= Duration::from_millis(5),
        "median scrape {median:?}"
    );
    // What a scrape reads lives in memory only: with the daemon stopped and its
    // registry deleted, a scrape still answers the same.
    h.stop().await;
    let again = sock_dir.path().join("again.sock");
    let _server = crate::metrics::server::start(&crate::metrics::Listen::Unix(again.clone()))
        .await
        .unwrap();
    let body = scrape(&again).await.unwrap();
    assert!(body.contains(all_up), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapers_that_never_send_or_never_read_hold_neither_the_loop_nor_the_endpoint() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("metrics.sock");
    let listen = sock.display().to_string();
    let h = start_with(&many(20), FakeRuntime::with_images(&["img"]), |c| {
        c.metrics.listen = Some(listen)
    })
    .await;
    let all_up = "mcp_agent_components{desired=\"running\",state=\"running\"} 20\n";
    scrape_until(&sock, Duration::from_secs(30), |b| b.contains(all_up)).await;
    // More silent clients than the endpoint has slots, and one that asks and never
    // reads its answer.
    // (The one that asks comes first: past the slots, a connection is closed at once.)
    let mut asks = UnixStream::connect(&sock).await.unwrap();
    asks.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut hostile = Vec::new();
    for _ in 0..(crate::metrics::server::MAX_CONNECTIONS * 3) {
        hostile.push(UnixStream::connect(&sock).await.unwrap());
    }
    // The loop goes on: a container removed outside is made again at once.
    let old = h.rt.by_name("big-c3").unwrap();
    h.rt.state.lock().unwrap().containers.remove(&old.actual.id);
    h.event("remove", &old).await;
    let t = Instant::now();
    loop {
        if h.rt
            .by_name("big-c3")
            .is_some_and(|c| c.actual.id != old.actual.id)
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the loop did not repair within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The silent ones lose their slots after the header timeout; scrapes work again
    // while they are still connected, and count the repair as a removal.
    let body = scrape_until(
        &sock,
        crate::metrics::server::HEADER_TIMEOUT + Duration::from_secs(3),
        |b| {
            b.contains(
                "mcp_agent_restarts_total{service=\"big\",component=\"c3\",cause=\"removal\"} 1\n",
            )
        },
    )
    .await;
    assert!(
        body.contains("mcp_agent_actions_total{action=\"create\",result=\"ok\"} 21\n"),
        "{body}"
    );
    drop(hostile);
    drop(asks);
    h.stop().await;
}
