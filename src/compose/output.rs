//! The service file of an import: the components as `Service::to_toml` writes them, run
//! through the agent's own parser and registry rules (as `apply` would), a value those
//! refuse reported at its compose key, and each dropped key written as a comment at the
//! component it belongs to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::project::Project;
use super::report::Kind;
use super::service::Mapped;
use crate::error::Location;
use crate::model::{Component, RestartPolicy, Service};

/// The component index and service-file key of a position in `text`: the key of its line,
/// of the table it is in, or of the multi-line value it continues.
fn locate(text: &str, at: Location) -> Option<(usize, String)> {
    let mut idx: Option<usize> = None;
    let mut key: Option<String> = None;
    let mut table: Option<String> = None;
    for line in text.lines().take(at.line) {
        if line == "[[components]]" {
            idx = Some(idx.map_or(0, |i| i + 1));
            key = None;
            table = None;
        } else if let Some(rest) = line
            .strip_prefix("[[components.")
            .or_else(|| line.strip_prefix("[components."))
        {
            let name: String = rest
                .chars()
                .take_while(|c| *c != '.' && *c != ']')
                .collect();
            table = Some(name);
        } else if table.is_none() {
            if let Some((k, _)) = line.split_once(" = ") {
                if !k.starts_with(' ') && !k.is_empty() {
                    key = Some(k.trim_matches('"').to_string());
                }
            }
        }
    }
    Some((idx?, table.or(key).unwrap_or_else(|| "name".into())))
}

/// Puts a key of a component back to its default (the agent refused its value); `false`
/// for the keys a component cannot be without.
fn clear(c: &mut Component, key: &str) -> bool {
    let s = &mut c.settings;
    match key {
        "network" => c.network.clear(),
        "user" => c.user = None,
        "restart" => c.restart = RestartPolicy::No,
        "cmd" => c.cmd.clear(),
        "env" => c.env.clear(),
        "volumes" => c.volumes.clear(),
        "ports" => c.ports.clear(),
        "entrypoint" => s.entrypoint = None,
        "working_dir" => s.working_dir = None,
        "stop_signal" => s.stop_signal = None,
        "stop_timeout" => s.stop_timeout = None,
        "cap_add" => s.cap_add.clear(),
        "cap_drop" => s.cap_drop.clear(),
        "security_opt" => s.security_opt.clear(),
        "devices" => s.devices.clear(),
        "sysctls" => s.sysctls.clear(),
        "ulimits" => s.ulimits.clear(),
        "shm_size" => s.shm_size = None,
        "memory" => s.memory = None,
        "memory_reservation" => s.memory_reservation = None,
        "cpus" => s.cpus = None,
        "pids_limit" => s.pids_limit = None,
        "userns" => s.userns = None,
        "group_add" => s.group_add.clear(),
        "labels" => s.labels.clear(),
        "log_driver" => {
            s.log_driver = None;
            s.log_opts.clear();
        }
        "log_opts" => s.log_opts.clear(),
        "env_file" => s.env_file.clear(),
        "secrets" => s.secrets.clear(),
        "tmpfs" => s.tmpfs.clear(),
        "networks" => s.networks.clear(),
        "aliases" => s.aliases.clear(),
        "hostname" => s.hostname = None,
        "dns" => s.dns.clear(),
        "dns_search" => s.dns_search.clear(),
        "extra_hosts" => s.extra_hosts.clear(),
        "pull" => s.pull = None,
        "health" => s.health = None,
        "oneshot" => s.oneshot = false,
        "depends_on" => s.depends_on.clear(),
        "init" => s.init = false,
        "tty" => s.tty = false,
        "stdin_open" => s.stdin_open = false,
        "privileged" => s.privileged = false,
        "read_only" => s.read_only = false,
        _ => return false,
    }
    true
}

/// The issues `apply` would report for `text`: its parser's, then its registry rules'
/// (ports and container names within the file).
fn apply_issues(path: &Path, text: &str) -> Vec<crate::spec::Issue> {
    match crate::spec::parse_service(path, text) {
        Ok(sf) => match crate::spec::check_registry_rules(&[], &[sf]) {
            Ok(()) => Vec::new(),
            Err(e) => e.0,
        },
        Err(e) => e.0,
    }
}

