//! Health checks, one-shot components and dependency order (issue 14): `[health]`,
//! `oneshot` and `depends_on` of a component, checked at their positions; the rules
//! between the components of one service; and the cycle search shared with the rules that
//! span the registry.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml::Spanned;

use super::parse::Checker;
use super::raw::{RawComponent, RawHealth};
use super::{ComponentSource, MAX_ENTRIES};
use crate::model::{
    dependency_target, is_name, parse_millis, Component, Condition, Dependency, DependsOn,
    HealthCheck, Millis, Probe, RestartPolicy,
};

/// The most retries a check may have before its component is unhealthy.
pub(super) const MAX_RETRIES: i64 = 100;

/// The check of `[health]`, every problem recorded at its position; `network` is the
/// component's (an http or tcp check needs one that reaches the container).
pub(super) fn parse_health(
    c: &mut Checker<'_>,
    h: &Spanned<RawHealth>,
    network: &str,
) -> Option<HealthCheck> {
    let raw = h.get_ref();
    let mut given: Vec<(&str, Range<usize>)> = Vec::new();
    let mut probe = None;
    if let Some(t) = &raw.test {
        given.push(("test", t.span()));
        probe = test_probe(c, t);
    }
    if let Some(hp) = &raw.http {
        given.push(("http", hp.span()));
        let hp = hp.get_ref();
        let port = port(c, &hp.port, "health http port");
        let path = match &hp.path {
            None => "/".to_string(),
            Some(p) => {
                let s = p.get_ref();
                if c.string(p, "health http path")
                    && (!s.starts_with('/')
                        || s.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
                {
                    c.bad(
                        p.span(),
                        format!(
                            "health http path {s:?} must begin with \"/\" and hold no spaces or control characters"
                        ),
                    );
                }
                s.clone()
            }
        };
        probe = Some(Probe::Http { port, path });
    }
    if let Some(tp) = &raw.tcp {
        given.push(("tcp", tp.span()));
        let port = port(c, &tp.get_ref().port, "health tcp port");
        probe = Some(Probe::Tcp { port });
    }
    match given.as_slice() {
        [] => c.bad(
            h.span(),
            "[health] needs what the check runs: one of test = [\"CMD\", ...], http = { port = ... } or tcp = { port = ... }",
        ),
        [_] => {}
        [_, (_, span), ..] => {
            let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
            c.bad(
                span.clone(),
                format!(
                    "[health] takes one of test, http and tcp, not {}",
                    names.join(" and ")
                ),
            );
        }
    }
    for (kind, span) in &given {
        if *kind != "test" && network == "none" {
            c.bad(
                span.clone(),
                format!(
                    "a health {kind} check reaches the container's port from the host, and network = \"none\" gives the container no network: use test = [\"CMD\", ...]"
                ),
            );
        }
    }
    let interval = millis(
        c,
        &raw.interval,
        "interval",
        HealthCheck::DEFAULT_INTERVAL,
        true,
    );
    let timeout = millis(
        c,
        &raw.timeout,
        "timeout",
        HealthCheck::DEFAULT_TIMEOUT,
        true,
    );
    let start_period = millis(c, &raw.start_period, "start_period", Millis(0), false);
    let start_interval = millis(
        c,
        &raw.start_interval,
        "start_interval",
        HealthCheck::DEFAULT_START_INTERVAL,
        true,
    );
    let retries = match &raw.retries {
        None => HealthCheck::DEFAULT_RETRIES,
        Some(r) => {
            let n = *r.get_ref();
            if !(1..=MAX_RETRIES).contains(&n) {
                c.bad(
                    r.span(),
                    format!("health retries {n} must be 1-{MAX_RETRIES}"),
                );
            }
            n.clamp(1, MAX_RETRIES) as u32
        }
    };
    Some(HealthCheck {
        probe: probe?,
        interval,
        timeout,
        retries,
        start_period,
        start_interval,
        on_failure: raw.on_failure.unwrap_or_default(),
    })
}

/// compose's `test`: `["CMD", PROGRAM, ARG…]` or `["CMD-SHELL", LINE]`.
fn test_probe(c: &mut Checker<'_>, t: &Spanned<Vec<Spanned<String>>>) -> Option<Probe> {
    let v = t.get_ref();
    c.count(t, v.len(), MAX_ENTRIES, "health test");
    let mut ok = true;
    for a in v {
        ok &= c.string(a, "health test argument");
    }
    match v.first().map(|s| s.get_ref().as_str()) {
        Some("CMD") => match v.get(1) {
            None => c.bad(
                t.span(),
                "health test [\"CMD\"] names no program: [\"CMD\", PROGRAM, ARG...]",
            ),
            Some(p) if p.get_ref().is_empty() => {
                c.bad(p.span(), "health test names an empty program")
            }
            Some(_) if ok => {
                return Some(Probe::Cmd(
                    v[1..].iter().map(|s| s.get_ref().clone()).collect(),
                ))
            }
            Some(_) => {}
        },
        Some("CMD-SHELL") => match v.get(1..) {
            Some([line]) if line.get_ref().trim().is_empty() => {
                c.bad(line.span(), "health test's CMD-SHELL line is empty")
            }
            Some([line]) if ok => return Some(Probe::Shell(line.get_ref().clone())),
            Some([_]) => {}
            _ => c.bad(
                t.span(),
                "health test [\"CMD-SHELL\", LINE] takes exactly one command line",
            ),
        },
        Some("NONE") => c.bad(
            v[0].span(),
            "health test [\"NONE\"] (compose's way to turn off an image's check) is refused: a component without a check has no [health] table",
        ),
        Some(other) => c.bad(
            v[0].span(),
            format!("health test must begin with \"CMD\" or \"CMD-SHELL\", not {other:?}"),
        ),
        None => c.bad(
            t.span(),
            "health test is empty: [\"CMD\", PROGRAM, ARG...] or [\"CMD-SHELL\", LINE]",
        ),
    }
    None
}

fn port(c: &mut Checker<'_>, p: &Spanned<i64>, what: &str) -> u16 {
    let n = *p.get_ref();
    if !(1..=65535).contains(&n) {
        c.bad(p.span(), format!("{what} {n} is outside 1-65535"));
    }
    n.clamp(1, 65535) as u16
}

fn millis(
    c: &mut Checker<'_>,
    v: &Option<Spanned<String>>,
    what: &str,
    default: Millis,
    positive: bool,
) -> Millis {
    let Some(v) = v else { return default };
    match parse_millis(v.get_ref()) {
        Ok(Millis(0)) if positive => {
            c.bad(v.span(), format!("health {what} must be more than 0"));
            default
        }
        Ok(m) => m,
        Err(e) => {
            c.bad(v.span(), format!("health {what} {e}"));
            default
        }
    }
}

/// `oneshot`, refused with what podman or the proxy would do to it.
pub(super) fn parse_oneshot(c: &mut Checker<'_>, rc: &RawComponent) -> bool {
    let Some(o) = &rc.oneshot else { return false };
    if !*o.get_ref() {
        return false;
    }
    if rc.restart != RestartPolicy::No {
        c.bad(
            o.span(),
            format!(
                "oneshot = true needs restart = \"no\": with restart = {:?} podman would run it again after it exits",
                rc.restart.as_str()
            ),
        );
    }
    if let Some(r) = rc.routes.get_ref().first() {
        c.bad(
            r.get_ref().name.span(),
            "a one-shot component (oneshot = true) takes no routes: nothing answers on them once it has exited",
        );
    }
    if let Some(h) = &rc.health {
        c.bad(
            h.span(),
            "a one-shot component (oneshot = true) takes no [health]: it is done when it exits 0 (depend on it with \"completed\")",
        );
    }
    true
}

/// `depends_on`, each entry checked on its own; where each is goes into `cs`. The names
/// are checked against the service by [`check_dependencies`], and against other services
/// by `check_registry_rules`.
pub(super) fn parse_depends_on(
    c: &mut Checker<'_>,
    rc: &RawComponent,
    cs: &mut ComponentSource,
) -> DependsOn {
    let d = &rc.depends_on;
    c.count(d, d.get_ref().len(), MAX_ENTRIES, "depends_on");
    let mut out = DependsOn::new();
    for (k, v) in d.get_ref() {
        let key = k.get_ref();
        let named = match key.split_once('/') {
            Some((s, comp)) => is_name(s) && is_name(comp),
            None => is_name(key),
        };
        if !named {
            c.bad(
                k.span(),
                format!(
                    "depends_on {key:?} must be a component of the service, or \"SERVICE/COMPONENT\" (names of [a-z0-9][a-z0-9-]{{0,62}})"
                ),
            );
            continue;
        }
        match dependency(v.get_ref()) {
            Ok(dep) => {
                cs.depends_on
                    .insert(key.clone(), (c.loc(k.span()), c.loc(v.span())));
                out.insert(key.clone(), dep);
            }
            Err(e) => c.bad(v.span(), format!("depends_on {key:?}: {e}")),
        }
    }
    out
}

const DEPENDENCY_KEYS: &[&str] = &["condition", "restart_with"];

fn dependency(v: &toml::Value) -> Result<Dependency, String> {
    match v {
        toml::Value::String(s) => Ok(Dependency {
            condition: condition(s)?,
            restart_with: false,
        }),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| !DEPENDENCY_KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "unknown key {k:?} (expected {})",
                    DEPENDENCY_KEYS.join(", ")
                ));
            }
            let condition = match t.get("condition") {
                Some(toml::Value::String(s)) => condition(s)?,
                Some(_) => return Err("condition must be a string".into()),
                None => return Err("a dependency table needs \"condition\"".into()),
            };
            let restart_with = match t.get("restart_with") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(_) => return Err("restart_with must be true or false".into()),
            };
            Ok(Dependency {
                condition,
                restart_with,
            })
        }
        _ => Err(
            "expected a condition (\"started\", \"healthy\" or \"completed\") or a table { condition = \"...\", restart_with = true }"
                .into(),
        ),
    }
}

