//! Exporter `file`: one OTLP/JSON export request per line, with rotation by
//! size and a bounded number of backups (`path.1` is the newest).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::component::{
    BuiltExporter, Export, ExportError, ExportOk, ExporterContext, ExporterFactory, Factory,
};
use crate::consumer::StartError;
use crate::settings::de::DeError;
use crate::settings::types::{QueueConfig, RetryConfig};
use crate::signal::Telemetry;

/// `exporters.file.rotation`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    /// Rotate when the file would exceed this size.
    pub max_megabytes: u64,
    /// Keep at most this many rotated files.
    pub max_backups: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_megabytes: 100,
            max_backups: 100,
        }
    }
}

/// `exporters.file`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to append to (created with its directory if missing).
    pub path: String,
    /// Rotation; absent means the file grows without bound.
    #[serde(default)]
    pub rotation: Option<Rotation>,
}

impl FileConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), DeError> {
        use serde::de::Error;
        if self.path.trim().is_empty() {
            return Err(DeError::custom("path must be set"));
        }
        if let Some(r) = &self.rotation {
            if r.max_megabytes == 0 {
                return Err(DeError::custom("rotation.max_megabytes must be at least 1"));
            }
        }
        Ok(())
    }
}

struct State {
    out: BufWriter<File>,
    size: u64,
}

/// The running exporter.
pub struct FileExporter {
    path: PathBuf,
    rotation: Option<Rotation>,
    state: Arc<Mutex<State>>,
}

fn open(path: &PathBuf) -> std::io::Result<State> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok(State {
        out: BufWriter::new(f),
        size,
    })
}

impl FileExporter {
    /// Opens (creating) the file.
    pub fn new(cfg: &FileConfig) -> Result<Self, StartError> {
        let path = PathBuf::from(&cfg.path);
        let state = open(&path).map_err(|e| {
            StartError::component("file", format!("cannot open `{}`: {e}", cfg.path))
        })?;
        Ok(FileExporter {
            path,
            rotation: cfg.rotation.clone(),
            state: Arc::new(Mutex::new(state)),
        })
    }
}

fn backup(path: &std::path::Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn write_line(
    path: &PathBuf,
    rotation: &Option<Rotation>,
    st: &mut State,
    line: &[u8],
) -> std::io::Result<()> {
    if let Some(r) = rotation {
        let max = r.max_megabytes * 1024 * 1024;
        if st.size > 0 && st.size + line.len() as u64 > max {
            st.out.flush()?;
            if r.max_backups == 0 {
                std::fs::remove_file(path)?;
            } else {
                let _ = std::fs::remove_file(backup(path, r.max_backups));
                for i in (1..r.max_backups).rev() {
                    let from = backup(path, i);
                    if from.exists() {
                        std::fs::rename(&from, backup(path, i + 1))?;
                    }
                }
                std::fs::rename(path, backup(path, 1))?;
            }
            *st = open(path)?;
        }
    }
    st.out.write_all(line)?;
    st.out.flush()?;
    st.size += line.len() as u64;
    Ok(())
}

/// The `file` exporter's factory.
pub struct FileFactory;

impl Factory for FileFactory {
    type Config = FileConfig;
    fn type_name(&self) -> &'static str {
        "file"
    }
    fn validate(&self, config: &FileConfig) -> Result<(), DeError> {
        config.validate()
    }
}

impl ExporterFactory for FileFactory {
    fn build(
        &self,
        config: &FileConfig,
        _ctx: ExporterContext<'_>,
    ) -> Result<BuiltExporter, StartError> {
        // A local file: a deep queue, short retries (a full disk may clear).
        Ok(BuiltExporter::new(
            FileExporter::new(config)?,
            QueueConfig::local(1000),
            RetryConfig {
                enabled: true,
                initial_interval: Duration::from_millis(100),
                max_interval: Duration::from_secs(5),
                max_elapsed_time: Duration::from_secs(60),
                ..RetryConfig::default()
            },
        ))
    }
}

#[async_trait]
impl Export for FileExporter {
    type Progress = ();

    async fn export(
        &self,
        data: &Arc<Telemetry>,
        _metadata: &crate::signal::Metadata,
        _progress: &mut (),
    ) -> Result<ExportOk, ExportError> {
        let mut line = crate::convert::otlp_json::encode_to_vec(data);
        line.push(b'\n');
        let state = self.state.clone();
        let path = self.path.clone();
        let rotation = self.rotation.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut st = state
                .lock()
                .map_err(|_| std::io::Error::other("file state poisoned"))?;
            write_line(&path, &rotation, &mut st, &line)
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(ExportOk::default()),
            Ok(Err(e)) => Err(ExportError::Retryable {
                reason: format!("write to `{}` failed: {e}", self.path.display()),
                retry_after: None,
            }),
            Err(e) => Err(ExportError::Permanent(format!(
                "file writer task failed: {e}"
            ))),
        }
    }

    async fn shutdown(&self) {
        if let Ok(mut st) = self.state.lock() {
            let _ = st.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[tokio::test]
    async fn writes_lines_and_rotates_keeping_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/spans.jsonl");
        let cfg = FileConfig {
            path: path.to_string_lossy().into(),
            rotation: Some(Rotation {
                max_megabytes: 1,
                max_backups: 2,
            }),
        };
        let exp = FileExporter::new(&cfg).unwrap();
        let big = Arc::new(Telemetry::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "x".repeat(400 * 1024),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]));
        for _ in 0..10 {
            exp.export(&big, &crate::signal::Metadata::default(), &mut ())
                .await
                .unwrap();
        }
        assert!(path.exists());
        assert!(backup(&path, 1).exists());
        assert!(backup(&path, 2).exists());
        assert!(!backup(&path, 3).exists());
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let t =
                crate::convert::otlp_json::decode(crate::signal::Signal::Traces, line.as_bytes())
                    .unwrap();
            assert_eq!(t.item_count(), 1);
        }
    }
}
