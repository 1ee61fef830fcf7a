//! Merging compose files (`-f a -f b`) and `extends`, by compose's rules (compose-go's
//! `override` package): scalars are overridden; mappings merge key by key; `command`,
//! `entrypoint` and `healthcheck.test` are replaced whole; `environment`, `labels`,
//! `sysctls` and the like merge by key in either syntax; `depends_on` and a service's
//! `networks` merge by name in either syntax; other lists are appended, and those of
//! compose's unicity rules (`ports`, `volumes` by target, `expose`, `secrets`, `dns`, …)
//! keep one entry per key, the later one in the earlier one's place. `!reset` on a
//! value removes what the files before set; `!override` replaces it without merging.

use super::yaml::{Key, Node, Value};

/// How the values at one key path merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Default,
    Override,
    /// `KEY=VALUE` lists or mappings, merged by key into a mapping.
    KeyValue,
    /// Lists of names or mappings by name (`depends_on`, `networks`), merged by name.
    ByName,
    Logging,
    Ulimit,
}

fn rule(path: &[String]) -> Rule {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["services", _, rest @ ..] => match rest {
            ["command"] | ["entrypoint"] | ["healthcheck", "test"] => Rule::Override,
            ["environment"]
            | ["labels"]
            | ["sysctls"]
            | ["annotations"]
            | ["build", "args"]
            | ["build", "labels"]
            | ["deploy", "labels"] => Rule::KeyValue,
            ["depends_on"] | ["networks"] => Rule::ByName,
            ["logging"] => Rule::Logging,
            ["ulimits", _] => Rule::Ulimit,
            _ => Rule::Default,
        },
        ["networks", _, "labels"] | ["volumes", _, "labels"] => Rule::KeyValue,
        _ => Rule::Default,
    }
}

/// The key of a list entry under compose's unicity rule for `path`, if it has one.
fn unique_key(path: &[String], item: &Node) -> Option<String> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let rest: Vec<&str> = match p.as_slice() {
        ["services", _, rest @ ..] => rest.to_vec(),
        _ => return None,
    };
    let text = item.text().map(str::to_string);
    let field = |k: &str| item.get(k).and_then(Node::text).map(str::to_string);
    match rest.as_slice() {
        ["ports"] => text.or_else(|| {
            Some(format!(
                "{}:{}:{}/{}",
                field("host_ip").unwrap_or_else(|| "0.0.0.0".into()),
                field("published").unwrap_or_default(),
                field("target").unwrap_or_default(),
                field("protocol").unwrap_or_else(|| "tcp".into())
            ))
        }),
        ["volumes"] => match text {
            Some(t) => Some(volume_target(&t)),
            None => field("target"),
        },
        ["devices"] => match text {
            Some(t) => {
                let parts: Vec<&str> = t.split(':').collect();
                Some(parts.get(1).unwrap_or(&parts[0]).to_string())
            }
            None => field("target"),
        },
        ["secrets"] | ["configs"] => {
            let base = if rest[0] == "secrets" {
                "/run/secrets"
            } else {
                ""
            };
            match text {
                Some(t) => Some(format!("{base}/{t}")),
                None => field("target").or_else(|| Some(format!("{base}/{}", field("source")?))),
            }
        }
        ["env_file"] => text.or_else(|| field("path")),
        ["expose"]
        | ["cap_add"]
        | ["cap_drop"]
        | ["dns"]
        | ["dns_search"]
        | ["dns_opt"]
        | ["profiles"]
        | ["tmpfs"]
        | ["links"]
        | ["extra_hosts"]
        | ["networks", _, "aliases"] => text,
        _ => None,
    }
}

/// The container path of a short-syntax volume `[SOURCE:]TARGET[:MODE]`.
pub fn volume_target(s: &str) -> String {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.len() {
        1 => parts[0].to_string(),
        _ => parts[1].to_string(),
    }
}

