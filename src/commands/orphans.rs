//! `mcp-agent adopt [SERVICE]` and `mcp-agent prune [SERVICE]`: this node's containers
//! made by another registry (orphans, docs/design.md §4.4) are never the agent's to
//! touch until the operator says which way: adopt them (they become this registry's,
//! kept as they are: no downtime, and the next pass treats them like its own), or prune
//! them (removed).

use std::collections::HashSet;

use anyhow::anyhow;
use serde::Serialize;

use crate::config::Config;
use crate::container::{owner, Owner, Us};
use crate::error::{exit, Failure};
use crate::registry::Adoption;
use crate::runtime::podman::Podman;
use crate::runtime::{Actual, Runtime};

/// A container of this node that another registry's agent made.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Orphan {
    pub container: String,
    pub container_id: String,
    /// The `mcp.registry` label it carries; `None`: made by an agent older than it.
    pub registry: Option<String>,
    pub service: String,
    pub component: String,
    pub state: String,
}

impl Orphan {
    pub fn registry_name(&self) -> &str {
        self.registry.as_deref().unwrap_or("(none: unlabelled)")
    }
}

/// The orphans in `list`, of `only` when given.
pub(super) fn find(list: &[Actual], us: &Us, only: Option<&str>) -> Vec<Orphan> {
    let mut out: Vec<Orphan> = list
        .iter()
        .filter_map(|a| match owner(&a.id, &a.labels, us) {
            Owner::Orphan {
                registry,
                service,
                component,
            } if only.is_none_or(|s| s == service) => Some(Orphan {
                container: a.name.clone(),
                container_id: a.id.clone(),
                registry: registry.map(str::to_string),
                service: service.to_string(),
                component: component.to_string(),
                state: a.state.as_str().to_string(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.container.cmp(&b.container));
    out
}

fn list(config: &Config) -> Result<(Podman, Vec<Actual>), Failure> {
    let p = Podman::new(&config.podman.socket.0, config.podman.cli.0.clone());
    let listed = super::tokio_runtime()?.block_on(p.list());
    let listed = listed.map_err(|e| Failure::unavailable(anyhow!("{e}")))?;
    Ok((p, listed))
}

pub fn adopt(config: &Config, only: Option<&str>) -> Result<u8, Failure> {
    let mut reg = super::open_registry(config)?;
    let us = reg.identity()?.us(&config.agent.node);
    let (_, listed) = list(config)?;
    let found = find(&listed, &us, only);
    let ids: HashSet<String> = listed.iter().map(|a| a.id.clone()).collect();
    let adoptions: Vec<Adoption> = found
        .iter()
        .map(|o| Adoption {
            container_id: o.container_id.clone(),
            registry: o.registry.clone(),
            service: o.service.clone(),
            component: o.component.clone(),
        })
        .collect();
    reg.adopt(&adoptions, &ids)?;
    for o in &found {
        println!(
            "adopted  {}/{} ({}): from registry {}",
            o.service,
            o.component,
            o.container,
            o.registry_name()
        );
    }
    if found.is_empty() {
        println!("nothing to adopt: no container of another registry on this node");
    } else {
        tracing::info!(
            adopted = found.len(),
            "adopted containers of other registries"
        );
    }
    Ok(exit::OK)
}

pub fn prune(config: &Config, only: Option<&str>) -> Result<u8, Failure> {
    let reg = super::open_read_only(config)?;
    let us = reg.identity()?.us(&config.agent.node);
    drop(reg);
    let (podman, listed) = list(config)?;
    let found = find(&listed, &us, only);
    let rt = super::tokio_runtime()?;
    let mut failed = 0;
    for o in &found {
        match rt.block_on(podman.remove(&o.container_id)) {
            Ok(()) => println!(
                "removed  {}/{} ({}): an orphan of registry {}",
                o.service,
                o.component,
                o.container,
                o.registry_name()
            ),
            Err(e) => {
                failed += 1;
                println!(
                    "failed   {}/{} ({}): {e}",
                    o.service, o.component, o.container
                );
            }
        }
    }
    if found.is_empty() {
        println!("nothing to prune: no container of another registry on this node");
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}
