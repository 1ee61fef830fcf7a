//! The reverse proxy as the agent sees it (docs/design.md §6): a small trait that makes
//! the proxy serve exactly the agent's L7 routes, with Caddy's admin API in `caddy/` and
//! a no-op for `[proxy] kind = "none"` in `none.rs`.

use std::future::Future;
use std::path::PathBuf;

pub mod caddy;
pub mod none;

pub use caddy::Caddy;
pub use none::NoProxy;

use crate::config::{Config, IssuerKind, ProxyKind};

/// Every id the agent writes into the proxy starts with this; ids without it belong to
/// someone else and are never modified.
pub const OWNED_PREFIX: &str = "mcp.";

/// Ids of the ACME challenge routes, written by the certificate module while an order is
/// pending. `sync` never deletes them even though they carry [`OWNED_PREFIX`].
pub const ACME_PREFIX: &str = "mcp.acme.";

/// One L7 route as the proxy should serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    /// `mcp.<service>.<component>.<route>` (see [`ProxyRoute::id_for`]).
    pub id: String,
    pub hostname: String,
    /// The route's host port: the proxy forwards to `127.0.0.1:<upstream_port>`.
    pub upstream_port: u16,
    /// Its component's health check does not pass (issue 14): the proxy answers 503
    /// for it instead of forwarding.
    pub withheld: bool,
}

impl ProxyRoute {
    /// The proxy id of a route: stable across passes, so the proxy entry can be found,
    /// compared and replaced in place.
    pub fn id_for(service: &str, component: &str, route: &str) -> String {
        format!("{OWNED_PREFIX}{service}.{component}.{route}")
    }
}

/// What one `sync` changed, by route id (each list sorted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<String>,
    /// Replaced in place, or moved between the agent's servers.
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Wanted routes that were already served exactly as wanted.
    pub unchanged: usize,
    /// Write requests sent to the proxy (creating servers and fixing their settings
    /// included); 0 means the pass only read.
    pub writes: usize,
}

impl SyncReport {
    /// Whether the proxy was already as wanted and nothing was written.
    pub fn is_noop(&self) -> bool {
        self.writes == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy is down: its admin socket is missing, refuses connections, drops them
    /// or does not answer in time. Routes stay pending until it is back.
    #[error("proxy admin socket {socket} unavailable for {method} {path}: {reason}")]
    Unavailable {
        socket: String,
        method: String,
        path: String,
        reason: String,
    },
    /// The proxy answered, and refused the request.
    #[error("proxy admin API {method} {path} on {socket} answered {status}: {body}")]
    Api {
        socket: String,
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    /// The proxy answered something the agent cannot make sense of.
    #[error("proxy admin API {method} {path} on {socket}: {reason}")]
    Protocol {
        socket: String,
        method: String,
        path: String,
        reason: String,
    },
    /// A route the agent asked for cannot be written (a bug upstream of the proxy).
    #[error("route {id:?} cannot be served by the proxy: {reason}")]
    InvalidRoute { id: String, reason: String },
}

impl ProxyError {
    /// Whether the proxy is down (as opposed to refusing or garbling a request): the
    /// caller marks routes pending and retries when it comes back.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProxyError::Unavailable { .. })
    }
}

/// A reverse proxy the agent registers its L7 routes with.
pub trait Proxy: Send + Sync {
    /// Makes the proxy serve exactly `routes` among the ids it owns (prefix
    /// [`OWNED_PREFIX`], except [`ACME_PREFIX`]), creating its servers if absent; never
    /// touches any other part of the proxy's config. Cheap when nothing changed (reads
    /// only), so it can run on every pass.
    fn sync(
        &self,
        routes: &[ProxyRoute],
    ) -> impl Future<Output = Result<SyncReport, ProxyError>> + Send;
}

/// An HTTP-01 answer (RFC 8555 §8.3) the proxy serves while an ACME order is pending:
/// `key_authorization` as `text/plain` at `/.well-known/acme-challenge/<token>` of
/// `hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub token: String,
    pub hostname: String,
    pub key_authorization: String,
}

impl Challenge {
    /// The proxy id of the challenge's route: `mcp.acme.<token>`.
    pub fn id(&self) -> String {
        challenge_id(&self.token)
    }
}

/// The proxy id of the challenge route for `token`.
pub fn challenge_id(token: &str) -> String {
    format!("{ACME_PREFIX}{token}")
}

/// Whether `token` is an ACME token the agent can put into a route id and a URL path:
/// base64url characters only (RFC 8555 §8.1), at most 256 of them.
pub fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Tag of every certificate entry the agent loads into the proxy: entries without it
/// are someone else's and never replaced.
pub const CERT_TAG: &str = "mcp";

/// A certificate the proxy must serve: a full-chain PEM file and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's serial (hex): part of the entry, so a renewed certificate is a config
    /// change and the proxy reads the files again.
    pub serial: String,
}

