//! Compose's variable interpolation in every value of a file (keys are left as they are):
//! `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}` (defaults and
//! replacements interpolated in turn) and `$$` for a literal `$`. A variable that is not
//! set becomes the empty string, with a warning, as compose does.

use std::collections::{BTreeMap, BTreeSet};

use super::yaml::{Node, Pos, Value};

/// The variables interpolation reads: the process's environment over the `.env` file's.
pub type Env = BTreeMap<String, String>;

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// `s` with its variables substituted; `unset` collects the names that were not set and
/// became empty. The error never quotes a value (it may be a secret), only names and
/// positions.
pub fn interpolate(s: &str, env: &Env, unset: &mut BTreeSet<String>) -> Result<String, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        let invalid = || {
            format!(
                "invalid interpolation format: the '$' at character {} is not followed by a name, {{NAME}} or '$' (write $$ for a literal $)",
                i + 1
            )
        };
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&n) if is_name_start(n) => {
                let mut j = i + 1;
                while j < chars.len() && is_name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name, env, unset));
                i = j;
            }
            Some('{') => {
                // The matching '}', past nested ${...} in a default.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '$' if chars.get(j + 1) == Some(&'{') => {
                            depth += 1;
                            j += 1;
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!(
                        "invalid interpolation format: the '${{' at character {} is never closed with '}}'",
                        i + 1
                    ));
                }
                let inner: String = chars[i + 2..j].iter().collect();
                out.push_str(&braced(&inner, env, unset).map_err(|e| {
                    if e.is_empty() {
                        invalid()
                    } else {
                        e
                    }
                })?);
                i = j + 1;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

