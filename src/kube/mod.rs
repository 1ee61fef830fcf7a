//! `mcp-agent export --format kube` (issue 18): a service as Kubernetes manifests that a
//! Kubernetes API server and `podman kube play` both take. README "Moving to Kubernetes"
//! has the mapping table; what a key maps to is written beside it here.
//!
//! One workload per component (a Deployment, or a Pod with `--pod`; a one-shot component
//! a Job, or a Pod that runs to completion with `--pod`), not one Pod per service: the
//! agent gives each component its own container, network namespace, restarts and
//! lifecycle, and its components reach each other by name over a network, which in
//! Kubernetes is a Service per component, not localhost inside one Pod (where two
//! components listening on one port could not both run).
//!
//! Whatever has no Kubernetes equivalent is named in [`Rendered::not_carried`] (the
//! command prints it on stderr) and as a comment in the YAML: never dropped silently.

pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::container::Host;
use crate::model::{
    self, Component, HealthCheck, Millis, OnFailure, Probe, PullPolicy, RestartPolicy, RouteMode,
    Service,
};

/// How the manifests are shaped (the command's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// `--pod`: a Pod per component instead of a Deployment (and a one-shot component a
    /// Pod that runs to completion instead of a Job).
    pub pod: bool,
    /// `--host-paths`: a volume of a host path as a `hostPath` volume (else not carried).
    pub host_paths: bool,
    /// `--config-maps`: env files' variables and secrets' contents in ConfigMaps instead
    /// of Secrets (podman 4.3 cannot read the Secrets of its own `kube play`).
    pub config_maps: bool,
}

/// One service as manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The YAML stream: documents separated by `---`, comments where something is left out.
    pub yaml: String,
    /// What was not carried, one line each, `SERVICE/COMPONENT: what: why`.
    pub not_carried: Vec<String>,
}

/// Reads a host file the component names (env files, secrets): its bytes, or why not.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> Result<Vec<u8>, String>;

/// The files as the agent reads them: regular files through its bounded reader.
pub fn read_host_file(path: &Path) -> Result<Vec<u8>, String> {
    crate::spec::input::read_limited(path, crate::files::MAX_FILE_BYTES).map_err(|e| e.to_string())
}

/// The agent's labels on every object: where it came from.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// A PVC's size request: the agent's named volumes have none, Kubernetes needs one.
pub const PVC_SIZE: &str = "1Gi";

struct Out {
    docs: Vec<String>,
    not_carried: Vec<String>,
}

impl Out {
    fn doc(&mut self, comments: &[String], v: &Value) {
        let mut s = String::new();
        for c in comments {
            s.push_str(&yaml::comment(c));
        }
        s.push_str(&yaml::to_yaml(v));
        self.docs.push(s);
    }
}

/// Collects what one component leaves out, for stderr and its document's comments.
struct Missing<'a> {
    who: &'a str,
    lines: Vec<String>,
}

impl Missing<'_> {
    fn add(&mut self, what: impl std::fmt::Display, why: &str) {
        self.lines.push(format!("{}: {what}: {why}", self.who));
    }
}

