//! `mcp-agent export [SERVICE] [-o DIR]`: service files back from the registry. Env values
//! are printed here, to stdout or the files asked for, and nowhere else.

use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::error::{exit, Failure};
use crate::registry::ChangeError;

pub fn run(config: &Config, service: Option<&str>, dir: Option<&Path>) -> Result<u8, Failure> {
    let mut reg = super::open_read_only(config)?;
    let services = match service {
        Some(name) => vec![reg
            .service(name)?
            .ok_or_else(|| ChangeError::NoService(name.into()))?],
        None => reg.services()?,
    };
    match dir {
        Some(dir) => {
            for s in &services {
                let path = dir.join(format!("{}.toml", s.name));
                super::write_private(&path, &s.to_toml())?;
                println!("{}", path.display());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for (i, s) in services.iter().enumerate() {
                if services.len() > 1 {
                    if i > 0 {
                        let _ = writeln!(out);
                    }
                    let _ = writeln!(out, "# ---- {}.toml ----", s.name);
                }
                let _ = write!(out, "{}", s.to_toml());
            }
        }
    }
    Ok(exit::OK)
}
