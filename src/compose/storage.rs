//! A compose service's ports, volumes, tmpfs, secrets, configs and env files: short and
//! long syntaxes, relative paths made absolute against the project directory, named
//! volumes as the agent's named volumes.

use std::path::Path;

use super::service::Svc;
use super::yaml::{Node, Value};
use crate::model::{PortPublish, Proto, Secret, Volume};

/// Options of a short-syntax volume the agent passes on, and those with no effect on
/// Linux (docker for Mac's consistency hints).
const VOLUME_MODES: &[&str] = &[
    "ro", "rw", "z", "Z", "U", "shared", "slave", "private", "rshared", "rslave", "rprivate",
    "nocopy", "noexec", "exec", "nosuid", "suid", "nodev", "dev",
];
const NO_EFFECT_MODES: &[&str] = &["cached", "delegated", "consistent"];

pub(super) fn map(svc: &mut Svc<'_>, node: &Node) {
    if let Some(v) = node.get("env_file") {
        env_files(svc, v);
    }
    if let Some(v) = node.get("ports") {
        ports(svc, v);
    }
    if let Some(v) = node.get("expose") {
        svc.note(
            v,
            "expose",
            "no effect in the agent: containers on a network reach each other's ports without it (podman's expose is image metadata)",
        );
    }
    if let Some(v) = node.get("volumes") {
        svc.from("volumes", v, "volumes");
        for item in v.seq().unwrap_or(&[]) {
            volume(svc, item);
        }
        if v.seq().is_none() && !v.is_null() {
            svc.invalid(v, "volumes", "must be a list");
        }
    }
    if let Some(v) = node.get("tmpfs") {
        svc.from("tmpfs", v, "tmpfs");
        let t = svc.texts(v, "tmpfs");
        svc.c.settings.tmpfs.extend(t);
    }
    if let Some(v) = node.get("secrets") {
        secrets(svc, v);
    }
    if let Some(v) = node.get("configs") {
        configs(svc, v);
    }
}

fn proto(s: &str) -> Option<Proto> {
    match s {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "sctp" => Some(Proto::Sctp),
        _ => None,
    }
}

/// `8080` or `8000-8002`.
fn port_range(s: &str) -> Option<(u16, u16)> {
    let one = |p: &str| p.parse::<u16>().ok().filter(|&n| n > 0);
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            (a <= b).then_some((a, b))
        }
        None => one(s).map(|n| (n, n)),
    }
}

/// The publishes of one port, from its parts; `Err((unsupported, why))`.
fn publishes(
    ip: Option<&str>,
    host: Option<&str>,
    container: &str,
    proto_s: &str,
) -> Result<Vec<PortPublish>, (bool, String)> {
    let proto = proto(proto_s).ok_or((
        false,
        format!("protocol {proto_s:?} must be tcp, udp or sctp"),
    ))?;
    let ip = match ip.filter(|i| !i.is_empty()) {
        Some(i) => Some(
            i.parse()
                .map_err(|_| (false, format!("{i:?} is not an IP address")))?,
        ),
        None => None,
    };
    let (c0, c1) = port_range(container).ok_or((
        false,
        format!("{container:?} is not a container port or range"),
    ))?;
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err((true, "a port without a host port is published by podman on a port it picks: the agent's ports are fixed, write HOST:CONTAINER".into()));
    };
    let (h0, h1) =
        port_range(host).ok_or((false, format!("{host:?} is not a host port or range")))?;
    if h1 - h0 != c1 - c0 {
        return Err((true, format!("host ports {host} for container ports {container}: podman picks one of a range, the agent's ports are fixed")));
    }
    Ok((0..=(c1 - c0))
        .map(|i| PortPublish {
            ip,
            host_port: h0 + i,
            container_port: c0 + i,
            proto,
        })
        .collect())
}

