//! One service file's text to a validated service: the TOML read with spans, the
//! service-level fields checked, each component handed to `component`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use toml::Spanned;

use super::component::parse_component;
use super::raw::{RawService, RawServiceVolume};
use super::{
    Issue, Issues, ServiceFile, SourceMap, MAX_COMPONENTS, MAX_ENTRIES, MAX_FILE_BYTES,
    MAX_VALUE_LEN,
};
use crate::error::Location;
use crate::model::{
    is_name, is_podman_volume_name, is_volume_name, Service, RESERVED_SERVICE_NAMES,
};

/// Collects the issues of one file, each at the location of a span of its text.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) issues: Vec<Issue>,
}

impl Checker<'_> {
    pub(super) fn loc(&self, span: std::ops::Range<usize>) -> Location {
        Location::of(self.text, span.start)
    }
    pub(super) fn bad(&mut self, span: std::ops::Range<usize>, reason: impl Into<String>) {
        self.issues.push(Issue {
            path: self.path.to_path_buf(),
            at: Some(self.loc(span)),
            reason: reason.into(),
        });
    }
    pub(super) fn bad_at(&mut self, at: Location, reason: impl Into<String>) {
        self.issues.push(Issue {
            path: self.path.to_path_buf(),
            at: Some(at),
            reason: reason.into(),
        });
    }
    pub(super) fn string(&mut self, s: &Spanned<String>, what: &str) -> bool {
        if s.get_ref().len() > MAX_VALUE_LEN {
            self.bad(
                s.span(),
                format!("{what} is longer than {MAX_VALUE_LEN} bytes"),
            );
            false
        } else if s.get_ref().contains('\0') {
            self.bad(s.span(), format!("{what} must not contain NUL"));
            false
        } else {
            true
        }
    }
    pub(super) fn count<T>(&mut self, v: &Spanned<T>, n: usize, max: usize, what: &str) {
        if n > max {
            self.bad(
                v.span(),
                format!("{what} has {n} entries; at most {max} are allowed"),
            );
        }
    }
}

/// The service's `[volumes.NAME]` tables, checked: NAME (the source its components'
/// volumes give) to the podman volume it names. Only external volumes are declared; one
/// that no component mounts is no error.
fn external_volumes(
    c: &mut Checker<'_>,
    volumes: &Spanned<BTreeMap<Spanned<String>, Spanned<RawServiceVolume>>>,
) -> BTreeMap<String, String> {
    c.count(volumes, volumes.get_ref().len(), MAX_ENTRIES, "volumes");
    let mut out = BTreeMap::new();
    for (name, v) in volumes.get_ref() {
        let n = name.get_ref();
        if !is_volume_name(n) {
            c.bad(
                name.span(),
                format!("volume name {n:?} must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}} (the source components' volumes give as NAME:/path)"),
            );
            continue;
        }
        let v = v.get_ref();
        match &v.external {
            Some(e) if *e.get_ref() => {}
            Some(e) => {
                c.bad(e.span(), format!("volumes.{n}: external = false declares nothing: only external volumes (podman's) are declared here; a named volume of the agent's, a directory under [volumes] root, needs no declaration"));
                continue;
            }
            None => {
                c.bad(name.span(), format!("volumes.{n} needs external = true: only external volumes (podman's, created outside the agent) are declared here; a named volume of the agent's, a directory under [volumes] root, needs no declaration"));
                continue;
            }
        }
        let podman = match &v.name {
            Some(p) => {
                if !c.string(p, "volume name") {
                    continue;
                }
                if !is_podman_volume_name(p.get_ref()) {
                    c.bad(
                        p.span(),
                        format!(
                            "podman volume name {:?} must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 255 bytes)",
                            p.get_ref()
                        ),
                    );
                    continue;
                }
                p.get_ref().clone()
            }
            None => n.clone(),
        };
        out.insert(n.clone(), podman);
    }
    out
}

/// Parses and validates one service file's text. Every problem is reported, not just the
/// first.
pub fn parse_service(path: &Path, text: &str) -> Result<ServiceFile, Issues> {
    let issue = |at: Option<Location>, reason: String| {
        Issues(vec![Issue {
            path: path.to_path_buf(),
            at,
            reason,
        }])
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(issue(
            None,
            format!(
                "file is {} bytes; at most {MAX_FILE_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let raw: RawService = toml::from_str(text).map_err(|e| {
        issue(
            Some(Location::of(text, e.span().map_or(0, |s| s.start))),
            e.message().trim_end().to_string(),
        )
    })?;
    let mut c = Checker {
        path,
        text,
        issues: Vec::new(),
    };
    let mut source = SourceMap {
        name: Some(c.loc(raw.name.span())),
        ..SourceMap::default()
    };
    let networks = super::networks::parse_networks(&mut c, &raw.networks, &mut source.networks);
    if !is_name(raw.name.get_ref()) {
        c.bad(
            raw.name.span(),
            format!(
                "service name {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                raw.name.get_ref()
            ),
        );
    } else if RESERVED_SERVICE_NAMES.contains(&raw.name.get_ref().as_str()) {
        c.bad(
            raw.name.span(),
            format!(
                "service name {:?} is reserved (the proxy ids mcp.acme.* answer ACME challenges)",
                raw.name.get_ref()
            ),
        );
    }
    if raw.components.len() > MAX_COMPONENTS {
        c.bad(
            raw.name.span(),
            format!(
                "service has {} components; at most {MAX_COMPONENTS} are allowed",
                raw.components.len()
            ),
        );
        return Err(Issues(c.issues));
    }
    let external = external_volumes(&mut c, &raw.volumes);
    let mut components = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for rc in raw.components {
        let (cs, mut component) = parse_component(&mut c, rc.into_inner(), &mut seen);
        for v in &mut component.volumes {
            if let Some(podman) = v.name().and_then(|n| external.get(n)) {
                v.external = Some(podman.clone());
            }
        }
        source.components.push(cs);
        components.push(component);
    }
    super::lifecycle::check_dependencies(
        &mut c,
        raw.name.get_ref(),
        &components,
        &source.components,
    );
    super::networks::check_service(
        &mut c,
        &networks,
        &source.networks,
        &components,
        &source.components,
    );
    if !c.issues.is_empty() {
        return Err(Issues(c.issues));
    }
    Ok(ServiceFile {
        path: path.to_path_buf(),
        service: Service {
            name: raw.name.into_inner(),
            active: raw.active,
            components,
            networks,
        },
        source,
    })
}
