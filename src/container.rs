//! From a registry component to the exact container the agent creates: name, labels,
//! injected env, published ports, and the spec hash that detects drift.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::model::ComponentKey;
use crate::model::{self, Component, PortPublish, Proto, RestartPolicy, RouteMode};

pub const LABEL_MANAGED: &str = "mcp.managed";
pub const LABEL_NODE: &str = "mcp.node";
pub const LABEL_SERVICE: &str = "mcp.service";
pub const LABEL_COMPONENT: &str = "mcp.component";
pub const LABEL_SPEC_HASH: &str = "mcp.spec-hash";

/// Everything podman is told when the container is created. Serialized canonically (sorted
/// maps, fixed field order) to compute the spec hash, so any change to what would be
/// created shows up as drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub network: String,
    pub restart: RestartPolicy,
    pub volumes: Vec<String>,
    pub ports: Vec<PortPublish>,
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// The container for `component` of `service` on `node`. Routes without a host port yet
    /// are not published (the allocator gives every route one before creation).
    pub fn build(node: &str, service: &str, component: &Component) -> ContainerSpec {
        let mut env = component.env.clone();
        let mut ports = component.ports.clone();
        let routes = &component.routes;
        for r in routes {
            env.insert(model::route_env_key(&r.name), r.port.to_string());
            if let Some(host_port) = r.host_port {
                ports.push(PortPublish {
                    // L7 routes are reached only through the proxy on this machine.
                    ip: match r.mode {
                        RouteMode::L7 => Some([127, 0, 0, 1].into()),
                        RouteMode::L4 => None,
                    },
                    host_port,
                    container_port: r.port,
                    proto: Proto::Tcp,
                });
            }
        }
        if let [r] = routes.as_slice() {
            env.insert("PORT".into(), r.port.to_string());
        }
        let mut spec = ContainerSpec {
            name: model::container_name(service, &component.name),
            image: component.image.clone(),
            cmd: component.cmd.clone(),
            env,
            user: component.user.clone(),
            network: component.network.clone(),
            restart: component.restart,
            volumes: component.volumes.clone(),
            ports,
            labels: BTreeMap::new(),
        };
        let hash = spec.hash();
        spec.labels = BTreeMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NODE.to_string(), node.to_string()),
            (LABEL_SERVICE.to_string(), service.to_string()),
            (LABEL_COMPONENT.to_string(), component.name.clone()),
            (LABEL_SPEC_HASH.to_string(), hash),
        ]);
        spec
    }

    /// Hex SHA-256 (first 16 bytes) of the canonical JSON of the spec.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("spec serializes");
        let digest = Sha256::digest(&json);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn spec_hash(&self) -> &str {
        self.labels.get(LABEL_SPEC_HASH).map_or("", String::as_str)
    }
}

/// What the labels of a container say about who owns it; borrowed from the labels, so
/// reading it allocates nothing (the plan reads it for every listed container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Ours: created by this agent on this node, for this component.
    Ours {
        service: &'a str,
        component: &'a str,
        spec_hash: &'a str,
    },
    /// Labelled managed but by another node's agent, or with labels we cannot read.
    Foreign,
    /// No `mcp.managed=true`: never ours to touch.
    Unmanaged,
}

impl Owner<'_> {
    /// The component, when ours.
    pub fn key(&self) -> Option<ComponentKey> {
        match *self {
            Owner::Ours {
                service, component, ..
            } => Some(ComponentKey::new(service, component)),
            _ => None,
        }
    }

    /// Whether this is ours and for `key`.
    pub fn is_for(&self, key: &ComponentKey) -> bool {
        matches!(*self, Owner::Ours { service, component, .. }
            if service == key.service && component == key.component)
    }
}