fn condition(s: &str) -> Result<Condition, String> {
    Condition::parse(s).ok_or_else(|| {
        format!(
            "condition {s:?} is not \"started\", \"healthy\" or \"completed\" (or compose's service_started, service_healthy, service_completed_successfully)"
        )
    })
}

/// The rules between the components of `service`: each same-service name known, none
/// depending on itself or naming one twice, `"completed"` only on a one-shot component,
/// and no cycle.
pub(super) fn check_dependencies(
    c: &mut Checker<'_>,
    service: &str,
    components: &[Component],
    sources: &[ComponentSource],
) {
    let by_name: HashMap<&str, &Component> =
        components.iter().map(|k| (k.name.as_str(), k)).collect();
    for (comp, cs) in components.iter().zip(sources) {
        let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
        for (key, dep) in &comp.settings.depends_on {
            let Some(&(at, cond_at)) = cs.depends_on.get(key) else {
                continue;
            };
            let target = dependency_target(service, key);
            if let Some(first) = seen.insert(target, key) {
                c.bad_at(
                    at,
                    format!(
                        "depends_on {key:?} names {}/{} again (first as {first:?})",
                        target.0, target.1
                    ),
                );
                continue;
            }
            if target.0 != service {
                continue;
            }
            if target.1 == comp.name {
                c.bad_at(at, format!("component {:?} depends on itself", comp.name));
                continue;
            }
            match by_name.get(target.1) {
                None => c.bad_at(
                    at,
                    format!(
                        "depends_on {key:?}: service {service:?} has no component {:?}",
                        target.1
                    ),
                ),
                Some(t) if dep.condition == Condition::Completed && !t.settings.oneshot => c
                    .bad_at(
                        cond_at,
                        not_oneshot(key, &format!("{service}/{}", target.1)),
                    ),
                Some(_) => {}
            }
        }
    }
    let nodes: Vec<&str> = components.iter().map(|k| k.name.as_str()).collect();
    let edges = |n: &&str| -> Vec<&str> {
        by_name[n]
            .settings
            .depends_on
            .keys()
            .map(|k| dependency_target(service, k))
            .filter(|(s, t)| *s == service && t != n && by_name.contains_key(t))
            .map(|(_, t)| t)
            .collect()
    };
    for cycle in cycles(&nodes, edges) {
        let (from, to) = (cycle[cycle.len() - 2], cycle[cycle.len() - 1]);
        let i = components.iter().position(|k| k.name == from).unwrap();
        let key = keys_by_target(service, &components[i])[&(service, to)];
        if let Some(&(at, _)) = sources[i].depends_on.get(key) {
            let spelled: Vec<String> = cycle.iter().map(|n| format!("{service}/{n}")).collect();
            c.bad_at(at, cycle_reason(&spelled));
        }
    }
}

