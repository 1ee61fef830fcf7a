//! The process, security, resource and metadata keys of a component (issue 13 §4–6):
//! each checked at its position, with the reason, and gathered into [`Settings`].

use std::collections::BTreeMap;

use toml::Spanned;

use super::parse::Checker;
use super::raw::{RawComponent, RawLimit, RawUlimit, Word};
use super::MAX_ENTRIES;
use crate::model::{parse_bytes, parse_seconds, Bytes, NanoCpus, Settings, Ulimit};

/// Linux capabilities (`capabilities(7)`, up to Linux 6.x), without `CAP_`.
pub(super) const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Signal names podman's `ParseSignal` knows, without `SIG`.
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// `setrlimit(2)` resources by podman's names.
const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Log drivers of podman 4.3 (`json-file` is its name for `k8s-file`).
const LOG_DRIVERS: &[&str] = &["k8s-file", "json-file", "journald", "none", "passthrough"];

/// The most PIDs Linux has (`PID_MAX_LIMIT`).
const MAX_PIDS: i64 = 4 << 20;

/// Podman refuses a memory limit under 6 MiB.
const MIN_MEMORY: i64 = 6 << 20;

pub(super) fn is_capability(s: &str) -> bool {
    let up = s.to_ascii_uppercase();
    up == "ALL" || CAPABILITIES.contains(&up.strip_prefix("CAP_").unwrap_or(&up))
}

pub(super) fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    SIGNALS.contains(&up.strip_prefix("SIG").unwrap_or(&up))
}

/// An absolute path without `.` or `..` components.
fn is_clean_absolute(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "." || c == "..")
}

pub(super) fn check_device(d: &str) -> Result<(), String> {
    let parts: Vec<&str> = d.split(':').collect();
    if parts.len() > 3 {
        return Err(format!(
            "device {d:?} must be HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]"
        ));
    }
    if !is_clean_absolute(parts[0]) {
        return Err(format!(
            "device host path {:?} must be absolute, without '.' or '..' components",
            parts[0]
        ));
    }
    if let Some(inside) = parts.get(1) {
        if !is_clean_absolute(inside) {
            return Err(format!(
                "device container path {inside:?} must be absolute, without '.' or '..' components"
            ));
        }
    }
    if let Some(perms) = parts.get(2) {
        let mut seen = String::new();
        for ch in perms.chars() {
            if !"rwm".contains(ch) || seen.contains(ch) {
                return Err(format!(
                    "device permissions {perms:?} must be letters of \"rwm\", each once"
                ));
            }
            seen.push(ch);
        }
        if perms.is_empty() {
            return Err(format!(
                "device permissions of {d:?} are empty: leave them out for \"rwm\""
            ));
        }
    }
    Ok(())
}

/// `NAME:IP` (compose's `NAME=IP` too is refused: one form, podman's).
pub(super) fn check_extra_host(h: &str) -> Result<(), String> {
    let bad = || format!("extra_hosts {h:?} must be HOSTNAME:IP, such as \"db.internal:10.0.0.5\"");
    let (name, ip) = h.split_once(':').ok_or_else(bad)?;
    if !crate::model::is_hostname(name)
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        || name.is_empty()
    {
        return Err(bad());
    }
    ip.parse::<std::net::IpAddr>().map_err(|_| bad())?;
    Ok(())
}

/// `PATH[:OPTIONS]`: an absolute path, options of podman's `--tmpfs`.
pub(super) fn check_tmpfs(t: &str) -> Result<(), String> {
    let (path, opts) = t.split_once(':').unwrap_or((t, ""));
    if !is_clean_absolute(path) || path == "/" {
        return Err(format!(
            "tmpfs path {path:?} must be an absolute path other than /, without '.' or '..' components"
        ));
    }
    if t.contains(':') && opts.is_empty() {
        return Err(format!("tmpfs {t:?} has an empty option list"));
    }
    for o in opts.split(',').filter(|_| !opts.is_empty()) {
        let ok = match o.split_once('=') {
            Some(("size", v)) => parse_bytes(v).is_ok(),
            Some(("mode", v)) => {
                !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
            }
            Some(("uid" | "gid" | "nr_inodes", v)) => v.parse::<u32>().is_ok(),
            Some(_) => false,
            None => matches!(
                o,
                "ro" | "rw"
                    | "exec"
                    | "noexec"
                    | "suid"
                    | "nosuid"
                    | "dev"
                    | "nodev"
                    | "notmpcopyup"
                    | "tmpcopyup"
            ),
        };
        if !ok {
            return Err(format!(
                "tmpfs option {o:?} is not one of size=SIZE, mode=OCTAL, uid=N, gid=N, nr_inodes=N, ro, rw, exec, noexec, suid, nosuid, dev, nodev, tmpcopyup, notmpcopyup"
            ));
        }
    }
    Ok(())
}

