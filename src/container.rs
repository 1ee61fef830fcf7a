//! From a registry component to the exact container the agent creates: name, labels,
//! injected env, published ports, and the spec hash that detects drift.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::model::ComponentKey;
use crate::model::{self, Component, PortPublish, Proto, RestartPolicy, RouteMode, Settings};

pub const LABEL_MANAGED: &str = "mcp.managed";
pub const LABEL_NODE: &str = "mcp.node";
pub const LABEL_SERVICE: &str = "mcp.service";
pub const LABEL_COMPONENT: &str = "mcp.component";
pub const LABEL_SPEC_HASH: &str = "mcp.spec-hash";
/// The id of the registry whose agent made the container (docs/design.md §4.4, §9).
pub const LABEL_REGISTRY: &str = "mcp.registry";

/// What of the agent's config shapes its containers: where named volumes live, and
/// whether a component without a network joins its service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub volumes_root: std::path::PathBuf,
    /// `[networks] service_default`.
    pub service_networks: bool,
    /// `[podman] pull`.
    pub pull: model::PullPolicy,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            volumes_root: DEFAULT_VOLUMES_ROOT.into(),
            service_networks: false,
            pull: model::PullPolicy::Never,
        }
    }
}

impl Host {
    pub fn from_config(config: &crate::config::Config) -> Host {
        Host {
            volumes_root: config.volumes_root(),
            service_networks: config.networks.service_default,
            pull: config.podman.pull,
        }
    }
}

/// The labels of a network the agent makes for a component of `service`: which node and
/// registry made it, and, on the service's own network (`mcp-<service>`), the service
/// (the network goes when the service does: [`crate::plan::Action::Remove`]).
pub fn network_labels(us: &Us, service: &str, network: &str) -> BTreeMap<String, String> {
    let mut l = our_network_labels(us);
    if network == model::service_network(service) {
        l.insert(LABEL_SERVICE.to_string(), service.to_string());
    }
    l
}

/// The labels every network this agent makes carries: which node and registry made it.
pub fn our_network_labels(us: &Us) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_NODE.to_string(), us.node.clone()),
    ]);
    if !us.registry.is_empty() {
        l.insert(LABEL_REGISTRY.to_string(), us.registry.clone());
    }
    l
}

/// One network a container joins, with the names it has there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub network: String,
    pub aliases: Vec<String>,
    /// Static addresses (`networks = [{ name, ipv4_address, ipv6_address }]`); hashed
    /// only when set, so endpoints without stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// `[volumes] root` of an agent whose registry is at the default path.
pub const DEFAULT_VOLUMES_ROOT: &str = "/var/lib/mcp-agent/volumes";

/// The directory of named volume `name` of `service`.
pub fn volume_dir(root: &std::path::Path, service: &str, name: &str) -> std::path::PathBuf {
    root.join(service).join(name)
}

/// How long a stop waits for a component without `stop_timeout` (podman's own default).
pub const DEFAULT_STOP_TIMEOUT_SECS: i64 = 10;

/// Who the agent is to a container's labels: the agent of this node, working from this
/// registry. Only containers that are "us" are ever stopped, replaced or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Us {
    pub node: String,
    /// This registry's id, stamped as `mcp.registry` on every container it creates
    /// (empty only for an old registry `status` reads before its first migration).
    pub registry: String,
    /// Whether containers of this node without `mcp.registry` are ours: those of a
    /// registry older than the label, which made them.
    pub unlabelled: bool,
    /// Containers of other registries taken over by `mcp-agent adopt`, by id.
    pub adopted: HashSet<String>,
}