/// The service and its file; `None` when something is invalid.
pub(super) fn service_file(
    p: &mut Project,
    mut mapped: Vec<Mapped>,
) -> (Option<Service>, Option<String>) {
    if p.findings.list.iter().any(|f| f.kind == Kind::Invalid) {
        return (None, None);
    }
    let path = PathBuf::from(format!("{}.toml", p.name));
    // The mapped services that are components (by component index).
    let live: Vec<usize> = (0..mapped.len()).filter(|&i| !mapped[i].skip).collect();
    let components =
        |mapped: &[Mapped]| live.iter().map(|&i| mapped[i].component.clone()).collect();
    // The options of the networks a component joins (one that lost its networks to a
    // refused value joins none).
    let networks = |components: &[Component], p: &Project| -> BTreeMap<_, _> {
        p.network_options
            .iter()
            .filter(|(n, _)| {
                components
                    .iter()
                    .any(|c| c.settings.networks.iter().any(|e| e.name == **n))
            })
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect()
    };
    let mut service = Service {
        name: p.name.clone(),
        active: true,
        components: components(&mapped),
        networks: BTreeMap::new(),
    };
    service.networks = networks(&service.components, p);
    for _round in 0..8 {
        let text = service.to_toml();
        let issues = apply_issues(&path, &text);
        if issues.is_empty() {
            let text = with_comments(p, &mapped, &live, &text);
            return (Some(service), Some(text));
        }
        for issue in issues {
            let spot = issue.at.and_then(|at| locate(&text, at));
            let Some((idx, key)) = spot else {
                p.findings.add(
                    Kind::Invalid,
                    None,
                    "name",
                    format!("the agent refuses the service: {}", issue.reason),
                );
                return (None, None);
            };
            let m = &mut mapped[live[idx]];
            let origin = m
                .origins
                .iter()
                .find(|(k, _, _)| *k == key)
                .or_else(|| m.origins.iter().find(|(k, _, _)| k == "name"))
                .cloned();
            p.findings.service = Some(m.compose.clone());
            let (at, ckey) = origin
                .map(|(_, at, k)| (Some(at), k))
                .unwrap_or((None, format!("services.{}", m.compose)));
            if clear(&mut m.component, &key) {
                p.findings.add(
                    Kind::Unsupported,
                    at,
                    &ckey,
                    format!("the agent refuses it: {}", issue.reason),
                );
            } else {
                p.findings.add(
                    Kind::Invalid,
                    at,
                    &ckey,
                    format!("the agent refuses it: {}", issue.reason),
                );
            }
            p.findings.service = None;
        }
        if p.findings.list.iter().any(|f| f.kind == Kind::Invalid) {
            return (None, None);
        }
        service.components = components(&mapped);
        service.networks = networks(&service.components, p);
    }
    p.findings.add(
        Kind::Invalid,
        None,
        "name",
        "the agent keeps refusing the service file made of it",
    );
    (None, None)
}

/// `text` with a header and, at each component, its dropped keys as comments.
fn with_comments(p: &Project, mapped: &[Mapped], live: &[usize], text: &str) -> String {
    let files: Vec<String> = p
        .findings
        .files
        .iter()
        .map(|f| {
            f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut out = format!(
        "# Imported by `mcp-agent import compose` from {} (project {:?}).\n",
        files.join(", "),
        p.name
    );
    // A service with no component has its findings at the top.
    let skipped: Vec<&str> = mapped
        .iter()
        .filter(|m| m.skip)
        .map(|m| m.compose.as_str())
        .collect();
    let dropped = |service: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = p
            .findings
            .list
            .iter()
            .filter(|f| {
                f.kind == Kind::Unsupported
                    && (f.service.as_deref() == service
                        || service.is_none()
                            && f.service.as_deref().is_some_and(|s| skipped.contains(&s)))
            })
            .map(|f| {
                let at = f.at.map(|a| format!(":{a}")).unwrap_or_default();
                let file = f
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!(
                    "# not imported: {} ({file}{at}): {}",
                    f.key,
                    f.reason.replace('\n', " ")
                )
            })
            .collect();
        v.dedup();
        v
    };
    for line in dropped(None) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let mut idx = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line == "[[components]]" {
            if let Some(m) = live.get(idx).map(|&i| &mapped[i]) {
                for c in dropped(Some(&m.compose)) {
                    out.push_str(&c);
                    out.push('\n');
                }
            }
            idx += 1;
        }
    }
    // The comments change nothing: else the file goes out without them.
    let path = PathBuf::from("check.toml");
    match crate::spec::parse_service(&path, &out) {
        Ok(sf) if sf.service.components.len() == live.len() && idx == live.len() => out,
        _ => text.to_string(),
    }
}
