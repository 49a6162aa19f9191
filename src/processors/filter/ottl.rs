//! The subset of OTTL conditions the `filter` processor takes.
//!
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | "(" condition ")" | "IsMatch(" value "," string ")"
//!             | value (op value)?          op: == != < <= > >=
//! value      := path | "string" | int | float | true | false | nil | ENUM
//! path       := name | kind | status.code | attributes["k"]
//!             | resource.attributes["k"] | instrumentation_scope.name … (per context)
//! ```
//!
//! Anything else (other functions, converters, math, paths a context does
//! not have) is refused when the config is read, with the character it
//! stopped at: a condition is never ignored. Comparing values of different
//! types is false (and `!=` true), as in OTTL; a missing attribute is `nil`.

use std::cmp::Ordering;

/// Where a condition is evaluated: which item it looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// `traces.span`.
    Span,
    /// `traces.spanevent`.
    SpanEvent,
    /// `metrics.metric`.
    Metric,
    /// `metrics.datapoint`.
    DataPoint,
    /// `logs.log_record`.
    LogRecord,
}

/// A value a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The item's name (span, span event, metric).
    Name,
    /// Span kind.
    Kind,
    /// `status.code`.
    StatusCode,
    /// `status.message`.
    StatusMessage,
    /// `attributes["k"]` (its index in the condition's key table).
    Attribute(usize),
    /// `resource.attributes["k"]`.
    ResourceAttribute(usize),
    /// `instrumentation_scope.name`.
    ScopeName,
    /// `instrumentation_scope.version`.
    ScopeVersion,
    /// A log record's body.
    Body,
    /// `severity_number`.
    SeverityNumber,
    /// `severity_text`.
    SeverityText,
    /// `event_name` of a log record.
    EventName,
    /// The metric's type (`METRIC_DATA_TYPE_*`).
    MetricType,
    /// The metric's unit.
    Unit,
    /// The metric's description.
    Description,
    /// A data point's double value.
    ValueDouble,
    /// A data point's int value.
    ValueInt,
    /// `span.name`, from a span event.
    SpanName,
}

/// A value, as compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// Text.
    Str(std::borrow::Cow<'a, str>),
    /// A whole number (also enums).
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// Absent.
    Nil,
    /// Something else (a list, a map, bytes): equal to nothing.
    Other,
}

/// What a condition reads from the item it is evaluated on.
pub trait Item {
    /// The value at `path`; `key` is the attribute key for attribute paths.
    fn get(&self, path: Path, key: &str) -> Val<'_>;
}

#[derive(Debug, Clone)]
enum Operand {
    Path(Path),
    Lit(Lit),
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, Op, Operand),
    IsMatch(Operand, regex::Regex),
    Truth(Operand),
}

/// A parsed condition.
#[derive(Debug, Clone)]
pub struct Condition {
    text: String,
    expr: Expr,
    keys: Vec<String>,
}

