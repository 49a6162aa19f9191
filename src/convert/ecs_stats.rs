//! ECS task metadata v4 (`/task` and `/task/stats`) → OTLP metrics, with
//! the names, units and resource attributes of the Collector's
//! `awsecscontainermetrics` receiver: one resource for the task
//! (`ecs.task.*`) and one per container (`container.*`).
//!
//! Memory: `usage`, `usage.max`, `usage.limit` (bytes), `utilized` (usage
//! less page cache) and `reserved` (the task's or container's limit), in MiB.
//! CPU: `usage.total`, `usage.kernelmode`, `usage.usermode`, `usage.system`
//! (ns), `cores`, `onlines`, `utilized` (percent of one vCPU × online CPUs
//! over the last read), `usage.vcpu`, `reserved` (vCPU). Network: `io.usage.*`
//! (per-direction bytes, packets, errors, dropped) and `rate.rx` / `rate.tx`
//! (bytes/s). Storage: `read_bytes`, `write_bytes`. Containers also get
//! `container.duration` (seconds since start, or until finish).

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;

use crate::signal::string_attribute;

const MIB: f64 = 1_048_576.0;

/// One container's numbers, summed into the task's.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    mem_usage: f64,
    mem_max: f64,
    mem_limit: f64,
    mem_utilized_mib: f64,
    mem_reserved_mib: f64,
    cpu_total: f64,
    cpu_kernel: f64,
    cpu_user: f64,
    cpu_system: f64,
    cores: f64,
    onlines: f64,
    cpu_utilized: f64,
    cpu_reserved: f64,
    rx_bytes: f64,
    rx_packets: f64,
    rx_errors: f64,
    rx_dropped: f64,
    tx_bytes: f64,
    tx_packets: f64,
    tx_errors: f64,
    tx_dropped: f64,
    rate_rx: f64,
    rate_tx: f64,
    read_bytes: f64,
    write_bytes: f64,
}

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path).and_then(Value::as_f64).unwrap_or(0.0)
}

fn sample(stats: &Value, container: &Value) -> Sample {
    let mut s = Sample {
        mem_usage: num(stats, "/memory_stats/usage"),
        mem_max: num(stats, "/memory_stats/max_usage"),
        mem_limit: num(stats, "/memory_stats/limit"),
        cpu_total: num(stats, "/cpu_stats/cpu_usage/total_usage"),
        cpu_kernel: num(stats, "/cpu_stats/cpu_usage/usage_in_kernelmode"),
        cpu_user: num(stats, "/cpu_stats/cpu_usage/usage_in_usermode"),
        cpu_system: num(stats, "/cpu_stats/system_cpu_usage"),
        onlines: num(stats, "/cpu_stats/online_cpus"),
        ..Sample::default()
    };
    let cache = num(stats, "/memory_stats/stats/cache");
    s.mem_utilized_mib = ((s.mem_usage - cache).max(0.0)) / MIB;
    s.mem_reserved_mib = num(container, "/Limits/Memory");
    s.cores = stats
        .pointer("/cpu_stats/cpu_usage/percpu_usage")
        .and_then(Value::as_array)
        .map_or(s.onlines, |a| a.len() as f64);
    let cpu_delta = s.cpu_total - num(stats, "/precpu_stats/cpu_usage/total_usage");
    let sys_delta = s.cpu_system - num(stats, "/precpu_stats/system_cpu_usage");
    if cpu_delta > 0.0 && sys_delta > 0.0 {
        s.cpu_utilized = cpu_delta / sys_delta * s.onlines.max(1.0) * 100.0;
    }
    s.cpu_reserved = num(container, "/Limits/CPU") / 1024.0;
    if let Some(nets) = stats.get("networks").and_then(Value::as_object) {
        for n in nets.values() {
            s.rx_bytes += num(n, "/rx_bytes");
            s.rx_packets += num(n, "/rx_packets");
            s.rx_errors += num(n, "/rx_errors");
            s.rx_dropped += num(n, "/rx_dropped");
            s.tx_bytes += num(n, "/tx_bytes");
            s.tx_packets += num(n, "/tx_packets");
            s.tx_errors += num(n, "/tx_errors");
            s.tx_dropped += num(n, "/tx_dropped");
        }
    }
    s.rate_rx = num(stats, "/network_rate_stats/rx_bytes_per_sec");
    s.rate_tx = num(stats, "/network_rate_stats/tx_bytes_per_sec");
    if let Some(io) = stats
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(Value::as_array)
    {
        for e in io {
            match e.get("op").and_then(Value::as_str) {
                Some("Read" | "read") => s.read_bytes += num(e, "/value"),
                Some("Write" | "write") => s.write_bytes += num(e, "/value"),
                _ => {}
            }
        }
    }
    s
}

