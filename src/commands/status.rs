//! `mcp-agent status [SERVICE] [--json]`: desired vs actual per component, from the
//! registry and one live list of podman's containers.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Config;
use crate::container::{ComponentKey, ContainerSpec};
use crate::error::{exit, Failure};
use crate::plan::{self, Drift, Holding};
use crate::registry::{now_ms, ChangeError};
use crate::runtime::podman::Podman;
use crate::runtime::{Actual, Runtime};

#[derive(Debug, Serialize)]
struct Row {
    service: String,
    component: String,
    container: String,
    desired: String,
    actual: String,
    container_id: Option<String>,
    /// The component's fixed `ports`, as `[ip:]host:container/proto`.
    ports: Vec<String>,
    routes: Vec<RoutePort>,
    restarts: u64,
    last_error: Option<String>,
    next_retry_in_ms: Option<u64>,
    last_pass_state: Option<String>,
    /// Its health check as the daemon last saw it (a component with a check only).
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<crate::registry::HealthStatus>,
}

#[derive(Debug, Serialize)]
struct RoutePort {
    route: String,
    mode: &'static str,
    hostname: Option<String>,
    host_port: Option<u16>,
    container_port: u16,
    /// "registered", "pending" (with `proxy_error`), "no-proxy", or "l4" (never proxied).
    proxy: String,
    proxy_error: Option<String>,
}

/// A service's certificate (`[certs] issuer` set), as the last pass recorded it.
#[derive(Debug, Serialize)]
struct CertRow {
    service: String,
    /// "valid", "pending" (not obtained yet) or "failed" (the last order failed; the
    /// older certificate, if any, is still served).
    state: String,
    names: Vec<String>,
    /// Expiry of the certificate in `cert_dir` (RFC 3339), if there is one.
    not_after: Option<String>,
    serial: Option<String>,
    last_error: Option<String>,
    next_retry_in_ms: Option<u64>,
}

/// Everything `status` shows, gathered once.
struct Snapshot {
    registry: Option<String>,
    rows: Vec<Row>,
    cert_rows: Vec<CertRow>,
    orphans: Vec<super::orphans::Orphan>,
    /// Why podman's list failed, if it did.
    podman_error: Option<String>,
}