impl Condition {
    /// Parses `text` for `context`.
    pub fn parse(text: &str, context: Context) -> Result<Condition, String> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            context,
            keys: Vec::new(),
            text,
        };
        let expr = p.or()?;
        if let Some((at, t)) = p.tokens.get(p.pos) {
            return Err(format!(
                "at character {}: unexpected `{}` after a complete condition",
                at + 1,
                t.show()
            ));
        }
        Ok(Condition {
            text: text.to_string(),
            expr,
            keys: p.keys,
        })
    }

    /// The condition as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it holds for `item`.
    pub fn matches(&self, item: &dyn Item) -> bool {
        self.eval(&self.expr, item)
    }

    fn eval(&self, e: &Expr, item: &dyn Item) -> bool {
        match e {
            Expr::Or(v) => v.iter().any(|e| self.eval(e, item)),
            Expr::And(v) => v.iter().all(|e| self.eval(e, item)),
            Expr::Not(e) => !self.eval(e, item),
            Expr::Cmp(a, op, b) => compare(&self.value(a, item), *op, &self.value(b, item)),
            Expr::IsMatch(a, re) => match self.value(a, item) {
                Val::Str(s) => re.is_match(&s),
                Val::Int(i) => re.is_match(&i.to_string()),
                Val::Float(f) => re.is_match(&f.to_string()),
                Val::Bool(b) => re.is_match(&b.to_string()),
                Val::Nil | Val::Other => false,
            },
            Expr::Truth(a) => self.value(a, item) == Val::Bool(true),
        }
    }

    fn value<'a>(&'a self, o: &'a Operand, item: &'a dyn Item) -> Val<'a> {
        match o {
            Operand::Path(p) => {
                let key = match p {
                    Path::Attribute(i) | Path::ResourceAttribute(i) => {
                        self.keys.get(*i).map_or("", String::as_str)
                    }
                    _ => "",
                };
                item.get(*p, key)
            }
            Operand::Lit(Lit::Str(s)) => Val::Str(std::borrow::Cow::Borrowed(s)),
            Operand::Lit(Lit::Int(i)) => Val::Int(*i),
            Operand::Lit(Lit::Float(f)) => Val::Float(*f),
            Operand::Lit(Lit::Bool(b)) => Val::Bool(*b),
            Operand::Lit(Lit::Nil) => Val::Nil,
        }
    }
}

fn compare(a: &Val<'_>, op: Op, b: &Val<'_>) -> bool {
    let ord: Option<Ordering> = match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y),
        (Val::Int(x), Val::Float(y)) => (*x as f64).partial_cmp(y),
        (Val::Float(x), Val::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Val::Bool(x), Val::Bool(y)) if matches!(op, Op::Eq | Op::Ne) => Some(x.cmp(y)),
        (Val::Nil, Val::Nil) if matches!(op, Op::Eq | Op::Ne) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (_, None) => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(Op),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Int(i) => i.to_string(),
            Tok::Float(f) => f.to_string(),
            Tok::Op(o) => match o {
                Op::Eq => "==",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            }
            .into(),
            Tok::Dot => ".".into(),
            Tok::LBracket => "[".into(),
            Tok::RBracket => "]".into(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::Comma => ",".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let tok = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '.' => Tok::Dot,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                Tok::Op(Op::Eq)
            }
            '!' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                Tok::Op(Op::Ne)
            }
            '<' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                Tok::Op(Op::Le)
            }
            '>' if b.get(i + 1) == Some(&'=') => {
                i += 1;
                Tok::Op(Op::Ge)
            }
            '<' => Tok::Op(Op::Lt),
            '>' => Tok::Op(Op::Gt),
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => {
                            return Err(format!(
                                "at character {}: the string is not closed",
                                start + 1
                            ))
                        }
                        Some('"') => break,
                        Some('\\') => {
                            match b.get(i + 1) {
                                Some('"') => s.push('"'),
                                Some('\\') => s.push('\\'),
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(other) => {
                                    // Regex escapes (`\d`) pass through.
                                    s.push('\\');
                                    s.push(*other);
                                }
                                None => {
                                    return Err(format!(
                                        "at character {}: the string is not closed",
                                        start + 1
                                    ))
                                }
                            }
                            i += 2;
                            continue;
                        }
                        Some(ch) => s.push(*ch),
                    }
                    i += 1;
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit()
                || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == '.') {
                    j += 1;
                }
                let num: String = b[i..j].iter().collect();
                i = j - 1;
                if num.contains('.') {
                    Tok::Float(num.parse().map_err(|_| {
                        format!("at character {}: `{num}` is not a number", start + 1)
                    })?)
                } else {
                    Tok::Int(num.parse().map_err(|_| {
                        format!("at character {}: `{num}` is not a number", start + 1)
                    })?)
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                let word: String = b[i..j].iter().collect();
                i = j - 1;
                Tok::Ident(word)
            }
            other => {
                return Err(format!(
                    "at character {}: `{other}` is not part of the supported OTTL subset",
                    start + 1
                ))
            }
        };
        out.push((start, tok));
        i += 1;
    }
    Ok(out)
}

