//! The disk-backed sending queue (`sending_queue.storage`): batches are
//! appended to segment files before they are acknowledged, workers read them
//! back in order, and a batch leaves the disk only once its exporter is done
//! with it (delivered, or dropped for good). What is queued survives
//! restarts, crashes (`kill -9`) and long outages of the destination.
//!
//! # On-disk format (version 1)
//!
//! One directory per exporter, holding:
//!
//! - `lock`: held with an exclusive file lock while a process uses the queue.
//! - `seg-<first seq, 20 digits>.q`: a segment. It starts with the 4 bytes
//!   `SWQ1`, then records, each:
//!
//!   | bytes | field                                                  |
//!   |-------|--------------------------------------------------------|
//!   | 4     | record magic `0x53 0x57 0x52 0x31` (`SWR1`)           |
//!   | 4     | payload length, u32 little-endian                      |
//!   | 4     | CRC-32 (IEEE) of the signal byte, item count and payload|
//!   | 1     | signal: 0 traces, 1 metrics, 2 logs; bit 7 set: the payload starts with client metadata |
//!   | 4     | item count, u32 little-endian                          |
//!   | n     | payload: the metadata if bit 7 is set, then the body of an OTLP `Export*ServiceRequest` |
//!
//!   The metadata (only for a batch that carries some, see
//!   `include_metadata`) is a u32 LE count of pairs, then per pair a u32 LE
//!   length and the bytes of the name, and the same for the value.
//!
//!   Records are numbered from the segment's first seq. A segment is only
//!   appended to by the process that created it; after a restart a new
//!   segment is started.
//! - `cursor`: `SWC1`, the first seq not yet done (u64 LE), the count (u32
//!   LE) and seqs (u64 LE) of records done after it, and a CRC-32 of all
//!   before it; bytes after that are ignored. Rewritten in place (one small
//!   write, never fsynced) each time a batch is done: if it is lost or torn,
//!   the next run sends some batches again, it never skips one.
//!
//! At start every segment is checked record by record. A record whose magic,
//! length or checksum is wrong is skipped by searching for the next record
//! magic; the unreadable bytes are logged and counted, and the records
//! around them are kept. A torn record at the end of a segment (a crash
//! mid-write) is dropped the same way.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::convert::otlp_proto;
use crate::settings::types::{FsyncPolicy, QueueConfig, WhenFull};
use crate::signal::{EncodedBatch, Metadata, Payload, Signal, Telemetry};
use crate::telemetry::gauge;

const SEGMENT_MAGIC: &[u8; 4] = b"SWQ1";
const RECORD_MAGIC: &[u8; 4] = b"SWR1";
const CURSOR_MAGIC: &[u8; 4] = b"SWC1";
const HEADER: usize = 17;
/// Larger records are not written (and a larger length on disk is corrupt).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Why the disk queue could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    /// A file operation failed.
    #[error("disk queue {dir}: {what}: {source}")]
    Io {
        /// The queue's directory.
        dir: String,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error("disk queue {0} is in use by another process (its lock file is held)")]
    Locked(String),
    /// The queue was closed.
    #[error("disk queue is closed")]
    Closed,
}

/// Settings, from `sending_queue`.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// This exporter's directory.
    pub dir: PathBuf,
    /// Space cap in bytes.
    pub max_bytes: u64,
    /// Rotate segments at this size.
    pub segment_bytes: u64,
    /// What to do when full.
    pub when_full: WhenFull,
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// Batches kept in memory as well, so workers skip reading them back.
    pub memory_batches: usize,
    /// Batches read back from disk are handed out as the encoded request
    /// ([`Payload::Encoded`], not decoded) — for exporters that send OTLP
    /// protobuf as is. Otherwise they are decoded into structs.
    pub read_encoded: bool,
    /// Whose queue it is, for the names of its self-metrics.
    pub role: Role,
}

/// Whose queue a [`DiskQueue`] is: its self-metrics are named for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An exporter's `sending_queue`: `spanwire_exporter_disk_queue_*{exporter}`.
    #[default]
    Exporter,
    /// A receiver's write-ahead log: `spanwire_receiver_wal_*{receiver}`.
    ReceiverWal,
}

