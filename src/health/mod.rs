//! The agent's own health checks (issue 14). [`run`] runs one probe
//! against one container and says how it went; when to run it, and what a failure leads
//! to, is the scheduler's.

pub mod probe;

pub use probe::{run, ProbeResult, MARGIN, OUTPUT_MAX};

#[cfg(test)]
mod tests;
