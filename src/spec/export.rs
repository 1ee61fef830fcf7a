//! A service as the service file `export` prints: the registry's shapes, with the keys of
//! issue 14 (`[health]`, `oneshot`, `depends_on`) written back in the file's own syntax so
//! that `apply` of the text gives the same service.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{Component, Condition, HealthCheck, Millis, OnFailure, Probe, Service};

#[derive(Serialize)]
struct FileService<'a> {
    name: &'a str,
    active: bool,
    /// `[volumes.NAME]`: the external volumes its components mount (the registry keeps
    /// them on each volume; a declaration no component used is not kept).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<&'a str, FileVolume<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    networks: &'a BTreeMap<String, crate::model::NetworkOptions>,
    components: Vec<FileComponent<'a>>,
}

/// `external = true`, with `name` when podman's volume is not called as the source.
#[derive(Serialize)]
struct FileVolume<'a> {
    external: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct FileComponent<'a> {
    /// Without the keys below (as podman is given it).
    #[serde(flatten)]
    component: Component,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    oneshot: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    depends_on: BTreeMap<&'a str, FileDependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<FileHealth<'a>>,
}

/// `db = "healthy"`, or `db = { condition = "healthy", restart_with = true }`.
#[derive(Serialize)]
#[serde(untagged)]
enum FileDependency {
    Condition(Condition),
    Table {
        condition: Condition,
        restart_with: bool,
    },
}

#[derive(Serialize)]
struct FileHealth<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<FileHttp<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<FileTcp>,
    interval: Millis,
    timeout: Millis,
    retries: u32,
    start_period: Millis,
    start_interval: Millis,
    on_failure: OnFailure,
}

#[derive(Serialize)]
struct FileHttp<'a> {
    port: u16,
    path: &'a str,
}

#[derive(Serialize)]
struct FileTcp {
    port: u16,
}

fn health(h: &HealthCheck) -> FileHealth<'_> {
    let (mut test, mut http, mut tcp) = (None, None, None);
    match &h.probe {
        Probe::Cmd(argv) => {
            test = Some(
                std::iter::once("CMD")
                    .chain(argv.iter().map(String::as_str))
                    .collect(),
            )
        }
        Probe::Shell(line) => test = Some(vec!["CMD-SHELL", line]),
        Probe::Http { port, path } => http = Some(FileHttp { port: *port, path }),
        Probe::Tcp { port } => tcp = Some(FileTcp { port: *port }),
    }
    FileHealth {
        test,
        http,
        tcp,
        interval: h.interval,
        timeout: h.timeout,
        retries: h.retries,
        start_period: h.start_period,
        start_interval: h.start_interval,
        on_failure: h.on_failure,
    }
}

impl Service {
    /// The service as a service file; `apply` of this text gives the same service back.
    pub fn to_toml(&self) -> String {
        let mut volumes = BTreeMap::new();
        for v in self.components.iter().flat_map(|c| &c.volumes) {
            if let Some(podman) = &v.external {
                volumes.entry(v.source.as_str()).or_insert(FileVolume {
                    external: true,
                    name: (*podman != v.source).then_some(podman.as_str()),
                });
            }
        }
        let file = FileService {
            name: &self.name,
            active: self.active,
            volumes,
            networks: &self.networks,
            components: self
                .components
                .iter()
                .map(|c| {
                    let s = &c.settings;
                    FileComponent {
                        component: Component {
                            settings: s.for_container(),
                            // External in `[volumes.NAME]`, not on each volume.
                            volumes: c
                                .volumes
                                .iter()
                                .map(|v| crate::model::Volume {
                                    external: None,
                                    ..v.clone()
                                })
                                .collect(),
                            ..c.clone()
                        },
                        oneshot: s.oneshot,
                        depends_on: s
                            .depends_on
                            .iter()
                            .map(|(k, d)| {
                                let d = if d.restart_with {
                                    FileDependency::Table {
                                        condition: d.condition,
                                        restart_with: true,
                                    }
                                } else {
                                    FileDependency::Condition(d.condition)
                                };
                                (k.as_str(), d)
                            })
                            .collect(),
                        health: s.health.as_ref().map(health),
                    }
                })
                .collect(),
        };
        toml::to_string_pretty(&file).expect("service serializes")
    }
}
