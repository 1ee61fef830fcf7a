//! TLS certificates for L7 routes (docs/design.md §7): one certificate per service covering all
//! its L7 hostnames, kept in `cert_dir`, renewed before `renew_before`, ordered through
//! an [`Issuer`] (ACME in `acme.rs`), and loaded into the proxy.
//!
//! [`Certs::ensure`] is the whole job, run after the routes are synced: decide per
//! service from the files alone (no network when nothing is due), order what is due
//! and not backing off, then make the proxy load every usable pair.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::control::{Backoff, BackoffPolicy};

use crate::config::{Config, IssuerKind};
use crate::proxy::{CertFiles, ProxyError, TlsProxy};
use crate::registry::CertStatus;
use crate::spec::{RouteMode, Service};

pub mod acme;
pub mod files;
pub mod trust;

pub use acme::Acme;
pub use files::CertInfo;

/// An order (account, challenges, validation, download) taking longer than this is
/// abandoned and counts as failed: the CA is stuck, and the task must end.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// One service's certificate as wanted: every L7 hostname of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub service: String,
    /// Lowercase, sorted, without duplicates; never empty.
    pub names: Vec<String>,
}

/// The certificates the active services need: one per service with at least one L7
/// hostname, whatever the desired state of its components (a stopped component keeps
/// its names, so starting it again orders nothing).
pub fn wanted(services: &[Service]) -> Vec<Wanted> {
    let mut out = Vec::new();
    for s in services.iter().filter(|s| s.active) {
        let mut names: Vec<String> = s
            .components
            .iter()
            .flat_map(|c| &c.routes)
            .filter(|r| r.mode == RouteMode::L7)
            .filter_map(|r| r.hostname.as_ref())
            .map(|h| h.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        if !names.is_empty() {
            out.push(Wanted {
                service: s.name.clone(),
                names,
            });
        }
    }
    out
}

/// Why a certificate has to be ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    Missing,
    /// The files are there but cannot be used (unreadable, corrupt, key mismatch).
    Unusable(String),
    /// It lacks these hostnames of the service.
    Uncovered(Vec<String>),
    /// It expires within `renew_before`.
    Expiring {
        not_after: SystemTime,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Missing => f.write_str("no certificate yet"),
            Why::Unusable(e) => write!(f, "the certificate files are unusable: {e}"),
            Why::Uncovered(names) => write!(f, "it does not cover {}", names.join(", ")),
            Why::Expiring { not_after } => write!(
                f,
                "it expires at {}",
                humantime::format_rfc3339_seconds(*not_after)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Order(Why),
}

/// Keep a certificate while it covers every name and expires later than
/// `now + renew_before`; order otherwise. Pure: `found` is what [`files::read`] said.
pub fn decide(
    found: &Result<Option<CertInfo>, String>,
    names: &[String],
    now: SystemTime,
    renew_before: Duration,
) -> Decision {
    let info = match found {
        Ok(None) => return Decision::Order(Why::Missing),
        Err(e) => return Decision::Order(Why::Unusable(e.clone())),
        Ok(Some(info)) => info,
    };
    let uncovered: Vec<String> = names.iter().filter(|n| !info.covers(n)).cloned().collect();
    if !uncovered.is_empty() {
        return Decision::Order(Why::Uncovered(uncovered));
    }
    let renew_at = info
        .not_after
        .checked_sub(renew_before)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if now >= renew_at {
        return Decision::Order(Why::Expiring {
            not_after: info.not_after,
        });
    }
    Decision::Keep
}

/// A certificate chain and its new key, as the CA issued them.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("certificates are off ([certs] issuer = \"none\")")]
    Disabled,
    #[error("ca_bundle {path}: {reason}")]
    CaBundle { path: PathBuf, reason: String },
    #[error("cannot set up TLS for the ACME client: {0}")]
    Tls(String),
    #[error("ACME account file {path}: {reason}")]
    AccountFile { path: PathBuf, reason: String },
    /// The CA is unreachable, or refused or failed a step.
    #[error("ACME server {url}: cannot {step}: {reason}")]
    Acme {
        url: String,
        step: &'static str,
        reason: String,
    },
    #[error("the ACME server offers no http-01 challenge for {host}")]
    NoHttp01 { host: String },
    #[error("authorization for {host} is {status}")]
    Authorization { host: String, status: String },
    #[error("cannot answer http-01 through the proxy: {0}")]
    Proxy(#[source] ProxyError),
    #[error("the order for {names} is invalid: {reason}")]
    Invalid { names: String, reason: String },
    #[error("the certificate the CA returned is unusable: {0}")]
    BadCertificate(String),
    #[error("cannot write the certificate files in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the order took longer than {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Something that issues certificates for a set of hostnames, answering its
/// challenges through the proxy.
pub trait Issuer: Send + Sync {
    fn issue<P: TlsProxy>(
        &self,
        names: &[String],
        proxy: &P,
    ) -> impl Future<Output = Result<Issued, IssueError>> + Send;
}

/// `[certs] issuer = "none"`: no certificates; L7 routes are served over plain HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIssuer;

impl Issuer for NoIssuer {
    async fn issue<P: TlsProxy>(
        &self,
        _names: &[String],
        _proxy: &P,
    ) -> Result<Issued, IssueError> {
        Err(IssueError::Disabled)
    }
}

/// The issuer chosen by `[certs] issuer` (the trait is not object safe).
pub enum AnyIssuer {
    None(NoIssuer),
    Acme(Box<Acme>),
}

impl AnyIssuer {
    pub fn from_config(config: &Config) -> AnyIssuer {
        match config.certs.issuer {
            IssuerKind::None => AnyIssuer::None(NoIssuer),
            IssuerKind::Acme => AnyIssuer::Acme(Box::new(Acme::from_config(config))),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, AnyIssuer::None(_))
    }
}

impl Issuer for AnyIssuer {
    async fn issue<P: TlsProxy>(&self, names: &[String], proxy: &P) -> Result<Issued, IssueError> {
        match self {
            AnyIssuer::None(i) => i.issue(names, proxy).await,
            AnyIssuer::Acme(i) => i.issue(names, proxy).await,
        }
    }
}

/// A service's certificate state as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// A certificate covering every name, not due for renewal.
    Valid,
    /// Needed and not obtained yet (no attempt so far, or the proxy is unreachable).
    Pending,
    /// The last order failed; retried at `next_retry`. An older certificate, if any,
    /// is still served.
    Failed,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Valid => "valid",
            CertState::Pending => "pending",
            CertState::Failed => "failed",
        }
    }
}

