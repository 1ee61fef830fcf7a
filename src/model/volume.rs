//! A volume of a component: a host path (or a named volume, a directory of the agent's)
//! mounted into the container, in the string form `SOURCE:CONTAINER[:OPTIONS]` or, to opt
//! into creating a missing host path, the table form
//! `{ source, target, options, create_host_path = true }`.

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
        })
    }

    /// The named volume, if the source is one (no leading slash: a directory of the
    /// agent's under `[volumes] root`), in either form.
    pub fn name(&self) -> Option<&str> {
        let s = self.source.as_str();
        (!s.starts_with('/') && super::is_volume_name(s)).then_some(s)
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
    #[serde(default)]
    create_host_path: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Bind(String),
    Table(Table),
}

/// The string form unless `create_host_path` is set (so registries and exports of volumes
/// without it read exactly as before); the table form otherwise.
impl Serialize for Volume {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.create_host_path {
            Table {
                source: self.source.clone(),
                target: self.target.clone(),
                options: self.options.clone(),
                create_host_path: true,
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
            }),
        }
    }
}
