//! Routes as desired state (docs/design.md §3.2, §6): host ports allocated in the registry before a
//! pass, and the set of L7 routes the proxy must serve after it.

use crate::config::Config;
use crate::container::ComponentKey;
use crate::proxy::{ProxyError, ProxyRoute, SyncReport};
use crate::registry::{Registry, RegistryError, RouteProxyState};
use crate::spec::{DesiredState, RouteMode, Service};

/// Gives every route without a host port one; logs what it did. Returns whether anything
/// changed (the caller re-reads the services then).
pub fn allocate(reg: &mut Registry, config: &Config) -> Result<bool, RegistryError> {
    let (done, failed) =
        reg.allocate_route_ports(config.ports.range, &mut crate::ports::host_port_free)?;
    for a in &done {
        if !a.skipped.is_empty() {
            tracing::warn!(
                service = %a.key.service, component = %a.key.component, route = %a.route,
                skipped = %a.skipped.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                "host ports bound by other processes were skipped"
            );
        }
        tracing::info!(
            service = %a.key.service, component = %a.key.component, route = %a.route,
            host_port = a.port, "allocated a host port"
        );
    }
    for f in &failed {
        tracing::warn!(
            service = %f.key.service, component = %f.key.component, route = %f.route,
            error = %f.error, "no host port for route"
        );
    }
    Ok(!done.is_empty())
}

/// Whether any route still lacks a host port.
pub fn unallocated(services: &[Service]) -> bool {
    services
        .iter()
        .flat_map(|s| &s.components)
        .flat_map(|c| &c.routes)
        .any(|r| r.host_port.is_none())
}

/// The L7 routes of active services' running components, as the proxy should serve them,
/// each with the component and route name it belongs to.
pub fn desired(services: &[Service]) -> Vec<(ComponentKey, String, ProxyRoute)> {
    let mut out = Vec::new();
    for s in services.iter().filter(|s| s.active) {
        for c in s
            .components
            .iter()
            .filter(|c| c.desired_state == DesiredState::Running)
        {
            for r in c.routes.iter().filter(|r| r.mode == RouteMode::L7) {
                let (Some(hostname), Some(port)) = (&r.hostname, r.host_port) else {
                    continue;
                };
                out.push((
                    ComponentKey::new(s.name.clone(), c.name.clone()),
                    r.name.clone(),
                    ProxyRoute {
                        id: ProxyRoute::id_for(&s.name, &c.name, &r.name),
                        hostname: hostname.clone(),
                        upstream_port: port,
                        withheld: false,
                    },
                ));
            }
        }
    }
    out
}

/// The registry's record of each desired route after a sync.
/// `proxied` is false where no proxy serves routes (`[proxy] kind = "none"`).
pub fn states(
    proxied: bool,
    desired: &[(ComponentKey, String, ProxyRoute)],
    result: &Result<SyncReport, ProxyError>,
) -> Vec<(ComponentKey, String, RouteProxyState)> {
    let state = match (proxied, result) {
        (false, _) => RouteProxyState {
            state: "no-proxy".into(),
            error: None,
        },
        (_, Ok(_)) => RouteProxyState {
            state: "registered".into(),
            error: None,
        },
        (_, Err(e)) => RouteProxyState {
            state: "pending".into(),
            error: Some(e.to_string()),
        },
    };
    desired
        .iter()
        .map(|(k, r, _)| (k.clone(), r.clone(), state.clone()))
        .collect()
}

/// One line about a sync, for `--once` and the log.
pub fn describe(result: &Result<SyncReport, ProxyError>, wanted: usize) -> String {
    match result {
        Ok(r) if r.is_noop() => format!("{wanted} registered, unchanged"),
        Ok(r) => format!(
            "{wanted} registered (added {}, updated {}, deleted {})",
            r.added.len(),
            r.updated.len(),
            r.deleted.len()
        ),
        Err(e) => format!("{wanted} pending: {e}"),
    }
}

/// A route moved to a new host port because another process took its old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub key: ComponentKey,
    pub route: String,
    pub from: u16,
    pub to: Option<u16>,
}

