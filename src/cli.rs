//! The command line (docs/design.md §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "mcp-agent",
    version,
    about = "Keeps this machine's podman containers equal to the desired state in its registry"
)]
pub struct Opts {
    /// Agent config file.
    #[arg(long, global = true, env = "MCP_AGENT_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Log format (overrides [log].format); auto = journald when started by systemd.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log level or filter directive (overrides [log].level), e.g. debug.
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    /// One full reconcile pass, a summary, an exit code (same as `recover`).
    #[arg(long)]
    pub once: bool,

    /// With --once: how long it may wait for dependencies and health checks in all.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "5m")]
    pub timeout: std::time::Duration,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reconciliation daemon (the default).
    Run,
    /// One full reconcile pass, a summary, an exit code.
    Recover,
    /// Validate service files (or every *.toml in a directory) and write them to the
    /// registry in one transaction. Touches no container.
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Desired vs actual per component.
    Status {
        service: Option<String>,
        #[arg(long)]
        json: bool,
        /// Redraw whenever it changes, until q or Ctrl-C (plain appended snapshots when
        /// stdout is not a terminal).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Set desired_state = "stopped" for SERVICE or SERVICE/COMPONENT.
    Stop { target: String },
    /// Set desired_state = "running" for SERVICE or SERVICE/COMPONENT.
    Start { target: String },
    /// Delete a service from the registry; the daemon then removes its containers.
    Remove {
        service: String,
        /// Delete its named volumes too (their data is gone for good); its external
        /// volumes are podman's and never removed.
        #[arg(long)]
        volumes: bool,
    },
    /// Print service files back from the registry, or (--format kube) Kubernetes
    /// manifests of them that a Kubernetes API server and `podman kube play` take.
    Export {
        /// The services (default: all).
        services: Vec<String>,
        /// Write one SERVICE.toml (SERVICE.yaml) per service into this directory
        /// instead of stdout.
        #[arg(long, short = 'o')]
        output_dir: Option<PathBuf>,
        /// toml: service files (they round-trip through apply); kube: Kubernetes YAML,
        /// what does not carry listed on stderr and as comments.
        #[arg(long, value_enum, default_value = "toml")]
        format: ExportFormat,
        /// With --format kube: a Pod per component instead of a Deployment (a one-shot
        /// component a Pod run to completion instead of a Job).
        #[arg(long)]
        pod: bool,
        /// With --format kube: volumes of host paths as hostPath volumes (else not carried).
        #[arg(long)]
        host_paths: bool,
        /// With --format kube: env files and secrets in ConfigMaps, not Secrets (podman
        /// 4.3's kube play cannot read its Secrets).
        #[arg(long)]
        config_maps: bool,
    },
    /// Load and validate the config, print the effective values.
    CheckConfig,
    /// Make a service file of something else (reads no config and no registry).
    #[command(subcommand)]
    Import(Import),
    /// Take over this node's containers made by another registry (orphans, shown by
    /// `status`), of SERVICE or all: they become this registry's, kept as they are.
    Adopt { service: Option<String> },
    /// Remove this node's containers made by another registry (orphans), of SERVICE or
    /// all.
    Prune { service: Option<String> },
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Toml,
    Kube,
}

#[derive(Debug, Subcommand)]
pub enum Import {
    /// A compose project as one service file (each compose service a component), on
    /// stdout or as DIR/<project>.toml. Every key not carried over is reported with its
    /// file:line:col (exit 65, nothing written) unless --partial.
    Compose {
        /// Compose file; several merge as compose merges them (default: COMPOSE_FILE,
        /// else compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml and
        /// its override file in the current directory).
        #[arg(long = "file", short = 'f')]
        files: Vec<PathBuf>,
        /// Project name (default: COMPOSE_PROJECT_NAME, the file's name:, its
        /// directory's name); it is the service's name, with '-' for '_'.
        #[arg(long, short = 'p')]
        project: Option<String>,
        /// Variables for interpolation (default: .env in the project directory); the
        /// process environment wins over it.
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Enable a profile (added to COMPOSE_PROFILES).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Write DIR/<project>.toml (0600) instead of stdout.
        #[arg(long, short = 'o')]
        output_dir: Option<PathBuf>,
        /// Write the file even with keys that cannot be carried over: each left out,
        /// as a comment at its component.
        #[arg(long)]
        partial: bool,
    },
}