pub(super) fn check_security_opt(o: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "security_opt {o:?} must be one of no-new-privileges[:true|false], label=…, apparmor=…, seccomp=unconfined|/PATH, mask=/PATH[:/PATH…], unmask=ALL|/PATH[:/PATH…], proc-opts=…"
        )
    };
    if let Some(rest) = o.strip_prefix("no-new-privileges") {
        return match rest {
            "" | ":true" | ":false" | "=true" | "=false" => Ok(()),
            _ => Err(bad()),
        };
    }
    let Some((key, value)) = o.split_once('=') else {
        return Err(bad());
    };
    if value.is_empty() {
        return Err(bad());
    }
    match key {
        "label" | "apparmor" | "proc-opts" => Ok(()),
        "seccomp" if value == "unconfined" || is_clean_absolute(value) => Ok(()),
        "mask" if value.split(':').all(is_clean_absolute) => Ok(()),
        "unmask" if value == "ALL" || value.split(':').all(is_clean_absolute) => Ok(()),
        _ => Err(bad()),
    }
}

pub(super) fn check_sysctl(key: &str, network: &str) -> Result<(), String> {
    let namespaced = key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem";
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || key.split('.').any(str::is_empty)
    {
        return Err(format!(
            "sysctl {key:?} must be a dotted name such as \"net.core.somaxconn\""
        ));
    }
    if !namespaced {
        return Err(format!(
            "sysctl {key:?} is not namespaced: only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set per container"
        ));
    }
    if key.starts_with("net.") && network == "host" {
        return Err(format!(
            "sysctl {key:?} needs the container's own network namespace, and network = \"host\" shares the host's"
        ));
    }
    Ok(())
}

pub(super) fn check_userns(u: &str) -> Result<(), String> {
    let ok = matches!(u, "host" | "private" | "auto" | "keep-id" | "nomap")
        || u.strip_prefix("auto:").is_some_and(|o| !o.is_empty())
        || u.strip_prefix("keep-id:").is_some_and(|o| !o.is_empty())
        || u.strip_prefix("ns:").is_some_and(is_clean_absolute)
        || u.strip_prefix("container:").is_some_and(|c| !c.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "userns {u:?} must be \"host\", \"private\", \"auto[:OPTIONS]\", \"keep-id[:OPTIONS]\", \"nomap\", \"ns:/PATH\" or \"container:NAME\""
        ))
    }
}

fn is_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 64
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a list of strings: its length, each string, and each with `check`.
fn strings(
    c: &mut Checker<'_>,
    v: &Spanned<Vec<Spanned<String>>>,
    what: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    c.count(v, v.get_ref().len(), MAX_ENTRIES, what);
    for s in v.get_ref() {
        if c.string(s, what) {
            if let Err(e) = check(s.get_ref()) {
                c.bad(s.span(), e);
            }
        }
    }
    v.get_ref().iter().map(|s| s.get_ref().clone()).collect()
}

