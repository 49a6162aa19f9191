//! Configuration: the OpenTelemetry Collector's shape, read from one or more
//! YAML files with positions kept, typed per component, and validated as a
//! graph.
//!
//! Loading goes: YAML text → marked [`Node`] tree (with `${env:...}`
//! substituted) → trees of several files merged → each component's section
//! deserialised into its own typed config (errors carry file, line, column
//! and component id) → pipelines checked against the defined components and
//! the signals each supports.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use crate::component::ComponentId;
use crate::component::{
    ConnectorDef, ExporterDef, ExtensionDef, Factories, ProcessorDef, ReceiverDef, Registry,
};
use crate::settings::yaml::{self, Mark, Node, Scalar, Value};
use crate::settings::{de, types};
use crate::signal::Signal;
pub use crate::telemetry::{
    LogFormat, LogsTelemetry, MetricsLevel, MetricsTelemetry, TelemetryConfig,
};

/// One problem found in a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Where in which file, when known.
    pub mark: Option<Mark>,
    /// The component it concerns, e.g. `receivers::otlp` or `service::pipelines::traces`.
    pub component: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.mark {
            write!(f, "{m}: ")?;
        }
        if let Some(c) = &self.component {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All problems found in a config; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A defined component: its id, where it was defined, and its typed config.
#[derive(Debug, Clone)]
pub struct Defined<T> {
    /// The id.
    pub id: ComponentId,
    /// Where the id was written.
    pub mark: Mark,
    /// The typed config.
    pub config: T,
}

/// A pipeline id: `traces`, `metrics/x`, ...
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    /// The signal the pipeline carries.
    pub signal: Signal,
    /// The optional name.
    pub name: Option<String>,
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.signal, n),
            None => write!(f, "{}", self.signal),
        }
    }
}

/// One pipeline as configured.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The id.
    pub id: PipelineId,
    /// Receivers feeding it.
    pub receivers: Vec<ComponentId>,
    /// Processors, in order.
    pub processors: Vec<ComponentId>,
    /// Exporters it fans out to.
    pub exporters: Vec<ComponentId>,
}

/// The `service` section.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Extensions to start.
    pub extensions: Vec<ComponentId>,
    /// The pipelines.
    pub pipelines: Vec<PipelineConfig>,
    /// Self-telemetry.
    pub telemetry: TelemetryConfig,
    /// How long shutdown may take to drain queues (`service.shutdown_timeout`, default 30s).
    pub shutdown_timeout: Duration,
}

/// A loaded and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Defined receivers.
    pub receivers: Vec<Defined<Arc<dyn ReceiverDef>>>,
    /// Defined processors.
    pub processors: Vec<Defined<Arc<dyn ProcessorDef>>>,
    /// Defined exporters.
    pub exporters: Vec<Defined<Arc<dyn ExporterDef>>>,
    /// Defined extensions.
    pub extensions: Vec<Defined<Arc<dyn ExtensionDef>>>,
    /// Defined connectors.
    pub connectors: Vec<Defined<Arc<dyn ConnectorDef>>>,
    /// The service section.
    pub service: ServiceConfig,
    /// Warnings (unused components, unset variables).
    pub warnings: Vec<String>,
}

fn find<'a, T>(defs: &'a [Defined<T>], id: &ComponentId) -> Option<&'a Defined<T>> {
    defs.iter().find(|d| &d.id == id)
}

impl Config {
    /// Finds a connector by id.
    pub fn connector(&self, id: &ComponentId) -> Option<&Defined<Arc<dyn ConnectorDef>>> {
        find(&self.connectors, id)
    }
    /// Finds a receiver by id.
    pub fn receiver(&self, id: &ComponentId) -> Option<&Defined<Arc<dyn ReceiverDef>>> {
        find(&self.receivers, id)
    }
    /// Finds a processor by id.
    pub fn processor(&self, id: &ComponentId) -> Option<&Defined<Arc<dyn ProcessorDef>>> {
        find(&self.processors, id)
    }
    /// Finds an exporter by id.
    pub fn exporter(&self, id: &ComponentId) -> Option<&Defined<Arc<dyn ExporterDef>>> {
        find(&self.exporters, id)
    }
    /// Finds an extension by id.
    pub fn extension(&self, id: &ComponentId) -> Option<&Defined<Arc<dyn ExtensionDef>>> {
        find(&self.extensions, id)
    }
}