/// A list whose entries with one key keep only the last, in the first one's place.
fn enforce_unicity(path: &[String], items: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(items.len());
    let mut keys: Vec<(String, usize)> = Vec::new();
    for item in items {
        match unique_key(path, &item) {
            Some(k) => match keys.iter().find(|(seen, _)| *seen == k) {
                Some(&(_, j)) => out[j] = item,
                None => {
                    keys.push((k, out.len()));
                    out.push(item);
                }
            },
            None => out.push(item),
        }
    }
    out
}

/// A `KEY=VALUE` list or a mapping as a mapping (`KEY` alone: a null value).
fn key_value_map(n: Node) -> Node {
    match n.value {
        Value::Seq(items) => {
            let mut m: Vec<(Key, Node)> = Vec::new();
            for i in items {
                let Some(t) = i.text() else {
                    continue;
                };
                let (k, v) = match t.split_once('=') {
                    Some((k, v)) => (k.to_string(), Node::scalar(v, i.at)),
                    None => (t.to_string(), Node::new(Value::Null, i.at)),
                };
                m.retain(|(e, _)| e.name != k);
                m.push((Key { name: k, at: i.at }, v));
            }
            Node {
                value: Value::Map(m),
                at: n.at,
                tag: n.tag,
            }
        }
        _ => n,
    }
}

/// A list of names as a mapping of each name to null.
fn by_name_map(n: Node) -> Node {
    match n.value {
        Value::Seq(items) => Node {
            value: Value::Map(
                items
                    .into_iter()
                    .filter_map(|i| {
                        let name = i.text()?.to_string();
                        Some((Key { name, at: i.at }, Node::new(Value::Null, i.at)))
                    })
                    .collect(),
            ),
            at: n.at,
            tag: n.tag,
        },
        _ => n,
    }
}

fn listy(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        [
            "services",
            _,
            "dns" | "dns_search" | "tmpfs" | "env_file" | "expose" | "dns_opt"
        ]
    )
}

/// A scalar where compose takes a scalar or a list (`dns: 8.8.8.8`) as a list.
fn as_list(path: &[String], n: Node) -> Node {
    match &n.value {
        Value::Scalar { .. } if listy(path) => Node {
            value: Value::Seq(vec![Node {
                tag: None,
                ..n.clone()
            }]),
            at: n.at,
            tag: n.tag,
        },
        _ => n,
    }
}

/// `over` merged onto `base` at `path`; `None` when `over` is `!reset`.
pub fn merge(path: &mut Vec<String>, base: Node, over: Node) -> Option<Node> {
    match over.tag.as_deref() {
        Some("!reset") => return None,
        Some("!override") => {
            return Some(Node { tag: None, ..over });
        }
        _ => {}
    }
    if over.is_null() {
        return Some(base);
    }
    let r = rule(path);
    let (base, over) = match r {
        Rule::KeyValue => (key_value_map(base), key_value_map(over)),
        Rule::ByName => (by_name_map(base), by_name_map(over)),
        _ => (as_list(path, base), as_list(path, over)),
    };
    match r {
        Rule::Override => return Some(over),
        Rule::Logging => {
            let driver = |n: &Node| n.get("driver").and_then(Node::text).map(str::to_string);
            if let (Some(a), Some(b)) = (driver(&base), driver(&over)) {
                if a != b {
                    return Some(over);
                }
            }
        }
        Rule::Ulimit if base.map().is_none() || over.map().is_none() => return Some(over),
        _ => {}
    }
    let at = over.at;
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => Some(Node {
            value: Value::Map(merge_maps(path, b, o)),
            at,
            tag: None,
        }),
        (Value::Seq(mut b), Value::Seq(o)) => {
            b.extend(o);
            Some(Node {
                value: Value::Seq(enforce_unicity(path, b)),
                at,
                tag: None,
            })
        }
        (_, o) => Some(Node {
            value: o,
            at,
            tag: None,
        }),
    }
}

