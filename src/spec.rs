//! Service files (DESIGN §3): the desired state a user writes, parsed and validated with
//! the file, line and reason of every problem.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::Location;
pub use crate::model::{
    container_name, is_hostname, is_label_value, is_name, Component, DesiredState, PortPublish,
    Proto, RestartPolicy, Route, RouteMode, Service, RESERVED_SERVICE_NAMES,
};

/// Largest service file accepted; a bigger one is almost certainly not a service file.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most components in one service.
pub const MAX_COMPONENTS: usize = 256;
/// Most routes on one component.
pub const MAX_ROUTES: usize = 64;
/// Longest single string (image, env value, cmd argument, path).
pub const MAX_VALUE_LEN: usize = 32 * 1024;
/// Most entries in one list or table (cmd, env, volumes, ports).
pub const MAX_ENTRIES: usize = 1024;

impl Service {
    /// The service as a service file; `apply` of this text gives the same service back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("service serializes")
    }
}

/// Where the parts of one service file are, for errors found after parsing.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    pub name: Option<Location>,
    /// Per component: its name, each fixed port publish, and each route's (name, hostname).
    pub components: Vec<ComponentSource>,
}

#[derive(Debug, Clone, Default)]
pub struct ComponentSource {
    pub name: Option<Location>,
    pub ports: Vec<Location>,
    pub routes: Vec<(Location, Option<Location>)>,
}

/// A service file read and validated on its own (registry-wide rules come later).
#[derive(Debug, Clone)]
pub struct ServiceFile {
    pub path: PathBuf,
    pub service: Service,
    pub source: SourceMap,
}

/// One problem in an input file, printed as `file:line:col: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: PathBuf,
    pub at: Option<Location>,
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{}:{}: {}", self.path.display(), at, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// Every problem found in a set of input files; nothing is applied while there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Issues(pub Vec<Issue>);

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

// ---- raw file shapes: what TOML gives, before validation ----

fn yes() -> bool {
    true
}

fn empty<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