/// A component's `networks`: each entry a name, or a table `{ name, aliases,
/// ipv4_address, ipv6_address }`; each checked on its own here (the addresses against
/// the service's `[networks.NAME]` in `networks::check_service`).
fn network_entries(
    c: &mut Checker<'_>,
    v: &Spanned<Vec<Spanned<toml::Value>>>,
    at: &mut Vec<crate::error::Location>,
) -> Vec<crate::model::NetworkRef> {
    use crate::model::NetworkRef;
    c.count(v, v.get_ref().len(), MAX_ENTRIES, "networks");
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for e in v.get_ref() {
        let entry = match e.get_ref() {
            toml::Value::String(n) => NetworkRef::named(n.clone()),
            toml::Value::Table(_) => {
                match e
                    .get_ref()
                    .clone()
                    .try_into::<super::raw::RawNetworkEntry>()
                {
                    Ok(t) => NetworkRef {
                        name: t.name,
                        aliases: t.aliases,
                        ipv4_address: t.ipv4_address,
                        ipv6_address: t.ipv6_address,
                    },
                    Err(err) => {
                        c.bad(
                            e.span(),
                            format!(
                                "a networks entry as a table is {{ name = \"NETWORK\", aliases = [...], ipv4_address = \"...\", ipv6_address = \"...\" }}: {}",
                                err.message().trim_end()
                            ),
                        );
                        continue;
                    }
                }
            }
            _ => {
                c.bad(
                    e.span(),
                    "a networks entry is a network's name or a table { name = \"NETWORK\", ... }",
                );
                continue;
            }
        };
        let n = entry.name.as_str();
        let named = Spanned::new(e.span(), n.to_string());
        if c.string(&named, "networks")
            && !(n == "default"
                || (super::rules::is_network(n)
                    && !matches!(n, "bridge" | "host" | "none" | "podman")))
        {
            c.bad(
                e.span(),
                format!(
                    "network {n:?} must be \"default\" (the service's own) or a network name of [A-Za-z0-9._-] (\"bridge\", \"host\" and \"none\" take the single form network = ...)"
                ),
            );
        }
        let line = c.loc(e.span()).line;
        if let Some(first) = seen.insert(n.to_string(), line) {
            c.bad(
                e.span(),
                format!("network {n:?} is listed twice (first at line {first})"),
            );
        }
        c.count(e, entry.aliases.len(), MAX_ENTRIES, "aliases");
        for a in &entry.aliases {
            if !crate::model::is_hostname(a) {
                c.bad(
                    e.span(),
                    format!("alias {a:?} of network {n:?} must be a lowercase DNS name (RFC 1123)"),
                );
            }
        }
        if let Some(a) = &entry.ipv4_address {
            if a.parse::<std::net::Ipv4Addr>().is_err() {
                c.bad(
                    e.span(),
                    format!("ipv4_address {a:?} on network {n:?} is not an IPv4 address"),
                );
            }
        }
        if let Some(a) = &entry.ipv6_address {
            if a.parse::<std::net::Ipv6Addr>().is_err() {
                c.bad(
                    e.span(),
                    format!("ipv6_address {a:?} on network {n:?} is not an IPv6 address"),
                );
            }
        }
        at.push(c.loc(e.span()));
        out.push(entry);
    }
    out
}

fn word_string(c: &mut Checker<'_>, w: &Spanned<Word>, what: &str) -> Option<String> {
    let s = Spanned::new(w.span(), w.get_ref().text());
    c.string(&s, what).then(|| s.into_inner())
}

fn size(c: &mut Checker<'_>, w: &Option<Spanned<Word>>, what: &str) -> Option<Bytes> {
    let w = w.as_ref()?;
    let text = word_string(c, w, what)?;
    match parse_bytes(&text) {
        Ok(b) => Some(b),
        Err(e) => {
            c.bad(w.span(), format!("{what}: {e}"));
            None
        }
    }
}

/// One limit of `ulimits`: a number, or -1 or "unlimited" for none ([`Ulimit::UNLIMITED`]).
fn limit(l: &RawLimit) -> Result<i64, String> {
    match l {
        RawLimit::Int(n) if *n >= 0 || *n == Ulimit::UNLIMITED => Ok(*n),
        RawLimit::Int(n) => Err(format!(
            "{n} is negative: a limit is 0 or more, or -1 (or \"unlimited\") for none"
        )),
        RawLimit::Str(s) if s == "unlimited" => Ok(Ulimit::UNLIMITED),
        RawLimit::Str(s) => Err(format!(
            "{s:?} is not a limit: an integer, or -1 (or \"unlimited\") for none"
        )),
    }
}