pub fn run(config: &Config, only: Option<&str>, json: bool, watch: bool) -> Result<u8, Failure> {
    let mut reg = super::open_read_only(config)?;
    let rt = super::tokio_runtime()?;
    if watch {
        return watch::run(config, only, &mut reg, &rt);
    }
    let snap = gather(config, only, &mut reg, &rt)?;
    if json {
        let doc = serde_json::json!({
            "registry": snap.registry,
            "podman": snap.podman_error.clone().unwrap_or_else(|| "reachable".to_string()),
            "components": snap.rows,
            "certs": snap.cert_rows,
            "orphans": snap.orphans,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("status serializes")
        );
    } else {
        print!("{}", snap.text());
        if let Some(e) = &snap.podman_error {
            eprintln!("mcp-agent: actual state unknown: {e}");
        }
    }
    Ok(if snap.podman_error.is_some() {
        exit::UNAVAILABLE
    } else {
        exit::OK
    })
}

impl Snapshot {
    /// The text form: the summary, the components, the certificates, the orphans.
    fn text(&self) -> String {
        let mut out = summary(
            &self.rows,
            &self.cert_rows,
            self.orphans.len(),
            self.podman_error.as_ref(),
        );
        out.push_str("\n\n");
        print_table(&mut out, &self.rows);
        if !self.cert_rows.is_empty() {
            out.push('\n');
            print_certs(&mut out, &self.cert_rows);
        }
        if !self.orphans.is_empty() {
            out.push('\n');
            print_orphans(&mut out, &self.orphans);
        }
        out
    }
}

fn gather(
    config: &Config,
    only: Option<&str>,
    reg: &mut crate::registry::Registry,
    rt: &tokio::runtime::Runtime,
) -> Result<Snapshot, Failure> {
    let identity = reg.identity()?;
    let us = identity.us(&config.agent.node);
    let all = reg.services()?;
    // The networks' options as a pass sees them: every service's (§3.1).
    let nets = crate::model::network_options_of(&all);
    let services = match only {
        Some(name) => vec![all
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ChangeError::NoService(name.into()))?],
        None => all,
    };
    let statuses = reg.statuses()?;
    let route_states = reg.route_proxy_states()?;
    let mut cert_states = reg.cert_states()?;
    let listed: Result<Vec<Actual>, String> = rt.block_on(async {
        let p = Podman::new(&config.podman.socket.0, config.podman.cli.0.clone());
        p.list().await.map_err(|e| e.to_string())
    });
    let by_name: HashMap<&str, &Actual> = match &listed {
        Ok(list) => list.iter().map(|a| (a.name.as_str(), a)).collect(),
        Err(_) => HashMap::new(),
    };
    let now = now_ms();
    let mut rows = Vec::new();
    for s in &services {
        for c in &s.components {
            let key = ComponentKey::new(s.name.clone(), c.name.clone());
            // The spec as the next pass will see it: with its env files and secrets.
            let files = c
                .settings
                .reads_files()
                .then(|| crate::files::load(&c.settings));
            let spec = ContainerSpec::build_in(
                &us,
                &s.name,
                c,
                files.as_ref().and_then(|f| f.as_ref().ok()),
                &crate::container::Host::from_config(config),
                &nets,
            );
            let actual = match (&listed, by_name.get(spec.name.as_str())) {
                (Err(_), _) => "unknown".to_string(),
                (Ok(_), None) => "absent".to_string(),
                (Ok(_), Some(a)) if matches!(files, Some(Err(_))) => {
                    format!("{} (config-missing)", a.state.as_str())
                }
                (Ok(_), Some(a)) => match plan::holding(&key, spec.spec_hash(), a, &us) {
                    Holding::Ours(Some(Drift::SpecChanged)) => {
                        format!("{} (spec changed)", a.state.as_str())
                    }
                    Holding::Ours(Some(Drift::Stale)) => {
                        format!("{} (another component's)", a.state.as_str())
                    }
                    Holding::Ours(None) => a.state.as_str().to_string(),
                    Holding::NotOurs => "conflict (not ours)".to_string(),
                    Holding::Orphan(r) => format!(
                        "{} (orphan of registry {})",
                        a.state.as_str(),
                        plan::orphan_registry(r)
                    ),
                },
            };
            let st = statuses.get(&key);
            let actual = match st.map(|s| s.state.as_str()) {
                Some("completed") if actual != "running" => "completed".to_string(),
                // No container yet: its image is being pulled.
                Some("pulling") if actual == "absent" => "pulling".to_string(),
                _ => actual,
            };
            rows.push(Row {
                service: s.name.clone(),
                component: c.name.clone(),
                container: spec.name.clone(),
                desired: if s.active {
                    c.desired_state.as_str().to_string()
                } else {
                    "inactive".to_string()
                },
                container_id: by_name.get(spec.name.as_str()).map(|a| a.id.clone()),
                ports: c.ports.iter().map(|p| p.to_string()).collect(),
                actual,
                routes: c
                    .routes
                    .iter()
                    .map(|r| {
                        let st = route_states.get(&(key.clone(), r.name.clone()));
                        RoutePort {
                            route: r.name.clone(),
                            mode: r.mode.as_str(),
                            hostname: r.hostname.clone(),
                            host_port: r.host_port,
                            container_port: r.port,
                            proxy: match r.mode {
                                crate::spec::RouteMode::L4 => "l4".to_string(),
                                crate::spec::RouteMode::L7 => {
                                    st.map_or("pending".to_string(), |s| s.state.clone())
                                }
                            },
                            proxy_error: st.and_then(|s| s.error.clone()),
                        }
                    })
                    .collect(),
                restarts: st.map_or(0, |s| s.restarts),
                last_error: st.and_then(|s| s.last_error.clone()),
                next_retry_in_ms: st
                    .and_then(|s| s.next_retry_ms)
                    .map(|t| t.saturating_sub(now)),
                last_pass_state: st.map(|s| s.state.clone()),
                // Shown while the container it was seen for still runs.
                health: st
                    .and_then(|s| s.health.clone())
                    .filter(|_| c.settings.health.is_some()),
            });
        }
    }
    let cert_rows: Vec<CertRow> = if config.certs.issuer == crate::config::IssuerKind::None {
        Vec::new()
    } else {
        crate::certs::wanted(&services)
            .into_iter()
            .map(|w| {
                let st = cert_states.remove(&w.service);
                let ms_time = |ms: u64| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                };
                CertRow {
                    state: st
                        .as_ref()
                        .map_or("pending".to_string(), |c| c.state.clone()),
                    not_after: st.as_ref().and_then(|c| c.not_after_ms).map(ms_time),
                    serial: st.as_ref().and_then(|c| c.serial.clone()),
                    last_error: st.as_ref().and_then(|c| c.last_error.clone()),
                    next_retry_in_ms: st
                        .as_ref()
                        .and_then(|c| c.next_retry_ms)
                        .map(|t| t.saturating_sub(now)),
                    service: w.service,
                    names: w.names,
                }
            })
            .collect()
    };
    let orphans = match &listed {
        Ok(list) => super::orphans::find(list, &us, only),
        Err(_) => Vec::new(),
    };
    Ok(Snapshot {
        registry: identity.id.clone(),
        rows,
        cert_rows,
        orphans,
        podman_error: listed.err(),
    })
}

