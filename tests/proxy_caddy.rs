//! The Caddy proxy against a real Caddy of the test's own: routes served, hand-made
//! config left alone, a lost config restored, Caddy down reported promptly, in-place
//! updates, and routes moving between the agent's servers when TLS flips.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{free_port, http_get, serve_text, PrivateCaddy};
use mcp_agent::proxy::{Caddy, Proxy, ProxyRoute, SyncReport};

const SERVER: &str = "mcp";
const HTTP_SERVER: &str = "mcp-http";

fn route(id: &str, hostname: &str, upstream_port: u16) -> ProxyRoute {
    ProxyRoute {
        id: id.to_string(),
        hostname: hostname.to_string(),
        upstream_port,
        withheld: false,
    }
}

/// The agent's client of `caddy`, its servers on loopback ports of the test's own.
fn client(caddy: &PrivateCaddy, http_port: u16, https_port: u16, tls: bool) -> Caddy {
    Caddy::new(
        caddy.admin_socket(),
        SERVER.to_string(),
        format!("127.0.0.1:{http_port}"),
        format!("127.0.0.1:{https_port}"),
        tls,
    )
}

/// The body Caddy's HTTP listener answers for `host`; panics if the request fails.
fn body_for(port: u16, host: &str) -> String {
    match http_get(port, host, "/") {
        Ok((200, body)) => body,
        Ok((status, body)) => panic!("GET http://{host}/ via :{port} answered {status}: {body}"),
        Err(e) => panic!("GET http://{host}/ via :{port}: {e}"),
    }
}

