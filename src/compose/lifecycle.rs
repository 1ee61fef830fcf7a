//! A compose service's lifecycle keys: `healthcheck` as `[components.health]`,
//! `depends_on` with its conditions, one-shot services (another waits for them to
//! complete), `restart` and `deploy` (resources and the restart policy; swarm's other
//! keys are refused).

use std::time::Duration;

use super::service::Svc;
use super::values::parse_duration;
use super::yaml::{Node, Value};
use crate::model::{Condition, Dependency, HealthCheck, Millis, OnFailure, Probe, RestartPolicy};

/// Docker's default `start_interval`.
const DOCKER_START_INTERVAL: Millis = Millis(5_000);

pub(super) fn map(svc: &mut Svc<'_>, node: &Node) {
    if let Some(h) = node.get("healthcheck") {
        health(svc, h);
    }
    if let Some(d) = node.get("depends_on") {
        depends_on(svc, d);
    }
    let restart = node.get("restart");
    if let Some(r) = restart {
        if let Some(t) = svc.text(r, "restart") {
            if let Some(p) = restart_policy(svc, r, &t) {
                svc.from("restart", r, "restart");
                svc.c.restart = p;
            }
        }
    }
    if let Some(d) = node.get("deploy") {
        deploy(svc, d, restart.is_some());
    }
    if svc.oneshot {
        svc.c.settings.oneshot = true;
        if let Some(r) = restart {
            if svc.c.restart != RestartPolicy::No {
                svc.unsupported(r, "restart", format!("{:?} on a service another waits for to complete (service_completed_successfully): the agent runs such a one-shot to exit 0 once, never again", svc.c.restart.as_str()));
                svc.c.restart = RestartPolicy::No;
            }
        }
        if svc.c.settings.health.is_some() {
            let h = node
                .get("healthcheck")
                .expect("health came from it")
                .clone();
            svc.unsupported(&h, "healthcheck", "a check on a one-shot component (another service waits for it to complete): the agent checks only what keeps running");
            svc.c.settings.health = None;
        }
    }
}

fn restart_policy(svc: &mut Svc<'_>, r: &Node, t: &str) -> Option<RestartPolicy> {
    match t {
        "no" | "false" => Some(RestartPolicy::No),
        "always" => Some(RestartPolicy::Always),
        "unless-stopped" => Some(RestartPolicy::UnlessStopped),
        "on-failure" => Some(RestartPolicy::OnFailure),
        _ if t
            .strip_prefix("on-failure:")
            .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            svc.unsupported(r, "restart", format!("{t:?}: the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept (write on-failure)"));
            None
        }
        _ => {
            svc.invalid(
                r,
                "restart",
                format!("{t:?} is not one of no, always, unless-stopped, on-failure[:N]"),
            );
            None
        }
    }
}

/// A compose duration as whole milliseconds of the agent's.
fn millis(svc: &mut Svc<'_>, v: &Node, k: &str) -> Option<Millis> {
    let t = svc.text(v, k)?;
    match parse_duration(&t) {
        Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => {
            svc.unsupported(
                v,
                k,
                format!("{t:?}: the agent's durations are whole milliseconds"),
            );
            None
        }
        Ok(d) if d > Duration::from_secs(86_400) => {
            svc.unsupported(
                v,
                k,
                format!("{t:?}: the agent's check durations are at most a day"),
            );
            None
        }
        Ok(d) => Some(Millis(d.as_millis() as u64)),
        Err(e) => {
            svc.invalid(v, k, e);
            None
        }
    }
}