impl Us {
    /// The agent of `node` for the registry `registry` (tests, benchmarks).
    pub fn new(node: &str, registry: &str) -> Us {
        Us {
            node: node.to_string(),
            registry: registry.to_string(),
            ..Us::default()
        }
    }
}

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
    /// Bind volumes as podman is given them: `HOST:CONTAINER[:OPTIONS]`.
    pub volumes: Vec<String>,
    /// The host paths the agent creates when missing (`create_host_path = true`), owned
    /// by `user`; hashed only when there is one, so specs without stay as they were.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub create_host_paths: Vec<String>,
    pub ports: Vec<PortPublish>,
    /// The component's process, security, resource and metadata keys. Left out of the
    /// hash when every one is podman's default (and each one left out while it is), so
    /// the hash of a component that sets none is the one it had before they existed.
    #[serde(skip_serializing_if = "Settings::is_default")]
    pub settings: Settings,
    /// A digest of each secret's contents (the env files' variables are in `env`): a
    /// rotated secret recreates the container. Empty, it is not hashed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_digests: Vec<String>,
    /// The directory of each named volume (`[volumes] root`/service/name), by name: a
    /// moved root is a new mount. Empty, it is not hashed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_dirs: BTreeMap<String, String>,
    /// The podman volume of each external volume (`[volumes.NAME]`), by name: mounted as
    /// podman's named volume, checked to exist before a create. Empty, it is not hashed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub external_volumes: BTreeMap<String, String>,
    /// The networks joined with DNS names (the first is `network`); empty for the
    /// single-network form without aliases, and then not hashed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// The options of the networks it joins that its service declares (`[networks.NAME]`),
    /// by podman's name: the agent creates them so, and a network found with others fails
    /// the component. Hashed without labels (they change nothing podman runs); empty, not
    /// hashed.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "hashed_network_options"
    )]
    pub network_options: BTreeMap<String, model::NetworkOptions>,
    /// When its image is pulled: the component's `pull`, else `[podman] pull` (which is
    /// not hashed: changing the agent's default recreates nothing).
    #[serde(skip)]
    pub pull: model::PullPolicy,
    /// The component's own `labels` (hashed in `settings`) and the agent's `mcp.*`.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    /// Routes that have no host port (the range was exhausted when they were allocated):
    /// the container is not made without them.
    #[serde(skip)]
    pub unallocated: Vec<String>,
}

impl ContainerSpec {
    /// The container for `component` of `service` on `node`. Routes without a host port yet
    /// are not published (the allocator gives every route one before creation).
    /// The registry's id is a label, not part of the hash: stamping it on containers
    /// made before it existed changes nothing about what they run.
    pub fn build(us: &Us, service: &str, component: &Component) -> ContainerSpec {
        ContainerSpec::build_with(us, service, component, None, &Host::default())
    }

    /// As [`ContainerSpec::build`], with what the component's env files and secrets hold
    /// (`crate::files::load`): the env files' variables under the component's own `env`.
    pub fn build_with(
        us: &Us,
        service: &str,
        component: &Component,
        files: Option<&crate::files::Loaded>,
        host: &Host,
    ) -> ContainerSpec {
        ContainerSpec::build_in(us, service, component, files, host, &BTreeMap::new())
    }