fn gauge(name: &str, unit: &str, v: f64, whole: bool, t: u64) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: t,
                value: Some(if whole {
                    number_data_point::Value::AsInt(v as i64)
                } else {
                    number_data_point::Value::AsDouble(v)
                }),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn metrics(prefix: &str, s: &Sample, t: u64) -> Vec<Metric> {
    let m = |name: &str, unit: &str, v: f64, whole: bool| {
        gauge(&format!("{prefix}.{name}"), unit, v, whole, t)
    };
    vec![
        m("memory.usage", "Bytes", s.mem_usage, true),
        m("memory.usage.max", "Bytes", s.mem_max, true),
        m("memory.usage.limit", "Bytes", s.mem_limit, true),
        m("memory.utilized", "Megabytes", s.mem_utilized_mib, true),
        m("memory.reserved", "Megabytes", s.mem_reserved_mib, true),
        m("cpu.usage.total", "Nanoseconds", s.cpu_total, true),
        m("cpu.usage.kernelmode", "Nanoseconds", s.cpu_kernel, true),
        m("cpu.usage.usermode", "Nanoseconds", s.cpu_user, true),
        m("cpu.usage.system", "Nanoseconds", s.cpu_system, true),
        m("cpu.usage.vcpu", "vCPU", s.cpu_utilized / 100.0, false),
        m("cpu.cores", "Count", s.cores, true),
        m("cpu.onlines", "Count", s.onlines, true),
        m("cpu.utilized", "Percent", s.cpu_utilized, false),
        m("cpu.reserved", "vCPU", s.cpu_reserved, false),
        m("network.rate.rx", "Bytes/Second", s.rate_rx, false),
        m("network.rate.tx", "Bytes/Second", s.rate_tx, false),
        m("network.io.usage.rx_bytes", "Bytes", s.rx_bytes, true),
        m("network.io.usage.rx_packets", "Count", s.rx_packets, true),
        m("network.io.usage.rx_errors", "Count", s.rx_errors, true),
        m("network.io.usage.rx_dropped", "Count", s.rx_dropped, true),
        m("network.io.usage.tx_bytes", "Bytes", s.tx_bytes, true),
        m("network.io.usage.tx_packets", "Count", s.tx_packets, true),
        m("network.io.usage.tx_errors", "Count", s.tx_errors, true),
        m("network.io.usage.tx_dropped", "Count", s.tx_dropped, true),
        m("storage.read_bytes", "Bytes", s.read_bytes, true),
        m("storage.write_bytes", "Bytes", s.write_bytes, true),
    ]
}

fn rfc3339_ns(v: Option<&str>) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(v?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as u64)
}

/// The task's resource attributes, as the Collector receiver names them.
fn task_attributes(task: &Value) -> Vec<KeyValue> {
    let s = |k: &str| {
        task.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    let arn = s("TaskARN").unwrap_or_default();
    let parts: Vec<&str> = arn.split(':').collect();
    let (region, account) = match parts.as_slice() {
        [_, _, _, r, a, ..] => (*r, *a),
        _ => ("", ""),
    };
    let cluster = s("Cluster").unwrap_or_default();
    let cluster_name = cluster.rsplit('/').next().unwrap_or(cluster);
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push(string_attribute(k, v));
        }
    };
    put("aws.ecs.cluster.name", cluster_name);
    put("aws.ecs.task.arn", arn);
    put(
        "aws.ecs.task.id",
        arn.rsplit('/').next().unwrap_or_default(),
    );
    put("aws.ecs.task.family", s("Family").unwrap_or_default());
    put("aws.ecs.task.version", s("Revision").unwrap_or_default());
    put(
        "aws.ecs.service.name",
        s("ServiceName").unwrap_or("undefined"),
    );
    put("cloud.zone", s("AvailabilityZone").unwrap_or_default());
    put("cloud.region", region);
    put("cloud.account.id", account);
    put(
        "aws.ecs.task.known_status",
        s("KnownStatus").unwrap_or_default(),
    );
    put(
        "aws.ecs.task.pull_started_at",
        s("PullStartedAt").unwrap_or_default(),
    );
    put(
        "aws.ecs.task.pull_stopped_at",
        s("PullStoppedAt").unwrap_or_default(),
    );
    put(
        "aws.ecs.task.launch_type",
        &s("LaunchType").unwrap_or_default().to_ascii_lowercase(),
    );
    out
}

