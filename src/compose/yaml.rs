//! A compose file's YAML as a tree of nodes, each with the line and column it came from:
//! saphyr-parser's events, with anchors and aliases resolved and merge keys (`<<: *x`)
//! applied, duplicate keys refused as compose refuses them.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Where a node is: the compose file (an index into the project's files) and its
/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: usize,
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn location(self) -> crate::error::Location {
        crate::error::Location {
            line: self.line,
            col: self.col,
        }
    }
}

/// A YAML node: its value, where it is, and its tag if it has one (`!reset`, `!override`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub at: Pos,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A scalar's text; `plain` when it was written without quotes (so `true` and `8080`
    /// are a boolean and a number, `"true"` a string).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub at: Pos,
}

/// The most nodes a file may expand to through its aliases (a "billion laughs" file is
/// refused, not expanded).
pub const MAX_NODES: usize = 1_000_000;

impl Node {
    pub fn new(value: Value, at: Pos) -> Node {
        Node {
            value,
            at,
            tag: None,
        }
    }

    pub fn scalar(text: impl Into<String>, at: Pos) -> Node {
        Node::new(
            Value::Scalar {
                text: text.into(),
                plain: false,
            },
            at,
        )
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The entries of a mapping.
    pub fn map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar's text (a number or boolean too, as written).
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A boolean: `true`/`false` in any case, as YAML 1.2 and compose read them.
    pub fn bool(&self) -> Option<bool> {
        match self.text()?.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// An integer (decimal, or 0x / 0o).
    pub fn int(&self) -> Option<i64> {
        let t = self.text()?.trim();
        let (neg, t) = match t.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let n = if let Some(h) = t.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()?
        } else if let Some(o) = t.strip_prefix("0o") {
            i64::from_str_radix(o, 8).ok()?
        } else {
            t.parse::<i64>().ok()?
        };
        Some(if neg { -n } else { n })
    }

    /// A number (integer or float).
    pub fn float(&self) -> Option<f64> {
        self.int()
            .map(|n| n as f64)
            .or_else(|| self.text()?.trim().parse::<f64>().ok())
    }

    /// What kind of node this is, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Seq(s) => s.iter().map(Node::count).sum(),
            Value::Map(m) => m.iter().map(|(_, v)| 1 + v.count()).sum(),
            _ => 0,
        }
    }
}

/// A YAML syntax problem, at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub at: Pos,
    pub reason: String,
}

enum Frame {
    Seq(Vec<Node>, Pos, Option<String>, usize),
    Map(Vec<(Node, Node)>, Pos, Option<String>, usize, Option<Node>),
}

struct Builder {
    file: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    nodes: usize,
}

fn pos(file: usize, span: &Span) -> Pos {
    Pos {
        file,
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn tag_text(tag: Option<std::borrow::Cow<'_, saphyr_parser::Tag>>) -> Option<String> {
    tag.map(|t| format!("{}{}", t.handle, t.suffix))
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                at: node.at,
                reason: format!(
                    "the file expands to more than {MAX_NODES} nodes through its aliases"
                ),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(entries, _, _, _, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn on(&mut self, ev: Event<'_>, span: Span) -> Result<(), YamlError> {
        let at = pos(self.file, &span);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == ScalarStyle::Plain;
                let tag = tag_text(tag);
                let value = if plain && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    }
                };
                self.push(Node { value, at, tag }, anchor)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(YamlError {
                        at,
                        reason: "alias of an unknown anchor".into(),
                    });
                };
                self.nodes += node.count();
                if self.nodes > MAX_NODES {
                    return Err(YamlError {
                        at,
                        reason: format!(
                            "the file expands to more than {MAX_NODES} nodes through its aliases"
                        ),
                    });
                }
                let node = node.clone();
                self.push(node, 0)
            }
            Event::SequenceStart(anchor, tag) => {
                self.stack
                    .push(Frame::Seq(Vec::new(), at, tag_text(tag), anchor));
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.stack
                    .push(Frame::Map(Vec::new(), at, tag_text(tag), anchor, None));
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(items, at, tag, anchor)) => self.push(
                    Node {
                        value: Value::Seq(items),
                        at,
                        tag,
                    },
                    anchor,
                ),
                _ => unreachable!("the parser pairs its events"),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(entries, at, tag, anchor, _)) => {
                    let map = mapping(entries)?;
                    self.push(
                        Node {
                            value: Value::Map(map),
                            at,
                            tag,
                        },
                        anchor,
                    )
                }
                _ => unreachable!("the parser pairs its events"),
            },
            _ => Ok(()),
        }
    }
}

