use super::super::tls::{cert_entry, challenge_json, challenge_write, load_files_write};
use super::*;
use crate::proxy::{CertFiles, Challenge};

fn challenge() -> Challenge {
    Challenge {
        token: "tok-1_A".into(),
        hostname: "a.example".into(),
        key_authorization: "tok-1_A.thumbprint".into(),
    }
}

#[test]
fn a_challenge_route_serves_the_key_authorization_as_text_for_host_and_path() {
    assert_eq!(
        challenge_json(&challenge()),
        json!({
            "@id": "mcp.acme.tok-1_A",
            "match": [{
                "host": ["a.example"],
                "path": ["/.well-known/acme-challenge/tok-1_A"],
            }],
            "handle": [{
                "handler": "static_response",
                "status_code": 200,
                "headers": { "Content-Type": ["text/plain"] },
                "body": "tok-1_A.thumbprint",
            }],
            "terminal": true,
        })
    );
}

#[test]
fn a_challenge_route_goes_first_in_the_http_server() {
    let path = "/config/apps/http/servers/mcp-http/routes";
    let c = challenge();
    let w = challenge_write(path, &json!([{ "@id": "someone" }]), &c);
    assert_eq!(
        (w.method, w.path.as_str()),
        (Method::PUT, "/config/apps/http/servers/mcp-http/routes/0")
    );
    assert_eq!(w.body, Some(challenge_json(&c)));
    // Caddy cannot PUT at index 0 of an empty list: append instead.
    for empty in [json!([]), Value::Null] {
        let w = challenge_write(path, &empty, &c);
        assert_eq!(
            (w.method, w.path.as_str()),
            (
                Method::POST,
                "/config/apps/http/servers/mcp-http/routes/..."
            )
        );
        assert_eq!(w.body, Some(json!([challenge_json(&c)])));
    }
    let w = challenge_write(path, &json!("garbage"), &c);
    assert_eq!((w.method, w.path.as_str()), (Method::PATCH, path));
}

fn cert(n: u8) -> CertFiles {
    CertFiles {
        cert: format!("/certs/s{n}.crt").into(),
        key: format!("/certs/s{n}.key").into(),
        serial: format!("{n:02x}"),
    }
}

#[test]
fn certificate_entries_are_tagged_with_ours_and_the_serial() {
    assert_eq!(
        cert_entry(&cert(1)),
        json!({
            "certificate": "/certs/s1.crt",
            "key": "/certs/s1.key",
            "format": "pem",
            "tags": ["mcp", "mcp-serial-01"],
        })
    );
}

#[test]
fn load_files_is_created_at_the_deepest_missing_level() {
    let ours = vec![cert_entry(&cert(1))];
    let at = |depth: usize, value: Value| {
        let w = load_files_write(depth, &value, ours.clone()).unwrap();
        (w.method, w.path, w.body.unwrap())
    };
    assert_eq!(
        at(0, Value::Null),
        (
            Method::POST,
            "/config/apps/tls/certificates/load_files".into(),
            json!(ours)
        )
    );
    assert_eq!(
        at(1, Value::Null),
        (
            Method::POST,
            "/config/apps/tls/certificates".into(),
            json!({ "load_files": ours })
        )
    );
    assert_eq!(
        at(2, Value::Null),
        (
            Method::POST,
            "/config/apps/tls".into(),
            json!({ "certificates": { "load_files": ours } })
        )
    );
    assert_eq!(
        at(3, Value::Null),
        (
            Method::POST,
            "/config/apps".into(),
            json!({ "tls": { "certificates": { "load_files": ours } } })
        )
    );
    // Nothing of ours and nothing there: nothing to write.
    assert!(load_files_write(0, &Value::Null, vec![]).is_none());
    assert!(load_files_write(2, &Value::Null, vec![]).is_none());
}

#[test]
fn only_our_entries_of_load_files_are_replaced() {
    let theirs = json!({ "certificate": "/x.crt", "key": "/x.key", "tags": ["other"] });
    let untagged = json!({ "certificate": "/y.crt", "key": "/y.key" });
    let old = cert_entry(&cert(1));
    let existing = json!([theirs, old, untagged]);
    // Unchanged: no write.
    assert!(load_files_write(0, &json!([theirs, untagged, old]), vec![old.clone()]).is_none());
    // Renewed (new serial): theirs kept in their order, ours after them.
    let new = cert_entry(&cert(2));
    let w = load_files_write(0, &existing, vec![new.clone()]).unwrap();
    assert_eq!(w.method, Method::PATCH);
    assert_eq!(w.path, "/config/apps/tls/certificates/load_files");
    assert_eq!(w.body, Some(json!([theirs, untagged, new])));
    // Ours all gone.
    let w = load_files_write(0, &existing, vec![]).unwrap();
    assert_eq!(w.body, Some(json!([theirs, untagged])));
}
