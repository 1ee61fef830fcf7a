//! A component's process, security, resource and metadata settings (issue 13 §4–6), named
//! as compose names them. Every field's default is podman's own default, and a default
//! field is left out when serialized: of the service file `export` prints, of the
//! registry's JSON and of the spec hash — so a component that sets none of them hashes as
//! it did before they existed.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    // The process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Seconds>,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    /// The container's standard input kept open (podman's `-i`, `Config.OpenStdin`),
    /// attached to nothing: a process reading it waits instead of seeing end-of-file.
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    // Security and resources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<NanoCpus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    // Metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
    // Configuration from files on the host (issue 13 §3): their paths here, their
    // contents read at each pass (`crate::files`) and hashed with the spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    // Storage (issue 13 §2; named volumes are `volumes` entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    // Networks and names (issue 13 §1; the single-network form is the component's
    // `network`). "default" in `networks` is the service's own network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<super::NetworkRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    // The image (issue 13 §7); absent: `[podman] pull`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<super::PullPolicy>,
    // Health, one-shot runs and dependency order (issue 14): the agent's, not podman's,
    // so none of them is in the container's spec hash ([`Settings::for_container`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<super::HealthCheck>,
    #[serde(skip_serializing_if = "is_false")]
    pub oneshot: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: super::DependsOn,
}

/// A file of the host bind-mounted read-only into the container at `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub source: String,
    pub target: String,
}

impl Settings {
    /// Whether every field is podman's default (nothing to hash, store or print).
    pub fn is_default(&self) -> bool {
        *self == Settings::default()
    }

    /// The settings podman is given (and hashed): without the agent's own lifecycle keys
    /// (health, one-shot, dependencies), so changing those recreates nothing.
    pub fn for_container(&self) -> Settings {
        Settings {
            health: None,
            oneshot: false,
            depends_on: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// Whether the component reads files of the host at each pass (env files, secrets).
    pub fn reads_files(&self) -> bool {
        !self.env_file.is_empty() || !self.secrets.is_empty()
    }
}

/// A whole number of seconds, written as a humantime duration (`"30s"`, `"1m 30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u32);

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(std::time::Duration::from_secs(
            self.0.into(),
        )))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_seconds(&s).map_err(serde::de::Error::custom)
    }
}

/// The most a stop may wait for the process before podman kills it.
pub const MAX_STOP_TIMEOUT_SECS: u32 = 600;

/// `"30s"`, `"1m30s"`, `"0s"`: whole seconds, at most [`MAX_STOP_TIMEOUT_SECS`].
pub fn parse_seconds(s: &str) -> Result<Seconds, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"30s\" or \"2m\": {e}"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?} must be a whole number of seconds"));
    }
    if d.as_secs() > MAX_STOP_TIMEOUT_SECS.into() {
        return Err(format!(
            "{s:?} is longer than {}, the most allowed",
            humantime::format_duration(std::time::Duration::from_secs(
                MAX_STOP_TIMEOUT_SECS.into()
            ))
        ));
    }
    Ok(Seconds(d.as_secs() as u32))
}

/// A size in bytes, written as compose writes it: `"512m"`, `"1g"`, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub i64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, m) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if n != 0 && n % m == 0 {
                return write!(f, "{}{unit}", n / m);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_bytes(&s).map_err(serde::de::Error::custom)
    }
}

/// `"512m"`, `"1g"`, `"64k"`, `"100b"`, `"1048576"` (case-insensitive; `kb`, `mb`, `gb`
/// too; units of 1024): a whole number of bytes, more than 0.
pub fn parse_bytes(s: &str) -> Result<Bytes, String> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let mult: i64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size such as \"512m\" or \"1g\" (a whole number and b, k, m or g)"
            ))
        }
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as \"512m\" or \"1g\""))?;
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{s:?} must be more than 0 bytes")),
        Some(b) => Ok(Bytes(b)),
        None => Err(format!("{s:?} is too large")),
    }
}

/// CPUs in billionths (podman's `NanoCpus`), written as compose writes `cpus`: `0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NanoCpus(pub i64);

/// The most CPUs a component may ask for.
pub const MAX_CPUS: f64 = 4096.0;

impl NanoCpus {
    pub fn from_cpus(cpus: f64) -> Result<NanoCpus, String> {
        if !cpus.is_finite() || cpus <= 0.0 || cpus > MAX_CPUS {
            return Err(format!(
                "cpus {cpus} must be a number more than 0 and at most {MAX_CPUS}"
            ));
        }
        let n = (cpus * 1e9).round() as i64;
        if n < 1 {
            return Err(format!("cpus {cpus} is less than one billionth of a CPU"));
        }
        Ok(NanoCpus(n))
    }

