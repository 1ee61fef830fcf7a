//! `mcp-agent import compose` against a real peer, podman-compose 1.0.3 (Debian's),
//! issue 15: corpus files brought up by both — `podman-compose up -d` on one private
//! podman, `import compose` + `apply` + `--once` on another — and the two sets of
//! containers compared field by field from `podman inspect`.
//!
//! Both tools read the same copy of each file, changed the same way for this machine:
//! every image is the local busybox image; every service gets an entrypoint that keeps
//! it up (`sh -c 'sleep'`, in the form the file wrote one, a string or a list: the
//! file's own programs are not in busybox), its command left as written (it becomes
//! the shell's ignored arguments); health checks run `true`, in the form written (their
//! programs are not there either); host ports become `${MCP_P<n>}`, set to free ports of
//! each tool's own (host ports are the machine's); absolute bind sources move under the
//! project directory (podman-compose and the agent create missing ones). The variables
//! the files need are set for both.
//!
//! Each difference found is checked against [`KNOWN`], the list the README's
//! "Differences from podman-compose" gives with its reasons: a new difference, or one
//! gone, fails the test.
//!
//! podman-compose 1.0.3 runs the podman CLI; `--podman-args` puts `--root`/`--runroot`
//! after each subcommand (the CLI takes global flags there too), and CONTAINERS_CONF
//! comes from its environment: it acts on its own private podman, never the machine's.
//! The networks either tool creates (podman's are machine-wide) are removed at the end.

mod agentkit;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentkit::{bin, Agent, Run};
use common::{free_port, PrivatePodman};
use serde_json::Value;

const IMAGE: &str = "localhost/busybox:latest";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/compose");
/// The program every container runs instead of the image's.
const SLEEP: &str = "trap 'exit 0' TERM; sleep 100000 & wait";

/// One corpus file brought up by both tools.
struct Case {
    file: &'static str,
    /// Variables the file needs, for both tools.
    env: &'static [(&'static str, &'static str)],
    /// Files beside it (env files).
    siblings: &'static [(&'static str, &'static str)],
    /// The differences expected, by their name in [`KNOWN`], with the compose services
    /// they show on.
    known: &'static [(&'static str, &'static [&'static str])],
}

// ---------------------------------------------------------------------------------------
// The copy both tools read.

/// The indentation of a line and its text after it.
fn split_indent(line: &str) -> (usize, &str) {
    let t = line.trim_start_matches(' ');
    (line.len() - t.len(), t)
}

/// A `KEY: value` line: its key and the value after `:` (trimmed; "" for a block).
fn key_line(t: &str) -> Option<(&str, &str)> {
    let t = t.strip_prefix("- ").unwrap_or(t);
    let (k, v) = t.split_once(':')?;
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok || !(v.is_empty() || v.starts_with(' ')) {
        return None;
    }
    Some((k, v.trim()))
}

fn is_comment_or_blank(t: &str) -> bool {
    t.trim().is_empty() || t.trim_start().starts_with('#')
}

/// Where the value of the key on line `i` (at indentation `n`) ends: the lines after it
/// that are blank, comments, deeper, or (for a block value) list items at its own
/// indentation.
fn block_end(lines: &[String], i: usize, n: usize, block: bool) -> usize {
    let mut j = i + 1;
    while j < lines.len() {
        let (ind, t) = split_indent(&lines[j]);
        if is_comment_or_blank(t) || ind > n || (block && ind == n && t.starts_with("- ")) {
            j += 1;
        } else {
            break;
        }
    }
    // Trailing blank or comment lines are not the value's.
    while j > i + 1 && is_comment_or_blank(&lines[j - 1]) {
        j -= 1;
    }
    j
}

/// The keys at indentation `n` of the mapping that holds line `i`.
fn sibling_keys(lines: &[String], i: usize, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut scan = |j: usize| -> bool {
        let (ind, t) = split_indent(&lines[j]);
        if is_comment_or_blank(t) {
            return true;
        }
        if ind < n {
            return false;
        }
        if ind == n {
            if let Some((k, _)) = key_line(t) {
                keys.push(k.to_string());
            }
        }
        true
    };
    for j in (0..i).rev() {
        if !scan(j) {
            break;
        }
    }
    for j in i..lines.len() {
        if !scan(j) {
            break;
        }
    }
    keys
}