/// Reads, merges and validates config files from disk, with the process
/// environment; `registry` says which component types exist.
pub fn load_files(paths: &[String], registry: &Registry) -> Result<Config, ConfigErrors> {
    let mut sources = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => sources.push((p.clone(), text)),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    mark: None,
                    component: None,
                    message: format!("cannot read config file `{p}`: {e}"),
                }]))
            }
        }
    }
    let env = |name: &str| std::env::var(name).ok();
    load_sources(&sources, &env, registry)
}

/// Parses, merges and validates config texts `(file name, text)`.
pub fn load_sources(
    sources: &[(String, String)],
    env: yaml::EnvLookup<'_>,
    registry: &Registry,
) -> Result<Config, ConfigErrors> {
    let mut warnings = Vec::new();
    let mut root: Option<Node> = None;
    for (name, text) in sources {
        let (node, w) = yaml::parse(name, text, env).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                mark: Some(e.mark),
                component: None,
                message: e.message,
            }])
        })?;
        warnings.extend(w);
        match &mut root {
            None => root = Some(node),
            Some(r) => r.merge(node),
        }
    }
    let root = root.ok_or_else(|| {
        ConfigErrors(vec![ConfigError {
            mark: None,
            component: None,
            message: "no config file given".into(),
        }])
    })?;
    let mut cfg = from_tree(&root, registry)?;
    cfg.warnings.splice(0..0, warnings);
    Ok(cfg)
}

const SECTIONS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];

fn err(mark: &Mark, component: Option<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        mark: Some(mark.clone()),
        component,
        message: message.into(),
    }
}

fn de_err(e: de::DeError, fallback: &Mark, component: Option<String>) -> ConfigError {
    let path = e.path_string();
    let message = if path.is_empty() {
        e.message
    } else {
        format!("{path}: {}", e.message)
    };
    ConfigError {
        mark: Some(e.mark.unwrap_or_else(|| fallback.clone())),
        component,
        message,
    }
}

