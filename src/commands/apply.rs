//! `mcp-agent apply PATH...`: validate service files and write them in one transaction.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{exit, Failure};
use crate::spec;

pub fn run(config: &Config, paths: &[PathBuf]) -> Result<u8, Failure> {
    // Every file is read and checked before the registry is opened for writing.
    let files = spec::read_service_files(paths).map_err(Failure::data)?;
    // The one command that creates a registry (with an identity of its own).
    let mut reg = crate::registry::Registry::open(&config.database.path)?;
    let report = reg.apply(&files)?;
    for (what, names) in [
        ("created", &report.created),
        ("updated", &report.updated),
        ("unchanged", &report.unchanged),
    ] {
        for n in names {
            println!("{what:<9} {n}");
        }
    }
    tracing::info!(
        created = report.created.len(),
        updated = report.updated.len(),
        unchanged = report.unchanged.len(),
        "applied service files"
    );
    Ok(exit::OK)
}
