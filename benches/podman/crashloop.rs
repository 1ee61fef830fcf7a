//! §5 Crash-loop cost: one component whose container exits at once (`cmd = ["false"]`,
//! restart policy "no"), the daemon with its default backoff, for `duration` (10 min):
//! how many times the agent brought it up (podman's `start` events), when, and the
//! daemon's CPU time meanwhile.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::events::{secs_between, Events};
use crate::kit::{self, Agent};

const NAME: &str = "loop";
const SERVICE: &str = "name = \"loop\"\n\n[[components]]\nname = \"loop\"\n\
                       image = \"localhost/busybox:latest\"\ncmd = [\"false\"]\nrestart = \"no\"\n";

/// Bring-up times (s from the first) that the default schedule allows: each attempt holds
/// the next back by 1 s, 2 s, 4 s, … capped at 5 min; `factor` scales every delay (1 = no
/// jitter, 2 = the most jitter adds), the cap applying after it.
fn schedule(duration: f64, factor: f64) -> Vec<f64> {
    let (mut t, mut base, mut out) = (0.0, 1.0f64, vec![]);
    while t <= duration {
        out.push(t);
        t += (base * factor).min(300.0);
        base = (base * 2.0).min(300.0);
    }
    out
}

pub fn run(out: &Path, duration: Duration) {
    let load_start = kit::loadavg();
    let podman = kit::podman_with_busybox();
    let agent = Agent::new(&podman, &podman.socket_uri(), "");
    agent.apply(&[("loop.toml".into(), SERVICE.into())]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut events = rt.block_on(Events::start(&podman.socket_uri()));
    let t0 = SystemTime::now();
    // The daemon's first pass creates the container: the first attempt.
    let daemon = agent.start_daemon("info");
    let cpu0 = daemon.usage();
    let mut samples = Vec::new();
    let step = Duration::from_secs(60);
    let mut elapsed = Duration::ZERO;
    while elapsed < duration {
        let d = step.min(duration - elapsed);
        kit::nap(d);
        elapsed += d;
        let u = daemon.usage();
        samples.push((elapsed.as_secs(), u.cpu_s - cpu0.cpu_s, u.rss_kib));
        eprintln!(
            "bench crashloop: {}s of {}s, daemon CPU {:.2} s",
            elapsed.as_secs(),
            duration.as_secs(),
            u.cpu_s - cpu0.cpu_s
        );
    }
    let cpu1 = daemon.usage();
    let t1 = SystemTime::now();
    daemon.save_log(out, "crashloop-daemon.log");
    drop(daemon);
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    events.drain();

    kit::teardown(podman);
    let starts: Vec<f64> = events
        .seen()
        .iter()
        .filter(|e| e.name == NAME && e.action == "start" && e.time >= t0 && e.time <= t1)
        .map(|e| secs_between(t0, e.time))
        .collect();
    let first = starts.first().copied().unwrap_or(0.0);
    let offsets: Vec<f64> = starts.iter().map(|s| s - first).collect();
    let gaps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let secs = duration.as_secs_f64();
    let (lo, hi) = (schedule(secs, 2.0).len(), schedule(secs, 1.0).len());
    let cpu = cpu1.cpu_s - cpu0.cpu_s;
    let met = (lo..=hi).contains(&starts.len());

    let md = format!(
        "### Crash loop ({} s, default backoff)\n\n\
         | figure | value |\n|---|---|\n\
         | bring-ups (podman `start` events) | {} |\n\
         | expected from the schedule (1 s, 2 s, 4 s, … ≤ 5 min, +0–100 % jitter) | {lo}–{hi} |\n\
         | attempt times (s after the first) | {} |\n\
         | gaps (s) | {} |\n\
         | daemon CPU time | {:.2} s ({:.4} % of one core) |\n\
         | daemon RSS at the end | {} KiB |\n\
         | count within the expected range | {} |\n",
        duration.as_secs(),
        starts.len(),
        offsets
            .iter()
            .map(|o| format!("{o:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        gaps.iter()
            .map(|o| format!("{o:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        cpu,
        100.0 * cpu / secs,
        cpu1.rss_kib,
        if met { "yes" } else { "no" },
    );
    let json = serde_json::json!({
        "duration_s": secs,
        "bring_ups": starts.len(),
        "attempt_offsets_s": offsets,
        "expected_range": [lo, hi],
        "expected_no_jitter_s": schedule(secs, 1.0),
        "daemon_cpu_s": cpu,
        "daemon_rss_kib": cpu1.rss_kib,
        "cpu_samples": samples.iter().map(|(t, c, r)| serde_json::json!({"t": t, "cpu_s": c, "rss_kib": r})).collect::<Vec<_>>(),
        "within_expected": met,
    });
    kit::write_result(
        out,
        "crashloop.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    let md = format!(
        "{md}\nLoad average (1, 5, 15 min) at the start: {load_start}; at the end: {}.\n",
        kit::loadavg()
    );
    kit::write_result(out, "crashloop.md", &md);
    println!("{md}");
}
