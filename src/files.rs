//! A component's configuration from files of the host (issue 13 §3): its `env_file`s,
//! parsed as compose and systemd read them, and its `secrets`, bind-mounted read-only.
//! Their contents are part of the spec hash, so they are read at every pass: each one a
//! regular file through the bounded reader (1 MiB, never more than that + 1 byte read).
//! Nothing here ever puts a value into an error: errors name the file, and for an env
//! file the line, never what is on it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::Settings;
pub use crate::spec::input::check_secret_mode;
use crate::spec::input::{read_limited, InputError};

/// Largest env file or secret read.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// What a component's files hold, as far as the container is concerned.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The env files' variables, later files winning (the component's `env` wins over all).
    pub env: BTreeMap<String, String>,
    /// A digest of each secret's contents, in the order of `secrets`.
    pub secrets: Vec<String>,
}

// Never the values.
impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// A component's files read, or why one could not be (`config-missing`).
pub type FileRead = Result<Loaded, String>;

/// Reads the files `settings` names.
pub fn load(settings: &Settings) -> FileRead {
    let mut out = Loaded::default();
    for path in &settings.env_file {
        let bytes = read(Path::new(path)).map_err(|e| format!("env_file {path}: {e}"))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| format!("env_file {path}: not UTF-8 (at byte {})", e.valid_up_to()))?;
        for (k, v) in parse_env_file(text).map_err(|e| format!("env_file {path}: {e}"))? {
            out.env.insert(k, v);
        }
    }
    for s in &settings.secrets {
        let path = Path::new(&s.source);
        let why = |e: String| format!("secret {}: {e}", s.source);
        let meta = std::fs::metadata(path).map_err(|e| why(e.to_string()))?;
        check_secret_mode(meta.mode()).map_err(why)?;
        let bytes = read(path).map_err(why)?;
        let digest = Sha256::digest(&bytes);
        out.secrets
            .push(digest[..16].iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_limited(path, MAX_FILE_BYTES).map_err(|e| match e {
        InputError::Io(e) => e.to_string(),
        e => e.to_string(),
    })
}

/// The variables of an env file, in order: `KEY=VALUE` lines, as compose and systemd's
/// `EnvironmentFile=` read them — blank lines and `#` comments skipped, an optional
/// `export ` prefix, whitespace around the key and an unquoted value trimmed, a ` #`
/// comment after an unquoted value cut, `'single'` quotes literal, `"double"` quotes
/// with `\n`, `\t`, `\\`, `\"`, `\$` escapes (and spanning lines). Errors name the line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let n = i + 1;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let t = t.strip_prefix("export ").map_or(t, str::trim_start);
        let Some((key, rest)) = t.split_once('=') else {
            return Err(format!("line {n}: expected KEY=VALUE"));
        };
        let key = key.trim_end();
        if !is_env_key(key) {
            return Err(format!(
                "line {n}: the key must be letters, digits and '_', not starting with a digit"
            ));
        }
        let rest = rest.trim_start();
        let value = if let Some(q) = rest.strip_prefix('\'') {
            match q.find('\'') {
                Some(end) => {
                    trailing(&q[end + 1..], n)?;
                    q[..end].to_string()
                }
                None => return Err(format!("line {n}: unterminated single quote")),
            }
        } else if let Some(q) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut cur = q.to_string();
            let start = n;
            loop {
                match double_quoted(&cur, &mut value) {
                    Some(after) => {
                        trailing(&cur[after..], start)?;
                        break;
                    }
                    None => match lines.next() {
                        Some((_, next)) => {
                            value.push('\n');
                            cur = next.to_string();
                        }
                        None => return Err(format!("line {start}: unterminated double quote")),
                    },
                }
            }
            value
        } else {
            let cut = rest.find(" #").or_else(|| rest.find("\t#"));
            rest[..cut.unwrap_or(rest.len())].trim_end().to_string()
        };
        if value.contains('\0') {
            return Err(format!("line {n}: the value contains NUL"));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Appends the double-quoted text of `s` (after its opening quote) to `value`; returns
/// the byte offset just past the closing quote, or `None` when the line ends first (an
/// escaped line end continues the value without a newline, as systemd reads it).
fn double_quoted(s: &str, value: &mut String) -> Option<usize> {
    let mut chars = s.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Some(i + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, c @ ('\\' | '"' | '$' | '`'))) => value.push(c),
                Some((_, c)) => {
                    value.push('\\');
                    value.push(c);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

fn trailing(rest: &str, n: usize) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("line {n}: text after the closing quote"))
    }
}

fn is_env_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;
    use std::os::unix::fs::PermissionsExt;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse_env_file(text).unwrap()
    }

    #[test]
    fn env_files_read_as_compose_and_systemd_read_them() {
        let text = "# a comment\n\n  ; another\nA=1\nexport B = two words  # cut\n\
                    C='lit $X \\n'\nD=\"a\\tb\\n\\\"q\\\" \\$HOME\"\nE=\nF=\"multi\nline\"\n\
                    G=x#not-a-comment\nH = ' spaced '  # after\n";
        assert_eq!(
            kv(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $X \\n"),
                ("D", "a\tb\n\"q\" $HOME"),
                ("E", ""),
                ("F", "multi\nline"),
                ("G", "x#not-a-comment"),
                ("H", " spaced "),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn env_file_errors_name_the_line_never_the_value() {
        for (text, want) in [
            (
                "A=1\nsecret-value-without-equals\n",
                "line 2: expected KEY=VALUE",
            ),
            ("1A=x\n", "line 1: the key"),
            ("A='hunter2\n", "line 1: unterminated single quote"),
            ("A=\"hunter2\n", "line 1: unterminated double quote"),
            ("A='hunter2' x\n", "line 1: text after the closing quote"),
        ] {
            let e = parse_env_file(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("secret-value"), "{e}");
        }
    }

    #[test]
    fn files_are_read_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("app.env");
        let secret = dir.path().join("pw");
        std::fs::write(&env, "A=1\nB=2\n").unwrap();
        std::fs::write(&secret, "hunter2").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Settings {
            env_file: vec![env.to_str().unwrap().into()],
            secrets: vec![Secret {
                source: secret.to_str().unwrap().into(),
                target: "/run/secrets/pw".into(),
            }],
            ..Settings::default()
        };
        let a = load(&s).unwrap();
        assert_eq!(a.env["B"], "2");
        assert!(!format!("{a:?}").contains('2'), "{a:?}");
        std::fs::write(&secret, "rotated").unwrap();
        let b = load(&s).unwrap();
        assert_ne!(a.secrets, b.secrets);
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&s).unwrap_err();
        assert!(e.contains("readable by its group (mode 0640)"), "{e}");
        std::fs::remove_file(&env).unwrap();
        let e = load(&s).unwrap_err();
        assert!(
            e.starts_with(&format!("env_file {}: ", env.display())),
            "{e}"
        );
        std::fs::write(&env, vec![b'x'; MAX_FILE_BYTES + 1]).unwrap();
        assert!(load(&s).unwrap_err().contains("larger than"));
    }

    #[test]
    fn secret_modes() {
        assert!(check_secret_mode(0o100600).is_ok());
        assert!(check_secret_mode(0o400).is_ok());
        assert!(check_secret_mode(0o604).unwrap_err().contains("by others"));
        assert!(check_secret_mode(0o644)
            .unwrap_err()
            .contains("its group and others"));
    }
}
