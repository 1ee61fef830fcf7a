use super::*;

#[test]
fn container_names_drop_the_component_when_equal_to_the_service() {
    assert_eq!(container_name("wiki", "wiki"), "wiki");
    assert_eq!(container_name("wiki", "db"), "wiki-db");
}

#[test]
fn port_publishes_parse_like_podman() {
    let p: PortPublish = "9000:80".parse().unwrap();
    assert_eq!(
        (p.ip, p.host_port, p.container_port, p.proto),
        (None, 9000, 80, Proto::Tcp)
    );
    let p: PortPublish = "[::1]:53:53/udp".parse().unwrap();
    assert_eq!(p.to_string(), "[::1]:53:53/udp");
    for bad in ["80", "0:80", "1:70000", "x:1:2", "1:2/icmp", "a:b"] {
        assert!(bad.parse::<PortPublish>().is_err(), "{bad}");
    }
}

#[test]
fn hostile_names_are_rejected() {
    for name in [
        "../etc",
        "a/b",
        "a\u{0}b",
        "wіki", /* Cyrillic і */
        &"a".repeat(64),
        "",
    ] {
        assert!(!is_name(name), "{name:?}");
    }
    for h in [
        "wіki.example.org",
        "-a.b",
        "a..b",
        &"a".repeat(64),
        "A.b",
        "a_b.c",
    ] {
        assert!(!is_hostname(h), "{h:?}");
    }
    assert!(is_hostname("xn--wki-8cd.example.org"));
}
