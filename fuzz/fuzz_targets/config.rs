//! Agent config parser: any input is a config or an error naming the file, line and
//! column; never a panic. A valid config survives `check-config`'s output unchanged.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcp_agent::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/mcp-agent/fuzz.toml");
    match Config::parse(path, text) {
        Ok(c) => {
            let again = Config::parse(path, &c.to_toml()).expect("effective config parses back");
            assert_eq!(again, c);
        }
        Err(ConfigError::Invalid { path: p, at, reason }) => {
            assert_eq!(p, path);
            assert!(!reason.is_empty());
            assert!(at.line >= 1 && at.line <= text.lines().count().max(1) + 1);
        }
        Err(ConfigError::Read { .. }) => unreachable!("no file is read"),
    }
});
