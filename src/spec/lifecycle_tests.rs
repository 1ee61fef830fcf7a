//! `[health]`, `oneshot` and `depends_on` (issue 14): every key parsed and exported back,
//! every rule at its position with its reason, and the rules across services.

use super::tests::parse;
use super::*;
use crate::model::{Condition, Dependency, HealthCheck, Millis, OnFailure, Probe};

/// Every key of issue 14, each in each of its forms, none at its default.
const EVERY_KEY: &str = r#"
name = "shop"

[[components]]
name = "db"
image = "localhost/db:1"

[components.health]
test = ["CMD", "pg_isready", "-U", "app"]
interval = "10s"
timeout = "5s"
retries = 5
start_period = "30s"
start_interval = "1s 500ms"
on_failure = "none"

[[components]]
name = "migrate"
image = "localhost/app:1"
oneshot = true
depends_on = { db = "service_healthy" }

[[components]]
name = "app"
image = "localhost/app:1"
depends_on = { db = { condition = "healthy", restart_with = true }, migrate = "completed", "auth/api" = "started" }

[components.health]
http = { port = 8080, path = "/healthz" }

[[components.routes]]
name = "http"
port = 8080
hostname = "shop.example.org"

[[components]]
name = "cache"
image = "localhost/cache:1"

[components.depends_on]
db = "started"

[components.health]
tcp = { port = 6379 }

[[components]]
name = "worker"
image = "localhost/app:1"

[components.depends_on.cache]
condition = "service_started"
restart_with = false

[components.health]
test = ["CMD-SHELL", "test -e /tmp/alive"]
"#;

#[test]
fn every_lifecycle_key_parses_and_exports_back_to_the_same_service() {
    let s = parse(EVERY_KEY).unwrap();
    let x = |i: usize| &s.components[i].settings;
    assert_eq!(
        x(0).health,
        Some(HealthCheck {
            probe: Probe::Cmd(vec!["pg_isready".into(), "-U".into(), "app".into()]),
            interval: Millis(10_000),
            timeout: Millis(5_000),
            retries: 5,
            start_period: Millis(30_000),
            start_interval: Millis(1_500),
            on_failure: OnFailure::None,
        })
    );
    assert!(x(1).oneshot);
    assert_eq!(x(1).depends_on["db"].condition, Condition::Healthy);
    assert_eq!(
        x(2).depends_on["db"],
        Dependency {
            condition: Condition::Healthy,
            restart_with: true
        }
    );
    assert_eq!(x(2).depends_on["migrate"].condition, Condition::Completed);
    assert_eq!(x(2).depends_on["auth/api"].condition, Condition::Started);
    assert_eq!(
        x(2).health.as_ref().unwrap().probe,
        Probe::Http {
            port: 8080,
            path: "/healthz".into()
        }
    );
    assert_eq!(
        x(3).health.as_ref().unwrap().probe,
        Probe::Tcp { port: 6379 }
    );
    assert_eq!(x(4).depends_on["cache"].condition, Condition::Started);
    assert!(!x(4).depends_on["cache"].restart_with);
    assert_eq!(
        x(4).health.as_ref().unwrap().probe,
        Probe::Shell("test -e /tmp/alive".into())
    );
    let text = s.to_toml();
    assert_eq!(parse(&text).unwrap(), s, "{text}");
    // The registry's JSON of them reads back the same.
    for c in &s.components {
        let json = serde_json::to_string(&c.settings).unwrap();
        let back: crate::model::Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.settings, "{json}");
    }
    // The file's syntax, not the registry's JSON shapes.
    for word in ["probe", "cmd = [\"pg", "shell", "Healthy"] {
        assert!(!text.contains(word), "{word} in {text}");
    }
    for line in [
        "\"CMD\",",
        "\"CMD-SHELL\",",
        "oneshot = true",
        "migrate = \"completed\"",
        "restart_with = true",
        "on_failure = \"none\"",
        "start_interval = \"1s 500ms\"",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    // None of them is printed when not set.
    let plain = parse(super::tests::GOOD).unwrap().to_toml();
    for key in ["health", "oneshot", "depends_on"] {
        assert!(!plain.contains(key), "{key} in {plain}");
    }
}

