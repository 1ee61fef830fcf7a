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
//! Routes: `--routes` gives every component one L7 route (container port 8080, `PORT`
//! env, a host port the agent allocates from [`PORT_RANGE`] and keeps in its registry)
//! and starts a private Caddy (`tests/common`'s `PrivateCaddy`: its own admin unix
//! socket, HOME and XDG dirs in a temporary directory of its own, listeners on loopback
//! ports only), which the agent's config names (see [`agent_extra`]). The initial pass
//! registers the N routes. What each timed run must then do about them:
//!
//! - podman losing its database does not touch Caddy: its config still holds every
//!   route, as it would on a real host. Only that case is measured; the routes are not
//!   deleted before a run (a reboot that also restarts Caddy on its initial config would
//!   be another benchmark).
//! - The agent, in its one pass after the containers: one GET of Caddy's servers,
//!   compared with the registry's routes, and no write when they match (what DESIGN §4
//!   step 5 and §6 ask of it).
//! - The sequential baseline, after each `podman run`: registers that container's route
//!   again, one admin request per route, unconditionally — what the replaced `recover`
//!   did (the seed: "Re-registers mc-proxy routes" after every recreated container, with
//!   no look at what the proxy held). Here that is `PATCH /id/<id>` with the same route
//!   JSON the agent writes (a replace in place; `POST` onto the routes of the agent's
//!   HTTP server if Caddy answers 404, so it is an upsert as a registration must be).
//!   Caddy 2.6 compares the config a write yields with the running one and skips the
//!   reload when it is unchanged (it logs "config is unchanged"), so each such write costs
//!   a request and a comparison of Caddy's whole config, not a reload.
//!
//! Both leave the same Caddy config (identical route objects), checked after every run
//! outside the timing: Caddy holds exactly the N `mcp.` route ids, each with its hostname
//! and `127.0.0.1:<registry host port>` upstream. The difference in the work each side
//! does (N writes against one read) is the difference between the two algorithms, and is
//! what the table shows, with Caddy's admin writes and CPU per run beside the times.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Instant;

use mcp_agent::container::ContainerSpec;
use mcp_agent::proxy::caddy::route_json;
use mcp_agent::proxy::{ProxyRoute, ACME_PREFIX, OWNED_PREFIX};
use mcp_agent::reconcile;
use mcp_agent::registry::Registry;
use mcp_agent::{routes, spec};

use crate::common::{free_port, PrivateCaddy, PrivatePodman};
use crate::kit::{self, Agent, ProcUsage, Stats};

/// Components per service.
const PER_SERVICE: usize = 10;
/// Host ports for the routes: below the kernel's ephemeral ports (32768 and up here, so a
/// loopback listener picked by the kernel cannot take one), clear of the integration
/// tests' 31000–31219, and room for 200 components.
const PORT_RANGE: (u16, u16) = (32000, 32499);
/// `[proxy] server` of the agent's config: it owns `<SERVER>-http` and `<SERVER>` in Caddy.
const SERVER: &str = "mcp";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    /// `podman rm --force` + `podman run -d` (+ the route's registration), one container
    /// after the other.
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

/// The routes variant's proxy: a private Caddy, the agent's HTTP listener on it, and the
/// routes it must hold (by container name), as the agent's registry has them.
struct Proxy {
    caddy: PrivateCaddy,
    http_listen: String,
    https_listen: String,
    /// Container name → its L7 routes.
    routes: BTreeMap<String, Vec<ProxyRoute>>,
}

impl Proxy {
    fn start() -> Proxy {
        Proxy {
            caddy: PrivateCaddy::start(),
            http_listen: format!("127.0.0.1:{}", free_port()),
            // Not created while `[certs] issuer = "none"` (the default); loopback anyway.
            https_listen: format!("127.0.0.1:{}", free_port()),
            routes: BTreeMap::new(),
        }
    }

    /// The server the routes go to: the HTTP one, certificates being off.
    fn routes_path(&self) -> String {
        format!("/config/apps/http/servers/{SERVER}-http/routes")
    }

    fn all_routes(&self) -> impl Iterator<Item = &ProxyRoute> {
        self.routes.values().flatten()
    }

