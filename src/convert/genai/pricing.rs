//! Model prices: a built-in, dated table of Amazon Bedrock on-demand
//! prices, which a component's `pricing` overrides model by model.
//!
//! Source: the Amazon Bedrock pricing page (aws.amazon.com/bedrock/pricing),
//! on-demand, US East (N. Virginia), per 1,000 tokens, as published and
//! re-published in March 2026 (cache writes 1.25 × and cache reads 0.1 × the
//! input price for Anthropic models; Amazon Nova cache reads 0.25 ×).
//! Compiled for spanwire on [`TABLE_DATE`]. Cross-region inference profiles
//! (`us.`, `eu.`, `apac.`, `global.` …) and ARNs are priced as their base
//! model; regional endpoints that cost more are not modelled.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::span::Tokens;

/// The day the built-in table was compiled.
pub const TABLE_DATE: &str = "2026-12-07";

/// Prices of one model, per 1,000 tokens (USD).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per 1,000 input tokens.
    #[serde(default)]
    pub input: f64,
    /// Per 1,000 output tokens.
    #[serde(default)]
    pub output: f64,
    /// Per 1,000 cache-read input tokens (default: 0.1 × `input`).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Per 1,000 cache-write input tokens (default: 1.25 × `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Price {
    const fn of(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cache_read: None,
            cache_write: None,
        }
    }

    /// The cost of `t`.
    pub fn cost(&self, t: &Tokens) -> f64 {
        let read = self.cache_read.unwrap_or(self.input * 0.1);
        let write = self.cache_write.unwrap_or(self.input * 1.25);
        (t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_read as f64 * read
            + t.cache_write as f64 * write)
            / 1000.0
    }
}

/// The built-in table: base model id prefixes (no region prefix, no
/// version suffix needed) and their prices. The longest matching prefix
/// wins.
pub const BUILT_IN: &[(&str, Price)] = &[
    ("anthropic.claude-3-haiku", Price::of(0.00025, 0.00125)),
    ("anthropic.claude-3-5-haiku", Price::of(0.0008, 0.004)),
    ("anthropic.claude-haiku-4-5", Price::of(0.001, 0.005)),
    ("anthropic.claude-3-sonnet", Price::of(0.003, 0.015)),
    ("anthropic.claude-3-5-sonnet", Price::of(0.003, 0.015)),
    ("anthropic.claude-3-7-sonnet", Price::of(0.003, 0.015)),
    ("anthropic.claude-sonnet-4", Price::of(0.003, 0.015)),
    ("anthropic.claude-3-opus", Price::of(0.015, 0.075)),
    ("anthropic.claude-opus-4", Price::of(0.015, 0.075)),
    ("anthropic.claude-opus-4-5", Price::of(0.005, 0.025)),
    ("anthropic.claude-opus-4-6", Price::of(0.005, 0.025)),
    ("anthropic.claude-opus-4-7", Price::of(0.005, 0.025)),
    (
        "amazon.nova-micro",
        Price {
            input: 0.000035,
            output: 0.00014,
            cache_read: Some(0.00000875),
            cache_write: Some(0.0),
        },
    ),
    (
        "amazon.nova-lite",
        Price {
            input: 0.00006,
            output: 0.00024,
            cache_read: Some(0.000015),
            cache_write: Some(0.0),
        },
    ),
    (
        "amazon.nova-pro",
        Price {
            input: 0.0008,
            output: 0.0032,
            cache_read: Some(0.0002),
            cache_write: Some(0.0),
        },
    ),
    ("amazon.nova-premier", Price::of(0.0025, 0.0125)),
    ("amazon.titan-text-premier", Price::of(0.0008, 0.0024)),
    ("amazon.titan-text-express", Price::of(0.0002, 0.0006)),
    ("amazon.titan-text-lite", Price::of(0.00015, 0.0002)),
    ("amazon.titan-embed-text-v2", Price::of(0.00002, 0.0)),
    ("meta.llama3-8b-instruct", Price::of(0.00022, 0.00022)),
    ("meta.llama3-70b-instruct", Price::of(0.00099, 0.00099)),
    ("meta.llama3-1-8b-instruct", Price::of(0.00008, 0.00032)),
    ("meta.llama3-1-70b-instruct", Price::of(0.00055, 0.0022)),
    ("meta.llama3-1-405b-instruct", Price::of(0.0025, 0.01)),
    ("mistral.mistral-large", Price::of(0.004, 0.012)),
    ("mistral.mixtral-8x7b", Price::of(0.00045, 0.0007)),
    ("mistral.mistral-7b", Price::of(0.00015, 0.0002)),
    ("cohere.command-r-plus", Price::of(0.003, 0.015)),
    ("cohere.command-r-v1", Price::of(0.0005, 0.0015)),
];