#[test]
fn a_check_left_at_its_defaults_is_compose_s() {
    let s = parse("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nhealth = { test = [\"CMD\", \"true\"] }\n").unwrap();
    let h = s.components[0].settings.health.clone().unwrap();
    assert_eq!(
        (
            h.interval,
            h.timeout,
            h.retries,
            h.start_period,
            h.start_interval,
            h.on_failure
        ),
        (
            Millis(30_000),
            Millis(30_000),
            3,
            Millis(0),
            Millis(1_000),
            OnFailure::Restart
        )
    );
    let s = parse("name = \"w\"\n[[components]]\nname = \"a\"\nimage = \"i\"\nhealth = { http = { port = 80 } }\n").unwrap();
    assert_eq!(
        s.components[0].settings.health.as_ref().unwrap().probe,
        Probe::Http {
            port: 80,
            path: "/".into()
        }
    );
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
}

/// Each rule of a component's own keys: (text after the component's head, line:col, reason).
#[test]
fn every_lifecycle_rule_names_the_line_and_reason() {
    let head = "name = \"shop\"\n[[components]]\nname = \"a\"\nimage = \"i\"\n";
    let other = "[[components]]\nname = \"b\"\nimage = \"i\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("[health]\n", "5:2", "unknown field `health`"),
        ("[components.health]\ninterval = \"1s\"\n", "5:1", "[health] needs what the check runs"),
        ("[components.health]\ntest = [\"NONE\"]\n", "6:9", "a component without a check has no [health] table"),
        ("[components.health]\ntest = [\"CMD\"]\n", "6:8", "names no program"),
        ("[components.health]\ntest = [\"CMD\", \"\"]\n", "6:16", "empty program"),
        ("[components.health]\ntest = [\"CMD-SHELL\", \" \"]\n", "6:22", "CMD-SHELL line is empty"),
        ("[components.health]\ntest = [\"CMD-SHELL\"]\n", "6:8", "exactly one command line"),
        ("[components.health]\ntest = [\"CMD-SHELL\", \"a\", \"b\"]\n", "6:8", "exactly one command line"),
        ("[components.health]\ntest = [\"SHELL\", \"a\"]\n", "6:9", "must begin with \"CMD\" or \"CMD-SHELL\", not \"SHELL\""),
        ("[components.health]\ntest = []\n", "6:8", "health test is empty"),
        ("[components.health]\ntest = \"pg_isready\"\n", "6:8", "expected a sequence"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\ntcp = { port = 1 }\n", "7:7", "one of test, http and tcp, not test and tcp"),
        ("[components.health]\nhttp = { port = 0 }\n", "6:17", "health http port 0 is outside 1-65535"),
        ("[components.health]\ntcp = { port = 70000 }\n", "6:16", "health tcp port 70000 is outside 1-65535"),
        ("[components.health]\nhttp = { port = 80, path = \"healthz\" }\n", "6:28", "must begin with \"/\""),
        ("[components.health]\nhttp = { port = 80, path = \"/a b\" }\n", "6:28", "no spaces"),
        ("[components.health]\nhttp = { port = 80, verb = \"GET\" }\n", "6:21", "unknown field `verb`"),
        ("network = \"none\"\n[components.health]\ntcp = { port = 5432 }\n", "7:7", "network = \"none\" gives the container no network"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\ninterval = \"0s\"\n", "7:12", "health interval must be more than 0"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\ntimeout = \"0ms\"\n", "7:11", "health timeout must be more than 0"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\nstart_interval = \"0s\"\n", "7:18", "health start_interval must be more than 0"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\nstart_period = \"soon\"\n", "7:16", "not a duration"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\ninterval = \"1us\"\n", "7:12", "whole milliseconds"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\nretries = 0\n", "7:11", "health retries 0 must be 1-100"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\nretries = 101\n", "7:11", "health retries 101 must be 1-100"),
        ("[components.health]\ntest = [\"CMD\", \"x\"]\non_failure = \"stop\"\n", "7:14", "unknown variant `stop`"),
        ("oneshot = true\nrestart = \"on-failure\"\n", "5:11", "oneshot = true needs restart = \"no\""),
        ("oneshot = true\n[[components.routes]]\nname = \"h\"\nport = 80\nmode = \"l4\"\n", "7:8", "takes no routes"),
        ("oneshot = true\n[components.health]\ntest = [\"CMD\", \"x\"]\n", "6:1", "takes no [health]"),
        ("oneshot = \"yes\"\n", "5:11", "expected a boolean"),
        ("depends_on = { c = \"started\" }\n", "5:16", "depends_on \"c\": service \"shop\" has no component \"c\""),
        ("depends_on = { \"shop/c\" = \"started\" }\n", "5:16", "service \"shop\" has no component \"c\""),
        ("depends_on = { a = \"started\" }\n", "5:16", "component \"a\" depends on itself"),
        ("depends_on = { \"shop/a\" = \"healthy\" }\n", "5:16", "component \"a\" depends on itself"),
        ("depends_on = { B = \"started\" }\n", "5:16", "depends_on \"B\" must be a component of the service, or \"SERVICE/COMPONENT\""),
        ("depends_on = { \"x/y/z\" = \"started\" }\n", "5:16", "must be a component of the service"),
        ("depends_on = { b = \"up\" }\n", "5:20", "condition \"up\" is not \"started\", \"healthy\" or \"completed\""),
        ("depends_on = { b = 1 }\n", "5:20", "expected a condition"),
        ("depends_on = { b = { condition = \"started\", restart_with = \"yes\" } }\n", "5:20", "depends_on \"b\": restart_with must be true or false"),
        ("depends_on = { b = { restart_with = true } }\n", "5:20", "needs \"condition\""),
        ("depends_on = { b = { condition = \"started\", when = 1 } }\n", "5:20", "unknown key \"when\""),
        ("depends_on = { b = \"completed\" }\n", "5:20", "depends_on \"b\" = \"completed\" needs a one-shot component (oneshot = true), and shop/b is not one"),
        ("depends_on = { b = \"started\", \"shop/b\" = \"healthy\" }\n", "5:31", "depends_on \"shop/b\" names shop/b again (first as \"b\")"),
    ];
    let mut wrong = Vec::new();
    for (tail, at, reason) in cases {
        let text = format!("{head}{tail}{other}");
        let e = parse(&text).unwrap_err();
        let at = format!("svc.toml:{at}: ");
        if !e.contains(&at) || !e.contains(reason) {
            wrong.push(format!("{tail:?}\n  got: {e}\n  want: {at}… {reason}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // "healthy" on a component without a check is allowed (it means running), and
    // "completed" on a one-shot one.
    let ok = format!("{head}depends_on = {{ b = \"healthy\", c = \"completed\" }}\n{other}[[components]]\nname = \"c\"\nimage = \"i\"\noneshot = true\n");
    parse(&ok).unwrap();
}

#[test]
fn a_cycle_in_a_service_is_spelled_out_at_the_entry_that_closes_it() {
    let text = "name = \"shop\"\n[[components]]\nname = \"app\"\nimage = \"i\"\ndepends_on = { db = \"healthy\" }\n[[components]]\nname = \"db\"\nimage = \"i\"\ndepends_on = { cache = \"started\" }\n[[components]]\nname = \"cache\"\nimage = \"i\"\n[components.depends_on]\napp = \"started\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!(
        e,
        "svc.toml:14:1: dependency cycle: shop/app -> shop/db -> shop/cache -> shop/app"
    );
    let two = "name = \"shop\"\n[[components]]\nname = \"app\"\nimage = \"i\"\ndepends_on = { db = \"healthy\" }\n[[components]]\nname = \"db\"\nimage = \"i\"\ndepends_on = { \"shop/app\" = \"started\" }\n";
    assert_eq!(
        parse(two).unwrap_err(),
        "svc.toml:9:16: dependency cycle: shop/app -> shop/db -> shop/app"
    );
}

fn file(name: &str, text: &str) -> ServiceFile {
    parse_service(Path::new(name), text).unwrap()
}

/// `check_registry_rules` with `existing` in the registry, its issues as printed.
fn rules(existing: &[&ServiceFile], incoming: &[ServiceFile]) -> Result<(), String> {
    let existing: Vec<Service> = existing.iter().map(|f| f.service.clone()).collect();
    check_registry_rules(&existing, incoming).map_err(|e| e.to_string())
}

fn registry_error(existing: &[&ServiceFile], incoming: &[ServiceFile]) -> String {
    rules(existing, incoming).unwrap_err()
}

const AUTH: &str = "name = \"auth\"\n[[components]]\nname = \"api\"\nimage = \"i\"\n[[components]]\nname = \"setup\"\nimage = \"i\"\noneshot = true\n";

#[test]
fn another_service_s_component_must_be_in_the_files_or_the_registry() {
    let shop = |deps: &str| {
        file(
            "shop.toml",
            &format!("name = \"shop\"\n[[components]]\nname = \"app\"\nimage = \"i\"\ndepends_on = {{ {deps} }}\n"),
        )
    };
    let auth = file("auth.toml", AUTH);
    // Neither applied nor registered.
    let e = registry_error(&[], &[shop("\"auth/api\" = \"healthy\"")]);
    assert_eq!(
        e,
        "shop.toml:5:16: depends_on \"auth/api\": service \"auth\" is neither in the files applied nor in the registry"
    );
    // In the registry, or in the files applied with it.
    rules(&[&auth], &[shop("\"auth/api\" = \"healthy\"")]).unwrap();
    rules(&[], &[shop("\"auth/api\" = \"healthy\""), auth.clone()]).unwrap();
    rules(&[], &[shop("\"auth/setup\" = \"completed\""), auth.clone()]).unwrap();
    let e = registry_error(&[&auth], &[shop("\"auth/web\" = \"started\"")]);
    assert_eq!(
        e,
        "shop.toml:5:16: depends_on \"auth/web\": service \"auth\" (in the registry) has no component \"web\""
    );
    let e = registry_error(&[], &[shop("\"auth/web\" = \"started\""), auth.clone()]);
    assert!(e.contains("shop.toml:5:16: depends_on \"auth/web\": service \"auth\" (in auth.toml) has no component \"web\""), "{e}");
    let e = registry_error(&[&auth], &[shop("\"auth/api\" = \"completed\"")]);
    assert_eq!(
        e,
        "shop.toml:5:29: depends_on \"auth/api\" = \"completed\" needs a one-shot component (oneshot = true), and auth/api is not one"
    );
    // A file that takes away a component the registry's other services depend on.
    let registered = shop("\"auth/api\" = \"healthy\"");
    let e = registry_error(
        &[&registered, &auth],
        &[file(
            "auth.toml",
            "name = \"auth\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n",
        )],
    );
    assert!(
        e.starts_with("auth.toml:1:8: component shop/app in the registry depends on auth/api, which this file does not define"),
        "{e}"
    );
}

#[test]
fn a_cycle_through_services_is_refused_with_the_registry_and_the_files() {
    let shop = file(
        "shop.toml",
        "name = \"shop\"\n[[components]]\nname = \"app\"\nimage = \"i\"\ndepends_on = { db = \"healthy\" }\n[[components]]\nname = \"db\"\nimage = \"i\"\ndepends_on = { \"auth/api\" = \"started\" }\n",
    );
    let auth = file(
        "auth.toml",
        "name = \"auth\"\n[[components]]\nname = \"api\"\nimage = \"i\"\ndepends_on = { \"shop/app\" = \"started\" }\n",
    );
    // Both applied together: found from the first file's components, closed in the second.
    let e = registry_error(&[], &[shop.clone(), auth.clone()]);
    assert_eq!(
        e,
        "auth.toml:5:16: dependency cycle: shop/app -> shop/db -> auth/api -> shop/app"
    );
    // One of them registered: located in the file applied, the cycle spelled to end there.
    let e = registry_error(&[&shop], std::slice::from_ref(&auth));
    assert_eq!(
        e,
        "auth.toml:5:16: dependency cycle: shop/app -> shop/db -> auth/api -> shop/app"
    );
    let e = registry_error(&[&auth], std::slice::from_ref(&shop));
    assert_eq!(
        e,
        "shop.toml:9:16: dependency cycle: auth/api -> shop/app -> shop/db -> auth/api"
    );
    // Without the edge back, no cycle.
    let auth_ok = file("auth.toml", AUTH);
    rules(&[&auth_ok], &[shop]).unwrap();
}