struct Parser<'t> {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    context: Context,
    keys: Vec<String>,
    text: &'t str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.text.chars().count(), |(a, _)| *a)
            + 1
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("at character {}: {what}", self.at()))
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == k)
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("expected `{}`", t.show()))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut v = vec![self.not()?];
        while self.keyword("and") {
            self.pos += 1;
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::And(v)
        })
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        if let Some(Tok::Ident(w)) = self.peek() {
            let is_call = self.tokens.get(self.pos + 1).map(|(_, t)| t) == Some(&Tok::LParen);
            if is_call {
                if w != "IsMatch" {
                    return self.err(&format!(
                        "function `{w}` is not supported (of OTTL's functions only IsMatch is)"
                    ));
                }
                self.pos += 2;
                let target = self.operand()?;
                self.expect(Tok::Comma)?;
                let Some(Tok::Str(pattern)) = self.peek().cloned() else {
                    return self.err("IsMatch takes a string pattern");
                };
                let re = regex::Regex::new(&pattern).map_err(|e| {
                    format!(
                        "at character {}: `{pattern}` is not a regular expression: {e}",
                        self.at()
                    )
                })?;
                self.pos += 1;
                self.expect(Tok::RParen)?;
                return Ok(Expr::IsMatch(target, re));
            }
        }
        let left = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let right = self.operand()?;
            return Ok(Expr::Cmp(left, op, right));
        }
        match left {
            Operand::Lit(Lit::Bool(_)) | Operand::Path(_) => Ok(Expr::Truth(left)),
            _ => self.err("expected a comparison (==, !=, <, <=, >, >=)"),
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let Some(t) = self.peek().cloned() else {
            return self.err("the condition ends too early");
        };
        match t {
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Operand::Lit(Lit::Str(s)))
            }
            Tok::Int(i) => {
                self.pos += 1;
                Ok(Operand::Lit(Lit::Int(i)))
            }
            Tok::Float(f) => {
                self.pos += 1;
                Ok(Operand::Lit(Lit::Float(f)))
            }
            Tok::Ident(w) => {
                if let Some(lit) = literal(&w) {
                    self.pos += 1;
                    return Ok(Operand::Lit(lit));
                }
                if let Some(v) = enum_value(&w) {
                    self.pos += 1;
                    return Ok(Operand::Lit(Lit::Int(v)));
                }
                self.path()
            }
            other => self.err(&format!("expected a value, not `{}`", other.show())),
        }
    }

    fn path(&mut self) -> Result<Operand, String> {
        let start = self.at();
        let mut parts = Vec::new();
        loop {
            let Some(Tok::Ident(w)) = self.peek().cloned() else {
                return self.err("expected a path");
            };
            parts.push(w);
            self.pos += 1;
            if self.peek() == Some(&Tok::Dot) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let mut key = None;
        if self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            let Some(Tok::Str(k)) = self.peek().cloned() else {
                return self.err("expected a string key, attributes[\"key\"]");
            };
            self.pos += 1;
            self.expect(Tok::RBracket)?;
            key = Some(k);
            if self.peek() == Some(&Tok::LBracket) {
                return self.err("nested keys are not supported");
            }
        }
        let name = parts.join(".");
        let c = self.context;
        use Context::*;
        let path = match (name.as_str(), &key) {
            ("attributes", Some(_)) => Path::Attribute(self.keys.len()),
            ("resource.attributes", Some(_)) => Path::ResourceAttribute(self.keys.len()),
            ("instrumentation_scope.name", None) => Path::ScopeName,
            ("instrumentation_scope.version", None) => Path::ScopeVersion,
            ("name", None) if matches!(c, Span | SpanEvent | Metric) => Path::Name,
            ("kind", None) if c == Span => Path::Kind,
            ("status.code", None) if c == Span => Path::StatusCode,
            ("status.message", None) if c == Span => Path::StatusMessage,
            ("span.name", None) if c == SpanEvent => Path::SpanName,
            ("body", None) if c == LogRecord => Path::Body,
            ("severity_number", None) if c == LogRecord => Path::SeverityNumber,
            ("severity_text", None) if c == LogRecord => Path::SeverityText,
            ("event_name", None) if c == LogRecord => Path::EventName,
            ("type", None) if c == Metric => Path::MetricType,
            ("unit", None) if c == Metric => Path::Unit,
            ("description", None) if c == Metric => Path::Description,
            ("metric.name", None) if c == DataPoint => Path::Name,
            ("metric.type", None) if c == DataPoint => Path::MetricType,
            ("metric.unit", None) if c == DataPoint => Path::Unit,
            ("value_double", None) if c == DataPoint => Path::ValueDouble,
            ("value_int", None) if c == DataPoint => Path::ValueInt,
            _ => {
                let shown = match &key {
                    Some(k) => format!("{name}[\"{k}\"]"),
                    None => name.clone(),
                };
                return Err(format!(
                    "at character {start}: path `{shown}` is not supported in the {} context (supported: {})",
                    context_name(c),
                    supported(c)
                ));
            }
        };
        if let Some(k) = key {
            self.keys.push(k);
        }
        Ok(Operand::Path(path))
    }
}

