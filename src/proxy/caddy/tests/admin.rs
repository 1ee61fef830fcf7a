use super::super::admin::{error_text, MAX_ERROR_BODY};
use super::*;

#[test]
fn caddy_error_bodies_are_quoted_by_their_message() {
    assert_eq!(
        error_text(br#"{"error":"unknown object ID 'x'"}"#),
        "unknown object ID 'x'"
    );
    assert_eq!(error_text(b" plain text \n"), "plain text");
    assert_eq!(
        error_text("é".repeat(MAX_ERROR_BODY + 5).as_bytes())
            .chars()
            .count(),
        MAX_ERROR_BODY + 1
    );
}

#[tokio::test]
async fn a_missing_socket_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Caddy::new(
        dir.path().join("admin.sock"),
        "mcp".into(),
        ":80".into(),
        ":443".into(),
        false,
    );
    let e = c.sync(&[]).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("admin.sock") && msg.contains("GET /config/apps/http/servers"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_socket_left_by_a_dead_caddy_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // Binding and dropping leaves the socket file with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
    let e = c.sync(&[]).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
}

#[tokio::test]
async fn a_socket_that_never_answers_times_out_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false)
        .with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let e = c.sync(&[]).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("no answer within 200ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The wire format Caddy 2.6 needs: HTTP/1.1, an empty Host, JSON bodies.
#[tokio::test]
async fn requests_carry_an_empty_host_and_a_json_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head and the 2-byte body `[]`.
        while !raw.ends_with(b"\r\n\r\n[]") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(raw).unwrap()
    });
    let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
    let w = Write::new(Method::POST, "/config/x".into(), Some(json!([])));
    c.write(&w).await.unwrap();
    let raw = server.await.unwrap().to_ascii_lowercase();
    assert!(raw.starts_with("post /config/x http/1.1\r\n"), "{raw}");
    assert!(raw.contains("\r\nhost: \r\n"), "{raw}");
    assert!(
        raw.contains("\r\ncontent-type: application/json\r\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn a_refusal_names_the_request_and_quotes_caddy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await.unwrap();
        let body = r#"{"error":"unknown object ID 'mcp.a'"}"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body.as_bytes()).await.unwrap();
    });
    let c = Caddy::new(path, "mcp".into(), ":80".into(), ":443".into(), false);
    let w = Write::new(Method::DELETE, "/id/mcp.a".into(), None);
    let e = c.write(&w).await.unwrap_err();
    assert!(!e.is_unavailable());
    assert!(
        matches!(&e, ProxyError::Api { status: 404, body, .. } if body == "unknown object ID 'mcp.a'"),
        "{e:?}"
    );
    assert!(e.to_string().contains("DELETE /id/mcp.a"), "{e}");
}