impl Role {
    /// The label naming the component.
    fn label(self) -> &'static str {
        match self {
            Role::Exporter => "exporter",
            Role::ReceiverWal => "receiver",
        }
    }

    /// The self-metric for `what`.
    fn metric(self, what: Metric) -> &'static str {
        use Metric::*;
        match (self, what) {
            (Role::Exporter, Bytes) => "spanwire_exporter_disk_queue_bytes",
            (Role::Exporter, Batches) => "spanwire_exporter_disk_queue_batches",
            (Role::Exporter, Capacity) => "spanwire_exporter_disk_queue_capacity_bytes",
            (Role::Exporter, Dropped) => "spanwire_exporter_disk_queue_dropped_items_total",
            (Role::Exporter, CorruptBytes) => "spanwire_exporter_disk_queue_corrupt_bytes_total",
            (Role::Exporter, CorruptItems) => "spanwire_exporter_disk_queue_corrupt_items_total",
            (Role::ReceiverWal, Bytes) => "spanwire_receiver_wal_bytes",
            (Role::ReceiverWal, Batches) => "spanwire_receiver_wal_requests",
            (Role::ReceiverWal, Capacity) => "spanwire_receiver_wal_capacity_bytes",
            (Role::ReceiverWal, Dropped) => "spanwire_receiver_wal_dropped_items_total",
            (Role::ReceiverWal, CorruptBytes) => "spanwire_receiver_wal_corrupt_bytes_total",
            (Role::ReceiverWal, CorruptItems) => "spanwire_receiver_wal_corrupt_items_total",
        }
    }

    fn counter(self, what: Metric, name: &str, reason: &'static str) -> Counter {
        let mut labels = vec![(self.label(), name.to_string())];
        if !reason.is_empty() {
            labels.push(("reason", reason.to_string()));
        }
        crate::telemetry::counter(self.metric(what), &labels)
    }
}

#[derive(Clone, Copy)]
enum Metric {
    Bytes,
    Batches,
    Capacity,
    Dropped,
    CorruptBytes,
    CorruptItems,
}

impl DiskConfig {
    /// The settings for exporter `name` under `queue.storage`.
    pub fn from_queue(queue: &QueueConfig, root: &Path, name: &str) -> DiskConfig {
        let max_bytes = queue.max_size_mib.saturating_mul(1024 * 1024);
        let segment_bytes = queue
            .segment_size_mib
            .saturating_mul(1024 * 1024)
            .min(max_bytes / 4)
            .max(4096);
        DiskConfig {
            dir: root.join(dir_name(name)),
            max_bytes,
            segment_bytes,
            when_full: queue.when_full,
            fsync: queue.fsync,
            memory_batches: queue.queue_size,
            read_encoded: false,
            role: Role::Exporter,
        }
    }
}

/// An exporter id as a directory name: `otlp/backend` → `otlp_backend`.
pub fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    offset: u64,
    len: u32,
    items: u32,
    signal: Signal,
}

/// Bit 7 of the signal byte: the payload starts with client metadata.
const HAS_METADATA: u8 = 0x80;

/// The metadata block of a record (empty for none).
fn encode_metadata(m: &Metadata) -> Bytes {
    if m.is_empty() {
        return Bytes::new();
    }
    let mut out = Vec::new();
    let pairs: Vec<(&str, &str)> = m.iter().collect();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.into()
}

/// Reads a metadata block off the front of `buf`: the metadata and the bytes after it.
fn decode_metadata(buf: &[u8]) -> Option<(Metadata, &[u8])> {
    fn take_u32(b: &[u8]) -> Option<(usize, &[u8])> {
        let (n, rest) = b.split_first_chunk::<4>()?;
        Some((u32::from_le_bytes(*n) as usize, rest))
    }
    let (count, mut rest) = take_u32(buf)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut part = || -> Option<String> {
            let (n, r) = take_u32(rest)?;
            let text = std::str::from_utf8(r.get(..n)?).ok()?.to_string();
            rest = r.get(n..)?;
            Some(text)
        };
        let k = part()?;
        let v = part()?;
        pairs.push((k, v));
    }
    Some((Metadata::new(pairs), rest))
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    records: Vec<RecordMeta>,
    bytes: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }
}

struct State {
    /// Oldest first; the last is being written when `writing` is set.
    segments: VecDeque<Segment>,
    writing: bool,
    cursor_file: Option<File>,
    /// Seq of the next record appended.
    next_seq: u64,
    /// Next seq handed to a worker.
    read_seq: u64,
    /// Every seq below is done.
    cursor: u64,
    /// Seqs at or above `cursor` already done.
    done: BTreeSet<u64>,
    /// Bytes of segment files on disk.
    used_bytes: u64,
    /// Bytes promised to callers between `reserve` and `append`.
    reserved_bytes: u64,
    /// Items in records not yet done.
    pending_items: u64,
    /// Records not yet done.
    pending_records: u64,
    /// Recent batches, by seq, so workers need not read them back.
    cache: VecDeque<(u64, Payload, Metadata)>,
    closed: bool,
}

