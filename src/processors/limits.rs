//! Processor `limits`: bounds what one sender can make spanwire hold and
//! forward — the number of attributes per resource, scope, span, span event,
//! link, log record and data point, the length of attribute values, and the
//! number of events and links per span, and (when set) the length of log
//! bodies. What is cut is recorded in OTLP's own `dropped_*_count` fields
//! (so backends show it) and counted in self-metrics.

use metrics::Counter;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::Deserialize;

use crate::component::{Admit, Factory, ProcessorContext, ProcessorFactory, Stage, SyncProcessor};
use crate::consumer::{ConsumeError, StartError};
use crate::convert::otlp_index::Shape;
use crate::settings::de::DeError;
use crate::signal::{EncodedBatch, Metadata, Telemetry};

/// `processors.limits`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Attributes kept per resource, scope, span, event, link, log record or
    /// data point (the first ones; as OTel SDKs' default span limit).
    pub max_attributes: usize,
    /// Bytes kept of a string or bytes attribute value (cut on a character
    /// boundary); also elements kept of an array or map value. 0: no limit.
    pub max_attribute_value_length: usize,
    /// Events kept per span.
    pub max_span_events: usize,
    /// Links kept per span.
    pub max_span_links: usize,
    /// Bytes kept of a string or bytes log body (cut on a character
    /// boundary); also elements kept of an array or map body, and bytes of
    /// the values in it. 0 (the default): no limit, as in OTel's log limits.
    pub max_log_body_length: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_attributes: 128,
            max_attribute_value_length: 16384,
            max_span_events: 128,
            max_span_links: 128,
            max_log_body_length: 0,
        }
    }
}

impl LimitsConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.max_attributes == 0 {
            return Err(DeError::custom("max_attributes must be at least 1"));
        }
        Ok(())
    }
}

/// The `limits` processor's factory.
pub struct LimitsFactory;

