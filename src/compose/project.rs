//! A compose project as compose loads it: its files found (`-f`, `COMPOSE_FILE`, the
//! default names and their `override`), the variables (`.env` or `--env-file`, under the
//! process environment), each file read, interpolated and checked at its top level, the
//! files merged, the project named, `extends` resolved and the profiles applied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component as PathPart, Path, PathBuf};

use super::interpolate::{interpolate_tree, Env};
use super::report::{Findings, Kind, Report};
use super::yaml::{Key, Node, Pos, Value};
use super::Options;
use crate::model::{is_name, RESERVED_SERVICE_NAMES};

/// The default compose files, in compose's order of preference, and their overrides.
const DEFAULT_FILES: &[(&str, &str)] = &[
    ("compose.yaml", "compose.override.yaml"),
    ("compose.yml", "compose.override.yml"),
    ("docker-compose.yml", "docker-compose.override.yml"),
    ("docker-compose.yaml", "docker-compose.override.yaml"),
];

const TOP_LEVEL: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs",
];

/// The largest compose file read.
const MAX_FILE_BYTES: usize = 1 << 20;

pub(super) struct Project {
    pub findings: Findings,
    /// The agent's service name.
    pub name: String,
    /// The project directory: relative paths are made absolute against it.
    pub dir: PathBuf,
    pub env: Env,
    /// The enabled services, `extends` applied, in file order.
    pub services: Vec<(Key, Node)>,
    /// Every service's profiles (empty: always enabled), the left out ones included.
    pub profiles: BTreeMap<String, Vec<String>>,
    pub left_out: Vec<String>,
    /// The top-level sections (a null node when absent).
    pub networks: Node,
    pub volumes: Node,
    pub secrets: Node,
    pub configs: Node,
    /// The compose service names as component names.
    pub components: BTreeMap<String, String>,
    /// How many of the report's files are the project's own (`-f`); the others are
    /// files that `extends.file` names.
    pub project_files: usize,
    /// The services of each file `extends.file` names, by its index among the files.
    pub extended: BTreeMap<usize, Vec<(Key, Node)>>,
    /// The options of the project's networks its services join, by the agent's name of
    /// each: the service file's `[networks.NAME]`.
    pub network_options: BTreeMap<String, crate::model::NetworkOptions>,
}

/// Where a service name is looked up: the project's services, or another file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Scope {
    Project,
    File(usize),
}

