//! The rules of service-file fields (networks, users, volumes, injected env) and the rules
//! that span the registry (container names, fixed host ports, hostnames).

use std::collections::HashMap;
use std::path::Path;

use super::{Issue, Issues, ServiceFile, MAX_VALUE_LEN};
use crate::error::Location;
use crate::model::{container_name, route_env_key, Proto, Route, Service, Volume};

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
/// unique across the whole registry. `existing` is what the registry holds; services named
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
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Issues(issues))
    }
}
