//! `serde` deserialisation from a marked YAML [`Node`], so that unknown keys
//! and wrong types are reported at the line and column where they were written.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Mark, Node, Scalar, Value};

/// A deserialisation error with the position and key path it concerns.
#[derive(Debug, Clone)]
pub struct DeError {
    /// What went wrong.
    pub message: String,
    /// Innermost position known for the error.
    pub mark: Option<Mark>,
    /// Keys from the deserialised root to the offending node (innermost last).
    pub path: Vec<String>,
}

impl DeError {
    fn at(mut self, mark: &Mark) -> Self {
        if self.mark.is_none() {
            self.mark = Some(mark.clone());
        }
        self
    }

    fn under(mut self, key: String) -> Self {
        self.path.insert(0, key);
        self
    }

    /// The dotted key path, e.g. `protocols.grpc.endpoint`.
    pub fn path_string(&self) -> String {
        self.path.join(".")
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            mark: None,
            path: Vec::new(),
        }
    }
}

/// Deserialises `T` from a node.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(node).map_err(|e| e.at(&node.mark))
}

fn unexpected(node: &Node) -> de::Unexpected<'_> {
    match &node.value {
        Value::Scalar(Scalar::Null) => de::Unexpected::Unit,
        Value::Scalar(Scalar::Bool(b)) => de::Unexpected::Bool(*b),
        Value::Scalar(Scalar::Int(i)) => de::Unexpected::Signed(*i),
        Value::Scalar(Scalar::Float(f)) => de::Unexpected::Float(*f),
        Value::Scalar(Scalar::Str(s)) => de::Unexpected::Str(s),
        Value::Seq(_) => de::Unexpected::Seq,
        Value::Map(_) => de::Unexpected::Map,
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.value {
            Value::Scalar(Scalar::Null) => visitor.visit_unit(),
            Value::Scalar(Scalar::Bool(b)) => visitor.visit_bool(*b),
            Value::Scalar(Scalar::Int(i)) => visitor.visit_i64(*i),
            Value::Scalar(Scalar::Float(f)) => visitor.visit_f64(*f),
            Value::Scalar(Scalar::Str(s)) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                iter: items.iter(),
                index: 0,
            }),
            Value::Map(entries) => visitor.visit_map(MapAccess {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.at(&self.mark))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Scalar(Scalar::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // An empty value (`otlp:`) means "all defaults".
        match &self.value {
            Value::Scalar(Scalar::Null) => visitor
                .visit_map(MapAccess {
                    iter: [].iter(),
                    value: None,
                })
                .map_err(|e| e.at(&self.mark)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_struct("", &[], visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Scalar(Scalar::Null) => visitor
                .visit_seq(SeqAccess {
                    iter: [].iter(),
                    index: 0,
                })
                .map_err(|e| e.at(&self.mark)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Plain numbers and booleans where text is wanted are text (e.g. `port: 4317`).
        let r = match &self.value {
            Value::Scalar(Scalar::Int(i)) => visitor.visit_string(i.to_string()),
            Value::Scalar(Scalar::Float(f)) => visitor.visit_string(f.to_string()),
            Value::Scalar(Scalar::Bool(b)) => visitor.visit_string(b.to_string()),
            _ => return self.deserialize_any(visitor),
        };
        r.map_err(|e: DeError| e.at(&self.mark))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let expected = format!("one of {}", variants.join(", "));
        let r = match &self.value {
            Value::Scalar(Scalar::Str(s)) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                visitor.visit_enum(EnumAccess { entry: &entries[0] })
            }
            _ => Err(de::Error::invalid_type(
                unexpected(self),
                &expected.as_str(),
            )),
        };
        r.map_err(|e: DeError| e.at(&self.mark))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

struct SeqAccess<'de> {
    iter: std::slice::Iter<'de, Node>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some(node) => {
                let i = self.index;
                self.index += 1;
                seed.deserialize(node)
                    .map(Some)
                    .map_err(|e| e.at(&node.mark).under(format!("[{i}]")))
            }
        }
    }
}

struct MapAccess<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<(&'de Node, String)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, v)) => {
                let name = k.key_text();
                self.value = Some((v, name.clone()));
                seed.deserialize(k)
                    .map(Some)
                    .map_err(|e| e.at(&k.mark).under(name))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((node, name)) => seed
                .deserialize(node)
                .map_err(|e| e.at(&node.mark).under(name)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

struct EnumAccess<'de> {
    entry: &'de (Node, Node),
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, &'de Node), DeError> {
        let v = seed.deserialize(&self.entry.0)?;
        Ok((v, &self.entry.1))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match &self.value {
            Value::Scalar(Scalar::Null) => Ok(()),
            _ => Err(de::Error::invalid_type(unexpected(self), &"no value")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::yaml::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        port: Option<String>,
        #[serde(default)]
        size: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<u8>,
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn unknown_key_is_reported_at_the_key() {
        let (n, _) = parse("f", "inner:\n  port: 1\n  sise: 2\n", &no_env).unwrap();
        let err = from_node::<Outer>(&n).unwrap_err();
        assert!(
            err.message.contains("unknown field `sise`"),
            "{}",
            err.message
        );
        let m = err.mark.clone().unwrap();
        assert_eq!((m.line, m.col), (3, 3));
        assert_eq!(err.path_string(), "inner.sise");
    }

    #[test]
    fn wrong_type_is_reported_at_the_value() {
        let (n, _) = parse("f", "inner:\n  size: lots\nlist: [1, 2, 300]\n", &no_env).unwrap();
        let err = from_node::<Outer>(&n).unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        assert_eq!(err.mark.unwrap().line, 2);
        let (n, _) = parse("f", "inner: {}\nlist: [1, 2, 300]\n", &no_env).unwrap();
        let err = from_node::<Outer>(&n).unwrap_err();
        assert_eq!(err.path_string(), "list.[2]");
    }

    #[test]
    fn numbers_are_accepted_as_strings_and_null_as_defaults() {
        let (n, _) = parse("f", "inner:\n  port: 4317\n", &no_env).unwrap();
        let o = from_node::<Outer>(&n).unwrap();
        assert_eq!(o.inner.port.as_deref(), Some("4317"));
        let (n, _) = parse("f", "inner:\n", &no_env).unwrap();
        let o = from_node::<Outer>(&n).unwrap();
        assert_eq!(o.inner.size, 0);
        assert!(o.list.is_empty());
    }
}