/// The ids of the routes of one server, in order (`None` for a route without one).
fn route_ids(caddy: &PrivateCaddy, server: &str) -> Vec<Option<String>> {
    let routes = caddy.get(&format!("/config/apps/http/servers/{server}/routes"));
    routes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["@id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Caddy's config without the routes `sync` manages (ids `mcp.*` but not `mcp.acme.*`),
/// to compare what is left before and after syncs.
fn without_managed_routes(mut config: Value) -> Value {
    if let Some(servers) = config
        .pointer_mut("/apps/http/servers")
        .and_then(Value::as_object_mut)
    {
        for server in servers.values_mut() {
            if let Some(routes) = server.get_mut("routes").and_then(Value::as_array_mut) {
                routes.retain(|r| {
                    let id = r["@id"].as_str().unwrap_or("");
                    !id.starts_with("mcp.") || id.starts_with("mcp.acme.")
                });
            }
        }
    }
    config
}

#[tokio::test]
async fn two_routes_on_an_empty_caddy_are_served_and_a_second_sync_only_reads() {
    let started = Instant::now();
    let caddy = PrivateCaddy::start();
    eprintln!(
        "caddy answered on its admin socket in {:?}",
        started.elapsed()
    );

    let (a, b) = (serve_text("backend a"), serve_text("backend b"));
    let http_port = free_port();
    let proxy = client(&caddy, http_port, free_port(), false);
    let routes = [
        route("mcp.shop.web.http", "a.test", a),
        route("mcp.blog.web.http", "b.test", b),
    ];

    let t = Instant::now();
    let report = proxy.sync(&routes).await.expect("first sync");
    eprintln!("first sync (creating the http app) in {:?}", t.elapsed());
    assert_eq!(report.added, ["mcp.blog.web.http", "mcp.shop.web.http"]);
    assert!(report.updated.is_empty() && report.deleted.is_empty());
    // One PUT creating the http app with the agent's server, one POST of both routes.
    assert_eq!(report.writes, 2, "{report:?}");

    assert_eq!(body_for(http_port, "a.test"), "backend a");
    assert_eq!(body_for(http_port, "b.test"), "backend b");
    assert_ne!(body_for(http_port, "c.test"), "backend a");

    // The admin endpoint survived: it lives in the same config.
    let config = caddy.config();
    assert_eq!(
        config["admin"]["listen"],
        json!(format!("unix/{}", caddy.admin_socket().display()))
    );
    let server = &config["apps"]["http"]["servers"][HTTP_SERVER];
    assert_eq!(server["listen"], json!([format!("127.0.0.1:{http_port}")]));
    assert_eq!(server["automatic_https"], json!({ "disable": true }));
    assert!(
        config["apps"]["http"]["servers"].get(SERVER).is_none(),
        "no HTTPS server without TLS: {config}"
    );

    let writes_before = caddy.admin_writes();
    assert!(
        writes_before >= 2,
        "caddy logged {writes_before} admin writes"
    );
    let report = proxy.sync(&routes).await.expect("second sync");
    assert_eq!(
        report,
        SyncReport {
            unchanged: 2,
            ..SyncReport::default()
        }
    );
    assert!(report.is_noop());

    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let report = proxy.sync(&routes).await.expect("idle sync");
        took.push(t.elapsed());
        assert!(report.is_noop(), "{report:?}");
    }
    took.sort();
    eprintln!(
        "sync with nothing to change: median {:?}, max {:?} (20 runs)",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(
        caddy.admin_writes(),
        writes_before,
        "syncs with nothing to change wrote to caddy"
    );
}

#[tokio::test]
async fn hand_made_routes_and_servers_survive_syncs_that_add_update_and_delete() {
    let caddy = PrivateCaddy::start();
    let (a, a2, b) = (
        serve_text("backend a"),
        serve_text("backend a2"),
        serve_text("backend b"),
    );
    let (http_port, other_port) = (free_port(), free_port());
    let proxy = client(&caddy, http_port, free_port(), false);

    let r1 = route("mcp.shop.web.http", "a.test", a);
    proxy
        .sync(std::slice::from_ref(&r1))
        .await
        .expect("first sync");

    // By hand: a route with a foreign id before ours, one without an id after it, an
    // ACME challenge route of the agent's, and a whole server of someone else's.
    let static_route = |host: &str, body: &str| {
        json!({
            "match": [{ "host": [host] }],
            "handle": [{ "handler": "static_response", "body": body }],
            "terminal": true,
        })
    };
    let mut hand = static_route("hand.test", "hand made");
    hand["@id"] = json!("hand.made");
    let routes_path = format!("/config/apps/http/servers/{HTTP_SERVER}/routes");
    caddy.api_ok("PUT", &format!("{routes_path}/0"), Some(&hand.to_string()));
    let mut acme = static_route("acme.test", "challenge");
    acme["@id"] = json!("mcp.acme.token1");
    let appended = json!([static_route("noid.test", "no id"), acme]);
    caddy.api_ok(
        "POST",
        &format!("{routes_path}/..."),
        Some(&appended.to_string()),
    );
    let other = json!({
        "listen": [format!("127.0.0.1:{other_port}")],
        "automatic_https": { "disable": true },
        "routes": [static_route("a.test", "other server")],
    });
    caddy.api_ok(
        "PUT",
        "/config/apps/http/servers/other",
        Some(&other.to_string()),
    );
    let before = without_managed_routes(caddy.config());

    // Add one, update the other.
    let r1_moved = route("mcp.shop.web.http", "a.test", a2);
    let r2 = route("mcp.blog.web.http", "b.test", b);
    let report = proxy
        .sync(&[r1_moved.clone(), r2.clone()])
        .await
        .expect("sync adding and updating");
    assert_eq!(report.added, ["mcp.blog.web.http"]);
    assert_eq!(report.updated, ["mcp.shop.web.http"]);
    assert_eq!(without_managed_routes(caddy.config()), before);
    assert_eq!(body_for(http_port, "a.test"), "backend a2");
    assert_eq!(body_for(http_port, "b.test"), "backend b");

    // Delete both.
    let report = proxy.sync(&[]).await.expect("sync deleting");
    assert_eq!(report.deleted, ["mcp.blog.web.http", "mcp.shop.web.http"]);
    assert_eq!(report.unchanged, 0);
    assert_eq!(without_managed_routes(caddy.config()), before);
    assert_eq!(
        route_ids(&caddy, HTTP_SERVER),
        [
            Some("hand.made".to_string()),
            None,
            Some("mcp.acme.token1".to_string())
        ]
    );

    // Everything hand-made still serves.
    assert_eq!(body_for(http_port, "hand.test"), "hand made");
    assert_eq!(body_for(http_port, "noid.test"), "no id");
    assert_eq!(body_for(http_port, "acme.test"), "challenge");
    assert_eq!(body_for(other_port, "a.test"), "other server");
    assert_ne!(body_for(http_port, "a.test"), "backend a2");

    let report = proxy.sync(&[]).await.expect("idle sync");
    assert_eq!(report, SyncReport::default());
}

#[tokio::test]
async fn routes_lost_with_a_caddy_restart_are_restored_by_the_next_sync() {
    let mut caddy = PrivateCaddy::start();
    let (a, b) = (serve_text("backend a"), serve_text("backend b"));
    let http_port = free_port();
    let proxy = client(&caddy, http_port, free_port(), false);
    let routes = [
        route("mcp.shop.web.http", "a.test", a),
        route("mcp.blog.web.http", "b.test", b),
    ];
    proxy.sync(&routes).await.expect("first sync");
    assert_eq!(body_for(http_port, "a.test"), "backend a");

    let t = Instant::now();
    caddy.restart();
    eprintln!("caddy restarted in {:?}", t.elapsed());
    assert_eq!(
        caddy.config().get("apps"),
        None,
        "caddy came back with the routes"
    );
    assert!(http_get(http_port, "a.test", "/").is_err());

    let report = proxy.sync(&routes).await.expect("sync after restart");
    assert_eq!(report.added, ["mcp.blog.web.http", "mcp.shop.web.http"]);
    assert_eq!(body_for(http_port, "a.test"), "backend a");
    assert_eq!(body_for(http_port, "b.test"), "backend b");
}

#[tokio::test]
async fn caddy_down_is_reported_unavailable_promptly() {
    let mut caddy = PrivateCaddy::start();
    let a = serve_text("backend a");
    let http_port = free_port();
    let proxy = client(&caddy, http_port, free_port(), false);
    let routes = [route("mcp.shop.web.http", "a.test", a)];
    proxy.sync(&routes).await.expect("first sync");

    caddy.stop();
    let t = Instant::now();
    let error = proxy.sync(&routes).await.expect_err("sync with caddy down");
    let took = t.elapsed();
    eprintln!("sync with caddy down failed in {took:?}: {error}");
    assert!(error.is_unavailable(), "{error:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let message = error.to_string();
    assert!(
        message.contains(&caddy.admin_socket().display().to_string())
            && message.contains("GET /config/apps/http/servers"),
        "{message}"
    );

    caddy.restart();
    let report = proxy.sync(&routes).await.expect("sync once caddy is back");
    assert_eq!(report.added, ["mcp.shop.web.http"]);
    assert_eq!(body_for(http_port, "a.test"), "backend a");
}

#[tokio::test]
async fn a_new_upstream_port_updates_the_route_in_place() {
    let caddy = PrivateCaddy::start();
    let (a, b, c) = (
        serve_text("backend a"),
        serve_text("backend b"),
        serve_text("backend c"),
    );
    let http_port = free_port();
    let proxy = client(&caddy, http_port, free_port(), false);
    proxy
        .sync(&[
            route("mcp.shop.web.http", "a.test", a),
            route("mcp.blog.web.http", "b.test", b),
        ])
        .await
        .expect("first sync");
    let ids_before = route_ids(&caddy, HTTP_SERVER);
    assert_eq!(body_for(http_port, "a.test"), "backend a");

    let report = proxy
        .sync(&[
            route("mcp.shop.web.http", "a.test", c),
            route("mcp.blog.web.http", "b.test", b),
        ])
        .await
        .expect("sync with a new port");
    assert_eq!(
        report,
        SyncReport {
            updated: vec!["mcp.shop.web.http".to_string()],
            unchanged: 1,
            writes: 1,
            ..SyncReport::default()
        }
    );
    assert_eq!(route_ids(&caddy, HTTP_SERVER), ids_before, "not in place");
    assert_eq!(body_for(http_port, "a.test"), "backend c");
    assert_eq!(body_for(http_port, "b.test"), "backend b");
}

#[tokio::test]
async fn routes_move_between_the_agents_servers_when_tls_flips() {
    let caddy = PrivateCaddy::start();
    let a = serve_text("backend a");
    let (http_port, https_port) = (free_port(), free_port());
    let plain = client(&caddy, http_port, https_port, false);
    let tls = client(&caddy, http_port, https_port, true);
    let routes = [route("mcp.shop.web.http", "a.test", a)];

    plain.sync(&routes).await.expect("sync without tls");
    assert_eq!(body_for(http_port, "a.test"), "backend a");

    let report = tls.sync(&routes).await.expect("sync with tls");
    assert_eq!(report.updated, ["mcp.shop.web.http"]);
    let servers = caddy.get("/config/apps/http/servers");
    let https = &servers[SERVER];
    assert_eq!(https["listen"], json!([format!("127.0.0.1:{https_port}")]));
    assert_eq!(https["tls_connection_policies"], json!([{}]));
    assert_eq!(https["automatic_https"], json!({ "disable": true }));
    assert_eq!(
        route_ids(&caddy, SERVER),
        [Some("mcp.shop.web.http".to_string())]
    );
    assert!(
        route_ids(&caddy, HTTP_SERVER).is_empty(),
        "the HTTP server (kept for ACME) still has routes: {servers}"
    );
    assert_ne!(body_for(http_port, "a.test"), "backend a");
    assert!(tls.sync(&routes).await.expect("idle tls sync").is_noop());

    let report = plain.sync(&routes).await.expect("sync without tls again");
    assert_eq!(report.updated, ["mcp.shop.web.http"]);
    assert!(route_ids(&caddy, SERVER).is_empty());
    assert_eq!(body_for(http_port, "a.test"), "backend a");
}

#[tokio::test]
async fn a_listen_changed_and_a_route_duplicated_by_hand_are_repaired() {
    let caddy = PrivateCaddy::start();
    let a = serve_text("backend a");
    let (http_port, stray_port) = (free_port(), free_port());
    let proxy = client(&caddy, http_port, free_port(), false);
    let r = route("mcp.shop.web.http", "a.test", a);
    proxy
        .sync(std::slice::from_ref(&r))
        .await
        .expect("first sync");

    let server = format!("/config/apps/http/servers/{HTTP_SERVER}");
    let copy = caddy.get(&format!("{server}/routes/0"));
    caddy.api_ok(
        "POST",
        &format!("{server}/routes/..."),
        Some(&json!([copy]).to_string()),
    );
    caddy.api_ok(
        "PATCH",
        &format!("{server}/listen"),
        Some(&json!([format!("127.0.0.1:{stray_port}")]).to_string()),
    );
    assert!(http_get(http_port, "a.test", "/").is_err());

    let report = proxy.sync(std::slice::from_ref(&r)).await.expect("repair");
    assert_eq!(report.updated, ["mcp.shop.web.http"]);
    // listen, two deletes of the copies, one append.
    assert_eq!(report.writes, 4, "{report:?}");
    assert_eq!(
        route_ids(&caddy, HTTP_SERVER),
        [Some("mcp.shop.web.http".to_string())]
    );
    assert_eq!(
        caddy.get(&format!("{server}/listen")),
        json!([format!("127.0.0.1:{http_port}")])
    );
    assert_eq!(body_for(http_port, "a.test"), "backend a");
}