fn health(svc: &mut Svc<'_>, h: &Node) {
    let k = "healthcheck";
    if h.get("disable").and_then(Node::bool) == Some(true) {
        return;
    }
    // `{}` or `{disable: false}` says no more than no healthcheck: the image's own
    // HEALTHCHECK, which the agent does not run without one (as without the key).
    if h.is_null()
        || h.map()
            .is_some_and(|m| m.iter().all(|(k, _)| k.name == "disable"))
    {
        return svc.note(
            h,
            k,
            "no test, no setting: the image's own HEALTHCHECK, which the agent does not run (as without healthcheck:)",
        );
    }
    let probe = match h.get("test") {
        None => {
            return svc.unsupported(h, k, "a check without test runs the image's HEALTHCHECK, which the agent does not read: write the test");
        }
        Some(t) => match &t.value {
            Value::Scalar { text, .. } => {
                if text.is_empty() {
                    return svc.unsupported(t, "healthcheck.test", "an empty test runs the image's HEALTHCHECK, which the agent does not read: write the test");
                }
                Probe::Shell(text.clone())
            }
            Value::Seq(_) => {
                let argv = svc.texts(t, "healthcheck.test");
                match argv.first().map(String::as_str) {
                    Some("NONE") => return,
                    Some("CMD") if argv.len() > 1 => Probe::Cmd(argv[1..].to_vec()),
                    Some("CMD-SHELL") if argv.len() == 2 => Probe::Shell(argv[1].clone()),
                    _ => {
                        return svc.invalid(t, "healthcheck.test", "must be [\"CMD\", PROGRAM, ARG...], [\"CMD-SHELL\", LINE], [\"NONE\"] or a string (a shell line)");
                    }
                }
            }
            _ => return svc.invalid(t, "healthcheck.test", "must be a string or a list"),
        },
    };
    let mut check = HealthCheck {
        probe,
        interval: HealthCheck::DEFAULT_INTERVAL,
        timeout: HealthCheck::DEFAULT_TIMEOUT,
        retries: HealthCheck::DEFAULT_RETRIES,
        start_period: Millis(0),
        start_interval: HealthCheck::DEFAULT_INTERVAL,
        // Docker marks an unhealthy container, nothing more; so does this.
        on_failure: OnFailure::None,
    };
    let mut start_interval = None;
    for (key, v) in h.map().unwrap_or(&[]) {
        let vk = format!("{k}.{}", key.name);
        match key.name.as_str() {
            "test" | "disable" => {}
            "interval" => {
                if let Some(m) = millis(svc, v, &vk) {
                    check.interval = m;
                }
            }
            "timeout" => {
                if let Some(m) = millis(svc, v, &vk) {
                    check.timeout = m;
                }
            }
            "start_period" => {
                if let Some(m) = millis(svc, v, &vk) {
                    check.start_period = m;
                }
            }
            "start_interval" => start_interval = millis(svc, v, &vk),
            "retries" => {
                let key = svc.key(&vk);
                match svc.p.findings.int(v, &key) {
                    // Docker reads 0 as its default.
                    Some(0) | None => {}
                    Some(n @ 1..=100) => check.retries = n as u32,
                    Some(n) => svc.unsupported(
                        v,
                        &vk,
                        format!("{n}: the agent takes 1-100 failures in a row"),
                    ),
                }
            }
            other if other.starts_with("x-") => {}
            _ => svc.invalid(v, &vk, "unknown key (not in the compose specification)"),
        }
    }
    for (m, what) in [(check.interval, "interval"), (check.timeout, "timeout")] {
        if m.0 == 0 {
            let v = h.get(what).unwrap_or(h).clone();
            svc.note(&v, &format!("{k}.{what}"), "0 is docker's default: 30s");
        }
    }
    if check.interval.0 == 0 {
        check.interval = HealthCheck::DEFAULT_INTERVAL;
    }
    if check.timeout.0 == 0 {
        check.timeout = HealthCheck::DEFAULT_TIMEOUT;
    }
    // Docker checks every interval from the start, at start_interval (default 5s)
    // inside a start_period; the agent's start_interval is its pace until the first
    // success.
    check.start_interval = match start_interval {
        Some(s) if s.0 > 0 => s,
        _ if check.start_period.0 > 0 => DOCKER_START_INTERVAL,
        _ => check.interval,
    };
    svc.from("health", h, k);
    svc.c.settings.health = Some(check);
}

fn depends_on(svc: &mut Svc<'_>, d: &Node) {
    let k = "depends_on";
    let entries: Vec<(String, Node, Node)> = match &d.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|i| {
                Some((
                    i.text()?.to_string(),
                    i.clone(),
                    Node::new(Value::Null, i.at),
                ))
            })
            .collect(),
        Value::Map(m) => m
            .iter()
            .map(|(key, v)| (key.name.clone(), Node::new(Value::Null, key.at), v.clone()))
            .collect(),
        Value::Null => Vec::new(),
        _ => return svc.invalid(d, k, "must be a list or a mapping of services"),
    };
    svc.from("depends_on", d, k);
    for (name, at, v) in entries {
        let at = if at.at.line == 0 { v.clone() } else { at };
        let ek = format!("{k}.{name}");
        let mut condition = Condition::Started;
        let mut restart_with = false;
        let mut required = true;
        for (key, val) in v.map().unwrap_or(&[]) {
            match key.name.as_str() {
                "condition" => match val.text().and_then(Condition::parse) {
                    Some(c) => condition = c,
                    None => svc.invalid(val, &format!("{ek}.condition"), "must be service_started, service_healthy or service_completed_successfully"),
                },
                "restart" => restart_with = val.bool() == Some(true),
                "required" => required = val.bool() != Some(false),
                other if other.starts_with("x-") => {}
                _ => svc.invalid(val, &format!("{ek}.{}", key.name), "unknown key (not in the compose specification)"),
            }
        }
        let Some(target) = svc.p.components.get(&name).cloned() else {
            let profiles = svc.p.profiles.get(&name).cloned();
            match profiles {
                Some(_) if !required => {
                    svc.note(&at, &ek, format!("left out: {name:?} is not enabled, and required: false"));
                }
                Some(p) => svc.invalid(&at, &ek, format!("service {name:?} is not enabled: enable one of its profiles ({}) with --profile", p.join(", "))),
                None => svc.invalid(&at, &ek, format!("service {name:?} is not defined")),
            }
            continue;
        };
        let build_only = svc
            .p
            .services
            .iter()
            .any(|(k, n)| k.name == name && n.get("image").is_none());
        if build_only {
            svc.unsupported(
                &at,
                &ek,
                format!("{name:?} is not imported (it has build: and no image:)"),
            );
            continue;
        }
        svc.c.settings.depends_on.insert(
            target,
            Dependency {
                condition,
                restart_with,
            },
        );
    }
}

