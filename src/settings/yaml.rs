//! A YAML tree that remembers where every node came from.
//!
//! The parser is `yaml-rust2`'s event parser; we build our own small tree so
//! that every scalar, sequence and mapping carries its file, line and column.
//! Environment substitution (`${env:NAME}`, `${NAME}`, `${env:NAME:-default}`,
//! `$$` for a literal `$`) happens on plain and quoted scalars while the tree
//! is built, and several files are merged key by key (later files win), as the
//! OpenTelemetry Collector does.

use std::fmt;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node was written: file, 1-based line and 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The file the node came from.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A scalar as written, with whether its type should be inferred.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Any other (or quoted) text.
    Str(String),
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence of nodes.
    Seq(Vec<Node>),
    /// A mapping; keys keep their own marks and their order.
    Map(Vec<(Node, Node)>),
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Its position.
    pub mark: Mark,
}

impl Node {
    /// The node as a string if it is a scalar string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The entries if the node is a mapping (a null counts as an empty map).
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            Value::Scalar(Scalar::Null) => Some(&[]),
            _ => None,
        }
    }

    /// The items if the node is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(v) => Some(v),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.key_text() == key)
            .map(|(_, v)| v)
    }

    /// The text of a node used as a mapping key.
    pub fn key_text(&self) -> String {
        match &self.value {
            Value::Scalar(Scalar::Str(s)) => s.clone(),
            Value::Scalar(Scalar::Int(i)) => i.to_string(),
            Value::Scalar(Scalar::Float(f)) => f.to_string(),
            Value::Scalar(Scalar::Bool(b)) => b.to_string(),
            Value::Scalar(Scalar::Null) => "null".to_string(),
            Value::Seq(_) => "<sequence>".to_string(),
            Value::Map(_) => "<mapping>".to_string(),
        }
    }

    /// A short name of the node's kind for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(Scalar::Null) => "null",
            Value::Scalar(Scalar::Bool(_)) => "boolean",
            Value::Scalar(Scalar::Int(_)) => "integer",
            Value::Scalar(Scalar::Float(_)) => "float",
            Value::Scalar(Scalar::Str(_)) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }

    /// Merges `other` into `self`: mappings key by key, anything else replaced.
    pub fn merge(&mut self, other: Node) {
        match (&mut self.value, other.value) {
            (Value::Map(mine), Value::Map(theirs)) => {
                for (k, v) in theirs {
                    let key = k.key_text();
                    if let Some((_, existing)) =
                        mine.iter_mut().find(|(mk, _)| mk.key_text() == key)
                    {
                        existing.merge(v);
                    } else {
                        mine.push((k, v));
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.mark = other.mark;
            }
        }
    }
}

/// Why a YAML text could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{mark}: {message}")]
pub struct YamlError {
    /// Where.
    pub mark: Mark,
    /// What.
    pub message: String,
}

/// Looks up environment variables; a function so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses one YAML document into a marked tree, substituting environment
/// variables. Returns the tree and warnings (e.g. unset variables).
pub fn parse(file: &str, text: &str, env: EnvLookup<'_>) -> Result<(Node, Vec<String>), YamlError> {
    let file: Arc<str> = Arc::from(file);
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        env,
        warnings: Vec::new(),
        error: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| YamlError {
        mark: Mark {
            file: file.clone(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    let root = builder.root.unwrap_or(Node {
        value: Value::Scalar(Scalar::Null),
        mark: Mark {
            file,
            line: 1,
            col: 1,
        },
    });
    Ok((root, builder.warnings))
}

enum Frame {
    Seq(Node, usize),
    Map(Node, Option<Node>, usize),
}

struct Builder<'a> {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    env: EnvLookup<'a>,
    warnings: Vec<String>,
    error: Option<YamlError>,
    documents: usize,
}

impl Builder<'_> {
    fn mark(&self, m: Marker) -> Mark {
        Mark {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, pending, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        let text = key.key_text();
                        if entries.iter().any(|(k, _)| k.key_text() == text) && self.error.is_none()
                        {
                            self.error = Some(YamlError {
                                mark: key.mark.clone(),
                                message: format!("duplicate key `{text}`"),
                            });
                        }
                        entries.push((key, node));
                    }
                }
            },
            None => self.root = Some(node),
        }
    }

    fn finish(&mut self) {
        if let Some(frame) = self.stack.pop() {
            let (node, anchor) = match frame {
                Frame::Seq(n, a) => (n, a),
                Frame::Map(n, _, a) => (n, a),
            };
            if anchor > 0 {
                self.anchors.push((anchor, node.clone()));
            }
            self.push_node(node);
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        let mark = self.mark(marker);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 && self.error.is_none() {
                    self.error = Some(YamlError {
                        mark,
                        message: "a config file holds one YAML document; found a second `---`"
                            .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let (value, warnings) = scalar(
                    &text,
                    style,
                    tag.as_ref().map(|t| t.suffix.as_str()),
                    self.env,
                );
                for w in warnings {
                    self.warnings.push(format!("{mark}: {w}"));
                }
                let node = Node {
                    value: Value::Scalar(value),
                    mark,
                };
                if anchor > 0 {
                    self.anchors.push((anchor, node.clone()));
                }
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(
                Node {
                    value: Value::Seq(Vec::new()),
                    mark,
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(
                Node {
                    value: Value::Map(Vec::new()),
                    mark,
                },
                None,
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => self.finish(),
            Event::Alias(id) => {
                let found = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone());
                match found {
                    Some(node) => self.push_node(node),
                    None => {
                        if self.error.is_none() {
                            self.error = Some(YamlError {
                                mark,
                                message: "alias to an unknown anchor".into(),
                            });
                        }
                    }
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Types a scalar by the YAML 1.2 core schema after substituting variables.
fn scalar(
    text: &str,
    style: TScalarStyle,
    tag: Option<&str>,
    env: EnvLookup<'_>,
) -> (Scalar, Vec<String>) {
    let (text, warnings) = substitute(text, env);
    if style != TScalarStyle::Plain || tag == Some("str") {
        return (Scalar::Str(text), warnings);
    }
    (infer(&text), warnings)
}

/// Core-schema typing of a plain scalar.
fn infer(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | "+.inf" | ".Inf" | "+.Inf" | ".INF" | "+.INF" => {
            return Scalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Scalar::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Scalar::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Scalar::Int(i);
        }
    }
    let looks_float = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    Scalar::Str(text.to_string())
}

/// Expands `${env:NAME}`, `${NAME}`, `${env:NAME:-default}` and `$$`.
pub fn substitute(text: &str, env: EnvLookup<'_>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut warnings = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        if let Some(body_start) = after.strip_prefix('{') {
            if let Some(end) = body_start.find('}') {
                let body = &body_start[..end];
                let body = body.strip_prefix("env:").unwrap_or(body);
                let (name, default) = match body.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (body, None),
                };
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if valid {
                    match (env(name), default) {
                        (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                        (_, Some(d)) => out.push_str(d),
                        (None, None) => warnings.push(format!(
                            "environment variable `{name}` is not set; using an empty value"
                        )),
                        (Some(v), None) => out.push_str(&v),
                    }
                    rest = &body_start[end + 1..];
                    continue;
                }
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("4317".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_all_forms() {
        let (s, w) = substitute(
            "${env:HOST}:${PORT}/${env:NOPE:-dflt}/$${HOST}/${EMPTY:-e}",
            &env,
        );
        assert_eq!(s, "example:4317/dflt/${HOST}/e");
        assert!(w.is_empty());
        let (s, w) = substitute("a${MISSING}b", &env);
        assert_eq!(s, "ab");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn marks_lines_and_types_after_substitution() {
        let text = "a:\n  b: ${PORT}\n  c: \"${PORT}\"\n  d: [x, 2.5, true, ~]\n";
        let (root, _) = parse("f.yaml", text, &env).unwrap();
        let b = root.get("a").unwrap().get("b").unwrap();
        assert_eq!(b.value, Value::Scalar(Scalar::Int(4317)));
        assert_eq!((b.mark.line, b.mark.col), (2, 6));
        let c = root.get("a").unwrap().get("c").unwrap();
        assert_eq!(c.value, Value::Scalar(Scalar::Str("4317".into())));
    }

    #[test]
    fn merges_later_over_earlier() {
        let (mut a, _) = parse("a", "x: {y: 1, z: 2}\nw: [1]", &env).unwrap();
        let (b, _) = parse("b", "x: {y: 3}\nw: [2, 3]", &env).unwrap();
        a.merge(b);
        let x = a.get("x").unwrap();
        assert_eq!(x.get("y").unwrap().value, Value::Scalar(Scalar::Int(3)));
        assert_eq!(&*x.get("y").unwrap().mark.file, "b");
        assert_eq!(x.get("z").unwrap().value, Value::Scalar(Scalar::Int(2)));
        match &a.get("w").unwrap().value {
            Value::Seq(items) => assert_eq!(items.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let err = parse("f", "a: 1\na: 2\n", &env).unwrap_err();
        assert_eq!(err.mark.line, 2);
        let err = parse("f", "a: [1, 2\nb: 3\n", &env).unwrap_err();
        assert!(err.mark.line >= 1, "{err}");
    }
}
