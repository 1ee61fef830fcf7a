//! What an import found, machine-readable: per compose service, every key not carried
//! over (and why), every invalid value, and notes (keys accepted with no effect, names
//! changed). Printed as `file:line:col: services.NAME.KEY: not supported: <why>`.

use std::fmt;
use std::path::PathBuf;

use super::yaml::Pos;
use crate::error::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The input is wrong (compose would refuse it too, or the agent's rules do): never
    /// written, not even with `--partial`.
    Invalid,
    /// A key or value the agent cannot express: refused, or with `--partial` left out
    /// and written as a comment at its component.
    Unsupported,
    /// Said, not refused: a key accepted with no effect, a name changed.
    Note,
}

/// One thing the import found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub path: PathBuf,
    pub at: Option<Location>,
    /// The key path: `services.app.build`, `networks.front.ipam`, `name`.
    pub key: String,
    pub reason: String,
    /// The compose service it belongs to, if one.
    pub service: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(at) = self.at {
            write!(f, ":{at}")?;
        }
        write!(f, ": {}: ", self.key)?;
        match self.kind {
            Kind::Invalid => {}
            Kind::Unsupported => write!(f, "not supported: ")?,
            Kind::Note => write!(f, "note: ")?,
        }
        write!(f, "{}", self.reason)
    }
}

/// The whole report of one import.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The agent's service name (the normalised project name).
    pub project: String,
    /// The compose services imported as components, in order: (compose name, component).
    pub services: Vec<(String, String)>,
    /// Compose services left out because none of their profiles is enabled.
    pub left_out: Vec<String>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.of_kind(kind).next().is_some()
    }

    /// The keys of compose service `service` not carried over (unsupported or invalid).
    pub fn dropped(&self, service: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.kind != Kind::Note && f.service.as_deref() == Some(service))
            .collect()
    }

    /// The compose services imported with nothing dropped.
    pub fn whole(&self) -> Vec<&str> {
        self.services
            .iter()
            .map(|(s, _)| s.as_str())
            .filter(|s| self.dropped(s).is_empty())
            .collect()
    }

    /// The findings to print, sorted by file and position, each once (a network's
    /// problem is found once per service that joins it).
    pub fn lines(&self, kinds: &[Kind]) -> Vec<String> {
        let mut v: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| kinds.contains(&f.kind))
            .collect();
        v.sort_by(|a, b| {
            (&a.path, a.at.map(|l| (l.line, l.col)), a.kind).cmp(&(
                &b.path,
                b.at.map(|l| (l.line, l.col)),
                b.kind,
            ))
        });
        let mut out: Vec<String> = Vec::new();
        for f in v {
            let line = f.to_string();
            if !out.contains(&line) {
                out.push(line);
            }
        }
        out
    }
}

/// Collects findings while a project is read and mapped.
pub struct Findings {
    pub files: Vec<PathBuf>,
    pub list: Vec<Finding>,
    /// The compose service being mapped: findings are its own.
    pub service: Option<String>,
}

impl Findings {
    pub fn new(files: Vec<PathBuf>) -> Findings {
        Findings {
            files,
            list: Vec::new(),
            service: None,
        }
    }

    pub fn add(&mut self, kind: Kind, at: Option<Pos>, key: &str, reason: impl Into<String>) {
        let path = at
            .and_then(|p| self.files.get(p.file).cloned())
            .or_else(|| self.files.first().cloned())
            .unwrap_or_default();
        self.list.push(Finding {
            kind,
            path,
            at: at.map(Pos::location),
            key: key.to_string(),
            reason: reason.into(),
            service: self.service.clone(),
        });
    }

    pub fn invalid(&mut self, at: Pos, key: &str, reason: impl Into<String>) {
        self.add(Kind::Invalid, Some(at), key, reason);
    }

    pub fn unsupported(&mut self, at: Pos, key: &str, reason: impl Into<String>) {
        self.add(Kind::Unsupported, Some(at), key, reason);
    }

    pub fn note(&mut self, at: Pos, key: &str, reason: impl Into<String>) {
        self.add(Kind::Note, Some(at), key, reason);
    }
}
