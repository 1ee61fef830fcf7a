//! §2 Mass recovery after podman's database is lost: N components (services of 10),
//! podman loses its database (the ENVIRONMENT.md recipe: `stop -a -t 0`, stop the
//! service, delete `bolt_state.db` and the run root, start the service), and everything
//! is brought back by
//! - the algorithm this project replaces: per container, sequentially, `podman rm --force
//!   NAME` then `podman run -d` with its spec (the same spec the agent creates, labels
//!   included), and
//! - `mcp-agent --once` with `concurrency` = 1, 2, 4, 8, 16,
//!
//! each timed from start to exit, after the same loss, `rounds` times in rotated order
//! (so that drift of a shared machine spreads over every configuration).
//!
//! Routes: `--routes` gives every component an L7 route. It is refused until the proxy is
//! part of the recovery pass; then it must also start a private Caddy
//! (`tests/common`'s `PrivateCaddy`), set `[proxy] kind = "caddy"` and its admin socket
//! in the agent's config (see [`agent_extra`]), and have the sequential baseline register
//! the same routes through Caddy's admin API after each `podman run`.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use mcp_agent::container::ContainerSpec;
use mcp_agent::reconcile;
use mcp_agent::registry::Registry;

use crate::common::PrivatePodman;
use crate::kit::{self, Agent, ProcUsage, Stats};

/// Components per service.
const PER_SERVICE: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    /// `podman rm --force` + `podman run -d`, one container after the other.
    Sequential,
    /// `mcp-agent --once` with this concurrency.
    Agent(usize),
}

impl Way {
    fn label(self) -> String {
        match self {
            Way::Sequential => "sequential rm + run".into(),
            Way::Agent(c) => format!("agent, concurrency {c}"),
        }
    }
}

/// Config appended after the agent's `[reconcile]` table. For the routes variant this is
/// where `[proxy] kind = "caddy"` and the private Caddy's `admin_socket` go; without
/// routes, nothing.
fn agent_extra(_routes: bool) -> String {
    String::new()
}

