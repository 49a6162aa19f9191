//! Processor `resourcedetection`: resource attributes of the place spanwire
//! runs in, detected once at start and stamped on every resource that passes.
//!
//! Detectors, as the Collector's (its keys and attribute names):
//! - `env`: `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-decoded);
//! - `system`: `host.name`, `os.type`, `host.id` (the machine id), `host.arch`;
//! - `ec2`: the instance identity document over IMDSv2 (token first):
//!   `cloud.*`, `host.id`, `host.type`, `host.image.id`, `host.name`, and
//!   instance tags matching `ec2.tags` (from IMDS instance tags);
//! - `ecs`: the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`):
//!   cluster, task ARN / family / revision / id, launch type, container, zone,
//!   log group and stream;
//! - `eks`: on Kubernetes (`KUBERNETES_SERVICE_HOST`) on EC2: `cloud.platform
//!   aws_eks`, and `k8s.cluster.name` from the instance tag `eks:cluster-name`;
//! - `lambda`: the Lambda runtime's environment (`AWS_LAMBDA_FUNCTION_NAME` …).
//!
//! All detectors run concurrently, bounded together by `timeout`; where two
//! set the same key, the one listed first wins. A detector that finds
//! nothing (not on EC2, no ECS endpoint) is skipped with a debug log. Data
//! that arrives before detection ends waits for it (at most `timeout`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use crate::component::{Factory, ProcessorContext, ProcessorFactory, Stage};
use crate::consumer::{Acks, BoxConsumer, ConsumeError, Consumer, StartError};
use crate::settings::de::DeError;
use crate::settings::types::duration;
use crate::signal::{attribute, string_attribute, Telemetry};

/// One detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    Env,
    /// The host: name, OS, machine id, architecture.
    System,
    /// EC2 instance metadata (IMDSv2).
    Ec2,
    /// ECS task metadata endpoint v4.
    Ecs,
    /// EKS (Kubernetes on EC2).
    Eks,
    /// The Lambda runtime environment.
    Lambda,
}

/// `system:` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Where `host.name` comes from; only `os` (the kernel's host name).
    #[serde(default = "default_hostname_sources")]
    pub hostname_sources: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            hostname_sources: default_hostname_sources(),
        }
    }
}

fn default_hostname_sources() -> Vec<String> {
    vec!["os".into()]
}

/// `ec2:` settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    /// Regular expressions: instance tags whose key matches one become
    /// `ec2.tag.<key>` (read from IMDS, which needs instance metadata tags
    /// allowed on the instance).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `processors.resourcedetection`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDetectionConfig {
    /// Detectors, in priority order.
    #[serde(default = "default_detectors")]
    pub detectors: Vec<Detector>,
    /// How long detection may take in all.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Whether detected values replace attributes the resource already has.
    #[serde(default = "default_true", rename = "override")]
    pub override_existing: bool,
    /// Only these detected keys are set (all when absent).
    #[serde(default)]
    pub attributes: Option<Vec<String>>,
    /// `system` detector settings.
    #[serde(default)]
    pub system: SystemConfig,
    /// `ec2` detector settings.
    #[serde(default)]
    pub ec2: Ec2Config,
}

fn default_detectors() -> Vec<Detector> {
    vec![Detector::Env]
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_true() -> bool {
    true
}

impl ResourceDetectionConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.detectors.is_empty() {
            return Err(DeError::custom("detectors: list at least one detector"));
        }
        if self.timeout.is_zero() {
            return Err(DeError::custom("timeout must be more than 0"));
        }
        for s in &self.system.hostname_sources {
            if s != "os" {
                return Err(DeError::custom(format!(
                    "system.hostname_sources: `{s}` is not supported; spanwire reads the host name from the OS (`os`)"
                )));
            }
        }
        for t in &self.ec2.tags {
            regex::Regex::new(t).map_err(|e| {
                DeError::custom(format!("ec2.tags: `{t}` is not a regular expression: {e}"))
            })?;
        }
        Ok(())
    }
}

