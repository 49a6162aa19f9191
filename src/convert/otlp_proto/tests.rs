use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1 as metrics_v1;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What prost writes for the same request.
fn prost_traces(v: &[ResourceSpans]) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: v.to_vec(),
    }
    .encode_to_vec()
}

fn prost_logs(v: &[ResourceLogs]) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: v.to_vec(),
    }
    .encode_to_vec()
}

fn ours(t: &Telemetry) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_request(t, &mut buf);
    buf
}

fn assert_traces_match(v: Vec<ResourceSpans>) {
    let expected = prost_traces(&v);
    let t = Telemetry::Traces(v);
    let got = ours(&t);
    assert_eq!(got.len(), expected.len(), "encoded length");
    assert!(got == expected, "bytes differ from prost's");
    let back = ExportTraceServiceRequest::decode(&got[..]).unwrap();
    assert!(Telemetry::Traces(back.resource_spans) == t, "round trip");
}

fn assert_logs_match(v: Vec<ResourceLogs>) {
    let expected = prost_logs(&v);
    let t = Telemetry::Logs(v);
    let got = ours(&t);
    assert!(got == expected, "bytes differ from prost's");
}

/// Random data that reaches every field, every oneof member, negative
/// enums and ints, empty and long strings, and nested arrays and lists.
pub(crate) struct Gen(pub(crate) StdRng);

impl Gen {
    fn coin(&mut self) -> bool {
        self.0.random_bool(0.5)
    }

    fn text(&mut self) -> String {
        let len = match self.0.random_range(0..10) {
            0 => 0,
            1 => self.0.random_range(120..140),
            2 => self.0.random_range(16_370..16_400),
            _ => self.0.random_range(1..40),
        };
        (0..len)
            .map(|i| char::from(b'a' + ((i * 7 + len) % 26) as u8))
            .collect()
    }

    fn id(&mut self, n: usize) -> Vec<u8> {
        if self.0.random_range(0..5) == 0 {
            Vec::new()
        } else {
            (0..n).map(|_| self.0.random()).collect()
        }
    }

    fn int32(&mut self) -> i32 {
        match self.0.random_range(0..4) {
            0 => 0,
            1 => -self.0.random_range(1..1000),
            _ => self.0.random_range(1..i32::MAX),
        }
    }

    fn any(&mut self, depth: u32) -> AnyValue {
        use any_value::Value;
        let pick = self.0.random_range(0..if depth > 2 { 6 } else { 9 });
        let value = match pick {
            0 => None,
            1 => Some(Value::StringValue(self.text())),
            2 => Some(Value::BoolValue(self.coin())),
            3 => Some(Value::IntValue(match self.0.random_range(0..3) {
                0 => 0,
                1 => -self.0.random_range(1..i64::MAX),
                _ => self.0.random(),
            })),
            4 => Some(Value::DoubleValue(if self.coin() {
                0.0
            } else {
                self.0.random()
            })),
            5 => {
                let n = self.0.random_range(0..300);
                Some(Value::BytesValue(self.id(n)))
            }
            6 => Some(Value::StringValueStrindex(self.int32())),
            7 => Some(Value::ArrayValue(ArrayValue {
                values: (0..self.0.random_range(0..5))
                    .map(|_| self.any(depth + 1))
                    .collect(),
            })),
            _ => Some(Value::KvlistValue(KeyValueList {
                values: self.attrs(depth + 1, 4),
            })),
        };
        AnyValue { value }
    }

    fn attrs(&mut self, depth: u32, max: usize) -> Vec<KeyValue> {
        (0..self.0.random_range(0..=max))
            .map(|_| KeyValue {
                key: self.text(),
                value: if self.0.random_range(0..6) == 0 {
                    None
                } else {
                    Some(self.any(depth))
                },
                key_strindex: if self.0.random_range(0..8) == 0 {
                    self.int32()
                } else {
                    0
                },
            })
            .collect()
    }

    fn small(&mut self) -> u32 {
        if self.coin() {
            0
        } else {
            self.0.random_range(1..100_000)
        }
    }

