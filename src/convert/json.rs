//! A small JSON writer shared by the converters that write JSON text (X-Ray
//! documents, EMF and CloudWatch Logs events): objects are written straight
//! into one `String`, and every string *value* can be capped at a number of
//! characters (X-Ray's 64 KB trimming uses that); keys are never cut.

use std::fmt::Write as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes JSON into `out`.
pub(crate) struct Writer<'o> {
    pub(crate) out: &'o mut String,
    /// Longest string value written, in characters.
    pub(crate) max_str: usize,
    /// Set when a value was cut by `max_str`.
    pub(crate) cut: bool,
    first: Vec<bool>,
}

impl<'o> Writer<'o> {
    pub(crate) fn new(out: &'o mut String, max_str: usize) -> Writer<'o> {
        Writer {
            out,
            max_str,
            cut: false,
            first: Vec::with_capacity(8),
        }
    }

    pub(crate) fn begin_object(&mut self) {
        self.out.push('{');
        self.first.push(true);
    }

    pub(crate) fn end_object(&mut self) {
        self.out.push('}');
        self.first.pop();
    }

    pub(crate) fn begin_array(&mut self) {
        self.out.push('[');
        self.first.push(true);
    }

    pub(crate) fn end_array(&mut self) {
        self.out.push(']');
        self.first.pop();
    }

    /// A comma unless this is the first member of the current object/array.
    pub(crate) fn sep(&mut self) {
        if let Some(f) = self.first.last_mut() {
            if *f {
                *f = false;
            } else {
                self.out.push(',');
            }
        }
    }

    /// `"key":` (with its separator).
    pub(crate) fn key(&mut self, key: &str) {
        self.sep();
        escape(self.out, key);
        self.out.push(':');
    }

    /// A string value, capped at `max_str` characters.
    pub(crate) fn str_value(&mut self, s: &str) {
        if s.len() > self.max_str {
            if let Some((i, _)) = s.char_indices().nth(self.max_str) {
                self.cut = true;
                escape(self.out, &s[..i]);
                return;
            }
        }
        escape(self.out, s);
    }

    pub(crate) fn str_field(&mut self, key: &str, s: &str) {
        self.key(key);
        self.str_value(s);
    }

    pub(crate) fn opt_str_field(&mut self, key: &str, s: Option<&str>) {
        if let Some(s) = s {
            self.str_field(key, s);
        }
    }

    pub(crate) fn bool_field(&mut self, key: &str, b: bool) {
        self.key(key);
        self.out.push_str(if b { "true" } else { "false" });
    }

    pub(crate) fn int_field(&mut self, key: &str, i: i64) {
        self.key(key);
        let _ = write!(self.out, "{i}");
    }

    /// An array element separator, for values written by the caller.
    pub(crate) fn elem(&mut self) {
        self.sep();
    }

    /// Seconds since the epoch with microsecond precision, straight from
    /// nanoseconds (never through f64, which would lose digits).
    pub(crate) fn time_field(&mut self, key: &str, unix_nanos: u64) {
        self.key(key);
        let secs = unix_nanos / 1_000_000_000;
        let micros = (unix_nanos % 1_000_000_000) / 1_000;
        let _ = write!(self.out, "{secs}.{micros:06}");
    }

    /// A double; JSON has no NaN or infinity, so those become strings.
    pub(crate) fn f64_value(&mut self, f: f64) {
        if f.is_finite() {
            let _ = write!(self.out, "{f}");
        } else {
            escape(self.out, &f.to_string());
        }
    }

    /// An OTLP value as JSON: maps become objects, arrays arrays, bytes base64.
    pub(crate) fn any_value(&mut self, v: Option<&AnyValue>) {
        self.value(v.and_then(|v| v.value.as_ref()))
    }

    /// The same for the value inside an `AnyValue`.
    pub(crate) fn value(&mut self, v: Option<&any_value::Value>) {
        match v {
            None => self.out.push_str("null"),
            Some(any_value::Value::StringValue(s)) => self.str_value(s),
            Some(any_value::Value::BoolValue(b)) => {
                self.out.push_str(if *b { "true" } else { "false" })
            }
            Some(any_value::Value::IntValue(i)) => {
                let _ = write!(self.out, "{i}");
            }
            Some(any_value::Value::DoubleValue(d)) => self.f64_value(*d),
            Some(any_value::Value::BytesValue(b)) => {
                let s = base64::engine::general_purpose::STANDARD.encode(b);
                self.str_value(&s);
            }
            Some(any_value::Value::ArrayValue(a)) => {
                self.begin_array();
                for v in &a.values {
                    self.elem();
                    self.any_value(Some(v));
                }
                self.end_array();
            }
            Some(any_value::Value::KvlistValue(kv)) => {
                self.begin_object();
                for kv in &kv.values {
                    self.key(&kv.key);
                    self.any_value(kv.value.as_ref());
                }
                self.end_object();
            }
            Some(any_value::Value::StringValueStrindex(_)) => self.out.push_str("null"),
        }
    }
}

/// True if any byte of `w` needs escaping: below 0x20, `"` or `\\`
/// (the classic "has a zero / less-than byte" word tricks; bytes ≥ 0x80 never match).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let less_than_space = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * b'\\' as u64);
    let backslash = b.wrapping_sub(ONES) & !b;
    (less_than_space | quote | backslash) & HIGH != 0
}

/// Appends `s` as a JSON string literal.
pub(crate) fn escape(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight clean bytes at a time; most text has nothing to escape.
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if !word_needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(esc);
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends the lowercase hex of `bytes`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nx",
            "\u{1}ctl",
            "émoji 🚀 中文",
            "a long clean run of text then a \"quote\" and\ttab \u{7f}\u{1f} end",
            "\\\\\\\\\"\"\"\"\"\"\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}",
            "ééééééééééé bytes of 0x80 and above never match: ÿÿÿÿÿÿÿÿ~~~~~~~~",
        ] {
            let mut out = String::new();
            escape(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn escapes_random_text_like_serde_json() {
        use rand::{Rng, SeedableRng};
        let alphabet = [
            'a', 'Z', ' ', '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '中', '🚀', '~',
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..5000 {
            let len = rng.random_range(0..40);
            let s: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let mut out = String::new();
            escape(&mut out, &s);
            assert_eq!(out, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn caps_strings_on_char_boundaries() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, 3);
        w.str_value("日本語テキスト");
        assert!(w.cut);
        assert_eq!(out, "\"日本語\"");
    }

    #[test]
    fn times_keep_every_microsecond() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out, usize::MAX);
        w.begin_object();
        w.time_field("t", 1_785_830_304_877_000_192);
        w.end_object();
        assert_eq!(out, "{\"t\":1785830304.877000}");
    }
}