impl Factory for LimitsFactory {
    type Config = LimitsConfig;
    fn type_name(&self) -> &'static str {
        "limits"
    }
    fn validate(&self, config: &LimitsConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for LimitsFactory {
    fn build(&self, config: &LimitsConfig, ctx: ProcessorContext<'_>) -> Result<Stage, StartError> {
        let limits = Limits::new(config, &ctx.labels);
        Ok(ctx.inline(limits))
    }
}

/// The `limits` processor.
pub struct Limits {
    cfg: LimitsConfig,
    attributes_dropped: Counter,
    values_truncated: Counter,
    events_dropped: Counter,
    links_dropped: Counter,
    bodies_truncated: Counter,
}

impl Limits {
    /// A processor; `labels` name it in self-metrics.
    pub fn new(cfg: &LimitsConfig, labels: &[(&'static str, String)]) -> Limits {
        let c = |name: &'static str| crate::telemetry::counter(name, labels);
        Limits {
            cfg: cfg.clone(),
            attributes_dropped: c("spanwire_limits_attributes_dropped_total"),
            values_truncated: c("spanwire_limits_values_truncated_total"),
            events_dropped: c("spanwire_limits_span_events_dropped_total"),
            links_dropped: c("spanwire_limits_span_links_dropped_total"),
            bodies_truncated: c("spanwire_limits_log_bodies_truncated_total"),
        }
    }

    /// Applies the limits to one attribute list; returns how many were dropped.
    fn attrs(&self, attrs: &mut Vec<KeyValue>) -> u32 {
        let dropped = attrs.len().saturating_sub(self.cfg.max_attributes);
        if dropped > 0 {
            attrs.truncate(self.cfg.max_attributes);
            self.attributes_dropped.increment(dropped as u64);
        }
        if self.cfg.max_attribute_value_length > 0 {
            let mut cut = 0u64;
            for kv in attrs.iter_mut() {
                if let Some(v) = &mut kv.value {
                    cut += cut_value(v, self.cfg.max_attribute_value_length);
                }
            }
            if cut > 0 {
                self.values_truncated.increment(cut);
            }
        }
        dropped.min(u32::MAX as usize) as u32
    }

    fn resource(&self, r: &mut Option<opentelemetry_proto::tonic::resource::v1::Resource>) {
        if let Some(r) = r {
            r.dropped_attributes_count += self.attrs(&mut r.attributes);
        }
    }

    fn scope(&self, s: &mut Option<opentelemetry_proto::tonic::common::v1::InstrumentationScope>) {
        if let Some(s) = s {
            s.dropped_attributes_count += self.attrs(&mut s.attributes);
        }
    }
}

impl Limits {
    /// Whether data of this `shape` is within every limit, so that
    /// processing it would change nothing.
    fn within(&self, shape: &Shape) -> bool {
        let values_within =
            |max: usize| max == 0 || (shape.value_len <= max && shape.elements <= max);
        shape.attributes <= self.cfg.max_attributes
            && shape.events <= self.cfg.max_span_events
            && shape.links <= self.cfg.max_span_links
            && values_within(self.cfg.max_attribute_value_length)
            && values_within(self.cfg.max_log_body_length)
    }
}

/// Bounds one value to `max` bytes (strings on a character boundary) or
/// `max` elements (arrays, maps), recursively; returns how many values were cut.
fn cut_value(v: &mut AnyValue, max: usize) -> u64 {
    match &mut v.value {
        Some(any_value::Value::StringValue(s)) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            1
        }
        Some(any_value::Value::BytesValue(b)) if b.len() > max => {
            b.truncate(max);
            1
        }
        Some(any_value::Value::ArrayValue(a)) => {
            let mut n = 0;
            if a.values.len() > max {
                a.values.truncate(max);
                n += 1;
            }
            n + a.values.iter_mut().map(|e| cut_value(e, max)).sum::<u64>()
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let mut n = 0;
            if l.values.len() > max {
                l.values.truncate(max);
                n += 1;
            }
            n + l
                .values
                .iter_mut()
                .filter_map(|kv| kv.value.as_mut())
                .map(|e| cut_value(e, max))
                .sum::<u64>()
        }
        _ => 0,
    }
}

impl SyncProcessor for Limits {
    fn passes_encoded(&self) -> bool {
        true
    }

    /// Bytes within every limit go on as they are; the rest are decoded and cut.
    fn admit(&self, data: &EncodedBatch) -> Admit {
        // As the receiver's check read it; read again only for bytes that
        // did not come from there (a batch, a disk queue).
        let shape = match data.shape {
            Some(s) => Ok(s),
            None => crate::convert::otlp_index::index_request(data.signal, &data.bytes)
                .map(|ix| ix.shape),
        };
        match shape {
            Ok(s) if self.within(&s) => Admit::Pass,
            _ => Admit::Decode,
        }
    }

    fn process(&self, mut data: Telemetry, _: &Metadata) -> Result<Telemetry, ConsumeError> {
        match &mut data {
            Telemetry::Traces(v) => {
                for rs in v {
                    self.resource(&mut rs.resource);
                    for ss in &mut rs.scope_spans {
                        self.scope(&mut ss.scope);
                        for span in &mut ss.spans {
                            span.dropped_attributes_count += self.attrs(&mut span.attributes);
                            let extra = span.events.len().saturating_sub(self.cfg.max_span_events);
                            if extra > 0 {
                                span.events.truncate(self.cfg.max_span_events);
                                span.dropped_events_count += extra as u32;
                                self.events_dropped.increment(extra as u64);
                            }
                            let extra = span.links.len().saturating_sub(self.cfg.max_span_links);
                            if extra > 0 {
                                span.links.truncate(self.cfg.max_span_links);
                                span.dropped_links_count += extra as u32;
                                self.links_dropped.increment(extra as u64);
                            }
                            for e in &mut span.events {
                                e.dropped_attributes_count += self.attrs(&mut e.attributes);
                            }
                            for l in &mut span.links {
                                l.dropped_attributes_count += self.attrs(&mut l.attributes);
                            }
                        }
                    }
                }
            }
            Telemetry::Logs(v) => {
                for rl in v {
                    self.resource(&mut rl.resource);
                    for sl in &mut rl.scope_logs {
                        self.scope(&mut sl.scope);
                        for rec in &mut sl.log_records {
                            rec.dropped_attributes_count += self.attrs(&mut rec.attributes);
                            let max = self.cfg.max_log_body_length;
                            if let Some(body) = rec.body.as_mut().filter(|_| max > 0) {
                                if cut_value(body, max) > 0 {
                                    self.bodies_truncated.increment(1);
                                }
                            }
                        }
                    }
                }
            }
            Telemetry::Metrics(v) => {
                for rm in v {
                    self.resource(&mut rm.resource);
                    for sm in &mut rm.scope_metrics {
                        self.scope(&mut sm.scope);
                        for m in &mut sm.metrics {
                            // Data points have no dropped count in OTLP; the counter has it.
                            crate::signal::for_each_point_attributes(m, |attrs| {
                                self.attrs(attrs);
                            });
                        }
                    }
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Acks;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::sync::Arc;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn cuts_counts_values_events_and_records_it() {
        let cfg = LimitsConfig {
            max_attributes: 3,
            max_attribute_value_length: 5,
            max_span_events: 2,
            max_span_links: 128,
            max_log_body_length: 0,
        };
        let p = Limits::new(&cfg, &[]);
        let many: Vec<KeyValue> = (0..10)
            .map(|i| kv(&format!("k{i}"), any_value::Value::IntValue(i)))
            .collect();
        let span = Span {
            attributes: vec![
                // "héll" is exactly 5 bytes (é is 2).
                kv("s", any_value::Value::StringValue("héllo wörld".into())),
                kv("ü", any_value::Value::StringValue("üüü".into())),
                kv(
                    "a",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: (0..9)
                            .map(|i| AnyValue {
                                value: Some(any_value::Value::IntValue(i)),
                            })
                            .collect(),
                    }),
                ),
                kv("extra", any_value::Value::BoolValue(true)),
            ],
            events: (0..5)
                .map(|_| Event {
                    attributes: many.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let data = Telemetry::Traces(vec![ResourceSpans {
            resource: Some(Resource {
                attributes: many.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let Telemetry::Traces(out) = p.process(data, &Metadata::default()).unwrap() else {
            panic!()
        };
        let r = out[0].resource.as_ref().unwrap();
        assert_eq!((r.attributes.len(), r.dropped_attributes_count), (3, 7));
        let s = &out[0].scope_spans[0].spans[0];
        assert_eq!((s.attributes.len(), s.dropped_attributes_count), (3, 1));
        let text = |i: usize| match &s.attributes[i].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(t)) => t.clone(),
            _ => panic!(),
        };
        assert_eq!(text(0), "héll");
        // "üüü" is 6 bytes; 5 would split the third ü, so 4 bytes stay.
        assert_eq!(text(1), "üü");
        match &s.attributes[2].value.as_ref().unwrap().value {
            Some(any_value::Value::ArrayValue(a)) => assert_eq!(a.values.len(), 5),
            _ => panic!(),
        }
        assert_eq!((s.events.len(), s.dropped_events_count), (2, 3));
        assert!(s
            .events
            .iter()
            .all(|e| e.attributes.len() == 3 && e.dropped_attributes_count == 7));
    }

    fn log(body: any_value::Value) -> Telemetry {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        Telemetry::Logs(vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue { value: Some(body) }),
                    attributes: vec![kv("a", any_value::Value::StringValue("x".repeat(40)))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn body(t: Telemetry) -> (any_value::Value, String) {
        let Telemetry::Logs(out) = t else { panic!() };
        let rec = &out[0].scope_logs[0].log_records[0];
        let attr = match &rec.attributes[0].value.as_ref().unwrap().value {
            Some(any_value::Value::StringValue(t)) => t.clone(),
            _ => panic!(),
        };
        (rec.body.clone().unwrap().value.unwrap(), attr)
    }

    #[test]
    fn log_bodies_cut_only_when_max_log_body_length_is_set() {
        let text = "ab€".repeat(10); // 5 bytes each; 50 in all
                                     // Default: no body limit, attribute values bounded as before.
        let defaults = LimitsConfig {
            max_attribute_value_length: 30,
            ..Default::default()
        };
        let p = Limits::new(&defaults, &[]);
        let (b, attr) = body(
            p.process(
                log(any_value::Value::StringValue(text.clone())),
                &Metadata::default(),
            )
            .unwrap(),
        );
        assert_eq!(b, any_value::Value::StringValue(text.clone()));
        assert_eq!(attr.len(), 30);

        let cfg = LimitsConfig {
            max_log_body_length: 8,
            ..Default::default()
        };
        let p = Limits::new(&cfg, &[]);
        // 8 bytes would split the second €: 7 stay.
        let (b, attr) = body(
            p.process(
                log(any_value::Value::StringValue(text)),
                &Metadata::default(),
            )
            .unwrap(),
        );
        assert_eq!(b, any_value::Value::StringValue("ab€ab".into()));
        assert_eq!(attr.len(), 40, "the body limit leaves attributes alone");
        // A map body: at most 8 entries, and each value at most 8 bytes.
        let map =
            any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: (0..12)
                    .map(|i| {
                        kv(
                            &format!("k{i}"),
                            any_value::Value::StringValue("z".repeat(20)),
                        )
                    })
                    .collect(),
            });
        let (b, _) = body(p.process(log(map), &Metadata::default()).unwrap());
        let any_value::Value::KvlistValue(l) = b else {
            panic!()
        };
        assert_eq!(l.values.len(), 8);
        assert!(l.values.iter().all(|kv| matches!(
            &kv.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue(s)) if s.len() == 8
        )));
    }

    /// Takes bytes, and records what it was given.
    #[derive(Default)]
    struct Capture {
        got: std::sync::Mutex<Vec<Result<Vec<u8>, Telemetry>>>,
    }

    #[async_trait::async_trait]
    impl crate::consumer::Consumer for Capture {
        async fn consume(&self, data: Telemetry, _: Acks) -> Result<(), ConsumeError> {
            self.got.lock().unwrap().push(Err(data));
            Ok(())
        }
        fn takes_encoded(&self) -> bool {
            true
        }
        async fn consume_encoded(
            &self,
            data: EncodedBatch,
            _: Acks,
        ) -> Result<(), ConsumeError<EncodedBatch>> {
            self.got.lock().unwrap().push(Ok(data.bytes.to_vec()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn bytes_within_the_limits_pass_as_they_are_and_the_rest_are_cut() {
        use crate::component::ProcessorStage;
        use crate::consumer::Consumer;
        use crate::signal::Signal;
        use prost::Message;
        let cfg = LimitsConfig {
            max_attributes: 4,
            max_attribute_value_length: 8,
            max_span_events: 1,
            ..LimitsConfig::default()
        };
        let next = Arc::new(Capture::default());
        let stage = ProcessorStage::new(Arc::new(Limits::new(&cfg, &[])), next.clone(), &[]);
        assert!(stage.takes_encoded());
        let request = |attrs: usize, text: &str, events: usize| {
            let span = Span {
                attributes: (0..attrs)
                    .map(|i| kv(&format!("k{i}"), any_value::Value::StringValue(text.into())))
                    .collect(),
                events: (0..events).map(|_| Event::default()).collect(),
                ..Default::default()
            };
            let rs = vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }];
            let bytes =
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                    resource_spans: rs.clone(),
                }
                .encode_to_vec();
            (rs, bytes)
        };
        // At every limit exactly: passed on as the same bytes.
        let (_, fits) = request(4, "12345678", 1);
        // One over each limit in turn: decoded and cut as `process` cuts.
        let over = [
            request(5, "1234", 0),
            request(1, "123456789", 0),
            request(1, "", 2),
        ];
        for (i, bytes) in std::iter::once(&fits)
            .chain(over.iter().map(|(_, b)| b))
            .enumerate()
        {
            // Every other one with the shape a receiver read, the rest read here.
            let shape = (i % 2 == 0).then(|| {
                crate::convert::otlp_index::index_traces(bytes)
                    .map(|ix| ix.shape)
                    .unwrap()
            });
            let batch = EncodedBatch {
                signal: Signal::Traces,
                items: 1,
                bytes: bytes.clone().into(),
                shape,
            };
            stage.consume_encoded(batch, Acks::none()).await.unwrap();
        }
        let got = std::mem::take(&mut *next.got.lock().unwrap());
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().ok(), Some(&fits));
        let reference = Limits::new(&cfg, &[]);
        for (g, (rs, _)) in got[1..].iter().zip(&over) {
            let want = reference
                .process(Telemetry::Traces(rs.clone()), &Metadata::default())
                .unwrap();
            assert_eq!(g.as_ref().err(), Some(&want));
            assert_ne!(want, Telemetry::Traces(rs.clone()), "something was cut");
        }
    }
}