fn merge_maps(
    path: &mut Vec<String>,
    mut base: Vec<(Key, Node)>,
    over: Vec<(Key, Node)>,
) -> Vec<(Key, Node)> {
    for (k, v) in over {
        path.push(k.name.clone());
        match base.iter().position(|(b, _)| b.name == k.name) {
            Some(i) => {
                let old = base[i].1.clone();
                match merge(path, old, v) {
                    Some(n) => base[i].1 = n,
                    None => {
                        base.remove(i);
                    }
                }
            }
            None => {
                if v.tag.as_deref() != Some("!reset") {
                    base.push((k, strip(v)));
                }
            }
        }
        path.pop();
    }
    base
}

/// A node without the merge tags (a value of the first file, or new in a later one).
fn strip(mut n: Node) -> Node {
    if matches!(n.tag.as_deref(), Some("!reset" | "!override")) {
        n.tag = None;
    }
    n
}

/// Compose files merged in their order (each already interpolated).
pub fn merge_files(mut files: Vec<Node>) -> Node {
    let mut out = files.remove(0);
    for f in files {
        out = merge(&mut Vec::new(), out, f).expect("a file's root is not !reset");
    }
    normalize(&mut Vec::new(), &mut out);
    out
}

/// Applies the unicity rules and the scalar-as-list forms to a single file's lists too,
/// as compose does after loading.
pub fn normalize(path: &mut Vec<String>, n: &mut Node) {
    if n.tag.as_deref() == Some("!override") || n.tag.as_deref() == Some("!reset") {
        n.tag = None;
    }
    if listy(path) {
        *n = as_list(path, n.clone());
    }
    match &mut n.value {
        Value::Map(m) => {
            for (k, v) in m.iter_mut() {
                path.push(k.name.clone());
                normalize(path, v);
                path.pop();
            }
        }
        Value::Seq(items) => {
            let taken = std::mem::take(items);
            *items = enforce_unicity(path, taken);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    fn merged(files: &[&str]) -> Node {
        merge_files(files.iter().map(|f| parse(f, 0).unwrap()).collect())
    }

    fn texts(n: &Node) -> Vec<String> {
        n.seq()
            .unwrap()
            .iter()
            .map(|i| i.text().unwrap().to_string())
            .collect()
    }

    fn map_texts(n: &Node) -> Vec<String> {
        n.map()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{}={}", k.name, v.text().unwrap_or("~")))
            .collect()
    }

    #[test]
    fn scalars_override_and_mappings_merge() {
        let n = merged(&[
            "services:\n  app:\n    image: a:1\n    user: '1'\n    healthcheck:\n      test: [CMD, a]\n      interval: 5s\n",
            "services:\n  app:\n    image: a:2\n    healthcheck:\n      test: [CMD-SHELL, b]\n  db:\n    image: pg\n",
        ]);
        let s = n.get("services").unwrap();
        let app = s.get("app").unwrap();
        assert_eq!(app.get("image").unwrap().text(), Some("a:2"));
        assert_eq!(app.get("user").unwrap().text(), Some("1"));
        let h = app.get("healthcheck").unwrap();
        assert_eq!(texts(h.get("test").unwrap()), ["CMD-SHELL", "b"]);
        assert_eq!(h.get("interval").unwrap().text(), Some("5s"));
        assert!(s.get("db").is_some());
        // The overriding value keeps its own position (file 2, line 3).
        assert_eq!(app.get("image").unwrap().at.line, 3);
    }

    #[test]
    fn command_and_entrypoint_are_replaced_whole() {
        let n = merged(&[
            "services:\n  a:\n    command: [x, y, z]\n    entrypoint: [e]\n",
            "services:\n  a:\n    command: [w]\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(texts(a.get("command").unwrap()), ["w"]);
        assert_eq!(texts(a.get("entrypoint").unwrap()), ["e"]);
    }

    #[test]
    fn environment_and_labels_merge_by_key_in_either_syntax() {
        let n = merged(&[
            "services:\n  a:\n    environment:\n      - A=1\n      - B=2\n      - C\n    labels: {x: '1'}\n",
            "services:\n  a:\n    environment:\n      B: '3'\n      D: '4'\n    labels: [y=2, x=3]\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(
            map_texts(a.get("environment").unwrap()),
            ["A=1", "B=3", "C=~", "D=4"]
        );
        assert_eq!(map_texts(a.get("labels").unwrap()), ["x=3", "y=2"]);
    }

    #[test]
    fn ports_volumes_and_expose_are_appended_one_per_key() {
        let n = merged(&[
            "services:\n  a:\n    ports: ['8080:80', '9000:9000']\n    volumes: [./a:/data, logs:/logs]\n    expose: ['80']\n    dns: 1.1.1.1\n",
            "services:\n  a:\n    ports: ['8080:80', '8443:443']\n    volumes: ['./b:/data:ro', {type: volume, source: x, target: /logs}]\n    expose: ['80', '81']\n    dns: [8.8.8.8]\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(
            texts(a.get("ports").unwrap()),
            ["8080:80", "9000:9000", "8443:443"]
        );
        let v = a.get("volumes").unwrap().seq().unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].text(), Some("./b:/data:ro"));
        assert_eq!(v[1].get("source").unwrap().text(), Some("x"));
        assert_eq!(texts(a.get("expose").unwrap()), ["80", "81"]);
        assert_eq!(texts(a.get("dns").unwrap()), ["1.1.1.1", "8.8.8.8"]);
    }

    #[test]
    fn depends_on_and_networks_merge_by_name() {
        let n = merged(&[
            "services:\n  a:\n    depends_on: [db]\n    networks: [front]\n",
            "services:\n  a:\n    depends_on:\n      cache:\n        condition: service_healthy\n    networks:\n      back:\n        aliases: [x]\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        let d: Vec<&str> = a
            .get("depends_on")
            .unwrap()
            .map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(d, ["db", "cache"]);
        let nets = a.get("networks").unwrap();
        assert!(nets.get("front").unwrap().is_null());
        assert_eq!(
            texts(nets.get("back").unwrap().get("aliases").unwrap()),
            ["x"]
        );
    }

    #[test]
    fn reset_and_override_tags() {
        let n = merged(&[
            "services:\n  a:\n    ports: ['1:1']\n    environment: {A: '1', B: '2'}\n    user: x\n",
            "services:\n  a:\n    ports: !override ['2:2']\n    environment: !reset {}\n    user: !reset null\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(texts(a.get("ports").unwrap()), ["2:2"]);
        assert!(a.get("environment").is_none());
        assert!(a.get("user").is_none());
    }

    #[test]
    fn logging_with_another_driver_is_replaced_and_ulimits_by_form() {
        let n = merged(&[
            "services:\n  a:\n    logging: {driver: json-file, options: {max-size: 1m}}\n    ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}\n  b:\n    logging: {driver: json-file, options: {max-size: 1m}}\n",
            "services:\n  a:\n    logging: {driver: journald}\n    ulimits: {nofile: 3, nproc: {soft: 1, hard: 6}}\n  b:\n    logging: {options: {path: /x}}\n",
        ]);
        let s = n.get("services").unwrap();
        let a = s.get("a").unwrap();
        assert!(a.get("logging").unwrap().get("options").is_none());
        assert_eq!(
            a.get("ulimits").unwrap().get("nofile").unwrap().int(),
            Some(3)
        );
        let b = s.get("b").unwrap().get("logging").unwrap();
        assert_eq!(b.get("driver").unwrap().text(), Some("json-file"));
        assert_eq!(
            map_texts(b.get("options").unwrap()),
            ["max-size=1m", "path=/x"]
        );
    }

    #[test]
    fn a_single_file_keeps_one_entry_per_key_too() {
        let n = merged(&[
            "services:\n  a:\n    ports: ['80:80', '80:80']\n    volumes: [/a:/d, /b:/d]\n",
        ]);
        let a = n.get("services").unwrap().get("a").unwrap();
        assert_eq!(texts(a.get("ports").unwrap()), ["80:80"]);
        assert_eq!(texts(a.get("volumes").unwrap()), ["/b:/d"]);
    }
}