pub fn owner<'a>(labels: &'a BTreeMap<String, String>, node: &str) -> Owner<'a> {
    // One descent to the `mcp.` labels, then a walk over them in order: the plan calls this
    // for every listed container, and separate lookups would walk the map five times.
    let (mut managed, mut n, mut service, mut component, mut hash) = (None, None, None, None, None);
    let from = (Bound::Included("mcp."), Bound::Unbounded);
    for (k, v) in labels.range::<str, _>(from) {
        match k.as_str() {
            LABEL_MANAGED => managed = Some(v.as_str()),
            LABEL_NODE => n = Some(v.as_str()),
            LABEL_SERVICE => service = Some(v.as_str()),
            LABEL_COMPONENT => component = Some(v.as_str()),
            LABEL_SPEC_HASH => hash = Some(v.as_str()),
            k if !k.starts_with("mcp.") => break,
            _ => {}
        }
    }
    if managed != Some("true") {
        return Owner::Unmanaged;
    }
    match (n, service, component) {
        (Some(n), Some(service), Some(component)) if n == node => Owner::Ours {
            service,
            component,
            spec_hash: hash.unwrap_or(""),
        },
        _ => Owner::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredState, Route};

    fn comp() -> Component {
        Component {
            name: "web".into(),
            image: "localhost/web:1".into(),
            desired_state: DesiredState::Running,
            network: "bridge".into(),
            user: None,
            restart: RestartPolicy::No,
            cmd: vec![],
            env: BTreeMap::from([("A".into(), "1".into())]),
            volumes: vec![],
            ports: vec![],
            routes: vec![],
        }
    }

    #[test]
    fn labels_identify_the_component_and_node() {
        let s = ContainerSpec::build("n1", "shop", &comp());
        assert_eq!(s.name, "shop-web");
        assert_eq!(
            owner(&s.labels, "n1"),
            Owner::Ours {
                service: "shop",
                component: "web",
                spec_hash: s.spec_hash()
            }
        );
        assert_eq!(owner(&s.labels, "n2"), Owner::Foreign);
        assert_eq!(owner(&BTreeMap::new(), "n1"), Owner::Unmanaged);
    }

    #[test]
    fn any_change_to_what_is_created_changes_the_hash() {
        let base = ContainerSpec::build("n1", "shop", &comp());
        let mut c = comp();
        c.env.insert("A".into(), "2".into());
        assert_ne!(
            ContainerSpec::build("n1", "shop", &c).spec_hash(),
            base.spec_hash()
        );
        let mut c = comp();
        c.restart = RestartPolicy::Always;
        assert_ne!(
            ContainerSpec::build("n1", "shop", &c).spec_hash(),
            base.spec_hash()
        );
        // The node is a label, not part of what is created.
        assert_eq!(
            ContainerSpec::build("n2", "shop", &comp()).spec_hash(),
            base.spec_hash()
        );
    }

    #[test]
    fn routes_inject_port_env_and_publish_their_host_port() {
        let mut c = comp();
        c.routes = vec![Route {
            name: "http-api".into(),
            port: 8080,
            mode: RouteMode::L7,
            hostname: Some("a.test".into()),
            host_port: Some(20001),
        }];
        let s = ContainerSpec::build("n1", "shop", &c);
        assert_eq!(s.env["PORT"], "8080");
        assert_eq!(s.env["PORT_HTTP_API"], "8080");
        assert_eq!(s.ports[0].to_string(), "127.0.0.1:20001:8080/tcp");
        c.routes[0].host_port = Some(20002);
        assert_ne!(
            ContainerSpec::build("n1", "shop", &c).spec_hash(),
            s.spec_hash()
        );
        c.routes.push(Route {
            name: "raw".into(),
            port: 9000,
            mode: RouteMode::L4,
            hostname: None,
            host_port: Some(20003),
        });
        let s = ContainerSpec::build("n1", "shop", &c);
        assert!(!s.env.contains_key("PORT"));
        assert_eq!(s.env["PORT_RAW"], "9000");
        assert_eq!(s.ports[1].to_string(), "20003:9000/tcp");
    }
}