fn literal(w: &str) -> Option<Lit> {
    match w {
        "true" => Some(Lit::Bool(true)),
        "false" => Some(Lit::Bool(false)),
        "nil" => Some(Lit::Nil),
        _ => None,
    }
}

/// OTTL's enum names for span kind, status code, severity and metric type.
fn enum_value(w: &str) -> Option<i64> {
    const ENUMS: &[(&str, i64)] = &[
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_SERVER", 2),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
        ("STATUS_CODE_UNSET", 0),
        ("STATUS_CODE_OK", 1),
        ("STATUS_CODE_ERROR", 2),
        ("METRIC_DATA_TYPE_NONE", 0),
        ("METRIC_DATA_TYPE_GAUGE", 1),
        ("METRIC_DATA_TYPE_SUM", 2),
        ("METRIC_DATA_TYPE_HISTOGRAM", 3),
        ("METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM", 4),
        ("METRIC_DATA_TYPE_SUMMARY", 5),
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
    ];
    if let Some((_, v)) = ENUMS.iter().find(|(n, _)| *n == w) {
        return Some(*v);
    }
    severity_number(w.strip_prefix("SEVERITY_NUMBER_")?)
}

/// A severity level's number: `TRACE`…`FATAL` with an optional 2-4
/// (`ERROR3` is 19).
pub fn severity_number(level: &str) -> Option<i64> {
    let (name, n) = match level.char_indices().find(|(_, c)| c.is_ascii_digit()) {
        Some((i, _)) => (&level[..i], level[i..].parse::<i64>().ok()?),
        None => (level, 1),
    };
    let base = match name {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    (1..=4).contains(&n).then_some(base + n - 1)
}

fn context_name(c: Context) -> &'static str {
    match c {
        Context::Span => "span",
        Context::SpanEvent => "spanevent",
        Context::Metric => "metric",
        Context::DataPoint => "datapoint",
        Context::LogRecord => "log_record",
    }
}