fn container_attributes(c: &Value) -> Vec<KeyValue> {
    let s = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut out = Vec::new();
    let image = s("Image").unwrap_or_default();
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, "latest"),
    };
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push(string_attribute(k, v));
        }
    };
    put("container.name", s("Name").unwrap_or_default());
    put("container.id", s("DockerId").unwrap_or_default());
    put("aws.ecs.docker.name", s("DockerName").unwrap_or_default());
    put("container.image.name", name);
    put("container.image.tag", tag);
    put(
        "aws.ecs.container.image.id",
        s("ImageID").unwrap_or_default(),
    );
    put(
        "aws.ecs.container.know_status",
        s("KnownStatus").unwrap_or_default(),
    );
    put(
        "aws.ecs.container.created_at",
        s("CreatedAt").unwrap_or_default(),
    );
    put(
        "aws.ecs.container.started_at",
        s("StartedAt").unwrap_or_default(),
    );
    put(
        "aws.ecs.container.finished_at",
        s("FinishedAt").unwrap_or_default(),
    );
    if let Some(code) = c.get("ExitCode").and_then(Value::as_i64) {
        put("aws.ecs.container.exit_code", &code.to_string());
    }
    out
}

/// The metrics of one read: `task` is `/task`, `stats` is `/task/stats`
/// (Docker stats by container id), `now_ns` the read's time.
pub fn convert(task: &Value, stats: &Value, now_ns: u64) -> Vec<ResourceMetrics> {
    let scope = || {
        Some(InstrumentationScope {
            name: "spanwire.awsecscontainermetrics".into(),
            ..Default::default()
        })
    };
    let task_attrs = task_attributes(task);
    let mut out = Vec::new();
    let mut sum = Sample::default();
    let containers = task.get("Containers").and_then(Value::as_array);
    for c in containers.into_iter().flatten() {
        let Some(id) = c.get("DockerId").and_then(Value::as_str) else {
            continue;
        };
        let Some(st) = stats.get(id).filter(|s| !s.is_null()) else {
            continue;
        };
        let s = sample(st, c);
        for (total, part) in [
            (&mut sum.mem_usage, s.mem_usage),
            (&mut sum.mem_max, s.mem_max),
            (&mut sum.mem_limit, s.mem_limit),
            (&mut sum.mem_utilized_mib, s.mem_utilized_mib),
            (&mut sum.mem_reserved_mib, s.mem_reserved_mib),
            (&mut sum.cpu_total, s.cpu_total),
            (&mut sum.cpu_kernel, s.cpu_kernel),
            (&mut sum.cpu_user, s.cpu_user),
            (&mut sum.cpu_utilized, s.cpu_utilized),
            (&mut sum.cpu_reserved, s.cpu_reserved),
            (&mut sum.rx_bytes, s.rx_bytes),
            (&mut sum.rx_packets, s.rx_packets),
            (&mut sum.rx_errors, s.rx_errors),
            (&mut sum.rx_dropped, s.rx_dropped),
            (&mut sum.tx_bytes, s.tx_bytes),
            (&mut sum.tx_packets, s.tx_packets),
            (&mut sum.tx_errors, s.tx_errors),
            (&mut sum.tx_dropped, s.tx_dropped),
            (&mut sum.rate_rx, s.rate_rx),
            (&mut sum.rate_tx, s.rate_tx),
            (&mut sum.read_bytes, s.read_bytes),
            (&mut sum.write_bytes, s.write_bytes),
        ] {
            *total += part;
        }
        sum.cpu_system = sum.cpu_system.max(s.cpu_system);
        sum.cores = sum.cores.max(s.cores);
        sum.onlines = sum.onlines.max(s.onlines);
        let mut ms = metrics("container", &s, now_ns);
        let started = rfc3339_ns(c.get("StartedAt").and_then(Value::as_str));
        let until = rfc3339_ns(c.get("FinishedAt").and_then(Value::as_str)).unwrap_or(now_ns);
        if let Some(start) = started {
            let secs = until.saturating_sub(start) as f64 / 1e9;
            ms.push(gauge("container.duration", "Seconds", secs, false, now_ns));
        }
        let mut attrs = task_attrs.clone();
        attrs.extend(container_attributes(c));
        out.push(ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: ms,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    // The task's own limits, when set, are its reservation.
    let task_mem = num(task, "/Limits/Memory");
    if task_mem > 0.0 {
        sum.mem_reserved_mib = task_mem;
    }
    let task_cpu = num(task, "/Limits/CPU");
    if task_cpu > 0.0 {
        sum.cpu_reserved = task_cpu;
    }
    if !out.is_empty() {
        out.insert(
            0,
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: task_attrs,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics: metrics("ecs.task", &sum, now_ns),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = format!(
            "{}/tests/fixtures/metadata/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    fn value(rm: &ResourceMetrics, name: &str) -> f64 {
        let m = rm.scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let Some(Data::Gauge(g)) = &m.data else {
            panic!()
        };
        match g.data_points[0].value {
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            Some(number_data_point::Value::AsDouble(d)) => d,
            None => f64::NAN,
        }
    }

    #[test]
    fn task_and_container_metrics_from_the_documented_answers() {
        let now = 1_796_378_700_000_000_000; // 2026-12-04T10:05:00Z
        let out = convert(
            &fixture("ecs-task-v4.json"),
            &fixture("ecs-task-stats-v4.json"),
            now,
        );
        assert_eq!(out.len(), 3, "the task and its two containers");
        let (task, agent, side) = (&out[0], &out[1], &out[2]);
        assert_eq!(value(agent, "container.memory.utilized"), 90.0);
        assert_eq!(value(agent, "container.memory.reserved"), 512.0);
        assert_eq!(value(agent, "container.cpu.utilized"), 20.0);
        assert_eq!(value(agent, "container.cpu.reserved"), 0.125);
        assert_eq!(value(agent, "container.storage.write_bytes"), 8192.0);
        assert_eq!(value(agent, "container.network.rate.rx"), 120.5);
        assert!((value(agent, "container.duration") - 298.947_761_746).abs() < 1e-6);
        assert_eq!(value(side, "container.memory.utilized"), 50.0);
        assert_eq!(value(task, "ecs.task.memory.utilized"), 140.0);
        assert_eq!(value(task, "ecs.task.memory.reserved"), 1024.0);
        assert_eq!(value(task, "ecs.task.cpu.utilized"), 22.0);
        assert_eq!(value(task, "ecs.task.cpu.reserved"), 0.25);
        assert_eq!(value(task, "ecs.task.storage.read_bytes"), 4096.0);
        assert_eq!(value(task, "ecs.task.storage.write_bytes"), 9216.0);
        assert_eq!(value(task, "ecs.task.network.rate.tx"), 100.25);
        let attrs = &task.resource.as_ref().unwrap().attributes;
        for (k, v) in [
            ("aws.ecs.cluster.name", "agents"),
            ("aws.ecs.task.id", "158d1c8083dd49d6b527399fd6414f5c"),
            ("aws.ecs.task.family", "agent-task"),
            ("aws.ecs.task.version", "7"),
            ("cloud.zone", "us-west-2b"),
            ("aws.ecs.task.launch_type", "ec2"),
            ("cloud.account.id", "111122223333"),
        ] {
            assert!(attrs.contains(&string_attribute(k, v)), "{k}: {attrs:?}");
        }
        let attrs = &agent.resource.as_ref().unwrap().attributes;
        assert!(attrs.contains(&string_attribute("container.name", "agent")));
        assert!(attrs.contains(&string_attribute("container.image.tag", "latest")));
        assert!(attrs.contains(&string_attribute("aws.ecs.task.family", "agent-task")));
    }
}
