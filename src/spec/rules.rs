//! The rules of service-file fields (networks, users, volumes, injected env) and the rules
//! that span the registry (container names, fixed host ports, hostnames).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{lifecycle, Issue, Issues, ServiceFile, MAX_VALUE_LEN};
use crate::error::Location;
use crate::model::{
    container_name, dependency_target, route_env_key, Component, Condition, Proto, Route, Service,
    Volume,
};

pub(super) fn is_network(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub(super) fn is_user(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    };
    match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    }
}

pub(super) const VOLUME_OPTIONS: &[&str] = &[
    "ro", "rw", "z", "Z", "U", "shared", "slave", "private", "rshared", "rslave", "rprivate",
    "nocopy", "noexec", "exec", "nosuid", "suid", "nodev", "dev",
];

/// The volume of one `volumes` entry: the string `HOST:CONTAINER[:OPTIONS]` or the table
/// `{ source, target, options, create_host_path }`, each checked.
pub(super) fn parse_volume(v: &toml::Value) -> Result<Volume, String> {
    let vol = match v {
        toml::Value::String(b) => {
            text("volume", b)?;
            let Some(vol) = Volume::parse_bind(b) else {
                return Err(if b.contains(':') {
                    format!("volume {b:?} has too many ':' parts")
                } else {
                    format!("volume {b:?} must be HOST_PATH:CONTAINER_PATH[:OPTIONS]")
                });
            };
            vol
        }
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| !VOLUME_KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "unknown key {k:?} in a volume table (expected {})",
                    VOLUME_KEYS.join(", ")
                ));
            }
            let field = |k: &str, required: bool| -> Result<Option<String>, String> {
                match t.get(k) {
                    None if required => Err(format!("a volume table needs {k:?}")),
                    None => Ok(None),
                    Some(toml::Value::String(s)) => {
                        text(&format!("volume {k}"), s)?;
                        if s.contains(':') {
                            return Err(format!("volume {k} {s:?} must not contain ':'"));
                        }
                        Ok(Some(s.clone()))
                    }
                    Some(_) => Err(format!("volume {k} must be a string")),
                }
            };
            let create_host_path = match t.get("create_host_path") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(_) => return Err("volume create_host_path must be true or false".into()),
            };
            Volume {
                source: field("source", true)?.unwrap_or_default(),
                target: field("target", true)?.unwrap_or_default(),
                options: field("options", false)?,
                create_host_path,
                external: None,
            }
        }
        _ => {
            return Err(
                "a volume is a string \"HOST:CONTAINER[:OPTIONS]\" or a table { source, target, options, create_host_path }"
                    .into(),
            )
        }
    };
    check_volume(&vol)?;
    Ok(vol)
}

const VOLUME_KEYS: &[&str] = &["source", "target", "options", "create_host_path"];

fn text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_VALUE_LEN {
        Err(format!("{what} is longer than {MAX_VALUE_LEN} bytes"))
    } else if s.contains('\0') {
        Err(format!("{what} must not contain NUL"))
    } else {
        Ok(())
    }
}

pub(super) fn check_volume(v: &Volume) -> Result<(), String> {
    let (host, target) = (v.source.as_str(), v.target.as_str());
    // A source without a leading slash is a named volume: a directory of the agent's.
    let named = !host.starts_with('/');
    if named && !crate::model::is_volume_name(host) {
        return Err(format!(
            "volume source {host:?} must be absolute (a host path) or a volume name of [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}} (a directory of the agent's)"
        ));
    }
    if named && v.create_host_path {
        return Err(format!(
            "volume source {host:?} is a named volume (a directory the agent always creates under [volumes] root); create_host_path is only for host paths (a source with a leading slash)"
        ));
    }
    for p in [host, target] {
        if p.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!(
                "volume path {p:?} must not contain '.' or '..' components"
            ));
        }
    }
    if !target.starts_with('/') {
        return Err(format!("volume container path {target:?} must be absolute"));
    }
    if let Some(opts) = &v.options {
        if let Some(bad) = opts.split(',').find(|o| !VOLUME_OPTIONS.contains(o)) {
            return Err(format!(
                "volume option {bad:?} is not one of {}",
                VOLUME_OPTIONS.join(", ")
            ));
        }
    }
    Ok(())
}

