//! The `mcp-agent` binary: parse, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use mcp_agent::cli::Opts;
use mcp_agent::commands;

fn main() -> ExitCode {
    let opts = Opts::parse();
    match commands::dispatch(opts) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("mcp-agent: {f}");
            ExitCode::from(f.code)
        }
    }
}
