//! `[proxy] kind = "none"`: no proxy; L7 routes are only reachable on their host ports.

use super::{CertFiles, Challenge, Proxy, ProxyError, ProxyRoute, SyncReport, TlsProxy};

/// The proxy that is not there: every sync succeeds and changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProxy;

impl Proxy for NoProxy {
    async fn sync(&self, _routes: &[ProxyRoute]) -> Result<SyncReport, ProxyError> {
        Ok(SyncReport::default())
    }
}

/// Without a proxy nothing can answer HTTP-01 (the config refuses `issuer = "acme"`
/// with `kind = "none"`), and there is nowhere to load certificates.
impl TlsProxy for NoProxy {
    async fn add_challenge(&self, challenge: &Challenge) -> Result<(), ProxyError> {
        Err(ProxyError::InvalidRoute {
            id: challenge.id(),
            reason: "no proxy ([proxy] kind = \"none\") to answer HTTP-01".into(),
        })
    }

    async fn remove_challenge(&self, _token: &str) -> Result<(), ProxyError> {
        Ok(())
    }

    async fn remove_all_challenges(&self) -> Result<usize, ProxyError> {
        Ok(0)
    }

    async fn load_certificates(&self, _certs: &[CertFiles]) -> Result<bool, ProxyError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sync_reports_nothing_whatever_the_routes() {
        let routes = [ProxyRoute {
            id: "mcp.a.b.c".into(),
            hostname: "a.example".into(),
            upstream_port: 20000,
            withheld: false,
        }];
        let report = NoProxy.sync(&routes).await.unwrap();
        assert_eq!(report, SyncReport::default());
        assert!(report.is_noop());
    }
}
