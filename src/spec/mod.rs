//! Service files (docs/design.md §3): the desired state a user writes, parsed and
//! validated with the file, line and reason of every problem.

use std::path::{Path, PathBuf};

use crate::error::Location;
pub use crate::model::{
    container_name, is_hostname, is_label_value, is_name, Component, DesiredState, PortPublish,
    Proto, RestartPolicy, Route, RouteMode, Service, RESERVED_SERVICE_NAMES,
};

mod component;
mod export;
pub mod input;
mod lifecycle;
mod location;
pub mod networks;
mod parse;
mod raw;
mod rules;
mod settings;

pub use location::{ComponentSource, Issue, Issues, SourceMap};
pub use parse::parse_service;
pub use rules::{check_registry_rules, injected_env_keys};

/// Largest service file accepted; a bigger one is almost certainly not a service file.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most components in one service.
pub const MAX_COMPONENTS: usize = 256;
/// Most routes on one component.
pub const MAX_ROUTES: usize = 64;
/// Longest single string (image, env value, cmd argument, path).
pub const MAX_VALUE_LEN: usize = 32 * 1024;
/// Most entries in one list or table (cmd, env, volumes, ports).
pub const MAX_ENTRIES: usize = 1024;

/// A service file read and validated on its own (registry-wide rules come later).
#[derive(Debug, Clone)]
pub struct ServiceFile {
    pub path: PathBuf,
    pub service: Service,
    pub source: SourceMap,
}

/// Reads service files: each path is a file, or a directory whose `*.toml` files are read
/// in name order.
pub fn read_service_files(paths: &[PathBuf]) -> Result<Vec<ServiceFile>, Issues> {
    let mut files = Vec::new();
    let mut issues = Vec::new();
    let io_issue = |p: &Path, e: std::io::Error| Issue {
        path: p.to_path_buf(),
        at: None,
        reason: format!("cannot read: {e}"),
    };
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "toml") && f.is_file())
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        issues.push(Issue {
                            path: p.clone(),
                            at: None,
                            reason: "directory holds no *.toml service files".into(),
                        });
                    }
                    files.extend(found);
                }
                Err(e) => issues.push(io_issue(p, e)),
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut parsed: Vec<ServiceFile> = Vec::new();
    for f in &files {
        let text = match input::read_limited(f, MAX_FILE_BYTES) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    let at = Location::of(
                        std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()])
                            .unwrap_or(""),
                        usize::MAX,
                    );
                    issues.push(Issue {
                        path: f.clone(),
                        at: Some(at),
                        reason: "file is not valid UTF-8".into(),
                    });
                    continue;
                }
            },
            Err(e) => {
                issues.push(Issue {
                    path: f.clone(),
                    at: None,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_service(f, &text) {
            Ok(sf) => {
                if let Some(first) = parsed.iter().find(|o| o.service.name == sf.service.name) {
                    issues.push(Issue {
                        path: f.clone(),
                        at: sf.source.name,
                        reason: format!(
                            "service {:?} is also defined in {}",
                            sf.service.name,
                            first.path.display()
                        ),
                    });
                } else {
                    parsed.push(sf);
                }
            }
            Err(Issues(mut v)) => issues.append(&mut v),
        }
    }
    if issues.is_empty() {
        Ok(parsed)
    } else {
        Err(Issues(issues))
    }
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
pub(crate) mod tests;