    /// The baseline's registration of one route: one admin request, whatever Caddy holds.
    fn register(&self, r: &ProxyRoute) {
        let body = route_json(r).to_string();
        let (mut status, mut text) = self
            .caddy
            .api("PATCH", &format!("/id/{}", r.id), Some(&body));
        if status == 404 {
            (status, text) = self.caddy.api("POST", &self.routes_path(), Some(&body));
        }
        assert!(
            (200..300).contains(&status),
            "register route {} with caddy: {status} {text}",
            r.id
        );
    }

    /// Panics unless Caddy holds exactly the wanted `mcp.` routes, each with its hostname
    /// and upstream.
    fn check(&self, who: &str) {
        let servers = self.caddy.get("/config/apps/http/servers");
        let mut found: BTreeMap<String, (String, String)> = BTreeMap::new();
        for server in servers.as_object().into_iter().flat_map(|m| m.values()) {
            for r in server["routes"].as_array().into_iter().flatten() {
                let Some(id) = r["@id"].as_str() else {
                    continue;
                };
                if id.starts_with(OWNED_PREFIX) && !id.starts_with(ACME_PREFIX) {
                    let host = r["match"][0]["host"][0].as_str().unwrap_or_default();
                    let dial = r["handle"][0]["upstreams"][0]["dial"]
                        .as_str()
                        .unwrap_or_default();
                    let dup = found.insert(id.into(), (host.into(), dial.into()));
                    assert!(dup.is_none(), "{who}: caddy holds route {id} twice");
                }
            }
        }
        let wanted: BTreeMap<String, (String, String)> = self
            .all_routes()
            .map(|r| {
                (
                    r.id.clone(),
                    (r.hostname.clone(), format!("127.0.0.1:{}", r.upstream_port)),
                )
            })
            .collect();
        assert_eq!(
            found, wanted,
            "{who}: caddy's mcp. routes (left) are not the registry's (right)"
        );
    }

    /// Caddy's CPU seconds so far.
    fn cpu_s(&self) -> f64 {
        ProcUsage::of(self.caddy.pid().expect("caddy runs")).cpu_s
    }
}

/// Config appended after the agent's `[reconcile]` table: with routes, the host port
/// range and the private Caddy (its admin socket, loopback listeners); without, nothing.
fn agent_extra(proxy: Option<&Proxy>) -> String {
    let Some(p) = proxy else {
        return String::new();
    };
    format!(
        "\n[ports]\nrange = \"{}-{}\"\n\n[proxy]\nkind = \"caddy\"\nadmin_socket = {:?}\n\
         server = \"{SERVER}\"\nhttp_listen = \"{}\"\nhttps_listen = \"{}\"\n",
        PORT_RANGE.0,
        PORT_RANGE.1,
        p.caddy.admin_socket().display().to_string(),
        p.http_listen,
        p.https_listen,
    )
}

/// One timed run's readings.
#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    /// CPU seconds of podman's API service.
    cpu_service: f64,
    /// CPU seconds of the agent or the podman CLI processes (with their children).
    cpu_children: f64,
    /// With routes: Caddy's CPU seconds, and the admin writes it logged.
    cpu_caddy: f64,
    caddy_writes: usize,
}

