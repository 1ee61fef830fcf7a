//! A service's `[networks.NAME]` tables (the options the agent creates a network with,
//! named as compose names them) and the rules that tie them to its components' entries:
//! an address needs a subnet of its network to lie in, a declared network a component
//! that joins it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use toml::Spanned;

use super::parse::Checker;
use super::raw::{RawNetwork, Word};
use super::{ComponentSource, MAX_ENTRIES};
use crate::model::{
    Cidr, Component, NetworkOptions, Subnet, OPT_BRIDGE_NAME, OPT_DOCKER_MTU, OPT_MTU,
};

/// Why a driver option is refused: podman 4.3's compat API honours only
/// `com.docker.network.bridge.name`, `com.docker.network.driver.mtu` and `mtu` for a
/// bridge and drops any other with a warning.
pub fn driver_opt_refusal(key: &str) -> String {
    match key {
        "com.docker.network.enable_ipv6" => {
            format!("driver option {key:?}: podman 4.3's API ignores it; write enable_ipv6 = true")
        }
        "com.docker.network.internal" => {
            format!("driver option {key:?}: podman 4.3's API ignores it; write internal = true")
        }
        _ => format!(
            "driver option {key:?}: podman 4.3's API ignores it (it honours {}, {} and {})",
            OPT_BRIDGE_NAME, OPT_DOCKER_MTU, OPT_MTU
        ),
    }
}

/// A Linux interface name as netavark takes one for its bridge: 1-15 bytes, no `/`,
/// whitespace or `:`.
fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks one driver option's value; `Ok` gives it as podman is given it.
pub fn check_driver_opt(key: &str, value: &str) -> Result<(), String> {
    match key {
        OPT_BRIDGE_NAME if is_interface_name(value) => Ok(()),
        OPT_BRIDGE_NAME => Err(format!(
            "{key} {value:?} must be an interface name of 1-15 characters of [A-Za-z0-9._-]"
        )),
        OPT_DOCKER_MTU | OPT_MTU => match value.parse::<u32>() {
            Ok(m) if (68..=65535).contains(&m) => Ok(()),
            _ => Err(format!("{key} {value:?} must be an MTU of 68-65535")),
        },
        _ => Err(driver_opt_refusal(key)),
    }
}

/// Checks the subnets of one network; every problem is returned with the index of its
/// subnet (`None`: the list as a whole).
pub fn check_subnets(o: &NetworkOptions) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    let mut blocks: Vec<(usize, Cidr)> = Vec::new();
    for (i, s) in o.subnets.iter().enumerate() {
        let block = match Cidr::parse(&s.subnet) {
            Ok(b) => b,
            Err(e) => {
                out.push((Some(i), format!("subnet {e}")));
                continue;
            }
        };
        if block.is_v6() && !o.enable_ipv6 {
            out.push((
                Some(i),
                format!(
                    "subnet {:?} is IPv6, and the network has no enable_ipv6 = true",
                    s.subnet
                ),
            ));
        }
        if let Some((j, _)) = blocks.iter().find(|(_, b)| b.overlaps(&block)) {
            out.push((
                Some(i),
                format!(
                    "subnet {:?} overlaps subnet {:?} of the same network",
                    s.subnet, o.subnets[*j].subnet
                ),
            ));
        }
        if let Some(g) = &s.gateway {
            match g.parse::<IpAddr>() {
                Ok(a) if !block.contains(a) => out.push((
                    Some(i),
                    format!("gateway {g:?} is outside subnet {:?}", s.subnet),
                )),
                Ok(a) if block.is_edge(a) => out.push((
                    Some(i),
                    format!(
                        "gateway {g:?} is the network or broadcast address of subnet {:?}",
                        s.subnet
                    ),
                )),
                Ok(_) => {}
                Err(_) => out.push((Some(i), format!("gateway {g:?} is not an IP address"))),
            }
        }
        if let Some(r) = &s.ip_range {
            match Cidr::parse(r) {
                Ok(range) if !block.covers(&range) => out.push((
                    Some(i),
                    format!("ip_range {r:?} is outside subnet {:?}", s.subnet),
                )),
                Ok(_) => {}
                Err(e) => out.push((Some(i), format!("ip_range {e}"))),
            }
        }
        blocks.push((i, block));
    }
    out
}

