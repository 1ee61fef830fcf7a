//! A compose service's networks and names: the project's default network is the
//! service's `"default"` (DNS by component name), other project networks are named
//! `<project>_<network>` as compose names them, external ones by their name;
//! `network_mode`, aliases, `hostname`, `dns`, `extra_hosts`, `container_name` and
//! `links`.

use std::collections::BTreeSet;

use super::service::Svc;
use super::yaml::{Node, Value};
use crate::model::{Condition, Dependency};

/// The agent's name of compose network `name`, or `None` (reported) when the agent
/// cannot join it as defined.
fn network_name(svc: &mut Svc<'_>, at: &Node, name: &str) -> Option<String> {
    let defs = svc.p.networks.clone();
    let def = match defs.get(name) {
        Some(d) => d.clone(),
        None if name == "default" => Node::new(Value::Null, at.at),
        None => {
            svc.invalid(
                at,
                "networks",
                format!("network {name:?} is not defined in the top-level networks:"),
            );
            return None;
        }
    };
    let key = format!("networks.{name}");
    let mut external = false;
    let mut given: Option<String> = None;
    for (k, v) in def.map().unwrap_or(&[]) {
        let vk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "driver" if matches!(v.text(), Some("bridge") | None) => {}
            "driver" => svc.p.findings.unsupported(v.at, &vk, "the agent creates bridge networks (podman's default driver)"),
            "external" => match (&v.value, v.get("name")) {
                (Value::Map(_), Some(n)) => {
                    external = true;
                    given = n.text().map(str::to_string);
                }
                _ => external = v.bool() == Some(true),
            },
            "name" => given = v.text().map(str::to_string),
            "internal" | "enable_ipv6" if v.bool() != Some(true) => {}
            "internal" => svc.p.findings.unsupported(v.at, &vk, "the agent creates networks with a way out (podman's default)"),
            "enable_ipv6" => svc.p.findings.unsupported(v.at, &vk, "the agent creates networks with podman's defaults (IPv4)"),
            "attachable" => {}
            "driver_opts" | "ipam" => svc.p.findings.unsupported(v.at, &vk, "the agent creates networks with podman's defaults: create this one by hand and mark it external"),
            "labels" => svc.p.findings.unsupported(v.at, &vk, "the agent creates networks without labels"),
            other if other.starts_with("x-") => {}
            _ => svc.p.findings.invalid(v.at, &vk, "unknown key (not in the compose specification)"),
        }
    }
    let agent = match (name, external, given) {
        ("default", false, None) => "default".to_string(),
        (_, true, Some(n)) | (_, false, Some(n)) => n,
        (_, true, None) => name.to_string(),
        (_, false, None) => format!("{}_{name}", svc.p.name),
    };
    if agent != "default" && external {
        svc.p.findings.note(
            def.at,
            &key,
            format!("external: the agent joins {agent:?}, and creates it if it is not there"),
        );
    }
    Some(agent)
}

