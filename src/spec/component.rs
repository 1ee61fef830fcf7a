//! One `[[components]]` table of a service file and its `[[components.routes]]`: each
//! field checked, every problem recorded with its location.

use std::collections::HashMap;

use toml::Spanned;

use super::parse::Checker;
use super::raw::{RawComponent, RawRoute};
use super::rules::{injected_env_keys, is_network, is_user, parse_volume};
use super::{ComponentSource, MAX_ENTRIES, MAX_ROUTES, MAX_VALUE_LEN};
use crate::error::Location;
use crate::model::{is_hostname, is_name, Component, PortPublish, Proto, Route, RouteMode};

/// The component of `rc`, and where its parts are; `seen` holds the names of the
/// components before it (a duplicate is an issue).
pub(super) fn parse_component(
    c: &mut Checker<'_>,
    rc: RawComponent,
    seen: &mut HashMap<String, Location>,
) -> (ComponentSource, Component) {
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
    if !network.is_empty() && !is_network(network) {
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
    let mut volumes = Vec::new();
    for v in rc.volumes.get_ref() {
        match parse_volume(v.get_ref()) {
            Ok(vol) => volumes.push(vol),
            Err(e) => c.bad(v.span(), e),
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
        let (at, route) = parse_route(c, rr.get_ref(), &mut seen_routes);
        cs.routes.push(at);
        routes.push(route);
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
    if !network.is_empty() {
        cs.network = Some(c.loc(rc.network.span()));
    }
    let mut settings = super::settings::parse_settings(c, &rc, network, &mut cs);
    settings.health = rc
        .health
        .as_ref()
        .and_then(|h| super::lifecycle::parse_health(c, h, network));
    settings.oneshot = super::lifecycle::parse_oneshot(c, &rc);
    settings.depends_on = super::lifecycle::parse_depends_on(c, &rc, &mut cs);
    let component = Component {
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
        volumes,
        ports,
        settings,
        routes,
    };
    (cs, component)
}

/// The route of `rr`, and where its name and hostname are; `seen_routes` holds the names
/// (and lines) of the component's routes before it.
fn parse_route(
    c: &mut Checker<'_>,
    rr: &RawRoute,
    seen_routes: &mut HashMap<String, usize>,
) -> ((Location, Option<Location>), Route) {
    let rname = rr.name.get_ref().clone();
    if !is_name(&rname) {
        c.bad(
            rr.name.span(),
            format!("route name {rname:?} must match [a-z0-9][a-z0-9-]{{0,62}}"),
        );
    } else if let Some(line) = seen_routes.insert(rname.clone(), c.loc(rr.name.span()).line) {
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
    let at = (c.loc(rr.name.span()), host_loc);
    let route = Route {
        name: rname,
        port: port.clamp(1, 65535) as u16,
        mode: rr.mode,
        hostname: rr.hostname.as_ref().map(|h| h.get_ref().clone()),
        host_port: None,
    };
    (at, route)
}