impl State {
    /// The segment holding `seq`, if any (none: a gap left by corruption).
    fn segment_of(&self, seq: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| seq >= s.first_seq && seq < s.end_seq())
    }

    /// Where numbering resumes after the gap at `seq`: the next segment's
    /// first seq, or the next seq to be appended.
    fn after_gap(&self, seq: u64) -> u64 {
        self.segments
            .iter()
            .map(|s| s.first_seq)
            .find(|f| *f > seq)
            .unwrap_or(self.next_seq)
    }
}

/// The queue of one exporter.
pub struct DiskQueue {
    cfg: DiskConfig,
    dir_display: String,
    state: Mutex<State>,
    /// The segment file being appended to; taken before `state` when both are held.
    writer: Mutex<Option<File>>,
    /// Written since the last fsync (`fsync: interval`).
    dirty: std::sync::atomic::AtomicBool,
    notify: Notify,
    _lock: File,
    bytes_gauge: Gauge,
    records_gauge: Gauge,
    dropped_oldest: Counter,
    dropped_newest: Counter,
    corrupt_bytes: Counter,
    corrupt_items: Counter,
}

/// A batch handed to a worker.
pub struct Entry {
    /// Its number, for [`DiskQueue::done`].
    pub seq: u64,
    /// The data: as appended while it is in the memory cache; read back, as
    /// [`DiskConfig::read_encoded`] says.
    pub data: Payload,
    /// Its client metadata.
    pub metadata: Metadata,
}

/// Room promised by [`DiskQueue::reserve`].
pub struct Reservation {
    queue: Arc<DiskQueue>,
    bytes: u64,
    /// `drop_newest` and no room: the batch will be counted and dropped.
    drop: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        st.reserved_bytes = st.reserved_bytes.saturating_sub(self.bytes);
    }
}

/// What happened to an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// On disk (and synced, per the fsync policy).
    Queued,
    /// Dropped because the queue is full (`drop_newest`); counted.
    Dropped,
}

/// What was found on disk at start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Batches still to send.
    pub batches: u64,
    /// Their items.
    pub items: u64,
    /// Unreadable bytes skipped.
    pub corrupt_bytes: u64,
    /// The seq the next appended batch gets: recovered batches are numbered
    /// below it (see [`DiskQueue::take_recovered`]).
    pub end_seq: u64,
}

