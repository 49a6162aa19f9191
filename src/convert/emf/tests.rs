use super::*;
use crate::signal::string_attribute;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point, ExponentialHistogram, Gauge, Histogram, Metric,
    NumberDataPoint, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value as J;

const SEC: u64 = 1_000_000_000;
const SINCE: u64 = 1_800_000_000 * SEC;

fn rm(metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![
                string_attribute("service.name", "travel-agent"),
                string_attribute("service.namespace", "agents"),
                string_attribute("k8s.pod.name", "pod-1"),
            ],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "spanwire.agentmetrics".into(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn point(
    attrs: &[(&str, &str)],
    start: u64,
    t: u64,
    v: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| string_attribute(k, *v)).collect(),
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(v),
        ..Default::default()
    }
}

fn counter(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn opts() -> Options {
    Options {
        storage_resolution: 60,
        ..Default::default()
    }
}

fn deltas() -> Deltas {
    Deltas::new(SINCE, 600 * SEC, 10_000)
}

/// Checks one event against the EMF specification and returns it parsed.
fn check(message: &str) -> J {
    assert!(message.len() <= MAX_EVENT_BYTES);
    let v: J = serde_json::from_str(message).expect("an event is JSON");
    let aws = &v["_aws"];
    assert!(aws["Timestamp"].is_u64());
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    let mut metric_count = 0;
    for d in directives {
        let ns = d["Namespace"].as_str().expect("namespace");
        assert!(!ns.is_empty() && ns.len() <= 255);
        for set in d["Dimensions"].as_array().expect("dimensions") {
            let set = set.as_array().expect("a set");
            assert!(set.len() <= MAX_DIMENSIONS_PER_SET);
            for k in set {
                let k = k.as_str().expect("a key");
                assert!(v[k].is_string(), "dimension {k} is a string member");
            }
        }
        let metrics = d["Metrics"].as_array().expect("metrics");
        assert!(metrics.len() <= MAX_METRICS_PER_DIRECTIVE);
        metric_count += metrics.len();
        for m in metrics {
            let name = m["Name"].as_str().expect("name");
            let val = &v[name];
            assert!(
                val.is_number() || val.get("Values").is_some() && val.get("Count").is_some(),
                "metric {name} has a value: {val}"
            );
        }
    }
    assert!(metric_count <= MAX_METRICS_PER_DIRECTIVE);
    v
}

fn events(c: &Converted) -> Vec<J> {
    c.groups
        .iter()
        .flat_map(|g| g.events.iter().map(|e| check(&e.message)))
        .collect()
}

use number_data_point::Value::{AsDouble, AsInt};

#[test]
fn cumulative_counters_become_deltas_with_resets() {
    let mut d = deltas();
    let o = opts();
    let attrs = [("gen_ai.agent.name", "travel")];
    let start = SINCE + SEC; // started after `since`: first value is whole
    let old_start = SINCE - 60 * SEC; // started before: baseline only
    let step = |d: &mut Deltas, t: u64, a: i64, b: i64, a_start: u64| {
        let batch = vec![rm(vec![
            counter(
                "agent.invocations",
                "{invocation}",
                vec![point(&attrs, a_start, t, AsInt(a))],
            ),
            counter(
                "old.counter",
                "1",
                vec![point(&attrs, old_start, t, AsInt(b))],
            ),
        ])];
        let c = convert(&batch, &o, d, t);
        let ev = events(&c);
        let get = |name: &str| ev.iter().find_map(|e| e.get(name).and_then(J::as_i64));
        (get("agent.invocations"), get("old.counter"), c.stats)
    };
    let (a, b, s) = step(&mut d, SINCE + 10 * SEC, 5, 100, start);
    assert_eq!((a, b), (Some(5), None));
    assert_eq!(s.baselines, 1);
    let (a, b, _) = step(&mut d, SINCE + 20 * SEC, 12, 130, start);
    assert_eq!((a, b), (Some(7), Some(30)));
    // The counter went down: a restart; its new value is all new.
    let (a, _, s) = step(&mut d, SINCE + 30 * SEC, 3, 130, start);
    assert_eq!(a, Some(3));
    assert_eq!(s.resets, 1);
    let (a, b, _) = step(&mut d, SINCE + 40 * SEC, 4, 130, start);
    assert_eq!((a, b), (Some(1), Some(0)));
    // Start time moved (restart between reports, value already above the old one).
    let (a, _, s) = step(&mut d, SINCE + 50 * SEC, 50, 130, start + 45 * SEC);
    assert_eq!(a, Some(50));
    assert_eq!(s.resets, 1);
    assert_eq!(d.len(), 2);
}

#[test]
fn delta_sums_gauges_and_updown_counters_pass_through() {
    let mut d = deltas();
    let t = SINCE + SEC;
    let batch = vec![rm(vec![
        gauge("queue.depth", vec![point(&[], 0, t, AsDouble(2.5))]),
        Metric {
            name: "requests".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![point(&[], 0, t, AsInt(9))],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "sessions.open".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![point(&[], 0, t, AsInt(-3))],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: false,
            })),
            ..Default::default()
        },
    ])];
    let c = convert(&batch, &opts(), &mut d, t);
    let ev = events(&c);
    assert_eq!(ev.len(), 1, "same time and labels share an event");
    assert_eq!(ev[0]["queue.depth"], 2.5);
    assert_eq!(ev[0]["requests"], 9);
    assert_eq!(ev[0]["sessions.open"], -3);
    assert_eq!(ev[0]["_aws"]["Timestamp"], (t / 1_000_000) as i64);
    assert_eq!(
        ev[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "agents/travel-agent"
    );
    assert_eq!(c.stats.values, 3);
    assert!(d.is_empty(), "nothing cumulative-monotonic to remember");
}