pub fn run(out: &Path, sizes: &[usize], concurrency: &[usize], rounds: usize, routes: bool) {
    let load_start = kit::loadavg();
    if routes {
        eprintln!(
            "bench mass: --routes is not available yet: routes are not part of the recovery \
             pass until the Caddy proxy is integrated (see benches/podman/mass.rs)"
        );
        std::process::exit(2);
    }
    let mut ways = vec![Way::Sequential];
    ways.extend(concurrency.iter().map(|&c| Way::Agent(c)));
    let mut md = String::new();
    let mut json_sizes = Vec::new();
    for &n in sizes {
        let mut podman = kit::podman_with_busybox();
        let agent = Agent::new(
            &podman,
            &podman.socket_uri(),
            &format!("concurrency = 8\n{}", agent_extra(routes)),
        );
        agent.apply(&kit::service_files("m", n, PER_SERVICE, routes));
        agent.ok(&["--once"]);
        assert_eq!(kit::running_names(&podman).len(), n, "initial pass");
        let specs = specs(&agent);
        assert_eq!(specs.len(), n);

        let mut times: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
        // Per run: CPU seconds of podman's API service, and of the agent or the podman
        // CLI processes (children of this process, with their own children).
        let mut cpu: Vec<Vec<(f64, f64)>> = vec![Vec::new(); ways.len()];
        for round in 0..rounds {
            for k in 0..ways.len() {
                let i = (k + round) % ways.len();
                let way = ways[i];
                podman.lose_database();
                assert!(
                    kit::running_names(&podman).is_empty(),
                    "podman still lists containers after losing its database"
                );
                let svc_pid = podman.service_pid().expect("podman service runs");
                let (svc0, kids0) = (ProcUsage::of(svc_pid).cpu_s, kit::children_cpu_s());
                let t = Instant::now();
                match way {
                    Way::Sequential => sequential(&podman, &specs),
                    Way::Agent(c) => {
                        agent.configure(&format!("concurrency = {c}\n{}", agent_extra(routes)));
                        agent.ok(&["--once"]);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                cpu[i].push((
                    ProcUsage::of(svc_pid).cpu_s - svc0,
                    kit::children_cpu_s() - kids0,
                ));
                let up = kit::running_names(&podman).len();
                assert_eq!(up, n, "{} left {up} of {n} running", way.label());
                eprintln!(
                    "bench mass: n={n} round {}/{rounds}: {}: {secs:.2} s",
                    round + 1,
                    way.label()
                );
                times[i].push(secs);
            }
        }

        let stats: Vec<Stats> = times.iter().map(|t| Stats::of(t)).collect();
        let seq = stats[0].median;
        let c1 = ways
            .iter()
            .position(|w| *w == Way::Agent(1))
            .map(|i| stats[i].median);
        md.push_str(&format!(
            "### Mass recovery, {n} components (no routes), {rounds} rounds\n\n\
             | way | median (s) | min | max | per container (ms) | ratio to sequential rm + run | ratio to concurrency 1 | target ≤ 0.5× sequential | CPU s: podman service | CPU s: agent or CLI (+ children) |\n\
             |---|---|---|---|---|---|---|---|---|---|\n"
        ));
        for ((w, s), c) in ways.iter().zip(&stats).zip(&cpu) {
            let target = match w {
                Way::Sequential => String::new(),
                Way::Agent(_) => if s.median <= 0.5 * seq {
                    "met"
                } else {
                    "not met"
                }
                .to_string(),
            };
            let svc = Stats::of(&c.iter().map(|x| x.0).collect::<Vec<_>>());
            let kids = Stats::of(&c.iter().map(|x| x.1).collect::<Vec<_>>());
            md.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {} | {target} | {:.2} | {:.2} |\n",
                w.label(),
                s.median,
                s.min,
                s.max,
                1000.0 * s.median / n as f64,
                s.median / seq,
                c1.map_or("".into(), |c| format!("{:.2}", s.median / c)),
                svc.median,
                kids.median,
            ));
        }
        md.push('\n');
        kit::teardown(podman);
        json_sizes.push(serde_json::json!({
            "components": n,
            "rounds": rounds,
            "ways": ways.iter().zip(&times).zip(&stats).zip(&cpu).map(|(((w, t), s), c)| serde_json::json!({
                "way": w.label(), "times_s": t, "stats": s.json(),
                "cpu_service_s": c.iter().map(|x| x.0).collect::<Vec<_>>(),
                "cpu_children_s": c.iter().map(|x| x.1).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }
    let json = serde_json::json!({ "routes": routes, "sizes": json_sizes });
    kit::write_result(
        out,
        "mass.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    let md = format!(
        "{md}\nLoad average (1, 5, 15 min) at the start: {load_start}; at the end: {}.\n",
        kit::loadavg()
    );
    kit::write_result(out, "mass.md", &md);
    println!("{md}");
}

/// The containers the agent creates, as the library derives them from its registry.
fn specs(agent: &Agent) -> Vec<ContainerSpec> {
    let mut reg = Registry::open(&agent.dir().join("state/registry.db")).expect("open registry");
    let services = reg.services().expect("read registry");
    reconcile::desired(&services, kit::NODE)
        .into_iter()
        .map(|(_, spec)| spec)
        .collect()
}

/// The replaced recovery: for each container, `podman rm --force NAME` then `podman run
/// -d` with everything of its spec, one after the other.
fn sequential(podman: &PrivatePodman, specs: &[ContainerSpec]) {
    for spec in specs {
        kit::check_interrupted();
        // Its exit status does not matter: "no such container" means nothing held the name.
        let _ = podman.podman(&["rm", "--force", &spec.name]);
        let args = run_args(spec);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out: Output = podman.podman(&args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `podman run -d` arguments for a spec, as an operator's recover script would pass them.
fn run_args(spec: &ContainerSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        spec.name.clone(),
        "--restart".into(),
        spec.restart.as_str().into(),
        "--network".into(),
        spec.network.clone(),
    ];
    if let Some(u) = &spec.user {
        a.extend(["--user".into(), u.clone()]);
    }
    for (k, v) in &spec.env {
        a.extend(["--env".into(), format!("{k}={v}")]);
    }
    for v in &spec.volumes {
        a.extend(["--volume".into(), v.clone()]);
    }
    for p in &spec.ports {
        a.extend(["--publish".into(), p.to_string()]);
    }
    for (k, v) in &spec.labels {
        a.extend(["--label".into(), format!("{k}={v}")]);
    }
    a.push(spec.image.clone());
    a.extend(spec.cmd.iter().cloned());
    a
}
