//! `mcp-agent --once` / `recover`: the agent's loop run once ([`Agent::once`]), then a
//! line per action, a summary and an exit code.

use crate::agent::{Agent, CertsOutcome, Context, OnceReport};
use crate::config::Config;
use crate::error::{exit, Failure};
use crate::reconcile;
use crate::routes;

pub fn run(config: &Config, timeout: std::time::Duration) -> Result<u8, Failure> {
    let rt = super::tokio_runtime()?;
    let report = rt.block_on(async {
        let agent = Agent::new(Context::podman(config), config.clone(), Default::default())?;
        agent.once(timeout).await
    })?;
    Ok(print(&report))
}

/// Prints the report; returns the exit code it calls for.
fn print(report: &OnceReport) -> u8 {
    for m in &report.moved {
        let to = m.to.map_or("none free".to_string(), |p| p.to_string());
        println!(
            "port     {} route {}: host port {} was taken by another process; now {to}",
            m.key, m.route, m.from
        );
    }
    for p in &report.pulls {
        let what = match &p.result {
            Ok(took) => format!("pulled in {:.1}s", took.as_secs_f64()),
            Err(e) => format!("failed: {e}"),
        };
        let of: Vec<String> = p.components.iter().map(|k| k.to_string()).collect();
        println!("pull     {} (for {}): {what}", p.image, of.join(", "));
    }
    for line in report.pass.action_lines() {
        println!("{line}");
    }
    let mut routes_failed = false;
    match &report.routes {
        Some(_) if !report.proxy_serves && report.wanted_routes > 0 => println!(
            "routes   {} l7 route(s) not proxied: [proxy] kind = \"none\"",
            report.wanted_routes
        ),
        Some(_) if !report.proxy_serves => {}
        Some(result) => {
            routes_failed = result.is_err();
            println!(
                "routes   {}",
                routes::describe(result, report.wanted_routes)
            );
        }
        None => {}
    }
    let mut cert_failures = Vec::new();
    match &report.certs {
        None => {}
        Some(CertsOutcome::Pending { states, error }) => {
            println!("certs    {} pending: {error}", states.len());
            cert_failures.push(format!("failed   certs: {error}"));
        }
        Some(CertsOutcome::Ensured(r)) => {
            for c in r.certs.iter().filter(|c| c.issued) {
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
            println!("certs    {}", r.describe());
            for c in r.failed() {
                cert_failures.push(format!(
                    "failed   cert {} ({}): {}",
                    c.service,
                    c.names.join(","),
                    c.error.as_deref().unwrap_or(c.state.as_str())
                ));
            }
            if let Err(e) = &r.load {
                cert_failures.push(format!("failed   certs: {e}"));
            }
        }
    }
    let summary = report.pass.summary();
    println!("{summary}");
    for c in report
        .pass
        .components
        .iter()
        .filter(|c| c.status.is_failure())
    {
        println!(
            "{} {} ({}): {}",
            if c.status == reconcile::Status::ImageMissing {
                "skipped"
            } else {
                "failed"
            },
            c.key,
            c.container,
            c.detail().as_deref().unwrap_or(c.status.as_str())
        );
    }
    for line in &cert_failures {
        println!("{line}");
    }
    if summary.failed + summary.skipped > 0 || routes_failed || !cert_failures.is_empty() {
        exit::FAILED
    } else {
        exit::OK
    }
}
