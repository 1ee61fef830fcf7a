//! A network's options as a service file declares them (`[networks.NAME]`, named as
//! compose names them), a component's entry in `networks` (a name, or a table with its
//! addresses and aliases there), and the address arithmetic their rules need.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// `com.docker.network.bridge.name`: the bridge interface netavark makes.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// `com.docker.network.driver.mtu`: podman's compat API reads it as `mtu`.
pub const OPT_DOCKER_MTU: &str = "com.docker.network.driver.mtu";
/// podman's own name of the MTU option.
pub const OPT_MTU: &str = "mtu";

/// One `[networks.NAME]` of a service: what podman is given when the agent creates the
/// network. Every field's default is podman's own; a default field is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkOptions {
    /// compose's `ipam.config`: IPv4 and IPv6 subnets, each with its gateway and range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    /// Only the options podman 4.3's compat API honours (`apply` refuses the others).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One subnet of a network: `subnet` a CIDR, `gateway` an address in it, `ip_range` a
/// CIDR inside it that podman hands addresses from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

impl NetworkOptions {
    pub fn is_default(&self) -> bool {
        *self == NetworkOptions::default()
    }

    /// The MTU asked for, under either name.
    pub fn mtu(&self) -> Option<&str> {
        self.driver_opts
            .get(OPT_MTU)
            .or_else(|| self.driver_opts.get(OPT_DOCKER_MTU))
            .map(String::as_str)
    }

    /// The same options as podman would apply them, without labels (which change
    /// nothing of the network's behaviour, and are not compared with a network found).
    pub fn without_labels(&self) -> NetworkOptions {
        NetworkOptions {
            labels: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// A component's entry in `networks`: the network's name (`"default"`: the service's
/// own), and on it the component's static addresses and its aliases there. Written as
/// the bare name when it has none of those.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkRef {
    pub name: String,
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

impl NetworkRef {
    pub fn named(name: impl Into<String>) -> NetworkRef {
        NetworkRef {
            name: name.into(),
            ..NetworkRef::default()
        }
    }

    pub fn is_plain(&self) -> bool {
        self.aliases.is_empty() && self.ipv4_address.is_none() && self.ipv6_address.is_none()
    }
}

impl From<&str> for NetworkRef {
    fn from(s: &str) -> NetworkRef {
        NetworkRef::named(s)
    }
}

impl PartialEq<&str> for NetworkRef {
    fn eq(&self, other: &&str) -> bool {
        self.is_plain() && self.name == *other
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkTable {
    name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NetworkForm {
    Name(String),
    Table(NetworkTable),
}

impl Serialize for NetworkRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_plain() {
            return s.serialize_str(&self.name);
        }
        NetworkTable {
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            ipv4_address: self.ipv4_address.clone(),
            ipv6_address: self.ipv6_address.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NetworkRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match NetworkForm::deserialize(d)? {
            NetworkForm::Name(name) => NetworkRef::named(name),
            NetworkForm::Table(t) => NetworkRef {
                name: t.name,
                aliases: t.aliases,
                ipv4_address: t.ipv4_address,
                ipv6_address: t.ipv6_address,
            },
        })
    }
}

/// A CIDR block `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u32::from(v).into(), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all: u128 = if width == 32 {
            u32::MAX.into()
        } else {
            u128::MAX
        };
        all & !((1u128 << (width - prefix)) - 1)
    }
}

impl Cidr {
    /// `10.1.2.0/24`, `fd00::/64`: the network's own address (no host bits set).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR such as \"10.1.2.0/24\""))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {a:?} is not an IP address"))?;
        let width = bits(addr).1;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("{s:?} is not a CIDR: the prefix must be 0-{width}"))?;
        let c = Cidr { addr, prefix };
        if bits(addr).0 & !mask(prefix, width) != 0 {
            return Err(format!(
                "{s:?} has host bits set: the network is {}",
                c.network()
            ));
        }
        Ok(c)
    }

    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The block's first address with its prefix, as text.
    pub fn network(&self) -> String {
        let (b, w) = bits(self.addr);
        let n = b & mask(self.prefix, w);
        let a: IpAddr = if w == 32 {
            std::net::Ipv4Addr::from(n as u32).into()
        } else {
            std::net::Ipv6Addr::from(n).into()
        };
        format!("{a}/{}", self.prefix)
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        let (b, w) = bits(a);
        let (n, nw) = bits(self.addr);
        w == nw && (b & mask(self.prefix, w)) == (n & mask(self.prefix, w))
    }

    /// Whether `a` is this block's network address or (IPv4) its broadcast address: no
    /// container may have either.
    pub fn is_edge(&self, a: IpAddr) -> bool {
        let (b, w) = bits(a);
        let m = mask(self.prefix, w);
        let first = b & m == b;
        let last = w == 32 && self.prefix < 31 && (b | !m) & u128::from(u32::MAX) == b;
        first || last
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, o: &Cidr) -> bool {
        self.is_v6() == o.is_v6() && (self.contains(o.addr) || o.contains(self.addr))
    }

    /// Whether `o` lies inside this block.
    pub fn covers(&self, o: &Cidr) -> bool {
        self.contains(o.addr) && o.prefix >= self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_contain_and_overlap() {
        let a = Cidr::parse("172.22.1.0/24").unwrap();
        assert!(a.contains("172.22.1.254".parse().unwrap()));
        assert!(!a.contains("172.22.2.1".parse().unwrap()));
        assert!(!a.contains("fd00::1".parse().unwrap()));
        assert!(a.is_edge("172.22.1.0".parse().unwrap()));
        assert!(a.is_edge("172.22.1.255".parse().unwrap()));
        assert!(!a.is_edge("172.22.1.1".parse().unwrap()));
        let six = Cidr::parse("fd4d:6169:6c63:6f77::/64").unwrap();
        assert!(six.is_v6() && six.contains("fd4d:6169:6c63:6f77::5".parse().unwrap()));
        assert!(Cidr::parse("172.22.1.5/24")
            .unwrap_err()
            .contains("the network is 172.22.1.0/24"));
        assert!(Cidr::parse("172.22.1.0/33").is_err());
        assert!(Cidr::parse("172.22.1.0").is_err());
        assert!(Cidr::parse("x/8").is_err());
        let wide = Cidr::parse("172.22.0.0/16").unwrap();
        assert!(wide.overlaps(&a) && a.overlaps(&wide) && wide.covers(&a) && !a.covers(&wide));
        assert!(!a.overlaps(&six));
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().network(), "0.0.0.0/0");
    }

    #[test]
    fn a_plain_entry_is_a_string_and_a_table_keeps_its_addresses() {
        let plain = NetworkRef::named("backend");
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#""backend""#);
        let full = NetworkRef {
            name: "backend".into(),
            aliases: vec!["db".into()],
            ipv4_address: Some("10.1.2.3".into()),
            ipv6_address: None,
        };
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            json,
            r#"{"name":"backend","aliases":["db"],"ipv4_address":"10.1.2.3"}"#
        );
        assert_eq!(serde_json::from_str::<NetworkRef>(&json).unwrap(), full);
        assert_eq!(
            serde_json::from_str::<NetworkRef>(r#""backend""#).unwrap(),
            plain
        );
        assert_eq!(
            serde_json::to_string(&NetworkOptions::default()).unwrap(),
            "{}"
        );
    }
}