/// Compose's short syntax: `[[IP:]HOST[-RANGE]:]CONTAINER[-RANGE][/PROTO]`.
fn short_port(s: &str) -> Result<Vec<PortPublish>, (bool, String)> {
    let (rest, proto) = s.rsplit_once('/').unwrap_or((s, "tcp"));
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r.split_once("]:").ok_or((
            false,
            format!("{s:?}: an IPv6 address is [ADDRESS]:HOST:CONTAINER"),
        ))?;
        (Some(ip), after)
    } else {
        (None, rest)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    match (ip, parts.as_slice()) {
        (None, [c]) => publishes(None, None, c, proto),
        (Some(ip), [h, c]) => publishes(Some(ip), Some(h), c, proto),
        (None, [h, c]) => publishes(None, Some(h), c, proto),
        (None, [ip, h, c]) => publishes(Some(ip), Some(h), c, proto),
        _ => Err((false, format!("{s:?} is not [[IP:]HOST:]CONTAINER[/PROTO]"))),
    }
}

fn ports(svc: &mut Svc<'_>, v: &Node) {
    svc.from("ports", v, "ports");
    let Some(items) = v.seq() else {
        return svc.invalid(v, "ports", "must be a list");
    };
    for item in items {
        let got = match &item.value {
            Value::Scalar { text, .. } => short_port(text),
            Value::Map(_) => long_port(svc, item),
            _ => Err((
                false,
                "a port is a string or { target, published, host_ip, protocol }".into(),
            )),
        };
        match got {
            Ok(p) => svc.c.ports.extend(p),
            Err((true, why)) => svc.unsupported(item, "ports", why),
            Err((false, why)) => svc.invalid(item, "ports", why),
        }
    }
}

fn long_port(svc: &mut Svc<'_>, item: &Node) -> Result<Vec<PortPublish>, (bool, String)> {
    for (k, val) in item.map().unwrap_or(&[]) {
        match k.name.as_str() {
            "target" | "published" | "host_ip" | "protocol" => {}
            // Swarm's routing mesh or not, and names for tools: no effect on a container.
            "mode" | "name" | "app_protocol" => {}
            other if other.starts_with("x-") => {}
            other => svc.invalid(
                val,
                &format!("ports.{other}"),
                "unknown key (not in the compose specification)",
            ),
        }
    }
    let field = |k: &str| item.get(k).and_then(Node::text).map(str::to_string);
    let target = field("target").ok_or((false, "a port needs target:".to_string()))?;
    let published = field("published");
    publishes(
        field("host_ip").as_deref(),
        published.as_deref(),
        &target,
        &field("protocol").unwrap_or_else(|| "tcp".into()),
    )
}

fn is_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

/// A volume's source as the agent takes it: a named volume (the agent's directory, or
/// with `external` podman's volume of that name), or a bind's absolute host path.
struct Source {
    source: String,
    /// Whether a missing one may be created (a path given in the service; not a named
    /// volume, nor a volume's `device`, which must be there).
    creatable: bool,
    /// An external volume: podman's volume of this name.
    external: Option<String>,
}