fn signal_byte(s: Signal) -> u8 {
    match s {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn byte_signal(b: u8) -> Option<Signal> {
    match b {
        0 => Some(Signal::Traces),
        1 => Some(Signal::Metrics),
        2 => Some(Signal::Logs),
        _ => None,
    }
}

fn record_crc(signal: u8, items: u32, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[signal]);
    h.update(&items.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// A record ready to append: its header and its payload (the body of an
/// OTLP request), written one after the other.
#[derive(Debug, Clone)]
pub struct Record {
    header: [u8; HEADER],
    /// The metadata block (empty for none).
    meta: Bytes,
    payload: Bytes,
}

impl Record {
    /// The record for `payload` (an OTLP request body of `signal`) carrying `metadata`.
    fn new(signal: Signal, items: usize, payload: Bytes, metadata: &Metadata) -> Record {
        let meta = encode_metadata(metadata);
        let mut sig = signal_byte(signal);
        if !meta.is_empty() {
            sig |= HAS_METADATA;
        }
        let items = items.min(u32::MAX as usize) as u32;
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(RECORD_MAGIC);
        header[4..8].copy_from_slice(&((meta.len() + payload.len()) as u32).to_le_bytes());
        header[8..12].copy_from_slice(&record_crc(sig, items, &[&meta, &payload]).to_le_bytes());
        header[12] = sig;
        header[13..17].copy_from_slice(&items.to_le_bytes());
        Record {
            header,
            meta,
            payload,
        }
    }

    /// Items in it, from its header.
    fn items(&self) -> u32 {
        u32::from_le_bytes([
            self.header[13],
            self.header[14],
            self.header[15],
            self.header[16],
        ])
    }

    /// Bytes on disk, header included.
    pub fn len(&self) -> usize {
        HEADER + self.meta.len() + self.payload.len()
    }

    /// Never true: a record has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Encodes a record for `data`, which carries `metadata`.
pub fn encode_record(data: &Telemetry, metadata: &Metadata) -> Record {
    encoded_record(&otlp_proto::encode_batch(data), metadata)
}

/// The record for an already encoded batch (its bytes are shared, not copied).
pub fn encoded_record(batch: &EncodedBatch, metadata: &Metadata) -> Record {
    Record::new(batch.signal, batch.items, batch.bytes.clone(), metadata)
}

/// Parses the record at `at` in `buf`: its meta, or None if it is not a whole valid record.
fn parse_record(buf: &[u8], at: usize) -> Option<RecordMeta> {
    let h = buf.get(at..at + HEADER)?;
    if &h[0..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?);
    if len as usize > MAX_RECORD {
        return None;
    }
    let crc = u32::from_le_bytes(h[8..12].try_into().ok()?);
    let signal = byte_signal(h[12] & !HAS_METADATA)?;
    let items = u32::from_le_bytes(h[13..17].try_into().ok()?);
    let payload = buf.get(at + HEADER..at + HEADER + len as usize)?;
    if record_crc(h[12], items, &[payload]) != crc {
        return None;
    }
    Some(RecordMeta {
        offset: at as u64,
        len,
        items,
        signal,
    })
}

/// Scans one segment: its valid records and the count of bytes skipped.
fn scan_segment(buf: &[u8]) -> (Vec<RecordMeta>, u64) {
    let mut records = Vec::new();
    let mut skipped = 0u64;
    if buf.len() < 4 || &buf[0..4] != SEGMENT_MAGIC {
        return (records, buf.len() as u64);
    }
    let mut at = 4usize;
    while at < buf.len() {
        if let Some(m) = parse_record(buf, at) {
            at += HEADER + m.len as usize;
            records.push(m);
            continue;
        }
        // Resynchronise on the next record magic.
        let next = buf[at + 1..]
            .windows(4)
            .position(|w| w == RECORD_MAGIC)
            .map(|p| at + 1 + p)
            .unwrap_or(buf.len());
        skipped += (next - at) as u64;
        at = next;
    }
    (records, skipped)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.q"))
}

impl DiskQueue {
    /// Opens (or creates) the queue in `cfg.dir`, recovering what a previous
    /// run left there.
    pub fn open(
        cfg: DiskConfig,
        name: &str,
    ) -> Result<(Arc<DiskQueue>, Recovered), DiskQueueError> {
        let dir_display = cfg.dir.display().to_string();
        let io = |what: &str| {
            let dir = dir_display.clone();
            let what = what.to_string();
            move |source| DiskQueueError::Io { dir, what, source }
        };
        fs::create_dir_all(&cfg.dir).map_err(io("create directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.dir.join("lock"))
            .map_err(io("open lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(DiskQueueError::Locked(dir_display));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("lock")(e)),
        }

        let mut seg_files: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(&cfg.dir).map_err(io("list directory"))? {
            let e = e.map_err(io("list directory"))?;
            let fname = e.file_name().to_string_lossy().to_string();
            if let Some(seq) = fname
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".q"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                seg_files.push((seq, e.path()));
            }
        }
        seg_files.sort();
        let (mut cursor, done) = read_cursor(&cfg.dir);
        let role = cfg.role;
        let labels = [(role.label(), name.to_string())];
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut used = 0u64;
        for (first_seq, path) in seg_files {
            let mut buf = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(io("read segment"))?;
            let (records, skipped) = scan_segment(&buf);
            if skipped > 0 {
                tracing::error!(queue = %dir_display, segment = %path.display(), bytes = skipped, records = records.len(),
                    "disk queue: unreadable bytes in a segment skipped (checksum or length wrong); the records around them are kept");
                recovered.corrupt_bytes += skipped;
            }
            let seg = Segment {
                first_seq,
                path,
                records,
                bytes: buf.len() as u64,
            };
            if seg.end_seq() <= cursor || seg.records.is_empty() {
                let _ = fs::remove_file(&seg.path);
                continue;
            }
            used += seg.bytes;
            segments.push_back(seg);
        }
        let next_seq = segments
            .back()
            .map(|s| s.end_seq())
            .unwrap_or(0)
            .max(cursor);
        if let Some(first) = segments.front() {
            cursor = cursor.max(first.first_seq);
        } else {
            cursor = next_seq;
        }
        let done: BTreeSet<u64> = done.into_iter().filter(|s| *s >= cursor).collect();
        recovered.end_seq = next_seq;
        for seg in &segments {
            for (i, r) in seg.records.iter().enumerate() {
                let seq = seg.first_seq + i as u64;
                if seq >= cursor && !done.contains(&seq) {
                    recovered.batches += 1;
                    recovered.items += r.items as u64;
                }
            }
        }
        let q = DiskQueue {
            dir_display: dir_display.clone(),
            state: Mutex::new(State {
                segments,
                writing: false,
                cursor_file: None,
                next_seq,
                read_seq: cursor,
                cursor,
                done,
                used_bytes: used,
                reserved_bytes: 0,
                pending_items: recovered.items,
                pending_records: recovered.batches,
                cache: VecDeque::new(),
                closed: false,
            }),
            writer: Mutex::new(None),
            dirty: std::sync::atomic::AtomicBool::new(false),
            notify: Notify::new(),
            _lock: lock,
            bytes_gauge: gauge(role.metric(Metric::Bytes), &labels),
            records_gauge: gauge(role.metric(Metric::Batches), &labels),
            dropped_oldest: role.counter(Metric::Dropped, name, "drop_oldest"),
            dropped_newest: role.counter(Metric::Dropped, name, "drop_newest"),
            corrupt_bytes: role.counter(Metric::CorruptBytes, name, ""),
            corrupt_items: role.counter(Metric::CorruptItems, name, ""),
            cfg,
        };
        q.corrupt_bytes.increment(recovered.corrupt_bytes);
        gauge(role.metric(Metric::Capacity), &labels).set(q.cfg.max_bytes as f64);
        {
            let mut st = q.lock();
            q.write_cursor(&mut st);
            q.update_gauges(&st);
        }
        // A receiver's log says it itself, in its own words.
        if recovered.batches > 0 && role == Role::Exporter {
            tracing::info!(queue = %dir_display, batches = recovered.batches, items = recovered.items,
                "disk queue: resuming data queued by a previous run");
        }
        Ok((Arc::new(q), recovered))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_gauges(&self, st: &State) {
        self.bytes_gauge.set(st.used_bytes as f64);
        self.records_gauge.set(st.pending_records as f64);
    }

    /// Items queued and not yet done (what a shutdown leaves for the next run).
    pub fn pending_items(&self) -> u64 {
        self.lock().pending_items
    }

    /// The queue's directory, for messages.
    pub fn dir(&self) -> &str {
        &self.dir_display
    }

    /// Promises room for a record of `bytes`; `None` when the queue is full
    /// and `when_full` is `block` (the caller refuses the data).
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Option<Reservation>, DiskQueueError> {
        let mut st = self.lock();
        if st.closed {
            return Err(DiskQueueError::Closed);
        }
        let fits = st.used_bytes + st.reserved_bytes + bytes <= self.cfg.max_bytes;
        let drop = match self.cfg.when_full {
            _ if fits => false,
            WhenFull::Block => return Ok(None),
            WhenFull::DropNewest => true,
            // Room is made at append time, unless the record alone is too big.
            WhenFull::DropOldest => {
                bytes > self.cfg.max_bytes.saturating_sub(self.cfg.segment_bytes)
            }
        };
        let held = if drop { 0 } else { bytes };
        st.reserved_bytes += held;
        Ok(Some(Reservation {
            queue: self.clone(),
            bytes: held,
            drop,
        }))
    }

    /// Appends `record` (from [`encode_record`] or [`encoded_record`]) for `data`.
    /// Blocking file I/O: call from a blocking thread. Appends are
    /// serialised by the writer lock; the write and fsync happen without the
    /// state lock, so workers keep reading and finishing batches meanwhile.
    pub fn append(
        &self,
        res: Reservation,
        record: &Record,
        data: &Payload,
        metadata: &Metadata,
    ) -> Result<Appended, DiskQueueError> {
        Ok(match self.append_numbered(res, record, data, metadata)? {
            Some(_) => Appended::Queued,
            None => Appended::Dropped,
        })
    }

    /// [`DiskQueue::append`], giving the seq the batch got (None: dropped
    /// as `when_full: drop_newest` says).
    pub fn append_numbered(
        &self,
        res: Reservation,
        record: &Record,
        data: &Payload,
        metadata: &Metadata,
    ) -> Result<Option<u64>, DiskQueueError> {
        let items = u64::from(record.items());
        if res.drop {
            self.dropped_newest.increment(items);
            tracing::warn!(queue = %self.dir_display, items, "disk queue full; dropping the newest batch (when_full: drop_newest)");
            return Ok(None);
        }
        let len = record.len() as u64;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, offset) = {
            let mut st = self.lock();
            if st.closed {
                return Err(DiskQueueError::Closed);
            }
            if self.cfg.when_full == WhenFull::DropOldest {
                // Count this record as reserved while making room for it.
                self.make_room(&mut st, 0);
            }
            let rotate = match (&*w, st.segments.back()) {
                (Some(_), Some(seg)) if st.writing => {
                    seg.bytes + len > self.cfg.segment_bytes && !seg.records.is_empty()
                }
                _ => true,
            };
            if rotate {
                self.rotate(&mut st, &mut w)?;
            }
            let offset = st.segments.back().map(|s| s.bytes).unwrap_or(0);
            (st.next_seq, offset)
        };
        let Some(file) = w.as_mut() else {
            return Err(DiskQueueError::Closed);
        };
        let written = file
            .write_all(&record.header)
            .and_then(|()| file.write_all(&record.meta))
            .and_then(|()| file.write_all(&record.payload))
            .and_then(|()| {
                if self.cfg.fsync == FsyncPolicy::Always {
                    file.sync_data()
                } else {
                    self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            });
        if let Err(e) = written {
            // Part of the record may be in the file: the next append starts a new segment.
            *w = None;
            self.lock().writing = false;
            return Err(self.io_err("append", e));
        }
        let mut st = self.lock();
        let Some(seg) = st.segments.back_mut() else {
            return Err(DiskQueueError::Closed);
        };
        seg.records.push(RecordMeta {
            offset,
            len: (len as usize - HEADER) as u32,
            items: items as u32,
            signal: data.signal(),
        });
        seg.bytes += len;
        st.used_bytes += len;
        st.reserved_bytes = st.reserved_bytes.saturating_sub(res.bytes);
        let mut res = res;
        res.bytes = 0;
        st.next_seq = seq + 1;
        st.pending_items += items;
        st.pending_records += 1;
        if st.cache.len() < self.cfg.memory_batches {
            st.cache.push_back((seq, data.clone(), metadata.clone()));
        }
        self.update_gauges(&st);
        drop(st);
        drop(w);
        self.notify.notify_waiters();
        Ok(Some(seq))
    }

    fn io_err(&self, what: &str, source: std::io::Error) -> DiskQueueError {
        DiskQueueError::Io {
            dir: self.dir_display.clone(),
            what: what.into(),
            source,
        }
    }

    /// Closes the segment being written and starts a new one.
    fn rotate(&self, st: &mut State, w: &mut Option<File>) -> Result<(), DiskQueueError> {
        if let Some(f) = w.take() {
            if self.cfg.fsync != FsyncPolicy::Never {
                f.sync_data().map_err(|e| self.io_err("fsync", e))?;
            }
        }
        st.writing = false;
        // A fully done segment can go now.
        self.remove_done_segments(st);
        let path = segment_path(&self.cfg.dir, st.next_seq);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.io_err("create segment", e))?;
        f.write_all(SEGMENT_MAGIC)
            .map_err(|e| self.io_err("write segment", e))?;
        if self.cfg.fsync != FsyncPolicy::Never {
            // The new file's name must be on the device before records in it are.
            File::open(&self.cfg.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io_err("fsync directory", e))?;
        }
        st.segments.push_back(Segment {
            first_seq: st.next_seq,
            path,
            records: Vec::new(),
            bytes: SEGMENT_MAGIC.len() as u64,
        });
        st.used_bytes += SEGMENT_MAGIC.len() as u64;
        st.writing = true;
        *w = Some(f);
        Ok(())
    }

    /// `drop_oldest`: removes the oldest segments until `len` more bytes fit.
    fn make_room(&self, st: &mut State, len: u64) {
        while st.used_bytes + st.reserved_bytes + len > self.cfg.max_bytes {
            // Never the segment being written.
            let evictable = st.segments.len() > 1 || !st.writing;
            if !evictable {
                break;
            }
            let Some(seg) = st.segments.pop_front() else {
                break;
            };
            // Batches a worker already holds are still being sent; the rest are lost.
            let mut lost_items = 0u64;
            for (i, r) in seg.records.iter().enumerate() {
                let seq = seg.first_seq + i as u64;
                if seq >= st.cursor && !st.done.contains(&seq) {
                    st.pending_records = st.pending_records.saturating_sub(1);
                    st.pending_items = st.pending_items.saturating_sub(r.items as u64);
                    if seq >= st.read_seq {
                        lost_items += r.items as u64;
                    }
                }
            }
            let end = seg.end_seq();
            st.read_seq = st.read_seq.max(end);
            st.cursor = st.cursor.max(end);
            let cursor = st.cursor;
            st.done.retain(|s| *s >= cursor);
            while st.cache.front().is_some_and(|(s, _, _)| *s < cursor) {
                st.cache.pop_front();
            }
            st.used_bytes = st.used_bytes.saturating_sub(seg.bytes);
            let _ = fs::remove_file(&seg.path);
            self.dropped_oldest.increment(lost_items);
            tracing::warn!(queue = %self.dir_display, items = lost_items, "disk queue full; dropped the oldest segment (when_full: drop_oldest)");
            self.write_cursor(st);
        }
    }

    /// The next batch to send, waiting for one; `None` once the queue is
    /// closed and empty, or at `stop`.
    pub async fn next(&self, stop: &CancellationToken) -> Option<Entry> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = {
                let mut st = self.lock();
                match self.take_next(&mut st, u64::MAX) {
                    Some(found) => Some(found),
                    None if st.closed => return None,
                    None => None,
                }
            };
            if let Some(found) = found {
                match self.entry(found) {
                    Some(entry) => return Some(entry),
                    None => continue,
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Picks the next seq below `limit` to hand out: its cached data, or
    /// where to read it.
    #[allow(clippy::type_complexity)]
    fn take_next(
        &self,
        st: &mut State,
        limit: u64,
    ) -> Option<(u64, Option<(Payload, Metadata)>, RecordMeta, PathBuf)> {
        loop {
            if st.read_seq >= st.next_seq.min(limit) {
                return None;
            }
            let seq = st.read_seq;
            let (meta, path) = match st.segment_of(seq) {
                Some(seg) => (
                    seg.records[(seq - seg.first_seq) as usize],
                    seg.path.clone(),
                ),
                None => {
                    // A gap (records lost to corruption): jump to the next segment.
                    st.read_seq = st.after_gap(seq);
                    continue;
                }
            };
            st.read_seq = seq + 1;
            if seq < st.cursor || st.done.contains(&seq) {
                continue;
            }
            while st.cache.front().is_some_and(|(s, _, _)| *s < seq) {
                st.cache.pop_front();
            }
            let cached = match st.cache.front() {
                Some((s, _, _)) if *s == seq => st.cache.pop_front().map(|(_, d, m)| (d, m)),
                _ => None,
            };
            return Some((seq, cached, meta, path));
        }
    }

    /// Reads a record back, checks it, and decodes it (or, with
    /// `read_encoded`, hands its payload out as is: the checksum shows it is
    /// the request that was written).
    fn read_back(&self, path: &Path, meta: RecordMeta) -> Result<(Payload, Metadata), String> {
        let f = File::open(path).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; HEADER + meta.len as usize];
        f.read_exact_at(&mut buf, meta.offset)
            .map_err(|e| e.to_string())?;
        let m = parse_record(&buf, 0).ok_or("checksum mismatch")?;
        let (metadata, body_at) = if buf[12] & HAS_METADATA != 0 {
            let (md, rest) = decode_metadata(&buf[HEADER..]).ok_or("unreadable metadata block")?;
            (md, buf.len() - rest.len())
        } else {
            (Metadata::default(), HEADER)
        };
        if self.cfg.read_encoded {
            return Ok((
                Payload::Encoded(EncodedBatch {
                    signal: m.signal,
                    items: m.items as usize,
                    bytes: Bytes::from(buf).slice(body_at..),
                    shape: None,
                }),
                metadata,
            ));
        }
        otlp_proto::decode_request(m.signal, &buf[body_at..])
            .map(|t| (Payload::Structs(Arc::new(t)), metadata))
            .map_err(|e| e.to_string())
    }

    /// Marks a batch done (delivered, or dropped for good by the exporter):
    /// it will not be sent again, and its space is freed once every batch
    /// before it is done too.
    pub fn done(&self, seq: u64) {
        let mut st = self.lock();
        if seq < st.cursor || !st.done.insert(seq) {
            return;
        }
        if let Some(meta) = st
            .segment_of(seq)
            .map(|s| s.records[(seq - s.first_seq) as usize])
        {
            st.pending_items = st.pending_items.saturating_sub(meta.items as u64);
            st.pending_records = st.pending_records.saturating_sub(1);
        }
        // Advance the cursor over done seqs and gaps.
        loop {
            let c = st.cursor;
            if st.done.remove(&c) {
                st.cursor += 1;
                continue;
            }
            if st.segment_of(c).is_none() && c < st.next_seq {
                st.cursor = st.after_gap(c);
                continue;
            }
            break;
        }
        self.remove_done_segments(&mut st);
        self.write_cursor(&mut st);
        self.update_gauges(&st);
    }

    fn remove_done_segments(&self, st: &mut State) {
        loop {
            let removable = match st.segments.front() {
                Some(seg) => seg.end_seq() <= st.cursor && !(st.segments.len() == 1 && st.writing),
                None => false,
            };
            if !removable {
                break;
            }
            if let Some(seg) = st.segments.pop_front() {
                st.used_bytes = st.used_bytes.saturating_sub(seg.bytes);
                if let Err(e) = fs::remove_file(&seg.path) {
                    tracing::warn!(queue = %self.dir_display, segment = %seg.path.display(), error = %e, "disk queue: could not remove a sent segment");
                }
            }
        }
    }

    fn write_cursor(&self, st: &mut State) {
        let mut buf = Vec::with_capacity(20 + 8 * st.done.len());
        buf.extend_from_slice(CURSOR_MAGIC);
        buf.extend_from_slice(&st.cursor.to_le_bytes());
        buf.extend_from_slice(&(st.done.len() as u32).to_le_bytes());
        for s in &st.done {
            buf.extend_from_slice(&s.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        if st.cursor_file.is_none() {
            st.cursor_file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.cfg.dir.join("cursor"))
                .map_err(|e| tracing::warn!(queue = %self.dir_display, error = %e, "disk queue: cannot open the cursor file"))
                .ok();
        }
        if let Some(f) = &st.cursor_file {
            if let Err(e) = f.write_all_at(&buf, 0) {
                // Not fatal: after a restart some sent batches are sent again.
                tracing::warn!(queue = %self.dir_display, error = %e, "disk queue: could not save the read position");
            }
        }
    }

    /// Flushes written data to the device (for `fsync: interval`).
    pub fn sync(&self) {
        if let Err(e) = self.sync_checked() {
            tracing::warn!(queue = %self.dir_display, error = %e, "disk queue: fsync failed");
        }
    }

    /// Flushes what was appended since the last flush to the device, saying
    /// if that failed (a caller that promised durability must then not).
    pub fn sync_checked(&self) -> Result<(), DiskQueueError> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        match w.as_ref() {
            Some(f) => f.sync_data().map_err(|e| {
                // Try again next time rather than believe it is on the device.
                self.dirty.store(true, std::sync::atomic::Ordering::Release);
                self.io_err("fsync", e)
            }),
            None => Ok(()),
        }
    }

    /// The next batch recovered at start (numbered below `end`, the
    /// [`Recovered::end_seq`] of [`DiskQueue::open`]) not yet handed out, read
    /// back at once; None once all are. For a queue whose appends are not
    /// read back by [`DiskQueue::next`] (a receiver's write-ahead log
    /// replays only what a previous run left).
    pub fn take_recovered(&self, end: u64) -> Option<Entry> {
        loop {
            let found = self.take_next(&mut self.lock(), end)?;
            if let Some(entry) = self.entry(found) {
                return Some(entry);
            }
        }
    }

    /// The entry [`DiskQueue::take_next`] picked: its cached data, or read
    /// back. None if it cannot be read back: it is logged, counted, marked
    /// done and skipped.
    fn entry(
        &self,
        found: (u64, Option<(Payload, Metadata)>, RecordMeta, PathBuf),
    ) -> Option<Entry> {
        let (seq, cached, meta, path) = found;
        let read = match cached {
            Some(c) => Ok(c),
            None => self.read_back(&path, meta),
        };
        match read {
            Ok((data, metadata)) => Some(Entry {
                seq,
                data,
                metadata,
            }),
            Err(reason) => {
                tracing::error!(queue = %self.dir_display, seq, items = meta.items, %reason,
                    "disk queue: a queued batch could not be read back; skipping it");
                self.corrupt_items.increment(meta.items as u64);
                self.done(seq);
                None
            }
        }
    }

    /// No more appends; workers finish what is queued (or stop at their
    /// stop token) and then get `None`.
    pub fn close(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        st.closed = true;
        st.writing = false;
        if let Some(f) = w.take() {
            if self.cfg.fsync != FsyncPolicy::Never {
                let _ = f.sync_data();
            }
        }
        drop(st);
        drop(w);
        self.notify.notify_waiters();
    }

    /// Periodic fsync task for `fsync: interval`.
    pub fn spawn_syncer(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let q = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let syncing = q.clone();
                let _ = tokio::task::spawn_blocking(move || syncing.sync()).await;
                if q.lock().closed {
                    break;
                }
            }
        });
    }
}

/// Reads the cursor file; a missing or damaged one means "from the start".
fn read_cursor(dir: &Path) -> (u64, Vec<u64>) {
    let Ok(buf) = fs::read(dir.join("cursor")) else {
        return (0, Vec::new());
    };
    let parse = || -> Option<(u64, Vec<u64>)> {
        if buf.len() < 20 || &buf[0..4] != CURSOR_MAGIC {
            return None;
        }
        let cursor = u64::from_le_bytes(buf[4..12].try_into().ok()?);
        let n = u32::from_le_bytes(buf[12..16].try_into().ok()?) as usize;
        let end = 16usize.checked_add(n.checked_mul(8)?)?;
        let body = buf.get(..end)?;
        let crc = buf.get(end..end + 4)?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let done = body[16..]
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .collect();
        Some((cursor, done))
    };
    parse().unwrap_or_else(|| {
        tracing::warn!(dir = %dir.display(), "disk queue: the saved read position is damaged; resending from the oldest segment");
        (0, Vec::new())
    })
}

#[cfg(test)]
mod tests;
