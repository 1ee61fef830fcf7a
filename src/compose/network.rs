//! A compose service's networks and names: the project's default network is the
//! service's `"default"` (DNS by component name), other project networks are named
//! `<project>_<network>` as compose names them, external ones by their name;
//! `network_mode`, aliases, `hostname`, `dns`, `extra_hosts`, `container_name` and
//! `links`.

use std::collections::BTreeSet;

use super::service::Svc;
use super::yaml::{Node, Pos, Value};
use crate::model::{Cidr, Condition, Dependency, NetworkOptions, NetworkRef, Subnet};

/// The agent's name of compose network `name`, or `None` (reported) when the agent
/// cannot join it as defined. Its options (`driver_opts`, `ipam`, `internal`,
/// `enable_ipv6`, `labels`) go to the project's `[networks.NAME]`, each the agent cannot
/// give podman reported.
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
    let mut o = NetworkOptions::default();
    let mut optioned: Option<Pos> = None;
    for (k, v) in def.map().unwrap_or(&[]) {
        let vk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "driver" if matches!(v.text(), Some("bridge") | None) => {}
            "driver" => svc.p.findings.unsupported(
                v.at,
                &vk,
                "the agent creates bridge networks (podman's default driver)",
            ),
            "external" => match (&v.value, v.get("name")) {
                (Value::Map(_), Some(n)) => {
                    external = true;
                    given = n.text().map(str::to_string);
                }
                _ => external = v.bool() == Some(true),
            },
            "name" => given = v.text().map(str::to_string),
            "internal" | "enable_ipv6" => match v.bool() {
                Some(b) => {
                    if k.name == "internal" {
                        o.internal = b;
                    } else {
                        o.enable_ipv6 = o.enable_ipv6 || b;
                    }
                    optioned = optioned.or(Some(v.at));
                }
                None => svc.p.findings.invalid(v.at, &vk, "must be true or false"),
            },
            "attachable" => {}
            "driver_opts" => {
                optioned = optioned.or(Some(v.at));
                for (ok, ov) in svc.p.findings.key_values(v, &vk) {
                    let okey = format!("{vk}.{ok}");
                    let value = ov.unwrap_or_default();
                    let at = v.get(&ok).map_or(v.at, |n| n.at);
                    if ok == "com.docker.network.enable_ipv6" {
                        match value.to_ascii_lowercase().as_str() {
                            "true" => o.enable_ipv6 = true,
                            "false" | "" => {}
                            _ => svc.p.findings.invalid(at, &okey, "must be true or false"),
                        }
                        continue;
                    }
                    match crate::spec::networks::check_driver_opt(&ok, &value) {
                        Ok(()) => {
                            o.driver_opts.insert(ok, value);
                        }
                        Err(why) => svc.p.findings.unsupported(at, &okey, why),
                    }
                }
            }
            "ipam" => {
                optioned = optioned.or(Some(v.at));
                ipam(svc, v, &vk, &mut o);
            }
            "labels" => {
                optioned = optioned.or(Some(v.at));
                for (lk, lv) in svc.p.findings.key_values(v, &vk) {
                    o.labels.insert(lk, lv.unwrap_or_default());
                }
            }
            other if other.starts_with("x-") => {}
            _ => {
                svc.p
                    .findings
                    .invalid(v.at, &vk, "unknown key (not in the compose specification)")
            }
        }
    }
    let problems = crate::spec::networks::check_subnets(&o);
    if let Some((_, why)) = problems.first() {
        let at = def.get("ipam").map_or(def.at, |n| n.at);
        svc.p
            .findings
            .unsupported(at, &format!("{key}.ipam"), why.clone());
        o.subnets.clear();
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
    if let Some(at) = optioned.filter(|_| external) {
        svc.p.findings.unsupported(at, &key, "an external network is made outside the project: its options are not the project's to declare");
    } else if !o.is_default() {
        svc.p.network_options.insert(agent.clone(), o);
    }
    Some(agent)
}