/// `service` as manifests; `node` is this agent's node (a label), `host` its config's
/// defaults (`[podman] pull`, `[networks] service_default`).
pub fn render(
    service: &Service,
    node: &str,
    host: &Host,
    opts: Options,
    read: ReadFile<'_>,
) -> Result<Rendered, String> {
    let mut out = Out {
        docs: Vec::new(),
        not_carried: Vec::new(),
    };
    let svc = service.name.as_str();
    let mut head = vec![format!(
        "mcp-agent export --format kube{}{}{}: service {svc:?} of node {node:?}",
        if opts.pod { " --pod" } else { "" },
        if opts.host_paths { " --host-paths" } else { "" },
        if opts.config_maps {
            " --config-maps"
        } else {
            ""
        },
    )];
    let mut service_missing = Missing {
        who: svc,
        lines: Vec::new(),
    };
    for (name, o) in &service.networks {
        if !o.is_default() {
            service_missing.add(
                format!("[networks.{name}]"),
                "Kubernetes has one pod network: subnets, internal, IPv6 and driver options have no equivalent",
            );
        }
    }
    // Named volumes of the agent's (one directory per service): one claim each.
    let mut claims: BTreeMap<&str, String> = BTreeMap::new();
    for c in &service.components {
        for v in &c.volumes {
            if let Some(n) = v.owned_name() {
                claims
                    .entry(n)
                    .or_insert_with(|| format!("{svc}-{}", dns_label(n)));
            }
        }
    }
    let labels = |component: &str| {
        let mut l = Map::new();
        l.insert(LABEL_NAME.into(), json!(component));
        l.insert(
            LABEL_INSTANCE.into(),
            json!(label_value(&model::container_name(svc, component))),
        );
        l.insert(LABEL_PART_OF.into(), json!(svc));
        l.insert(crate::container::LABEL_SERVICE.into(), json!(svc));
        l.insert(crate::container::LABEL_COMPONENT.into(), json!(component));
        if model::is_label_value(node) {
            l.insert(crate::container::LABEL_NODE.into(), json!(node));
        }
        l
    };
    let mut svc_labels = labels(svc);
    svc_labels.remove(LABEL_NAME);
    svc_labels.remove(LABEL_INSTANCE);
    svc_labels.remove(crate::container::LABEL_COMPONENT);
    for (n, claim) in &claims {
        out.doc(
            &[format!(
                "named volume {n:?} of the agent ([volumes] root/{svc}/{n}); its size ({PVC_SIZE}) is a guess: the agent's volumes have none, and its data is not copied"
            )],
            &json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "labels": svc_labels},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": PVC_SIZE}},
                },
            }),
        );
    }
    for c in &service.components {
        component(
            &mut out, service, c, node, host, opts, read, &claims, &labels,
        )?;
    }
    out.not_carried.splice(0..0, service_missing.lines.clone());
    if !out.not_carried.is_empty() {
        head.push("Not carried (no Kubernetes equivalent, or not by this export):".into());
        head.extend(out.not_carried.iter().map(|l| format!("  {l}")));
    }
    let mut yaml = String::new();
    for l in &head {
        yaml.push_str(&yaml::comment(l));
    }
    for d in &out.docs {
        yaml.push_str("---\n");
        yaml.push_str(d);
    }
    Ok(Rendered {
        yaml,
        not_carried: out.not_carried,
    })
}