/// Parses each `id: config` entry of a section with the factory its type
/// names in `factories`.
fn section<D: ?Sized>(
    root: &Node,
    name: &str,
    factories: Factories<D>,
    errors: &mut Vec<ConfigError>,
    broken: &mut BTreeSet<ComponentId>,
) -> Vec<Defined<Arc<D>>> {
    let mut out = Vec::new();
    let Some(node) = root.get(name) else {
        return out;
    };
    let Some(entries) = node.as_map() else {
        errors.push(err(
            &node.mark,
            None,
            format!("`{name}` must be a mapping of component ids to settings"),
        ));
        return out;
    };
    for (k, v) in entries {
        let Some(text) = k.as_str() else {
            errors.push(err(
                &k.mark,
                None,
                format!("`{name}` keys must be component ids"),
            ));
            continue;
        };
        let component = Some(format!("{name}::{text}"));
        let id = match ComponentId::parse(text) {
            Ok(id) => id,
            Err(e) => {
                errors.push(err(&k.mark, component, e));
                continue;
            }
        };
        let Some(factory) = crate::component::find(factories, &id.kind) else {
            let known = crate::component::names(factories);
            errors.push(err(
                &k.mark,
                component,
                format!(
                    "unknown {} type `{}`; known types: {}",
                    name.trim_end_matches('s'),
                    id.kind,
                    if known.is_empty() {
                        "none yet".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
            continue;
        };
        match factory.parse(v) {
            Err(e) => {
                errors.push(de_err(e, &v.mark, component));
                broken.insert(id);
            }
            Ok(config) => out.push(Defined {
                id,
                mark: k.mark.clone(),
                config,
            }),
        }
    }
    out
}

fn id_list(
    node: Option<&Node>,
    component: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(ComponentId, Mark)> {
    let mut out = Vec::new();
    let Some(node) = node else { return out };
    match &node.value {
        Value::Scalar(Scalar::Null) => {}
        Value::Seq(items) => {
            for item in items {
                match item.as_str().map(ComponentId::parse) {
                    Some(Ok(id)) => {
                        if out.iter().any(|(o, _)| o == &id) {
                            errors.push(err(
                                &item.mark,
                                Some(component.into()),
                                format!("`{id}` is listed twice"),
                            ));
                        } else {
                            out.push((id, item.mark.clone()));
                        }
                    }
                    Some(Err(e)) => errors.push(err(&item.mark, Some(component.into()), e)),
                    None => errors.push(err(
                        &item.mark,
                        Some(component.into()),
                        format!("expected a component id, found a {}", item.kind()),
                    )),
                }
            }
        }
        _ => errors.push(err(
            &node.mark,
            Some(component.into()),
            format!("expected a list of component ids, found a {}", node.kind()),
        )),
    }
    out
}

/// Checks the component ids one pipeline lists.
struct RefCheck<'a> {
    signal: Signal,
    component: &'a str,
    broken: &'a BTreeSet<ComponentId>,
    used: &'a mut BTreeSet<(String, ComponentId)>,
    errors: &'a mut Vec<ConfigError>,
}

impl RefCheck<'_> {
    /// Each id of `section` must be defined (unless its definition already
    /// failed) and support the pipeline's signal; `signals_of` looks it up.
    fn check(
        &mut self,
        section: &str,
        ids: &[(ComponentId, Mark)],
        signals_of: impl Fn(&ComponentId) -> Option<&'static [Signal]>,
    ) {
        let kind = section.trim_end_matches('s');
        for (id, mark) in ids {
            self.used.insert((section.to_string(), id.clone()));
            let message = match signals_of(id) {
                None if self.broken.contains(id) => continue,
                None => format!("{kind} `{id}` is used but not defined under `{section}`"),
                Some(signals) if !signals.contains(&self.signal) => {
                    format!("{kind} `{id}` does not support {}", self.signal)
                }
                Some(_) => continue,
            };
            self.errors
                .push(err(mark, Some(self.component.to_string()), message));
        }
    }
}

/// The five component sections, parsed.
struct Sections {
    receivers: Vec<Defined<Arc<dyn ReceiverDef>>>,
    processors: Vec<Defined<Arc<dyn ProcessorDef>>>,
    exporters: Vec<Defined<Arc<dyn ExporterDef>>>,
    extensions: Vec<Defined<Arc<dyn ExtensionDef>>>,
    connectors: Vec<Defined<Arc<dyn ConnectorDef>>>,
    /// Ids defined with errors: already reported, so not reported again as undefined.
    broken: BTreeSet<ComponentId>,
}

impl Sections {
    fn parse(root: &Node, registry: &Registry, errors: &mut Vec<ConfigError>) -> Sections {
        let mut broken = BTreeSet::new();
        let b = &mut broken;
        Sections {
            receivers: section(root, "receivers", registry.receivers, errors, b),
            processors: section(root, "processors", registry.processors, errors, b),
            exporters: section(root, "exporters", registry.exporters, errors, b),
            extensions: section(root, "extensions", registry.extensions, errors, b),
            connectors: section(root, "connectors", registry.connectors, errors, b),
            broken,
        }
    }

    /// Signals of a component a pipeline lists under `receivers` (a receiver
    /// or a connector's output side).
    fn source_signals(&self, id: &ComponentId) -> Option<&'static [Signal]> {
        find(&self.receivers, id)
            .map(|d| d.config.signals())
            .or_else(|| find(&self.connectors, id).map(|d| d.config.output_signals()))
    }

    /// Signals of a component a pipeline lists under `exporters` (an
    /// exporter or a connector's input side).
    fn sink_signals(&self, id: &ComponentId) -> Option<&'static [Signal]> {
        find(&self.exporters, id)
            .map(|d| d.config.signals())
            .or_else(|| find(&self.connectors, id).map(|d| d.config.input_signals()))
    }
}

/// Unknown top-level keys.
fn check_top_level(root: &Node, errors: &mut Vec<ConfigError>) -> bool {
    let Some(top) = root.as_map() else {
        return false;
    };
    for (k, _) in top {
        if !SECTIONS.contains(&k.key_text().as_str()) {
            errors.push(err(
                &k.mark,
                None,
                format!(
                    "unknown top-level key `{}`; expected one of {}",
                    k.key_text(),
                    SECTIONS.join(", ")
                ),
            ));
        }
    }
    true
}

/// `service`'s own keys, `telemetry` and `shutdown_timeout`.
fn service_settings(service: &Node, errors: &mut Vec<ConfigError>) -> (TelemetryConfig, Duration) {
    if service.as_map().is_none() {
        errors.push(err(
            &service.mark,
            Some("service".into()),
            "`service` must be a mapping",
        ));
    }
    for (k, _) in service.as_map().unwrap_or(&[]) {
        let key = k.key_text();
        if !["extensions", "pipelines", "telemetry", "shutdown_timeout"].contains(&key.as_str()) {
            errors.push(err(
                &k.mark,
                Some("service".into()),
                format!("unknown key `{key}`; expected one of extensions, pipelines, telemetry, shutdown_timeout"),
            ));
        }
    }
    let telemetry = match service.get("telemetry") {
        None => TelemetryConfig::default(),
        Some(n) => match de::from_node::<TelemetryConfig>(n) {
            Ok(t) => t,
            Err(e) => {
                errors.push(de_err(e, &n.mark, Some("service::telemetry".into())));
                TelemetryConfig::default()
            }
        },
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&telemetry.logs.level) {
        let mark = service.get("telemetry").unwrap_or(service).mark.clone();
        errors.push(err(
            &mark,
            Some("service::telemetry".into()),
            format!(
                "logs.level `{}` is not a valid level or filter: {e}",
                telemetry.logs.level
            ),
        ));
    }
    let shutdown_timeout = match service.get("shutdown_timeout") {
        None => Duration::from_secs(30),
        Some(n) => match de::from_node::<types::HumanDuration>(n) {
            Ok(d) => d.0,
            Err(e) => {
                errors.push(de_err(e, &n.mark, Some("service::shutdown_timeout".into())));
                Duration::from_secs(30)
            }
        },
    };
    (telemetry, shutdown_timeout)
}

/// `service.extensions`: each must be defined.
fn service_extensions(
    service: &Node,
    sections: &Sections,
    used: &mut BTreeSet<(String, ComponentId)>,
    errors: &mut Vec<ConfigError>,
) -> Vec<ComponentId> {
    let ext_ids = id_list(service.get("extensions"), "service::extensions", errors);
    for (id, mark) in &ext_ids {
        if find(&sections.extensions, id).is_none() && !sections.broken.contains(id) {
            errors.push(err(
                mark,
                Some("service::extensions".into()),
                format!("extension `{id}` is used but not defined under `extensions`"),
            ));
        }
        used.insert(("extensions".into(), id.clone()));
    }
    ext_ids.into_iter().map(|(i, _)| i).collect()
}

/// `service.pipelines`: each pipeline's lists, checked against the sections.
fn pipelines(
    service: &Node,
    sections: &Sections,
    used: &mut BTreeSet<(String, ComponentId)>,
    errors: &mut Vec<ConfigError>,
) -> Vec<PipelineConfig> {
    let mut out = Vec::new();
    let entries = match service.get("pipelines") {
        None => {
            errors.push(err(
                &service.mark,
                Some("service".into()),
                "`service.pipelines` is required",
            ));
            return out;
        }
        Some(pnode) => match pnode.as_map() {
            None => {
                errors.push(err(
                    &pnode.mark,
                    Some("service::pipelines".into()),
                    "must be a mapping",
                ));
                return out;
            }
            Some([]) => {
                errors.push(err(
                    &pnode.mark,
                    Some("service::pipelines".into()),
                    "at least one pipeline is required",
                ));
                return out;
            }
            Some(entries) => entries,
        },
    };
    for (k, v) in entries {
        if let Some(p) = pipeline(k, v, sections, used, errors) {
            out.push(p);
        }
    }
    out
}

/// One pipeline `k: v`.
fn pipeline(
    k: &Node,
    v: &Node,
    sections: &Sections,
    used: &mut BTreeSet<(String, ComponentId)>,
    errors: &mut Vec<ConfigError>,
) -> Option<PipelineConfig> {
    let text = k.key_text();
    let component = format!("service::pipelines::{text}");
    let (sig, name) = match text.split_once('/') {
        Some((s, n)) => (s.to_string(), Some(n.to_string())),
        None => (text.clone(), None),
    };
    let Some(signal) = Signal::parse(&sig) else {
        errors.push(err(
            &k.mark,
            Some(component),
            format!("unknown pipeline type `{sig}`; expected traces, metrics or logs"),
        ));
        return None;
    };
    let Some(keys) = v.as_map() else {
        errors.push(err(
            &v.mark,
            Some(component),
            "a pipeline must be a mapping",
        ));
        return None;
    };
    for (pk, _) in keys {
        let key = pk.key_text();
        if !["receivers", "processors", "exporters"].contains(&key.as_str()) {
            errors.push(err(
                &pk.mark,
                Some(component.clone()),
                format!("unknown key `{key}`; expected receivers, processors, exporters"),
            ));
        }
    }
    let recv = id_list(v.get("receivers"), &component, errors);
    let procs = id_list(v.get("processors"), &component, errors);
    let exps = id_list(v.get("exporters"), &component, errors);
    if recv.is_empty() {
        errors.push(err(
            &v.mark,
            Some(component.clone()),
            "a pipeline needs at least one receiver",
        ));
    }
    if exps.is_empty() {
        errors.push(err(
            &v.mark,
            Some(component.clone()),
            "a pipeline needs at least one exporter",
        ));
    }
    let mut refs = RefCheck {
        signal,
        component: &component,
        broken: &sections.broken,
        used,
        errors,
    };
    refs.check("receivers", &recv, |id| sections.source_signals(id));
    refs.check("processors", &procs, |id| {
        find(&sections.processors, id).map(|d| d.config.signals())
    });
    refs.check("exporters", &exps, |id| sections.sink_signals(id));
    Some(PipelineConfig {
        id: PipelineId { signal, name },
        receivers: recv.into_iter().map(|(i, _)| i).collect(),
        processors: procs.into_iter().map(|(i, _)| i).collect(),
        exporters: exps.into_iter().map(|(i, _)| i).collect(),
    })
}

/// Defined but unused components are warnings; a connector with only one
/// side wired is an error.
fn unused(
    sections: &Sections,
    used: &BTreeSet<(String, ComponentId)>,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    fn warn<T>(
        section: &str,
        defs: &[Defined<T>],
        used: &BTreeSet<(String, ComponentId)>,
        warnings: &mut Vec<String>,
    ) {
        for d in defs {
            if !used.contains(&(section.to_string(), d.id.clone())) {
                warnings.push(format!(
                    "{}: {section}::{}: defined but not used in any pipeline",
                    d.mark, d.id
                ));
            }
        }
    }
    warn("receivers", &sections.receivers, used, warnings);
    warn("processors", &sections.processors, used, warnings);
    warn("exporters", &sections.exporters, used, warnings);
    warn("extensions", &sections.extensions, used, warnings);
    // A connector needs both sides: fed by one pipeline, feeding another.
    for d in &sections.connectors {
        let fed = used.contains(&("exporters".to_string(), d.id.clone()));
        let feeds = used.contains(&("receivers".to_string(), d.id.clone()));
        if fed != feeds {
            errors.push(err(
                &d.mark,
                Some(format!("connectors::{}", d.id)),
                if fed {
                    "listed as an exporter but no pipeline lists it as a receiver"
                } else {
                    "listed as a receiver but no pipeline lists it as an exporter"
                },
            ));
        } else if !fed {
            warnings.push(format!(
                "{}: connectors::{}: defined but not used in any pipeline",
                d.mark, d.id
            ));
        }
    }
}

/// Each exporter's `auth.authenticator` must be an authenticator extension
/// that `service.extensions` starts.
fn authenticators(
    root: &Node,
    sections: &Sections,
    started: &[ComponentId],
    errors: &mut Vec<ConfigError>,
) {
    for d in &sections.exporters {
        let names = d.config.authenticators();
        if names.is_empty() {
            continue;
        }
        // The position of each value, for its error.
        let node = root
            .get("exporters")
            .and_then(Node::as_map)
            .and_then(|m| m.iter().find(|(k, _)| k.key_text() == d.id.to_string()))
            .and_then(|(_, v)| v.get("auth"))
            .and_then(|a| a.get("authenticator"));
        let mark_of = |i: usize| {
            node.map(|n| match n.as_seq() {
                Some(items) => items.get(i).map_or(&n.mark, |item| &item.mark),
                None => &n.mark,
            })
            .map_or_else(|| d.mark.clone(), Clone::clone)
        };
        let component = Some(format!("exporters::{}", d.id));
        let mut signer: Option<&ComponentId> = None;
        for (i, name) in names.iter().enumerate() {
            let mark = mark_of(i);
            let id = match ComponentId::parse(name) {
                Ok(id) => id,
                Err(e) => {
                    errors.push(err(
                        &mark,
                        component.clone(),
                        format!("auth.authenticator: {e}"),
                    ));
                    continue;
                }
            };
            let message = match find(&sections.extensions, &id) {
                None if sections.broken.contains(&id) => continue,
                None => format!(
                    "auth.authenticator: extension `{id}` is not defined under `extensions`"
                ),
                Some(e) if !e.config.is_authenticator() => format!(
                    "auth.authenticator: extension `{id}` is a {}, not an authenticator (sigv4auth, bearertokenauth, headers_setter)",
                    e.config.type_name()
                ),
                Some(_) if !started.contains(&id) => format!(
                    "auth.authenticator: extension `{id}` must also be listed under `service.extensions`"
                ),
                Some(_) if signer.is_some() => format!(
                    "auth.authenticator: `{id}` comes after `{}`, which signs the request; a signing authenticator must be the last one",
                    signer.map(ToString::to_string).unwrap_or_default()
                ),
                Some(e) => {
                    if e.config.signs_requests() {
                        signer = find(&sections.extensions, &id).map(|e| &e.id);
                    }
                    continue;
                }
            };
            errors.push(err(&mark, component.clone(), message));
        }
    }
}

/// Components that bind the same address would fail at start; say so now.
fn endpoint_clashes(
    sections: &Sections,
    telemetry: &TelemetryConfig,
    service: &Node,
    errors: &mut Vec<ConfigError>,
) {
    let mut endpoints: Vec<(String, String, Mark)> = Vec::new();
    for d in &sections.receivers {
        for ep in d.config.endpoints() {
            endpoints.push((ep, format!("receivers::{}", d.id), d.mark.clone()));
        }
    }
    for d in &sections.extensions {
        for ep in d.config.endpoints() {
            endpoints.push((ep, format!("extensions::{}", d.id), d.mark.clone()));
        }
    }
    for d in &sections.exporters {
        for ep in d.config.listen_endpoints() {
            endpoints.push((ep, format!("exporters::{}", d.id), d.mark.clone()));
        }
    }
    if !telemetry.metrics.address.is_empty() && telemetry.metrics.level != MetricsLevel::None {
        endpoints.push((
            telemetry.metrics.address.clone(),
            "service::telemetry::metrics".into(),
            service.mark.clone(),
        ));
    }
    for (i, (ep, who, mark)) in endpoints.iter().enumerate() {
        if let Some((_, other, _)) = endpoints[..i].iter().find(|(e, _, _)| e == ep) {
            errors.push(err(
                mark,
                Some(who.clone()),
                format!("endpoint `{ep}` is also used by {other}"),
            ));
        }
    }
}

fn from_tree(root: &Node, registry: &Registry) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if !check_top_level(root, &mut errors) {
        return Err(ConfigErrors(vec![err(
            &root.mark,
            None,
            "the config must be a mapping",
        )]));
    }
    let sections = Sections::parse(root, registry, &mut errors);
    let empty = Node {
        value: Value::Map(Vec::new()),
        mark: root.mark.clone(),
    };
    let service = root.get("service").unwrap_or(&empty);
    let (telemetry, shutdown_timeout) = service_settings(service, &mut errors);
    let mut used: BTreeSet<(String, ComponentId)> = BTreeSet::new();
    let extensions = service_extensions(service, &sections, &mut used, &mut errors);
    let pipelines = pipelines(service, &sections, &mut used, &mut errors);
    authenticators(root, &sections, &extensions, &mut errors);
    unused(&sections, &used, &mut warnings, &mut errors);
    endpoint_clashes(&sections, &telemetry, service, &mut errors);

    if !errors.is_empty() {
        errors.sort_by(|a, b| {
            let key =
                |e: &ConfigError| e.mark.as_ref().map(|m| (m.file.to_string(), m.line, m.col));
            key(a).cmp(&key(b))
        });
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        receivers: sections.receivers,
        processors: sections.processors,
        exporters: sections.exporters,
        extensions: sections.extensions,
        connectors: sections.connectors,
        service: ServiceConfig {
            extensions,
            pipelines,
            telemetry,
            shutdown_timeout,
        },
        warnings,
    })
}