    fn resource(&mut self) -> Option<Resource> {
        self.coin().then(|| Resource {
            attributes: self.attrs(0, 6),
            dropped_attributes_count: self.small(),
            entity_refs: (0..self.0.random_range(0..3))
                .map(|_| EntityRef {
                    schema_url: self.text(),
                    r#type: self.text(),
                    id_keys: (0..self.0.random_range(0..3))
                        .map(|_| self.text())
                        .collect(),
                    description_keys: (0..self.0.random_range(0..3))
                        .map(|_| self.text())
                        .collect(),
                })
                .collect(),
        })
    }

    fn scope(&mut self) -> Option<InstrumentationScope> {
        self.coin().then(|| InstrumentationScope {
            name: self.text(),
            version: self.text(),
            attributes: self.attrs(0, 3),
            dropped_attributes_count: self.small(),
        })
    }

    fn span(&mut self) -> Span {
        Span {
            trace_id: self.id(16),
            span_id: self.id(8),
            trace_state: self.text(),
            parent_span_id: self.id(8),
            flags: self.small(),
            name: self.text(),
            kind: self.int32(),
            start_time_unix_nano: if self.coin() { 0 } else { self.0.random() },
            end_time_unix_nano: self.0.random(),
            attributes: self.attrs(0, 8),
            dropped_attributes_count: self.small(),
            events: (0..self.0.random_range(0..3))
                .map(|_| span::Event {
                    time_unix_nano: self.0.random(),
                    name: self.text(),
                    attributes: self.attrs(0, 4),
                    dropped_attributes_count: self.small(),
                })
                .collect(),
            dropped_events_count: self.small(),
            links: (0..self.0.random_range(0..3))
                .map(|_| span::Link {
                    trace_id: self.id(16),
                    span_id: self.id(8),
                    trace_state: self.text(),
                    attributes: self.attrs(0, 3),
                    dropped_attributes_count: self.small(),
                    flags: self.small(),
                })
                .collect(),
            dropped_links_count: self.small(),
            status: self.coin().then(|| Status {
                message: self.text(),
                code: self.int32(),
            }),
        }
    }

    pub(crate) fn traces(&mut self) -> Vec<ResourceSpans> {
        (0..self.0.random_range(0..4))
            .map(|_| ResourceSpans {
                resource: self.resource(),
                scope_spans: (0..self.0.random_range(0..4))
                    .map(|_| ScopeSpans {
                        scope: self.scope(),
                        spans: (0..self.0.random_range(0..6))
                            .map(|_| self.span())
                            .collect(),
                        schema_url: self.text(),
                    })
                    .collect(),
                schema_url: self.text(),
            })
            .collect()
    }

    pub(crate) fn logs(&mut self) -> Vec<ResourceLogs> {
        (0..self.0.random_range(0..4))
            .map(|_| ResourceLogs {
                resource: self.resource(),
                scope_logs: (0..self.0.random_range(0..4))
                    .map(|_| ScopeLogs {
                        scope: self.scope(),
                        log_records: (0..self.0.random_range(0..6))
                            .map(|_| LogRecord {
                                time_unix_nano: self.0.random(),
                                observed_time_unix_nano: if self.coin() {
                                    0
                                } else {
                                    self.0.random()
                                },
                                severity_number: self.int32(),
                                severity_text: self.text(),
                                body: self.coin().then(|| self.any(0)),
                                attributes: self.attrs(0, 6),
                                dropped_attributes_count: self.small(),
                                flags: self.small(),
                                trace_id: self.id(16),
                                span_id: self.id(8),
                                event_name: self.text(),
                            })
                            .collect(),
                        schema_url: self.text(),
                    })
                    .collect(),
                schema_url: self.text(),
            })
            .collect()
    }

    fn exemplars(&mut self) -> Vec<metrics_v1::Exemplar> {
        use metrics_v1::exemplar::Value;
        (0..self.0.random_range(0..3))
            .map(|_| metrics_v1::Exemplar {
                filtered_attributes: self.attrs(0, 2),
                time_unix_nano: self.0.random(),
                span_id: self.id(8),
                trace_id: self.id(16),
                value: match self.0.random_range(0..3) {
                    0 => None,
                    1 => Some(Value::AsDouble(self.0.random())),
                    _ => Some(Value::AsInt(-self.0.random_range(0..i64::MAX))),
                },
            })
            .collect()
    }