#[test]
fn dimension_rollup_and_units() {
    let t = SINCE + SEC;
    let attrs = [("agent", "a"), ("model", "m"), ("empty", "")];
    let batch = vec![rm(vec![Metric {
        name: "agent.duration".into(),
        unit: "ms".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![point(&attrs, 0, t, AsInt(1))],
        })),
        ..Default::default()
    }])];
    let sets = |rollup| {
        let o = Options { rollup, ..opts() };
        let c = convert(&batch, &o, &mut deltas(), t);
        let ev = events(&c);
        let d = &ev[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(ev[0]["empty"], "", "an empty label stays a field");
        serde_json::to_string(&d["Dimensions"]).unwrap()
    };
    assert_eq!(
        sets(DimensionRollup::ZeroAndSingleDimensionRollup),
        r#"[["agent","model"],[],["agent"],["model"]]"#
    );
    assert_eq!(
        sets(DimensionRollup::SingleDimensionRollupOnly),
        r#"[["agent","model"],["agent"],["model"]]"#
    );
    assert_eq!(
        sets(DimensionRollup::NoDimensionRollup),
        r#"[["agent","model"]]"#
    );
    assert_eq!(cloudwatch_unit("{token}"), Some("Count"));
    assert_eq!(cloudwatch_unit("By"), Some("Bytes"));
    assert_eq!(cloudwatch_unit("1"), None);
}