#[allow(clippy::too_many_arguments)]
fn component(
    out: &mut Out,
    service: &Service,
    c: &Component,
    node: &str,
    host: &Host,
    opts: Options,
    read: ReadFile<'_>,
    claims: &BTreeMap<&str, String>,
    labels: &dyn Fn(&str) -> Map<String, Value>,
) -> Result<(), String> {
    let svc = service.name.as_str();
    let who = format!("{svc}/{}", c.name);
    let mut miss = Missing {
        who: &who,
        lines: Vec::new(),
    };
    let x = &c.settings;
    let obj = model::container_name(svc, &c.name);
    let spec = crate::container::ContainerSpec::build_in(
        &crate::container::Us::new(node, ""),
        svc,
        c,
        None,
        host,
        &service.network_options(),
    );
    let running = service.active && c.desired_state == model::DesiredState::Running;
    let mut docs_before: Vec<(Vec<String>, Value)> = Vec::new();

    // The container.
    let mut ctr = Map::new();
    ctr.insert("name".into(), json!(c.name));
    ctr.insert("image".into(), json!(c.image));
    ctr.insert(
        "imagePullPolicy".into(),
        json!(match spec.pull {
            PullPolicy::Never => "Never",
            PullPolicy::Missing => "IfNotPresent",
            PullPolicy::Always => "Always",
        }),
    );
    // The agent's `entrypoint` is the image's ENTRYPOINT replaced (Kubernetes' command),
    // its `cmd` the image's CMD (Kubernetes' args).
    if let Some(e) = &x.entrypoint {
        ctr.insert("command".into(), json!(e));
    }
    if !c.cmd.is_empty() {
        ctr.insert("args".into(), json!(c.cmd));
    }
    if let Some(w) = &x.working_dir {
        ctr.insert("workingDir".into(), json!(w));
    }
    // env: the component's own and the routes' PORT variables (as the agent injects
    // them); the env files' variables from a Secret or ConfigMap (`env` wins over
    // `envFrom` in Kubernetes, as the component's env wins over its env files here).
    let env: Vec<Value> = spec
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    if !env.is_empty() {
        ctr.insert("env".into(), Value::Array(env));
    }
    let (store_kind, store_ref) = if opts.config_maps {
        ("ConfigMap", "configMapRef")
    } else {
        ("Secret", "secretRef")
    };
    if !x.env_file.is_empty() {
        let mut vars = BTreeMap::new();
        for path in &x.env_file {
            let bytes =
                read(Path::new(path)).map_err(|e| format!("{who}: env_file {path}: {e}"))?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| format!("{who}: env_file {path}: not UTF-8"))?;
            for (k, v) in crate::files::parse_env_file(text)
                .map_err(|e| format!("{who}: env_file {path}: {e}"))?
            {
                vars.insert(k, v.into_bytes());
            }
        }
        // What the component's env sets is not in the store: its `env` wins, as in
        // Kubernetes, where podman 4.3's kube play lets `envFrom` win instead.
        vars.retain(|k, _| !spec.env.contains_key(k));
        let name = format!("{obj}-env");
        docs_before.push((
            vec![format!(
                "the variables of {}'s env_file {} (read now: a later edit of the files is not seen)",
                c.name,
                x.env_file.join(", ")
            )],
            store(store_kind, &name, labels(&c.name), &vars),
        ));
        ctr.insert("envFrom".into(), json!([{ store_ref: {"name": name} }]));
    }

    // Ports: fixed publishes with their host port and address; an l4 route's allocated
    // host port; an l7 route is reached through its Ingress, as through the agent's proxy.
    let mut ports = Vec::new();
    let mut service_ports: Vec<Value> = Vec::new();
    let mut seen_ports = std::collections::BTreeSet::new();
    for p in &c.ports {
        let proto = p.proto.as_str().to_ascii_uppercase();
        let mut port =
            json!({"containerPort": p.container_port, "hostPort": p.host_port, "protocol": proto});
        if let Some(ip) = p.ip {
            port["hostIP"] = json!(ip.to_string());
        }
        ports.push(port);
        if seen_ports.insert((p.container_port, proto.clone())) {
            service_ports.push(json!({
                "name": format!("{}-{}", p.proto.as_str(), p.container_port),
                "port": p.container_port, "targetPort": p.container_port, "protocol": proto,
            }));
        }
    }
    for r in &c.routes {
        let mut port = json!({"containerPort": r.port, "protocol": "TCP"});
        if port_name(&r.name) {
            port["name"] = json!(r.name);
        }
        // Only a published port is listed: podman 4.3's kube play publishes a
        // containerPort without hostPort on the same port of the host (Kubernetes
        // reaches a pod's ports whether they are listed or not).
        match (r.mode, r.host_port) {
            (RouteMode::L4, Some(h)) => {
                port["hostPort"] = json!(h);
                ports.push(port);
            }
            (RouteMode::L4, None) => miss.add(
                format!("route {}", r.name),
                "no host port allocated yet (the agent allocates it at its next pass): none given",
            ),
            (RouteMode::L7, Some(h)) => miss.add(
                format!("route {} (l7) host port 127.0.0.1:{h}", r.name),
                "the agent's loopback port for its proxy: reached through the route's Ingress instead",
            ),
            (RouteMode::L7, None) => {}
        }
        if seen_ports.insert((r.port, "TCP".into())) {
            let name = if port_name(&r.name) {
                r.name.clone()
            } else {
                format!("tcp-{}", r.port)
            };
            service_ports.push(
                json!({"name": name, "port": r.port, "targetPort": r.port, "protocol": "TCP"}),
            );
        }
    }
    if !ports.is_empty() {
        ctr.insert("ports".into(), Value::Array(ports));
    }

    // Resources.
    let mut limits = Map::new();
    let mut requests = Map::new();
    if let Some(m) = x.memory {
        limits.insert("memory".into(), json!(bytes_quantity(m.0)));
    }
    if let Some(m) = x.memory_reservation {
        requests.insert("memory".into(), json!(bytes_quantity(m.0)));
    }
    if let Some(cpus) = x.cpus {
        let milli = (cpus.0 + 999_999) / 1_000_000;
        if cpus.0 % 1_000_000 != 0 {
            miss.add(
                format!("cpus {}", cpus.cpus()),
                "Kubernetes counts CPU in thousandths: rounded up",
            );
        }
        limits.insert(
            "cpu".into(),
            json!(if milli % 1000 == 0 {
                (milli / 1000).to_string()
            } else {
                format!("{milli}m")
            }),
        );
    }
    if !limits.is_empty() || !requests.is_empty() {
        let mut r = Map::new();
        if !limits.is_empty() {
            r.insert("limits".into(), Value::Object(limits));
        }
        if !requests.is_empty() {
            r.insert("requests".into(), Value::Object(requests));
        }
        ctr.insert("resources".into(), Value::Object(r));
    }
    if let Some(p) = x.pids_limit {
        miss.add(
            format!("pids_limit {p}"),
            "Kubernetes limits pids per node (the kubelet's podPidsLimit), not per container",
        );
    }

    // Security.
    let mut sec = Map::new();
    let mut pod_sec = Map::new();
    if let Some(u) = &c.user {
        match numeric_user(u) {
            Some((uid, gid)) => {
                sec.insert("runAsUser".into(), json!(uid));
                if let Some(g) = gid {
                    sec.insert("runAsGroup".into(), json!(g));
                }
            }
            None => miss.add(
                format!("user {u:?}"),
                "Kubernetes takes numeric ids only (runAsUser, runAsGroup)",
            ),
        }
    }
    let caps = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_string())
            .collect()
    };
    if !x.cap_add.is_empty() || !x.cap_drop.is_empty() {
        let mut cap = Map::new();
        if !x.cap_add.is_empty() {
            cap.insert("add".into(), json!(caps(&x.cap_add)));
        }
        if !x.cap_drop.is_empty() {
            cap.insert("drop".into(), json!(caps(&x.cap_drop)));
        }
        sec.insert("capabilities".into(), Value::Object(cap));
    }
    if x.privileged {
        sec.insert("privileged".into(), json!(true));
    }
    if x.read_only {
        sec.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    for o in &x.security_opt {
        match o.as_str() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                sec.insert("allowPrivilegeEscalation".into(), json!(false));
            }
            "seccomp=unconfined" | "seccomp:unconfined" => {
                sec.insert("seccompProfile".into(), json!({"type": "Unconfined"}));
            }
            o => miss.add(
                format!("security_opt {o:?}"),
                "no securityContext field says it",
            ),
        }
    }
    if !sec.is_empty() {
        ctr.insert("securityContext".into(), Value::Object(sec));
    }
    let mut groups = Vec::new();
    for g in &x.group_add {
        match g.parse::<u32>() {
            Ok(n) => groups.push(n),
            Err(_) => miss.add(
                format!("group_add {g:?}"),
                "Kubernetes takes numeric group ids only (supplementalGroups)",
            ),
        }
    }
    if !groups.is_empty() {
        pod_sec.insert("supplementalGroups".into(), json!(groups));
    }
    if !x.sysctls.is_empty() {
        pod_sec.insert(
            "sysctls".into(),
            Value::Array(
                x.sysctls
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect(),
            ),
        );
    }
    if x.tty {
        ctr.insert("tty".into(), json!(true));
    }
    if x.stdin_open {
        ctr.insert("stdin".into(), json!(true));
    }

    // Volumes and their mounts.
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, v) in c.volumes.iter().enumerate() {
        let (ro, other) = bind_options(v.options.as_deref());
        if !other.is_empty() {
            miss.add(
                format!("volume {} option(s) {}", v.target, other.join(",")),
                "a volumeMount has readOnly only",
            );
        }
        let vol_name = format!("volume-{i}");
        let source = if let Some(n) = v.owned_name() {
            json!({"persistentVolumeClaim": {"claimName": claims[n]}})
        } else if let (Some(_), Some(podman)) = (v.name(), &v.external) {
            miss.add(
                format!("external volume {podman:?}"),
                "mounted as the PersistentVolumeClaim of that name, which must exist (podman kube play uses its volume)",
            );
            json!({"persistentVolumeClaim": {"claimName": podman}})
        } else if opts.host_paths {
            let mut hp = json!({"path": v.source});
            if v.create_host_path {
                hp["type"] = json!("DirectoryOrCreate");
            }
            json!({ "hostPath": hp })
        } else {
            miss.add(
                format!("volume {}:{}", v.source, v.target),
                "a path of this host: not carried without --host-paths (a Kubernetes node has other files)",
            );
            continue;
        };
        let mut vol = json!({ "name": vol_name });
        for (k, val) in source.as_object().expect("an object") {
            vol[k] = val.clone();
        }
        volumes.push(vol);
        let mut m = json!({"name": vol_name, "mountPath": v.target});
        if ro {
            m["readOnly"] = json!(true);
        }
        mounts.push(m);
    }
    for (i, t) in x.tmpfs.iter().enumerate() {
        let (path, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut dir = json!({"medium": "Memory"});
        for o in options.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", s)) => match model::parse_bytes(s) {
                    Ok(b) => dir["sizeLimit"] = json!(bytes_quantity(b.0)),
                    Err(_) => miss.add(format!("tmpfs {path} size {s:?}"), "not a size"),
                },
                _ => miss.add(
                    format!("tmpfs {path} option {o:?}"),
                    "an emptyDir has a size limit only",
                ),
            }
        }
        let name = format!("tmpfs-{i}");
        volumes.push(json!({"name": name, "emptyDir": dir}));
        mounts.push(json!({"name": name, "mountPath": path}));
    }
    if !x.secrets.is_empty() {
        // One store of all the component's secret files, mounted at each target's
        // directory with only the files of that directory (subPath would keep the rest
        // of the directory, but podman 4.3 ignores it).
        let name = format!("{obj}-secrets");
        let mut data = BTreeMap::new();
        let mut dirs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for s in &x.secrets {
            let (dir, file) = s.target.rsplit_once('/').unwrap_or(("", &s.target));
            if dir.is_empty() {
                miss.add(
                    format!("secret {}", s.target),
                    "a file in / would be a volume mounted over the root",
                );
                continue;
            }
            let bytes = read(Path::new(&s.source))
                .map_err(|e| format!("{who}: secret {}: {e}", s.source))?;
            let mut key = store_key(file);
            while data.contains_key(&key) {
                key.push('_');
            }
            data.insert(key.clone(), bytes);
            dirs.entry(dir)
                .or_default()
                .push(json!({"key": key, "path": file}));
        }
        let dirs_list: Vec<&str> = dirs.keys().copied().collect();
        if !data.is_empty() {
            docs_before.push((
                vec![format!(
                    "the contents of {}'s secrets (read now), mounted at {}",
                    c.name,
                    dirs_list.join(", ")
                )],
                store(store_kind, &name, labels(&c.name), &data),
            ));
        }
        for (i, (dir, items)) in dirs.into_iter().enumerate() {
            let vol = format!("secrets-{i}");
            let source = if opts.config_maps {
                json!({"name": vol, "configMap": {"name": name, "items": items, "optional": false}})
            } else {
                // `optional` stated: podman 4.3 dereferences it unset.
                json!({"name": vol, "secret": {"secretName": name, "items": items, "optional": false}})
            };
            volumes.push(source);
            mounts.push(json!({"name": vol, "mountPath": dir, "readOnly": true}));
            if dir != "/run/secrets" {
                miss.add(
                    format!("secret files in {dir}"),
                    "mounted as a directory of only those files, hiding what the image has there",
                );
            }
        }
    }
    if !mounts.is_empty() {
        ctr.insert("volumeMounts".into(), Value::Array(mounts));
    }

    // Health checks: readiness always (an unhealthy component's routes are withdrawn),
    // liveness when the agent restarts it, startup for its start period.
    if let Some(h) = &x.health {
        let (ready, live, startup) = probes(h);
        ctr.insert("readinessProbe".into(), ready);
        if let Some(l) = live {
            ctr.insert("livenessProbe".into(), l);
        }
        if let Some(s) = startup {
            ctr.insert("startupProbe".into(), s);
        }
    }

    // What has no equivalent.
    if x.init {
        miss.add(
            "init = true",
            "Kubernetes runs no init process in a container",
        );
    }
    if let Some(s) = &x.stop_signal {
        miss.add(
            format!("stop_signal {s:?}"),
            "Kubernetes 1.31 always sends SIGTERM (the image's STOPSIGNAL is used by some runtimes)",
        );
    }
    if !x.devices.is_empty() {
        miss.add(
            format!("devices {:?}", x.devices),
            "Kubernetes gives devices through device plugins or privileged only",
        );
    }
    if !x.ulimits.is_empty() {
        miss.add(
            format!(
                "ulimits {}",
                x.ulimits.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            "Kubernetes has no per-container rlimits",
        );
    }
    if let Some(s) = x.shm_size {
        miss.add(
            format!("shm_size {s}"),
            "Kubernetes has no /dev/shm size (an emptyDir of medium Memory mounted there is the usual stand-in)",
        );
    }
    if let Some(u) = &x.userns {
        if u != "host" {
            miss.add(
                format!("userns {u:?}"),
                "Kubernetes has hostUsers: false only, with its own id mapping",
            );
        }
    }
    if let Some(d) = &x.log_driver {
        miss.add(
            format!(
                "log_driver {d:?}{}",
                if x.log_opts.is_empty() {
                    ""
                } else {
                    " and log_opts"
                }
            ),
            "Kubernetes logs through the node's runtime",
        );
    }
    if !x.log_opts.is_empty() && x.log_driver.is_none() {
        miss.add("log_opts", "Kubernetes logs through the node's runtime");
    }
    if !x.depends_on.is_empty() {
        let deps: Vec<String> = x
            .depends_on
            .iter()
            .map(|(k, d)| format!("{k} ({})", d.condition.as_str()))
            .collect();
        miss.add(
            format!("depends_on {}", deps.join(", ")),
            "Kubernetes starts workloads in no order (readiness probes and restarts stand in)",
        );
    }

    // The pod.
    let mut pod = Map::new();
    let mut net_names: Vec<String> = Vec::new();
    match c.network.as_str() {
        "host" => {
            pod.insert("hostNetwork".into(), json!(true));
        }
        "none" => miss.add(
            "network \"none\"",
            "a Kubernetes pod always has the pod network",
        ),
        _ => {}
    }
    for n in &x.networks {
        if n.ipv4_address.is_some() || n.ipv6_address.is_some() {
            miss.add(
                format!("static address on network {:?}", n.name),
                "Kubernetes assigns pod addresses itself",
            );
        }
        net_names.extend(n.aliases.iter().cloned());
    }
    let extra_nets: Vec<&str> = x
        .networks
        .iter()
        .map(|n| n.name.as_str())
        .chain((!c.network.is_empty()).then_some(c.network.as_str()))
        .filter(|n| !matches!(*n, "default" | "bridge" | "host" | "none"))
        .collect();
    if !extra_nets.is_empty() {
        miss.add(
            format!("networks {}", extra_nets.join(", ")),
            "Kubernetes has one pod network: every workload reaches every Service",
        );
    }
    if let Some(h) = &x.hostname {
        if model::is_name(h) {
            pod.insert("hostname".into(), json!(h));
        } else {
            miss.add(
                format!("hostname {h:?}"),
                "a pod's hostname is one DNS label",
            );
        }
    }
    if !x.dns.is_empty() || !x.dns_search.is_empty() {
        let mut d = Map::new();
        if !x.dns.is_empty() {
            d.insert("nameservers".into(), json!(x.dns));
        }
        if !x.dns_search.is_empty() {
            d.insert("searches".into(), json!(x.dns_search));
        }
        pod.insert("dnsConfig".into(), Value::Object(d));
        miss.add(
            "dns, dns_search",
            "added to the cluster's DNS (dnsConfig), not instead of it: the Services' names must resolve",
        );
    }
    if !x.extra_hosts.is_empty() {
        let mut by_ip: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in &x.extra_hosts {
            if let Some((name, ip)) = e.split_once(':') {
                by_ip.entry(ip).or_default().push(name);
            }
        }
        pod.insert(
            "hostAliases".into(),
            Value::Array(
                by_ip
                    .into_iter()
                    .map(|(ip, names)| json!({"ip": ip, "hostnames": names}))
                    .collect(),
            ),
        );
    }
    if let Some(t) = x.stop_timeout {
        pod.insert("terminationGracePeriodSeconds".into(), json!(t.0));
    }
    if !pod_sec.is_empty() {
        pod.insert("securityContext".into(), Value::Object(pod_sec));
    }
    pod.insert("containers".into(), json!([Value::Object(ctr)]));
    if !volumes.is_empty() {
        pod.insert("volumes".into(), Value::Array(volumes));
    }

    let meta_labels = labels(&c.name);
    let mut pod_labels = meta_labels.clone();
    let mut annotations = Map::new();
    for (k, v) in &x.labels {
        if !label_key(k) {
            miss.add(
                format!("label {k:?}"),
                "not a Kubernetes label or annotation key ([PREFIX/]NAME)",
            );
        } else if pod_labels.contains_key(k) || !(v.is_empty() || label_value_ok(v)) {
            // The export's own labels select the pod: one of the same key is an annotation.
            annotations.insert(k.clone(), json!(v));
        } else {
            pod_labels.insert(k.clone(), json!(v));
        }
    }
    let mut pod_meta = json!({ "labels": pod_labels });
    if !annotations.is_empty() {
        pod_meta["annotations"] = Value::Object(annotations);
    }
    let selector = json!({"matchLabels": {LABEL_INSTANCE: meta_labels[LABEL_INSTANCE].clone()}});

    let restart_to_completion = match c.restart {
        RestartPolicy::No => "Never",
        _ => "OnFailure",
    };
    let workload = if x.oneshot && !opts.pod {
        pod.insert("restartPolicy".into(), json!(restart_to_completion));
        let mut spec = json!({
            "backoffLimit": if c.restart == RestartPolicy::No { 0 } else { 6 },
            "template": {"metadata": pod_meta, "spec": pod},
        });
        if !running {
            spec["suspend"] = json!(true);
        }
        Some(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": obj, "labels": meta_labels},
            "spec": spec,
        }))
    } else if opts.pod {
        pod.insert(
            "restartPolicy".into(),
            json!(if x.oneshot {
                restart_to_completion
            } else {
                "Always"
            }),
        );
        if running {
            let mut meta = pod_meta;
            meta["name"] = json!(obj);
            Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod}))
        } else {
            miss.add(
                "desired_state \"stopped\"",
                "a Pod cannot be stopped: none written (without --pod it is a Deployment of 0 replicas)",
            );
            None
        }
    } else {
        Some(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": obj, "labels": meta_labels},
            "spec": {
                "replicas": if running { 1 } else { 0 },
                "selector": selector,
                // The old pod goes before the new one starts, as the agent recreates: its
                // host ports and ReadWriteOnce claims are free for the new one.
                "strategy": {"type": "Recreate"},
                "template": {"metadata": pod_meta, "spec": pod},
            },
        }))
    };
    if x.oneshot && !opts.pod {
        miss.add(
            "oneshot",
            "a Job, which podman 4.3's kube play ignores (with --pod it is a Pod that runs to completion)",
        );
    }

    // Services: the component's name and its aliases, headless (the name resolves to
    // the pod, on any port, as the agent's network aliases do).
    let mut services = Vec::new();
    if !x.oneshot {
        let mut names = vec![c.name.clone()];
        for a in x.aliases.iter().chain(&net_names) {
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
        for n in names {
            if !dns_1035(&n) {
                miss.add(
                    format!("name {n:?}"),
                    "a Service's name must start with a letter",
                );
                continue;
            }
            let meta_labels = labels(&c.name);
            let mut spec = json!({
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": {LABEL_INSTANCE: meta_labels[LABEL_INSTANCE].clone()},
            });
            if !service_ports.is_empty() {
                spec["ports"] = Value::Array(service_ports.clone());
            }
            services.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": n, "labels": meta_labels},
                "spec": spec,
            }));
        }
    }
    let mut ingresses = Vec::new();
    for r in &c.routes {
        let (RouteMode::L7, Some(hostname)) = (r.mode, &r.hostname) else {
            continue;
        };
        let name = format!("{obj}-{}", r.name);
        ingresses.push((
            vec![format!(
                "route {:?}: TLS with the Secret {name}-tls, which is not made here (the agent's certificates stay on its node): cert-manager or `kubectl create secret tls {name}-tls`",
                r.name
            )],
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "labels": labels(&c.name)},
                "spec": {
                    "tls": [{"hosts": [hostname], "secretName": format!("{name}-tls")}],
                    "rules": [{
                        "host": hostname,
                        "http": {"paths": [{
                            "path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": c.name, "port": {"number": r.port}}},
                        }]},
                    }],
                },
            }),
        ));
    }

    for (comments, v) in &docs_before {
        out.doc(comments, v);
    }
    let mut comments = vec![format!("component {:?}", c.name)];
    if !miss.lines.is_empty() {
        comments.push("Not carried:".into());
        comments.extend(miss.lines.iter().map(|l| format!("  {l}")));
    }
    if let Some(w) = workload {
        out.doc(&comments, &w);
    } else {
        let mut s = String::new();
        for c in &comments {
            s.push_str(&yaml::comment(c));
        }
        out.docs.push(s);
    }
    for s in services {
        out.doc(&[], &s);
    }
    for (comments, i) in ingresses {
        out.doc(&comments, &i);
    }
    out.not_carried.extend(miss.lines);
    Ok(())
}