/// Splits a short port (`[IP:]HOST:CONTAINER[/PROTO]`) at its colons outside `${…}`
/// and `[…]`.
fn port_parts(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut brace, mut bracket) = (0, 0);
    let b = s.as_bytes();
    for (i, c) in s.chars().enumerate() {
        match c {
            '{' if i > 0 && b[i - 1] == b'$' => brace += 1,
            '}' if brace > 0 => brace -= 1,
            '[' => bracket += 1,
            ']' => bracket -= 1,
            ':' if brace == 0 && bracket == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts
}

/// The copy of a compose file both tools read (see the module's doc); `ports` counts the
/// host ports made variables.
fn rewrite(text: &str, ports: &mut usize) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut i = 0;
    while i < lines.len() {
        let (n, t) = split_indent(&lines[i]);
        let Some((key, value)) = key_line(t) else {
            i += 1;
            continue;
        };
        let (key, value) = (key.to_string(), value.to_string());
        let dash = if t.starts_with("- ") { "- " } else { "" };
        let pad = " ".repeat(n);
        let block = value.is_empty();
        let end = block_end(&lines, i, n, block);
        let body: String = lines[i..end].join("\n");
        let replace = |lines: &mut Vec<String>, with: Vec<String>| -> usize {
            let len = with.len();
            lines.splice(i..end, with);
            i + len
        };
        i = match key.as_str() {
            "image" => {
                let mut with = vec![format!("{pad}{dash}image: {IMAGE}")];
                if !sibling_keys(&lines, i, n).iter().any(|k| k == "entrypoint") {
                    with.push(format!("{pad}entrypoint: {}", entrypoint_list()));
                }
                replace(&mut lines, with)
            }
            "entrypoint" => {
                let list = value.starts_with('[') || block;
                let e = if list {
                    entrypoint_list()
                } else {
                    format!("sh -c \"{SLEEP}\" --")
                };
                replace(&mut lines, vec![format!("{pad}entrypoint: {e}")])
            }
            // `[NONE]` stays: it turns the image's check off.
            "test" if body.contains("NONE") => end,
            "test" => {
                let t = if body.contains("CMD-SHELL") {
                    "[\"CMD-SHELL\", \"true\"]".to_string()
                } else if value.starts_with('[') || block {
                    "[\"CMD\", \"true\"]".to_string()
                } else {
                    "\"true\"".to_string()
                };
                replace(&mut lines, vec![format!("{pad}test: {t}")])
            }
            "ports" => {
                let mut with = vec![lines[i].clone()];
                for l in &lines[i + 1..end] {
                    with.push(rewrite_port(l, ports));
                }
                replace(&mut lines, with)
            }
            "volumes" if n > 0 => {
                let mut with = vec![lines[i].clone()];
                for l in &lines[i + 1..end] {
                    with.push(rewrite_bind(l));
                }
                replace(&mut lines, with)
            }
            _ => i + 1,
        };
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn entrypoint_list() -> String {
    format!("[\"sh\", \"-c\", \"{SLEEP}\", \"--\"]")
}

/// A line of a `ports:` block with its host port made `${MCP_P<n>}`.
fn rewrite_port(l: &str, ports: &mut usize) -> String {
    let (n, t) = split_indent(l);
    if let Some((k, v)) = key_line(t) {
        if k == "published" {
            *ports += 1;
            return l.replace(v, &format!("\"${{MCP_P{}}}\"", *ports));
        }
        return l.to_string();
    }
    let Some(item) = t.strip_prefix("- ") else {
        return l.to_string();
    };
    let item = item.split(" #").next().unwrap().trim();
    let (q, bare) = match item.chars().next() {
        Some(c @ ('"' | '\'')) => (c.to_string(), item.trim_matches(c)),
        _ => (String::new(), item),
    };
    let mut parts = port_parts(bare);
    if parts.len() < 2 {
        return l.to_string();
    }
    let host = parts.len() - 2;
    *ports += 1;
    parts[host] = format!("${{MCP_P{}}}", *ports);
    format!("{}- {q}{}{q}", " ".repeat(n), parts.join(":"))
}

/// A line of a service's `volumes:` block with an absolute host source moved under
/// the project directory (`./host/…`).
fn rewrite_bind(l: &str) -> String {
    let (n, t) = split_indent(l);
    if let Some((k, v)) = key_line(t) {
        if k == "source" && v.starts_with('/') {
            return l.replace(v, &format!("./host{v}"));
        }
        return l.to_string();
    }
    let Some(item) = t.strip_prefix("- ") else {
        return l.to_string();
    };
    let (q, bare) = match item.chars().next() {
        Some(c @ ('"' | '\'')) => (c.to_string(), &item[1..]),
        _ => (String::new(), item),
    };
    if bare.starts_with('/') && bare.contains(':') {
        format!("{}- {q}./host{bare}", " ".repeat(n))
    } else {
        l.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Running the tools.

/// Removes, when dropped, the networks a test's tools created (podman's network
/// configs are the machine's): every network of `podman` whose name starts with one of
/// `prefixes`.
struct Networks<'a> {
    podman: &'a PrivatePodman,
    prefixes: Vec<String>,
}

impl Drop for Networks<'_> {
    fn drop(&mut self) {
        let out = self
            .podman
            .podman(&["network", "ls", "--format", "{{.Name}}"]);
        for n in String::from_utf8_lossy(&out.stdout).lines() {
            if self.prefixes.iter().any(|p| n.starts_with(p.as_str())) {
                let _ = self.podman.podman(&["network", "rm", "-f", n]);
            }
        }
    }
}

/// Stops every container of a podman when dropped, before it is removed: a container
/// with a restart policy that `rm -f` kills may be restarted by podman meanwhile.
struct StopAll<'a>(&'a PrivatePodman);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        let _ = self.0.podman(&["stop", "-a", "-t", "0"]);
    }
}

