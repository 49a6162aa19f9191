//! Component ids: `type` or `type/name`.

use std::fmt;

/// A component id: `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    /// The component type, e.g. `otlp`.
    pub kind: String,
    /// The optional name after the slash.
    pub name: Option<String>,
}

impl ComponentId {
    /// Parses `type[/name]`.
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let valid_type = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_type {
            return Err(format!(
                "invalid component id `{s}`: the type must be lower-case letters, digits or `_`"
            ));
        }
        if let Some(n) = name {
            if n.is_empty() || n.contains(char::is_whitespace) {
                return Err(format!("invalid component id `{s}`: the name after `/` must be non-empty without spaces"));
            }
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}
