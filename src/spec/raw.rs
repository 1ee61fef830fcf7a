//! The raw shapes of a service file: what TOML gives, with spans, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{DesiredState, RestartPolicy, RouteMode};

pub(super) fn yes() -> bool {
    true
}

pub(super) fn empty<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

pub(super) fn bridge() -> Spanned<String> {
    Spanned::new(0..0, "bridge".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    #[serde(default = "yes")]
    pub(super) active: bool,
    #[serde(default)]
    pub(super) components: Vec<Spanned<RawComponent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub(super) name: Spanned<String>,
    pub(super) image: Spanned<String>,
    #[serde(default)]
    pub(super) desired_state: DesiredState,
    #[serde(default = "bridge")]
    pub(super) network: Spanned<String>,
    pub(super) user: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) restart: RestartPolicy,
    #[serde(default = "empty")]
    pub(super) cmd: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) env: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) volumes: Spanned<Vec<Spanned<toml::Value>>>,
    #[serde(default = "empty")]
    pub(super) ports: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "empty")]
    pub(super) routes: Spanned<Vec<Spanned<RawRoute>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) port: Spanned<i64>,
    #[serde(default)]
    pub(super) mode: RouteMode,
    pub(super) hostname: Option<Spanned<String>>,
}