/// A Secret (data base64, as Kubernetes keeps it) or a ConfigMap (UTF-8 values in
/// `data`, others in `binaryData`).
fn store(
    kind: &str,
    name: &str,
    labels: Map<String, Value>,
    data: &BTreeMap<String, Vec<u8>>,
) -> Value {
    let mut doc = json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"name": name, "labels": labels},
    });
    if kind == "Secret" {
        doc["type"] = json!("Opaque");
        doc["data"] = data
            .iter()
            .map(|(k, v)| (k.clone(), json!(base64(v))))
            .collect::<Map<_, _>>()
            .into();
    } else {
        let (text, binary): (Vec<_>, Vec<_>) = data
            .iter()
            .partition(|(_, v)| std::str::from_utf8(v).is_ok());
        let text: Map<_, _> = text
            .into_iter()
            .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
            .collect();
        doc["data"] = text.into();
        if !binary.is_empty() {
            doc["binaryData"] = binary
                .into_iter()
                .map(|(k, v)| (k.clone(), json!(base64(v))))
                .collect::<Map<_, _>>()
                .into();
        }
    }
    doc
}

/// Readiness, liveness (when the agent restarts an unhealthy component) and startup
/// (for a start period) probes of a health check; periods in whole seconds, rounded up.
fn probes(h: &HealthCheck) -> (Value, Option<Value>, Option<Value>) {
    let secs = |m: Millis| m.0.div_ceil(1000).max(1);
    let mut handler = match &h.probe {
        Probe::Cmd(argv) => json!({"exec": {"command": argv}}),
        Probe::Shell(line) => {
            json!({"exec": {"command": crate::health::probe::shell_argv(line)}})
        }
        Probe::Http { port, path } => json!({"httpGet": {"port": port, "path": path}}),
        Probe::Tcp { port } => json!({"tcpSocket": {"port": port}}),
    };
    handler["periodSeconds"] = json!(secs(h.interval));
    handler["timeoutSeconds"] = json!(secs(h.timeout));
    handler["failureThreshold"] = json!(h.retries.max(1));
    let live = (h.on_failure == OnFailure::Restart).then(|| handler.clone());
    let startup = (h.start_period.0 > 0).then(|| {
        let mut s = handler.clone();
        let every = secs(h.start_interval);
        s["periodSeconds"] = json!(every);
        s["failureThreshold"] =
            json!(secs(h.start_period).div_ceil(every) + u64::from(h.retries.max(1)));
        s
    });
    (handler, live, startup)
}

