//! Routes as desired state (DESIGN §3, §6): host ports allocated in the registry before a
//! pass, and the set of L7 routes the proxy must serve after it.

use crate::config::{Config, ProxyKind};
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
                skipped = ?a.skipped, "host ports bound by other processes were skipped"
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
                    },
                ));
            }
        }
    }
    out
}

/// The registry's record of each desired route after a sync.
pub fn states(
    config: &Config,
    desired: &[(ComponentKey, String, ProxyRoute)],
    result: &Result<SyncReport, ProxyError>,
) -> Vec<(ComponentKey, String, RouteProxyState)> {
    let state = match (config.proxy.kind, result) {
        (ProxyKind::None, _) => RouteProxyState {
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