fn retry_in(ms: Option<u64>) -> String {
    ms.map(|ms| {
        humantime::format_duration(std::time::Duration::from_secs(ms.div_ceil(1000))).to_string()
    })
    .unwrap_or_default()
}

/// Containers of this node made by another registry: never touched by this one.
fn print_orphans(out: &mut String, orphans: &[super::orphans::Orphan]) {
    let mut table = vec![[
        "ORPHAN".to_string(),
        "OF REGISTRY".into(),
        "COMPONENT".into(),
        "STATE".into(),
    ]];
    for o in orphans {
        table.push([
            o.container.clone(),
            o.registry_name().to_string(),
            format!("{}/{}", o.service, o.component),
            o.state.clone(),
        ]);
    }
    print_columns(out, &table);
    out.push_str(
        "(orphans of another registry: left alone; `mcp-agent adopt [SERVICE]` takes them over, \
         `mcp-agent prune [SERVICE]` removes them)\n",
    );
}

fn print_certs(out: &mut String, rows: &[CertRow]) {
    let mut table = vec![[
        "CERT".to_string(),
        "STATE".into(),
        "NOT AFTER".into(),
        "NEXT RETRY".into(),
        "NAMES".into(),
        "LAST ERROR".into(),
    ]];
    for r in rows {
        table.push([
            r.service.clone(),
            r.state.clone(),
            r.not_after.clone().unwrap_or_default(),
            retry_in(r.next_retry_in_ms),
            r.names.join(","),
            r.last_error.clone().unwrap_or_default(),
        ]);
    }
    print_columns(out, &table);
}