/// What [`Certs::ensure`] found or did for one service.
#[derive(Debug, Clone)]
pub struct CertReport {
    pub service: String,
    pub names: Vec<String>,
    pub state: CertState,
    /// The certificate in `cert_dir` after the run (the old one while renewal fails).
    pub current: Option<CertInfo>,
    /// Why an order was needed, when one was.
    pub why: Option<Why>,
    /// This run ordered and stored a new certificate.
    pub issued: bool,
    /// How long the order took, when one was attempted.
    pub order_time: Option<Duration>,
    pub error: Option<String>,
    pub next_retry: Option<SystemTime>,
}

impl CertReport {
    /// The registry's record of it.
    pub fn status(&self) -> CertStatus {
        CertStatus {
            service: self.service.clone(),
            state: self.state.as_str().to_string(),
            names: self.names.clone(),
            not_after_ms: self.current.as_ref().map(|c| unix_ms(c.not_after)),
            serial: self.current.as_ref().map(|c| c.serial.clone()),
            last_error: self.error.clone(),
            next_retry_ms: self.next_retry.map(unix_ms),
            updated_ms: crate::registry::now_ms(),
        }
    }
}

/// The record of certificates that could not even be looked at (the proxy is down):
/// pending, with the reason.
pub fn pending(wanted: &[Wanted], error: &str) -> Vec<CertStatus> {
    wanted
        .iter()
        .map(|w| CertStatus {
            service: w.service.clone(),
            state: CertState::Pending.as_str().to_string(),
            names: w.names.clone(),
            not_after_ms: None,
            serial: None,
            last_error: Some(error.to_string()),
            next_retry_ms: None,
            updated_ms: crate::registry::now_ms(),
        })
        .collect()
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The outcome of one [`Certs::ensure`].
#[derive(Debug)]
pub struct EnsureReport {
    pub certs: Vec<CertReport>,
    /// Loading the certificates into the proxy: whether it wrote.
    pub load: Result<bool, ProxyError>,
}

impl EnsureReport {
    pub fn failed(&self) -> impl Iterator<Item = &CertReport> {
        self.certs.iter().filter(|c| c.state != CertState::Valid)
    }

    /// Whether everything is in place: every certificate valid and loaded.
    pub fn ok(&self) -> bool {
        self.load.is_ok() && self.failed().next().is_none()
    }

    /// The earliest retry of a failed order.
    pub fn next_retry(&self) -> Option<SystemTime> {
        self.certs.iter().filter_map(|c| c.next_retry).min()
    }

    /// The registry's record of every certificate.
    pub fn statuses(&self) -> Vec<CertStatus> {
        self.certs.iter().map(CertReport::status).collect()
    }

    /// One line for `--once` and the log.
    pub fn describe(&self) -> String {
        let valid = self
            .certs
            .iter()
            .filter(|c| c.state == CertState::Valid)
            .count();
        let issued = self.certs.iter().filter(|c| c.issued).count();
        let failed = self.certs.len() - valid;
        let mut line = format!("{valid} valid");
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        line.push_str(&match issued {
            0 => ", unchanged".to_string(),
            n => format!(" (issued {n})"),
        });
        if let Err(e) = &self.load {
            line.push_str(&format!("; not loaded into the proxy: {e}"));
        }
        line
    }
}

/// Retry delays of a service whose order failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Doubling and jittered, like every retry of the agent; a schedule left alone for
    /// four of its longest delays starts over.
    fn schedule(&self) -> Backoff {
        Backoff::new(BackoffPolicy::doubling(
            self.initial,
            self.max,
            self.max.saturating_mul(4),
        ))
    }
}