/// `[networks.NAME]` of a service file, each checked at its position.
pub(super) fn parse_networks(
    c: &mut Checker<'_>,
    raw: &BTreeMap<Spanned<String>, Spanned<RawNetwork>>,
    at: &mut BTreeMap<String, crate::error::Location>,
) -> BTreeMap<String, NetworkOptions> {
    let mut out = BTreeMap::new();
    for (name, net) in raw {
        let n = name.get_ref();
        if !(n == "default"
            || (super::rules::is_network(n)
                && !matches!(n.as_str(), "bridge" | "host" | "none" | "podman")))
        {
            c.bad(
                name.span(),
                format!("[networks.{n}]: a network's name is \"default\" (the service's own) or of [A-Za-z0-9._-]; podman's bridge, host and none take no options"),
            );
        }
        let r = net.get_ref();
        c.count(
            &r.subnets,
            r.subnets.get_ref().len(),
            MAX_ENTRIES,
            "subnets",
        );
        let subnets: Vec<Subnet> = r
            .subnets
            .get_ref()
            .iter()
            .map(|s| {
                let s = s.get_ref();
                Subnet {
                    subnet: s.subnet.get_ref().clone(),
                    gateway: s.gateway.as_ref().map(|g| g.get_ref().clone()),
                    ip_range: s.ip_range.as_ref().map(|g| g.get_ref().clone()),
                }
            })
            .collect();
        let mut o = NetworkOptions {
            subnets,
            internal: r.internal.as_ref().is_some_and(|b| *b.get_ref()),
            enable_ipv6: r.enable_ipv6.as_ref().is_some_and(|b| *b.get_ref()),
            ..NetworkOptions::default()
        };
        for (i, why) in check_subnets(&o) {
            let span = match i {
                Some(i) => r.subnets.get_ref()[i].span(),
                None => r.subnets.span(),
            };
            c.bad(span, format!("[networks.{n}]: {why}"));
        }
        c.count(
            &r.driver_opts,
            r.driver_opts.get_ref().len(),
            MAX_ENTRIES,
            "driver_opts",
        );
        for (k, v) in r.driver_opts.get_ref() {
            let value = match v.get_ref() {
                Word::Int(i) => i.to_string(),
                Word::Str(s) => s.clone(),
            };
            if let Err(e) = check_driver_opt(k.get_ref(), &value) {
                c.bad(k.span(), format!("[networks.{n}]: {e}"));
            }
            o.driver_opts.insert(k.get_ref().clone(), value);
        }
        if o.driver_opts.contains_key(OPT_MTU) && o.driver_opts.contains_key(OPT_DOCKER_MTU) {
            c.bad(
                r.driver_opts.span(),
                format!("[networks.{n}]: {OPT_MTU} and {OPT_DOCKER_MTU} are two names of one option: keep one"),
            );
        }
        c.count(&r.labels, r.labels.get_ref().len(), MAX_ENTRIES, "labels");
        for (k, v) in r.labels.get_ref() {
            if k.get_ref().is_empty() {
                c.bad(
                    k.span(),
                    format!("[networks.{n}]: a label's key must not be empty"),
                );
            } else if k.get_ref().to_ascii_lowercase().starts_with("mcp.") {
                c.bad(
                    k.span(),
                    format!(
                        "[networks.{n}]: label {:?} is reserved: the mcp. prefix is the agent's own (which networks it made)",
                        k.get_ref()
                    ),
                );
            }
            c.string(k, "label key");
            c.string(v, "label value");
            o.labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        at.insert(n.clone(), c.loc(name.span()));
        out.insert(n.clone(), o);
    }
    out
}

/// The rules between a service's networks and its components: each declared network is
/// joined; an address lies in a subnet of its network's family (not its edges, not its
/// gateway), on a network the service declares, once per network.
pub(super) fn check_service(
    c: &mut Checker<'_>,
    networks: &BTreeMap<String, NetworkOptions>,
    at: &BTreeMap<String, crate::error::Location>,
    components: &[Component],
    sources: &[ComponentSource],
) {
    for (name, loc) in at {
        let joined = components
            .iter()
            .any(|k| k.network == *name || k.settings.networks.iter().any(|e| e.name == *name));
        if !joined {
            c.bad_at(
                *loc,
                format!("[networks.{name}] is declared, and no component joins it: list it in a component's networks"),
            );
        }
    }
    let mut taken: BTreeMap<(&str, IpAddr), &str> = BTreeMap::new();
    for (k, cs) in components.iter().zip(sources) {
        for (i, e) in k.settings.networks.iter().enumerate() {
            let Some(loc) = cs.networks.get(i).copied() else {
                continue;
            };
            for (family, addr) in [
                ("ipv4_address", &e.ipv4_address),
                ("ipv6_address", &e.ipv6_address),
            ] {
                let Some(text) = addr else { continue };
                let Ok(a) = text.parse::<IpAddr>() else {
                    continue; // reported with the entry
                };
                let Some(o) = networks.get(&e.name) else {
                    c.bad_at(
                        loc,
                        format!("{family} {text:?} on network {:?}: an address needs the network's subnet, and the service declares none ([networks.{}] with subnets = [{{ subnet = \"...\" }}])", e.name, e.name),
                    );
                    continue;
                };
                let block = o
                    .subnets
                    .iter()
                    .filter_map(|s| Some((s, Cidr::parse(&s.subnet).ok()?)))
                    .find(|(_, b)| b.contains(a));
                match block {
                    None => {
                        let same: Vec<&str> = o
                            .subnets
                            .iter()
                            .filter(|s| {
                                Cidr::parse(&s.subnet).is_ok_and(|b| b.is_v6() == a.is_ipv6())
                            })
                            .map(|s| s.subnet.as_str())
                            .collect();
                        c.bad_at(
                            loc,
                            if same.is_empty() {
                                format!(
                                    "{family} {text:?}: network {:?} has no {} subnet",
                                    e.name,
                                    if a.is_ipv6() { "IPv6" } else { "IPv4" }
                                )
                            } else {
                                format!(
                                    "{family} {text:?} is outside network {:?}'s subnet {}",
                                    e.name,
                                    same.join(", ")
                                )
                            },
                        );
                    }
                    Some((_, b)) if b.is_edge(a) => c.bad_at(
                        loc,
                        format!(
                            "{family} {text:?} is the network or broadcast address of {}",
                            b.network()
                        ),
                    ),
                    Some((s, b)) => {
                        let gateway = s.gateway.as_ref().and_then(|g| g.parse::<IpAddr>().ok());
                        let first = first_host(&b);
                        if gateway == Some(a) || (gateway.is_none() && first == Some(a)) {
                            c.bad_at(
                                loc,
                                format!("{family} {text:?} is the gateway of network {:?}", e.name),
                            );
                        } else if let Some(other) =
                            taken.insert((e.name.as_str(), a), k.name.as_str())
                        {
                            c.bad_at(
                                loc,
                                format!("{family} {text:?} on network {:?} is also component {other:?}'s", e.name),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The first host address of a block: podman's gateway when none is given.
fn first_host(b: &Cidr) -> Option<IpAddr> {
    let net: Cidr = Cidr::parse(&b.network()).ok()?;
    Some(match net.addr {
        IpAddr::V4(v) => std::net::Ipv4Addr::from(u32::from(v).checked_add(1)?).into(),
        IpAddr::V6(v) => std::net::Ipv6Addr::from(u128::from(v).checked_add(1)?).into(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{check_registry_rules, parse_service};

    /// mailcow's network as the import writes it: v4 and v6 subnets, a bridge name,
    /// IPv6, per-network aliases and static addresses.
    pub(crate) const MAILCOW: &str = r#"name = "mail"

[networks.net]
subnets = [{ subnet = "172.22.1.0/24" }, { subnet = "fd4d:6169:6c63:6f77::/64" }]
enable_ipv6 = true
driver_opts = { "com.docker.network.bridge.name" = "br-mailcow", mtu = 1400 }
labels = { "org.example.team" = "mail" }

[networks.back]
subnets = [{ subnet = "10.213.7.0/24", gateway = "10.213.7.254", ip_range = "10.213.7.128/25" }]
internal = true

[[components]]
name = "unbound"
image = "i"
networks = [{ name = "net", aliases = ["unbound"], ipv4_address = "172.22.1.254", ipv6_address = "fd4d:6169:6c63:6f77::5" }, "back"]

[[components]]
name = "redis"
image = "i"
networks = [{ name = "net", ipv4_address = "172.22.1.249" }, { name = "back", ipv4_address = "10.213.7.1" }]
"#;

    fn parse(text: &str) -> Result<crate::model::Service, String> {
        parse_service(Path::new("svc.toml"), text)
            .map(|f| f.service)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn network_options_and_addresses_parse_and_export_back() {
        let s = parse(MAILCOW).unwrap();
        let net = &s.networks["net"];
        assert_eq!(net.subnets.len(), 2);
        assert!(net.enable_ipv6 && !net.internal);
        assert_eq!(
            net.driver_opts["com.docker.network.bridge.name"],
            "br-mailcow"
        );
        assert_eq!(
            net.driver_opts["mtu"], "1400",
            "an integer written for a string"
        );
        let back = &s.networks["back"];
        assert!(back.internal);
        assert_eq!(back.subnets[0].gateway.as_deref(), Some("10.213.7.254"));
        assert_eq!(back.subnets[0].ip_range.as_deref(), Some("10.213.7.128/25"));
        let u = &s.components[0].settings.networks;
        assert_eq!(u[0].aliases, ["unbound"]);
        assert_eq!(u[0].ipv4_address.as_deref(), Some("172.22.1.254"));
        assert_eq!(u[0].ipv6_address.as_deref(), Some("fd4d:6169:6c63:6f77::5"));
        assert_eq!(u[1], "back");
        let text = s.to_toml();
        assert!(text.contains("[networks.net]"), "{text}");
        assert!(
            text.contains("    \"back\",\n"),
            "a plain entry stays a string: {text}"
        );
        assert_eq!(parse(&text).unwrap(), s, "{text}");
        // The registry's JSON reads back the same.
        let json = serde_json::to_string(&s.networks).unwrap();
        let again: std::collections::BTreeMap<String, crate::model::NetworkOptions> =
            serde_json::from_str(&json).unwrap();
        assert_eq!(again, s.networks);
    }

    #[test]
    fn every_network_rule_names_the_line_and_reason() {
        let base = "name = \"s\"\n[networks.n]\n";
        let comp = "\n[[components]]\nname = \"a\"\nimage = \"i\"\n";
        for (net, entry, at, why) in [
            ("subnets = [{ subnet = \"10.1.0.0\" }]\n", "networks = [\"n\"]", "3:12", "is not a CIDR"),
            ("subnets = [{ subnet = \"10.1.0.5/24\" }]\n", "networks = [\"n\"]", "3:12", "host bits set: the network is 10.1.0.0/24"),
            ("subnets = [{ subnet = \"fd00::/64\" }]\n", "networks = [\"n\"]", "3:12", "is IPv6, and the network has no enable_ipv6 = true"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }, { subnet = \"10.1.0.0/16\" }]\n", "networks = [\"n\"]", "3:40", "overlaps subnet \"10.1.0.0/24\""),
            ("subnets = [{ subnet = \"10.1.0.0/24\", gateway = \"10.2.0.1\" }]\n", "networks = [\"n\"]", "3:12", "gateway \"10.2.0.1\" is outside subnet \"10.1.0.0/24\""),
            ("subnets = [{ subnet = \"10.1.0.0/24\", ip_range = \"10.1.0.0/16\" }]\n", "networks = [\"n\"]", "3:12", "ip_range \"10.1.0.0/16\" is outside subnet"),
            ("subnets = [{ subnet = \"10.1.0.0/24\", gw = \"10.1.0.1\" }]\n", "networks = [\"n\"]", "3:38", "unknown field `gw`"),
            ("driver_opts = { \"com.docker.network.bridge.enable_icc\" = \"true\" }\n", "networks = [\"n\"]", "3:17", "podman 4.3's API ignores it (it honours com.docker.network.bridge.name"),
            ("driver_opts = { \"com.docker.network.enable_ipv6\" = \"true\" }\n", "networks = [\"n\"]", "3:17", "write enable_ipv6 = true"),
            ("driver_opts = { \"com.docker.network.bridge.name\" = \"a-bridge-name-too-long\" }\n", "networks = [\"n\"]", "3:17", "1-15 characters"),
            ("driver_opts = { mtu = \"9\" }\n", "networks = [\"n\"]", "3:17", "MTU of 68-65535"),
            ("internal = true\n", "networks = [\"m\"]", "2:11", "[networks.n] is declared, and no component joins it"),
            ("labels = { \"mcp.service\" = \"x\" }\n", "networks = [\"n\"]", "3:12", "label \"mcp.service\" is reserved"),
            ("internal = true\n", "networks = [{ name = \"n\", ipv4_address = \"10.1.0.5\" }]", "8:13", "ipv4_address \"10.1.0.5\": network \"n\" has no IPv4 subnet"),
            ("internal = true\n", "networks = [{ name = \"n\" }, { name = \"m\", ipv4_address = \"10.1.0.5\" }]", "8:29", "an address needs the network's subnet, and the service declares none"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", ipv4_address = \"10.2.0.5\" }]", "8:13", "ipv4_address \"10.2.0.5\" is outside network \"n\"'s subnet 10.1.0.0/24"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", ipv6_address = \"fd00::5\" }]", "8:13", "network \"n\" has no IPv6 subnet"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", ipv4_address = \"10.1.0.255\" }]", "8:13", "the network or broadcast address of 10.1.0.0/24"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", ipv4_address = \"10.1.0.1\" }]", "8:13", "is the gateway of network \"n\""),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", ipv4_address = \"10.1.0\" }]", "8:13", "is not an IPv4 address"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", mac_address = \"x\" }]", "8:13", "unknown field `mac_address`"),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [{ name = \"n\", aliases = [\"A\"] }]", "8:13", "alias \"A\" of network \"n\""),
            ("subnets = [{ subnet = \"10.1.0.0/24\" }]\n", "networks = [3]", "8:13", "a network's name or a table"),
        ] {
            let text = format!("{base}{net}{comp}{entry}\n");
            let e = parse(&text).unwrap_err();
            assert!(e.contains(&format!("svc.toml:{at}: ")) && e.contains(why), "{text}\n{e}\nwanted {at}: {why}");
        }
        // [networks.bridge] takes no options; two components, one address.
        let e = parse("name = \"s\"\n[networks.bridge]\ninternal = true\n[[components]]\nname = \"a\"\nimage = \"i\"\nnetwork = \"bridge\"\n").unwrap_err();
        assert!(
            e.contains("svc.toml:2:11: [networks.bridge]: a network's name"),
            "{e}"
        );
        let twice = "name = \"s\"\n[networks.n]\nsubnets = [{ subnet = \"10.1.0.0/24\" }]\n[[components]]\nname = \"a\"\nimage = \"i\"\nnetworks = [{ name = \"n\", ipv4_address = \"10.1.0.5\" }]\n[[components]]\nname = \"b\"\nimage = \"i\"\nnetworks = [{ name = \"n\", ipv4_address = \"10.1.0.5\" }]\n";
        let e = parse(twice).unwrap_err();
        assert!(e.contains("svc.toml:11:13: ipv4_address \"10.1.0.5\" on network \"n\" is also component \"a\"'s"), "{e}");
    }

    #[test]
    fn two_services_declaring_one_network_declare_the_same_options() {
        let file = |path: &str, name: &str, subnet: &str, addr: &str| {
            parse_service(
                Path::new(path),
                &format!("name = \"{name}\"\n[networks.shared]\nsubnets = [{{ subnet = \"{subnet}\" }}]\n[[components]]\nname = \"a\"\nimage = \"i\"\nnetworks = [{{ name = \"shared\", ipv4_address = \"{addr}\" }}]\n"),
            )
            .unwrap()
        };
        let a = file("a.toml", "a", "10.1.0.0/24", "10.1.0.5");
        let other = file("b.toml", "b", "10.2.0.0/24", "10.2.0.5");
        let e = check_registry_rules(
            std::slice::from_ref(&a.service),
            std::slice::from_ref(&other),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.toml:2:11: network \"shared\" is declared with other options by service \"a\": networks are machine-wide"), "{e}");
        // The same options: fine, but not the same address.
        let same = file("b.toml", "b", "10.1.0.0/24", "10.1.0.5");
        let e = check_registry_rules(
            std::slice::from_ref(&a.service),
            std::slice::from_ref(&same),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("b.toml:7:13: address 10.1.0.5 on network \"shared\" is also component \"a\"'s of service \"a\""), "{e}");
        let fine = file("b.toml", "b", "10.1.0.0/24", "10.1.0.6");
        check_registry_rules(
            std::slice::from_ref(&a.service),
            std::slice::from_ref(&fine),
        )
        .unwrap();
        // A service re-applied with new options does not collide with its old self.
        let moved = file("a.toml", "a", "10.3.0.0/24", "10.3.0.5");
        check_registry_rules(
            std::slice::from_ref(&a.service),
            std::slice::from_ref(&moved),
        )
        .unwrap();
    }

    /// The fuzz corpus's network files: the good one is [`MAILCOW`] and round-trips; the
    /// bad one is refused with every problem at its line.
    #[test]
    fn the_fuzz_corpus_network_files_parse_or_fail_at_their_lines() {
        let read = |h: &str| {
            std::fs::read_to_string(format!(
                "{}/fuzz/corpus/service_file/{h}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let good = read("36aa8b813adbd4eea2db00ded4afa6ae5b47d4cd");
        assert_eq!(good, MAILCOW);
        let bad = read("6924d66827f933efb27142114214b2dc86c14b85");
        let e = parse(&bad).unwrap_err();
        for want in [
            "svc.toml:3:12: [networks.n]: gateway \"10.2.0.1\" is outside subnet \"10.1.0.0/24\"",
            "svc.toml:3:62: [networks.n]: subnet \"fd00::/129\" is not a CIDR: the prefix must be 0-128",
            "svc.toml:4:17: [networks.n]: driver option \"vlan\": podman 4.3's API ignores it",
            "svc.toml:8:98: network \"n\" is listed twice",
            "svc.toml:8:13: ipv4_address \"10.1.0.0\" is the network or broadcast address of 10.1.0.0/24",
            "svc.toml:8:56: ipv6_address \"fd00::1\" on network \"m\": an address needs the network's subnet",
        ] {
            assert!(e.contains(want), "{want}\n{e}");
        }
    }
}