fn bridge() -> Spanned<String> {
    Spanned::new(0..0, "bridge".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    components: Vec<Spanned<RawComponent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: Spanned<String>,
    image: Spanned<String>,
    #[serde(default)]
    desired_state: DesiredState,
    #[serde(default = "bridge")]
    network: Spanned<String>,
    user: Option<Spanned<String>>,
    #[serde(default)]
    restart: RestartPolicy,
    #[serde(default = "empty")]
    cmd: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    env: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    #[serde(default = "empty")]
    volumes: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    ports: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    routes: Spanned<Vec<Spanned<RawRoute>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    port: Spanned<i64>,
    #[serde(default)]
    mode: RouteMode,
    hostname: Option<Spanned<String>>,
}

fn is_network(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn is_user(s: &str) -> bool {
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

const VOLUME_OPTIONS: &[&str] = &[
    "ro", "rw", "z", "Z", "U", "shared", "slave", "private", "rshared", "rslave", "rprivate",
    "nocopy", "noexec", "exec", "nosuid", "suid", "nodev", "dev",
];

fn check_volume(v: &str) -> Result<(), String> {
    let mut parts = v.split(':');
    let host = parts.next().unwrap_or("");
    let Some(target) = parts.next() else {
        return Err(format!(
            "volume {v:?} must be HOST_PATH:CONTAINER_PATH[:OPTIONS]"
        ));
    };
    let opts = parts.next();
    if parts.next().is_some() {
        return Err(format!("volume {v:?} has too many ':' parts"));
    }
    if !host.starts_with('/') {
        return Err(format!(
            "volume host path {host:?} must be absolute (named volumes live in podman's database and would be lost with it)"
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
    if let Some(opts) = opts {
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
    let mut keys: Vec<String> = routes
        .iter()
        .map(|r| format!("PORT_{}", r.name.to_ascii_uppercase().replace('-', "_")))
        .collect();
    if routes.len() == 1 {
        keys.push("PORT".into());
    }
    keys
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    issues: Vec<Issue>,
}

impl Checker<'_> {
    fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::of(self.text, span.start)
    }
    fn bad(&mut self, span: std::ops::Range<usize>, reason: impl Into<String>) {
        self.issues.push(Issue {
            path: self.path.to_path_buf(),
            at: Some(self.loc(span)),
            reason: reason.into(),
        });
    }
    fn string(&mut self, s: &Spanned<String>, what: &str) -> bool {
        if s.get_ref().len() > MAX_VALUE_LEN {
            self.bad(
                s.span(),
                format!("{what} is longer than {MAX_VALUE_LEN} bytes"),
            );
            false
        } else if s.get_ref().contains('\0') {
            self.bad(s.span(), format!("{what} must not contain NUL"));
            false
        } else {
            true
        }
    }
    fn count<T>(&mut self, v: &Spanned<T>, n: usize, max: usize, what: &str) {
        if n > max {
            self.bad(
                v.span(),
                format!("{what} has {n} entries; at most {max} are allowed"),
            );
        }
    }
}

/// Parses and validates one service file's text. Every problem is reported, not just the
/// first.
pub fn parse_service(path: &Path, text: &str) -> Result<ServiceFile, Issues> {
    let issue = |at: Option<Location>, reason: String| {
        Issues(vec![Issue {
            path: path.to_path_buf(),
            at,
            reason,
        }])
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(issue(
            None,
            format!(
                "file is {} bytes; at most {MAX_FILE_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let raw: RawService = toml::from_str(text).map_err(|e| {
        issue(
            Some(Location::of(text, e.span().map_or(0, |s| s.start))),
            e.message().trim_end().to_string(),
        )
    })?;
    let mut c = Checker {
        path,
        text,
        issues: Vec::new(),
    };
    let mut source = SourceMap {
        name: Some(c.loc(raw.name.span())),
        components: Vec::new(),
    };
    if !is_name(raw.name.get_ref()) {
        c.bad(
            raw.name.span(),
            format!(
                "service name {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                raw.name.get_ref()
            ),
        );
    } else if RESERVED_SERVICE_NAMES.contains(&raw.name.get_ref().as_str()) {
        c.bad(
            raw.name.span(),
            format!(
                "service name {:?} is reserved (the proxy ids mcp.acme.* answer ACME challenges)",
                raw.name.get_ref()
            ),
        );
    }
    if raw.components.len() > MAX_COMPONENTS {
        c.bad(
            raw.name.span(),
            format!(
                "service has {} components; at most {MAX_COMPONENTS} are allowed",
                raw.components.len()
            ),
        );
        return Err(Issues(c.issues));
    }
    let mut components = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for rc in raw.components {
        let rc = rc.into_inner();
        let name = rc.name.get_ref().clone();
        let mut cs = ComponentSource {
            name: Some(c.loc(rc.name.span())),
            ..Default::default()
        };
        if !is_name(&name) {
            c.bad(
                rc.name.span(),
                format!("component name {name:?} must match [a-z0-9][a-z0-9-]{{0,62}}"),
            );
        } else if let Some(first) = seen.get(&name) {
            c.bad(
                rc.name.span(),
                format!(
                    "duplicate component name {name:?} (first at line {})",
                    first.line
                ),
            );
        } else {
            seen.insert(name.clone(), c.loc(rc.name.span()));
        }
        let image = rc.image.get_ref();
        if c.string(&rc.image, "image")
            && (image.is_empty() || image.len() > 255 || image.chars().any(char::is_whitespace))
        {
            c.bad(
                rc.image.span(),
                format!("image {image:?} must be a non-empty reference without whitespace"),
            );
        }
        let network = rc.network.get_ref();
        if !is_network(network) {
            c.bad(
                rc.network.span(),
                format!(
                    "network {network:?} must be \"bridge\", \"host\", \"none\" or a network name of [A-Za-z0-9._-]"
                ),
            );
        }
        if let Some(u) = &rc.user {
            if !is_user(u.get_ref()) {
                c.bad(
                    u.span(),
                    format!(
                        "user {:?} must be USER or USER:GROUP of [A-Za-z0-9._-]",
                        u.get_ref()
                    ),
                );
            }
        }
        c.count(&rc.cmd, rc.cmd.get_ref().len(), MAX_ENTRIES, "cmd");
        for a in rc.cmd.get_ref() {
            c.string(a, "cmd argument");
        }
        c.count(&rc.env, rc.env.get_ref().len(), MAX_ENTRIES, "env");
        for (k, v) in rc.env.get_ref() {
            let key = k.get_ref();
            if key.is_empty() || key.contains('=') || key.contains('\0') || key.len() > 1024 {
                c.bad(
                    k.span(),
                    format!("env key {key:?} must be non-empty, without '=' or NUL"),
                );
            }
            // Values are secrets: name the key, never the value.
            if v.get_ref().contains('\0') {
                c.bad(
                    v.span(),
                    format!("env value of {key:?} must not contain NUL"),
                );
            } else if v.get_ref().len() > MAX_VALUE_LEN {
                c.bad(
                    v.span(),
                    format!("env value of {key:?} is longer than {MAX_VALUE_LEN} bytes"),
                );
            }
        }
        c.count(
            &rc.volumes,
            rc.volumes.get_ref().len(),
            MAX_ENTRIES,
            "volumes",
        );
        for v in rc.volumes.get_ref() {
            if c.string(v, "volume") {
                if let Err(e) = check_volume(v.get_ref()) {
                    c.bad(v.span(), e);
                }
            }
        }
        c.count(&rc.ports, rc.ports.get_ref().len(), MAX_ENTRIES, "ports");
        let mut ports = Vec::new();
        let mut seen_ports: HashMap<(Proto, u16), usize> = HashMap::new();
        for p in rc.ports.get_ref() {
            match p.get_ref().parse::<PortPublish>() {
                Ok(pp) => {
                    let at = c.loc(p.span());
                    if let Some(line) = seen_ports.insert((pp.proto, pp.host_port), at.line) {
                        c.bad(
                            p.span(),
                            format!(
                                "host port {}/{} is published twice (first at line {line})",
                                pp.host_port,
                                pp.proto.as_str()
                            ),
                        );
                    }
                    cs.ports.push(at);
                    ports.push(pp);
                }
                Err(e) => c.bad(p.span(), format!("port {:?}: {e}", p.get_ref())),
            }
        }
        c.count(&rc.routes, rc.routes.get_ref().len(), MAX_ROUTES, "routes");
        let mut routes = Vec::new();
        let mut seen_routes: HashMap<String, usize> = HashMap::new();
        for rr in rc.routes.get_ref() {
            let rr = rr.get_ref();
            let rname = rr.name.get_ref().clone();
            if !is_name(&rname) {
                c.bad(
                    rr.name.span(),
                    format!("route name {rname:?} must match [a-z0-9][a-z0-9-]{{0,62}}"),
                );
            } else if let Some(line) = seen_routes.insert(rname.clone(), c.loc(rr.name.span()).line)
            {
                c.bad(
                    rr.name.span(),
                    format!("duplicate route name {rname:?} (first at line {line})"),
                );
            }
            let port = *rr.port.get_ref();
            if !(1..=65535).contains(&port) {
                c.bad(
                    rr.port.span(),
                    format!("route port {port} is outside 1-65535"),
                );
            }
            let host_loc = rr.hostname.as_ref().map(|h| c.loc(h.span()));
            match (&rr.hostname, rr.mode) {
                (Some(h), RouteMode::L7) if !is_hostname(h.get_ref()) => c.bad(
                    h.span(),
                    format!(
                        "hostname {:?} is not a valid lowercase DNS name (RFC 1123; IDNs in punycode)",
                        h.get_ref()
                    ),
                ),
                (None, RouteMode::L7) => c.bad(
                    rr.name.span(),
                    format!("l7 route {rname:?} needs a hostname"),
                ),
                (Some(h), RouteMode::L4) => c.bad(
                    h.span(),
                    format!("l4 route {rname:?} takes no hostname: it is reached on its host port"),
                ),
                _ => {}
            }
            cs.routes.push((c.loc(rr.name.span()), host_loc));
            routes.push(Route {
                name: rname,
                port: port.clamp(1, 65535) as u16,
                mode: rr.mode,
                hostname: rr.hostname.as_ref().map(|h| h.get_ref().clone()),
                host_port: None,
            });
        }
        let injected = injected_env_keys(&routes);
        for k in rc.env.get_ref().keys() {
            if injected.contains(k.get_ref()) {
                c.bad(
                    k.span(),
                    format!(
                        "env key {:?} is set by the agent from the component's routes",
                        k.get_ref()
                    ),
                );
            }
        }
        source.components.push(cs);
        components.push(Component {
            name,
            image: image.clone(),
            desired_state: rc.desired_state,
            network: network.clone(),
            user: rc.user.map(|u| u.into_inner()),
            restart: rc.restart,
            cmd: rc
                .cmd
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            env: rc
                .env
                .into_inner()
                .into_iter()
                .map(|(k, v)| (k.into_inner(), v.into_inner()))
                .collect(),
            volumes: rc
                .volumes
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            ports,
            routes,
        });
    }
    if !c.issues.is_empty() {
        return Err(Issues(c.issues));
    }
    Ok(ServiceFile {
        path: path.to_path_buf(),
        service: Service {
            name: raw.name.into_inner(),
            active: raw.active,
            components,
        },
        source,
    })
}

/// Reads service files: each path is a file, or a directory whose `*.toml` files are read
/// in name order.
pub fn read_service_files(paths: &[PathBuf]) -> Result<Vec<ServiceFile>, Issues> {
    let mut files = Vec::new();
    let mut issues = Vec::new();
    let io_issue = |p: &Path, e: std::io::Error| Issue {
        path: p.to_path_buf(),
        at: None,
        reason: format!("cannot read: {e}"),
    };
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        issues.push(Issue {
                            path: p.clone(),
                            at: None,
                            reason: "directory holds no *.toml service files".into(),
                        });
                    }
                    files.extend(found);
                }
                Err(e) => issues.push(io_issue(p, e)),
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut parsed: Vec<ServiceFile> = Vec::new();
    for f in &files {
        let text = match std::fs::read(f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    let at = Location::of(
                        std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()])
                            .unwrap_or(""),
                        usize::MAX,
                    );
                    issues.push(Issue {
                        path: f.clone(),
                        at: Some(at),
                        reason: "file is not valid UTF-8".into(),
                    });
                    continue;
                }
            },
            Err(e) => {
                issues.push(io_issue(f, e));
                continue;
            }
        };
        match parse_service(f, &text) {
            Ok(sf) => {
                if let Some(first) = parsed.iter().find(|o| o.service.name == sf.service.name) {
                    issues.push(Issue {
                        path: f.clone(),
                        at: sf.source.name,
                        reason: format!(
                            "service {:?} is also defined in {}",
                            sf.service.name,
                            first.path.display()
                        ),
                    });
                } else {
                    parsed.push(sf);
                }
            }
            Err(Issues(mut v)) => issues.append(&mut v),
        }
    }
    if issues.is_empty() {
        Ok(parsed)
    } else {
        Err(Issues(issues))
    }
}

/// The rules that span services: container names, fixed host ports and hostnames must be
/// unique across the whole registry. `existing` is what the registry holds; services named
/// in `incoming` replace their registry versions.
pub fn check_registry_rules(existing: &[Service], incoming: &[ServiceFile]) -> Result<(), Issues> {
    enum Owner<'a> {
        Registry(&'a str),
        File(&'a Path, Option<Location>),
    }
    let describe = |o: &Owner| match o {
        Owner::Registry(s) => format!("service {s:?} in the registry"),
        Owner::File(p, Some(at)) => format!("{}:{at}", p.display()),
        Owner::File(p, None) => p.display().to_string(),
    };
    let mut containers: HashMap<String, Owner> = HashMap::new();
    let mut host_ports: HashMap<(Proto, u16), Owner> = HashMap::new();
    let mut hostnames: HashMap<String, Owner> = HashMap::new();
    for s in existing {
        if incoming.iter().any(|f| f.service.name == s.name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "wiki"

[[components]]
name = "wiki"
image = "localhost/wiki:1.4"
user = "1000:1000"
restart = "unless-stopped"
cmd = ["wiki", "--listen", ":8080"]
env = { LOG_LEVEL = "info" }
volumes = ["/srv/wiki:/data:rw"]
ports = ["127.0.0.1:9000:9000/tcp"]

[[components.routes]]
name = "http"
port = 8080
hostname = "wiki.example.org"

[[components]]
name = "db"
image = "localhost/db:1"
desired_state = "stopped"
"#;

    fn parse(text: &str) -> Result<Service, String> {
        parse_service(Path::new("svc.toml"), text)
            .map(|f| f.service)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_service_file_parses_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "wiki");
        assert!(s.active);
        assert_eq!(s.components.len(), 2);
        let w = &s.components[0];
        assert_eq!(w.restart, RestartPolicy::UnlessStopped);
        assert_eq!(w.ports[0].to_string(), "127.0.0.1:9000:9000/tcp");
        assert_eq!(w.routes[0].mode, RouteMode::L7);
        let db = &s.components[1];
        assert_eq!(db.network, "bridge");
        assert_eq!(db.restart, RestartPolicy::No);
        assert_eq!(db.desired_state, DesiredState::Stopped);
    }

    #[test]
    fn export_text_parses_back_to_the_same_service() {
        let s = parse(GOOD).unwrap();
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
    }

    /// Each rule of DESIGN §3, with the line the error must name and words of its reason.
    #[test]
    fn every_rule_names_the_line_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"Wiki\"\n", "svc.toml:1:8", "service name"),
            ("name = \"w\"\nfoo = 1\n", "svc.toml:2:1", "unknown field"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n", "svc.toml:6:8", "duplicate component"),
            ("name = \"w\"\n[[components]]\nname = \"a_b\"\nimage = \"i\"\n", "svc.toml:3:8", "component name"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"data:/data\"]\n", "svc.toml:5:12", "absolute"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"/srv/../etc:/data\"]\n", "svc.toml:5:12", "'..'"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = [\"1:70000\"]\n", "svc.toml:5:10", "outside 1-65535"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nports = [\"80:80\", \"80:81\"]\n", "svc.toml:5:19", "published twice"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 0\nhostname = \"a.b\"\n", "svc.toml:7:8", "outside 1-65535"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"A_b..c\"\n", "svc.toml:8:12", "hostname"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\n", "svc.toml:6:8", "needs a hostname"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n[[components.routes]]\nname = \"h\"\nport = 80\nhostname = \"a.b\"\n[[components.routes]]\nname = \"h\"\nport = 81\nhostname = \"c.d\"\n", "svc.toml:10:8", "duplicate route"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { \"A=B\" = \"x\" }\n", "svc.toml:5:", "env key"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { A = \"x\\u0000\" }\n", "svc.toml:5:", "NUL"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nrestart = \"sometimes\"\n", "svc.toml:5:11", "unknown variant"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\nimage = 3\n", "svc.toml:4:9", "expected a string"),
            ("name = \"w\"\n[[components]]\nname = \"a\"\n", "svc.toml:2:1", "missing field `image`"),
            ("name = \"w\n", "svc.toml:1:", ""),
        ];
        for (text, at, reason) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(at), "{text:?}\n  got: {e}\n  want location {at}");
            assert!(
                e.contains(reason),
                "{text:?}\n  got: {e}\n  want reason {reason}"
            );
        }
    }

    #[test]
    fn env_values_never_appear_in_errors() {
        let e = parse("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = { K = \"s3cret\\u0000\" }\n")
            .unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn registry_rules_catch_collisions_across_services() {
        let a = parse_service(
            Path::new("a.toml"),
            "name = \"a\"\n[[components]]\nname = \"b-c\"\nimage = \"i\"\nports = [\"80:80\"]\n",
        )
        .unwrap();
        let b = parse_service(
            Path::new("b.toml"),
            "name = \"a-b\"\n[[components]]\nname = \"c\"\nimage = \"i\"\nports = [\"80:8080\"]\n",
        )
        .unwrap();
        let e = check_registry_rules(std::slice::from_ref(&a.service), std::slice::from_ref(&b))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.toml:3:8: container name \"a-b-c\""), "{e}");
        assert!(
            e.contains("b.toml:5:10: fixed host port 80/tcp is also used by service \"a\""),
            "{e}"
        );
        // Re-applying a service does not collide with its own registry version.
        check_registry_rules(std::slice::from_ref(&a.service), std::slice::from_ref(&a)).unwrap();
    }
    #[test]
    fn oversized_and_hostile_inputs_are_rejected_or_handled() {
        // 10 000 components: over the limit, one clear error.
        let mut big = String::from("name = \"big\"\n");
        for i in 0..10_000 {
            big.push_str(&format!("[[components]]\nname = \"c{i}\"\nimage = \"i\"\n"));
        }
        let e = parse(&big).unwrap_err();
        assert!(
            e.contains("10000 components; at most 256"),
            "{}",
            &e[..e.len().min(300)]
        );
        // A 10 000-character env value is within the limits: kept exactly.
        let long = "x".repeat(10_000);
        let s = parse(&format!(
            "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = {{ K = \"{long}\" }}\n"
        ))
        .unwrap();
        assert_eq!(s.components[0].env["K"], long);
        // Over 32 KiB: rejected, naming the key, not the value.
        let huge = "y".repeat(MAX_VALUE_LEN + 1);
        let e = parse(&format!(
            "name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nenv = {{ K = \"{huge}\" }}\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("env value of \"K\" is longer than") && !e.contains("yyyy"),
            "{e}"
        );
        // Path traversal, NUL and look-alikes in names, hostnames, volumes, users.
        for (field, value) in [
            ("name", "../../etc"),
            ("name", "wiki\\u0000"),
            ("name", "w\u{0456}ki"),
            ("image", "img with space"),
            ("user", "root;rm -rf /"),
            ("network", "../host"),
        ] {
            let text = if field == "name" {
                format!("name = \"{value}\"\n")
            } else {
                format!("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n{field} = \"{value}\"\n")
                    .replacen("image = \"i\"\nimage", "image", 1)
            };
            assert!(parse(&text).is_err(), "{field} = {value:?} was accepted");
        }
        for vol in [
            "/srv/../etc:/data",
            "/srv/./x:/data",
            "rel:/data",
            "/srv:rel",
            "/a:/b:rw:extra",
            "/a:/b:exec,bogus",
        ] {
            let text = format!("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nvolumes = [\"{vol}\"]\n");
            assert!(parse(&text).is_err(), "volume {vol:?} was accepted");
        }
        // A file over 1 MiB is refused before parsing.
        let e = parse_service(Path::new("big.toml"), &" ".repeat(MAX_FILE_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("at most 1048576"), "{e}");
    }
}
