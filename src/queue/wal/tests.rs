use super::*;
use crate::signal::Signal;
use std::time::Duration;

fn batch(tag: u8, items: usize) -> EncodedBatch {
    EncodedBatch {
        signal: Signal::Traces,
        items,
        // Not decoded by the log: any bytes do.
        bytes: bytes::Bytes::from(vec![tag; 100 + tag as usize]),
        shape: None,
    }
}

fn cfg(root: &Path, max_mib: u64) -> WalConfig {
    WalConfig {
        directory: Some(root.to_path_buf()),
        max_size_mib: max_mib,
        segment_size_mib: 1,
    }
}

/// Opens the log, waiting for a previous instance's committer thread to
/// let go of the directory lock.
async fn reopen(root: &Path) -> (Arc<Wal>, Recovered) {
    for _ in 0..200 {
        match Wal::open(&cfg(root, 16), root, "otlp/in") {
            Ok(w) => return w,
            Err(DiskQueueError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the log stayed locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_records_leave_and_the_rest_are_replayed_once() {
    let root = tempfile::tempdir().unwrap();
    let (wal, rec) = reopen(root.path()).await;
    assert_eq!(rec.batches, 0);
    let meta = Metadata::new([("x-tenant".to_string(), "a".to_string())]);
    // Appended concurrently, as requests arrive.
    let mut tasks = Vec::new();
    for tag in 1..=40u8 {
        let (wal, meta) = (wal.clone(), meta.clone());
        tasks.push(tokio::spawn(async move {
            (
                tag,
                wal.append(&batch(tag, tag as usize), &meta).await.unwrap(),
            )
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        let (tag, ack) = t.await.unwrap();
        match tag % 4 {
            // Delivered, or dropped for good by an exporter: done.
            0 => drop(ack),
            1 => {
                ack.mark(AckOutcome::Dropped);
                drop(ack)
            }
            // Given up at shutdown: kept for the next run.
            _ => {
                ack.mark(AckOutcome::Abandoned);
                drop(ack);
                kept.push(tag);
            }
        }
    }
    assert_eq!(
        wal.pending_items(),
        kept.iter().map(|t| *t as u64).sum::<u64>()
    );
    drop(wal);

    let (wal, rec) = reopen(root.path()).await;
    assert_eq!(rec.batches, kept.len() as u64);
    // A request logged now is not part of the replay.
    let fresh = wal
        .append(&batch(99, 1), &Metadata::default())
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while let Some(r) = wal.take_recovered(rec.end_seq) {
        let tag = r.batch.bytes[0];
        assert_eq!(r.batch.bytes, batch(tag, 0).bytes, "the bytes as logged");
        assert_eq!(r.batch.items, tag as usize);
        assert_eq!(r.metadata, meta);
        replayed.push(tag);
        drop(r.ack); // delivered this time
    }
    replayed.sort();
    kept.sort();
    assert_eq!(replayed, kept);
    drop(fresh);
    assert_eq!(wal.pending_items(), 0);
    drop(wal);
    let (_wal, rec) = reopen(root.path()).await;
    assert_eq!(rec.batches, 0, "everything settled: nothing to replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_refuses_until_records_are_done() {
    let root = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(&cfg(root.path(), 1), root.path(), "otlp").unwrap();
    let big = EncodedBatch {
        signal: Signal::Logs,
        items: 1,
        bytes: bytes::Bytes::from(vec![7u8; 200 * 1024]),
        shape: None,
    };
    let mut held = Vec::new();
    let refused = loop {
        match wal.append(&big, &Metadata::default()).await {
            Ok(ack) => held.push(ack),
            Err(e) => break e,
        }
        assert!(held.len() < 10, "1 MiB holds fewer than 10 of 200 KiB");
    };
    assert!(matches!(refused, WalError::Full(1)), "{refused}");
    assert!(held.len() >= 3, "{} fit", held.len());
    held.clear(); // delivered
    wal.append(&big, &Metadata::default()).await.unwrap();
}
