//! `[certs] issuer = "acme"`: certificates from an RFC 8555 CA (instant-acme), each
//! HTTP-01 challenge answered by a temporary proxy route.
//!
//! The account key is created once and kept beside the registry
//! (`acme-account.json`, 0600); later runs reuse it. A CA that forgot the account (a
//! test CA restarted, say) gets the same key registered again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, Key, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::{files, IssueError, Issued, Issuer};
use crate::config::Config;
use crate::proxy::{Challenge, TlsProxy};

/// The account file's name, in the registry's directory.
pub const ACCOUNT_FILE: &str = "acme-account.json";

/// How long a TCP connection to the CA may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Orders started again after a request failed on `badNonce` three times in a row.
const BAD_NONCE_ORDERS: u32 = 2;

/// Polling of an order while the CA validates and issues: quick at first (a local CA
/// validates in milliseconds), then slower, for at most a minute each.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(200))
    .backoff(1.5)
    .timeout(Duration::from_secs(60));

/// What the account file holds: the CA it belongs to and instant-acme's credentials
/// (the account URL and its PKCS#8 key).
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

/// An ACME client for `directory_url`, with the account loaded on first use.
pub struct Acme {
    directory_url: String,
    contact: Vec<String>,
    ca_bundle: Option<PathBuf>,
    account_path: PathBuf,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Acme {
    pub fn new(
        directory_url: String,
        contact: Vec<String>,
        ca_bundle: Option<PathBuf>,
        account_path: PathBuf,
    ) -> Acme {
        Acme {
            directory_url,
            contact,
            ca_bundle,
            account_path,
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// `[certs]` as configured; the account file beside `[database].path`.
    pub fn from_config(config: &Config) -> Acme {
        Acme::new(
            config.certs.directory_url.clone(),
            config.certs.contact.clone(),
            config.certs.ca_bundle.clone(),
            account_path(&config.database.path),
        )
    }

    pub fn account_path(&self) -> &Path {
        &self.account_path
    }

    fn acme_error(&self, step: &'static str) -> impl Fn(instant_acme::Error) -> IssueError + '_ {
        move |e| IssueError::Acme {
            url: self.directory_url.clone(),
            step,
            reason: super::trust::refusal(&e)
                .unwrap_or_else(|| super::trust::readable(&crate::error::chain(&e))),
        }
    }

    fn account_file_error(&self, reason: String) -> IssueError {
        IssueError::AccountFile {
            path: self.account_path.clone(),
            reason,
        }
    }

    /// The account, from memory, the account file, or created at the CA (and stored).
    async fn account(&self) -> Result<Account, IssueError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let http = http_client(self.ca_bundle.as_deref())?;
        let account = match self.load()? {
            Some(credentials) => Account::builder_with_http(http)
                .from_credentials(credentials)
                .await
                .map_err(self.acme_error("read the directory"))?,
            None => {
                let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(http)
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.directory_url.clone(),
                        None,
                    )
                    .await
                    .map_err(self.acme_error("create an account"))?;
                self.store(credentials)?;
                tracing::info!(url = %self.directory_url, file = %self.account_path.display(), "ACME account created");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Registers the stored key again, for a CA that no longer knows the account.
    async fn reregister(&self) -> Result<Account, IssueError> {
        let mut slot = self.account.lock().await;
        *slot = None;
        let credentials = self
            .load()?
            .ok_or_else(|| self.account_file_error("disappeared".into()))?;
        let der = credentials.private_key().clone_key();
        let key = Key::from_pkcs8_der(der.clone_key())
            .map_err(|e| self.account_file_error(format!("the key is unusable: {e}")))?;
        let http = http_client(self.ca_bundle.as_deref())?;
        let (account, credentials) = Account::builder_with_http(http)
            .create_from_key((key, PrivateKeyDer::Pkcs8(der)), self.directory_url.clone())
            .await
            .map_err(self.acme_error("register the account again"))?;
        if !self.contact.is_empty() {
            let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
            account
                .update_contacts(&contact)
                .await
                .map_err(self.acme_error("set the account's contacts"))?;
        }
        self.store(credentials)?;
        tracing::info!(url = %self.directory_url, "the ACME server did not know the account; registered its key again");
        *slot = Some(account.clone());
        Ok(account)
    }

    /// The stored credentials for this CA; `None` when there are none yet. A file for
    /// another CA (the directory URL changed) is kept as `<file>.prev`.
    fn load(&self) -> Result<Option<AccountCredentials>, IssueError> {
        let text = match std::fs::read(&self.account_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.account_file_error(e.to_string())),
        };
        let stored: StoredAccount = serde_json::from_slice(&text)
            .map_err(|e| self.account_file_error(format!("not an account file: {e}")))?;
        if stored.directory_url != self.directory_url {
            let prev = self.account_path.with_extension("json.prev");
            tracing::warn!(
                file = %self.account_path.display(), was = %stored.directory_url,
                now = %self.directory_url, kept_as = %prev.display(),
                "the account file is for another ACME server; a new account will be created"
            );
            std::fs::rename(&self.account_path, &prev)
                .map_err(|e| self.account_file_error(format!("cannot move it aside: {e}")))?;
            return Ok(None);
        }
        Ok(Some(stored.credentials))
    }

    fn store(&self, credentials: AccountCredentials) -> Result<(), IssueError> {
        let stored = StoredAccount {
            directory_url: self.directory_url.clone(),
            credentials,
        };
        let text = serde_json::to_vec_pretty(&stored).expect("credentials serialize");
        files::write_atomic(&self.account_path, &text, 0o600)
            .map_err(|e| self.account_file_error(format!("cannot write: {e}")))
    }

    /// One order: challenges answered through `proxy` (and removed again, whatever
    /// happens), validation awaited, a new key and CSR, the chain downloaded.
    async fn order<P: TlsProxy>(
        &self,
        account: &Account,
        names: &[String],
        proxy: &P,
    ) -> Result<Issued, IssueError> {
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(self.acme_error("create an order"))?;
        let mut tokens = Vec::new();
        let result = self.complete(&mut order, names, proxy, &mut tokens).await;
        for token in &tokens {
            if let Err(e) = proxy.remove_challenge(token).await {
                tracing::warn!(error = %e, token = %token, "cannot remove a challenge route; it is swept at the next start");
            }
        }
        result
    }

    async fn complete<P: TlsProxy>(
        &self,
        order: &mut Order,
        names: &[String],
        proxy: &P,
        tokens: &mut Vec<String>,
    ) -> Result<Issued, IssueError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(self.acme_error("read an authorization"))?;
            let host = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                // Reused from an earlier order.
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(IssueError::Authorization {
                        host,
                        status: format!("{other:?}").to_lowercase(),
                    })
                }
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| IssueError::NoHttp01 { host: host.clone() })?;
            let c = Challenge {
                token: challenge.token.clone(),
                hostname: host,
                key_authorization: challenge.key_authorization().as_str().to_string(),
            };
            proxy.add_challenge(&c).await.map_err(IssueError::Proxy)?;
            tokens.push(c.token);
            challenge
                .set_ready()
                .await
                .map_err(self.acme_error("answer a challenge"))?;
        }
        let status = order
            .poll_ready(&POLL)
            .await
            .map_err(self.acme_error("have the challenges validated"))?;
        if status != OrderStatus::Ready {
            return Err(IssueError::Invalid {
                names: names.join(", "),
                reason: why_invalid(order).await,
            });
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(self.acme_error("finalize the order"))?;
        let chain_pem = order
            .poll_certificate(&POLL)
            .await
            .map_err(self.acme_error("download the certificate"))?;
        Ok(Issued { chain_pem, key_pem })
    }
}

impl Issuer for Acme {
    async fn issue<P: TlsProxy>(&self, names: &[String], proxy: &P) -> Result<Issued, IssueError> {
        let mut account = self.account().await?;
        let mut reregistered = false;
        let mut nonce_orders = 0;
        loop {
            match self.order(&account, names, proxy).await {
                Err(IssueError::Acme { reason, .. })
                    if reason.contains("accountDoesNotExist") && !reregistered =>
                {
                    reregistered = true;
                    account = self.reregister().await?;
                }
                // instant-acme retries a rejected nonce twice per request; a CA that
                // rejects more (pebble rejects 5 % at random) gets a fresh order.
                Err(IssueError::Acme { reason, .. })
                    if reason.contains("badNonce") && nonce_orders < BAD_NONCE_ORDERS =>
                {
                    nonce_orders += 1;
                    tracing::debug!(reason = %reason, "nonce rejected again; a new order");
                }
                other => return other,
            }
        }
    }
}

/// `<dir of registry>/acme-account.json`.
pub fn account_path(registry: &Path) -> PathBuf {
    match registry.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(ACCOUNT_FILE),
        _ => PathBuf::from(ACCOUNT_FILE),
    }
}