/// The busybox image, with an `/etc/passwd` naming root (`user: root`).
fn image(podman: &PrivatePodman) {
    podman.import_busybox(IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    let group = dir.path().join("group");
    std::fs::write(&group, "root:x:0:\nnogroup:x:65534:\n").unwrap();
    podman.podman_ok(&["create", "--name", "mkimage", IMAGE]);
    podman.podman_ok(&["cp", passwd.to_str().unwrap(), "mkimage:/etc/passwd"]);
    podman.podman_ok(&["cp", group.to_str().unwrap(), "mkimage:/etc/group"]);
    podman.podman_ok(&["commit", "-q", "mkimage", IMAGE]);
    podman.podman_ok(&["rm", "mkimage"]);
}

/// The environment both tools run with: a PATH, HOME in the project directory, the
/// case's variables and each tool's host ports.
fn tool_env(dir: &Path, case: &Case, ports: &[u16]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        ("HOME".to_string(), dir.join("home").display().to_string()),
    ];
    for (k, v) in case.env {
        env.push((k.to_string(), v.to_string()));
    }
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("MCP_P{}", i + 1), p.to_string()));
    }
    env
}

fn podman_compose(
    podman: &PrivatePodman,
    dir: &Path,
    project: &str,
    env: &[(String, String)],
) -> Run {
    let out = Command::new("podman-compose")
        .arg(format!(
            "--podman-args=--root={} --runroot={}",
            podman.root_dir().display(),
            podman.runroot_dir().display()
        ))
        .args(["-p", project, "-f", "compose.yaml", "up", "-d"])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(podman.env())
        .output()
        .expect("run podman-compose");
    Run::from(out)
}

fn import(dir: &Path, project: &str, env: &[(String, String)]) -> Run {
    let out = Command::new(bin())
        .args([
            "import",
            "compose",
            "-f",
            "compose.yaml",
            "--project",
            project,
            "-o",
            "out",
        ])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run mcp-agent import compose");
    Run::from(out)
}

/// Every container of `podman` by the compose service it is (`label` names it).
fn containers(
    podman: &PrivatePodman,
    label: &str,
    value: &str,
    key: &str,
) -> BTreeMap<String, Value> {
    let ids = podman.podman_ok(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label={label}={value}"),
    ]);
    let mut out = BTreeMap::new();
    for id in ids.lines() {
        let v: Value =
            serde_json::from_str(&podman.podman_ok(&["container", "inspect", id])).unwrap();
        let c = v[0].clone();
        let name = c["Config"]["Labels"][key]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.insert(name, c);
    }
    out
}

/// The outcome of bringing one case up with both tools.
struct Up {
    pc: BTreeMap<String, Value>,
    agent: BTreeMap<String, Value>,
    /// The imported service file's components (their `[health]`).
    service: mcp_agent::model::Service,
    /// compose service → component name.
    components: BTreeMap<String, String>,
    pc_project: String,
    agent_project: String,
    agent_dir: PathBuf,
    project_dir: PathBuf,
    /// `MCP_P<n>` → (podman-compose's port, the agent's).
    ports: Vec<(u16, u16)>,
}