    /// As [`ContainerSpec::build_with`], with the options of its service's networks
    /// (`Service::network_options`, by podman's name).
    pub fn build_in(
        us: &Us,
        service: &str,
        component: &Component,
        files: Option<&crate::files::Loaded>,
        host: &Host,
        nets: &BTreeMap<String, model::NetworkOptions>,
    ) -> ContainerSpec {
        let volumes_root = host.volumes_root.as_path();
        let (network, endpoints) = networks(host, service, component);
        let network_options = nets
            .iter()
            .filter(|(n, _)| **n == network || endpoints.iter().any(|e| e.network == **n))
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        let mut env = files.map(|f| f.env.clone()).unwrap_or_default();
        env.extend(component.env.clone());
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
            network,
            restart: component.restart,
            volumes: component.volumes.iter().map(model::Volume::bind).collect(),
            create_host_paths: component
                .volumes
                .iter()
                .filter(|v| v.create_host_path)
                .map(|v| v.source.clone())
                .collect(),
            ports,
            settings: component.settings.for_container(),
            secret_digests: files.map(|f| f.secrets.clone()).unwrap_or_default(),
            volume_dirs: component
                .volumes
                .iter()
                .filter_map(model::Volume::owned_name)
                .map(|n| {
                    let dir = volume_dir(volumes_root, service, n);
                    (n.to_string(), dir.to_string_lossy().into_owned())
                })
                .collect(),
            external_volumes: component
                .volumes
                .iter()
                .filter_map(|v| Some((v.source.clone(), v.external.clone()?)))
                .collect(),
            endpoints,
            network_options,
            pull: component.settings.pull.unwrap_or(host.pull),
            labels: BTreeMap::new(),
            unallocated: routes
                .iter()
                .filter(|r| r.host_port.is_none())
                .map(|r| r.name.clone())
                .collect(),
        };
        let hash = spec.hash();
        // The service file cannot set `mcp.*` labels (`apply` refuses them); ours win.
        spec.labels = component.settings.labels.clone();
        spec.labels.extend([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NODE.to_string(), us.node.clone()),
            (LABEL_SERVICE.to_string(), service.to_string()),
            (LABEL_COMPONENT.to_string(), component.name.clone()),
            (LABEL_SPEC_HASH.to_string(), hash),
        ]);
        if !us.registry.is_empty() {
            spec.labels
                .insert(LABEL_REGISTRY.to_string(), us.registry.clone());
        }
        spec
    }

    /// Hex SHA-256 (first 16 bytes) of the canonical JSON of the spec.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("spec serializes");
        let digest = Sha256::digest(&json);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How long a stop waits before podman kills the process: the component's
    /// `stop_timeout`, else the agent's default.
    pub fn stop_timeout_secs(&self) -> i64 {
        self.settings
            .stop_timeout
            .map_or(DEFAULT_STOP_TIMEOUT_SECS, |s| s.0.into())
    }

    /// The binds podman is given: the volumes, a named one's source replaced by its
    /// directory (an external one's by its podman volume, which podman mounts as a
    /// volume), then the secrets, read-only.
    pub fn binds(&self) -> Vec<String> {
        let mut binds: Vec<String> = self
            .volumes
            .iter()
            .map(|v| {
                let name = model::volume_name(v);
                match name
                    .and_then(|n| self.external_volumes.get(n))
                    .or_else(|| name.and_then(|n| self.volume_dirs.get(n)))
                {
                    Some(src) => format!("{src}{}", &v[v.find(':').unwrap_or(v.len())..]),
                    None => v.clone(),
                }
            })
            .collect();
        binds.extend(
            self.settings
                .secrets
                .iter()
                .map(|s| format!("{}:{}:ro", s.source, s.target)),
        );
        binds
    }

    pub fn spec_hash(&self) -> &str {
        self.labels.get(LABEL_SPEC_HASH).map_or("", String::as_str)
    }
}

/// The network mode of `component` of `service` and the networks it joins with names:
/// `networks` (each with the component's name and `aliases`; "default" is the service's);
/// else `network` as set (with `aliases`, if any, on it); else the service's network with
/// `[networks] service_default`, or "bridge".
fn networks(host: &Host, service: &str, component: &Component) -> (String, Vec<Endpoint>) {
    let x = &component.settings;
    let named = |extra: &[String]| {
        let mut a = vec![component.name.clone()];
        a.extend(extra.iter().filter(|e| **e != component.name).cloned());
        a
    };
    if !x.networks.is_empty() {
        let eps: Vec<Endpoint> = x
            .networks
            .iter()
            .map(|n| Endpoint {
                network: if n.name == "default" {
                    model::service_network(service)
                } else {
                    n.name.clone()
                },
                aliases: {
                    let mut a = named(&x.aliases);
                    for e in &n.aliases {
                        if !a.contains(e) {
                            a.push(e.clone());
                        }
                    }
                    a
                },
                ipv4_address: n.ipv4_address.clone(),
                ipv6_address: n.ipv6_address.clone(),
            })
            .collect();
        return (eps[0].network.clone(), eps);
    }
    match component.network.as_str() {
        "" if host.service_networks => {
            let n = model::service_network(service);
            (
                n.clone(),
                vec![Endpoint {
                    network: n,
                    aliases: named(&x.aliases),
                    ipv4_address: None,
                    ipv6_address: None,
                }],
            )
        }
        "" => ("bridge".to_string(), Vec::new()),
        n if x.aliases.is_empty() || matches!(n, "host" | "none" | "bridge") => {
            (n.to_string(), Vec::new())
        }
        n => (
            n.to_string(),
            vec![Endpoint {
                network: n.to_string(),
                aliases: named(&x.aliases),
                ipv4_address: None,
                ipv6_address: None,
            }],
        ),
    }
}

