//! Health checks, one-shot components and dependency order (issue 14), named as compose
//! names them. The agent runs the checks itself (docs/design.md §5.9); none of this is
//! given to podman, so none of it is in a container's spec hash.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration of whole milliseconds, written as a humantime duration (`"10s"`, `"500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.duration()).to_string())
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_millis(&s).map_err(serde::de::Error::custom)
    }
}

/// A humantime duration of whole milliseconds, at most a day.
pub fn parse_millis(s: &str) -> Result<Millis, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as \"10s\" or \"500ms\": {e}"))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{s:?} must be whole milliseconds"));
    }
    if d > Duration::from_secs(86_400) {
        return Err(format!("{s:?} is over a day"));
    }
    Ok(Millis(d.as_millis() as u64))
}

/// What a check runs: a command in the container (compose's `test`), or a request from
/// the host to the container's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// `["CMD", arg…]`: the argv, run by exec.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", line]`: `/bin/sh -c line`.
    Shell(String),
    /// An HTTP GET of `path`; a 2xx or 3xx answer is healthy.
    Http { port: u16, path: String },
    /// A TCP connection accepted.
    Tcp { port: u16 },
}

/// What an unhealthy component gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Restarted, with the component's backoff.
    #[default]
    Restart,
    /// Reported only (and its routes withdrawn).
    None,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Restart => "restart",
            OnFailure::None => "none",
        }
    }
}

/// `[components.health]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Millis,
    pub timeout: Millis,
    pub retries: u32,
    /// Failures inside it, before the first success, do not count.
    pub start_period: Millis,
    /// How often the check runs until its first success after a start (compose's
    /// `start_interval`).
    pub start_interval: Millis,
    pub on_failure: OnFailure,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Millis = Millis(30_000);
    pub const DEFAULT_TIMEOUT: Millis = Millis(30_000);
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_START_INTERVAL: Millis = Millis(1_000);
}

/// The condition a dependency must meet before its dependent is created or started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Its container runs.
    Started,
    /// It runs and its check has passed (a component without a check: it runs).
    Healthy,
    /// A one-shot component that exited 0 for its current spec.
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        match s {
            "started" | "service_started" => Some(Condition::Started),
            "healthy" | "service_healthy" => Some(Condition::Healthy),
            "completed" | "service_completed_successfully" => Some(Condition::Completed),
            _ => None,
        }
    }
}

/// One `depends_on` entry: `db = "healthy"` or `db = { condition = "healthy",
/// restart_with = true }`. The key is a component of the same service, or
/// `"service/component"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub condition: Condition,
    /// The dependent is restarted when this dependency is recreated or restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_with: bool,
}

/// A component's `depends_on`, by the name as written.
pub type DependsOn = BTreeMap<String, Dependency>;

/// The service and component a `depends_on` key names, `service` being the dependent's.
pub fn dependency_target<'a>(service: &'a str, name: &'a str) -> (&'a str, &'a str) {
    match name.split_once('/') {
        Some((s, c)) => (s, c),
        None => (service, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_parse_and_print_back() {
        assert_eq!(parse_millis("10s"), Ok(Millis(10_000)));
        assert_eq!(parse_millis("500ms"), Ok(Millis(500)));
        assert!(parse_millis("1us").is_err());
        assert!(parse_millis("2days").is_err());
        assert!(parse_millis("soon").is_err());
        let json = serde_json::to_string(&Millis(1_500)).unwrap();
        assert_eq!(json, "\"1s 500ms\"");
        assert_eq!(
            serde_json::from_str::<Millis>(&json).unwrap(),
            Millis(1_500)
        );
    }

    #[test]
    fn compose_condition_names_are_understood() {
        assert_eq!(
            Condition::parse("service_completed_successfully"),
            Some(Condition::Completed)
        );
        assert_eq!(Condition::parse("healthy"), Some(Condition::Healthy));
        assert_eq!(Condition::parse("up"), None);
    }

    #[test]
    fn a_dependency_names_its_own_service_unless_it_says_another() {
        assert_eq!(dependency_target("shop", "db"), ("shop", "db"));
        assert_eq!(dependency_target("shop", "auth/api"), ("auth", "api"));
    }
}