/// The `resourcedetection` processor's factory.
pub struct ResourceDetectionFactory;

impl Factory for ResourceDetectionFactory {
    type Config = ResourceDetectionConfig;
    fn type_name(&self) -> &'static str {
        "resourcedetection"
    }
    fn validate(&self, config: &ResourceDetectionConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ProcessorFactory for ResourceDetectionFactory {
    fn build(
        &self,
        config: &ResourceDetectionConfig,
        ctx: ProcessorContext<'_>,
    ) -> Result<Stage, StartError> {
        let stage = Arc::new(DetectStage {
            config: config.clone(),
            name: ctx.name,
            detected: Arc::new(OnceCell::new()),
            next: ctx.next,
        });
        // Detect now, not at the first batch.
        let early = stage.clone();
        tokio::spawn(async move {
            early.detected().await;
        });
        Ok(Stage {
            input: stage,
            task: None,
        })
    }
}

/// The stage: waits for detection once, then stamps every batch.
struct DetectStage {
    config: ResourceDetectionConfig,
    name: String,
    detected: Arc<OnceCell<Vec<KeyValue>>>,
    next: BoxConsumer,
}

impl DetectStage {
    async fn detected(&self) -> &[KeyValue] {
        self.detected
            .get_or_init(|| async {
                let env = |k: &str| std::env::var(k).ok();
                let attrs = detect(&self.config, &env).await;
                tracing::info!(processor = %self.name, attributes = attrs.len(),
                    keys = %attrs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>().join(","),
                    "resource detected");
                attrs
            })
            .await
    }

    fn stamp(&self, attrs: &[KeyValue], resource: &mut Option<Resource>) {
        let res = resource.get_or_insert_with(Resource::default);
        for kv in attrs {
            match res.attributes.iter_mut().find(|a| a.key == kv.key) {
                Some(existing) if self.config.override_existing => {
                    existing.value = kv.value.clone();
                }
                Some(_) => {}
                None => res.attributes.push(kv.clone()),
            }
        }
    }
}

#[async_trait]
impl Consumer for DetectStage {
    async fn consume(&self, mut data: Telemetry, acks: Acks) -> Result<(), ConsumeError> {
        let attrs = self.detected().await;
        if !attrs.is_empty() {
            match &mut data {
                Telemetry::Traces(v) => v
                    .iter_mut()
                    .for_each(|r| self.stamp(attrs, &mut r.resource)),
                Telemetry::Metrics(v) => v
                    .iter_mut()
                    .for_each(|r| self.stamp(attrs, &mut r.resource)),
                Telemetry::Logs(v) => v
                    .iter_mut()
                    .for_each(|r| self.stamp(attrs, &mut r.resource)),
            }
        }
        self.next.consume(data, acks).await
    }
}

/// Runs the configured detectors (concurrently, within `timeout`) and
/// merges what they found: the first detector listed wins a key.
pub async fn detect(
    config: &ResourceDetectionConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Vec<KeyValue> {
    let runs = config.detectors.iter().map(|d| async move {
        let found = tokio::time::timeout(config.timeout, run(*d, config, env)).await;
        match found {
            Ok(Ok(attrs)) => attrs,
            Ok(Err(why)) => {
                tracing::debug!(detector = ?d, %why, "detector found nothing; skipped");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(detector = ?d, timeout = ?config.timeout, "detector timed out; skipped");
                Vec::new()
            }
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut out: Vec<KeyValue> = Vec::new();
    for kv in results.into_iter().flatten() {
        let wanted = config
            .attributes
            .as_ref()
            .is_none_or(|keep| keep.contains(&kv.key));
        if wanted && !out.iter().any(|o| o.key == kv.key) {
            out.push(kv);
        }
    }
    out
}

async fn run(
    d: Detector,
    config: &ResourceDetectionConfig,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Vec<KeyValue>, String> {
    match d {
        Detector::Env => env_attributes(env(ENV_VAR).as_deref().unwrap_or("")),
        Detector::System => Ok(system()),
        Detector::Ec2 => {
            let imds = Imds::new(env)?;
            imds.ec2(&config.ec2).await
        }
        Detector::Ecs => {
            let uri = env("ECS_CONTAINER_METADATA_URI_V4")
                .ok_or("ECS_CONTAINER_METADATA_URI_V4 is not set: not on ECS")?;
            let container = crate::net::metadata::get_json(&uri, &[]).await?;
            let task = crate::net::metadata::get_json(&format!("{uri}/task"), &[]).await?;
            Ok(ecs_attributes(&task, &container))
        }
        Detector::Eks => {
            if env("KUBERNETES_SERVICE_HOST").is_none() {
                return Err("KUBERNETES_SERVICE_HOST is not set: not on Kubernetes".into());
            }
            let imds = Imds::new(env)?;
            let token = imds.token().await?;
            let mut out = vec![
                string_attribute("cloud.provider", "aws"),
                string_attribute("cloud.platform", "aws_eks"),
            ];
            if let Ok(name) = imds
                .get(&token, "meta-data/tags/instance/eks:cluster-name")
                .await
            {
                out.push(string_attribute("k8s.cluster.name", name.trim()));
            }
            Ok(out)
        }
        Detector::Lambda => lambda_attributes(env),
    }
}

const ENV_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, keys
/// and values percent-decoded; an entry without `=` is an error.
pub fn env_attributes(text: &str) -> Result<Vec<KeyValue>, String> {
    if text.trim().is_empty() {
        return Err(format!("{ENV_VAR} is not set"));
    }
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| format!("{ENV_VAR}: `{entry}` is not key=value"))?;
        let (k, v) = (
            crate::net::percent_decode(k.trim()),
            crate::net::percent_decode(v.trim()),
        );
        if k.is_empty() {
            return Err(format!("{ENV_VAR}: `{entry}` has an empty key"));
        }
        out.push(string_attribute(&k, v));
    }
    Ok(out)
}

/// The host: `host.name` (the kernel's), `os.type`, `host.id` (the machine
/// id, when there is one) and `host.arch`.
pub fn system() -> Vec<KeyValue> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    if let Some(h) = read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname")) {
        out.push(string_attribute("host.name", h));
    }
    out.push(string_attribute("os.type", std::env::consts::OS));
    if let Some(id) = read("/etc/machine-id").or_else(|| read("/var/lib/dbus/machine-id")) {
        out.push(string_attribute("host.id", id));
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    };
    out.push(string_attribute("host.arch", arch));
    out
}

/// The Lambda runtime's environment as resource attributes.
pub fn lambda_attributes(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Vec<KeyValue>, String> {
    let name = env("AWS_LAMBDA_FUNCTION_NAME")
        .ok_or("AWS_LAMBDA_FUNCTION_NAME is not set: not on Lambda")?;
    let mut out = vec![
        string_attribute("cloud.provider", "aws"),
        string_attribute("cloud.platform", "aws_lambda"),
        string_attribute("faas.name", name),
    ];
    let mut put = |key: &str, var: &str| {
        if let Some(v) = env(var) {
            out.push(string_attribute(key, v));
        }
    };
    put("cloud.region", "AWS_REGION");
    put("faas.version", "AWS_LAMBDA_FUNCTION_VERSION");
    put("faas.instance", "AWS_LAMBDA_LOG_STREAM_NAME");
    if let Some(mb) = env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|m| m.parse::<i64>().ok()) {
        out.push(attribute("faas.max_memory", any_value::Value::IntValue(mb)));
    }
    if let Some(g) = env("AWS_LAMBDA_LOG_GROUP_NAME") {
        out.push(strings("aws.log.group.names", vec![g]));
    }
    if let Some(s) = env("AWS_LAMBDA_LOG_STREAM_NAME") {
        out.push(strings("aws.log.stream.names", vec![s]));
    }
    Ok(out)
}

fn strings(key: &str, values: Vec<String>) -> KeyValue {
    attribute(
        key,
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .into_iter()
                .map(|v| AnyValue {
                    value: Some(any_value::Value::StringValue(v)),
                })
                .collect(),
        }),
    )
}