struct Retry {
    schedule: Backoff,
    /// The names the failed order was for: new names are tried at once.
    names: Vec<String>,
    next: SystemTime,
    error: String,
}

/// The certificate manager: settings, the parsed-files cache and the per-service retry
/// schedules. Owned by one task at a time (the daemon moves it into its certificate
/// task and gets it back with the report).
pub struct Certs {
    dir: PathBuf,
    renew_before: Duration,
    policy: RetryPolicy,
    cache: files::Cache,
    retries: HashMap<String, Retry>,
    swept: bool,
}

impl Certs {
    pub fn new(dir: PathBuf, renew_before: Duration, policy: RetryPolicy) -> Certs {
        Certs {
            dir,
            renew_before,
            policy,
            cache: files::Cache::default(),
            retries: HashMap::new(),
            swept: false,
        }
    }

    pub fn from_config(config: &Config) -> Certs {
        Certs::new(
            config.proxy.cert_dir.clone(),
            config.certs.renew_before,
            RetryPolicy {
                initial: config.certs.backoff_initial,
                max: config.certs.backoff_max,
            },
        )
    }

    /// Takes new settings (SIGHUP), keeping the cache and the retry schedules.
    pub fn configure(&mut self, config: &Config) {
        let fresh = Certs::from_config(config);
        if fresh.dir != self.dir {
            self.cache = files::Cache::default();
        }
        self.dir = fresh.dir;
        self.renew_before = fresh.renew_before;
        self.policy = fresh.policy;
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Makes every wanted certificate valid where it can: keeps what is fine, orders
    /// what is missing, uncovered or due (unless its retry is not due yet and
    /// `ignore_backoff` is false), then has the proxy load every usable pair. Orders run
    /// one after the other; a failed one is retried later with backoff.
    pub async fn ensure<I: Issuer, P: TlsProxy>(
        &mut self,
        issuer: &I,
        proxy: &P,
        wanted: &[Wanted],
        now: SystemTime,
        ignore_backoff: bool,
    ) -> EnsureReport {
        if !self.swept {
            // Challenge routes left by an order this process never finished.
            match proxy.remove_all_challenges().await {
                Ok(n) => {
                    self.swept = true;
                    if n > 0 {
                        tracing::info!(
                            removed = n,
                            "removed challenge routes left by an interrupted order"
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot sweep challenge routes yet"),
            }
        }
        let mut certs = Vec::with_capacity(wanted.len());
        for w in wanted {
            certs.push(self.ensure_one(issuer, proxy, w, now, ignore_backoff).await);
        }
        self.cache.retain(|s| wanted.iter().any(|w| w.service == s));
        self.retries
            .retain(|s, _| wanted.iter().any(|w| w.service == *s));

        let mut load = Vec::new();
        for w in wanted {
            if let Ok(Some(info)) = self.cache.read(&self.dir, &w.service) {
                // An expired certificate serves nobody; one missing a new name still
                // serves the others.
                if info.not_after > now {
                    let (cert, key) = files::paths(&self.dir, &w.service);
                    load.push(CertFiles {
                        cert,
                        key,
                        serial: info.serial,
                    });
                }
            }
        }
        let load = proxy.load_certificates(&load).await;
        EnsureReport { certs, load }
    }

    async fn ensure_one<I: Issuer, P: TlsProxy>(
        &mut self,
        issuer: &I,
        proxy: &P,
        w: &Wanted,
        now: SystemTime,
        ignore_backoff: bool,
    ) -> CertReport {
        let found = self.cache.read(&self.dir, &w.service);
        let mut report = CertReport {
            service: w.service.clone(),
            names: w.names.clone(),
            state: CertState::Valid,
            current: found.clone().ok().flatten(),
            why: None,
            issued: false,
            order_time: None,
            error: None,
            next_retry: None,
        };
        let why = match decide(&found, &w.names, now, self.renew_before) {
            Decision::Keep => {
                self.retries.remove(&w.service);
                return report;
            }
            Decision::Order(why) => why,
        };
        report.why = Some(why.clone());
        if let Some(r) = self.retries.get(&w.service) {
            if r.names == w.names && r.next > now && !ignore_backoff {
                report.state = CertState::Failed;
                report.error = Some(r.error.clone());
                report.next_retry = Some(r.next);
                return report;
            }
        }
        tracing::info!(
            service = %w.service, names = ?w.names, reason = %why,
            "ordering a certificate"
        );
        let started = Instant::now();
        let result = match tokio::time::timeout(ORDER_TIMEOUT, issuer.issue(&w.names, proxy)).await
        {
            Ok(r) => r,
            Err(_) => Err(IssueError::Timeout(ORDER_TIMEOUT)),
        };
        let result = result.and_then(|issued| self.store(w, &issued, now));
        report.order_time = Some(started.elapsed());
        match result {
            Ok(info) => {
                tracing::info!(
                    service = %w.service, serial = %info.serial,
                    not_after = %humantime::format_rfc3339_seconds(info.not_after),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "certificate issued"
                );
                self.retries.remove(&w.service);
                report.current = Some(info);
                report.issued = true;
            }
            Err(e) => {
                let error = e.to_string();
                let policy = self.policy;
                let retry = self
                    .retries
                    .entry(w.service.clone())
                    .or_insert_with(|| Retry {
                        schedule: policy.schedule(),
                        names: w.names.clone(),
                        next: now,
                        error: String::new(),
                    });
                if retry.names != w.names {
                    retry.schedule = policy.schedule();
                    retry.names = w.names.clone();
                }
                let delay = retry.schedule.next_delay(tokio::time::Instant::now());
                retry.next = now + delay;
                retry.error = error.clone();
                tracing::warn!(
                    service = %w.service, error = %error,
                    retry_in = %humantime::format_duration(Duration::from_secs(delay.as_secs())),
                    "certificate order failed; the current certificate (if any) is still served"
                );
                report.state = CertState::Failed;
                report.error = Some(error);
                report.next_retry = Some(retry.next);
            }
        }
        report
    }

    /// Checks what the CA returned (a chain whose leaf is for the key and covers every
    /// name, and is valid now) and writes it.
    fn store(
        &mut self,
        w: &Wanted,
        issued: &Issued,
        now: SystemTime,
    ) -> Result<CertInfo, IssueError> {
        let info = files::check(issued.chain_pem.as_bytes(), &issued.key_pem)
            .map_err(IssueError::BadCertificate)?;
        let uncovered: Vec<&String> = w.names.iter().filter(|n| !info.covers(n)).collect();
        if !uncovered.is_empty() {
            return Err(IssueError::BadCertificate(format!(
                "it does not cover {uncovered:?}"
            )));
        }
        if info.not_after <= now {
            return Err(IssueError::BadCertificate("it has already expired".into()));
        }
        files::write_pair(&self.dir, &w.service, &issued.chain_pem, &issued.key_pem).map_err(
            |source| IssueError::Write {
                dir: self.dir.clone(),
                source,
            },
        )?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests;

/// Refuses key material others could replace: the ACME account key, the certificate
/// directory and the keys in it must not be group- or world-writable. Absent files are
/// fine (they are created with safe modes).
pub fn check_modes(config: &Config) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if config.certs.issuer == IssuerKind::None {
        return Ok(());
    }
    let writable = |p: &std::path::Path, what: &str, fix: &str| -> Result<(), String> {
        match std::fs::metadata(p) {
            Ok(m) if m.permissions().mode() & 0o022 != 0 => Err(format!(
                "{what} {} is group- or world-writable (mode {:o}); run chmod {fix} on it",
                p.display(),
                m.permissions().mode() & 0o7777
            )),
            _ => Ok(()),
        }
    };
    writable(
        &acme::account_path(&config.database.path),
        "the ACME account key",
        "600",
    )?;
    let dir = &config.proxy.cert_dir;
    writable(dir, "the certificate directory", "700")?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "key") {
                writable(&p, "the private key", "600")?;
            }
        }
    }
    Ok(())
}
