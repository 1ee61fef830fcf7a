//! The name rules of the contract: which strings may name a service, component, route,
//! node or hostname.

/// Service names the agent keeps for itself.
pub const RESERVED_SERVICE_NAMES: &[&str] = &["acme"];

/// `[a-z0-9][a-z0-9-]{0,62}`: service, component and route names.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A label value such as the node name: `[A-Za-z0-9._-]{1,63}`.
pub fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// An RFC 1123 hostname in lowercase ASCII (IDNs must be given in punycode).
pub fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}
