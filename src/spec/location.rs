//! Where the parts of a service file are, and the problems found in input files, printed
//! as `file:line:col: reason`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::Location;

/// Where the parts of one service file are, for errors found after parsing.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    pub name: Option<Location>,
    /// Each `[networks.NAME]` by the name as written.
    pub networks: BTreeMap<String, Location>,
    /// Per component: its name, each fixed port publish, and each route's (name, hostname).
    pub components: Vec<ComponentSource>,
}

#[derive(Debug, Clone, Default)]
pub struct ComponentSource {
    pub name: Option<Location>,
    pub ports: Vec<Location>,
    pub routes: Vec<(Location, Option<Location>)>,
    /// Each `depends_on` entry by its key as written: (the key, the condition).
    pub depends_on: BTreeMap<String, (Location, Location)>,
    /// The single `network`, when set, and each `networks` entry.
    pub network: Option<Location>,
    pub networks: Vec<Location>,
}

/// One problem in an input file, printed as `file:line:col: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: PathBuf,
    pub at: Option<Location>,
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "{}:{}: {}", self.path.display(), at, self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// Every problem found in a set of input files; nothing is applied while there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Issues(pub Vec<Issue>);

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}
