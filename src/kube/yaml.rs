//! A JSON value written as block-style YAML, as Kubernetes manifests are written: maps as
//! `key: value` lines, sequences as `- ` items, scalars plain when nothing could read them
//! as another type or as YAML syntax, else double-quoted with JSON's escapes (a YAML
//! double-quoted scalar is a superset of a JSON string). No crate of the project writes
//! YAML (saphyr-parser only reads it); the tests read this output back with it.

use serde_json::Value;

/// `value` as a YAML block (a document's body), each line ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        v => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

/// `# text` lines (each line of `text` its own comment line).
pub fn comment(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "#\n".to_string()
            } else {
                format!("# {l}\n")
            }
        })
        .collect()
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Whether `v` is written inline after its key or dash (a scalar or an empty collection).
fn inline(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => true,
    }
}

/// A manifest's keys in the order people write them: `apiVersion`, `kind`, `metadata`,
/// `name` first, then the others in order.
fn ordered(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |k: &str| match k {
        "apiVersion" => 0,
        "kind" => 1,
        "metadata" => 2,
        "name" => 3,
        _ => 4,
    };
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
    v
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, at: usize) {
    for (i, (k, v)) in ordered(m).into_iter().enumerate() {
        // The first key of a map that is a sequence item follows its dash.
        if i > 0 || out.ends_with('\n') || out.is_empty() {
            indent(out, at);
        }
        out.push_str(&string(k));
        out.push(':');
        body(out, v, at);
    }
}

fn seq(out: &mut String, a: &[Value], at: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 || out.ends_with('\n') || out.is_empty() {
            indent(out, at);
        }
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                map(out, m, at + 2);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push(' ');
                seq(out, a, at + 2);
            }
            v => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:` — the value inline, or a new line and the nested block.
fn body(out: &mut String, v: &Value, at: usize) {
    if inline(v) {
        out.push(' ');
        out.push_str(&scalar(v));
        out.push('\n');
        return;
    }
    out.push('\n');
    match v {
        Value::Object(m) => map(out, m, at + 2),
        Value::Array(a) => seq(out, a, at + 2),
        _ => unreachable!("scalars are inline"),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string, plain when that reads back as the same string, else double-quoted.
pub fn string(s: &str) -> String {
    if plain(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// A double-quoted scalar: `"` and `\\` escaped, and every character outside what both
/// YAML 1.1 (Kubernetes' reader) and 1.2 take raw inside quotes and as no line break:
/// control characters, DEL, U+0080–U+009F (NEL among them), U+2028/U+2029, the BOM and
/// U+FFFE/U+FFFF.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0xA0
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
                ) =>
            {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain only for `[A-Za-z/][A-Za-z0-9_./+=-]*` that no YAML reader (1.1 or 1.2) takes
/// for a boolean or null: nothing there is a number, an indicator, a comment or `: `.
fn plain(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(first) = b.first() else { return false };
    if !(first.is_ascii_alphabetic() || *first == b'/') {
        return false;
    }
    if !b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-' | b'+' | b'='))
    {
        return false;
    }
    !matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::yaml::{parse, Node, Value as Y};
    use proptest::prelude::*;
    use serde_json::json;

    /// The YAML read back (saphyr-parser, through the compose importer's tree) as JSON:
    /// a plain scalar typed as YAML types it, a quoted one a string.
    fn back(n: &Node) -> Value {
        match &n.value {
            Y::Null => Value::Null,
            Y::Scalar { text, plain: false } => Value::String(text.clone()),
            Y::Scalar { text, plain: true } => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" | "~" => Value::Null,
                t => match t.parse::<i64>() {
                    Ok(i) => json!(i),
                    Err(_) => match t.parse::<f64>() {
                        Ok(f) if t.chars().any(|c| c.is_ascii_digit()) => json!(f),
                        _ => Value::String(t.to_string()),
                    },
                },
            },
            Y::Seq(items) => Value::Array(items.iter().map(back).collect()),
            Y::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), back(v)))
                    .collect(),
            ),
        }
    }

    fn round_trip(v: &Value) {
        let text = to_yaml(v);
        let node = parse(&text, 0).unwrap_or_else(|e| panic!("{e:?} in:\n{text}"));
        assert_eq!(&back(&node), v, "read back differently:\n{text}");
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "shop-db", "labels": {"app.kubernetes.io/name": "db"}},
            "spec": {
                "containers": [{
                    "name": "db",
                    "command": ["sh", "-c"],
                    "args": ["while true; do\n  nc -l -p 5432\ndone\n"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "true"}],
                    "ports": [{"containerPort": 8080, "hostIP": "127.0.0.1"}],
                    "securityContext": {"capabilities": {"add": [], "drop": ["ALL"]}},
                }],
                "volumes": [],
                "nested": [[1, 2], [], [{"a": null}]],
                "empty": {},
            }
        });
        round_trip(&v);
        let text = to_yaml(&v);
        assert!(
            text.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n  name: shop-db\n  labels:\n"),
            "{text}"
        );
        assert!(text.contains("\n    - name: db\n      args:\n"), "{text}");
        assert!(text.contains("value: \"true\"\n"), "{text}");
        assert!(text.contains("hostIP: \"127.0.0.1\"\n"), "{text}");
    }

    #[test]
    fn strings_that_yaml_would_read_as_something_else_are_quoted() {
        for s in [
            "",
            "true",
            "No",
            "on",
            "~",
            "null",
            "1",
            "0x1f",
            "1e3",
            "1000:1000",
            "-a",
            "a: b",
            "a #b",
            "#x",
            "*x",
            "&x",
            "!x",
            "@x",
            "`x",
            "%x",
            "{a}",
            "[a]",
            "'a'",
            "\"a\"",
            " a",
            "a ",
            "a\tb",
            "é",
            "\u{1}",
            "a\\b",
            "=",
            "a=",
            "+1",
            "\u{7f}\u{85}\u{2028}\u{feff}",
            "\r\n",
            ".inf",
            "-.5",
            "key:",
            "? x",
            "|",
            ">",
        ] {
            round_trip(&json!({ s: s, "list": [s] }));
        }
        assert_eq!(string("localhost/busybox"), "localhost/busybox");
        assert_eq!(string("8080"), "\"8080\"");
    }

    #[test]
    fn comments_are_one_line_each() {
        assert_eq!(comment("a\n\nb"), "# a\n#\n# b\n");
    }

    proptest! {
        #[test]
        fn any_string_reads_back(s in any::<String>(), t in "[ -~\\n\\t]{0,12}") {
            round_trip(&json!({"k": s, t.clone(): [t, {"x": 1}]}));
        }
    }
}