#[test]
fn at_most_100_metrics_per_event_and_30_dimensions_per_set() {
    let t = SINCE + SEC;
    let labels: Vec<(String, String)> = (0..40)
        .map(|i| (format!("l{i:02}"), format!("v{i}")))
        .collect();
    let attrs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metrics: Vec<Metric> = (0..250)
        .map(|i| gauge(&format!("m{i:03}"), vec![point(&attrs, 0, t, AsInt(i))]))
        .collect();
    let batch = vec![rm(metrics)];
    let c = convert(&batch, &opts(), &mut deltas(), t);
    let ev = events(&c);
    assert_eq!(ev.len(), 3);
    let mut names = std::collections::BTreeSet::new();
    for e in &ev {
        let d = &e["_aws"]["CloudWatchMetrics"][0];
        let sets = d["Dimensions"].as_array().unwrap();
        // The 40-label set is left out; the empty set and 40 singles stay.
        assert_eq!(sets.len(), 41);
        for m in d["Metrics"].as_array().unwrap() {
            names.insert(m["Name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(names.len(), 250, "every metric in exactly one event");
    assert_eq!(c.stats.values, 250);
    assert_eq!(c.stats.dimension_sets_dropped, 250);
}

#[test]
fn metric_declarations_filter_and_choose_dimensions() {
    let t = SINCE + SEC;
    let decl = MetricDeclaration {
        dimensions: vec![
            vec!["agent".into()],
            vec!["agent".into(), "model".into()],
            vec!["tool".into()], // not on these points: not used
        ],
        metric_name_selectors: vec![Regex::new("^agent\\..*$").unwrap()],
        label_matchers: vec![LabelMatcher {
            label_names: vec!["agent".into(), "model".into()],
            separator: ";".into(),
            regex: Regex::new("^travel;.*$").unwrap(),
        }],
    };
    let o = Options {
        declarations: vec![decl],
        rollup: DimensionRollup::NoDimensionRollup,
        ..opts()
    };
    let a = [("agent", "travel"), ("model", "claude")];
    let b = [("agent", "hotel"), ("model", "claude")];
    let batch = vec![rm(vec![
        gauge(
            "agent.tokens",
            vec![point(&a, 0, t, AsInt(1)), point(&b, 0, t, AsInt(2))],
        ),
        gauge("span.calls", vec![point(&a, 0, t, AsInt(3))]),
    ])];
    let c = convert(&batch, &o, &mut deltas(), t);
    let ev = events(&c);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["agent.tokens"], 1);
    assert_eq!(
        serde_json::to_string(&ev[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]).unwrap(),
        r#"[["agent"],["agent","model"]]"#
    );
    assert_eq!(
        c.stats.filtered, 2,
        "hotel fails the label matcher; span.calls the selector"
    );
}

#[test]
fn histograms_become_values_and_counts_and_deltas() {
    let bounds = vec![10.0, 100.0, 1000.0];
    let h = |count: u64, sum: f64, buckets: Vec<u64>, t: u64| {
        vec![rm(vec![Metric {
            name: "agent.duration".into(),
            unit: "ms".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: SINCE + 1,
                    time_unix_nano: t,
                    count,
                    sum: Some(sum),
                    bucket_counts: buckets,
                    explicit_bounds: bounds.clone(),
                    min: Some(3.0),
                    max: Some(4000.0),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        }])]
    };
    let mut d = deltas();
    let t1 = SINCE + 10 * SEC;
    let b1 = h(4, 4093.0, vec![1, 1, 1, 1], t1);
    let c = convert(&b1, &opts(), &mut d, t1);
    let ev = events(&c);
    let v = &ev[0]["agent.duration"];
    assert_eq!(v["Count"], 4);
    assert_eq!(v["Sum"], 4093);
    assert_eq!(v["Min"], 3);
    assert_eq!(v["Max"], 4000);
    assert_eq!(
        serde_json::to_string(&v["Values"]).unwrap(),
        "[10,55,550,1000]"
    );
    assert_eq!(serde_json::to_string(&v["Counts"]).unwrap(), "[1,1,1,1]");
    // Two more in (10, 100]: the delta holds only them.
    let t2 = SINCE + 20 * SEC;
    let b2 = h(6, 4193.0, vec![1, 3, 1, 1], t2);
    let c = convert(&b2, &opts(), &mut d, t2);
    let v = &events(&c)[0]["agent.duration"];
    assert_eq!(v["Count"], 2);
    assert_eq!(v["Sum"], 100);
    assert_eq!(v["Min"], 10);
    assert_eq!(v["Max"], 100);
    assert_eq!(serde_json::to_string(&v["Values"]).unwrap(), "[55]");
    assert_eq!(serde_json::to_string(&v["Counts"]).unwrap(), "[2]");
    // Nothing new: no value at all (CloudWatch takes no empty statistic set).
    let t3 = SINCE + 30 * SEC;
    let b3 = h(6, 4193.0, vec![1, 3, 1, 1], t3);
    let c = convert(&b3, &opts(), &mut d, t3);
    assert!(events(&c).is_empty());
    assert_eq!(c.stats.empty, 1);
}

#[test]
fn exponential_histograms_across_a_scale_change() {
    let p = |scale: i32, offset: i32, counts: Vec<u64>, t: u64| {
        let count = counts.iter().sum();
        vec![rm(vec![Metric {
            name: "latency".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    start_time_unix_nano: SINCE + 1,
                    time_unix_nano: t,
                    count,
                    sum: Some(count as f64 * 3.0),
                    scale,
                    positive: Some(exponential_histogram_data_point::Buckets {
                        offset,
                        bucket_counts: counts,
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        }])]
    };
    let mut d = deltas();
    // scale 1: base √2; buckets 2..=5 cover (2, 4·√2].
    let b4 = p(1, 2, vec![1, 2, 3, 4], SINCE + SEC);
    let c = convert(&b4, &opts(), &mut d, SINCE + SEC);
    let v = &events(&c)[0]["latency"];
    assert_eq!(v["Count"], 10);
    assert_eq!(v["Values"].as_array().unwrap().len(), 4);
    // Downscaled to scale 0 (base 2), with 5 more in the bucket (4, 8]:
    // old at scale 0 is {1: 1+2, 2: 3+4}; new is {1: 3, 2: 12}.
    let b5 = p(0, 1, vec![3, 12], SINCE + 2 * SEC);
    let c = convert(&b5, &opts(), &mut d, SINCE + 2 * SEC);
    let v = &events(&c)[0]["latency"];
    assert_eq!(v["Count"], 5);
    assert_eq!(serde_json::to_string(&v["Values"]).unwrap(), "[6]");
    assert_eq!(serde_json::to_string(&v["Counts"]).unwrap(), "[5]");
    assert_eq!(c.stats.resets, 0);
}

#[test]
fn bad_values_and_name_clashes_are_dropped_and_counted() {
    let t = SINCE + SEC;
    let batch = vec![rm(vec![
        gauge("nan", vec![point(&[], 0, t, AsDouble(f64::NAN))]),
        gauge("inf", vec![point(&[], 0, t, AsDouble(f64::INFINITY))]),
        gauge("agent", vec![point(&[("agent", "x")], 0, t, AsInt(1))]),
        gauge("ok", vec![point(&[], 0, t, AsDouble(1e300))]),
    ])];
    let c = convert(&batch, &opts(), &mut deltas(), t);
    let ev = events(&c);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["ok"], 1e300);
    assert_eq!(c.stats.non_finite, 2);
    assert_eq!(c.stats.name_collisions, 1);
    assert_eq!(c.stats.dropped(), 3);
}

#[test]
fn oversized_events_are_split() {
    let t = SINCE + SEC;
    let labels: Vec<(String, String)> = (0..250)
        .map(|i| (format!("label{i:03}"), "v".repeat(1500)))
        .collect();
    let attrs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metrics: Vec<Metric> = (0..100)
        .map(|i| {
            gauge(
                &format!("{}{i:03}", "n".repeat(250)),
                vec![point(&attrs, 0, t, AsInt(i))],
            )
        })
        .collect();
    let batch = vec![rm(metrics)];
    let o = Options {
        rollup: DimensionRollup::NoDimensionRollup,
        ..opts()
    };
    let c = convert(&batch, &o, &mut deltas(), t);
    let ev = events(&c);
    assert!(ev.len() >= 2, "one event would be over 256 KiB");
    let total: usize = ev
        .iter()
        .map(|e| {
            e["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 100);
    // Dimension values are cut to 1024 characters.
    assert_eq!(ev[0]["label000"].as_str().unwrap().len(), 1024);
    assert_eq!(c.stats.too_large, 0);
}

#[test]
fn namespaces() {
    assert_eq!(sanitize_namespace("my app/agents"), "my app/agents");
    assert_eq!(sanitize_namespace("naïve\u{1}"), "na_ve_");
    assert_eq!(sanitize_namespace("AWS/Bedrock"), "_AWS/Bedrock");
    assert_eq!(sanitize_namespace("  "), "default");
    assert_eq!(sanitize_namespace(&"x".repeat(300)).len(), 255);
    assert_eq!(resource_namespace(&[]), "default");
}

#[test]
fn deltas_forget_stale_series_and_stay_bounded() {
    let mut d = Deltas::new(SINCE, 60 * SEC, 100);
    for i in 0..500 {
        let batch = vec![rm(vec![counter(
            "c",
            "1",
            vec![point(
                &[("i", &i.to_string())],
                SINCE + 1,
                SINCE + SEC,
                AsInt(1),
            )],
        )])];
        convert(&batch, &opts(), &mut d, SINCE + SEC);
    }
    assert!(d.len() <= 200, "{} series kept", d.len());
    let batch = vec![rm(vec![counter(
        "c",
        "1",
        vec![point(&[], SINCE + 1, SINCE + 500 * SEC, AsInt(1))],
    )])];
    convert(&batch, &opts(), &mut d, SINCE + 500 * SEC);
    assert_eq!(d.len(), 1, "stale series are forgotten after the TTL");
}

#[test]
fn out_of_order_batches_lose_nothing() {
    // Batches 10 → 14 → 12 → 20 arrive as 10, 14, 12, 20 (12 was late).
    let mut d = deltas();
    let start = SINCE + 1;
    let mut sent = 0;
    for (i, v) in [(1u64, 10i64), (3, 14), (2, 12), (4, 20)] {
        let t = SINCE + i * SEC;
        let batch = vec![rm(vec![counter(
            "c",
            "1",
            vec![point(&[], start, t, AsInt(v))],
        )])];
        let c = convert(&batch, &opts(), &mut d, t);
        sent += events(&c)
            .iter()
            .map(|e| e["c"].as_i64().unwrap())
            .sum::<i64>();
        if v == 12 {
            assert_eq!(c.stats.out_of_order, 1);
            assert_eq!(c.stats.resets, 0, "a late point is not a reset");
        }
    }
    assert_eq!(sent, 20, "the deltas sum to the last cumulative value");
}

#[test]
fn namespace_placeholders_are_filled_from_the_resource() {
    let t = SINCE + SEC;
    let with = |attrs: Vec<KeyValue>| {
        let mut r = rm(vec![gauge("g", vec![point(&[], 0, t, AsDouble(1.0))])]);
        r.resource = Some(Resource {
            attributes: attrs,
            ..Default::default()
        });
        r
    };
    let o = Options {
        namespace: Some("ECS/AWSOTel/{TaskDefinitionFamily}".into()),
        ..opts()
    };
    for (attrs, want) in [
        // The name a `resource` processor sets (ADOT's ECS configs) ...
        (
            vec![
                string_attribute("TaskDefinitionFamily", "web"),
                string_attribute("aws.ecs.task.family", "other"),
            ],
            "ECS/AWSOTel/web",
        ),
        // ... else the OTel attribute; characters a namespace may not hold become `_`.
        (
            vec![string_attribute("aws.ecs.task.family", "api*v2")],
            "ECS/AWSOTel/api_v2",
        ),
        (vec![], "ECS/AWSOTel/undefined"),
    ] {
        let mut d = deltas();
        let batch = [with(attrs)];
        let c = convert(&batch, &o, &mut d, t);
        let ev = events(&c);
        assert_eq!(ev[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], want);
    }
}
