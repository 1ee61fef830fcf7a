use super::*;

#[test]
fn a_route_is_a_host_match_reverse_proxied_to_loopback() {
    let json = route_json(&route("mcp.shop.web.http", "shop.example", 20001));
    assert_eq!(
        json,
        json!({
            "@id": "mcp.shop.web.http",
            "match": [{ "host": ["shop.example"] }],
            "handle": [{
                "handler": "reverse_proxy",
                "upstreams": [{ "dial": "127.0.0.1:20001" }],
            }],
            "terminal": true,
        })
    );
}

#[test]
fn missing_routes_are_appended_in_one_post() {
    let layout = caddy(false).layout();
    let map = servers(json!({ "mcp-http": http_server(json!([])) }));
    let desired = [
        route("mcp.b.web.http", "b.example", 20002),
        route("mcp.a.web.http", "a.example", 20001),
    ];
    let (writes, report) = route_plan(&map, &desired, &layout);
    assert_eq!(report.added, ["mcp.a.web.http", "mcp.b.web.http"]);
    assert_eq!(
        methods_and_paths(&writes),
        [(
            "POST".to_string(),
            "/config/apps/http/servers/mcp-http/routes/...".to_string()
        )]
    );
    assert_eq!(
        writes[0].body,
        Some(json!([route_json(&desired[1]), route_json(&desired[0])]))
    );
}

#[test]
fn routes_served_as_wanted_need_no_write() {
    let layout = caddy(false).layout();
    let desired = [
        route("mcp.a.web.http", "a.example", 20001),
        route("mcp.b.web.http", "b.example", 20002),
    ];
    let map = servers(json!({
        "mcp-http": http_server(json!([route_json(&desired[1]), route_json(&desired[0])])),
    }));
    let (writes, report) = plan(&map, &desired, &layout);
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(
        report,
        SyncReport {
            unchanged: 2,
            ..SyncReport::default()
        }
    );
}

#[test]
fn a_differing_route_is_replaced_in_place_by_id() {
    let layout = caddy(false).layout();
    let old = route("mcp.a.web.http", "a.example", 20001);
    let new = route("mcp.a.web.http", "a.example", 20009);
    let map = servers(json!({ "mcp-http": http_server(json!([route_json(&old)])) }));
    let (writes, report) = route_plan(&map, std::slice::from_ref(&new), &layout);
    assert_eq!(report.updated, ["mcp.a.web.http"]);
    assert_eq!(
        writes,
        [Write::new(
            Method::PATCH,
            "/id/mcp.a.web.http".into(),
            Some(route_json(&new))
        )]
    );
}

#[test]
fn unwanted_ids_are_deleted_and_foreign_routes_left_alone() {
    let layout = caddy(false).layout();
    let ours = route("mcp.gone.web.http", "gone.example", 20001);
    let foreign = json!([
        { "@id": "hand.made", "handle": [{ "handler": "static_response" }] },
        { "handle": [{ "handler": "static_response" }] },
        { "@id": "mcp.acme.token123", "handle": [{ "handler": "static_response" }] },
        { "@id": "mcp.odd id/with slash" },
    ]);
    let mut routes = foreign.as_array().unwrap().clone();
    routes.push(route_json(&ours));
    let map = servers(json!({
        "mcp-http": http_server(Value::Array(routes)),
        // Someone else's server, even with one of our ids in it, is not ours.
        "other": { "listen": [":81"], "routes": [route_json(&route("mcp.x.y.z", "x.example", 1))] },
    }));
    let (writes, report) = route_plan(&map, &[], &layout);
    assert_eq!(report.deleted, ["mcp.gone.web.http"]);
    assert_eq!(
        writes,
        [Write::new(
            Method::DELETE,
            "/id/mcp.gone.web.http".into(),
            None
        )]
    );
}

#[test]
fn a_route_moves_to_the_https_server_when_tls_is_turned_on() {
    let layout = caddy(true).layout();
    let r = route("mcp.a.web.http", "a.example", 20001);
    let map = servers(json!({
        "mcp-http": http_server(json!([route_json(&r)])),
        "mcp": caddy(true).layout().wanted[1].skeleton(),
    }));
    let (writes, report) = plan(&map, std::slice::from_ref(&r), &layout);
    assert_eq!(report.updated, ["mcp.a.web.http"]);
    assert!(report.added.is_empty() && report.deleted.is_empty());
    assert_eq!(
        methods_and_paths(&writes),
        [
            ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
            (
                "POST".to_string(),
                "/config/apps/http/servers/mcp/routes/...".to_string()
            ),
        ]
    );
}

#[test]
fn without_tls_the_https_server_is_swept_but_not_created() {
    let layout = caddy(false).layout();
    let stale = route("mcp.a.web.http", "a.example", 20001);
    let map = servers(json!({
        "mcp-http": http_server(json!([])),
        "mcp": { "listen": [":1234"], "routes": [route_json(&stale)] },
    }));
    let (writes, report) = plan(&map, &[], &layout);
    assert_eq!(report.deleted, ["mcp.a.web.http"]);
    // Its listen is not "fixed": the server is not wanted.
    assert_eq!(
        methods_and_paths(&writes),
        [("DELETE".to_string(), "/id/mcp.a.web.http".to_string())]
    );
}

#[test]
fn a_duplicated_id_is_deleted_once_per_copy_and_appended_once() {
    let layout = caddy(false).layout();
    let r = route("mcp.a.web.http", "a.example", 20001);
    let map = servers(json!({
        "mcp-http": http_server(json!([route_json(&r), { "@id": "hand" }, route_json(&r)])),
    }));
    let (writes, report) = route_plan(&map, std::slice::from_ref(&r), &layout);
    assert_eq!(report.updated, ["mcp.a.web.http"]);
    let m = methods_and_paths(&writes);
    assert_eq!(
        m,
        [
            ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
            ("DELETE".to_string(), "/id/mcp.a.web.http".to_string()),
            (
                "POST".to_string(),
                "/config/apps/http/servers/mcp-http/routes/...".to_string()
            ),
        ]
    );
}

#[test]
fn a_routes_key_that_is_not_a_list_is_replaced_by_the_new_routes() {
    let layout = caddy(false).layout();
    let r = route("mcp.a.web.http", "a.example", 20001);
    let map = servers(json!({ "mcp-http": http_server(Value::Null) }));
    let (writes, _) = route_plan(&map, std::slice::from_ref(&r), &layout);
    assert_eq!(
        writes,
        [Write::new(
            Method::PATCH,
            "/config/apps/http/servers/mcp-http/routes".into(),
            Some(json!([route_json(&r)]))
        )]
    );
}

#[test]
fn routes_that_sync_could_not_keep_converged_are_refused() {
    let ok = route("mcp.a.web.http", "a.example", 20001);
    assert!(check_routes(std::slice::from_ref(&ok)).is_ok());
    for bad in [
        route("other.a.web.http", "a.example", 1),
        route("mcp.a web", "a.example", 1),
        route("mcp.acme.web.http", "a.example", 1),
        route("mcp.a.web.http", "", 1),
        route("mcp.a.web.http", "a.example", 0),
    ] {
        let e = check_routes(std::slice::from_ref(&bad)).expect_err(&bad.id);
        assert!(matches!(e, ProxyError::InvalidRoute { .. }), "{e}");
    }
    let e = check_routes(&[ok.clone(), ok]).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}
