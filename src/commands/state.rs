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

pub fn remove(config: &Config, service: &str) -> Result<u8, Failure> {
    let mut reg = super::open_registry(config)?;
    reg.remove(service)?;
    println!("{service}: removed from the registry; its containers go at the next pass");
    Ok(exit::OK)
}