pub fn run(out: &Path, sizes: &[usize], concurrency: &[usize], rounds: usize, routes: bool) {
    let load_start = kit::loadavg();
    let mut ways = vec![Way::Sequential];
    ways.extend(concurrency.iter().map(|&c| Way::Agent(c)));
    let mut md = String::new();
    let mut json_sizes = Vec::new();
    for &n in sizes {
        // Declared before the podman so that it is dropped (stopped by its pid, its
        // directory removed) after it, also when a panic or Ctrl-C unwinds.
        let mut proxy = routes.then(Proxy::start);
        let mut podman = kit::podman_with_busybox();
        // Written once per size: the same listeners in every run's config, so the agent
        // never sees its servers as changed.
        let extra = agent_extra(proxy.as_ref());
        let agent = Agent::new(
            &podman,
            &podman.socket_uri(),
            &format!("concurrency = 8\n{extra}"),
        );
        agent.apply(&kit::service_files("m", n, PER_SERVICE, routes));
        agent.ok(&["--once"]);
        assert_eq!(kit::running_names(&podman).len(), n, "initial pass");
        let (specs, wanted_routes) = desired(&agent);
        assert_eq!(specs.len(), n);
        if let Some(p) = proxy.as_mut() {
            p.routes = by_container(wanted_routes, &specs);
            p.check("initial pass");
        }

        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); ways.len()];
        for round in 0..rounds {
            for k in 0..ways.len() {
                let i = (k + round) % ways.len();
                let way = ways[i];
                // Podman's database only: Caddy keeps its routes (see the module doc).
                podman.lose_database();
                assert!(
                    kit::running_names(&podman).is_empty(),
                    "podman still lists containers after losing its database"
                );
                let svc_pid = podman.service_pid().expect("podman service runs");
                let writes0 = proxy.as_ref().map_or(0, |p| p.caddy.admin_writes());
                let caddy0 = proxy.as_ref().map_or(0.0, Proxy::cpu_s);
                let (svc0, kids0) = (ProcUsage::of(svc_pid).cpu_s, kit::children_cpu_s());
                let t = Instant::now();
                match way {
                    Way::Sequential => sequential(&podman, &specs, proxy.as_ref()),
                    Way::Agent(c) => {
                        agent.configure(&format!("concurrency = {c}\n{extra}"));
                        agent.ok(&["--once"]);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                let cpu_service = ProcUsage::of(svc_pid).cpu_s - svc0;
                let cpu_children = kit::children_cpu_s() - kids0;
                let cpu_caddy = proxy.as_ref().map_or(0.0, Proxy::cpu_s) - caddy0;
                // "Until all run": every container, and with routes every route in Caddy.
                let up = kit::running_names(&podman).len();
                assert_eq!(up, n, "{} left {up} of {n} running", way.label());
                let caddy_writes = match &proxy {
                    Some(p) => {
                        p.check(&way.label());
                        p.caddy.admin_writes() - writes0
                    }
                    None => 0,
                };
                eprintln!(
                    "bench mass: n={n} round {}/{rounds}: {}: {secs:.2} s{}",
                    round + 1,
                    way.label(),
                    if routes {
                        format!(", {caddy_writes} caddy admin write(s)")
                    } else {
                        String::new()
                    }
                );
                runs[i].push(Run {
                    secs,
                    cpu_service,
                    cpu_children,
                    cpu_caddy,
                    caddy_writes,
                });
            }
        }

        let stats: Vec<Stats> = runs
            .iter()
            .map(|r| Stats::of(&r.iter().map(|x| x.secs).collect::<Vec<_>>()))
            .collect();
        md.push_str(&table(n, rounds, routes, &ways, &runs, &stats));
        kit::teardown(podman);
        drop(proxy);
        json_sizes.push(serde_json::json!({
            "components": n,
            "rounds": rounds,
            "ways": ways.iter().zip(&runs).zip(&stats).map(|((w, r), s)| {
                let mut j = serde_json::json!({
                    "way": w.label(),
                    "times_s": r.iter().map(|x| x.secs).collect::<Vec<_>>(),
                    "stats": s.json(),
                    "cpu_service_s": r.iter().map(|x| x.cpu_service).collect::<Vec<_>>(),
                    "cpu_children_s": r.iter().map(|x| x.cpu_children).collect::<Vec<_>>(),
                });
                if routes {
                    j["cpu_caddy_s"] = r.iter().map(|x| x.cpu_caddy).collect::<Vec<_>>().into();
                    j["caddy_admin_writes"] =
                        r.iter().map(|x| x.caddy_writes).collect::<Vec<_>>().into();
                }
                j
            }).collect::<Vec<_>>(),
        }));
    }
    let mut json = serde_json::json!({ "routes": routes, "sizes": json_sizes });
    if routes {
        json["routes_before_each_run"] =
            "kept by Caddy (only podman's database is lost); the agent reads them once, \
             the sequential baseline re-registers each"
                .into();
    }
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

/// The markdown table of one size.
fn table(
    n: usize,
    rounds: usize,
    routes: bool,
    ways: &[Way],
    runs: &[Vec<Run>],
    stats: &[Stats],
) -> String {
    let seq = stats[0].median;
    let c1 = ways
        .iter()
        .position(|w| *w == Way::Agent(1))
        .map(|i| stats[i].median);
    let median =
        |r: &[Run], f: fn(&Run) -> f64| Stats::of(&r.iter().map(f).collect::<Vec<_>>()).median;
    let (what, extra_head, extra_rule) = if routes {
        (
            "with routes (one L7 route each, kept by Caddy across the loss)",
            " CPU s: caddy | caddy admin writes |",
            "---|---|",
        )
    } else {
        ("no routes", "", "")
    };
    let mut md = format!(
        "### Mass recovery, {n} components, {what}, {rounds} rounds\n\n\
         | way | median (s) | min | max | per container (ms) | ratio to sequential rm + run | ratio to concurrency 1 | target ≤ 0.5× sequential | CPU s: podman service | CPU s: agent or CLI (+ children) |{extra_head}\n\
         |---|---|---|---|---|---|---|---|---|---|{extra_rule}\n"
    );
    for ((w, s), r) in ways.iter().zip(stats).zip(runs) {
        let target = match w {
            Way::Sequential => "",
            Way::Agent(_) if s.median <= 0.5 * seq => "met",
            Way::Agent(_) => "not met",
        };
        let extra = if routes {
            format!(
                " {:.2} | {:.0} |",
                median(r, |x| x.cpu_caddy),
                median(r, |x| x.caddy_writes as f64)
            )
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {} | {target} | {:.2} | {:.2} |{extra}\n",
            w.label(),
            s.median,
            s.min,
            s.max,
            1000.0 * s.median / n as f64,
            s.median / seq,
            c1.map_or("".into(), |c| format!("{:.2}", s.median / c)),
            median(r, |x| x.cpu_service),
            median(r, |x| x.cpu_children),
        ));
    }
    md.push('\n');
    md
}

