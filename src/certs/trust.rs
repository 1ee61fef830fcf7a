//! Whom the ACME client trusts: the system's roots, the CAs of `ca_bundle`, and — as users
//! have it with curl, certbot or Go clients — a server certificate that is itself in
//! `ca_bundle` (pinning: an ACME server's own self-signed certificate, as `openssl req
//! -x509` makes). A refusal says in words what was refused and why.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// The platform's verifier (system roots plus `ca_bundle` as roots), and the certificates
/// of `ca_bundle` a server may present as its own.
#[derive(Debug)]
pub struct Verifier {
    inner: Arc<dyn ServerCertVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl Verifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>, pinned: Vec<CertificateDer<'static>>) -> Self {
        Verifier { inner, pinned }
    }
}

/// A refusal in words, as rustls carries it (`invalid peer certificate: <this>`).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The words of a refusal of ours somewhere in `e`'s chain (rustls prints its
/// certificate errors with `Debug`: `Other(OtherError(…))`).
pub fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let ours = |c: &(dyn std::error::Error + 'static)| match c.downcast_ref::<Error>() {
        Some(Error::InvalidCertificate(CertificateError::Other(o))) => {
            o.0.downcast_ref::<Refused>()
                .map(|r| format!("TLS: {}", r.0))
        }
        _ => None,
    };
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = ours(c) {
            return Some(r);
        }
        // An io::Error's `source` skips the error it wraps.
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = ours(inner) {
                return Some(r);
            }
        }
        cur = c.source();
    }
    None
}

/// `text` (an error chain) with rustls's `Debug` print of a refusal of ours —
/// `Other(OtherError(Refused("…")))` — replaced by its words.
pub fn readable(text: &str) -> String {
    const OPEN: &str = "Other(OtherError(Refused(\"";
    const CLOSE: &str = "\")))";
    let (Some(a), Some(b)) = (text.find(OPEN), text.rfind(CLOSE)) else {
        return text.to_string();
    };
    if b < a + OPEN.len() {
        return text.to_string();
    }
    let words = text[a + OPEN.len()..b].replace("\\\"", "\"");
    format!("{}{words}{}", &text[..a], &text[b + CLOSE.len()..])
}

/// Subject and issuer of a DER certificate, for messages.
fn names(der: &[u8]) -> (String, String) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
        Err(_) => ("(unparsable)".into(), "(unparsable)".into()),
    }
}

/// `e` about the certificate `der`, said in words.
pub fn explain(e: &Error, der: &[u8], name: &str) -> Option<String> {
    let Error::InvalidCertificate(ce) = e else {
        return None;
    };
    let (subject, issuer) = names(der);
    let what = format!("the certificate of {name} (subject \"{subject}\", issuer \"{issuer}\")");
    let why = match ce {
        CertificateError::UnknownIssuer => format!(
            "is issued by \"{issuer}\", which neither the system's roots nor [certs] ca_bundle hold; add that CA (or this very certificate, to pin it) to ca_bundle"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet (check the clock)".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("is not valid for the name {name}")
        }
        CertificateError::Revoked => "is revoked".into(),
        CertificateError::BadSignature => "has a bad signature".into(),
        CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "is a CA certificate used as the server's own, and is not in [certs] ca_bundle; put exactly this certificate in ca_bundle to pin it".into()
        }
        other => format!("is refused: {other:?}"),
    };
    Some(format!("{what} {why}"))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            // Pinned: trusted as it is, for the names it holds.
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)
                .map_err(|e| words(&e, end_entity, server_name))?;
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| words(&e, end_entity, server_name))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn words(e: &Error, der: &CertificateDer<'_>, name: &ServerName<'_>) -> Error {
    match explain(e, der.as_ref(), &name.to_str()) {
        Some(text) => Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(Refused(text)),
        ))),
        None => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_debug_printed_refusal_reads_as_words() {
        let t = r#"cannot create an account: invalid peer certificate: Other(OtherError(Refused("the certificate (subject \"CN=x\") is refused")))"#;
        assert_eq!(
            super::readable(t),
            "cannot create an account: invalid peer certificate: the certificate (subject \"CN=x\") is refused"
        );
        assert_eq!(super::readable("plain"), "plain");
    }
}