/// A network's `ipam`: the default driver's `config` (subnets, gateways, ranges).
fn ipam(svc: &mut Svc<'_>, v: &Node, key: &str, o: &mut NetworkOptions) {
    for (k, x) in v.map().unwrap_or(&[]) {
        let xk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "driver" if matches!(x.text(), Some("default") | None) => {}
            "driver" => svc.p.findings.unsupported(
                x.at,
                &xk,
                "podman's compat API takes the default IPAM driver only",
            ),
            "config" => {
                for c in x.seq().unwrap_or(&[]) {
                    let mut subnet = None;
                    let (mut gateway, mut ip_range) = (None, None);
                    for (ck, cv) in c.map().unwrap_or(&[]) {
                        let ckey = format!("{xk}.{}", ck.name);
                        match ck.name.as_str() {
                            "subnet" => subnet = svc.p.findings.text(cv, &ckey),
                            "gateway" => gateway = svc.p.findings.text(cv, &ckey),
                            "ip_range" => ip_range = svc.p.findings.text(cv, &ckey),
                            "aux_addresses" => svc.p.findings.unsupported(
                                cv.at,
                                &ckey,
                                "podman's compat API takes no auxiliary addresses",
                            ),
                            other if other.starts_with("x-") => {}
                            _ => svc.p.findings.invalid(
                                cv.at,
                                &ckey,
                                "unknown key (not in the compose specification)",
                            ),
                        }
                    }
                    match subnet {
                        Some(subnet) => o.subnets.push(Subnet {
                            subnet,
                            gateway,
                            ip_range,
                        }),
                        None => svc.p.findings.unsupported(c.at, &xk, "a config entry without a subnet (podman picks a network's subnet whole)"),
                    }
                }
            }
            "options" => svc.p.findings.unsupported(
                x.at,
                &xk,
                "podman's compat API takes no IPAM driver options",
            ),
            other if other.starts_with("x-") => {}
            _ => {
                svc.p
                    .findings
                    .invalid(x.at, &xk, "unknown key (not in the compose specification)")
            }
        }
    }
}

/// A service's address on network `agent` (compose's `ipv4_address`/`ipv6_address`):
/// `None` (reported) when it is not an address of that family in one of the network's
/// subnets.
fn address(svc: &mut Svc<'_>, v: &Node, key: &str, agent: &str, v6: bool) -> Option<String> {
    let t = svc.text(v, key)?;
    let a: std::net::IpAddr = match t.parse() {
        Ok(a) if (a as std::net::IpAddr).is_ipv6() == v6 => a,
        _ => {
            svc.invalid(
                v,
                key,
                format!("{t:?} is not an IPv{} address", if v6 { 6 } else { 4 }),
            );
            return None;
        }
    };
    let inside = svc.p.network_options.get(agent).is_some_and(|o| {
        o.subnets
            .iter()
            .any(|s| Cidr::parse(&s.subnet).is_ok_and(|b| b.contains(a)))
    });
    if !inside {
        svc.unsupported(v, key, format!("{t}: the agent sets an address only inside a subnet the network's ipam.config declares"));
        return None;
    }
    Some(t)
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
            None | Some(Value::Null) => {
                // The project's default network, as the top level may define it.
                let at = nets
                    .cloned()
                    .unwrap_or_else(|| Node::new(Value::Null, node.at));
                if let Some(n) = network_name(svc, &at, "default") {
                    svc.c.settings.networks = vec![NetworkRef::named(n)];
                }
            }
            Some(Value::Seq(items)) => {
                svc.from("networks", nets.unwrap(), "networks");
                for i in items.clone() {
                    if let Some(name) = svc.text(&i, "networks") {
                        if let Some(n) = network_name(svc, &i, &name) {
                            svc.c.settings.networks.push(NetworkRef::named(n));
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
                    let mut entry = NetworkRef::named(n.clone());
                    let mut a = Vec::new();
                    for (ek, ev) in v.map().unwrap_or(&[]) {
                        let ekey = format!("networks.{}.{}", k.name, ek.name);
                        match ek.name.as_str() {
                            "aliases" => a = svc.texts(ev, &ekey),
                            "ipv4_address" => {
                                entry.ipv4_address = address(svc, ev, &ekey, &n, false);
                                svc.from("networks", ev, &ekey);
                            }
                            "ipv6_address" => {
                                entry.ipv6_address = address(svc, ev, &ekey, &n, true);
                                svc.from("networks", ev, &ekey);
                            }
                            "link_local_ips" | "mac_address" => svc.unsupported(
                                ev,
                                &ekey,
                                "the agent sets no link-local or MAC addresses",
                            ),
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
                    svc.c.settings.networks.push(entry);
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
        // Aliases that differ between networks: each network's own, on its entry.
        for (e, a) in svc.c.settings.networks.iter_mut().zip(&aliases) {
            e.aliases = a.clone();
        }
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
