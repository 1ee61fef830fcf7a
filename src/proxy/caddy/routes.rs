//! The agent's L7 routes as Caddy routes: their JSON, which ids are the agent's, and the
//! writes that make the servers serve exactly the wanted routes.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::{id_path, server_path, Layout, Write};
use crate::proxy::{ProxyError, ProxyRoute, SyncReport, ACME_PREFIX, OWNED_PREFIX};

/// The Caddy route of one of the agent's routes (public for the benchmarks, whose baseline
/// registers the very same routes).
pub fn route_json(route: &ProxyRoute) -> Value {
    if route.withheld {
        return json!({
            "@id": route.id,
            "match": [{ "host": [route.hostname] }],
            "handle": [{
                "handler": "static_response",
                "status_code": 503,
                "headers": { "Retry-After": ["5"] },
                "body": "503 service unavailable: its health check is not passing\n",
            }],
            "terminal": true,
        });
    }
    json!({
        "@id": route.id,
        "match": [{ "host": [route.hostname] }],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{ "dial": format!("127.0.0.1:{}", route.upstream_port) }],
        }],
        "terminal": true,
    })
}

/// Ids the agent writes: plain characters only, so they go into `/id/<id>` unescaped.
pub(super) fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The id of a route found in Caddy, if it is one `sync` manages: ours by prefix, plain,
/// and not an ACME challenge route.
pub(super) fn managed_id(route: &Value) -> Option<&str> {
    let id = route.get("@id")?.as_str()?;
    (id.starts_with(OWNED_PREFIX) && !id.starts_with(ACME_PREFIX) && is_plain_id(id)).then_some(id)
}

/// Refuses, before any request, routes that sync could not keep converged.
pub(super) fn check_routes(routes: &[ProxyRoute]) -> Result<(), ProxyError> {
    let invalid = |r: &ProxyRoute, reason: &str| ProxyError::InvalidRoute {
        id: r.id.clone(),
        reason: reason.to_string(),
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in routes {
        if !r.id.starts_with(OWNED_PREFIX) || !is_plain_id(&r.id) {
            return Err(invalid(
                r,
                "ids must start with \"mcp.\" and hold only letters, digits, '.', '-' and '_'",
            ));
        }
        if r.id.starts_with(ACME_PREFIX) {
            return Err(invalid(
                r,
                "ids under \"mcp.acme.\" are reserved for ACME challenge routes",
            ));
        }
        if r.hostname.is_empty() {
            return Err(invalid(r, "the hostname is empty"));
        }
        if r.upstream_port == 0 {
            return Err(invalid(r, "the upstream port is 0"));
        }
        if !seen.insert(r.id.as_str()) {
            return Err(invalid(r, "the id is given twice"));
        }
    }
    Ok(())
}

/// The route writes that make the agent's servers serve exactly `desired` (on
/// `layout.target`), and what they amount to. Deletes come first, then in-place
/// replacements, then one append of every missing route, so an id never ends up twice.
pub(super) fn route_plan(
    servers: &Map<String, Value>,
    desired: &[ProxyRoute],
    layout: &Layout,
) -> (Vec<Write>, SyncReport) {
    let wanted: BTreeMap<&str, Value> = desired
        .iter()
        .map(|r| (r.id.as_str(), route_json(r)))
        .collect();

    // Every managed id in the agent's servers: where, and as what.
    let mut found: BTreeMap<&str, Vec<(&str, &Value)>> = BTreeMap::new();
    for name in &layout.owned {
        let routes = servers
            .get(name)
            .and_then(|s| s.get("routes"))
            .and_then(Value::as_array);
        for route in routes.into_iter().flatten() {
            if let Some(id) = managed_id(route) {
                found.entry(id).or_default().push((name.as_str(), route));
            }
        }
    }

    let mut report = SyncReport::default();
    let mut deletes = Vec::new();
    let mut patches = Vec::new();
    let mut appends: BTreeMap<&str, Value> = BTreeMap::new();
    for (&id, places) in &found {
        match wanted.get(id) {
            None => {
                // One DELETE per copy: each removes the copy `/id/` points at.
                deletes.extend(
                    places
                        .iter()
                        .map(|_| Write::new(Method::DELETE, id_path(id), None)),
                );
                report.deleted.push(id.to_string());
            }
            Some(want) => match places.as_slice() {
                [(server, existing)] if *server == layout.target => {
                    if *existing == want {
                        report.unchanged += 1;
                    } else {
                        patches.push(Write::new(Method::PATCH, id_path(id), Some(want.clone())));
                        report.updated.push(id.to_string());
                    }
                }
                // In the other server (tls flipped), or duplicated: remove every copy
                // and append one where it belongs.
                _ => {
                    deletes.extend(
                        places
                            .iter()
                            .map(|_| Write::new(Method::DELETE, id_path(id), None)),
                    );
                    appends.insert(id, want.clone());
                    report.updated.push(id.to_string());
                }
            },
        }
    }
    for (&id, want) in &wanted {
        if !found.contains_key(id) {
            appends.insert(id, want.clone());
            report.added.push(id.to_string());
        }
    }

    let mut writes = deletes;
    writes.extend(patches);
    if !appends.is_empty() {
        let routes_path = format!("{}/routes", server_path(&layout.target));
        let new: Vec<Value> = appends.into_values().collect();
        let routes = servers.get(&layout.target).and_then(|s| s.get("routes"));
        writes.push(match routes {
            // `.../routes/...` appends the elements of an array, and creates the list
            // when the key is absent.
            Some(Value::Array(_)) | None => Write::new(
                Method::POST,
                format!("{routes_path}/..."),
                Some(Value::Array(new)),
            ),
            Some(_) => Write::new(Method::PATCH, routes_path, Some(Value::Array(new))),
        });
    }
    report.updated.sort();
    (writes, report)
}