    pub fn cpus(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl Serialize for NanoCpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.cpus())
    }
}

impl<'de> Deserialize<'de> for NanoCpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NanoCpus::from_cpus(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One resource limit: compose's `nofile = 1024` (soft = hard) or
/// `nofile = { soft = 1024, hard = 2048 }`; [`Ulimit::UNLIMITED`] (-1, as compose, docker
/// and podman write it) is no limit (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

impl Ulimit {
    /// No limit: podman's compat API takes -1 and gives the container `RLIM_INFINITY`.
    pub const UNLIMITED: i64 = -1;

    /// A limit in the order of limits: unlimited above every number.
    pub fn rank(n: i64) -> u64 {
        if n == Self::UNLIMITED {
            u64::MAX
        } else {
            n as u64
        }
    }

    /// A limit as `ulimit` prints it: a number, or "unlimited".
    pub fn show(n: i64) -> String {
        if n == Self::UNLIMITED {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum UlimitForm {
    One(i64),
    Two { soft: i64, hard: i64 },
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.soft == self.hard {
            UlimitForm::One(self.soft).serialize(s)
        } else {
            UlimitForm::Two {
                soft: self.soft,
                hard: self.hard,
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match UlimitForm::deserialize(d)? {
            UlimitForm::One(n) => Ulimit { soft: n, hard: n },
            UlimitForm::Two { soft, hard } => Ulimit { soft, hard },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (s, b, back) in [
            ("512m", 512 << 20, "512m"),
            ("1g", 1 << 30, "1g"),
            ("1G", 1 << 30, "1g"),
            ("1024mb", 1 << 30, "1g"),
            ("64k", 64 << 10, "64k"),
            ("100b", 100, "100"),
            ("1048576", 1 << 20, "1m"),
        ] {
            assert_eq!(parse_bytes(s), Ok(Bytes(b)), "{s}");
            assert_eq!(Bytes(b).to_string(), back);
            assert_eq!(parse_bytes(back), Ok(Bytes(b)));
        }
        for bad in [
            "",
            "m",
            "1.5g",
            "-1m",
            "1t",
            "0",
            "0m",
            "1 g x",
            "99999999999999g",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_timeouts_are_whole_bounded_seconds() {
        assert_eq!(parse_seconds("30s"), Ok(Seconds(30)));
        assert_eq!(parse_seconds("1m 30s"), Ok(Seconds(90)));
        assert_eq!(parse_seconds("0s"), Ok(Seconds(0)));
        assert_eq!(parse_seconds("10m"), Ok(Seconds(600)));
        assert!(parse_seconds("1500ms")
            .unwrap_err()
            .contains("whole number"));
        assert!(parse_seconds("11m").unwrap_err().contains("most allowed"));
        assert!(parse_seconds("soon").is_err());
        let json = serde_json::to_string(&Seconds(90)).unwrap();
        assert_eq!(json, "\"1m 30s\"");
        assert_eq!(serde_json::from_str::<Seconds>(&json).unwrap(), Seconds(90));
    }

    #[test]
    fn cpus_round_trip_through_their_float() {
        for c in [0.5, 1.0, 2.25, 0.001, 1e-9] {
            let n = NanoCpus::from_cpus(c).unwrap();
            let back: NanoCpus = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
            assert_eq!(back, n);
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 5000.0] {
            assert!(NanoCpus::from_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_settings_serialize_to_nothing() {
        assert_eq!(serde_json::to_string(&Settings::default()).unwrap(), "{}");
        let u: BTreeMap<String, Ulimit> =
            serde_json::from_str(r#"{"nofile":{"soft":1,"hard":2},"nproc":5}"#).unwrap();
        assert_eq!(u["nproc"], Ulimit { soft: 5, hard: 5 });
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"nofile":{"soft":1,"hard":2},"nproc":5}"#
        );
    }

    #[test]
    fn unlimited_is_minus_one_and_the_largest_limit() {
        let u: BTreeMap<String, Ulimit> =
            serde_json::from_str(r#"{"core":{"soft":0,"hard":-1},"memlock":-1}"#).unwrap();
        assert_eq!(u["memlock"], Ulimit { soft: -1, hard: -1 });
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"core":{"soft":0,"hard":-1},"memlock":-1}"#
        );
        assert!(Ulimit::rank(Ulimit::UNLIMITED) > Ulimit::rank(i64::MAX));
        assert!(Ulimit::rank(0) < Ulimit::rank(1));
        assert_eq!(Ulimit::show(-1), "unlimited");
        assert_eq!(Ulimit::show(1024), "1024");
    }
}