/// The env keys the agent injects for a component's routes.
pub fn injected_env_keys(routes: &[Route]) -> Vec<String> {
    let mut keys: Vec<String> = routes.iter().map(|r| route_env_key(&r.name)).collect();
    if routes.len() == 1 {
        keys.push("PORT".into());
    }
    keys
}

/// The rules that span services: container names, fixed host ports and hostnames must be
/// unique across the whole registry, and dependencies on other services' components must
/// name one and close no cycle. `existing` is what the registry holds; services named
/// in `incoming` replace their registry versions.
pub fn check_registry_rules(existing: &[Service], incoming: &[ServiceFile]) -> Result<(), Issues> {
    enum Owner<'a> {
        Registry(&'a str),
        /// The host port of a route the incoming file keeps (the registry keeps route
        /// ports across re-applies): service, component, route.
        OwnRoute(&'a str, &'a str, &'a str),
        File(&'a Path, Option<Location>),
    }
    let describe = |o: &Owner| match o {
        Owner::Registry(s) => format!("service {s:?} in the registry"),
        Owner::OwnRoute(s, c, r) => format!(
            "route {r:?} of component {c:?} of service {s:?} (its host port, kept in the registry)"
        ),
        Owner::File(p, Some(at)) => format!("{}:{at}", p.display()),
        Owner::File(p, None) => p.display().to_string(),
    };
    let mut containers: HashMap<String, Owner> = HashMap::new();
    let mut host_ports: HashMap<(Proto, u16), Owner> = HashMap::new();
    let mut hostnames: HashMap<String, Owner> = HashMap::new();
    for s in existing {
        if let Some(f) = incoming.iter().find(|f| f.service.name == s.name) {
            // Replaced by the file, but the routes it keeps keep their host ports: a fixed
            // publish on one of them would stop the container from being created.
            for comp in &s.components {
                let Some(new) = f.service.components.iter().find(|c| c.name == comp.name) else {
                    continue;
                };
                for r in &comp.routes {
                    if let Some(hp) = r
                        .host_port
                        .filter(|_| new.routes.iter().any(|n| n.name == r.name))
                    {
                        host_ports.insert(
                            (Proto::Tcp, hp),
                            Owner::OwnRoute(&s.name, &comp.name, &r.name),
                        );
                    }
                }
            }
            continue;
        }
        for comp in &s.components {
            containers.insert(
                container_name(&s.name, &comp.name),
                Owner::Registry(&s.name),
            );
            for p in &comp.ports {
                host_ports.insert((p.proto, p.host_port), Owner::Registry(&s.name));
            }
            for r in &comp.routes {
                if let Some(hp) = r.host_port {
                    host_ports.insert((Proto::Tcp, hp), Owner::Registry(&s.name));
                }
                if let Some(h) = &r.hostname {
                    hostnames.insert(h.clone(), Owner::Registry(&s.name));
                }
            }
        }
    }
    let mut issues = Vec::new();
    for f in incoming {
        let s = &f.service;
        for (ci, comp) in s.components.iter().enumerate() {
            let cs = f.source.components.get(ci).cloned().unwrap_or_default();
            let cname = container_name(&s.name, &comp.name);
            if let Some(o) = containers.get(&cname) {
                issues.push(Issue {
                    path: f.path.clone(),
                    at: cs.name,
                    reason: format!("container name {cname:?} is also used by {}", describe(o)),
                });
            } else {
                containers.insert(cname, Owner::File(&f.path, cs.name));
            }
            for (pi, p) in comp.ports.iter().enumerate() {
                let at = cs.ports.get(pi).copied();
                if let Some(o) = host_ports.get(&(p.proto, p.host_port)) {
                    if !matches!(o, Owner::File(fp, _) if *fp == f.path.as_path()) {
                        issues.push(Issue {
                            path: f.path.clone(),
                            at,
                            reason: format!(
                                "fixed host port {}/{} is also used by {}",
                                p.host_port,
                                p.proto.as_str(),
                                describe(o)
                            ),
                        });
                    }
                    continue;
                }
                host_ports.insert((p.proto, p.host_port), Owner::File(&f.path, at));
            }
            for (ri, r) in comp.routes.iter().enumerate() {
                let Some(h) = &r.hostname else { continue };
                let at = cs.routes.get(ri).and_then(|(_, h)| *h);
                if let Some(o) = hostnames.get(h) {
                    issues.push(Issue {
                        path: f.path.clone(),
                        at,
                        reason: format!("hostname {h:?} is also routed by {}", describe(o)),
                    });
                } else {
                    hostnames.insert(h.clone(), Owner::File(&f.path, at));
                }
            }
        }
    }
    check_dependencies_across(existing, incoming, &mut issues);
    check_networks_across(existing, incoming, &mut issues);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Issues(issues))
    }
}