/// A path without `.` components and with `..` applied, as compose makes them absolute.
pub(super) fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in p.components() {
        match part {
            PathPart::CurDir => {}
            PathPart::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn compose_files(opts: &Options, f: &mut Findings) -> Vec<PathBuf> {
    if !opts.files.is_empty() {
        return opts
            .files
            .iter()
            .map(|p| clean(&opts.cwd.join(p)))
            .collect();
    }
    if let Some(list) = opts.env.get("COMPOSE_FILE").filter(|s| !s.is_empty()) {
        let sep = opts
            .env
            .get("COMPOSE_PATH_SEPARATOR")
            .cloned()
            .unwrap_or_else(|| ":".into());
        return list
            .split(sep.as_str())
            .filter(|s| !s.is_empty())
            .map(|p| clean(&opts.cwd.join(p)))
            .collect();
    }
    for (name, over) in DEFAULT_FILES {
        let p = opts.cwd.join(name);
        if p.is_file() {
            let mut out = vec![p];
            let o = opts.cwd.join(over);
            if o.is_file() {
                out.push(o);
            }
            return out;
        }
    }
    f.files = vec![opts.cwd.clone()];
    f.add(
        Kind::Invalid,
        None,
        "-f",
        format!(
            "no compose file here: none of {} (name one with -f)",
            DEFAULT_FILES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Vec::new()
}

fn read_text(path: &Path) -> Result<String, String> {
    let bytes = crate::spec::input::read_limited(path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "the file is not valid UTF-8".to_string())
}

/// The variables: the env file's, under the process environment's.
fn variables(opts: &Options, dir: &Path, f: &mut Findings) -> Env {
    let (path, required) = match &opts.env_file {
        Some(p) => (clean(&opts.cwd.join(p)), true),
        None => (dir.join(".env"), false),
    };
    let mut env = Env::new();
    if required || path.is_file() {
        let vars = read_text(&path).and_then(|t| crate::files::parse_env_file(&t));
        match vars {
            Ok(vars) => env.extend(vars),
            Err(e) => {
                f.add(Kind::Invalid, None, "--env-file", e);
                f.list.last_mut().expect("just added").path = path.clone();
            }
        }
    }
    for (k, v) in &opts.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

fn is_compose_project_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// Compose's normalisation of a directory's name: lowercase, only `[a-z0-9_-]`, without
/// leading `_` or `-`.
pub(super) fn normalize_project_name(s: &str) -> String {
    let lower = s.to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

/// A compose service's name as a component name: lowercase, `_` and `.` as `-`.
pub(super) fn component_name(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with('-') {
        out.remove(0);
    }
    out
}

pub(super) fn load(opts: &Options) -> Result<Project, Report> {
    let mut f = Findings::new(Vec::new());
    let files = compose_files(opts, &mut f);
    if files.is_empty() {
        return Err(report_of(f, String::new()));
    }
    f.files = files.clone();
    let dir = files[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| opts.cwd.clone());
    let env = variables(opts, &dir, &mut f);
    let mut trees = Vec::new();
    let mut unreadable = false;
    let mut unset = BTreeMap::new();
    for (i, path) in files.iter().enumerate() {
        let at = Pos {
            file: i,
            line: 1,
            col: 1,
        };
        let text = match read_text(path) {
            Ok(t) => t,
            Err(e) => {
                f.add(Kind::Invalid, None, "-f", e);
                f.list.last_mut().expect("just added").path = path.clone();
                unreadable = true;
                continue;
            }
        };
        let mut node = match super::yaml::parse(&text, i) {
            Ok(n) => n,
            Err(e) => {
                f.invalid(e.at, "yaml", e.reason);
                continue;
            }
        };
        if node.map().is_none() {
            f.invalid(
                at,
                "(top level)",
                "a compose file is a mapping with services:",
            );
            continue;
        }
        let mut problems = Vec::new();
        interpolate_tree(&mut node, &env, &mut Vec::new(), &mut unset, &mut problems);
        for p in problems {
            f.invalid(p.at, &p.key, p.reason);
        }
        top_level(&node, &mut f);
        trees.push(node);
    }
    for p in unset.into_values() {
        f.note(p.at, &p.key, p.reason);
    }
    // A file that could not be read stops here; other problems are reported with all
    // that the mapping finds.
    if trees.is_empty() || unreadable {
        return Err(report_of(f, String::new()));
    }
    let root = super::merge::merge_files(trees);
    let name = project_name(opts, &env, &root, &dir, &mut f);
    let section = |k: &str| {
        root.get(k)
            .cloned()
            .unwrap_or_else(|| Node::new(Value::Null, Pos::default()))
    };
    let mut p = Project {
        name,
        dir,
        networks: section("networks"),
        volumes: section("volumes"),
        secrets: section("secrets"),
        configs: section("configs"),
        env,
        services: Vec::new(),
        profiles: BTreeMap::new(),
        left_out: Vec::new(),
        components: BTreeMap::new(),
        project_files: files.len(),
        extended: BTreeMap::new(),
        network_options: BTreeMap::new(),
        findings: f,
    };
    let services = match root.get("services") {
        Some(s) if s.map().is_some() => s.clone(),
        Some(s) if !s.is_null() => {
            p.findings
                .invalid(s.at, "services", "must be a mapping of service names");
            return Err(p.report());
        }
        _ => {
            p.findings.add(
                Kind::Invalid,
                Some(root.at),
                "services",
                "the project has no services",
            );
            return Err(p.report());
        }
    };
    p.resolve(&services, opts);
    Ok(p)
}

fn top_level(root: &Node, f: &mut Findings) {
    for (k, v) in root.map().unwrap_or(&[]) {
        let key = k.name.as_str();
        match key {
            "version" => f.note(
                k.at,
                key,
                "obsolete, ignored (as compose ignores it)",
            ),
            _ if TOP_LEVEL.contains(&key) || key.starts_with("x-") => {}
            "include" => f.unsupported(
                k.at,
                key,
                "include: another project's files are not read: pass them with -f, which merges them",
            ),
            "models" => f.unsupported(
                k.at,
                key,
                "AI models are docker's model runner, which podman has not",
            ),
            _ => f.invalid(k.at, key, "unknown top-level key (not in the compose specification)"),
        }
        if matches!(
            key,
            "services" | "networks" | "volumes" | "secrets" | "configs"
        ) && !(v.is_null() || v.map().is_some())
        {
            f.invalid(v.at, key, format!("must be a mapping, not {}", v.kind()));
        }
    }
}

fn project_name(opts: &Options, env: &Env, root: &Node, dir: &Path, f: &mut Findings) -> String {
    let explicit = |s: &str, key: &str, at: Option<Pos>, f: &mut Findings| {
        if is_compose_project_name(s) {
            return s.to_string();
        }
        f.add(
            Kind::Invalid,
            at,
            key,
            format!("project name {s:?} must be lowercase letters, digits, '-' and '_', beginning with a letter or digit"),
        );
        String::new()
    };
    let (compose, at) = if let Some(p) = &opts.project {
        (explicit(p, "--project", None, f), None)
    } else if let Some(p) = env.get("COMPOSE_PROJECT_NAME").filter(|s| !s.is_empty()) {
        (explicit(p, "COMPOSE_PROJECT_NAME", None, f), None)
    } else if let Some(n) = root.get("name").filter(|n| !n.is_null()) {
        let s = n.text().unwrap_or_default().to_string();
        (explicit(&s, "name", Some(n.at), f), Some(n.at))
    } else {
        let base = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = normalize_project_name(&base);
        if n.is_empty() {
            f.add(
                Kind::Invalid,
                None,
                "name",
                format!("the directory name {base:?} gives no project name: give one with --project or name:"),
            );
        }
        (n, None)
    };
    let name = compose.replace('_', "-");
    if compose.is_empty() {
        return name;
    }
    if !is_name(&name) {
        f.add(
            Kind::Invalid,
            at,
            "name",
            format!("project name {compose:?} cannot be a service name of the agent ([a-z0-9][a-z0-9-]{{0,62}})"),
        );
    } else if RESERVED_SERVICE_NAMES.contains(&name.as_str()) {
        f.add(
            Kind::Invalid,
            at,
            "name",
            format!("project name {name:?} is reserved by the agent (its proxy ids answer ACME challenges): give another with --project"),
        );
    } else if name != compose {
        f.add(
            Kind::Note,
            at,
            "name",
            format!(
                "project {compose:?} is the service {name:?} (the agent's names have '-' for '_')"
            ),
        );
    }
    name
}

fn report_of(f: Findings, project: String) -> Report {
    Report {
        project,
        services: Vec::new(),
        left_out: Vec::new(),
        findings: f.list,
    }
}

impl Project {
    pub fn report(&self) -> Report {
        Report {
            project: self.name.clone(),
            services: self
                .services
                .iter()
                .map(|(k, _)| {
                    (
                        k.name.clone(),
                        self.components.get(&k.name).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
            left_out: self.left_out.clone(),
            findings: self.findings.list.clone(),
        }
    }

    /// `extends` resolved, profiles applied, component names given.
    fn resolve(&mut self, services: &Node, opts: &Options) {
        let entries = services.map().unwrap_or(&[]).to_vec();
        let mut resolved: BTreeMap<(Scope, String), Node> = BTreeMap::new();
        for (k, _) in &entries {
            let mut chain = Vec::new();
            self.extend(Scope::Project, &entries, &k.name, &mut resolved, &mut chain);
        }
        let mut active: BTreeSet<String> = opts.profiles.iter().cloned().collect();
        if let Some(list) = self.env.get("COMPOSE_PROFILES") {
            active.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (k, _) in &entries {
            let Some(node) = resolved.get(&(Scope::Project, k.name.clone())).cloned() else {
                continue;
            };
            let key = format!("services.{}", k.name);
            let profiles = match node.get("profiles") {
                Some(p) => self.findings.texts(p, &format!("{key}.profiles")),
                None => Vec::new(),
            };
            self.profiles.insert(k.name.clone(), profiles.clone());
            if !profiles.is_empty()
                && !active.contains("*")
                && !profiles.iter().any(|p| active.contains(p))
            {
                self.findings.note(
                    k.at,
                    &key,
                    format!(
                        "left out: none of its profiles ({}) is enabled (--profile or COMPOSE_PROFILES)",
                        profiles.join(", ")
                    ),
                );
                self.left_out.push(k.name.clone());
                continue;
            }
            let c = component_name(&k.name);
            if !is_name(&c) {
                self.findings.invalid(
                    k.at,
                    &key,
                    format!("service name {:?} cannot be a component name of the agent ([a-z0-9][a-z0-9-]{{0,62}})", k.name),
                );
            } else if let Some(other) = seen.get(&c) {
                self.findings.invalid(
                    k.at,
                    &key,
                    format!("services {other:?} and {:?} are both the component {c:?} (the agent's names are lowercase, with '-' for '_' and '.')", k.name),
                );
            } else if c != k.name {
                self.findings.service = Some(k.name.clone());
                self.findings.note(
                    k.at,
                    &key,
                    format!("the component is {c:?} (the agent's names are lowercase, with '-' for '_' and '.'): other services reach it by that name, not {:?}", k.name),
                );
                self.findings.service = None;
            }
            seen.insert(c.clone(), k.name.clone());
            self.components.insert(k.name.clone(), c);
            self.services.push((k.clone(), node));
        }
    }

    /// The service `name` of `scope` (the project's services, or another file's) with its
    /// `extends` chain merged in (base first). What a project service's chain finds is
    /// that service's (a base in another file is part of the service that extends it).
    fn extend(
        &mut self,
        scope: Scope,
        entries: &[(Key, Node)],
        name: &str,
        resolved: &mut BTreeMap<(Scope, String), Node>,
        chain: &mut Vec<(Scope, String)>,
    ) -> Option<Node> {
        let prev = self.findings.service.clone();
        if scope == Scope::Project {
            self.findings.service = Some(name.to_string());
        }
        let out = self.extend_one(scope, entries, name, resolved, chain);
        self.findings.service = prev;
        out
    }

    fn extend_one(
        &mut self,
        scope: Scope,
        entries: &[(Key, Node)],
        name: &str,
        resolved: &mut BTreeMap<(Scope, String), Node>,
        chain: &mut Vec<(Scope, String)>,
    ) -> Option<Node> {
        let me = (scope, name.to_string());
        if let Some(n) = resolved.get(&me) {
            return Some(n.clone());
        }
        let (k, node) = entries.iter().find(|(k, _)| k.name == name)?;
        let key = format!("services.{name}.extends");
        if node.map().is_none() && !node.is_null() {
            self.findings.invalid(
                node.at,
                &format!("services.{name}"),
                format!("a service must be a mapping, not {}", node.kind()),
            );
            return None;
        }
        let mut node = node.clone();
        if node.is_null() {
            node = Node::new(Value::Map(Vec::new()), k.at);
        }
        let Some(ext) = node.get("extends").cloned() else {
            resolved.insert(me, node.clone());
            return Some(node);
        };
        if let Value::Map(m) = &mut node.value {
            m.retain(|(k, _)| k.name != "extends");
        }
        let (base_name, file) = match (&ext.value, ext.get("service")) {
            (Value::Scalar { text, .. }, _) => (text.clone(), None),
            (Value::Map(_), Some(s)) if s.text().is_some() => (
                s.text().unwrap_or_default().to_string(),
                ext.get("file").cloned(),
            ),
            _ => {
                self.findings
                    .invalid(ext.at, &key, "must be a service name or { service: NAME }");
                return None;
            }
        };
        // The base: in the same scope, or in the file `file` names.
        let (base_scope, base_entries) = match &file {
            None => (scope, entries.to_vec()),
            Some(f) => match self.extended_file(f, &format!("{key}.file")) {
                Ok(found) => found,
                // Not supported: the service without its base, the key reported.
                Err(true) => {
                    resolved.insert(me, node.clone());
                    return Some(node);
                }
                Err(false) => return None,
            },
        };
        let base_key = (base_scope, base_name.clone());
        if chain.contains(&me) || base_key == me {
            chain.push(me);
            let names: Vec<&str> = chain.iter().map(|(_, n)| n.as_str()).collect();
            self.findings.invalid(
                ext.at,
                &key,
                format!("extends cycle: {}", names.join(" -> ")),
            );
            return None;
        }
        if !base_entries.iter().any(|(k, _)| k.name == base_name) {
            let where_ = match &file {
                Some(f) => format!(" in {}", f.text().unwrap_or_default()),
                None => String::new(),
            };
            self.findings.invalid(
                ext.at,
                &key,
                format!("service {base_name:?} is not defined{where_}"),
            );
            return None;
        }
        chain.push(me.clone());
        let base = self.extend(base_scope, &base_entries, &base_name, resolved, chain);
        chain.pop();
        let base = base?;
        let mut path = vec!["services".to_string(), name.to_string()];
        let merged = super::merge::merge(&mut path, base, node)
            .unwrap_or_else(|| Node::new(Value::Map(Vec::new()), k.at));
        resolved.insert(me, merged.clone());
        Some(merged)
    }

    /// The services of the file an `extends.file` names (`f`, at compose key `key`),
    /// read once: relative to the directory of the file that names it, interpolated
    /// with the project's variables. Its scope is its index among the report's files.
    /// `Err(true)`: not supported (reported), the service is read without its base;
    /// `Err(false)`: invalid (reported).
    fn extended_file(&mut self, f: &Node, key: &str) -> Result<(Scope, Vec<(Key, Node)>), bool> {
        let Some(name) = f.text().filter(|t| !t.is_empty()) else {
            self.findings.invalid(f.at, key, "must be a path");
            return Err(false);
        };
        let here = self
            .findings
            .files
            .get(f.at.file)
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        let path = clean(&here.join(name));
        if path.parent() != Some(here.as_path()) {
            self.findings.unsupported(
                f.at,
                key,
                format!("{name:?} is in another directory: the relative paths of its services are that directory's, which the import does not rebase (copy the file beside this one)"),
            );
            return Err(true);
        }
        if let Some(i) = self.findings.files.iter().position(|p| *p == path) {
            return match self.extended.get(&i) {
                Some(entries) => Ok((Scope::File(i), entries.clone())),
                // A file of the project itself (-f): its services are the project's.
                None if i < self.project_files => {
                    self.findings.unsupported(
                        f.at,
                        key,
                        "extends from a file of the project itself (-f): name the service without file:",
                    );
                    Err(true)
                }
                // One that could not be read (said once).
                None => Err(false),
            };
        }
        let i = self.findings.files.len();
        self.findings.files.push(path.clone());
        let text = match read_text(&path) {
            Ok(t) => t,
            Err(e) => {
                self.findings
                    .invalid(f.at, key, format!("{}: {e}", path.display()));
                return Err(false);
            }
        };
        let mut node = match super::yaml::parse(&text, i) {
            Ok(n) => n,
            Err(e) => {
                self.findings.invalid(e.at, "yaml", e.reason);
                return Err(false);
            }
        };
        let mut problems = Vec::new();
        let mut unset = BTreeMap::new();
        interpolate_tree(
            &mut node,
            &self.env,
            &mut Vec::new(),
            &mut unset,
            &mut problems,
        );
        for p in problems {
            self.findings.invalid(p.at, &p.key, p.reason);
        }
        for p in unset.into_values() {
            self.findings.note(p.at, &p.key, p.reason);
        }
        super::merge::normalize(&mut Vec::new(), &mut node);
        let entries = match node.get("services") {
            Some(s) if s.map().is_some() => s.map().unwrap_or(&[]).to_vec(),
            _ => {
                self.findings.invalid(
                    node.at,
                    "services",
                    format!("{} has no services: for extends", path.display()),
                );
                return Err(false);
            }
        };
        self.extended.insert(i, entries.clone());
        Ok((Scope::File(i), entries))
    }

    /// A path of the compose file made absolute, as compose makes it: against the
    /// project directory, `~` as the home directory.
    pub fn absolute(&self, p: &str) -> PathBuf {
        if let Some(rest) = p.strip_prefix('~') {
            if rest.is_empty() || rest.starts_with('/') {
                let home = self.env.get("HOME").cloned().unwrap_or_else(|| "/".into());
                return clean(&Path::new(&home).join(rest.trim_start_matches('/')));
            }
        }
        clean(&self.dir.join(p))
    }
}