/// A mapping's entries with its keys checked and its merge keys (`<<`) applied: the
/// explicit keys win, then the merged mappings' in their order.
fn mapping(entries: Vec<(Node, Node)>) -> Result<Vec<(Key, Node)>, YamlError> {
    let mut out: Vec<(Key, Node)> = Vec::new();
    let mut merged: Vec<Node> = Vec::new();
    for (k, v) in entries {
        let name = match &k.value {
            Value::Scalar { text, .. } => text.clone(),
            Value::Null => "null".into(),
            _ => {
                return Err(YamlError {
                    at: k.at,
                    reason: format!("a mapping key must be a scalar, not {}", k.kind()),
                })
            }
        };
        if name == "<<" && matches!(k.value, Value::Scalar { plain: true, .. }) {
            match &v.value {
                Value::Map(_) => merged.push(v),
                Value::Seq(items) if items.iter().all(|i| i.map().is_some()) => {
                    merged.extend(items.iter().cloned())
                }
                _ => {
                    return Err(YamlError {
                        at: v.at,
                        reason: "a merge key (<<) takes a mapping or a list of mappings".into(),
                    })
                }
            }
            continue;
        }
        if let Some((first, _)) = out.iter().find(|(f, _)| f.name == name) {
            return Err(YamlError {
                at: k.at,
                reason: format!(
                    "mapping key {name:?} already defined at line {}",
                    first.at.line
                ),
            });
        }
        out.push((Key { name, at: k.at }, v));
    }
    for m in merged {
        if let Value::Map(entries) = m.value {
            for (k, v) in entries {
                if !out.iter().any(|(f, _)| f.name == k.name) {
                    out.push((k, v));
                }
            }
        }
    }
    Ok(out)
}

/// The one document of a compose file; `file` is its index for the positions.
///
/// A flow collection's closing bracket on a line of its own, indented no deeper than its
/// key (`test: [` … `]` under `healthcheck:`), is refused by YAML 1.2 and by
/// saphyr-parser, and accepted by the parsers compose uses (go-yaml, PyYAML), so real
/// compose files have it: such a line, where the parser stops at it, is indented one
/// more and the text parsed again.
pub fn parse(text: &str, file: usize) -> Result<Node, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..1000 {
        match parse_once(&text, file) {
            Err(e) if e.reason == "invalid indentation" => {
                let Some(line) = text.lines().nth(e.at.line.saturating_sub(1)) else {
                    return Err(e);
                };
                if !line.trim_start().starts_with([']', '}']) {
                    return Err(e);
                }
                let start: usize = text.lines().take(e.at.line - 1).map(|l| l.len() + 1).sum();
                let mut t = text.into_owned();
                t.insert(start, ' ');
                text = std::borrow::Cow::Owned(t);
            }
            other => return other,
        }
    }
    parse_once(&text, file)
}

