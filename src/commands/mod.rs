//! One module per command; `dispatch` loads the config, sets up logging and runs one.

use crate::cli::{Command, Opts};
use crate::config::Config;
use crate::error::Failure;
use crate::registry::{ChangeError, Lock, Registry};

mod apply;
mod export;
mod import;
mod orphans;
mod recover;
mod run;
mod state;
mod status;

/// Runs the command `opts` names and returns its exit code.
pub fn dispatch(opts: Opts) -> Result<u8, Failure> {
    let command = match (opts.once, opts.command) {
        (true, Some(c)) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--once runs one recovery pass and takes no command (got {c:?})"
            )))
        }
        (false, Some(c)) => c,
        (true, None) => Command::Recover,
        (false, None) => Command::Run,
    };
    // Reads no config: it makes a file of another tool's, for any machine.
    if let Command::Import(crate::cli::Import::Compose {
        files,
        project,
        env_file,
        profiles,
        output_dir,
        partial,
    }) = command
    {
        return import::compose(import::Args {
            files,
            project,
            env_file,
            profiles,
            output_dir,
            partial,
        });
    }
    let config = Config::load(&opts.config)?;
    let config_path = opts.config.clone();
    let level = opts
        .log_level
        .clone()
        .unwrap_or_else(|| config.log.level.0.clone());
    crate::logging::init(opts.log_format.unwrap_or(config.log.format), &level)
        .map_err(|e| Failure::config(anyhow::anyhow!("log level {level:?}: {e}")))?;
    match command {
        Command::Run => run::run(&config_path, config),
        Command::Recover => {
            // One writer: `--once` refuses while a daemon works on the registry (it would
            // race it), and a daemon started meanwhile refuses while this pass runs.
            let _lock = lock_registry(&config)?;
            recover::run(&config, opts.timeout)
        }
        Command::Apply { paths } => apply::run(&config, &paths),
        Command::Status {
            service,
            json,
            watch,
        } => status::run(&config, service.as_deref(), json, watch),
        Command::Stop { target } => {
            state::set(&config, &target, crate::model::DesiredState::Stopped)
        }
        Command::Start { target } => {
            state::set(&config, &target, crate::model::DesiredState::Running)
        }
        Command::Remove { service, volumes } => state::remove(&config, &service, volumes),
        Command::Export {
            services,
            output_dir,
            format,
            pod,
            host_paths,
            config_maps,
        } => export::run(
            &config,
            &services,
            output_dir.as_deref(),
            format,
            crate::kube::Options {
                pod,
                host_paths,
                config_maps,
            },
        ),
        Command::CheckConfig => {
            print!("{}", config.to_toml());
            Ok(crate::error::exit::OK)
        }
        Command::Adopt { service } => orphans::adopt(&config, service.as_deref()),
        Command::Prune { service } => orphans::prune(&config, service.as_deref()),
        Command::Import(_) => unreachable!("dispatched before the config is read"),
    }
}

/// The registry, for a command that writes to it: it must exist and be a registry.
fn open_registry(config: &Config) -> Result<Registry, Failure> {
    Ok(Registry::open_existing(&config.database.path)?)
}

/// The registry, for a command that only reads it: never written, never migrated.
fn open_read_only(config: &Config) -> Result<Registry, Failure> {
    Ok(Registry::open_read_only(&config.database.path)?)
}

/// The one-writer lock of the daemon and `--once` (docs/design.md §9), taken once the
/// registry is known to be one: a missing or damaged registry is reported as such, and
/// no lock file is left beside a path that holds no registry.
fn lock_registry(config: &Config) -> Result<Lock, Failure> {
    drop(Registry::open_existing(&config.database.path)?);
    Ok(Lock::acquire(&config.database.path)?)
}

/// The registry unreachable or unusable: EX_UNAVAILABLE.
impl From<crate::registry::RegistryError> for Failure {
    fn from(e: crate::registry::RegistryError) -> Self {
        Failure::unavailable(e)
    }
}

/// A bad config: EX_CONFIG.
impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::config(e)
    }
}

impl From<ChangeError> for Failure {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Registry(r) => Failure::unavailable(r),
            other => Failure::data(other),
        }
    }
}

/// A tokio runtime for commands that talk to podman: one thread (what blocks — SQLite,
/// files, joins — runs on tokio's blocking pool or a thread of its own). A probe or a
/// request then hands nothing between worker threads: with two workers an exec health
/// check cost the agent ≈ 0.8 ms of CPU, a third of it in futex wake-ups and context
/// switches (BENCHMARKS.md §9).
fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::unavailable(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// Writes `text` to `path`, created or truncated, mode 0600 (a service file may hold env
/// values, which may be secrets); an error names the path.
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            Failure::new(
                crate::error::exit::FAILED,
                anyhow::anyhow!("{}: {e}", path.display()),
            )
        })
}
