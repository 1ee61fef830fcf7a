//! `mcp-agent start|stop SERVICE[/COMPONENT]` and `mcp-agent remove SERVICE`.

use anyhow::anyhow;

use crate::config::Config;
use crate::error::{exit, Failure};
use crate::spec::{is_name, DesiredState};

pub fn set(config: &Config, target: &str, state: DesiredState) -> Result<u8, Failure> {
    let (service, component) = match target.split_once('/') {
        Some((s, c)) => (s, Some(c)),
        None => (target, None),
    };
    if !is_name(service) || component.is_some_and(|c| !is_name(c)) {
        return Err(Failure::usage(anyhow!(
            "{target:?} is not SERVICE or SERVICE/COMPONENT"
        )));
    }
    let mut reg = super::open_registry(config)?;
    let n = reg.set_desired(service, component, state)?;
    println!(
        "{target}: desired state {} ({n} component(s))",
        state.as_str()
    );
    Ok(exit::OK)
}

pub fn remove(config: &Config, service: &str, volumes: bool) -> Result<u8, Failure> {
    let mut reg = super::open_registry(config)?;
    // Its external volumes, to say they stay (a service the registry cannot read is still
    // removed).
    let mut external: Vec<String> = reg
        .service(service)
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|s| s.components)
        .flat_map(|c| c.volumes)
        .filter_map(|v| v.external)
        .collect();
    external.sort();
    external.dedup();
    reg.remove(service)?;
    println!("{service}: removed from the registry; its containers go at the next pass");
    if !external.is_empty() {
        println!(
            "{service}: external volumes kept, podman's (the agent never removes them, --volumes or not; podman volume rm deletes them): {}",
            external.join(", ")
        );
    }
    let root = config.volumes_root();
    if volumes {
        match crate::volumes::remove_service(&root, service) {
            Ok(true) => println!(
                "{service}: named volumes deleted ({})",
                root.join(service).display()
            ),
            Ok(false) => println!("{service}: no named volumes"),
            Err(e) => {
                return Err(Failure::unavailable(anyhow::anyhow!(
                    "{service}: cannot delete its named volumes in {}: {e}",
                    root.join(service).display()
                )))
            }
        }
    } else if root.join(service).is_dir() {
        println!(
            "{service}: named volumes kept in {} (remove --volumes deletes them)",
            root.join(service).display()
        );
    }
    Ok(exit::OK)
}