/// The source of a service's volume; `None` (reported) when it cannot be one.
fn source(svc: &mut Svc<'_>, item: &Node, source: &str) -> Option<Source> {
    if is_path(source) {
        return Some(Source {
            source: svc.p.absolute(source).to_string_lossy().into_owned(),
            creatable: true,
            external: None,
        });
    }
    let Some(def) = svc.p.volumes.get(source).cloned() else {
        svc.invalid(
            item,
            "volumes",
            format!("volume {source:?} is not defined in the top-level volumes:"),
        );
        return None;
    };
    let key = format!("volumes.{source}");
    if let Some(ext) = def.get("external") {
        if ext.bool() == Some(true) || ext.map().is_some() {
            return external(svc, item, source, &def, ext);
        }
    }
    let mut bind: Option<String> = None;
    for (k, v) in def.map().unwrap_or(&[]) {
        let vk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "driver" if matches!(v.text(), Some("local") | None) => {}
            "driver" => svc.p.findings.unsupported(
                v.at,
                &vk,
                "the agent's named volumes are directories of its own (driver local)",
            ),
            "external" if v.bool() == Some(false) => {}
            "external" => {
                svc.p
                    .findings
                    .invalid(v.at, &vk, "external is true, false or { name: NAME }")
            }
            "name" => svc.p.findings.note(
                v.at,
                &vk,
                format!(
                    "no effect: the agent's volume is the directory [volumes] root/{}/{source}",
                    svc.p.name
                ),
            ),
            "labels" => svc.p.findings.note(
                v.at,
                &vk,
                "no effect: the agent's volumes are directories, without labels",
            ),
            "driver_opts" => {
                let opt = |o: &str| v.get(o).and_then(Node::text).map(str::to_string);
                match (opt("type").as_deref(), opt("o").as_deref(), opt("device")) {
                    (Some("none"), Some(o), Some(dev)) if o.split(',').any(|x| x == "bind") && v.map().is_some_and(|m| m.len() == 3) => {
                        bind = Some(svc.p.absolute(&dev).to_string_lossy().into_owned())
                    }
                    _ => svc.p.findings.unsupported(v.at, &vk, "only the bind form { type: none, o: bind, device: PATH } is understood (a bind mount of PATH)"),
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
    match bind {
        Some(path) => Some(Source {
            source: path,
            creatable: false,
            external: None,
        }),
        None if crate::model::is_volume_name(source) => Some(Source {
            source: source.to_string(),
            creatable: false,
            external: None,
        }),
        None => {
            svc.invalid(item, "volumes", format!("volume name {source:?} cannot be the agent's ([A-Za-z0-9][A-Za-z0-9_.-]{{0,62}})"));
            None
        }
    }
}

/// An external volume (`external: true`, with `name:`; or the legacy `external: { name }`):
/// podman's volume, which the agent mounts and never creates nor removes. Compose refuses
/// any other key beside `external` and `name`, and so does the import.
fn external(
    svc: &mut Svc<'_>,
    item: &Node,
    source: &str,
    def: &Node,
    ext: &Node,
) -> Option<Source> {
    let key = format!("volumes.{source}");
    let mut ok = true;
    // The podman name, and where it is said.
    let mut name = def
        .get("name")
        .and_then(|n| Some((n.text()?.to_string(), n.at, format!("{key}.name"))));
    for (k, v) in def.map().unwrap_or(&[]) {
        let vk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "external" | "name" => {}
            other if other.starts_with("x-") => {}
            other => {
                ok = false;
                svc.p.findings.invalid(v.at, &vk, format!("conflicting parameters \"external\" and {other:?} specified for volume {source:?}"));
            }
        }
    }
    if let Some(m) = ext.map() {
        for (k, v) in m {
            let vk = format!("{key}.external.{}", k.name);
            match (k.name.as_str(), v.text()) {
                ("name", Some(legacy)) => match &name {
                    Some((n, ..)) if n != legacy => {
                        ok = false;
                        svc.p.findings.invalid(v.at, &vk, format!("volume.external.name and volume.name conflict ({legacy:?}, {n:?}); only use volume.name"));
                    }
                    _ => name = Some((legacy.to_string(), v.at, vk)),
                },
                (other, _) if other.starts_with("x-") => {}
                _ => {
                    ok = false;
                    svc.p
                        .findings
                        .invalid(v.at, &vk, "external is true, false or { name: NAME }");
                }
            }
        }
    }
    let (podman, at, nk) = name.unwrap_or_else(|| (source.to_string(), def.at, key.clone()));
    if !crate::model::is_podman_volume_name(&podman) {
        svc.p.findings.invalid(at, &nk, format!("{podman:?} is not a podman volume name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 255 bytes)"));
        ok = false;
    }
    if !crate::model::is_volume_name(source) {
        svc.invalid(item, "volumes", format!("volume name {source:?} cannot be a service file's ([A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}); give it name: and a shorter key"));
        ok = false;
    }
    ok.then(|| Source {
        source: source.to_string(),
        creatable: false,
        external: Some(podman),
    })
}

/// A named volume (the agent's, `source` a name) is mounted as podman mounts its own
/// volumes, which compose's are under podman-compose: `nodev,nosuid`, unless the
/// entry asks for `dev` or `suid`.
fn as_podman_volume(source: &str, opts: &mut Vec<String>) {
    if source.starts_with('/') {
        return;
    }
    for (on, off) in [("nodev", "dev"), ("nosuid", "suid")] {
        if !opts.iter().any(|o| o == on || o == off) {
            opts.push(on.to_string());
        }
    }
}

fn volume(svc: &mut Svc<'_>, item: &Node) {
    match &item.value {
        Value::Scalar { text, .. } => {
            let parts: Vec<&str> = text.split(':').collect();
            let (src, target, mode) = match parts.as_slice() {
                [t] => {
                    return svc.unsupported(item, "volumes", format!("{t:?} is an anonymous volume, podman's and kept in its database: name it (NAME:{t}) to make it the agent's"));
                }
                ["", ..] => {
                    return svc.invalid(
                        item,
                        "volumes",
                        "the volume's source is empty (an unset variable?)",
                    );
                }
                [s, t] => (*s, *t, None),
                [s, t, m] => (*s, *t, Some(*m)),
                _ => return svc.invalid(item, "volumes", "a volume is [SOURCE:]TARGET[:MODE]"),
            };
            let Some(Source {
                source,
                creatable,
                external,
            }) = source(svc, item, src)
            else {
                return;
            };
            let mut opts = Vec::new();
            for m in mode.unwrap_or("").split(',').filter(|m| !m.is_empty()) {
                if VOLUME_MODES.contains(&m) {
                    opts.push(m);
                } else if !NO_EFFECT_MODES.contains(&m) {
                    return svc.unsupported(
                        item,
                        "volumes",
                        format!(
                            "volume mode {m:?} is not one of {}",
                            VOLUME_MODES.join(", ")
                        ),
                    );
                }
            }
            let mut opts: Vec<String> = opts.into_iter().map(str::to_string).collect();
            as_podman_volume(&source, &mut opts);
            svc.c.volumes.push(Volume {
                source,
                target: target.to_string(),
                options: (!opts.is_empty()).then(|| opts.join(",")),
                // The short syntax creates a missing host path, as compose does.
                create_host_path: creatable,
                external,
            });
        }
        Value::Map(_) => long_volume(svc, item),
        _ => svc.invalid(item, "volumes", "a volume is a string or a mapping"),
    }
}

fn long_volume(svc: &mut Svc<'_>, item: &Node) {
    let field = |k: &str| item.get(k).and_then(Node::text).map(str::to_string);
    let Some(target) = field("target") else {
        return svc.invalid(item, "volumes", "a volume needs target:");
    };
    let kind = field("type").unwrap_or_default();
    let mut opts: Vec<String> = Vec::new();
    let mut create = false;
    for (k, v) in item.map().unwrap_or(&[]) {
        let vk = format!("volumes.{}", k.name);
        match (k.name.as_str(), kind.as_str()) {
            ("type" | "source" | "target", _) => {}
            ("read_only", _) => {
                if v.bool() == Some(true) {
                    opts.push("ro".into());
                }
            }
            ("consistency", _) => {}
            ("bind", "bind") => {
                for (bk, bv) in v.map().unwrap_or(&[]) {
                    let t = bv.text().unwrap_or_default().to_string();
                    match bk.name.as_str() {
                        "propagation" if VOLUME_MODES.contains(&t.as_str()) => opts.push(t),
                        "create_host_path" => create = bv.bool() == Some(true),
                        "selinux" if t == "z" || t == "Z" => opts.push(t),
                        "recursive" if t == "enabled" => {}
                        other => svc.unsupported(
                            bv,
                            &format!("{vk}.{other}"),
                            format!("{t:?} is not a bind option the agent passes on"),
                        ),
                    }
                }
            }
            ("volume", "volume") => {
                for (bk, bv) in v.map().unwrap_or(&[]) {
                    match bk.name.as_str() {
                        "nocopy" => {
                            if bv.bool() == Some(true) {
                                opts.push("nocopy".into());
                            }
                        }
                        "subpath" => svc.unsupported(bv, &format!("{vk}.subpath"), "a named volume's subpath: the agent mounts the volume's whole directory"),
                        other => svc.invalid(bv, &format!("{vk}.{other}"), "unknown key (not in the compose specification)"),
                    }
                }
            }
            ("tmpfs", "tmpfs") => {}
            (other, _) if other.starts_with("x-") => {}
            (other, _) => svc.invalid(
                v,
                &vk,
                format!("{other:?} does not belong to a volume of type {kind:?}"),
            ),
        }
    }
    match kind.as_str() {
        "bind" | "volume" => {
            let Some(src) = field("source") else {
                if kind == "volume" {
                    return svc.unsupported(item, "volumes", format!("a volume without source is anonymous, podman's and kept in its database: name it to make it the agent's ({target})"));
                }
                return svc.invalid(item, "volumes", "a bind needs source:");
            };
            if kind == "volume" && is_path(&src) {
                return svc.invalid(
                    item,
                    "volumes",
                    format!("a volume of type volume names a volume, not the path {src:?}"),
                );
            }
            let Some(Source {
                source,
                creatable,
                external,
            }) = source(svc, item, &src)
            else {
                return;
            };
            as_podman_volume(&source, &mut opts);
            svc.c.volumes.push(Volume {
                source,
                target,
                options: (!opts.is_empty()).then(|| opts.join(",")),
                create_host_path: create && creatable,
                external,
            });
        }
        "tmpfs" => {
            let mut t = target.clone();
            let mut o = Vec::new();
            if let Some(tm) = item.get("tmpfs") {
                for (k, v) in tm.map().unwrap_or(&[]) {
                    let val = v.text().unwrap_or_default();
                    match k.name.as_str() {
                        "size" => o.push(format!("size={val}")),
                        // Octal as written (1777), or YAML's 0o1777.
                        "mode" => o.push(format!("mode={}", val.trim_start_matches("0o"))),
                        other => svc.unsupported(
                            v,
                            &format!("volumes.tmpfs.{other}"),
                            "tmpfs takes size and mode",
                        ),
                    }
                }
            }
            if opts.iter().any(|x| x == "ro") {
                o.push("ro".into());
            }
            if !o.is_empty() {
                t = format!("{t}:{}", o.join(","));
            }
            svc.from("tmpfs", item, "volumes");
            svc.c.settings.tmpfs.push(t);
        }
        "" => svc.invalid(
            item,
            "volumes",
            "a volume needs type: (bind, volume or tmpfs)",
        ),
        other => svc.unsupported(
            item,
            "volumes",
            format!(
                "volumes of type {other:?}: the agent mounts binds, its named volumes and tmpfs"
            ),
        ),
    }
}

/// The top-level definition of secret or config `name`, as a host path.
fn definition(svc: &mut Svc<'_>, item: &Node, what: &str, name: &str) -> Option<String> {
    let defs = if what == "secrets" {
        svc.p.secrets.clone()
    } else {
        svc.p.configs.clone()
    };
    let Some(def) = defs.get(name) else {
        svc.invalid(
            item,
            what,
            format!("{name:?} is not defined in the top-level {what}:"),
        );
        return None;
    };
    let key = format!("{what}.{name}");
    let mut file = None;
    for (k, v) in def.map().unwrap_or(&[]) {
        let vk = format!("{key}.{}", k.name);
        match k.name.as_str() {
            "file" => file = v.text().map(|f| svc.p.absolute(f).to_string_lossy().into_owned()),
            "name" => {}
            "external" if v.bool() == Some(false) => {}
            "external" => svc.p.findings.unsupported(v.at, &vk, "an external secret or config is swarm's or podman's store: give it as file:"),
            "environment" | "content" => svc.p.findings.unsupported(v.at, &vk, "from a variable or inline: write it to a file (chmod 600 for a secret) and name it in file:"),
            "labels" | "driver" | "driver_opts" | "template_driver" => svc.p.findings.unsupported(v.at, &vk, "swarm's: the agent mounts a file"),
            other if other.starts_with("x-") => {}
            _ => svc.p.findings.invalid(v.at, &vk, "unknown key (not in the compose specification)"),
        }
    }
    file
}

/// (source name, target, the entry's node) of each entry of a service's secrets or configs.
fn mounts(svc: &mut Svc<'_>, v: &Node, what: &str) -> Vec<(String, Option<String>, Node)> {
    let mut out = Vec::new();
    for item in v.seq().unwrap_or(&[]) {
        match &item.value {
            Value::Scalar { text, .. } => out.push((text.clone(), None, item.clone())),
            Value::Map(m) => {
                let field = |k: &str| item.get(k).and_then(Node::text).map(str::to_string);
                let Some(source) = field("source") else {
                    svc.invalid(item, what, "needs source:");
                    continue;
                };
                for (k, val) in m {
                    match k.name.as_str() {
                        "source" | "target" => {}
                        "uid" | "gid" | "mode" => svc.unsupported(val, &format!("{what}.{}", k.name), "the agent bind-mounts the file as it is: set its owner and mode on the host"),
                        other if other.starts_with("x-") => {}
                        _ => svc.invalid(val, &format!("{what}.{}", k.name), "unknown key (not in the compose specification)"),
                    }
                }
                out.push((source, field("target"), item.clone()));
            }
            _ => svc.invalid(item, what, "an entry is a name or { source, target }"),
        }
    }
    if v.seq().is_none() && !v.is_null() {
        svc.invalid(v, what, "must be a list");
    }
    out
}

fn secrets(svc: &mut Svc<'_>, v: &Node) {
    svc.from("secrets", v, "secrets");
    for (name, target, item) in mounts(svc, v, "secrets") {
        let Some(file) = definition(svc, &item, "secrets", &name) else {
            continue;
        };
        let target = match target {
            Some(t) if t.starts_with('/') => t,
            Some(t) => format!("/run/secrets/{t}"),
            None => format!("/run/secrets/{name}"),
        };
        svc.c.settings.secrets.push(Secret {
            source: file,
            target,
        });
    }
}

fn configs(svc: &mut Svc<'_>, v: &Node) {
    svc.from("volumes", v, "configs");
    for (name, target, item) in mounts(svc, v, "configs") {
        let Some(file) = definition(svc, &item, "configs", &name) else {
            continue;
        };
        let target = target.unwrap_or_else(|| format!("/{name}"));
        svc.c.volumes.push(Volume {
            source: file,
            target,
            options: Some("ro".into()),
            create_host_path: false,
            external: None,
        });
    }
}

fn env_files(svc: &mut Svc<'_>, v: &Node) {
    svc.from("env_file", v, "env_file");
    let items: Vec<Node> = match &v.value {
        Value::Seq(items) => items.clone(),
        Value::Null => Vec::new(),
        _ => vec![v.clone()],
    };
    for item in items {
        let (path, required, format) = match &item.value {
            Value::Scalar { text, .. } => (text.clone(), true, None),
            Value::Map(_) => {
                let Some(p) = item.get("path").and_then(Node::text) else {
                    svc.invalid(&item, "env_file", "needs path:");
                    continue;
                };
                let required = item.get("required").and_then(Node::bool).unwrap_or(true);
                let format = item.get("format").and_then(Node::text).map(str::to_string);
                (p.to_string(), required, format)
            }
            _ => {
                svc.invalid(
                    &item,
                    "env_file",
                    "an env file is a path or { path, required, format }",
                );
                continue;
            }
        };
        let abs = svc.p.absolute(&path);
        if !abs.is_file() {
            if required {
                svc.invalid(
                    &item,
                    "env_file",
                    format!("env file {} not found", abs.display()),
                );
            } else {
                svc.note(
                    &item,
                    "env_file",
                    format!("left out: {} is not there (required: false)", abs.display()),
                );
            }
            continue;
        }
        match format.as_deref() {
            None => {
                if let Some(line) = interpolated_line(&abs) {
                    svc.unsupported(&item, "env_file", format!("{}: line {line} uses $, which compose interpolates and the agent's env files take as it is", abs.display()));
                }
            }
            Some("raw") => {}
            Some(f) => {
                svc.unsupported(
                    &item,
                    "env_file",
                    format!("format {f:?}: the agent reads KEY=VALUE files"),
                );
                continue;
            }
        }
        svc.c
            .settings
            .env_file
            .push(abs.to_string_lossy().into_owned());
    }
}

/// The first line of an env file whose value compose would interpolate (a `$` outside
/// single quotes).
fn interpolated_line(path: &Path) -> Option<usize> {
    let bytes = crate::spec::input::read_limited(path, crate::files::MAX_FILE_BYTES).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.lines().enumerate().find_map(|(i, l)| {
        let t = l.trim_start();
        if t.starts_with('#') {
            return None;
        }
        let (_, value) = t.split_once('=')?;
        let value = value.trim_start();
        (!value.starts_with('\'') && value.contains('$')).then_some(i + 1)
    })
}