fn supported(c: Context) -> &'static str {
    match c {
        Context::Span => "name, kind, status.code, status.message, attributes[\"k\"], resource.attributes[\"k\"], instrumentation_scope.name/version",
        Context::SpanEvent => "name, span.name, attributes[\"k\"], resource.attributes[\"k\"], instrumentation_scope.name/version",
        Context::Metric => "name, type, unit, description, resource.attributes[\"k\"], instrumentation_scope.name/version",
        Context::DataPoint => "attributes[\"k\"], value_double, value_int, metric.name, metric.type, metric.unit, resource.attributes[\"k\"], instrumentation_scope.name/version",
        Context::LogRecord => "body, severity_number, severity_text, event_name, attributes[\"k\"], resource.attributes[\"k\"], instrumentation_scope.name/version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct Fake;
    impl Item for Fake {
        fn get(&self, path: Path, key: &str) -> Val<'_> {
            match (path, key) {
                (Path::Name, _) => Val::Str(Cow::Borrowed("GET /health")),
                (Path::Kind, _) => Val::Int(2),
                (Path::StatusCode, _) => Val::Int(0),
                (Path::Attribute(_), "http.status_code") => Val::Int(503),
                (Path::Attribute(_), "gen_ai.system") => Val::Str(Cow::Borrowed("aws.bedrock")),
                (Path::ResourceAttribute(_), "service.name") => Val::Str(Cow::Borrowed("agent")),
                _ => Val::Nil,
            }
        }
    }

    fn holds(text: &str) -> bool {
        Condition::parse(text, Context::Span)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&Fake)
    }

    #[test]
    fn conditions_evaluate_as_ottl() {
        assert!(holds(r#"name == "GET /health""#));
        assert!(holds("kind == SPAN_KIND_SERVER"));
        assert!(holds(
            r#"attributes["http.status_code"] >= 500 and attributes["http.status_code"] < 600"#
        ));
        assert!(holds(r#"IsMatch(name, "^GET /(health|ready)$")"#));
        assert!(holds(
            r#"not IsMatch(attributes["gen_ai.system"], "openai")"#
        ));
        assert!(holds(r#"attributes["missing"] == nil"#));
        assert!(holds(
            r#"resource.attributes["service.name"] != "other" or false"#
        ));
        assert!(holds(
            r#"(status.code == STATUS_CODE_ERROR or kind == 2) and not (name == "x")"#
        ));
        // Different types: == is false, != is true; an ordering is false.
        assert!(!holds(r#"attributes["http.status_code"] == "503""#));
        assert!(holds(r#"attributes["http.status_code"] != "503""#));
        assert!(!holds(r#"name > 5"#));
        assert!(holds("attributes[\"http.status_code\"] > 502.5"));
    }

    #[test]
    fn anything_outside_the_subset_is_refused_with_its_position() {
        for (text, ctx, message) in [
            (
                r#"IsString(name)"#,
                Context::Span,
                "at character 1: function `IsString` is not supported",
            ),
            (
                r#"name == "a" and"#,
                Context::Span,
                "at character 16: the condition ends too early",
            ),
            (
                r#"body == "x""#,
                Context::Span,
                "at character 1: path `body` is not supported in the span context",
            ),
            (
                r#"kind == 1"#,
                Context::LogRecord,
                "path `kind` is not supported in the log_record context",
            ),
            (
                r#"name == "a" extra"#,
                Context::Span,
                "at character 13: unexpected `extra`",
            ),
            (
                r#"name == "unclosed"#,
                Context::Span,
                "at character 9: the string is not closed",
            ),
            (r#"attributes["a"]["b"] == 1"#, Context::Span, "nested keys"),
            (
                r#"name + 1 == 2"#,
                Context::Span,
                "at character 6: `+` is not part of the supported OTTL subset",
            ),
            (
                r#"IsMatch(name, "(")"#,
                Context::Span,
                "is not a regular expression",
            ),
            (r#""a""#, Context::Span, "expected a comparison"),
        ] {
            let e = Condition::parse(text, ctx).unwrap_err();
            assert!(e.contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn severity_enums() {
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN"), Some(13));
        assert_eq!(enum_value("SEVERITY_NUMBER_ERROR3"), Some(19));
        assert_eq!(enum_value("SEVERITY_NUMBER_FATAL4"), Some(24));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO5"), None);
    }
}
