//! `mcp-agent export [SERVICE]... [-o DIR] [--format toml|kube]`: service files back from
//! the registry, or Kubernetes manifests of them (`crate::kube`). Env values and (kube)
//! the env files' and secrets' contents are printed here, to stdout or the files asked
//! for, and nowhere else; what does not carry to Kubernetes is listed on stderr.

use std::io::Write;
use std::path::Path;

use crate::cli::ExportFormat;
use crate::config::Config;
use crate::error::{exit, Failure};
use crate::registry::ChangeError;

pub fn run(
    config: &Config,
    names: &[String],
    dir: Option<&Path>,
    format: ExportFormat,
    kube: crate::kube::Options,
) -> Result<u8, Failure> {
    if format == ExportFormat::Toml && kube != crate::kube::Options::default() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--pod, --host-paths and --config-maps go with --format kube"
        )));
    }
    let mut reg = super::open_read_only(config)?;
    let services = if names.is_empty() {
        reg.services()?
    } else {
        let mut v = Vec::new();
        for name in names {
            v.push(
                reg.service(name)?
                    .ok_or_else(|| ChangeError::NoService(name.into()))?,
            );
        }
        v
    };
    let (ext, texts) = match format {
        ExportFormat::Toml => (
            "toml",
            services
                .iter()
                .map(|s| (s.name.clone(), s.to_toml()))
                .collect::<Vec<_>>(),
        ),
        ExportFormat::Kube => {
            let host = crate::container::Host::from_config(config);
            let mut texts = Vec::new();
            for s in &services {
                let r = crate::kube::render(
                    s,
                    &config.agent.node,
                    &host,
                    kube,
                    &crate::kube::read_host_file,
                )
                .map_err(|e| Failure::data(anyhow::anyhow!("{e}")))?;
                for l in &r.not_carried {
                    eprintln!("not carried: {l}");
                }
                texts.push((s.name.clone(), r.yaml));
            }
            ("yaml", texts)
        }
    };
    match dir {
        Some(dir) => {
            for (name, text) in &texts {
                let path = dir.join(format!("{name}.{ext}"));
                super::write_private(&path, text)?;
                println!("{}", path.display());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for (i, (name, text)) in texts.iter().enumerate() {
                if format == ExportFormat::Toml && texts.len() > 1 {
                    if i > 0 {
                        let _ = writeln!(out);
                    }
                    let _ = writeln!(out, "# ---- {name}.toml ----");
                }
                let _ = write!(out, "{text}");
            }
        }
    }
    Ok(exit::OK)
}
