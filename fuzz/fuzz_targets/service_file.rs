//! Service-file parser and validator: any input is either a valid service or a list of
//! issues naming the file and a line inside it; never a panic. A valid one survives
//! export and re-parse unchanged.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcp_agent::spec::parse_service;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match parse_service(path, text) {
        Ok(file) => {
            let again = parse_service(path, &file.service.to_toml())
                .expect("an exported service parses back");
            assert_eq!(again.service, file.service);
        }
        Err(issues) => {
            let lines = text.lines().count().max(1) + 1;
            for i in &issues.0 {
                assert_eq!(i.path, path);
                assert!(!i.reason.is_empty());
                if let Some(at) = i.at {
                    assert!(at.line >= 1 && at.line <= lines, "{at} beyond {lines} lines");
                }
            }
        }
    }
});