/// Networks are machine-wide: two services that declare options for one network (by
/// podman's name) declare the same ones, and no two components of different services
/// have one static address on one network. Against the registry with the services of
/// `incoming` replacing theirs.
fn check_networks_across(existing: &[Service], incoming: &[ServiceFile], issues: &mut Vec<Issue>) {
    let mut services: BTreeMap<&str, (&Service, Option<&ServiceFile>)> = existing
        .iter()
        .map(|s| (s.name.as_str(), (s, None)))
        .collect();
    for f in incoming {
        services.insert(&f.service.name, (&f.service, Some(f)));
    }
    // Those of the registry first, so that a file is the one told.
    let mut order: Vec<(&Service, Option<&ServiceFile>)> = services.into_values().collect();
    order.sort_by_key(|(s, f)| (f.is_some(), s.name.clone()));
    let mut declared: BTreeMap<String, (&str, &crate::model::NetworkOptions)> = BTreeMap::new();
    let mut addresses: BTreeMap<(String, String), (&str, &str)> = BTreeMap::new();
    for (s, f) in order {
        for (name, o) in &s.networks {
            let podman = s.network_name(name);
            match declared.get(&podman) {
                Some((other, theirs)) if *theirs != o => {
                    if let Some(f) = f {
                        issues.push(Issue {
                            path: f.path.clone(),
                            at: f.source.networks.get(name).copied(),
                            reason: format!(
                                "network {podman:?} is declared with other options by service {other:?}: networks are machine-wide, so every service that declares one declares the same options"
                            ),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    declared.insert(podman, (&s.name, o));
                }
            }
        }
        for (ci, c) in s.components.iter().enumerate() {
            for (ei, e) in c.settings.networks.iter().enumerate() {
                for a in [&e.ipv4_address, &e.ipv6_address].into_iter().flatten() {
                    let key = (s.network_name(&e.name), a.clone());
                    match addresses.get(&key) {
                        Some((os, oc)) if *os != s.name => {
                            if let Some(f) = f {
                                issues.push(Issue {
                                    path: f.path.clone(),
                                    at: f
                                        .source
                                        .components
                                        .get(ci)
                                        .and_then(|cs| cs.networks.get(ei).copied()),
                                    reason: format!(
                                        "address {a} on network {:?} is also component {oc:?}'s of service {os:?}",
                                        key.0
                                    ),
                                });
                            }
                        }
                        Some(_) => {}
                        None => {
                            addresses.insert(key, (&s.name, &c.name));
                        }
                    }
                }
            }
        }
    }
}

/// The dependency rules that span services, against the registry with the services of
/// `incoming` replacing theirs: a `"SERVICE/COMPONENT"` names a component there (and a
/// one-shot one for `"completed"`), a file does not take away a component the registry's
/// other services depend on, and no cycle runs through services. The rules within one
/// service were checked with its file (`lifecycle::check_dependencies`).
fn check_dependencies_across<'a>(
    existing: &'a [Service],
    incoming: &'a [ServiceFile],
    issues: &mut Vec<Issue>,
) {
    // The services in effect after the apply, each with its file if it comes from one.
    let mut services: BTreeMap<&str, (&Service, Option<&ServiceFile>)> = existing
        .iter()
        .map(|s| (s.name.as_str(), (s, None)))
        .collect();
    for f in incoming {
        services.insert(&f.service.name, (&f.service, Some(f)));
    }
    let component = |s: &str, c: &str| -> Option<&'a Component> {
        services
            .get(s)
            .and_then(|&(svc, _)| svc.components.iter().find(|k| k.name == c))
    };
    let where_is = |f: Option<&ServiceFile>| match f {
        Some(f) => format!("in {}", f.path.display()),
        None => "in the registry".to_string(),
    };
    for f in incoming {
        let s = &f.service;
        for (ci, comp) in s.components.iter().enumerate() {
            let cs = f.source.components.get(ci).cloned().unwrap_or_default();
            for (key, dep) in &comp.settings.depends_on {
                let (ts, tc) = dependency_target(&s.name, key);
                if ts == s.name {
                    continue;
                }
                let (at, cond_at) = match cs.depends_on.get(key) {
                    Some(&(a, c)) => (Some(a), Some(c)),
                    None => (None, None),
                };
                let reason = match services.get(ts) {
                    None => format!(
                        "depends_on {key:?}: service {ts:?} is neither in the files applied nor in the registry"
                    ),
                    Some((svc, tf)) => match svc.components.iter().find(|k| k.name == tc) {
                        None => format!(
                            "depends_on {key:?}: service {ts:?} ({}) has no component {tc:?}",
                            where_is(*tf)
                        ),
                        Some(t) if dep.condition == Condition::Completed && !t.settings.oneshot => {
                            issues.push(Issue {
                                path: f.path.clone(),
                                at: cond_at,
                                reason: lifecycle::not_oneshot(key, &format!("{ts}/{tc}")),
                            });
                            continue;
                        }
                        Some(_) => continue,
                    },
                };
                issues.push(Issue {
                    path: f.path.clone(),
                    at,
                    reason,
                });
            }
        }
    }
    // Dependents of the registry that a file would leave without their dependency.
    for s in existing {
        if incoming.iter().any(|f| f.service.name == s.name) {
            continue;
        }
        for comp in &s.components {
            for (key, dep) in &comp.settings.depends_on {
                let (ts, tc) = dependency_target(&s.name, key);
                let Some((_, Some(f))) = services.get(ts) else {
                    continue;
                };
                let why = match component(ts, tc) {
                    None => "which this file does not define",
                    Some(t) if dep.condition == Condition::Completed && !t.settings.oneshot => {
                        "\"completed\", and this file makes it no longer one-shot"
                    }
                    Some(_) => continue,
                };
                issues.push(Issue {
                    path: f.path.clone(),
                    at: f.source.name,
                    reason: format!(
                        "component {}/{} in the registry depends on {ts}/{tc}, {why}: apply {:?} without that dependency first, or with this file",
                        s.name, comp.name, s.name
                    ),
                });
            }
        }
    }
    // Cycles through services: the nodes of the files first, in their order.
    let mut nodes: Vec<(&'a str, &'a str)> = Vec::new();
    for f in incoming {
        nodes.extend(
            f.service
                .components
                .iter()
                .map(|c| (f.service.name.as_str(), c.name.as_str())),
        );
    }
    for s in existing {
        if !incoming.iter().any(|f| f.service.name == s.name) {
            nodes.extend(
                s.components
                    .iter()
                    .map(|c| (s.name.as_str(), c.name.as_str())),
            );
        }
    }
    let edges = |&(s, c): &(&'a str, &'a str)| -> Vec<(&'a str, &'a str)> {
        component(s, c)
            .map(|comp| {
                comp.settings
                    .depends_on
                    .keys()
                    .map(|k| dependency_target(s, k))
                    .filter(|&t| t != (s, c) && component(t.0, t.1).is_some())
                    .collect()
            })
            .unwrap_or_default()
    };
    for mut cycle in lifecycle::cycles(&nodes, edges) {
        if cycle.iter().all(|(s, _)| *s == cycle[0].0) {
            continue;
        }
        // Located at the last entry of the cycle that a file holds, the cycle spelled to
        // end with it.
        cycle.pop();
        let n = cycle.len();
        let Some(i) = (0..n)
            .rev()
            .find(|&i| services.get(cycle[i].0).is_some_and(|(_, f)| f.is_some()))
        else {
            continue;
        };
        cycle.rotate_left((i + 1) % n);
        let (from, to) = (cycle[n - 1], cycle[0]);
        cycle.push(to);
        let Some((_, Some(f))) = services.get(from.0) else {
            continue;
        };
        let Some(ci) = f.service.components.iter().position(|c| c.name == from.1) else {
            continue;
        };
        let key = lifecycle::keys_by_target(from.0, &f.service.components[ci])[&to];
        let at = f
            .source
            .components
            .get(ci)
            .and_then(|cs| cs.depends_on.get(key))
            .map(|&(a, _)| a);
        let spelled: Vec<String> = cycle.iter().map(|(s, c)| format!("{s}/{c}")).collect();
        issues.push(Issue {
            path: f.path.clone(),
            at,
            reason: lifecycle::cycle_reason(&spelled),
        });
    }
}