/// Left-aligned columns two spaces apart; the last column unpadded.
fn print_columns<const N: usize>(out: &mut String, table: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in table {
        let mut line = String::new();
        for (i, (w, cell)) in widths.iter().zip(row).enumerate() {
            if i == N - 1 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The line above the table: `3 components: 2 running, 1 not running (1 backing off,
/// 1 failed); 1 certificate, 1 valid; podman reachable`.
fn summary(rows: &[Row], certs: &[CertRow], orphans: usize, podman: Option<&String>) -> String {
    let running = rows.iter().filter(|r| r.actual == "running").count();
    let completed = rows.iter().filter(|r| r.actual == "completed").count();
    let mut line = format!(
        "{} component{}: {running} running",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    let unhealthy = rows
        .iter()
        .filter(|r| r.actual == "running")
        .filter(|r| r.health.as_ref().is_some_and(|h| h.state != "healthy"))
        .count();
    if unhealthy > 0 {
        line.push_str(&format!(" ({unhealthy} not healthy)"));
    }
    if completed > 0 {
        line.push_str(&format!(", {completed} completed"));
    }
    let down = rows.len() - running - completed;
    if down > 0 {
        let waiting = |r: &&Row| r.last_pass_state.as_deref() == Some("waiting");
        let pulling = |r: &&Row| r.last_pass_state.as_deref() == Some("pulling");
        let backing = rows.iter().filter(|r| r.next_retry_in_ms.is_some()).count();
        let blocked = rows.iter().filter(waiting).count();
        let pulls = rows
            .iter()
            .filter(|r| r.actual != "running")
            .filter(pulling)
            .count();
        let failed = rows
            .iter()
            .filter(|r| r.last_error.is_some() && !waiting(r) && !pulling(r))
            .count();
        let not_wanted = rows.iter().filter(|r| r.desired != "running").count();
        let mut why = Vec::new();
        for (n, what) in [
            (not_wanted, "not desired running"),
            (blocked, "waiting for dependencies"),
            (pulls, "pulling"),
            (backing, "backing off"),
            (failed, "failed"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        line.push_str(&format!(", {down} not running"));
        if !why.is_empty() {
            line.push_str(&format!(" ({})", why.join(", ")));
        }
    }
    if !certs.is_empty() {
        let valid = certs.iter().filter(|c| c.state == "valid").count();
        line.push_str(&format!(
            "; {} certificate{}, {valid} valid",
            certs.len(),
            if certs.len() == 1 { "" } else { "s" }
        ));
    }
    if orphans > 0 {
        line.push_str(&format!("; {orphans} orphans"));
    }
    line.push_str(match podman {
        None => "; podman reachable",
        Some(_) => "; podman unreachable",
    });
    line
}

fn print_table(out: &mut String, rows: &[Row]) {
    let mut table = vec![[
        "COMPONENT".to_string(),
        "DESIRED".into(),
        "ACTUAL".into(),
        "CONTAINER".into(),
        "PORTS".into(),
        "RESTARTS".into(),
        "NEXT RETRY".into(),
        "LAST ERROR".into(),
    ]];
    for r in rows {
        table.push([
            format!("{}/{}", r.service, r.component),
            r.desired.clone(),
            match &r.health {
                Some(h) if r.actual == "running" => format!("running ({})", h.state),
                _ => r.actual.clone(),
            },
            // As podman prints it: the id's first 12 characters.
            r.container_id
                .as_deref()
                .map_or("-".to_string(), |id| id.chars().take(12).collect()),
            r.ports
                .iter()
                .cloned()
                .chain(r.routes.iter().map(|p| {
                    let host = p.host_port.map_or("none".to_string(), |h| h.to_string());
                    let proxy = match p.proxy.as_str() {
                        "registered" | "l4" | "no-proxy" => String::new(),
                        other => format!(" ({other})"),
                    };
                    format!("{}={host}->{}{proxy}", p.route, p.container_port)
                }))
                .collect::<Vec<_>>()
                .join(","),
            r.restarts.to_string(),
            retry_in(r.next_retry_in_ms),
            match (&r.last_error, &r.health) {
                (Some(e), _) => e.clone(),
                (None, Some(h)) if h.last_ok == Some(false) => format!(
                    "health check failed{}: {}",
                    if h.failures > 0 {
                        format!(" {} in a row", h.failures)
                    } else {
                        String::new()
                    },
                    h.last_output.as_deref().unwrap_or("")
                ),
                _ => String::new(),
            },
        ]);
    }
    print_columns(out, &table);
}

mod watch;
