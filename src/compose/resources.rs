//! A compose service's devices, ulimits, CPU and PID limits and logging: the keys of
//! `service` whose syntaxes take more than a line.

use super::service::Svc;
use super::yaml::{Node, Value};
use crate::model::{NanoCpus, Ulimit};

impl Svc<'_> {
    pub(super) fn devices(&mut self, v: &Node, k: &str) {
        self.from("devices", v, k);
        for d in v.seq().unwrap_or(&[]) {
            let dev = match &d.value {
                Value::Scalar { text, .. } => text.clone(),
                Value::Map(_) => {
                    let field = |f: &str| d.get(f).and_then(Node::text).map(str::to_string);
                    let Some(source) = field("source") else {
                        self.invalid(d, k, "a device needs source:");
                        continue;
                    };
                    let target = field("target").unwrap_or_else(|| source.clone());
                    match field("permissions") {
                        Some(p) => format!("{source}:{target}:{p}"),
                        None => format!("{source}:{target}"),
                    }
                }
                _ => {
                    self.invalid(d, k, "a device is HOST[:CONTAINER[:PERMISSIONS]] or { source, target, permissions }");
                    continue;
                }
            };
            self.c.settings.devices.push(dev);
        }
        if v.seq().is_none() && !v.is_null() {
            self.invalid(v, k, "must be a list");
        }
    }

    pub(super) fn ulimits(&mut self, v: &Node, k: &str) {
        self.from("ulimits", v, k);
        let key = self.key(k);
        for (name, l) in self.p.findings.entries(v, &key).to_vec() {
            let lk = format!("{k}.{}", name.name);
            let u = match (&l.value, l.get("soft"), l.get("hard")) {
                (Value::Scalar { .. }, _, _) => l.int().map(|n| Ulimit { soft: n, hard: n }),
                (Value::Map(_), Some(s), Some(h)) => match (s.int(), h.int()) {
                    (Some(soft), Some(hard)) => Some(Ulimit { soft, hard }),
                    _ => None,
                },
                _ => None,
            };
            match u {
                Some(u) => {
                    self.c.settings.ulimits.insert(name.name.clone(), u);
                }
                None => self.invalid(
                    &l,
                    &lk,
                    "a limit is an integer or { soft: INTEGER, hard: INTEGER }",
                ),
            }
        }
    }

    pub fn cpus(&mut self, v: &Node, k: &str) {
        match v.float() {
            Some(0.0) => {}
            Some(c) => match NanoCpus::from_cpus(c) {
                Ok(n) => {
                    self.from("cpus", v, k);
                    self.s().cpus = Some(n);
                }
                Err(e) => self.invalid(v, k, e),
            },
            None => self.invalid(v, k, "must be a number of CPUs such as 0.5"),
        }
    }

    pub fn pids(&mut self, v: &Node, k: &str) {
        let key = self.key(k);
        match self.p.findings.int(v, &key) {
            Some(n) if n > 0 => {
                self.from("pids_limit", v, k);
                self.s().pids_limit = Some(n);
            }
            Some(0) => {}
            Some(n) => self.unsupported(v, k, format!("{n} (no limit): the agent takes a limit of 1 or more, or none for podman's default")),
            None => {}
        }
    }

    pub(super) fn logging(&mut self, v: &Node, k: &str) {
        let driver = v.get("driver").and_then(Node::text).map(str::to_string);
        let options = v.get("options");
        for (key, val) in v.map().unwrap_or(&[]) {
            if !matches!(key.name.as_str(), "driver" | "options") {
                self.invalid(
                    val,
                    &format!("{k}.{}", key.name),
                    "unknown key (not in the compose specification)",
                );
            }
        }
        let driver = match driver.as_deref() {
            // Docker's default, which an options block without a driver is for.
            None if options.is_some() => Some("json-file".to_string()),
            None => None,
            Some("json-file" | "journald" | "none" | "k8s-file" | "passthrough") => driver,
            Some(d) => {
                let why = format!("log driver {d:?}: podman has json-file (k8s-file), journald, none and passthrough");
                return self.unsupported(v, &format!("{k}.driver"), why);
            }
        };
        if let Some(d) = driver {
            if let Some(n) = v.get("driver") {
                self.from("log_driver", n, &format!("{k}.driver"));
            }
            self.s().log_driver = Some(d);
        }
        if let Some(o) = options {
            self.from("log_opts", o, &format!("{k}.options"));
            let ok = format!("{k}.options");
            for (name, value) in self.key_values(o, &ok) {
                if !matches!(name.as_str(), "max-size" | "path") {
                    let at = o.get(&name).unwrap_or(o).clone();
                    self.unsupported(&at, &format!("{ok}.{name}"), "podman 4.3's API applies only the log options max-size and path (it ignores the others)");
                    continue;
                }
                self.c
                    .settings
                    .log_opts
                    .insert(name, value.unwrap_or_default());
            }
        }
    }
}