    fn counts(&mut self, n: usize) -> Vec<u64> {
        (0..self.0.random_range(0..n))
            .map(|_| {
                if self.coin() {
                    self.0.random_range(0..200)
                } else {
                    self.0.random()
                }
            })
            .collect()
    }

    fn maybe_f64(&mut self) -> Option<f64> {
        self.coin().then(|| self.0.random())
    }

    /// Every kind of metric data, with exemplars, packed counts and bounds.
    fn metric_data(&mut self) -> Option<metrics_v1::metric::Data> {
        use metrics_v1::metric::Data;
        use metrics_v1::number_data_point::Value;
        let n = self.0.random_range(0..4);
        let number = |g: &mut Gen| metrics_v1::NumberDataPoint {
            attributes: g.attrs(0, 4),
            start_time_unix_nano: g.0.random(),
            time_unix_nano: g.0.random(),
            exemplars: g.exemplars(),
            flags: g.small(),
            value: match g.0.random_range(0..3) {
                0 => None,
                1 => Some(Value::AsDouble(g.0.random())),
                _ => Some(Value::AsInt(g.0.random())),
            },
        };
        Some(match self.0.random_range(0..6) {
            0 => return None,
            1 => Data::Gauge(metrics_v1::Gauge {
                data_points: (0..n).map(|_| number(self)).collect(),
            }),
            2 => Data::Sum(metrics_v1::Sum {
                data_points: (0..n).map(|_| number(self)).collect(),
                aggregation_temporality: self.int32(),
                is_monotonic: self.coin(),
            }),
            3 => Data::Histogram(metrics_v1::Histogram {
                data_points: (0..n)
                    .map(|_| metrics_v1::HistogramDataPoint {
                        attributes: self.attrs(0, 4),
                        start_time_unix_nano: self.0.random(),
                        time_unix_nano: self.0.random(),
                        count: self.0.random(),
                        sum: self.maybe_f64(),
                        bucket_counts: self.counts(12),
                        explicit_bounds: (0..self.0.random_range(0..12))
                            .map(|_| self.0.random())
                            .collect(),
                        exemplars: self.exemplars(),
                        flags: self.small(),
                        min: self.maybe_f64(),
                        max: self.maybe_f64(),
                    })
                    .collect(),
                aggregation_temporality: self.int32(),
            }),
            4 => Data::ExponentialHistogram(metrics_v1::ExponentialHistogram {
                data_points: (0..n)
                    .map(|_| {
                        let buckets = |g: &mut Gen| {
                            g.coin().then(|| {
                                metrics_v1::exponential_histogram_data_point::Buckets {
                                    offset: g.int32(),
                                    bucket_counts: g.counts(20),
                                }
                            })
                        };
                        metrics_v1::ExponentialHistogramDataPoint {
                            attributes: self.attrs(0, 4),
                            start_time_unix_nano: self.0.random(),
                            time_unix_nano: self.0.random(),
                            count: self.0.random(),
                            sum: self.maybe_f64(),
                            scale: self.int32(),
                            zero_count: self.0.random(),
                            positive: buckets(self),
                            negative: buckets(self),
                            flags: self.small(),
                            exemplars: self.exemplars(),
                            min: self.maybe_f64(),
                            max: self.maybe_f64(),
                            zero_threshold: self.0.random(),
                        }
                    })
                    .collect(),
                aggregation_temporality: self.int32(),
            }),
            _ => Data::Summary(metrics_v1::Summary {
                data_points: (0..n)
                    .map(|_| metrics_v1::SummaryDataPoint {
                        attributes: self.attrs(0, 4),
                        start_time_unix_nano: self.0.random(),
                        time_unix_nano: self.0.random(),
                        count: self.0.random(),
                        sum: self.0.random(),
                        quantile_values: (0..self.0.random_range(0..4))
                            .map(|_| metrics_v1::summary_data_point::ValueAtQuantile {
                                quantile: self.0.random(),
                                value: self.0.random(),
                            })
                            .collect(),
                        flags: self.small(),
                    })
                    .collect(),
            }),
        })
    }

