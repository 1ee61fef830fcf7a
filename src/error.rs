//! Exit codes of the command line contract (docs/design.md §1.3) and the error that
//! carries one, plus the two helpers every layer reports with: `chain` (an error and its
//! causes on one line) and `Location` (a position in an input file).
//!
//! A leaf beside `model`: it imports nothing of the crate, so any module may use it.
//! Which errors map to which exit code is decided by the commands (`commands/mod.rs`),
//! not here.

use std::fmt;

/// Exit codes shared by every command; users and scripts depend on these numbers.
pub mod exit {
    pub const OK: u8 = 0;
    /// Some components did not reach their desired state; the summary names them.
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    /// EX_DATAERR: an input file (service file) is invalid.
    pub const DATAERR: u8 = 65;
    /// EX_UNAVAILABLE: podman or the registry cannot be reached.
    pub const UNAVAILABLE: u8 = 69;
    /// EX_CONFIG: the agent's own configuration is invalid.
    pub const CONFIG: u8 = 78;
}

/// An error on its way to `main`: the message to print and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }
    pub fn data(error: impl Into<anyhow::Error>) -> Self {
        Self::new(exit::DATAERR, error)
    }
    pub fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        Self::new(exit::UNAVAILABLE, error)
    }
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self::new(exit::CONFIG, error)
    }
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(exit::USAGE, error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not anyhow's `{:#}`: it appends every source, also those a message already
        // quotes ("Is a directory (os error 21): Is a directory (os error 21)").
        let e: &(dyn std::error::Error + 'static) = self.error.as_ref();
        f.write_str(&chain(e))
    }
}

/// An error and its causes on one line, `a: b: c` ("connection refused" lives in a
/// source), without repeating a cause its parent already quotes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A position in a text file, 1-based, for messages of the form `file:line:col: reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The line and column of byte offset `at` in `text`.
    pub fn of(text: &str, at: usize) -> Location {
        let mut at = at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { line, col }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("/tmp: cannot read config: {source}")]
        struct Read {
            #[source]
            source: std::io::Error,
        }
        let io = std::io::Error::from_raw_os_error(21);
        let f = Failure::config(Read { source: io });
        assert_eq!(
            f.to_string(),
            "/tmp: cannot read config: Is a directory (os error 21)"
        );
        let f = Failure::config(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(f.to_string(), "outer: inner");
    }

    #[test]
    fn location_counts_lines_and_columns_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(Location::of(t, 0), Location { line: 1, col: 1 });
        assert_eq!(Location::of(t, 6), Location { line: 2, col: 1 });
        assert_eq!(Location::of(t, 9), Location { line: 2, col: 4 });
        assert_eq!(Location::of(t, 999), Location { line: 3, col: 1 });
    }
}