/// The challenge errors of an order that went invalid, as the CA reports them.
async fn why_invalid(order: &mut Order) -> String {
    if let Some(p) = &order.state().error {
        return p.to_string();
    }
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            for c in &state.challenges {
                if let Some(e) = &c.error {
                    reasons.push(format!("{}: {e}", state.identifier()));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the CA gave no reason".into()
    } else {
        reasons.join("; ")
    }
}

/// An HTTPS client trusting the system's roots and, when set, those of `ca_bundle`
/// (the test CA, or a private one).
fn http_client(ca_bundle: Option<&Path>) -> Result<Box<dyn HttpClient>, IssueError> {
    let mut extra = Vec::new();
    if let Some(path) = ca_bundle {
        let bundle_error = |reason: String| IssueError::CaBundle {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bundle_error(e.to_string()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            extra.push(cert.map_err(|e| bundle_error(format!("not PEM: {e}")))?);
        }
        if extra.is_empty() {
            return Err(bundle_error("holds no certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned: Vec<CertificateDer<'static>> = extra.clone();
    let platform =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| IssueError::Tls(e.to_string()))?;
    let verifier = super::trust::Verifier::new(Arc::new(platform), pinned);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IssueError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, BodyWrapper<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_file_sits_beside_the_registry() {
        assert_eq!(
            account_path(Path::new("/var/lib/mcp-agent/registry.db")),
            PathBuf::from("/var/lib/mcp-agent/acme-account.json")
        );
        assert_eq!(
            account_path(Path::new("registry.db")),
            PathBuf::from("acme-account.json")
        );
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "nothing here\n").unwrap();
        let e = http_client(Some(&p)).err().unwrap().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = http_client(Some(&dir.path().join("absent.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("absent.pem"), "{e}");
    }

    #[test]
    fn a_ca_bundle_is_trusted_beside_the_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&p, params.self_signed(&key).unwrap().pem()).unwrap();
        assert!(http_client(Some(&p)).is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_ca_is_an_error_naming_the_url_and_the_step() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("https://127.0.0.1:{port}/dir");
        let acme = Acme::new(url.clone(), vec![], None, dir.path().join(ACCOUNT_FILE));
        let e = acme
            .issue(&["a.example".to_string()], &crate::proxy::NoProxy)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, IssueError::Acme { .. }), "{msg}");
        assert!(
            msg.contains(&url) && msg.contains("create an account"),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
        assert!(!dir.path().join(ACCOUNT_FILE).exists());
    }

    #[test]
    fn stored_credentials_for_another_ca_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCOUNT_FILE);
        let creds: AccountCredentials = serde_json::from_str(
            r#"{"id":"https://ca.test/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://old.test/dir"}"#,
        )
        .unwrap();
        let old = Acme::new("https://old.test/dir".into(), vec![], None, path.clone());
        old.store(creds).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(old.load().unwrap().is_some(), "same CA: reused");
        let new = Acme::new("https://new.test/dir".into(), vec![], None, path.clone());
        assert!(new.load().unwrap().is_none());
        assert!(!path.exists());
        assert!(dir.path().join("acme-account.json.prev").exists());
    }

    #[test]
    fn a_corrupt_account_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ACCOUNT_FILE);
        std::fs::write(&path, "{").unwrap();
        let a = Acme::new("https://ca.test/dir".into(), vec![], None, path);
        let e = a.load().err().unwrap().to_string();
        assert!(
            e.contains("acme-account.json") && e.contains("not an account file"),
            "{e}"
        );
    }
}