/// The proxy's part in TLS (docs/design.md §7): HTTP-01 answers while orders are
/// pending, and the certificates it serves on the HTTPS server.
pub trait TlsProxy: Send + Sync {
    /// Serves `challenge` on the HTTP server, before any other route.
    fn add_challenge(
        &self,
        challenge: &Challenge,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send;

    /// Stops serving the challenge of `token`; absent already is fine.
    fn remove_challenge(&self, token: &str) -> impl Future<Output = Result<(), ProxyError>> + Send;

    /// Removes every challenge route (left by an order that was interrupted); how many.
    fn remove_all_challenges(&self) -> impl Future<Output = Result<usize, ProxyError>> + Send;

    /// Makes the proxy load exactly `certs` among the entries tagged [`CERT_TAG`],
    /// leaving every other entry alone. Returns whether it wrote (false: already so).
    fn load_certificates(
        &self,
        certs: &[CertFiles],
    ) -> impl Future<Output = Result<bool, ProxyError>> + Send;
}

/// The proxy chosen by `[proxy] kind`, for callers that pick it at run time (the trait
/// is not object safe).
#[derive(Debug, Clone)]
pub enum AnyProxy {
    None(NoProxy),
    Caddy(Caddy),
}

impl AnyProxy {
    /// `[proxy]` as configured; routes go on the HTTPS server unless `[certs] issuer` is
    /// `"none"`.
    pub fn from_config(config: &Config) -> AnyProxy {
        let p = &config.proxy;
        match p.kind {
            ProxyKind::None => AnyProxy::None(NoProxy),
            ProxyKind::Caddy => AnyProxy::Caddy(Caddy::new(
                p.admin_socket.clone(),
                p.server.clone(),
                p.http_listen.clone(),
                p.https_listen.clone(),
                config.certs.issuer != IssuerKind::None,
            )),
        }
    }
}

impl AnyProxy {
    /// Whether a proxy serves the routes at all (false for `kind = "none"`: routes are
    /// then reachable on their host ports only).
    pub fn serves_routes(&self) -> bool {
        !matches!(self, AnyProxy::None(_))
    }
}

impl Proxy for AnyProxy {
    async fn sync(&self, routes: &[ProxyRoute]) -> Result<SyncReport, ProxyError> {
        match self {
            AnyProxy::None(p) => p.sync(routes).await,
            AnyProxy::Caddy(p) => p.sync(routes).await,
        }
    }
}

impl TlsProxy for AnyProxy {
    async fn add_challenge(&self, challenge: &Challenge) -> Result<(), ProxyError> {
        match self {
            AnyProxy::None(p) => p.add_challenge(challenge).await,
            AnyProxy::Caddy(p) => p.add_challenge(challenge).await,
        }
    }

    async fn remove_challenge(&self, token: &str) -> Result<(), ProxyError> {
        match self {
            AnyProxy::None(p) => p.remove_challenge(token).await,
            AnyProxy::Caddy(p) => p.remove_challenge(token).await,
        }
    }

    async fn remove_all_challenges(&self) -> Result<usize, ProxyError> {
        match self {
            AnyProxy::None(p) => p.remove_all_challenges().await,
            AnyProxy::Caddy(p) => p.remove_all_challenges().await,
        }
    }

    async fn load_certificates(&self, certs: &[CertFiles]) -> Result<bool, ProxyError> {
        match self {
            AnyProxy::None(p) => p.load_certificates(certs).await,
            AnyProxy::Caddy(p) => p.load_certificates(certs).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_ids_name_service_component_and_route() {
        assert_eq!(
            ProxyRoute::id_for("shop", "web", "http"),
            "mcp.shop.web.http"
        );
    }

    #[test]
    fn challenge_ids_are_the_acme_prefix_and_the_token() {
        let c = Challenge {
            token: "aB-_9".into(),
            hostname: "a.example".into(),
            key_authorization: "aB-_9.thumb".into(),
        };
        assert_eq!(c.id(), "mcp.acme.aB-_9");
        assert!(is_token("aB-_9"));
        for bad in ["", "a.b", "a/b", "a b", &"x".repeat(257)] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn kind_none_selects_the_no_op_proxy() {
        let config = Config::default();
        assert!(matches!(AnyProxy::from_config(&config), AnyProxy::None(_)));
    }

    #[test]
    fn kind_caddy_puts_routes_on_https_only_when_an_issuer_is_set() {
        let mut config = Config::default();
        config.proxy.kind = ProxyKind::Caddy;
        config.certs.issuer = IssuerKind::None;
        let AnyProxy::Caddy(c) = AnyProxy::from_config(&config) else {
            panic!("expected caddy");
        };
        assert!(!c.tls());
        config.certs.issuer = IssuerKind::Acme;
        let AnyProxy::Caddy(c) = AnyProxy::from_config(&config) else {
            panic!("expected caddy");
        };
        assert!(c.tls());
        assert_eq!(c.admin_socket(), config.proxy.admin_socket.as_path());
    }
}
