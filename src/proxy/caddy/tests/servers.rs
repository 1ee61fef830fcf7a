use super::*;

#[test]
fn without_tls_routes_go_on_the_http_server_and_only_it_is_wanted() {
    let layout = caddy(false).layout();
    assert_eq!(layout.target, "mcp-http");
    let names: Vec<&str> = layout.wanted.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["mcp-http"]);
    assert_eq!(layout.owned, ["mcp-http", "mcp"]);
}

#[test]
fn with_tls_routes_go_on_the_https_server_and_both_are_wanted() {
    let layout = caddy(true).layout();
    assert_eq!(layout.target, "mcp");
    let names: Vec<&str> = layout.wanted.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["mcp-http", "mcp"]);
    let https = &layout.wanted[1];
    assert_eq!(
        https.skeleton(),
        json!({
            "listen": [":443"],
            "automatic_https": { "disable": true },
            "tls_connection_policies": [{}],
            "routes": [],
        })
    );
    assert_eq!(
        layout.wanted[0].skeleton().get("tls_connection_policies"),
        None
    );
}

#[test]
fn an_empty_caddy_gets_the_whole_http_app_in_one_put() {
    let layout = caddy(true).layout();
    let writes = creation_writes(&Value::Null, &layout.wanted);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::PUT);
    assert_eq!(writes[0].path, "/config/apps");
    let body = writes[0].body.as_ref().unwrap();
    let servers = body.pointer("/http/servers").unwrap().as_object().unwrap();
    let names: Vec<&String> = servers.keys().collect();
    assert_eq!(names, ["mcp", "mcp-http"]);
}

#[test]
fn creation_starts_at_the_deepest_missing_level() {
    let wanted = caddy(false).layout().wanted;
    let at = |apps: Value| methods_and_paths(&creation_writes(&apps, &wanted));
    let put = |p: &str| vec![("PUT".to_string(), p.to_string())];

    assert_eq!(at(json!({ "tls": {} })), put("/config/apps/http"));
    assert_eq!(
        at(json!({ "http": { "http_port": 8080 } })),
        put("/config/apps/http/servers")
    );
    assert_eq!(
        at(json!({ "http": { "servers": { "other": {} } } })),
        put("/config/apps/http/servers/mcp-http")
    );
    assert_eq!(
        at(json!({ "http": { "servers": { "mcp-http": {} } } })),
        Vec::<(String, String)>::new()
    );
    // A key present with a null value cannot be PUT (it exists): replace it.
    assert_eq!(
        at(json!({ "http": { "servers": { "mcp-http": null } } })),
        vec![(
            "PATCH".to_string(),
            "/config/apps/http/servers/mcp-http".to_string()
        )]
    );
}

#[test]
fn only_the_missing_one_of_two_servers_is_created() {
    let wanted = caddy(true).layout().wanted;
    let apps = json!({ "http": { "servers": { "mcp-http": http_server(json!([])) } } });
    let writes = creation_writes(&apps, &wanted);
    assert_eq!(
        methods_and_paths(&writes),
        [(
            "PUT".to_string(),
            "/config/apps/http/servers/mcp".to_string()
        )]
    );
    assert_eq!(
        writes[0].body.as_ref().unwrap()["tls_connection_policies"],
        json!([{}])
    );
}

#[test]
fn a_server_as_created_needs_no_fixing() {
    let layout = caddy(true).layout();
    let map: Map<String, Value> = layout
        .wanted
        .iter()
        .map(|s| (s.name.clone(), s.skeleton()))
        .collect();
    assert!(server_fixes(&map, &layout.wanted).is_empty());
}

#[test]
fn a_changed_listen_and_missing_settings_are_fixed_key_by_key() {
    let layout = caddy(true).layout();
    let map = servers(json!({
        "mcp-http": { "listen": [":8080"], "automatic_https": { "disable": false, "skip": ["x"] }, "routes": [] },
        "mcp": { "routes": [], "tls_connection_policies": [] },
    }));
    let writes = server_fixes(&map, &layout.wanted);
    let s = |m: &str, p: &str| (m.to_string(), p.to_string());
    assert_eq!(
        methods_and_paths(&writes),
        [
            s("PATCH", "/config/apps/http/servers/mcp-http/listen"),
            s(
                "PATCH",
                "/config/apps/http/servers/mcp-http/automatic_https/disable"
            ),
            s("PUT", "/config/apps/http/servers/mcp/listen"),
            s("PUT", "/config/apps/http/servers/mcp/automatic_https"),
            s(
                "PATCH",
                "/config/apps/http/servers/mcp/tls_connection_policies"
            ),
        ]
    );
    assert_eq!(writes[0].body, Some(json!([":80"])));
    assert_eq!(writes[1].body, Some(json!(true)));
    assert_eq!(writes[2].body, Some(json!([":443"])));
    assert_eq!(writes[4].body, Some(json!([{}])));
}

#[test]
fn tls_policies_set_by_someone_else_are_kept() {
    let layout = caddy(true).layout();
    let mut mcp = layout.wanted[1].skeleton();
    mcp["tls_connection_policies"] = json!([{ "match": { "sni": ["a.example"] } }]);
    let map = servers(json!({ "mcp-http": layout.wanted[0].skeleton(), "mcp": mcp }));
    assert!(server_fixes(&map, &layout.wanted).is_empty());
}