/// The network options as hashed: without their labels.
fn hashed_network_options<S: serde::Serializer>(
    nets: &BTreeMap<String, model::NetworkOptions>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let plain: BTreeMap<&str, model::NetworkOptions> = nets
        .iter()
        .map(|(k, v)| (k.as_str(), v.without_labels()))
        .collect();
    plain.serialize(s)
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
    /// Labelled for this node, but made by another registry's agent (`registry`; `None`:
    /// no `mcp.registry` label) and not adopted: reported, never touched, until
    /// `mcp-agent adopt` or `prune`.
    Orphan {
        registry: Option<&'a str>,
        service: &'a str,
        component: &'a str,
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

/// Whose the container `id` with `labels` is (docs/design.md §4.4): ours when it is
/// labelled managed, for this node, and made by this registry (or adopted by it).
pub fn owner<'a>(id: &str, labels: &'a BTreeMap<String, String>, us: &Us) -> Owner<'a> {
    // One descent to the `mcp.` labels, then a walk over them in order: the plan calls this
    // for every listed container, and separate lookups would walk the map six times.
    let (mut managed, mut n, mut service, mut component, mut hash) = (None, None, None, None, None);
    let mut registry = None;
    let from = (Bound::Included("mcp."), Bound::Unbounded);
    for (k, v) in labels.range::<str, _>(from) {
        match k.as_str() {
            LABEL_MANAGED => managed = Some(v.as_str()),
            LABEL_NODE => n = Some(v.as_str()),
            LABEL_SERVICE => service = Some(v.as_str()),
            LABEL_COMPONENT => component = Some(v.as_str()),
            LABEL_SPEC_HASH => hash = Some(v.as_str()),
            LABEL_REGISTRY => registry = Some(v.as_str()),
            k if !k.starts_with("mcp.") => break,
            _ => {}
        }
    }
    if managed != Some("true") {
        return Owner::Unmanaged;
    }
    let (Some(n), Some(service), Some(component)) = (n, service, component) else {
        return Owner::Foreign;
    };
    if n != us.node {
        return Owner::Foreign;
    }
    let made_by_us = match registry {
        Some(r) => !us.registry.is_empty() && r == us.registry,
        None => us.unlabelled,
    };
    if made_by_us || us.adopted.contains(id) {
        Owner::Ours {
            service,
            component,
            spec_hash: hash.unwrap_or(""),
        }
    } else {
        Owner::Orphan {
            registry,
            service,
            component,
        }
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
            settings: Default::default(),
            routes: vec![],
        }
    }

    fn us(node: &str) -> Us {
        Us::new(node, "r1")
    }

    #[test]
    fn create_host_path_enters_the_hash_and_string_volumes_hash_as_before() {
        let mut c = comp();
        c.volumes = vec![model::Volume::parse_bind("/srv/a:/a:ro").unwrap()];
        let plain = ContainerSpec::build(&us("n1"), "shop", &c);
        assert_eq!(plain.volumes, ["/srv/a:/a:ro"]);
        // Nothing new in the hashed JSON of a spec without it: no container is recreated.
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("create_host_paths"), "{json}");
        c.volumes[0].create_host_path = true;
        let creating = ContainerSpec::build(&us("n1"), "shop", &c);
        assert_eq!(creating.volumes, plain.volumes);
        assert_eq!(creating.create_host_paths, ["/srv/a"]);
        assert_ne!(creating.spec_hash(), plain.spec_hash());
    }

    #[test]
    fn labels_identify_the_component_node_and_registry() {
        let s = ContainerSpec::build(&us("n1"), "shop", &comp());
        assert_eq!(s.name, "shop-web");
        assert_eq!(s.labels[LABEL_REGISTRY], "r1");
        assert_eq!(
            owner("c1", &s.labels, &us("n1")),
            Owner::Ours {
                service: "shop",
                component: "web",
                spec_hash: s.spec_hash()
            }
        );
        assert_eq!(owner("c1", &s.labels, &us("n2")), Owner::Foreign);
        assert_eq!(owner("c1", &BTreeMap::new(), &us("n1")), Owner::Unmanaged);
    }

    #[test]
    fn another_registrys_container_is_an_orphan_until_adopted() {
        let s = ContainerSpec::build(&us("n1"), "shop", &comp());
        let mut other = Us::new("n1", "r2");
        let orphan = Owner::Orphan {
            registry: Some("r1"),
            service: "shop",
            component: "web",
        };
        assert_eq!(owner("c1", &s.labels, &other), orphan);
        // Neither an old registry's leniency for unlabelled containers nor the adoption
        // of another container makes it ours.
        other.unlabelled = true;
        other.adopted.insert("c2".into());
        assert_eq!(owner("c1", &s.labels, &other), orphan);
        other.adopted.insert("c1".into());
        assert!(matches!(owner("c1", &s.labels, &other), Owner::Ours { .. }));
    }

    #[test]
    fn unlabelled_containers_are_ours_only_for_a_registry_older_than_the_label() {
        let mut s = ContainerSpec::build(&us("n1"), "shop", &comp());
        s.labels.remove(LABEL_REGISTRY);
        let mut new = us("n1");
        assert_eq!(
            owner("c1", &s.labels, &new),
            Owner::Orphan {
                registry: None,
                service: "shop",
                component: "web"
            }
        );
        new.unlabelled = true;
        assert!(matches!(owner("c1", &s.labels, &new), Owner::Ours { .. }));
    }

    #[test]
    fn any_change_to_what_is_created_changes_the_hash() {
        let base = ContainerSpec::build(&us("n1"), "shop", &comp());
        let mut c = comp();
        c.env.insert("A".into(), "2".into());
        assert_ne!(
            ContainerSpec::build(&us("n1"), "shop", &c).spec_hash(),
            base.spec_hash()
        );
        let mut c = comp();
        c.restart = RestartPolicy::Always;
        assert_ne!(
            ContainerSpec::build(&us("n1"), "shop", &c).spec_hash(),
            base.spec_hash()
        );
        // The node and the registry are labels, not part of what is created: the hash
        // of a container made before registries had an id is the same.
        assert_eq!(
            ContainerSpec::build(&us("n2"), "shop", &comp()).spec_hash(),
            base.spec_hash()
        );
        assert_eq!(
            ContainerSpec::build(&Us::new("n1", ""), "shop", &comp()).spec_hash(),
            base.spec_hash()
        );
    }

    /// The hashes of containers made by earlier versions: a key added to the spec must
    /// leave them as they are (absent or default, it is not hashed), or upgrading the
    /// agent would recreate every container.
    #[test]
    fn the_hash_of_a_component_without_newer_keys_is_pinned() {
        assert_eq!(
            ContainerSpec::build(&us("n1"), "shop", &comp()).spec_hash(),
            "4fecff4db8b4abcb96cbc79ff139760f"
        );
        let mut c = comp();
        c.user = Some("1000:1000".into());
        c.restart = RestartPolicy::UnlessStopped;
        c.cmd = vec!["web".into(), "--listen".into(), ":8080".into()];
        c.volumes = vec![crate::model::Volume::parse_bind("/srv/web:/data:rw").unwrap()];
        c.ports = vec!["127.0.0.1:9000:9000/tcp".parse().unwrap()];
        c.routes = vec![Route {
            name: "http".into(),
            port: 8080,
            mode: RouteMode::L7,
            hostname: Some("web.example.org".into()),
            host_port: Some(20000),
        }];
        assert_eq!(
            ContainerSpec::build(&us("n1"), "shop", &c).spec_hash(),
            "4ca5746fa99d4bf513915bfab9e070ee"
        );
    }

    #[test]
    fn each_new_key_changes_the_hash_and_labels_join_the_agents() {
        use crate::spec::parse_service;
        let full = parse_service(
            std::path::Path::new("f.toml"),
            crate::spec::tests::EVERY_KEY,
        )
        .unwrap()
        .service
        .components
        .remove(0);
        let base = ContainerSpec::build(&us("n1"), "shop", &comp());
        let mut seen = std::collections::HashSet::from([base.spec_hash().to_string()]);
        // Each key alone, taken from the full component, gives a hash of its own.
        let x = &full.settings;
        let d = Settings::default;
        let each: Vec<Settings> = vec![
            Settings {
                entrypoint: x.entrypoint.clone(),
                ..d()
            },
            Settings {
                working_dir: x.working_dir.clone(),
                ..d()
            },
            Settings { init: true, ..d() },
            Settings {
                stop_signal: x.stop_signal.clone(),
                ..d()
            },
            Settings {
                stop_timeout: x.stop_timeout,
                ..d()
            },
            Settings { tty: true, ..d() },
            Settings {
                stdin_open: true,
                ..d()
            },
            Settings {
                cap_add: x.cap_add.clone(),
                ..d()
            },
            Settings {
                cap_drop: x.cap_drop.clone(),
                ..d()
            },
            Settings {
                privileged: true,
                ..d()
            },
            Settings {
                security_opt: x.security_opt.clone(),
                ..d()
            },
            Settings {
                devices: x.devices.clone(),
                ..d()
            },
            Settings {
                sysctls: x.sysctls.clone(),
                ..d()
            },
            Settings {
                ulimits: x.ulimits.clone(),
                ..d()
            },
            Settings {
                shm_size: x.shm_size,
                ..d()
            },
            Settings {
                memory: x.memory,
                ..d()
            },
            Settings {
                memory_reservation: x.memory_reservation,
                ..d()
            },
            Settings {
                cpus: x.cpus,
                ..d()
            },
            Settings {
                pids_limit: x.pids_limit,
                ..d()
            },
            Settings {
                userns: x.userns.clone(),
                ..d()
            },
            Settings {
                group_add: x.group_add.clone(),
                ..d()
            },
            Settings {
                labels: x.labels.clone(),
                ..d()
            },
            Settings {
                log_driver: x.log_driver.clone(),
                ..d()
            },
            Settings {
                log_opts: x.log_opts.clone(),
                ..d()
            },
            Settings {
                env_file: x.env_file.clone(),
                ..d()
            },
            Settings {
                secrets: x.secrets.clone(),
                ..d()
            },
            Settings {
                tmpfs: x.tmpfs.clone(),
                ..d()
            },
            Settings {
                read_only: true,
                ..d()
            },
            Settings {
                hostname: x.hostname.clone(),
                ..d()
            },
            Settings {
                dns: x.dns.clone(),
                ..d()
            },
            Settings {
                dns_search: x.dns_search.clone(),
                ..d()
            },
            Settings {
                extra_hosts: x.extra_hosts.clone(),
                ..d()
            },
            Settings {
                networks: x.networks.clone(),
                ..d()
            },
            Settings {
                pull: x.pull,
                ..d()
            },
        ];
        for s in each {
            let mut c = comp();
            c.settings = s.clone();
            let h = ContainerSpec::build(&us("n1"), "shop", &c)
                .spec_hash()
                .to_string();
            assert!(seen.insert(h), "{s:?} does not change the hash");
        }
        let mut c = comp();
        c.settings = full.settings.clone();
        let s = ContainerSpec::build(&us("n1"), "shop", &c);
        assert_eq!(s.labels["org.example.team"], "shop");
        assert_eq!(s.labels[LABEL_COMPONENT], "web");
        assert_eq!(s.stop_timeout_secs(), 90);
        assert_eq!(base.stop_timeout_secs(), DEFAULT_STOP_TIMEOUT_SECS);
    }

    #[test]
    fn what_the_files_hold_is_in_the_hash_under_the_components_own_env() {
        let mut c = comp();
        c.settings.env_file = vec!["/etc/app.env".into()];
        let files = |env: &[(&str, &str)], secrets: &[&str]| crate::files::Loaded {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        };
        let build = |f: &crate::files::Loaded| {
            ContainerSpec::build_with(&us("n1"), "shop", &c, Some(f), &Host::default())
        };
        let a = build(&files(&[("A", "file"), ("B", "2")], &[]));
        // The component's own env wins over its env files.
        assert_eq!((a.env["A"].as_str(), a.env["B"].as_str()), ("1", "2"));
        let b = build(&files(&[("A", "file"), ("B", "3")], &[]));
        assert_ne!(a.spec_hash(), b.spec_hash());
        let c1 = build(&files(&[("A", "file"), ("B", "2")], &["d1"]));
        let c2 = build(&files(&[("A", "file"), ("B", "2")], &["d2"]));
        assert_ne!(c1.spec_hash(), a.spec_hash());
        assert_ne!(c1.spec_hash(), c2.spec_hash());
        // A value the component's env hides is no change of the container.
        assert_eq!(
            build(&files(&[("A", "other"), ("B", "2")], &[])).spec_hash(),
            a.spec_hash()
        );
    }

    #[test]
    fn a_named_volume_is_a_directory_of_the_service_under_the_root_in_the_hash() {
        let mut c = comp();
        c.volumes = vec![
            model::Volume::parse_bind("pgdata:/var/lib/data:rw").unwrap(),
            model::Volume::parse_bind("/srv/x:/x").unwrap(),
        ];
        let at = |c: &Component, root: &str| {
            let host = Host {
                volumes_root: root.into(),
                ..Host::default()
            };
            ContainerSpec::build_with(&us("n1"), "shop", c, None, &host)
        };
        let s = at(&c, "/v");
        assert_eq!(s.volume_dirs["pgdata"], "/v/shop/pgdata");
        assert_eq!(s.binds(), ["/v/shop/pgdata:/var/lib/data:rw", "/srv/x:/x"]);
        assert_ne!(at(&c, "/w").spec_hash(), s.spec_hash());
        c.settings.secrets = vec![crate::model::Secret {
            source: "/etc/pw".into(),
            target: "/run/secrets/pw".into(),
        }];
        assert_eq!(at(&c, "/v").binds()[2], "/etc/pw:/run/secrets/pw:ro");
    }

    #[test]
    fn networks_and_names() {
        let host = |service_networks| Host {
            service_networks,
            ..Host::default()
        };
        let build =
            |c: &Component, h: &Host| ContainerSpec::build_with(&us("n1"), "shop", c, None, h);
        let ep = |n: &str, a: &[&str]| Endpoint {
            network: n.into(),
            aliases: a.iter().map(|s| s.to_string()).collect(),
            ipv4_address: None,
            ipv6_address: None,
        };
        // Not set: podman's bridge, as before (the same hash), unless the service's
        // network is the default.
        let mut c = comp();
        c.network = String::new();
        let old = ContainerSpec::build(&us("n1"), "shop", &comp());
        let s = build(&c, &host(false));
        assert_eq!((s.network.as_str(), s.endpoints.len()), ("bridge", 0));
        assert_eq!(s.spec_hash(), old.spec_hash());
        let s = build(&c, &host(true));
        assert_eq!(s.network, "mcp-shop");
        assert_eq!(s.endpoints, [ep("mcp-shop", &["web"])]);
        assert_ne!(s.spec_hash(), old.spec_hash());
        // An explicit network keeps its single form either way.
        assert_eq!(build(&comp(), &host(true)).spec_hash(), old.spec_hash());
        // networks: each joined with the component's name and its aliases.
        c.settings.networks = vec!["default".into(), "shared".into()];
        c.settings.aliases = vec!["www".into()];
        let s = build(&c, &host(false));
        assert_eq!(s.network, "mcp-shop");
        assert_eq!(
            s.endpoints,
            [
                ep("mcp-shop", &["web", "www"]),
                ep("shared", &["web", "www"])
            ]
        );
        // aliases on a named single network.
        let mut c = comp();
        c.network = "shared".into();
        c.settings.aliases = vec!["www".into()];
        assert_eq!(
            build(&c, &host(false)).endpoints,
            [ep("shared", &["web", "www"])]
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
        let s = ContainerSpec::build(&us("n1"), "shop", &c);
        assert_eq!(s.env["PORT"], "8080");
        assert_eq!(s.env["PORT_HTTP_API"], "8080");
        assert_eq!(s.ports[0].to_string(), "127.0.0.1:20001:8080/tcp");
        c.routes[0].host_port = Some(20002);
        assert_ne!(
            ContainerSpec::build(&us("n1"), "shop", &c).spec_hash(),
            s.spec_hash()
        );
        c.routes.push(Route {
            name: "raw".into(),
            port: 9000,
            mode: RouteMode::L4,
            hostname: None,
            host_port: Some(20003),
        });
        let s = ContainerSpec::build(&us("n1"), "shop", &c);
        assert!(!s.env.contains_key("PORT"));
        assert_eq!(s.env["PORT_RAW"], "9000");
        assert_eq!(s.ports[1].to_string(), "20003:9000/tcp");
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;
    use crate::model::{DesiredState, NetworkOptions, NetworkRef, Subnet};

    /// A static address and a network's options are in the hash (a change recreates);
    /// a network's labels are not; a component without either hashes as before.
    #[test]
    fn addresses_and_network_options_enter_the_hash_labels_do_not() {
        let mut c = Component {
            name: "web".into(),
            image: "i".into(),
            desired_state: DesiredState::Running,
            network: String::new(),
            user: None,
            restart: RestartPolicy::No,
            cmd: vec![],
            env: BTreeMap::new(),
            volumes: vec![],
            ports: vec![],
            settings: Default::default(),
            routes: vec![],
        };
        c.settings.networks = vec![NetworkRef::named("edge")];
        let us = Us::new("n1", "r1");
        let host = Host::default();
        let plain = ContainerSpec::build_in(&us, "shop", &c, None, &host, &BTreeMap::new());
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("ipv4_address") && !json.contains("network_options"),
            "{json}"
        );
        let mut opts = NetworkOptions {
            subnets: vec![Subnet {
                subnet: "10.1.0.0/24".into(),
                gateway: None,
                ip_range: None,
            }],
            ..Default::default()
        };
        let nets = |o: &NetworkOptions| {
            BTreeMap::from([
                ("edge".to_string(), o.clone()),
                ("other".to_string(), o.clone()),
            ])
        };
        let with = ContainerSpec::build_in(&us, "shop", &c, None, &host, &nets(&opts));
        assert_ne!(with.spec_hash(), plain.spec_hash());
        assert_eq!(
            with.network_options.keys().collect::<Vec<_>>(),
            ["edge"],
            "only the networks it joins"
        );
        opts.labels.insert("team".into(), "x".into());
        let labelled = ContainerSpec::build_in(&us, "shop", &c, None, &host, &nets(&opts));
        assert_eq!(labelled.spec_hash(), with.spec_hash());
        c.settings.networks[0].ipv4_address = Some("10.1.0.5".into());
        let at5 = ContainerSpec::build_in(&us, "shop", &c, None, &host, &nets(&opts));
        c.settings.networks[0].ipv4_address = Some("10.1.0.6".into());
        let at6 = ContainerSpec::build_in(&us, "shop", &c, None, &host, &nets(&opts));
        assert_ne!(at5.spec_hash(), with.spec_hash());
        assert_ne!(at5.spec_hash(), at6.spec_hash());
        assert_eq!(at6.endpoints[0].ipv4_address.as_deref(), Some("10.1.0.6"));
        // Per-network aliases come after the component's name and its own aliases.
        c.settings.aliases = vec!["www".into()];
        c.settings.networks[0].aliases = vec!["edge-web".into(), "www".into()];
        let s = ContainerSpec::build_in(&us, "shop", &c, None, &host, &nets(&opts));
        assert_eq!(s.endpoints[0].aliases, ["web", "www", "edge-web"]);
    }
}