/// `ro`, and the options other than `ro`/`rw` (which a volumeMount cannot say).
fn bind_options(options: Option<&str>) -> (bool, Vec<String>) {
    let mut ro = false;
    let mut other = Vec::new();
    for o in options.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => {}
            o => other.push(o.to_string()),
        }
    }
    (ro, other)
}

/// `UID` or `UID:GID`, both numeric.
fn numeric_user(u: &str) -> Option<(u32, Option<u32>)> {
    match u.split_once(':') {
        Some((a, b)) => Some((a.parse().ok()?, Some(b.parse().ok()?))),
        None => Some((u.parse().ok()?, None)),
    }
}

/// A size as a Kubernetes quantity: `128Mi`, `1Gi`, or bytes.
fn bytes_quantity(n: i64) -> String {
    for (unit, m) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n != 0 && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    n.to_string()
}

/// A volume's name as a DNS label: lowercase, `_` and `.` as `-`.
fn dns_label(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    t.trim_matches('-').to_string()
}

/// A label value of at most 63 characters (a longer name: its head and a digest).
fn label_value(s: &str) -> String {
    if s.len() <= 63 {
        return s.to_string();
    }
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    let hex: String = d[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", s[..54].trim_end_matches('-'))
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn label_value_ok(v: &str) -> bool {
    model::is_label_value(v)
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes label key: `[PREFIX/]NAME`, NAME a label value, PREFIX a DNS subdomain.
fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    label_value_ok(name) && prefix.is_none_or(|p| p.len() <= 253 && model::is_hostname(p))
}

/// A DNS-1035 label (a Service's name): a letter first, no `-` last.
fn dns_1035(s: &str) -> bool {
    model::is_name(s) && s.starts_with(|c: char| c.is_ascii_lowercase()) && !s.ends_with('-')
}

/// A container port's name (IANA_SVC_NAME): at most 15 of `[a-z0-9-]`, a letter among
/// them, no `--`, no `-` at either end.
fn port_name(s: &str) -> bool {
    s.len() <= 15
        && model::is_name(s)
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && !s.contains("--")
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A file's name as a Secret or ConfigMap key (`[-._a-zA-Z0-9]+`).
fn store_key(s: &str) -> String {
    let k: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if k.is_empty() || k == "." || k == ".." {
        format!("file{k}")
    } else {
        k
    }
}

/// Standard base64 with padding.
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
