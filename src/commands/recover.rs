//! `mcp-agent --once` / `recover`: one full reconcile pass, a line per action, a summary,
//! an exit code.

use anyhow::anyhow;

use std::time::SystemTime;

use crate::certs::{self, AnyIssuer, Certs};
use crate::config::{Config, ProxyKind};
use crate::error::{exit, Failure};
use crate::plan::Book;
use crate::proxy::{AnyProxy, Proxy};
use crate::reconcile::{self, PassReport};
use crate::routes;
use crate::runtime::podman::Podman;
use crate::runtime::{Runtime, RuntimeError};

pub fn run(config: &Config) -> Result<u8, Failure> {
    let mut reg = super::open_registry(config)?;
    certs::check_modes(config).map_err(|e| Failure::unavailable(anyhow!(e)))?;
    routes::allocate(&mut reg, config)?;
    let mut services = reg.services()?;
    let rt = super::tokio_runtime()?;
    // A route whose host port another process took while its container was down moves
    // to a new port before the container is brought up.
    let podman = Podman::new(&config.podman.socket.0, config.podman.cli.0.clone());
    if let Ok(actual) = rt.block_on(podman.list()) {
        let up = actual
            .into_iter()
            .filter(|a| a.state.is_up())
            .map(|a| a.name)
            .collect();
        let moved = routes::reallocate_taken(
            &mut reg,
            config,
            &services,
            &up,
            &mut crate::ports::host_port_free,
        )?;
        for m in &moved {
            let to = m.to.map_or("none free".to_string(), |p| p.to_string());
            println!(
                "port     {} route {}: host port {} was taken by another process; now {to}",
                m.key, m.route, m.from
            );
        }
        if !moved.is_empty() {
            services = reg.services()?;
        }
    }
    let report = rt.block_on(recover(config, &services))?;
    for line in report.action_lines() {
        println!("{line}");
    }
    if let Err(e) = reg
        .record(&report.statuses())
        .and_then(|_| reg.prune_statuses())
    {
        tracing::warn!(error = %e, "could not record component status");
    }
    // Routes after containers: a proxy that is down never holds back recovery.
    let wanted = routes::desired(&services);
    let mut routes_failed = false;
    let mut proxy_down = None;
    if config.proxy.kind == ProxyKind::None {
        if !wanted.is_empty() {
            println!(
                "routes   {} l7 route(s) not proxied: [proxy] kind = \"none\"",
                wanted.len()
            );
        }
        let none = Ok(Default::default());
        if let Err(e) = reg.set_route_proxy_states(&routes::states(config, &wanted, &none)) {
            tracing::warn!(error = %e, "could not record route state");
        }
    } else {
        let proxy_routes: Vec<_> = wanted.iter().map(|(_, _, r)| r.clone()).collect();
        let result = rt.block_on(AnyProxy::from_config(config).sync(&proxy_routes));
        routes_failed = result.is_err();
        println!("routes   {}", routes::describe(&result, wanted.len()));
        if let Err(e) = reg.set_route_proxy_states(&routes::states(config, &wanted, &result)) {
            tracing::warn!(error = %e, "could not record route state");
        }
        proxy_down = result.err().filter(|e| e.is_unavailable());
    }
    // Certificates last: HTTP-01 is answered through the proxy's HTTP server, which the
    // route sync has just made sure of.
    let issuer = AnyIssuer::from_config(config);
    let mut cert_failures = Vec::new();
    if !issuer.is_none() {
        let wanted = certs::wanted(&services);
        let states = match proxy_down {
            Some(e) => {
                println!("certs    {} pending: {e}", wanted.len());
                cert_failures.push(format!("failed   certs: {e}"));
                certs::pending(&wanted, &e.to_string())
            }
            None => {
                let proxy = AnyProxy::from_config(config);
                let mut manager = Certs::from_config(config);
                let report =
                    rt.block_on(manager.ensure(&issuer, &proxy, &wanted, SystemTime::now(), true));
                for c in report.certs.iter().filter(|c| c.issued) {
                    let info = c
                        .current
                        .as_ref()
                        .expect("an issued certificate is current");
                    println!(
                        "cert     {}: issued for {}, serial {}, expires {} ({})",
                        c.service,
                        c.names.join(","),
                        info.serial,
                        humantime::format_rfc3339_seconds(info.not_after),
                        c.why.as_ref().map(|w| w.to_string()).unwrap_or_default(),
                    );
                }
                println!("certs    {}", report.describe());
                for c in report.failed() {
                    cert_failures.push(format!(
                        "failed   cert {} ({}): {}",
                        c.service,
                        c.names.join(","),
                        c.error.as_deref().unwrap_or(c.state.as_str())
                    ));
                }
                if let Err(e) = &report.load {
                    cert_failures.push(format!("failed   certs: {e}"));
                }
                report.statuses()
            }
        };
        if let Err(e) = reg.set_cert_states(&states) {
            tracing::warn!(error = %e, "could not record certificate state");
        }
    }
    let summary = report.summary();
    println!("{summary}");
    for c in report.components.iter().filter(|c| c.status.is_failure()) {
        println!(
            "{} {} ({}): {}",
            if c.status == reconcile::Status::ImageMissing {
                "skipped"
            } else {
                "failed"
            },
            c.key,
            c.container,
            c.detail.as_deref().unwrap_or(c.status.as_str())
        );
    }
    for line in &cert_failures {
        println!("{line}");
    }
    Ok(
        if summary.failed + summary.skipped > 0 || routes_failed || !cert_failures.is_empty() {
            exit::FAILED
        } else {
            exit::OK
        },
    )
}

/// Connects to podman and runs one pass over `services`.
pub async fn recover(
    config: &Config,
    services: &[crate::spec::Service],
) -> Result<PassReport, Failure> {
    let unavailable = |e: RuntimeError| Failure::unavailable(anyhow!("{e}"));
    let podman = Podman::new(&config.podman.socket.0, config.podman.cli.0.clone());
    podman.ping().await.map_err(unavailable)?;
    reconcile::pass(
        &podman,
        services,
        &config.agent.node,
        &Book::default(),
        config.reconcile.concurrency.0,
    )
    .await
    .map_err(unavailable)
}