/// The containers the agent creates and the L7 routes it registers, as the library
/// derives them from its registry (host ports included, once a pass has allocated them).
fn desired(agent: &Agent) -> (Vec<ContainerSpec>, Vec<(String, ProxyRoute)>) {
    let mut reg = Registry::open(&agent.dir().join("state/registry.db")).expect("open registry");
    let services = reg.services().expect("read registry");
    let us = reg.identity().expect("read registry").us(kit::NODE);
    let specs = reconcile::desired(&services, &us)
        .into_iter()
        .map(|(_, spec)| spec)
        .collect();
    let routes = routes::desired(&services)
        .into_iter()
        .map(|(key, _, r)| (spec::container_name(&key.service, &key.component), r))
        .collect();
    (specs, routes)
}

/// Groups the routes by container, checking that each container's spec publishes its
/// route's registry host port on loopback (so the baseline's `podman run` uses the ports
/// the agent allocated) and that every component has its route.
fn by_container(
    routes: Vec<(String, ProxyRoute)>,
    specs: &[ContainerSpec],
) -> BTreeMap<String, Vec<ProxyRoute>> {
    let mut map: BTreeMap<String, Vec<ProxyRoute>> = BTreeMap::new();
    for (name, r) in routes {
        let spec = specs
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("route {} of no container", r.id));
        let publish = format!("127.0.0.1:{}:8080/tcp", r.upstream_port);
        assert!(
            spec.ports.iter().any(|p| p.to_string() == publish),
            "{name} does not publish {publish}: {:?}",
            spec.ports
        );
        assert!(
            (PORT_RANGE.0..=PORT_RANGE.1).contains(&r.upstream_port),
            "route {} got host port {} outside {PORT_RANGE:?}",
            r.id,
            r.upstream_port
        );
        assert_eq!(spec.env.get("PORT").map(String::as_str), Some("8080"));
        map.entry(name).or_default().push(r);
    }
    assert_eq!(map.len(), specs.len(), "every component has its route");
    map
}

/// The replaced recovery: for each container, `podman rm --force NAME` then `podman run
/// -d` with everything of its spec, then (with routes) its routes registered with Caddy,
/// one after the other.
fn sequential(podman: &PrivatePodman, specs: &[ContainerSpec], proxy: Option<&Proxy>) {
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
        if let Some(p) = proxy {
            for r in p.routes.get(&spec.name).into_iter().flatten() {
                p.register(r);
            }
        }
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