/// The settings of `rc`, every problem recorded at its position; `network` is the
/// component's network (net.* sysctls need one of the container's own).
pub(super) fn parse_settings(
    c: &mut Checker<'_>,
    rc: &RawComponent,
    network: &str,
    cs: &mut super::ComponentSource,
) -> Settings {
    let mut out = Settings {
        pull: rc.pull,
        read_only: rc.read_only,
        init: rc.init,
        tty: rc.tty,
        stdin_open: rc.stdin_open,
        privileged: rc.privileged,
        ..Settings::default()
    };
    // The process.
    if let Some(ep) = &rc.entrypoint {
        if ep.get_ref().is_empty() {
            c.bad(
                ep.span(),
                "entrypoint is empty: name the program, or leave entrypoint out for the image's own",
            );
        }
        out.entrypoint = Some(strings(c, ep, "entrypoint", |_| Ok(())));
    }
    if let Some(w) = &rc.working_dir {
        if c.string(w, "working_dir") && !is_clean_absolute(w.get_ref()) {
            c.bad(
                w.span(),
                format!(
                    "working_dir {:?} must be an absolute path without '.' or '..' components",
                    w.get_ref()
                ),
            );
        }
        out.working_dir = Some(w.get_ref().clone());
    }
    if let Some(sig) = &rc.stop_signal {
        if let Some(s) = word_string(c, sig, "stop_signal") {
            if !is_signal(&s) {
                c.bad(
                    sig.span(),
                    format!(
                        "stop_signal {s:?} is not a signal: a name such as \"SIGTERM\" or \"TERM\", or a number 1-64"
                    ),
                );
            }
            out.stop_signal = Some(s);
        }
    }
    if let Some(t) = &rc.stop_timeout {
        match parse_seconds(t.get_ref()) {
            Ok(s) => out.stop_timeout = Some(s),
            Err(e) => c.bad(t.span(), format!("stop_timeout {e}")),
        }
    }
    // Security and resources.
    let cap = |what: &'static str| {
        move |s: &str| {
            if is_capability(s) {
                Ok(())
            } else {
                Err(format!(
                    "{what} {s:?} is not a Linux capability (such as \"NET_ADMIN\" or \"CAP_NET_ADMIN\", or \"ALL\")"
                ))
            }
        }
    };
    out.cap_add = strings(c, &rc.cap_add, "cap_add", cap("cap_add"));
    out.cap_drop = strings(c, &rc.cap_drop, "cap_drop", cap("cap_drop"));
    out.security_opt = strings(c, &rc.security_opt, "security_opt", check_security_opt);
    out.devices = strings(c, &rc.devices, "devices", check_device);
    c.count(
        &rc.sysctls,
        rc.sysctls.get_ref().len(),
        MAX_ENTRIES,
        "sysctls",
    );
    for (k, v) in rc.sysctls.get_ref() {
        if c.string(k, "sysctl") {
            if let Err(e) = check_sysctl(k.get_ref(), network) {
                c.bad(k.span(), e);
            }
        }
        if let Some(val) = word_string(c, v, "sysctl value") {
            if val.is_empty() {
                c.bad(
                    v.span(),
                    format!("sysctl {:?} has an empty value", k.get_ref()),
                );
            }
            out.sysctls.insert(k.get_ref().clone(), val);
        }
    }
    c.count(
        &rc.ulimits,
        rc.ulimits.get_ref().len(),
        MAX_ENTRIES,
        "ulimits",
    );
    for (k, v) in rc.ulimits.get_ref() {
        let name = k.get_ref();
        if !ULIMITS.contains(&name.as_str()) {
            c.bad(
                k.span(),
                format!("ulimit {name:?} is not one of {}", ULIMITS.join(", ")),
            );
        }
        let (soft, hard) = match v.get_ref() {
            RawUlimit::One(n) => (limit(n), limit(n)),
            RawUlimit::Two(p) => (limit(&p.soft), limit(&p.hard)),
        };
        let (soft, hard) = match (soft, hard) {
            (Ok(s), Ok(h)) => (s, h),
            (Err(e), _) | (_, Err(e)) => {
                c.bad(v.span(), format!("ulimit {name:?}: {e}"));
                continue;
            }
        };
        let u = Ulimit { soft, hard };
        if name == "nofile" && u.hard == Ulimit::UNLIMITED {
            c.bad(
                v.span(),
                "ulimit \"nofile\" cannot be unlimited: Linux caps open files at fs.nr_open, and the container would not start (\"setrlimit: operation not permitted\"): give a number",
            );
        } else if Ulimit::rank(u.soft) > Ulimit::rank(u.hard) {
            c.bad(
                v.span(),
                format!(
                    "ulimit {name:?}: soft limit {} is above hard limit {}",
                    Ulimit::show(u.soft),
                    Ulimit::show(u.hard)
                ),
            );
        }
        out.ulimits.insert(name.clone(), u);
    }
    out.shm_size = size(c, &rc.shm_size, "shm_size");
    out.memory = size(c, &rc.memory, "memory");
    out.memory_reservation = size(c, &rc.memory_reservation, "memory_reservation");
    if let (Some(m), Some(w)) = (out.memory, &rc.memory) {
        if m.0 < MIN_MEMORY {
            c.bad(
                w.span(),
                format!("memory {m} is less than 6m, the least podman accepts"),
            );
        }
    }
    if let (Some(m), Some(r), Some(w)) =
        (out.memory, out.memory_reservation, &rc.memory_reservation)
    {
        if r.0 > m.0 {
            c.bad(
                w.span(),
                format!("memory_reservation {r} is above memory {m}"),
            );
        }
    }
    if let Some(cpus) = &rc.cpus {
        match NanoCpus::from_cpus(*cpus.get_ref()) {
            Ok(n) => out.cpus = Some(n),
            Err(e) => c.bad(cpus.span(), e),
        }
    }
    if let Some(p) = &rc.pids_limit {
        let n = *p.get_ref();
        if !(1..=MAX_PIDS).contains(&n) {
            c.bad(
                p.span(),
                format!("pids_limit {n} must be 1-{MAX_PIDS} (leave it out for podman's default)"),
            );
        }
        out.pids_limit = Some(n);
    }
    if let Some(u) = &rc.userns {
        if c.string(u, "userns") {
            if let Err(e) = check_userns(u.get_ref()) {
                c.bad(u.span(), e);
            }
        }
        out.userns = Some(u.get_ref().clone());
    }
    c.count(
        &rc.group_add,
        rc.group_add.get_ref().len(),
        MAX_ENTRIES,
        "group_add",
    );
    for g in rc.group_add.get_ref() {
        let s = g.get_ref().text();
        if !is_group(&s) {
            c.bad(
                g.span(),
                format!("group_add {s:?} must be a group name or id of [A-Za-z0-9._-]"),
            );
        }
        out.group_add.push(s);
    }
    // Metadata.
    out.labels = labels(c, &rc.labels);
    if let Some(d) = &rc.log_driver {
        if !LOG_DRIVERS.contains(&d.get_ref().as_str()) {
            c.bad(
                d.span(),
                format!(
                    "log_driver {:?} is not one of {}",
                    d.get_ref(),
                    LOG_DRIVERS.join(", ")
                ),
            );
        }
        out.log_driver = Some(d.get_ref().clone());
    }
    out.log_opts = log_opts(c, rc);
    // Configuration from files of the host: paths checked here, contents read at each
    // pass (a file missing then is the component's `config-missing`, not an error here).
    out.env_file = strings(c, &rc.env_file, "env_file", |p| {
        if is_clean_absolute(p) {
            Ok(())
        } else {
            Err(format!(
                "env_file {p:?} must be an absolute path without '.' or '..' components"
            ))
        }
    });
    out.tmpfs = strings(c, &rc.tmpfs, "tmpfs", check_tmpfs);
    // Networks and names.
    out.networks = network_entries(c, &rc.networks, &mut cs.networks);
    if !rc.networks.get_ref().is_empty() && !network.is_empty() {
        c.bad(
            rc.network.span(),
            "network and networks are two forms of one key: use networks = [...] to join several",
        );
    }
    out.aliases = strings(c, &rc.aliases, "aliases", |a| {
        if crate::model::is_hostname(a) {
            Ok(())
        } else {
            Err(format!(
                "alias {a:?} must be a lowercase DNS name (RFC 1123)"
            ))
        }
    });
    if !rc.aliases.get_ref().is_empty() && matches!(network, "host" | "none" | "bridge") {
        c.bad(
            rc.aliases.span(),
            format!("aliases need a network with DNS, and network = {network:?} has none: join the service's network (networks = [\"default\"]) or a named one"),
        );
    }
    if let Some(h) = &rc.hostname {
        if c.string(h, "hostname") && !crate::model::is_hostname(h.get_ref()) {
            c.bad(
                h.span(),
                format!(
                    "hostname {:?} must be a lowercase DNS name (RFC 1123)",
                    h.get_ref()
                ),
            );
        }
        out.hostname = Some(h.get_ref().clone());
    }
    out.dns = strings(c, &rc.dns, "dns", |d| {
        d.parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("dns {d:?} must be an IP address of a name server"))
    });
    out.dns_search = strings(c, &rc.dns_search, "dns_search", |d| {
        if crate::model::is_hostname(d) {
            Ok(())
        } else {
            Err(format!(
                "dns_search {d:?} must be a lowercase DNS domain (RFC 1123)"
            ))
        }
    });
    out.extra_hosts = strings(c, &rc.extra_hosts, "extra_hosts", check_extra_host);
    if network == "host" {
        for (set, what) in [
            (!out.dns.is_empty(), "dns"),
            (!out.dns_search.is_empty(), "dns_search"),
            (!out.extra_hosts.is_empty(), "extra_hosts"),
            (out.hostname.is_some(), "hostname"),
        ] {
            if set {
                c.bad(rc.network.span(), format!("{what} needs the container's own network namespace, and network = \"host\" shares the host's"));
            }
        }
    }
    c.count(
        &rc.secrets,
        rc.secrets.get_ref().len(),
        MAX_ENTRIES,
        "secrets",
    );
    let mut targets: BTreeMap<String, usize> = BTreeMap::new();
    for s in rc.secrets.get_ref() {
        let s = s.get_ref();
        for (p, what) in [(&s.source, "source"), (&s.target, "target")] {
            if c.string(p, "secret path") && !is_clean_absolute(p.get_ref()) {
                c.bad(
                    p.span(),
                    format!(
                        "secret {what} {:?} must be an absolute path without '.' or '..' components",
                        p.get_ref()
                    ),
                );
            }
        }
        let line = c.loc(s.target.span()).line;
        if let Some(first) = targets.insert(s.target.get_ref().clone(), line) {
            c.bad(
                s.target.span(),
                format!(
                    "secret target {:?} is mounted twice (first at line {first})",
                    s.target.get_ref()
                ),
            );
        }
        // A secret that is there now must already be its owner's alone.
        if let Ok(meta) = std::fs::metadata(s.source.get_ref()) {
            use std::os::unix::fs::MetadataExt;
            if let Err(e) = super::input::check_secret_mode(meta.mode()) {
                c.bad(
                    s.source.span(),
                    format!("secret {}: {e}", s.source.get_ref()),
                );
            }
        }
        out.secrets.push(crate::model::Secret {
            source: s.source.get_ref().clone(),
            target: s.target.get_ref().clone(),
        });
    }
    out
}