/// Prices by model: the user's table (exact model ids, as spans name them,
/// or base ids) over the built-in one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pricing {
    overrides: BTreeMap<String, Price>,
    built_in: bool,
}

/// A model id without an ARN's prefix or a cross-region inference
/// profile's geography: `us.anthropic.claude-…` → `anthropic.claude-…`.
pub fn base_model(model: &str) -> &str {
    let m = model.rsplit('/').next().unwrap_or(model);
    for geo in [
        "us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov.",
    ] {
        if let Some(rest) = m.strip_prefix(geo) {
            if rest.contains('.') {
                return rest;
            }
        }
    }
    m
}

impl Pricing {
    /// The built-in table with `overrides` over it.
    pub fn new(overrides: BTreeMap<String, Price>) -> Pricing {
        Pricing {
            overrides,
            built_in: true,
        }
    }

    /// Only `overrides` (no built-in prices).
    pub fn only(overrides: BTreeMap<String, Price>) -> Pricing {
        Pricing {
            overrides,
            built_in: false,
        }
    }

    /// The price of `model`: the user's for the id as written, then for
    /// its base id, then the built-in table's longest matching prefix.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.overrides.get(model) {
            return Some(*p);
        }
        let base = base_model(model);
        if let Some(p) = self.overrides.get(base) {
            return Some(*p);
        }
        if !self.built_in {
            return None;
        }
        // A model named without its vendor (`claude-3-5-haiku-…`, as
        // OpenLLMetry writes it) matches the entry without the vendor.
        BUILT_IN
            .iter()
            .filter(|(prefix, _)| {
                base.starts_with(prefix)
                    || prefix
                        .split_once('.')
                        .is_some_and(|(_, p)| !base.contains('.') && base.starts_with(p))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| *p)
    }

    /// The cost of `tokens` of `model`, if it has a price.
    pub fn cost(&self, model: &str, tokens: &Tokens) -> Option<f64> {
        self.price(model).map(|p| p.cost(tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_profiles_and_arns_are_priced_as_their_base_model() {
        let p = Pricing::new(BTreeMap::new());
        let t = Tokens {
            input: 1000,
            output: 1000,
            cache_read: 1000,
            cache_write: 1000,
        };
        let direct = p
            .cost("anthropic.claude-3-5-haiku-20241022-v1:0", &t)
            .unwrap();
        assert!((direct - (0.0008 + 0.004 + 0.00008 + 0.001)).abs() < 1e-12);
        assert_eq!(
            p.cost("us.anthropic.claude-3-5-haiku-20241022-v1:0", &t),
            Some(direct)
        );
        assert_eq!(
            p.cost(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0",
                &t
            ),
            Some(direct)
        );
        // The longest prefix: Opus 4.5 is not Opus 4.
        let o45 = p
            .price("global.anthropic.claude-opus-4-5-20251101-v1:0")
            .unwrap();
        let o4 = p.price("anthropic.claude-opus-4-20250514-v1:0").unwrap();
        assert_eq!(o45.input, 0.005);
        assert_eq!(o4.input, 0.015);
        assert_eq!(p.price("my-own-model"), None);
        // Without its vendor, as OpenLLMetry names it.
        assert_eq!(p.cost("claude-3-5-haiku-20241022-v1:0", &t), Some(direct));
    }

    #[test]
    fn overrides_win_by_exact_id_then_base_id() {
        let mut o = BTreeMap::new();
        o.insert(
            "anthropic.claude-3-5-haiku-20241022-v1:0".to_string(),
            Price::of(1.0, 2.0),
        );
        o.insert("custom".to_string(), Price::of(0.5, 0.5));
        let p = Pricing::new(o.clone());
        let t = Tokens {
            input: 1000,
            output: 1000,
            ..Tokens::default()
        };
        assert_eq!(
            p.cost("us.anthropic.claude-3-5-haiku-20241022-v1:0", &t),
            Some(3.0)
        );
        assert_eq!(p.cost("custom", &t), Some(1.0));
        let only = Pricing::only(o);
        assert_eq!(only.price("anthropic.claude-3-haiku-20240307-v1:0"), None);
    }
}