    pub(crate) fn metrics(&mut self) -> Vec<metrics_v1::ResourceMetrics> {
        (0..self.0.random_range(0..4))
            .map(|_| metrics_v1::ResourceMetrics {
                resource: self.resource(),
                scope_metrics: (0..self.0.random_range(0..4))
                    .map(|_| metrics_v1::ScopeMetrics {
                        scope: self.scope(),
                        metrics: (0..self.0.random_range(0..5))
                            .map(|_| metrics_v1::Metric {
                                name: self.text(),
                                description: self.text(),
                                unit: self.text(),
                                metadata: self.attrs(0, 2),
                                data: self.metric_data(),
                            })
                            .collect(),
                        schema_url: self.text(),
                    })
                    .collect(),
                schema_url: self.text(),
            })
            .collect()
    }
}

#[test]
fn random_traces_encode_byte_for_byte_as_prost_does() {
    let mut g = Gen(StdRng::seed_from_u64(7));
    for _ in 0..300 {
        let v = g.traces();
        assert_traces_match(v);
    }
}

#[test]
fn random_logs_encode_byte_for_byte_as_prost_does() {
    let mut g = Gen(StdRng::seed_from_u64(11));
    for _ in 0..300 {
        let v = g.logs();
        assert_logs_match(v);
    }
}

#[test]
fn empty_and_default_messages_match() {
    assert_traces_match(vec![]);
    assert_traces_match(vec![ResourceSpans::default()]);
    assert_traces_match(vec![ResourceSpans {
        resource: Some(Resource::default()),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope::default()),
            spans: vec![Span {
                status: Some(Status::default()),
                attributes: vec![
                    KeyValue::default(),
                    KeyValue {
                        key: String::new(),
                        value: Some(AnyValue::default()),
                        key_strindex: 0,
                    },
                ],
                events: vec![span::Event::default()],
                links: vec![span::Link::default()],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }]);
    assert_logs_match(vec![ResourceLogs {
        resource: None,
        scope_logs: vec![ScopeLogs {
            scope: None,
            log_records: vec![LogRecord {
                body: Some(AnyValue::default()),
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }]);
}

/// Length prefixes at the edges of each varint width, below and above every guess.
#[test]
fn length_prefixes_at_every_width_edge() {
    for len in [
        0usize, 1, 123, 124, 125, 126, 127, 128, 16_380, 16_383, 16_384, 2_097_151, 2_097_152,
    ] {
        let s = "x".repeat(len);
        let kv = KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.clone())),
            }),
            key_strindex: 0,
        };
        assert_traces_match(vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv.clone()],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span {
                    name: s,
                    attributes: vec![kv],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }]);
    }
}

/// A group bigger than 2 MiB: the four-byte guess is exact, nothing moves.
#[test]
fn a_large_batch_matches() {
    let mut g = Gen(StdRng::seed_from_u64(3));
    let spans: Vec<Span> = (0..4000).map(|_| g.span()).collect();
    let v = vec![ResourceSpans {
        resource: g.resource(),
        scope_spans: vec![ScopeSpans {
            scope: g.scope(),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }];
    assert!(prost_traces(&v).len() > 2_097_152);
    assert_traces_match(v);
}

/// Real spans: the aws/spans fixtures converted, grouped and encoded.
#[test]
fn fixture_spans_match() {
    let dir = format!("{}/tests/fixtures/aws-spans", env!("CARGO_MANIFEST_DIR"));
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Ok(r) = crate::convert::aws_spans::span_from_str(line) {
                    records.push(r);
                }
            }
        }
    }
    assert!(records.len() > 10, "fixtures hold spans");
    assert_traces_match(crate::convert::aws_spans::group(records));
}

#[test]
fn metrics_use_prosts_encoding() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
    let v = vec![ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![Metric {
                name: "m".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let expected = ExportMetricsServiceRequest {
        resource_metrics: v.clone(),
    }
    .encode_to_vec();
    assert_eq!(ours(&Telemetry::Metrics(v)), expected);
}
