//! `[proxy] kind = "none"`: no proxy; L7 routes are only reachable on their host ports.

use super::{Proxy, ProxyError, ProxyRoute, SyncReport};

/// The proxy that is not there: every sync succeeds and changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProxy;

impl Proxy for NoProxy {
    async fn sync(&self, _routes: &[ProxyRoute]) -> Result<SyncReport, ProxyError> {
        Ok(SyncReport::default())
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
        }];
        let report = NoProxy.sync(&routes).await.unwrap();
        assert_eq!(report, SyncReport::default());
        assert!(report.is_noop());
    }
}