fn labels(
    c: &mut Checker<'_>,
    v: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
) -> BTreeMap<String, String> {
    c.count(v, v.get_ref().len(), MAX_ENTRIES, "labels");
    let mut out = BTreeMap::new();
    for (k, val) in v.get_ref() {
        let key = k.get_ref();
        if c.string(k, "label key") {
            if key.is_empty() {
                c.bad(k.span(), "label key is empty");
            } else if key.to_ascii_lowercase().starts_with("mcp.") {
                c.bad(
                    k.span(),
                    format!(
                        "label {key:?} is reserved: the mcp. prefix is the agent's own (ownership, the spec hash)"
                    ),
                );
            }
        }
        c.string(val, "label value");
        out.insert(key.clone(), val.get_ref().clone());
    }
    out
}

fn log_opts(c: &mut Checker<'_>, rc: &RawComponent) -> BTreeMap<String, String> {
    let v = &rc.log_opts;
    c.count(v, v.get_ref().len(), MAX_ENTRIES, "log_opts");
    let driver = rc.log_driver.as_ref().map(|d| d.get_ref().as_str());
    if !v.get_ref().is_empty() && !matches!(driver, Some("k8s-file" | "json-file")) {
        c.bad(
            v.span(),
            "log_opts need log_driver = \"k8s-file\" or \"json-file\": podman applies them to file logs only",
        );
    }
    let mut out = BTreeMap::new();
    for (k, val) in v.get_ref() {
        let value = val.get_ref();
        if !c.string(val, "log option") {
            continue;
        }
        match k.get_ref().as_str() {
            "max-size" => {
                if let Err(e) = parse_bytes(value) {
                    c.bad(val.span(), format!("log option max-size: {e}"));
                }
            }
            "path" => {
                if !is_clean_absolute(value) {
                    c.bad(
                        val.span(),
                        format!("log option path {value:?} must be absolute, without '.' or '..' components"),
                    );
                }
            }
            "tag" => c.bad(
                k.span(),
                "log option \"tag\" is refused: podman 4.3 cannot start a file-logged container with a tag (\"write child: broken pipe\")",
            ),
            other => c.bad(
                k.span(),
                format!(
                    "log option {other:?} is not applied by podman 4.3's API (it ignores it); only max-size and path are"
                ),
            ),
        }
        out.insert(k.get_ref().clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_with_or_without_the_prefix_and_all() {
        for ok in [
            "NET_ADMIN",
            "CAP_NET_ADMIN",
            "net_admin",
            "ALL",
            "all",
            "CAP_BPF",
        ] {
            assert!(is_capability(ok), "{ok}");
        }
        for bad in ["", "CAP_", "NET_ADMINX", "CAP_ALL", "SUPERUSER"] {
            assert!(!is_capability(bad), "{bad}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        for ok in ["SIGTERM", "TERM", "term", "SIGUSR1", "15", "1", "64"] {
            assert!(is_signal(ok), "{ok}");
        }
        for bad in ["", "0", "65", "SIG", "SIGFOO", "-9", "TERM "] {
            assert!(!is_signal(bad), "{bad}");
        }
    }

    #[test]
    fn devices_security_opts_sysctls_and_userns() {
        for ok in [
            "/dev/fuse",
            "/dev/null:/dev/n",
            "/dev/null:/dev/n:rw",
            "/dev/a:/dev/b:rwm",
        ] {
            assert_eq!(check_device(ok), Ok(()), "{ok}");
        }
        for bad in [
            "dev/fuse",
            "/dev/../x",
            "/dev/a:b",
            "/dev/a:/b:rx",
            "/dev/a:/b:rr",
            "/a:/b:",
            "/a:/b:r:x",
        ] {
            assert!(check_device(bad).is_err(), "{bad}");
        }
        for ok in [
            "no-new-privileges",
            "no-new-privileges:true",
            "label=disable",
            "seccomp=unconfined",
            "seccomp=/etc/seccomp.json",
            "apparmor=unconfined",
            "mask=/proc/kcore:/sys/x",
            "unmask=ALL",
        ] {
            assert_eq!(check_security_opt(ok), Ok(()), "{ok}");
        }
        for bad in [
            "bogus=1",
            "seccomp=rel.json",
            "label=",
            "no-new-privileges:yes",
            "label",
        ] {
            assert!(check_security_opt(bad).is_err(), "{bad}");
        }
        assert_eq!(check_sysctl("net.core.somaxconn", "bridge"), Ok(()));
        assert_eq!(check_sysctl("kernel.shmmax", "host"), Ok(()));
        assert!(check_sysctl("net.core.somaxconn", "host")
            .unwrap_err()
            .contains("network namespace"));
        assert!(check_sysctl("vm.swappiness", "bridge")
            .unwrap_err()
            .contains("not namespaced"));
        assert!(check_sysctl("net..x", "bridge").is_err());
        for ok in [
            "host",
            "auto",
            "auto:size=65536",
            "keep-id",
            "ns:/proc/1/ns/user",
        ] {
            assert_eq!(check_userns(ok), Ok(()), "{ok}");
        }
        for bad in ["", "auto:", "ns:rel", "mine"] {
            assert!(check_userns(bad).is_err(), "{bad}");
        }
    }
}