/// Brings `case` up with both tools and hands the two sets of containers to `check`. A
/// container can be caught between states (seen once: podman-compose's `db` without its
/// network alias, under load): on a failed check both sets are inspected again, up to
/// [`INSPECTIONS`] times a second apart, and the check fails only if it fails on each.
fn bring_up(case: &Case, tag: &str, check: impl Fn(&Up) -> Result<(), String>) {
    let pc_podman = PrivatePodman::start();
    let ag_podman = PrivatePodman::start();
    let pc_project = format!("pc{}{tag}", std::process::id());
    let agent_project = format!("ag{}{tag}", std::process::id());
    let _pc_nets = Networks {
        podman: &pc_podman,
        prefixes: vec![format!("{pc_project}_")],
    };
    let _ag_nets = Networks {
        podman: &ag_podman,
        prefixes: vec![format!("{agent_project}_"), format!("mcp-{agent_project}")],
    };
    let _pc_stop = StopAll(&pc_podman);
    let _ag_stop = StopAll(&ag_podman);
    for p in [&pc_podman, &ag_podman] {
        image(p);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    std::fs::create_dir_all(dir.join("home")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(case.file)).unwrap();
    let mut nports = 0;
    let copy = rewrite(&text, &mut nports);
    std::fs::write(dir.join("compose.yaml"), &copy).unwrap();
    for (p, t) in case.siblings {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    }
    // Host ports, all distinct: both tools publish on this machine.
    let mut taken = BTreeSet::new();
    let mut port = || loop {
        let p = free_port();
        if taken.insert(p) {
            return p;
        }
    };
    let pc_ports: Vec<u16> = (0..nports).map(|_| port()).collect();
    let ag_ports: Vec<u16> = (0..nports).map(|_| port()).collect();

    let pc_env = tool_env(&dir, case, &pc_ports);
    let ag_env = tool_env(&dir, case, &ag_ports);
    let r = import(&dir, &agent_project, &ag_env);
    assert_eq!(r.code, 0, "{}: import:\n{r}\n{copy}", case.file);
    let file = dir.join(format!("out/{agent_project}.toml"));
    let agent = Agent::new(&ag_podman, "[reconcile]\ninterval = \"1h\"\n");
    agent.ok(&["apply", file.to_str().unwrap()]);
    // Both tools at once: podman-compose sleeps a second after each container.
    let pc_run = std::thread::scope(|s| {
        let pc = s.spawn(|| podman_compose(&pc_podman, &dir, &pc_project, &pc_env));
        let r = agent.run(&["--once", "--timeout", "90s"]);
        (pc.join().unwrap(), r)
    });
    let (pc_run, once) = pc_run;
    println!("{}: --once: {}", case.file, agentkit::summary(&once));
    assert_eq!(
        pc_run.code, 0,
        "{}: podman-compose up -d:\n{pc_run}",
        case.file
    );
    let files = mcp_agent::spec::read_service_files(std::slice::from_ref(&file)).unwrap();
    let mut attempt = 1;
    loop {
        let service = files[0].service.clone();
        let mut pc = containers(
            &pc_podman,
            "io.podman.compose.project",
            &pc_project,
            "com.docker.compose.service",
        );
        let mut ag = containers(&ag_podman, "mcp.service", &agent_project, "mcp.component");
        // Podman's inspect does not show sysctls: the values inside each container.
        for c in &service.components {
            let compose = pc
                .keys()
                .find(|k| k.to_lowercase().replace(['_', '.'], "-") == c.name)
                .cloned();
            for (podman, v) in [
                (&pc_podman, compose.and_then(|k| pc.get_mut(&k))),
                (&ag_podman, ag.get_mut(&c.name)),
            ] {
                let Some(v) = v else { continue };
                let mut read = BTreeMap::new();
                for k in c.settings.sysctls.keys() {
                    let path = format!("/proc/sys/{}", k.replace('.', "/"));
                    let out = podman.podman(&["exec", s(&v["Id"]).as_str(), "cat", &path]);
                    read.insert(
                        k.clone(),
                        String::from_utf8_lossy(&out.stdout).trim().to_string(),
                    );
                }
                v["SysctlsRead"] = serde_json::json!(read);
            }
        }
        let components = service
            .components
            .iter()
            .map(|c| {
                let compose = pc
                    .keys()
                    .find(|k| k.to_lowercase().replace(['_', '.'], "-") == c.name)
                    .cloned()
                    .unwrap_or_else(|| c.name.clone());
                (compose, c.name.clone())
            })
            .collect();
        let up = Up {
            pc,
            agent: ag,
            service,
            components,
            pc_project: pc_project.clone(),
            agent_project: agent_project.clone(),
            agent_dir: agent.path().to_path_buf(),
            project_dir: dir.clone(),
            ports: pc_ports
                .iter()
                .copied()
                .zip(ag_ports.iter().copied())
                .collect(),
        };
        match check(&up) {
            Ok(()) => break,
            Err(e) if attempt < INSPECTIONS => {
                println!(
                    "{}: inspection {attempt} of {INSPECTIONS} failed, inspecting again:\n{e}",
                    case.file
                );
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(agent);
}

/// How many times [`bring_up`] inspects the two sets of containers before a check fails.
const INSPECTIONS: u32 = 3;

// ---------------------------------------------------------------------------------------
// The comparison.

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(s).collect(),
        Value::Null => Vec::new(),
        other => vec![s(other)],
    }
}

/// One container's fields, each as a comparable text.
fn fields(c: &Value, up: &Up, pc: bool) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    let cfg = &c["Config"];
    let host = &c["HostConfig"];
    f.insert("state", s(&c["State"]["Status"]));
    f.insert("cmd", format!("{:?}", strings(&cfg["Cmd"])));
    f.insert("entrypoint", s(&cfg["Entrypoint"]));
    let mut env: BTreeSet<String> = strings(&cfg["Env"]).into_iter().collect();
    env.retain(|e| !ENV_OF_PODMAN.iter().any(|p| e.starts_with(p)));
    f.insert("env", format!("{env:?}"));
    f.insert("working_dir", s(&cfg["WorkingDir"]));
    f.insert("user", s(&cfg["User"]));
    // Mounts: named volumes by name (each tool keeps them its own way), binds by path.
    let mut mounts = BTreeSet::new();
    for m in c["Mounts"].as_array().into_iter().flatten() {
        let src = s(&m["Source"]);
        let dst = s(&m["Destination"]);
        let mut opts: Vec<String> = strings(&m["Options"]);
        opts.retain(|o| o != "rbind" && o != "bind");
        opts.sort();
        let rw = m["RW"].as_bool().unwrap_or(true);
        let what = if m["Type"] == "volume" {
            let name = s(&m["Name"]);
            let name = name
                .strip_prefix(&format!("{}_", up.pc_project))
                .unwrap_or(&name)
                .to_string();
            format!("volume {name}")
        } else {
            let vols = up
                .agent_dir
                .join("state/volumes")
                .join(&up.agent_project)
                .display()
                .to_string();
            match src.strip_prefix(&format!("{vols}/")) {
                Some(name) if !pc => format!("volume {name}"),
                _ => format!(
                    "bind {}",
                    src.replace(&up.project_dir.display().to_string(), "PROJECT")
                ),
            }
        };
        mounts.insert(format!(
            "{what} -> {dst} {} {}",
            if rw { "rw" } else { "ro" },
            opts.join(",")
        ));
    }
    f.insert("mounts", format!("{mounts:?}"));
    f.insert("tmpfs", s(&host["Tmpfs"]));
    // Published ports, each host port as the variable it came from.
    let mut ports = BTreeSet::new();
    if let Some(m) = host["PortBindings"].as_object() {
        for (port, binds) in m {
            for b in binds.as_array().into_iter().flatten() {
                let hp: u16 = s(&b["HostPort"]).parse().unwrap_or(0);
                let var = up
                    .ports
                    .iter()
                    .position(|(a, g)| if pc { *a == hp } else { *g == hp })
                    .map(|i| format!("P{}", i + 1))
                    .unwrap_or_else(|| hp.to_string());
                ports.insert(format!("{}:{var}->{port}", s(&b["HostIp"])));
            }
        }
    }
    f.insert("ports", format!("{ports:?}"));
    // Networks by their compose names, with their aliases.
    let mut nets = BTreeMap::new();
    for (name, n) in c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let compose = if name == &format!("mcp-{}", up.agent_project) {
            "default".to_string()
        } else {
            name.strip_prefix(&format!("{}_", up.pc_project))
                .or_else(|| name.strip_prefix(&format!("{}_", up.agent_project)))
                .unwrap_or(name)
                .to_string()
        };
        // The names that resolve to it there: its aliases and its container name
        // (aardvark-dns answers both), but for the container names each tool makes
        // (README: the containers are named differently) and its short id.
        let mut names: BTreeSet<String> = strings(&n["Aliases"]).into_iter().collect();
        names.insert(s(&c["Name"]).trim_start_matches('/').to_string());
        let id = s(&c["Id"]);
        let svc = s(&c["Config"]["Labels"]["com.docker.compose.service"]);
        let comp = s(&c["Config"]["Labels"]["mcp.component"]);
        names.retain(|a| {
            !id.starts_with(a.as_str())
                && *a != format!("{}_{svc}_1", up.pc_project)
                && *a != format!("{}-{comp}", up.agent_project)
        });
        nets.insert(compose, names);
    }
    f.insert("networks", format!("{nets:?}"));
    f.insert(
        "network_mode",
        s(&host["NetworkMode"])
            .replace(&up.agent_project, "P")
            .replace(&up.pc_project, "P"),
    );
    let sorted = |v: &Value| {
        let mut l = strings(v);
        l.sort();
        format!("{l:?}")
    };
    f.insert("cap_add", sorted(&host["CapAdd"]));
    f.insert("cap_drop", sorted(&host["CapDrop"]));
    for (k, key) in [
        ("memory", "Memory"),
        ("memory_reservation", "MemoryReservation"),
        ("cpus", "NanoCpus"),
        ("pids_limit", "PidsLimit"),
        ("shm_size", "ShmSize"),
    ] {
        f.insert(k, s(&host[key]));
    }
    f.insert(
        "ulimits",
        sorted(&Value::Array(
            host["Ulimits"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|u| {
                    Value::String(format!(
                        "{}={}:{}",
                        s(&u["Name"]),
                        s(&u["Soft"]),
                        s(&u["Hard"])
                    ))
                })
                .collect(),
        )),
    );
    f.insert("sysctls", s(&c["SysctlsRead"]));
    f.insert("devices", s(&host["Devices"]));
    let mut labels = BTreeMap::new();
    for (k, v) in cfg["Labels"].as_object().into_iter().flatten() {
        if !(k.starts_with("io.podman.compose.")
            || k.starts_with("com.docker.compose.")
            || k.starts_with("mcp."))
        {
            labels.insert(k.clone(), s(v));
        }
    }
    f.insert("labels", format!("{labels:?}"));
    f.insert(
        "restart",
        format!(
            "{} {}",
            // No policy given (podman-compose without restart:) is podman's "no".
            match s(&host["RestartPolicy"]["Name"]).as_str() {
                "" => "no".to_string(),
                n => n.to_string(),
            },
            s(&host["RestartPolicy"]["MaximumRetryCount"])
        ),
    );
    f.insert("stop_signal", s(&cfg["StopSignal"]));
    f.insert("stop_timeout", s(&cfg["StopTimeout"]));
    f.insert("read_only", s(&host["ReadonlyRootfs"]));
    f.insert("security_opt", sorted(&host["SecurityOpt"]));
    f.insert("privileged", s(&host["Privileged"]));
    f.insert("tty", s(&cfg["Tty"]));
    f.insert("stdin", s(&cfg["OpenStdin"]));
    f.insert("init", s(&host["Init"]));
    f.insert("hostname", {
        let h = s(&cfg["Hostname"]);
        if id_prefix(&s(&c["Id"]), &h) {
            "(its id)".into()
        } else {
            h
        }
    });
    f.insert("dns", sorted(&host["Dns"]));
    f.insert("extra_hosts", sorted(&host["ExtraHosts"]));
    f.insert("group_add", sorted(&host["GroupAdd"]));
    f.insert("log_driver", s(&host["LogConfig"]["Type"]));
    // Exposed ports: those podman lists, published or not.
    f.insert("exposed_ports", {
        let mut p: Vec<&String> = c["NetworkSettings"]["Ports"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        p.sort();
        format!("{p:?}")
    });
    f
}

fn id_prefix(id: &str, h: &str) -> bool {
    !h.is_empty() && id.starts_with(h)
}

/// Environment entries podman sets in every container.
const ENV_OF_PODMAN: &[&str] = &["container=podman", "HOSTNAME=", "HOME=", "TERM=", "PATH="];

/// podman-compose's health check (from podman's inspect) and the agent's (from the
/// service file: the agent runs it itself), as the command line run, the interval,
/// timeout, start period and retries.
fn health_pc(c: &Value) -> String {
    let h = &c["Config"]["Healthcheck"];
    if h.is_null() {
        return "none".into();
    }
    let test = strings(&h["Test"]);
    let line = match test.first().map(String::as_str) {
        // podman-compose hands podman every check as `/bin/sh -c LINE`.
        Some("CMD-SHELL") => test[1]
            .strip_prefix("/bin/sh -c ")
            .unwrap_or(&test[1])
            .to_string(),
        Some("CMD") => test[1..].join(" "),
        _ => format!("{test:?}"),
    };
    let d = |k: &str| {
        let ns = h[k].as_u64().unwrap_or(0);
        format!("{}ms", ns / 1_000_000)
    };
    format!(
        "{line} every {} timeout {} start {} retries {}",
        d("Interval"),
        d("Timeout"),
        d("StartPeriod"),
        s(&h["Retries"])
    )
}

fn health_agent(c: &mcp_agent::model::Component) -> String {
    let Some(h) = &c.settings.health else {
        return "none".into();
    };
    let line = match &h.probe {
        mcp_agent::model::Probe::Cmd(argv) => argv.join(" "),
        mcp_agent::model::Probe::Shell(l) => l.clone(),
        other => format!("{other:?}"),
    };
    format!(
        "{line} every {}ms timeout {}ms start {}ms retries {}",
        h.interval.0, h.timeout.0, h.start_period.0, h.retries
    )
}

/// Compares the two sets of containers of one case: each difference as
/// `service.field: podman-compose VALUE | agent VALUE`.
fn differences(up: &Up) -> Vec<String> {
    let mut out = Vec::new();
    for (svc, comp) in &up.components {
        let Some(p) = up.pc.get(svc) else {
            out.push(format!("{svc}: no podman-compose container"));
            continue;
        };
        let Some(a) = up.agent.get(comp) else {
            out.push(format!("{svc}: no agent container"));
            continue;
        };
        let (fp, fa) = (fields(p, up, true), fields(a, up, false));
        for (k, vp) in &fp {
            let va = &fa[k];
            if vp != va {
                out.push(format!("{svc}.{k}: podman-compose {vp} | agent {va}"));
            }
        }
        let c = up
            .service
            .components
            .iter()
            .find(|c| &c.name == comp)
            .unwrap();
        let (hp, ha) = (health_pc(p), health_agent(c));
        if hp != ha {
            out.push(format!("{svc}.health: podman-compose {hp} | agent {ha}"));
        }
    }
    for svc in up.pc.keys() {
        if !up.components.contains_key(svc) {
            out.push(format!("{svc}: not imported"));
        }
    }
    out
}

/// The README's "Differences from podman-compose", each by its name there (`**name**`),
/// with the fields it explains.
const KNOWN: &[(&str, &[&str])] = &[
    ("expose", &["exposed_ports"]),
    ("pids_limit", &["pids_limit"]),
    ("read_only", &["read_only", "tmpfs"]),
];

const README: &str = include_str!("../README.md");

fn run_case(case: &Case, tag: &str) {
    let t = std::time::Instant::now();
    let section = README
        .split("#### Differences from podman-compose")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("README: the section \"Differences from podman-compose\"");
    for (name, _) in case.known {
        assert!(
            section.contains(&format!("**{name}**")),
            "README's differences from podman-compose do not name **{name}**"
        );
    }
    bring_up(case, tag, |up| {
        let diffs = differences(up);
        for d in &diffs {
            println!("{}: {d}", case.file);
        }
        // Each difference is a known one, each known one is found.
        let mut unexplained = Vec::new();
        let mut found: BTreeSet<String> = BTreeSet::new();
        for d in &diffs {
            let (at, _) = d.split_once(": ").unwrap_or((d, ""));
            let (svc, field) = at.split_once('.').unwrap_or((at, ""));
            let known = case.known.iter().find(|(name, svcs)| {
                svcs.contains(&svc)
                    && KNOWN
                        .iter()
                        .any(|(n, fields)| n == name && fields.contains(&field))
            });
            match known {
                Some((name, _)) => {
                    found.insert(format!("{name} {svc}"));
                }
                None => unexplained.push(d.clone()),
            }
        }
        let expected: BTreeSet<String> = case
            .known
            .iter()
            .flat_map(|(name, svcs)| svcs.iter().map(move |s| format!("{name} {s}")))
            .collect();
        if !unexplained.is_empty() {
            return Err(format!(
                "{}: differences the README does not list:\n{}",
                case.file,
                unexplained.join("\n")
            ));
        }
        if found != expected {
            return Err(format!(
                "{}: the differences found are not the ones listed: found {found:?}, listed {expected:?}",
                case.file
            ));
        }
        Ok(())
    });
    println!("{}: {:?}", case.file, t.elapsed());
}
// ---------------------------------------------------------------------------------------

#[test]
fn the_copy_keeps_each_form_and_moves_what_is_the_machines() {
    let text = r#"x-common: &common
  restart: always
services:
  web:
    <<: *common
    image: "nginx:1.27"
    command: nginx -g 'daemon off;'
    ports:
      - "127.0.0.1:${HTTP_PORT:-80}:80"
      - 443:443/udp # https
      - "9000"
      - target: 81
        published: 8081
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - "/etc/timezone:/etc/timezone"
      - ./data:/data
      - type: bind
        source: /srv/x
        target: /x
    healthcheck:
      test: curl -f http://localhost
  cron:
    entrypoint: /cron.sh
    image: app
    healthcheck:
      test:
        - CMD-SHELL
        - pg_isready
  off:
    image: app
    healthcheck:
      test: ["NONE"]
volumes:
  data:
"#;
    let mut n = 0;
    let got = rewrite(text, &mut n);
    let e = format!("entrypoint: [\"sh\", \"-c\", \"{SLEEP}\", \"--\"]");
    let want = format!(
        r#"x-common: &common
  restart: always
services:
  web:
    <<: *common
    image: {IMAGE}
    {e}
    command: nginx -g 'daemon off;'
    ports:
      - "127.0.0.1:${{MCP_P1}}:80"
      - ${{MCP_P2}}:443/udp
      - "9000"
      - target: 81
        published: "${{MCP_P3}}"
    volumes:
      - ./host/var/run/docker.sock:/var/run/docker.sock:ro
      - "./host/etc/timezone:/etc/timezone"
      - ./data:/data
      - type: bind
        source: ./host/srv/x
        target: /x
    healthcheck:
      test: "true"
  cron:
    entrypoint: sh -c "{SLEEP}" --
    image: {IMAGE}
    healthcheck:
      test: ["CMD-SHELL", "true"]
  off:
    image: {IMAGE}
    {e}
    healthcheck:
      test: ["NONE"]
volumes:
  data:
"#
    );
    assert_eq!(got, want);
    assert_eq!(n, 3);
}

#[test]
fn gitea_postgres() {
    run_case(
        &Case {
            file: "awesome-compose-gitea-postgres.yaml",
            env: &[],
            known: &[("expose", &["db"])],
            siblings: &[],
        },
        "a",
    );
}

#[test]
fn miniflux_basic() {
    run_case(
        &Case {
            file: "miniflux-basic.yaml",
            env: &[],
            known: &[],
            siblings: &[],
        },
        "b",
    );
}

#[test]
fn wireguard() {
    run_case(
        &Case {
            file: "awesome-compose-wireguard.yaml",
            env: &[
                ("TIMEZONE", "Europe/Paris"),
                ("VPN_SERVER_URL", "vpn.example.org"),
            ],
            known: &[],
            siblings: &[],
        },
        "c",
    );
}

#[test]
fn n8n_with_postgres() {
    run_case(
        &Case {
            file: "n8n-with-postgres.yaml",
            env: &[
                ("N8N_VERSION", "1.100.1"),
                ("POSTGRES_USER", "changeUser"),
                ("POSTGRES_PASSWORD", "changePassword"),
                ("POSTGRES_DB", "n8n"),
                ("POSTGRES_NON_ROOT_USER", "changeUser"),
                ("POSTGRES_NON_ROOT_PASSWORD", "changePassword"),
                ("RUNNERS_AUTH_TOKEN", "n8n-runners-token"),
            ],
            known: &[],
            siblings: &[("init-data.sh", "#!/bin/bash\nset -e\n")],
        },
        "d",
    );
}

#[test]
fn penpot() {
    run_case(
        &Case {
            file: "penpot.yaml",
            env: &[],
            known: &[("expose", &["penpot-mailcatch"])],
            siblings: &[],
        },
        "e",
    );
}

#[test]
fn nextcloud_redis_mariadb() {
    run_case(
        &Case {
            file: "awesome-compose-nextcloud-redis-mariadb.yaml",
            env: &[],
            known: &[("expose", &["db", "redis"])],
            siblings: &[],
        },
        "f",
    );
}

#[test]
fn prometheus_grafana() {
    run_case(
        &Case {
            file: "awesome-compose-prometheus-grafana.yaml",
            env: &[],
            known: &[],
            siblings: &[],
        },
        "j",
    );
}

#[test]
fn mattermost() {
    run_case(
        &Case {
            file: "mattermost.yaml",
            env: &[
                ("MATTERMOST_CONTAINER_READONLY", "false"),
                ("POSTGRES_IMAGE_TAG", "13-alpine"),
                ("POSTGRES_DATA_PATH", "./volumes/db/var/lib/postgresql/data"),
                ("MATTERMOST_IMAGE", "mattermost-enterprise-edition"),
                ("MATTERMOST_IMAGE_TAG", "release-10.5"),
                ("MATTERMOST_CONFIG_PATH", "./volumes/app/mattermost/config"),
                ("MATTERMOST_DATA_PATH", "./volumes/app/mattermost/data"),
                ("MATTERMOST_LOGS_PATH", "./volumes/app/mattermost/logs"),
                (
                    "MATTERMOST_PLUGINS_PATH",
                    "./volumes/app/mattermost/plugins",
                ),
                (
                    "MATTERMOST_CLIENT_PLUGINS_PATH",
                    "./volumes/app/mattermost/client/plugins",
                ),
                (
                    "MATTERMOST_BLEVE_INDEXES_PATH",
                    "./volumes/app/mattermost/bleve-indexes",
                ),
                ("RESTART_POLICY", "unless-stopped"),
                ("TZ", "UTC"),
                ("POSTGRES_USER", "mmuser"),
                ("POSTGRES_PASSWORD", "mmuser_password"),
                ("POSTGRES_DB", "mattermost"),
                ("MM_SQLSETTINGS_DRIVERNAME", "postgres"),
                ("MM_SERVICESETTINGS_SITEURL", "https://mm.example.com"),
            ],
            known: &[
                ("pids_limit", &["postgres", "mattermost"]),
                ("read_only", &["mattermost"]),
            ],
            siblings: &[],
        },
        "g",
    );
}

#[test]
fn traefik_basic_example() {
    run_case(
        &Case {
            file: "traefik-basic-example.yaml",
            env: &[],
            known: &[],
            siblings: &[],
        },
        "k",
    );
}

#[test]
fn nextcloud_postgres_apache() {
    run_case(
        &Case {
            file: "nextcloud-insecure-postgres-apache.yaml",
            env: &[],
            known: &[],
            siblings: &[(
                "db.env",
                "POSTGRES_PASSWORD=nextcloud-db\nPOSTGRES_DB=nextcloud\nPOSTGRES_USER=nextcloud\n",
            )],
        },
        "h",
    );
}

#[test]
fn authentik() {
    run_case(
        &Case {
            file: "authentik.yaml",
            env: &[],
            known: &[],
            siblings: &[(".env", "PG_PASS=pg-secret-0123456789\nAUTHENTIK_SECRET_KEY=authentik-secret-key-0123456789abcdef\nAUTHENTIK_ERROR_REPORTING__ENABLED=true\n")],
        },
        "i",
    );
}