/// The ECS task metadata v4 answers (`${ECS_CONTAINER_METADATA_URI_V4}/task`
/// and `${ECS_CONTAINER_METADATA_URI_V4}`) as resource attributes.
pub fn ecs_attributes(task: &Json, container: &Json) -> Vec<KeyValue> {
    let s = |v: &Json, k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mut out = vec![
        string_attribute("cloud.provider", "aws"),
        string_attribute("cloud.platform", "aws_ecs"),
    ];
    let task_arn = s(task, "TaskARN");
    // arn:aws:ecs:<region>:<account>:task/<cluster>/<id> (or task/<id>).
    let arn_parts: Vec<String> = task_arn
        .as_deref()
        .map(|a| a.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let (partition, region, account) = match arn_parts.as_slice() {
        [_, p, _, r, a, ..] => (p.clone(), r.clone(), a.clone()),
        _ => (String::new(), String::new(), String::new()),
    };
    if let Some(c) = s(task, "Cluster") {
        let arn = if c.starts_with("arn:") || region.is_empty() {
            c
        } else {
            format!("arn:{partition}:ecs:{region}:{account}:cluster/{c}")
        };
        out.push(string_attribute("aws.ecs.cluster.arn", arn));
    }
    if let Some(a) = &task_arn {
        out.push(string_attribute("aws.ecs.task.arn", a.clone()));
        if let Some(id) = a.rsplit('/').next() {
            out.push(string_attribute("aws.ecs.task.id", id));
        }
    }
    if let Some(f) = s(task, "Family") {
        out.push(string_attribute("aws.ecs.task.family", f));
    }
    if let Some(r) = s(task, "Revision") {
        out.push(string_attribute("aws.ecs.task.revision", r));
    }
    if let Some(l) = s(task, "LaunchType") {
        out.push(string_attribute(
            "aws.ecs.launchtype",
            l.to_ascii_lowercase(),
        ));
    }
    if !region.is_empty() {
        out.push(string_attribute("cloud.region", region.clone()));
        out.push(string_attribute("cloud.account.id", account.clone()));
    }
    if let Some(z) = s(task, "AvailabilityZone") {
        out.push(string_attribute("cloud.availability_zone", z));
    }
    if let Some(a) = s(container, "ContainerARN") {
        out.push(string_attribute("aws.ecs.container.arn", a));
    }
    if let Some(n) = s(container, "Name") {
        out.push(string_attribute("container.name", n));
    }
    if let Some(id) = s(container, "DockerId") {
        out.push(string_attribute("container.id", id));
    }
    if s(container, "LogDriver").as_deref() == Some("awslogs") {
        let opts = &container["LogOptions"];
        let group = s(opts, "awslogs-group");
        let stream = s(opts, "awslogs-stream");
        let log_region = s(opts, "awslogs-region").unwrap_or_else(|| region.clone());
        if let Some(g) = &group {
            out.push(strings("aws.log.group.names", vec![g.clone()]));
            out.push(strings(
                "aws.log.group.arns",
                vec![format!(
                    "arn:{partition}:logs:{log_region}:{account}:log-group:{g}"
                )],
            ));
            if let Some(st) = &stream {
                out.push(strings("aws.log.stream.names", vec![st.clone()]));
                out.push(strings(
                    "aws.log.stream.arns",
                    vec![format!(
                        "arn:{partition}:logs:{log_region}:{account}:log-group:{g}:log-stream:{st}"
                    )],
                ));
            }
        }
    }
    out
}

/// The EC2 instance identity document as resource attributes.
pub fn ec2_attributes(doc: &Json, hostname: Option<&str>) -> Vec<KeyValue> {
    let s = |k: &str| {
        doc[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut out = vec![
        string_attribute("cloud.provider", "aws"),
        string_attribute("cloud.platform", "aws_ec2"),
    ];
    for (key, field) in [
        ("cloud.region", "region"),
        ("cloud.availability_zone", "availabilityZone"),
        ("cloud.account.id", "accountId"),
        ("host.id", "instanceId"),
        ("host.image.id", "imageId"),
        ("host.type", "instanceType"),
    ] {
        if let Some(v) = s(field) {
            out.push(string_attribute(key, v));
        }
    }
    if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
        out.push(string_attribute("host.name", h));
    }
    out
}

/// An IMDSv2 client.
struct Imds {
    base: String,
}

impl Imds {
    fn new(env: &(dyn Fn(&str) -> Option<String> + Sync)) -> Result<Imds, String> {
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err("AWS_EC2_METADATA_DISABLED is set".into());
        }
        let base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into());
        Ok(Imds {
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// A session token (`PUT /latest/api/token`).
    async fn token(&self) -> Result<String, String> {
        let (status, body) = crate::net::metadata::fetch(
            http::Method::PUT,
            &format!("{}/latest/api/token", self.base),
            &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        )
        .await?;
        if status != 200 {
            return Err(format!("IMDS token: HTTP {status}"));
        }
        String::from_utf8(body).map_err(|_| "IMDS token is not text".to_string())
    }

    async fn get(&self, token: &str, path: &str) -> Result<String, String> {
        let (status, body) = crate::net::metadata::fetch(
            http::Method::GET,
            &format!("{}/latest/{path}", self.base),
            &[("x-aws-ec2-metadata-token", token)],
        )
        .await?;
        if status != 200 {
            return Err(format!("IMDS {path}: HTTP {status}"));
        }
        String::from_utf8(body).map_err(|_| format!("IMDS {path} is not text"))
    }

    async fn ec2(&self, config: &Ec2Config) -> Result<Vec<KeyValue>, String> {
        let token = self.token().await?;
        let doc = self
            .get(&token, "dynamic/instance-identity/document")
            .await?;
        let doc: Json =
            serde_json::from_str(&doc).map_err(|e| format!("instance identity document: {e}"))?;
        let hostname = self.get(&token, "meta-data/hostname").await.ok();
        let mut out = ec2_attributes(&doc, hostname.as_deref());
        if !config.tags.is_empty() {
            let patterns: Vec<regex::Regex> = config
                .tags
                .iter()
                .filter_map(|t| regex::Regex::new(t).ok())
                .collect();
            match self.get(&token, "meta-data/tags/instance").await {
                Ok(keys) => {
                    for key in keys.lines().map(str::trim).filter(|k| !k.is_empty()) {
                        if !patterns.iter().any(|p| p.is_match(key)) {
                            continue;
                        }
                        if let Ok(v) = self
                            .get(&token, &format!("meta-data/tags/instance/{key}"))
                            .await
                        {
                            out.push(string_attribute(&format!("ec2.tag.{key}"), v));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e,
                    "ec2.tags: instance tags are not readable from IMDS (allow tags in instance metadata)"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn text<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a str> {
        match get(attrs, k) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn otel_resource_attributes_are_parsed_and_decoded() {
        let a = env_attributes("service.name=travel, team=a%2Cb ,deployment.environment=prod%20eu")
            .unwrap();
        assert_eq!(text(&a, "service.name"), Some("travel"));
        assert_eq!(text(&a, "team"), Some("a,b"));
        assert_eq!(text(&a, "deployment.environment"), Some("prod eu"));
        assert!(env_attributes("novalue").is_err());
        assert!(env_attributes("").is_err());
        assert_eq!(crate::net::percent_decode("100%"), "100%");
        assert_eq!(crate::net::percent_decode("%é%zz%41"), "%é%zzA");
    }

    #[test]
    fn ecs_task_metadata_becomes_attributes() {
        let task: Json = serde_json::json!({
            "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
            "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c",
            "Family": "curltest", "Revision": "26", "LaunchType": "FARGATE",
            "AvailabilityZone": "us-west-2d"
        });
        let container: Json = serde_json::json!({
            "DockerId": "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66",
            "Name": "curl",
            "ContainerARN": "arn:aws:ecs:us-west-2:111122223333:container/0206b271-b33f-47ab-86c6-a0ba208a70a9",
            "LogDriver": "awslogs",
            "LogOptions": {"awslogs-group": "/ecs/metadata", "awslogs-region": "us-west-2",
                           "awslogs-stream": "ecs/curl/158d1c8083dd49d6b527399fd6414f5c"}
        });
        let a = ecs_attributes(&task, &container);
        assert_eq!(text(&a, "cloud.platform"), Some("aws_ecs"));
        assert_eq!(text(&a, "aws.ecs.task.family"), Some("curltest"));
        assert_eq!(text(&a, "aws.ecs.task.revision"), Some("26"));
        assert_eq!(
            text(&a, "aws.ecs.task.id"),
            Some("158d1c8083dd49d6b527399fd6414f5c")
        );
        assert_eq!(text(&a, "aws.ecs.launchtype"), Some("fargate"));
        assert_eq!(text(&a, "cloud.region"), Some("us-west-2"));
        assert_eq!(text(&a, "cloud.account.id"), Some("111122223333"));
        assert_eq!(text(&a, "container.name"), Some("curl"));
        match get(&a, "aws.log.stream.arns") {
            Some(any_value::Value::ArrayValue(v)) => assert_eq!(
                v.values[0].value,
                Some(any_value::Value::StringValue(
                    "arn:aws:logs:us-west-2:111122223333:log-group:/ecs/metadata:log-stream:ecs/curl/158d1c8083dd49d6b527399fd6414f5c".into()
                ))
            ),
            other => panic!("{other:?}"),
        }
        // A cluster given by name gets its ARN built from the task's.
        let task = serde_json::json!({"Cluster": "default", "TaskARN": task["TaskARN"]});
        let a = ecs_attributes(&task, &Json::Null);
        assert_eq!(
            text(&a, "aws.ecs.cluster.arn"),
            Some("arn:aws:ecs:us-west-2:111122223333:cluster/default")
        );
    }

    #[test]
    fn lambda_environment_becomes_attributes() {
        let vars = [
            ("AWS_LAMBDA_FUNCTION_NAME", "agent-fn"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/agent-fn"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/04/[$LATEST]abc"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let a = lambda_attributes(&env).unwrap();
        assert_eq!(text(&a, "faas.name"), Some("agent-fn"));
        assert_eq!(text(&a, "cloud.region"), Some("eu-west-1"));
        assert_eq!(
            get(&a, "faas.max_memory"),
            Some(&any_value::Value::IntValue(512))
        );
        assert!(lambda_attributes(&|_: &str| None).is_err());
    }

    #[tokio::test]
    async fn the_first_detector_wins_and_the_allow_list_filters() {
        let vars = [
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "cloud.region=from-env,host.name=h1",
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_REGION", "from-lambda"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut c: ResourceDetectionConfig = crate::settings::de::from_node(
            &crate::settings::yaml::parse("t", "detectors: [env, lambda]", &|_| None)
                .unwrap()
                .0,
        )
        .unwrap();
        let a = detect(&c, &env).await;
        assert_eq!(text(&a, "cloud.region"), Some("from-env"));
        assert_eq!(text(&a, "faas.name"), Some("f"));
        c.attributes = Some(vec!["faas.name".into()]);
        let a = detect(&c, &env).await;
        assert_eq!(a.len(), 1, "{a:?}");
        // Not on EC2: the detector is skipped within the timeout.
        c.detectors = vec![Detector::Ec2];
        c.attributes = None;
        c.timeout = Duration::from_millis(300);
        let env = |k: &str| {
            (k == "AWS_EC2_METADATA_SERVICE_ENDPOINT").then(|| "http://127.0.0.1:9".to_string())
        };
        assert!(detect(&c, &env).await.is_empty());
    }
}