fn parse_once(text: &str, file: usize) -> Result<Node, YamlError> {
    let mut b = Builder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        nodes: 0,
    };
    for ev in Parser::new_from_str(text) {
        match ev {
            Ok((ev, span)) => b.on(ev, span)?,
            Err(e) => {
                let m = e.marker();
                return Err(YamlError {
                    at: Pos {
                        file,
                        line: m.line(),
                        col: m.col() + 1,
                    },
                    reason: e.info().to_string(),
                });
            }
        }
    }
    let start = Pos {
        file,
        line: 1,
        col: 1,
    };
    match b.docs.len() {
        0 => Err(YamlError {
            at: start,
            reason: "the file is empty".into(),
        }),
        1 => Ok(b.docs.pop().expect("one document")),
        _ => Err(YamlError {
            at: b.docs[1].at,
            reason: "a compose file holds one YAML document, this one has several".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: &Node) -> &str {
        n.text().unwrap()
    }

    #[test]
    fn positions_are_lines_and_columns_from_one() {
        let n = parse("services:\n  web:\n    image: nginx\n", 0).unwrap();
        let web = n.get("services").unwrap().get("web").unwrap();
        let image = web.get("image").unwrap();
        assert_eq!(text(image), "nginx");
        assert_eq!((image.at.line, image.at.col), (3, 12));
        let (k, _) = &web.map().unwrap()[0];
        assert_eq!((k.at.line, k.at.col), (3, 5));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let y = "x-common: &common\n  restart: always\n  environment:\n    A: '1'\n\
                 services:\n  a:\n    <<: *common\n    image: a\n  b:\n    <<: [*common, {user: x}]\n    restart: 'no'\n  c:\n    environment: *common\n";
        let n = parse(y, 0).unwrap();
        let s = n.get("services").unwrap();
        let a = s.get("a").unwrap();
        assert_eq!(text(a.get("restart").unwrap()), "always");
        assert_eq!(text(a.get("environment").unwrap().get("A").unwrap()), "1");
        // The merged key keeps its position in the anchor.
        assert_eq!(a.get("restart").unwrap().at.line, 2);
        let b = s.get("b").unwrap();
        assert_eq!(text(b.get("restart").unwrap()), "no");
        assert_eq!(text(b.get("user").unwrap()), "x");
        let keys: Vec<&str> = a
            .map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(keys, ["image", "restart", "environment"]);
        assert!(s
            .get("c")
            .unwrap()
            .get("environment")
            .unwrap()
            .get("restart")
            .is_some());
    }

    #[test]
    fn scalars_nulls_and_quotes() {
        let n = parse("a: ~\nb:\nc: 'null'\nd: true\ne: \"8080\"\nf: 0x10\n", 0).unwrap();
        assert!(n.get("a").unwrap().is_null());
        assert!(n.get("b").unwrap().is_null());
        assert_eq!(text(n.get("c").unwrap()), "null");
        assert_eq!(n.get("d").unwrap().bool(), Some(true));
        assert_eq!(n.get("e").unwrap().int(), Some(8080));
        assert_eq!(n.get("f").unwrap().int(), Some(16));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("a: 1\na: 2\n", 0).unwrap_err();
        assert_eq!((e.at.line, e.at.col), (2, 1));
        assert_eq!(e.reason, "mapping key \"a\" already defined at line 1");
        let e = parse("a: [1, 2\n", 0).unwrap_err();
        assert_eq!(e.at.line, 2, "{e:?}");
        let e = parse("a: *nope\n", 0).unwrap_err();
        assert_eq!(e.at.line, 1, "{e:?}");
        let e = parse("", 0).unwrap_err();
        assert_eq!(e.reason, "the file is empty");
        let e = parse("a: 1\n---\nb: 2\n", 0).unwrap_err();
        assert!(e.reason.contains("one YAML document"), "{e:?}");
        let e = parse("<<: 1\n", 0).unwrap_err();
        assert!(e.reason.contains("merge key"), "{e:?}");
    }

    #[test]
    fn a_closing_bracket_as_deep_as_its_key_is_read_as_compose_reads_it() {
        let n = parse(
            "hc:\n  test: [\n      \"CMD\",\n      \"x\"\n  ]\n  m: {\n    a: 1\n  }\n  b: 1\n",
            0,
        )
        .unwrap();
        let hc = n.get("hc").unwrap();
        assert_eq!(hc.get("test").unwrap().seq().unwrap().len(), 2);
        assert_eq!(hc.get("m").unwrap().get("a").unwrap().int(), Some(1));
        assert_eq!(hc.get("b").unwrap().int(), Some(1));
        // Other indentation errors stay errors.
        assert!(parse("a:\n  b: 1\n c: 2\n", 0).is_err());
    }

    #[test]
    fn a_billion_laughs_is_refused() {
        let mut y = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='h' {
            y.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let e = parse(&y, 0).unwrap_err();
        assert!(e.reason.contains("more than"), "{e:?}");
    }
}
