//! Compose's value syntaxes: typed reads of nodes (each wrong type reported at its
//! place), Go durations (`1m30s`, `1.5s`), sizes (`512m`, `1.5gb`, bytes) and the shell
//! words of a string `command`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::report::Findings;
use super::yaml::{Node, Value};

impl Findings {
    /// A scalar as text (numbers and booleans as written).
    pub fn text(&mut self, n: &Node, key: &str) -> Option<String> {
        match n.text() {
            Some(t) => Some(t.to_string()),
            None => {
                self.invalid(n.at, key, format!("must be a string, not {}", n.kind()));
                None
            }
        }
    }

    /// A list of scalars, or one scalar as a list of one.
    pub fn texts(&mut self, n: &Node, key: &str) -> Vec<String> {
        match &n.value {
            Value::Null => Vec::new(),
            Value::Scalar { text, .. } => vec![text.clone()],
            Value::Seq(items) => items.iter().filter_map(|i| self.text(i, key)).collect(),
            Value::Map(_) => {
                self.invalid(
                    n.at,
                    key,
                    "must be a string or a list of strings, not a mapping",
                );
                Vec::new()
            }
        }
    }

    pub fn bool(&mut self, n: &Node, key: &str) -> Option<bool> {
        let b = n.bool();
        if b.is_none() {
            self.invalid(n.at, key, "must be true or false");
        }
        b
    }

    pub fn int(&mut self, n: &Node, key: &str) -> Option<i64> {
        let i = n.int();
        if i.is_none() {
            self.invalid(n.at, key, "must be an integer");
        }
        i
    }

    /// A mapping's entries, or an invalid finding.
    pub fn entries<'n>(&mut self, n: &'n Node, key: &str) -> &'n [(super::yaml::Key, Node)] {
        match &n.value {
            Value::Map(m) => m,
            Value::Null => &[],
            _ => {
                self.invalid(n.at, key, format!("must be a mapping, not {}", n.kind()));
                &[]
            }
        }
    }

    /// `KEY=VALUE` entries of a list, or a mapping (`environment`, `labels`, `sysctls`):
    /// a value `None` where only the key is given (`- KEY`, `KEY:`).
    pub fn key_values(&mut self, n: &Node, key: &str) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        match &n.value {
            Value::Null => {}
            Value::Seq(items) => {
                for i in items {
                    if let Some(t) = self.text(i, key) {
                        match t.split_once('=') {
                            Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                            None => out.insert(t, None),
                        };
                    }
                }
            }
            Value::Map(m) => {
                for (k, v) in m {
                    let value = match &v.value {
                        Value::Null => None,
                        Value::Scalar { text, .. } => Some(text.clone()),
                        _ => {
                            self.invalid(
                                v.at,
                                &format!("{key}.{}", k.name),
                                "must be a string, a number or a boolean",
                            );
                            continue;
                        }
                    };
                    out.insert(k.name.clone(), value);
                }
            }
            Value::Scalar { .. } => {
                self.invalid(n.at, key, "must be a mapping or a list of KEY=VALUE");
            }
        }
        out
    }
}

/// A Go duration, as compose writes them: `1m30s`, `10s`, `1.5s`, `500ms`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as \"30s\", \"1m30s\" or \"500ms\"");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut rest = t;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += n * mult;
        rest = &rest[unit_len..];
    }
    if !nanos.is_finite() || nanos > 1e18 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// A size as compose (docker's `RAMInBytes`) reads it: a number, possibly with a
/// fraction, and `b`, `k`, `kb`, `m`, `mb`, `g`, `gb` (any case; units of 1024), or a
/// plain number of bytes.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("{s:?} is not a size such as \"512m\" or \"1g\"");
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let mult: f64 = match t[num_len..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let b = n * mult;
    if !b.is_finite() || b >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(b as i64)
}

/// The words of a string `command` or `entrypoint`, split as compose splits them (a
/// shell's quoting, no expansion).
pub fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err("an unclosed ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err("an unclosed \" quote".into()),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err("an unclosed \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(ch) => word.push(ch),
                    None => word.push('\\'),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        for bad in ["", "10", "s", "1x", "1 s", "-1s", "1m30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64 k"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1x").is_err());
    }

    #[test]
    fn shell_words_as_compose_splits_them() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "a b"' "x y" z\ w"#).unwrap(),
            ["sh", "-c", "echo \"a b\"", "x y", "z w"]
        );
        assert_eq!(shell_words("  a   b ").unwrap(), ["a", "b"]);
        assert_eq!(shell_words(r#"a "" b"#).unwrap(), ["a", "", "b"]);
        assert_eq!(shell_words(r#""\$x \"q\"""#).unwrap(), ["$x \"q\""]);
        assert!(shell_words("echo 'open").is_err());
        assert!(shell_words("echo \"open").is_err());
        assert!(shell_words("").unwrap().is_empty());
    }
}