fn deploy(svc: &mut Svc<'_>, d: &Node, has_restart: bool) {
    for (key, v) in d.map().unwrap_or(&[]) {
        let dk = format!("deploy.{}", key.name);
        match key.name.as_str() {
            "resources" => resources(svc, v, &dk),
            "restart_policy" => {
                for (rk, rv) in v.map().unwrap_or(&[]) {
                    let rkey = format!("{dk}.{}", rk.name);
                    match rk.name.as_str() {
                        "condition" => {
                            let p = match rv.text() {
                                Some("none") => RestartPolicy::No,
                                Some("on-failure") => RestartPolicy::OnFailure,
                                Some("any") => RestartPolicy::Always,
                                _ => {
                                    svc.invalid(rv, &rkey, "must be none, on-failure or any");
                                    continue;
                                }
                            };
                            if has_restart {
                                svc.note(rv, &rkey, "restart: is set and wins, as in compose");
                            } else {
                                svc.from("restart", rv, &rkey);
                                svc.c.restart = p;
                            }
                        }
                        "max_attempts" => svc.unsupported(rv, &rkey, "the agent restarts a failed component itself, with backoff, whatever podman's count: a limit on the number of restarts cannot be kept"),
                        "delay" | "window" => svc.unsupported(rv, &rkey, "the agent's restart delays are its backoff ([reconcile] backoff_initial, backoff_max)"),
                        _ => svc.invalid(rv, &rkey, "unknown key (not in the compose specification)"),
                    }
                }
            }
            "replicas" if v.int() == Some(1) => {}
            "replicas" => svc.unsupported(v, &dk, "a component is one container"),
            "mode" if v.text() == Some("replicated") => {}
            "mode" => svc.unsupported(
                v,
                &dk,
                "swarm's global mode: a component is one container on this node",
            ),
            "labels" | "placement" | "update_config" | "rollback_config" | "endpoint_mode" => {
                let at = Node::new(Value::Null, key.at);
                svc.unsupported(
                    &at,
                    &dk,
                    "swarm's, with no meaning for one node's containers",
                )
            }
            other if other.starts_with("x-") => {}
            _ => svc.invalid(v, &dk, "unknown key (not in the compose specification)"),
        }
    }
}

fn resources(svc: &mut Svc<'_>, r: &Node, rk: &str) {
    for (key, v) in r.map().unwrap_or(&[]) {
        let k = format!("{rk}.{}", key.name);
        match key.name.as_str() {
            "limits" => {
                for (lk, lv) in v.map().unwrap_or(&[]) {
                    let lkey = format!("{k}.{}", lk.name);
                    match lk.name.as_str() {
                        "cpus" => svc.cpus(lv, &lkey),
                        "memory" => {
                            svc.from("memory", lv, &lkey);
                            let m = svc.size(lv, &lkey);
                            if m.is_some() {
                                svc.c.settings.memory = m;
                            }
                        }
                        "pids" => svc.pids(lv, &lkey),
                        _ => svc.unsupported(
                            lv,
                            &lkey,
                            "the agent's limits are cpus, memory and pids",
                        ),
                    }
                }
            }
            "reservations" => {
                for (lk, lv) in v.map().unwrap_or(&[]) {
                    let lkey = format!("{k}.{}", lk.name);
                    match lk.name.as_str() {
                        "memory" => {
                            svc.from("memory_reservation", lv, &lkey);
                            let m = svc.size(lv, &lkey);
                            if m.is_some() {
                                svc.c.settings.memory_reservation = m;
                            }
                        }
                        "cpus" => svc.unsupported(lv, &lkey, "a CPU reservation is not among the agent's keys: limit with cpus"),
                        "devices" | "generic_resources" => svc.unsupported(lv, &lkey, "device reservations (GPUs) are not among the agent's keys: name the devices"),
                        _ => svc.invalid(lv, &lkey, "unknown key (not in the compose specification)"),
                    }
                }
            }
            _ => svc.invalid(v, &k, "unknown key (not in the compose specification)"),
        }
    }
}
