//! `mcp-agent import compose [-f FILE]... [--project NAME] [--env-file FILE]
//! [--profile P]... [-o DIR] [--partial]`: a compose project as one service file, on
//! stdout or as `DIR/<project>.toml` (created 0600: it may hold env values). Every key
//! not carried over is reported, all at once, as `file:line:col: services.NAME.KEY: not
//! supported: <why>` (exit 65, nothing written), or with `--partial` written as a
//! comment at its component. Reads no config and no registry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;

use crate::compose::{Kind, Options};
use crate::error::{exit, Failure};

pub struct Args {
    pub files: Vec<PathBuf>,
    pub project: Option<String>,
    pub env_file: Option<PathBuf>,
    pub profiles: Vec<String>,
    pub output_dir: Option<PathBuf>,
    pub partial: bool,
}

pub fn compose(args: Args) -> Result<u8, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::new(exit::FAILED, anyhow!("the current directory: {e}")))?;
    let opts = Options {
        files: args.files,
        project: args.project,
        env_file: args.env_file,
        profiles: args.profiles,
        cwd,
        env: std::env::vars().collect(),
    };
    let import = crate::compose::import(&opts);
    let report = &import.report;
    let mut err = std::io::stderr().lock();
    for line in report.lines(&[Kind::Note]) {
        let _ = writeln!(err, "mcp-agent: {line}");
    }
    let writable = import.writable(args.partial);
    for line in report.lines(&[Kind::Invalid, Kind::Unsupported]) {
        let _ = writeln!(err, "mcp-agent: {line}");
    }
    let text = match (&import.text, writable) {
        (Some(t), true) => t,
        _ => {
            let invalid = report.lines(&[Kind::Invalid]).len();
            let unsupported = report.lines(&[Kind::Unsupported]).len();
            let mut why = Vec::new();
            if invalid > 0 {
                why.push(format!("{invalid} invalid"));
            }
            if unsupported > 0 {
                why.push(format!("{unsupported} not supported"));
            }
            let hint = if invalid == 0 && unsupported > 0 {
                " (--partial writes the file without them, each as a comment)"
            } else {
                ""
            };
            return Err(Failure::data(anyhow!(
                "nothing written: {}{hint}",
                why.join(", ")
            )));
        }
    };
    match &args.output_dir {
        Some(dir) => {
            let path = dir.join(format!("{}.toml", report.project));
            // 0600, as `export -o` writes: the file may hold env values.
            super::write_private(&path, text)?;
            println!("{}", path.display());
        }
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    Ok(exit::OK)
}