/// What a pass knows of the components whose routes might move, for [`reallocate_taken`].
#[derive(Debug, Default, Clone)]
pub struct Holding {
    /// Every container name podman listed, in any state (created, running, stopping,
    /// exited, unknown…): podman (its conmon) may hold such a container's ports.
    pub listed: std::collections::HashSet<String>,
    /// Components with an operation waiting or under way: their container may be coming
    /// or going right now.
    pub busy: std::collections::HashSet<ComponentKey>,
    /// The listed container names whose state is `created`: never started, podman holds
    /// none of their ports.
    pub created: std::collections::HashSet<String>,
}

/// Before components are brought up: a route whose host port a process that is not
/// podman's bound while its component was down and idle gets a new one (the container
/// could not publish it). Never a route of a component whose container podman lists in
/// any state or that has an operation in flight: podman's own processes may hold its
/// ports then (docs/design.md §3.2) — but for a container listed `created` whose port is
/// held by podman's orphans (`orphaned`, [`crate::ports::held_by_orphans`]): conmons of
/// containers podman no longer has, which never let go, so that the created one could
/// never start. `taken` says whether a foreign process holds a port
/// ([`crate::ports::taken_by_foreign_process`]); `is_free` picks the new ones.
pub fn reallocate_taken(
    reg: &mut Registry,
    config: &Config,
    services: &[Service],
    holding: &Holding,
    taken_by_foreign: &mut dyn FnMut(u16) -> bool,
    orphaned: &mut dyn FnMut(u16) -> bool,
    is_free: &mut dyn FnMut(u16) -> bool,
) -> Result<Vec<Moved>, RegistryError> {
    let mut taken = Vec::new();
    for s in services.iter().filter(|s| s.active) {
        for c in s
            .components
            .iter()
            .filter(|c| c.desired_state == DesiredState::Running)
        {
            let key = ComponentKey::new(s.name.clone(), c.name.clone());
            let name = crate::spec::container_name(&s.name, &c.name);
            let created = holding.created.contains(&name);
            if holding.listed.contains(&name) && !created || holding.busy.contains(&key) {
                continue;
            }
            for r in &c.routes {
                let Some(p) = r.host_port else { continue };
                let held = if created {
                    orphaned(p)
                } else {
                    taken_by_foreign(p)
                };
                if held {
                    taken.push((key.clone(), r.name.clone(), p));
                }
            }
        }
    }
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    for (key, route, _) in &taken {
        reg.set_host_port(key, route, None)?;
    }
    let (done, _) = reg.allocate_route_ports(config.ports.range, is_free)?;
    let moved: Vec<Moved> = taken
        .into_iter()
        .map(|(key, route, from)| {
            let to = done
                .iter()
                .find(|a| a.key == key && a.route == route)
                .map(|a| a.port);
            Moved {
                key,
                route,
                from,
                to,
            }
        })
        .collect();
    for m in &moved {
        tracing::warn!(
            service = %m.key.service, component = %m.key.component, route = %m.route,
            from = m.from, to = %m.to.map_or("none free".to_string(), |p| p.to_string()),
            "host port taken by another process while the container was down; route moved"
        );
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_service;

    #[test]
    fn a_taken_port_of_a_down_component_moves_and_a_running_one_stays() {
        let d = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&d.path().join("r.db")).unwrap();
        let svc = "name = \"s\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"a.test\"\n\
                   [[components]]\nname = \"b\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"b.test\"\n";
        reg.apply(&[parse_service(std::path::Path::new("s.toml"), svc).unwrap()])
            .unwrap();
        let mut config = Config::default();
        config.ports.range = crate::config::PortRange {
            first: 31900,
            last: 31909,
        };
        reg.allocate_route_ports(config.ports.range, &mut |_| true)
            .unwrap();
        let services = reg.services().unwrap();
        let port_of = |s: &[Service], c: usize| s[0].components[c].routes[0].host_port.unwrap();
        let (a, b) = (port_of(&services, 0), port_of(&services, 1));
        // Both ports are now "bound by someone"; only s-a is down.
        let holding = Holding {
            listed: std::collections::HashSet::from(["s-b".to_string()]),
            ..Holding::default()
        };
        let mut taken = |p: u16| p == a || p == b;
        let mut is_free = |p: u16| p != a && p != b;
        let moved = reallocate_taken(
            &mut reg,
            &config,
            &services,
            &holding,
            &mut taken,
            &mut |_| false,
            &mut is_free,
        )
        .unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!((moved[0].key.component.as_str(), moved[0].from), ("a", a));
        let after = reg.services().unwrap();
        let new = port_of(&after, 0);
        assert_eq!(moved[0].to, Some(new));
        assert!(new != a && new != b);
        assert_eq!(port_of(&after, 1), b);
    }

    /// A registry holding service `s` with an L4 route on each of `components`, their
    /// ports allocated from ten at `first`: its directory, the registry, the config, the
    /// services.
    fn l4_components(
        components: &[&str],
        first: u16,
    ) -> (tempfile::TempDir, Registry, Config, Vec<Service>) {
        let d = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(&d.path().join("r.db")).unwrap();
        let mut svc = String::from("name = \"s\"\n");
        for c in components {
            svc.push_str(&format!(
                "[[components]]\nname = \"{c}\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nmode = \"l4\"\n"
            ));
        }
        reg.apply(&[parse_service(std::path::Path::new("s.toml"), &svc).unwrap()])
            .unwrap();
        let mut config = Config::default();
        config.ports.range = crate::config::PortRange {
            first,
            last: first + 9,
        };
        reg.allocate_route_ports(config.ports.range, &mut |_| true)
            .unwrap();
        let services = reg.services().unwrap();
        (d, reg, config, services)
    }

    /// A component whose container is `created` (it could not start) and whose port only
    /// podman's orphans hold gets a new port; one whose container runs does not.
    #[test]
    fn a_created_components_port_held_by_orphans_moves() {
        let (_d, mut reg, config, services) = l4_components(&["a", "b"], 31920);
        let (a, b) = (
            services[0].components[0].routes[0].host_port.unwrap(),
            services[0].components[1].routes[0].host_port.unwrap(),
        );
        let holding = Holding {
            listed: ["s-a".to_string(), "s-b".to_string()].into(),
            created: ["s-a".to_string()].into(),
            ..Holding::default()
        };
        let moved = reallocate_taken(
            &mut reg,
            &config,
            &services,
            &holding,
            &mut |_| true,
            &mut |p| p == a || p == b,
            &mut |p| p != a && p != b,
        )
        .unwrap();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!((moved[0].key.component.as_str(), moved[0].from), ("a", a));
        assert!(moved[0].to.is_some_and(|p| p != a && p != b));
    }

    /// Three components whose ports are all bound: one listed as `created`, one
    /// `exited`, one with an operation in flight. None of them moves.
    #[test]
    fn no_port_moves_while_its_container_exists_in_any_state_or_an_operation_is_in_flight() {
        let (_d, mut reg, config, services) = l4_components(&["a", "b", "c"], 31910);
        let before: Vec<_> = services[0]
            .components
            .iter()
            .map(|c| c.routes[0].host_port)
            .collect();
        let holding = Holding {
            listed: ["s-a".to_string(), "s-b".to_string()].into(),
            busy: [ComponentKey::new("s", "c")].into(),
            created: ["s-a".to_string()].into(),
        };
        // s-a is `created`, but its port's holders are no orphans of podman's.
        let moved = reallocate_taken(
            &mut reg,
            &config,
            &services,
            &holding,
            &mut |_| true,
            &mut |_| false,
            &mut |_| true,
        )
        .unwrap();
        assert!(moved.is_empty(), "{moved:?}");
        let after: Vec<_> = reg.services().unwrap()[0]
            .components
            .iter()
            .map(|c| c.routes[0].host_port)
            .collect();
        assert_eq!(before, after);
    }
}
