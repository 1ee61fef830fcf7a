//! §3 Idle cost: N components running, the daemon settled, resync every `interval`: the
//! daemon's CPU time over `window` (utime + stime from /proc/PID/stat), its RSS (VmRSS),
//! and the podman API requests it sends per resync pass, counted by a proxy between the
//! agent and podman — for several N, to show that the count does not grow with N.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::kit::{self, Agent};
use crate::proxy::Proxy;

/// After the daemon's first pass, before the window opens.
const SETTLE: Duration = Duration::from_secs(5);
/// CPU budget: 0.5 % of one core; memory budget: 30 MiB.
const CPU_TARGET: f64 = 0.005;
const RSS_TARGET_KIB: u64 = 30 * 1024;

struct Row {
    n: usize,
    cpu_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    passes: usize,
    requests: usize,
    by_kind: BTreeMap<String, usize>,
}

pub fn run(out: &Path, counts: &[usize], window: Duration, interval: &str) {
    let load_start = kit::loadavg();
    let mut rows = Vec::new();
    for &n in counts {
        let podman = kit::podman_with_busybox();
        let proxy = Proxy::start(&podman.dir().join("proxy.sock"), &podman.socket_path());
        let agent = Agent::new(
            &podman,
            &proxy.uri(),
            &format!("interval = \"{interval}\"\n"),
        );
        agent.apply(&kit::service_files("idle", n, 10, false));
        agent.ok(&["--once"]);
        let up = kit::running_names(&podman).len();
        assert_eq!(up, n, "{n} components should run before the daemon starts");

        let daemon = agent.start_daemon("info");
        kit::nap(SETTLE);
        let r0 = proxy.requests().len();
        let u0 = daemon.usage();
        eprintln!("bench idle: {n} components, measuring for {window:?}");
        kit::nap(window);
        let u1 = daemon.usage();
        let reqs: Vec<_> = proxy.requests().split_off(r0);
        daemon.save_log(out, &format!("idle-{n}-daemon.log"));
        drop(daemon);

        kit::teardown(podman);
        let mut by_kind = BTreeMap::new();
        for r in &reqs {
            let path = r.path.split('?').next().unwrap_or("");
            // Collapse ids and names so that per-container requests would show as one kind.
            let kind: Vec<&str> = path
                .split('/')
                .map(|seg| {
                    if seg.len() > 20 || seg.starts_with("idle") {
                        "{id}"
                    } else {
                        seg
                    }
                })
                .collect();
            *by_kind
                .entry(format!("{} {}", r.method, kind.join("/")))
                .or_insert(0) += 1;
        }
        let passes = reqs
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/containers/json"))
            .count();
        rows.push(Row {
            n,
            cpu_s: u1.cpu_s - u0.cpu_s,
            rss_kib: u1.rss_kib,
            hwm_kib: u1.hwm_kib,
            passes,
            requests: reqs.len(),
            by_kind,
        });
    }

    let secs = window.as_secs_f64();
    let mut md = format!(
        "### Idle cost (resync every {interval}, window {} s)\n\n\
         | components | daemon CPU (s) | % of one core | RSS (MiB) | peak RSS (MiB) | passes (lists) | API requests | requests per pass | requests by kind |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        window.as_secs()
    );
    for r in &rows {
        let per_pass = if r.passes > 0 {
            r.requests as f64 / r.passes as f64
        } else {
            f64::NAN
        };
        md.push_str(&format!(
            "| {} | {:.2} | {:.3} % | {:.1} | {:.1} | {} | {} | {:.2} | {} |\n",
            r.n,
            r.cpu_s,
            100.0 * r.cpu_s / secs,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.passes,
            r.requests,
            per_pass,
            r.by_kind
                .iter()
                .map(|(k, v)| format!("`{k}` × {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    let largest = rows.iter().max_by_key(|r| r.n);
    if let Some(big) = largest {
        let cpu_met = big.cpu_s / secs <= CPU_TARGET;
        let rss_met = big.hwm_kib <= RSS_TARGET_KIB;
        let per = |r: &Row| r.requests as f64 / r.passes.max(1) as f64;
        let flat = rows.iter().all(|r| (per(r) - per(big)).abs() < 1e-9);
        md.push_str(&format!(
            "\nTargets at {} components: CPU ≤ 0.5 % of one core: {}; RSS ≤ 30 MiB: {}; \
             requests per pass independent of N: {}.\n",
            big.n,
            if cpu_met { "met" } else { "not met" },
            if rss_met { "met" } else { "not met" },
            if flat { "met" } else { "not met" },
        ));
    }
    let json = serde_json::json!({
        "window_s": secs,
        "interval": interval,
        "rows": rows.iter().map(|r| serde_json::json!({
            "components": r.n, "cpu_s": r.cpu_s, "rss_kib": r.rss_kib, "hwm_kib": r.hwm_kib,
            "passes": r.passes, "requests": r.requests, "by_kind": r.by_kind,
        })).collect::<Vec<_>>(),
    });
    kit::write_result(
        out,
        "idle.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    let md = format!(
        "{md}\nLoad average (1, 5, 15 min) at the start: {load_start}; at the end: {}.\n",
        kit::loadavg()
    );
    kit::write_result(out, "idle.md", &md);
    println!("{md}");
}
