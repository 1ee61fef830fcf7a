//! `mcp-agent import compose`: one compose project becomes one service file, each compose
//! service a component, with compose's semantics as docker compose and podman-compose
//! apply them. Every key is carried over with its meaning or reported as not carried,
//! with its file, line and column; nothing is dropped in silence.
//!
//! The steps, one module each: `yaml` (the files as positioned trees, anchors and merge
//! keys resolved), `interpolate` (`${VAR}` and its forms), `merge` (several `-f`, and
//! `extends`), `project` (the project: files, name, `.env`, profiles, the top-level
//! networks, volumes, secrets and configs), `service`, `resources`, `storage`, `lifecycle` and
//! `network` (a compose service to a component), `output` (the service file, checked by
//! the agent's own parser) and `report` (what was found, machine-readable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::model::Service;

pub mod interpolate;
mod lifecycle;
pub mod merge;
mod network;
mod output;
mod project;
pub mod report;
mod resources;
mod service;
mod storage;
mod values;
pub mod yaml;

pub use report::{Finding, Kind, Report};

/// What `import compose` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-f`, in order; empty: `COMPOSE_FILE`, then compose's default names in `cwd`.
    pub files: Vec<PathBuf>,
    /// `--project`.
    pub project: Option<String>,
    /// `--env-file`; default: `.env` in the project directory.
    pub env_file: Option<PathBuf>,
    /// `--profile`, added to `COMPOSE_PROFILES`.
    pub profiles: Vec<String>,
    /// Where relative `-f` and `--env-file` are; the default files are looked for here.
    pub cwd: PathBuf,
    /// The process environment (interpolation, `COMPOSE_*`); tests give their own.
    pub env: BTreeMap<String, String>,
}

/// The outcome: the service (when the project could be mapped; with unsupported keys
/// left out), its service file text, and the report.
#[derive(Debug, Clone)]
pub struct Import {
    pub service: Option<Service>,
    /// The service file: a header, then each dropped key as a comment at its component.
    pub text: Option<String>,
    pub report: Report,
}

impl Import {
    /// Whether the file may be written: nothing invalid, and nothing unsupported unless
    /// `partial`.
    pub fn writable(&self, partial: bool) -> bool {
        self.text.is_some()
            && !self.report.has(Kind::Invalid)
            && (partial || !self.report.has(Kind::Unsupported))
    }
}

/// Reads, merges and maps the compose project `opts` names.
pub fn import(opts: &Options) -> Import {
    let mut p = match project::load(opts) {
        Ok(p) => p,
        Err(report) => {
            return Import {
                service: None,
                text: None,
                report,
            }
        }
    };
    let components = p.map_services();
    let (service, text) = output::service_file(&mut p, components);
    let report = p.report();
    Import {
        service,
        text,
        report,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_keys;
