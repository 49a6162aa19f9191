//! Where the Kinesis receiver remembers how far it has read each shard.
//!
//! `store: file` keeps one small JSON file per stream in a directory,
//! rewritten atomically (write to a temporary file, fsync, rename) at every
//! checkpoint: the default for a single instance. The DynamoDB store, for
//! several replicas sharing a stream, lives in [`super::lease`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// The checkpoint value of a shard read to its end (KCL's spelling).
pub const SHARD_END: &str = "SHARD_END";

/// Why a checkpoint could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("checkpoint file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store's service failed (DynamoDB).
    #[error("checkpoint store: {0}")]
    Service(String),
    /// Another instance holds the shard's lease now.
    #[error("lease of shard {0} was taken by another instance")]
    LeaseLost(String),
}

/// Checkpoints of a stream's shards.
#[async_trait]
pub trait Checkpoints: Send + Sync + 'static {
    /// The shard's checkpoint: a sequence number, [`SHARD_END`], or `None`
    /// if it was never read.
    async fn get(&self, shard: &str) -> Result<Option<String>, StoreError>;

    /// Records that everything up to and including `sequence` (or
    /// [`SHARD_END`]) is delivered.
    async fn set(&self, shard: &str, sequence: &str) -> Result<(), StoreError>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileContent {
    stream: String,
    shards: BTreeMap<String, String>,
}

/// Checkpoints in `<directory>/<stream>.checkpoints.json`.
pub struct FileStore {
    path: PathBuf,
    state: Mutex<FileContent>,
}

fn safe_name(stream: &str) -> String {
    stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl FileStore {
    /// Opens (or creates) the checkpoint file of `stream` in `dir`.
    pub async fn open(dir: &Path, stream: &str) -> Result<FileStore, StoreError> {
        let path = dir.join(format!("{}.checkpoints.json", safe_name(stream)));
        let err = |message: String| StoreError::File {
            path: path.display().to_string(),
            message,
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        let content = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<FileContent>(&bytes).map_err(|e| {
                err(format!(
                    "not a checkpoint file ({e}); move it away to start over"
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileContent {
                stream: stream.to_string(),
                shards: BTreeMap::new(),
            },
            Err(e) => return Err(err(e.to_string())),
        };
        if content.stream != stream {
            return Err(err(format!(
                "holds checkpoints of stream `{}`, not `{stream}`",
                content.stream
            )));
        }
        Ok(FileStore {
            path,
            state: Mutex::new(content),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(&self, content: &FileContent) -> Result<(), StoreError> {
        let err = |message: String| StoreError::File {
            path: self.path.display().to_string(),
            message,
        };
        let bytes = serde_json::to_vec_pretty(content).map_err(|e| err(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        let tmp2 = tmp.clone();
        let path = self.path.clone();
        // Blocking file I/O with fsync: off the async workers.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp2)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp2, &path)?;
            if let Some(dir) = path.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(format!("{}: {e}", tmp.display())))
    }
}

#[async_trait]
impl Checkpoints for FileStore {
    async fn get(&self, shard: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state.lock().await.shards.get(shard).cloned())
    }

    async fn set(&self, shard: &str, sequence: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if state.shards.get(shard).map(String::as_str) == Some(sequence) {
            return Ok(());
        }
        state.shards.insert(shard.to_string(), sequence.to_string());
        self.write(&state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopening_and_refuses_another_streams_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path(), "spans/stream").await.unwrap();
        assert_eq!(s.get("shardId-000000000000").await.unwrap(), None);
        s.set("shardId-000000000000", "4959").await.unwrap();
        s.set("shardId-000000000001", SHARD_END).await.unwrap();
        drop(s);
        let s = FileStore::open(dir.path(), "spans/stream").await.unwrap();
        assert_eq!(
            s.get("shardId-000000000000").await.unwrap().as_deref(),
            Some("4959")
        );
        assert_eq!(
            s.get("shardId-000000000001").await.unwrap().as_deref(),
            Some(SHARD_END)
        );
        std::fs::copy(s.path(), dir.path().join("other.checkpoints.json")).unwrap();
        assert!(FileStore::open(dir.path(), "other").await.is_err());
        std::fs::write(dir.path().join("broken.checkpoints.json"), b"{").unwrap();
        let e = FileStore::open(dir.path(), "broken").await.err().unwrap();
        assert!(e.to_string().contains("not a checkpoint file"), "{e}");
    }
}