pub(super) fn map(svc: &mut Svc<'_>, node: &Node) {
    let mode = node.get("network_mode");
    let nets = node.get("networks");
    let mut aliases: Vec<Vec<String>> = Vec::new();
    if let Some(m) = mode {
        let t = svc.text(m, "network_mode").unwrap_or_default();
        match t.as_str() {
            "host" | "none" | "bridge" => {
                svc.from("network", m, "network_mode");
                svc.c.network = t;
            }
            _ if t.starts_with("service:") || t.starts_with("container:") => svc.unsupported(
                m,
                "network_mode",
                format!("{t:?}: the agent gives each container its own network namespace (join a network both are on instead)"),
            ),
            _ => svc.unsupported(m, "network_mode", format!("{t:?}: the agent's network modes are host, none and bridge, or networks")),
        }
        if let Some(n) = nets {
            svc.invalid(
                n,
                "networks",
                "network_mode and networks cannot be combined",
            );
        }
    } else {
        match nets.map(|n| &n.value) {
            None | Some(Value::Null) => svc.c.settings.networks = vec!["default".into()],
            Some(Value::Seq(items)) => {
                svc.from("networks", nets.unwrap(), "networks");
                for i in items.clone() {
                    if let Some(name) = svc.text(&i, "networks") {
                        if let Some(n) = network_name(svc, &i, &name) {
                            svc.c.settings.networks.push(n);
                            aliases.push(Vec::new());
                        }
                    }
                }
            }
            Some(Value::Map(m)) => {
                svc.from("networks", nets.unwrap(), "networks");
                for (k, v) in m.clone() {
                    let Some(n) = network_name(svc, &Node::new(Value::Null, k.at), &k.name) else {
                        continue;
                    };
                    let mut a = Vec::new();
                    for (ek, ev) in v.map().unwrap_or(&[]) {
                        let ekey = format!("networks.{}.{}", k.name, ek.name);
                        match ek.name.as_str() {
                            "aliases" => a = svc.texts(ev, &ekey),
                            "ipv4_address" | "ipv6_address" | "link_local_ips" | "mac_address" => {
                                svc.unsupported(
                                    ev,
                                    &ekey,
                                    "the agent sets no addresses on its networks",
                                )
                            }
                            "priority" | "gw_priority" | "interface_name" | "driver_opts" => svc
                                .unsupported(
                                    ev,
                                    &ekey,
                                    "the agent joins networks with podman's defaults",
                                ),
                            other if other.starts_with("x-") => {}
                            _ => svc.invalid(
                                ev,
                                &ekey,
                                "unknown key (not in the compose specification)",
                            ),
                        }
                    }
                    svc.c.settings.networks.push(n);
                    aliases.push(a);
                }
            }
            Some(_) => svc.invalid(
                nets.unwrap(),
                "networks",
                "must be a list or a mapping of networks",
            ),
        }
    }
    let mut all: Vec<String> = Vec::new();
    for a in &aliases {
        for x in a {
            if !all.contains(x) {
                all.push(x.clone());
            }
        }
    }
    if aliases.len() > 1
        && aliases.iter().any(|a| {
            let mut s: Vec<&String> = a.iter().collect();
            let mut t: Vec<&String> = all.iter().collect();
            s.sort();
            t.sort();
            s != t
        })
    {
        let n = nets.expect("aliases come from networks");
        svc.unsupported(n, "networks", "aliases that differ between networks: the agent gives a component its aliases on every network it joins");
        all.clear();
    }
    if let Some(cn) = node.get("container_name") {
        if let Some(t) = svc.text(cn, "container_name") {
            if crate::model::is_hostname(&t) && t != svc.c.name && !all.contains(&t) {
                svc.note(
                    cn,
                    "container_name",
                    format!(
                        "the agent names the container {:?}; {t:?} is kept as a DNS alias",
                        crate::model::container_name(&svc.p.name, &svc.c.name)
                    ),
                );
                all.push(t);
            } else {
                svc.note(
                    cn,
                    "container_name",
                    format!(
                        "the agent names the container {:?}",
                        crate::model::container_name(&svc.p.name, &svc.c.name)
                    ),
                );
            }
        }
    }
    if !all.is_empty() {
        if let Some(n) = nets {
            svc.from("aliases", n, "networks");
        }
        svc.c.settings.aliases = all;
    }
    for (k, agent) in [("hostname", "hostname")] {
        if let Some(v) = node.get(k) {
            if let Some(t) = svc.text(v, k) {
                svc.from(agent, v, k);
                svc.c.settings.hostname = Some(t);
            }
        }
    }
    if let Some(v) = node.get("dns") {
        svc.from("dns", v, "dns");
        svc.c.settings.dns = svc.texts(v, "dns");
    }
    if let Some(v) = node.get("dns_search") {
        svc.from("dns_search", v, "dns_search");
        svc.c.settings.dns_search = svc.texts(v, "dns_search");
    }
    if let Some(v) = node.get("dns_opt") {
        if !svc.texts(v, "dns_opt").is_empty() {
            svc.unsupported(
                v,
                "dns_opt",
                "resolver options are not among the agent's keys",
            );
        }
    }
    if let Some(v) = node.get("extra_hosts") {
        extra_hosts(svc, v);
    }
    if let Some(v) = node.get("links") {
        links(svc, v);
    }
}

fn extra_hosts(svc: &mut Svc<'_>, v: &Node) {
    svc.from("extra_hosts", v, "extra_hosts");
    let mut out = Vec::new();
    match &v.value {
        Value::Map(m) => {
            for (k, ip) in m {
                for i in svc.texts(ip, "extra_hosts") {
                    out.push((k.name.clone(), i, ip.clone()));
                }
            }
        }
        _ => {
            for i in v.seq().unwrap_or(&[]) {
                let Some(t) = svc.text(i, "extra_hosts") else {
                    continue;
                };
                // compose: HOST:IP, HOST=IP, and HOST:IPV6 (split at the first ':').
                let split = t.split_once('=').or_else(|| t.split_once(':'));
                match split {
                    Some((h, ip)) => out.push((
                        h.to_string(),
                        ip.trim_matches(['[', ']']).to_string(),
                        i.clone(),
                    )),
                    None => svc.invalid(i, "extra_hosts", format!("{t:?} is not HOST:IP")),
                }
            }
        }
    }
    for (h, ip, at) in out {
        if ip == "host-gateway" {
            svc.unsupported(
                &at,
                "extra_hosts",
                format!("{h}:host-gateway: the agent takes an IP address"),
            );
            continue;
        }
        svc.c.settings.extra_hosts.push(format!("{h}:{ip}"));
    }
}

/// `links`: compose starts the linked service first, and the name reaches it on the
/// network already; an alias other than its name is another's DNS name, not expressed.
fn links(svc: &mut Svc<'_>, v: &Node) {
    let mut seen = BTreeSet::new();
    for i in v.seq().unwrap_or(&[]) {
        let Some(t) = svc.text(i, "links") else {
            continue;
        };
        let (target, alias) = t.split_once(':').unwrap_or((&t, &t));
        let Some(c) = svc.p.components.get(target).cloned() else {
            svc.invalid(
                i,
                "links",
                format!("service {target:?} is not defined, or not enabled"),
            );
            continue;
        };
        if alias != target && alias != c {
            svc.unsupported(i, "links", format!("the alias {alias:?}: a link's alias is seen by one container, the agent's aliases by all"));
        }
        if seen.insert(c.clone()) && !svc.c.settings.depends_on.contains_key(&c) {
            svc.from("depends_on", i, "links");
            svc.c.settings.depends_on.insert(
                c,
                Dependency {
                    condition: Condition::Started,
                    restart_with: false,
                },
            );
        }
    }
}
