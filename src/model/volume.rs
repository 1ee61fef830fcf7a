//! A volume of a component: a host path (or a named volume, a directory of the agent's, or
//! an external volume, podman's) mounted into the container, in the string form
//! `SOURCE:CONTAINER[:OPTIONS]` or, to opt into creating a missing host path, the table
//! form `{ source, target, options, create_host_path = true }`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Volume {
    /// The absolute host path, or a named volume (no leading slash).
    pub source: String,
    /// The absolute path inside the container.
    pub target: String,
    /// Podman's bind options (`ro`, `rw`, `Z`, …), comma-separated.
    pub options: Option<String>,
    /// Whether a missing `source` is created (a directory owned by the component's user);
    /// without it a missing source is an error naming the path.
    pub create_host_path: bool,
    /// Set when `source` names an external volume of the service (`[volumes.NAME]` with
    /// `external = true`): podman's volume of this name, mounted, never created nor
    /// removed by the agent. The service file says it once per service; the registry keeps
    /// it on each volume that mounts it.
    pub external: Option<String>,
}

impl Volume {
    /// Splits `HOST:CONTAINER[:OPTIONS]`; `None` without a `:` or with too many.
    pub fn parse_bind(s: &str) -> Option<Volume> {
        let mut parts = s.split(':');
        let source = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let options = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(Volume {
            source,
            target,
            options,
            create_host_path: false,
            external: None,
        })
    }

    /// The named volume, if the source is one (no leading slash: a directory of the
    /// agent's under `[volumes] root`, or an external volume), in either form.
    pub fn name(&self) -> Option<&str> {
        let s = self.source.as_str();
        (!s.starts_with('/') && super::is_volume_name(s)).then_some(s)
    }

    /// The agent's own named volume (a directory under `[volumes] root`), if the source is
    /// one: a named volume that is not external.
    pub fn owned_name(&self) -> Option<&str> {
        self.name().filter(|_| self.external.is_none())
    }

    /// What podman is given: `HOST:CONTAINER[:OPTIONS]`.
    pub fn bind(&self) -> String {
        match &self.options {
            Some(o) => format!("{}:{}:{o}", self.source, self.target),
            None => format!("{}:{}", self.source, self.target),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Table {
    source: String,
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    create_host_path: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Bind(String),
    Table(Table),
}

/// The string form unless `create_host_path` or `external` is set (so registries and
/// exports of volumes without them read exactly as before); the table form otherwise. The
/// registry keeps `external` so; a service file says it in `[volumes.NAME]` instead
/// (`export` writes it there, `crate::spec`).
impl Serialize for Volume {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.create_host_path || self.external.is_some() {
            Table {
                source: self.source.clone(),
                target: self.target.clone(),
                options: self.options.clone(),
                create_host_path: self.create_host_path,
                external: self.external.clone(),
            }
            .serialize(s)
        } else {
            s.serialize_str(&self.bind())
        }
    }
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Either::deserialize(d)? {
            Either::Bind(b) => Volume::parse_bind(&b)
                .ok_or_else(|| serde::de::Error::custom(format!("bad volume {b:?}"))),
            Either::Table(t) => Ok(Volume {
                source: t.source,
                target: t.target,
                options: t.options,
                create_host_path: t.create_host_path,
                external: t.external,
            }),
        }
    }
}