/// Why a `"completed"` dependency on `target` is refused.
pub(super) fn not_oneshot(key: &str, target: &str) -> String {
    format!(
        "depends_on {key:?} = \"completed\" needs a one-shot component (oneshot = true), and {target} is not one"
    )
}

pub(super) fn cycle_reason(spelled: &[String]) -> String {
    format!("dependency cycle: {}", spelled.join(" -> "))
}

/// Every cycle a depth-first search over `nodes` (in their order, each node's edges in
/// theirs) closes: each as its path `a -> … -> a`, the last step the edge that closed it.
/// Edges to nodes not in `nodes` are not followed.
pub(super) fn cycles<N: Clone + Eq + std::hash::Hash>(
    nodes: &[N],
    edges: impl Fn(&N) -> Vec<N>,
) -> Vec<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark: HashMap<N, Mark> = nodes.iter().map(|n| (n.clone(), Mark::New)).collect();
    let mut found = Vec::new();
    for start in nodes {
        if mark[start] != Mark::New {
            continue;
        }
        // The path from `start`, each node with its edges and how many were followed.
        let mut path: Vec<(N, Vec<N>, usize)> = vec![(start.clone(), edges(start), 0)];
        mark.insert(start.clone(), Mark::OnPath);
        while let Some((_, out, next)) = path.last_mut() {
            let Some(to) = out.get(*next).cloned() else {
                let (done, _, _) = path.pop().unwrap();
                mark.insert(done, Mark::Done);
                continue;
            };
            *next += 1;
            match mark.get(&to) {
                Some(Mark::New) => {
                    let e = edges(&to);
                    mark.insert(to.clone(), Mark::OnPath);
                    path.push((to, e, 0));
                }
                Some(Mark::OnPath) => {
                    let from = path.iter().position(|(n, _, _)| *n == to).unwrap();
                    let mut cycle: Vec<N> =
                        path[from..].iter().map(|(n, _, _)| n.clone()).collect();
                    cycle.push(to);
                    found.push(cycle);
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    found
}

/// The depends_on keys of a component by the component each names (for messages that
/// name the entry as written).
pub(super) fn keys_by_target<'a>(
    service: &'a str,
    comp: &'a Component,
) -> BTreeMap<(&'a str, &'a str), &'a str> {
    let mut out = BTreeMap::new();
    for k in comp.settings.depends_on.keys() {
        out.entry(dependency_target(service, k))
            .or_insert(k.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cycles;

    #[test]
    fn cycles_are_found_with_the_edge_that_closes_them() {
        let edges = |n: &u32| match n {
            1 => vec![2],
            2 => vec![3, 1],
            3 => vec![1, 9],
            4 => vec![4],
            _ => vec![],
        };
        assert_eq!(
            cycles(&[1, 2, 3, 4, 5], edges),
            [vec![1, 2, 3, 1], vec![1, 2, 1], vec![4, 4]]
        );
        assert!(cycles(&[1u32, 2], |n| if *n == 1 { vec![2] } else { vec![] }).is_empty());
    }
}