fn lookup(name: &str, env: &Env, unset: &mut BTreeSet<String>) -> String {
    match env.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

/// The inside of `${...}`; an empty error means "invalid format".
fn braced(inner: &str, env: &Env, unset: &mut BTreeSet<String>) -> Result<String, String> {
    let name_end = inner
        .char_indices()
        .find(|&(_, c)| !is_name_char(c))
        .map_or(inner.len(), |(i, _)| i);
    let name = &inner[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(String::new());
    }
    let rest = &inner[name_end..];
    let value = env.get(name);
    let (colon, op_rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() {
        return Ok(lookup(name, env, unset));
    }
    let mut ops = op_rest.chars();
    let op = ops.next().ok_or_else(String::new)?;
    let arg = ops.as_str();
    // `:` tests for unset or empty; without it, for unset only.
    let missing = match value {
        None => true,
        Some(v) => colon && v.is_empty(),
    };
    match op {
        '-' => {
            if missing {
                interpolate(arg, env, unset)
            } else {
                Ok(value.cloned().unwrap_or_default())
            }
        }
        '+' => {
            if missing {
                Ok(String::new())
            } else {
                interpolate(arg, env, unset)
            }
        }
        '?' => {
            if missing {
                let msg = interpolate(arg, env, unset)?;
                Err(if msg.is_empty() {
                    format!("required variable {name} is missing a value")
                } else {
                    format!("required variable {name} is missing a value: {msg}")
                })
            } else {
                Ok(value.cloned().unwrap_or_default())
            }
        }
        _ => Err(String::new()),
    }
}

/// One interpolation error (or unset variable): where, the key path
/// (`services.app.environment.A`), why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Pos,
    pub key: String,
    pub reason: String,
}

/// Interpolates every scalar value under `node` in place; `path` is the key path of
/// `node`. Errors are collected, all of them.
pub fn interpolate_tree(
    node: &mut Node,
    env: &Env,
    path: &mut Vec<String>,
    unset: &mut BTreeMap<String, Problem>,
    problems: &mut Vec<Problem>,
) {
    match &mut node.value {
        Value::Scalar { text, .. } => {
            if text.contains('$') {
                let mut names = BTreeSet::new();
                let r = interpolate(text, env, &mut names);
                for name in names {
                    unset.entry(name.clone()).or_insert_with(|| Problem {
                        at: node.at,
                        key: path.join("."),
                        reason: format!(
                            "the variable {name} is not set: it became the empty string"
                        ),
                    });
                }
                match r {
                    Ok(t) => *text = t,
                    Err(reason) => problems.push(Problem {
                        at: node.at,
                        key: path.join("."),
                        reason,
                    }),
                }
            }
        }
        Value::Seq(items) => {
            for i in items {
                interpolate_tree(i, env, path, unset, problems);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                // Extension keys (x-...) are compose's own scratch space: their values
                // are interpolated only where they are used, through an alias.
                if path.is_empty() && k.name.starts_with("x-") {
                    continue;
                }
                path.push(k.name.clone());
                interpolate_tree(v, env, path, unset, problems);
                path.pop();
            }
        }
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        [("A", "a"), ("EMPTY", ""), ("PORT", "8080")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn i(s: &str) -> Result<String, String> {
        interpolate(s, &env(), &mut BTreeSet::new())
    }

    #[test]
    fn every_form() {
        assert_eq!(i("$A-${A}").unwrap(), "a-a");
        assert_eq!(i("x${PORT}y").unwrap(), "x8080y");
        assert_eq!(i("${NOPE:-d}|${EMPTY:-d}|${A:-d}").unwrap(), "d|d|a");
        assert_eq!(i("${NOPE-d}|${EMPTY-d}|${A-d}").unwrap(), "d||a");
        assert_eq!(i("${NOPE:+r}|${EMPTY:+r}|${A:+r}").unwrap(), "||r");
        assert_eq!(i("${NOPE+r}|${EMPTY+r}|${A+r}").unwrap(), "|r|r");
        assert_eq!(i("${EMPTY?e}|${A:?e}").unwrap(), "|a");
        assert_eq!(i("$$A $${A} $$").unwrap(), "$A ${A} $");
        assert_eq!(i("${NOPE:-${A}-x}").unwrap(), "a-x");
        assert_eq!(i("${NOPE:-${ALSO:-deep}}").unwrap(), "deep");
        assert_eq!(i("${NOPE:-a:b/c}").unwrap(), "a:b/c");
        assert_eq!(i("no dollars").unwrap(), "no dollars");
        assert_eq!(i("${A}${A}").unwrap(), "aa");
    }

    #[test]
    fn unset_variables_become_empty_and_are_named() {
        let mut unset = BTreeSet::new();
        assert_eq!(
            interpolate("[$NOPE][${ALSO}]", &env(), &mut unset).unwrap(),
            "[][]"
        );
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["ALSO", "NOPE"]);
        let mut unset = BTreeSet::new();
        interpolate("${NOPE:-x}", &env(), &mut unset).unwrap();
        assert!(unset.is_empty(), "a default is no warning");
    }

    #[test]
    fn errors() {
        assert_eq!(
            i("${NOPE:?set it in .env}").unwrap_err(),
            "required variable NOPE is missing a value: set it in .env"
        );
        assert_eq!(
            i("${EMPTY:?}").unwrap_err(),
            "required variable EMPTY is missing a value"
        );
        assert_eq!(
            i("${NOPE?no $A}").unwrap_err(),
            "required variable NOPE is missing a value: no a"
        );
        assert_eq!(
            i("cost $5").unwrap_err(),
            "invalid interpolation format: the '$' at character 6 is not followed by a name, {NAME} or '$' (write $$ for a literal $)"
        );
        assert_eq!(
            i("end$").unwrap_err(),
            "invalid interpolation format: the '$' at character 4 is not followed by a name, {NAME} or '$' (write $$ for a literal $)"
        );
        assert_eq!(
            i("x ${A").unwrap_err(),
            "invalid interpolation format: the '${' at character 3 is never closed with '}'"
        );
        for bad in ["${}", "${1A}", "${A:x}", "${A x}", "${A:}"] {
            assert!(
                i(bad)
                    .unwrap_err()
                    .starts_with("invalid interpolation format"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_tree_is_interpolated_in_its_values_with_every_error_at_its_place() {
        let mut n = super::super::yaml::parse(
            "services:\n  app:\n    image: \"img:${TAG:-1}\"\n    environment:\n      $A: ${A}\n      B: ${NOPE:?needed}\n      C: x$UNSET_X\n    command: echo $$HOME $1\nx-skip: $1\n",
            0,
        )
        .unwrap();
        let mut problems = Vec::new();
        let mut unset = BTreeMap::new();
        interpolate_tree(&mut n, &env(), &mut Vec::new(), &mut unset, &mut problems);
        assert_eq!(unset.keys().collect::<Vec<_>>(), ["UNSET_X"]);
        assert_eq!(unset["UNSET_X"].key, "services.app.environment.C");
        assert_eq!(unset["UNSET_X"].at.line, 7);
        let app = n.get("services").unwrap().get("app").unwrap();
        assert_eq!(app.get("image").unwrap().text(), Some("img:1"));
        // Keys are not interpolated.
        assert_eq!(
            app.get("environment").unwrap().get("$A").unwrap().text(),
            Some("a")
        );
        let got: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{}: {}: {}", p.at.line, p.at.col, p.key, p.reason))
            .collect();
        assert_eq!(
            got,
            [
                "6:10: services.app.environment.B: required variable NOPE is missing a value: needed",
                "8:14: services.app.command: invalid interpolation format: the '$' at character 13 is not followed by a name, {NAME} or '$' (write $$ for a literal $)",
            ]
        );
    }
}
