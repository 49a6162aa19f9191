use super::*;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// A batch of `n` spans whose names carry `tag`.
fn spans(tag: &str, n: usize) -> Arc<Telemetry> {
    Arc::new(Telemetry::Traces(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: (0..n)
                .map(|i| Span {
                    name: format!("{tag}-{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

fn tag_of(t: &Telemetry) -> String {
    match t {
        Telemetry::Traces(rs) => rs[0].scope_spans[0].spans[0]
            .name
            .split('-')
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => panic!("not traces"),
    }
}

fn cfg(dir: &Path, max_bytes: u64, segment_bytes: u64, when_full: WhenFull) -> DiskConfig {
    DiskConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        when_full,
        fsync: FsyncPolicy::Always,
        memory_batches: 0,
        read_encoded: false,
        role: Role::Exporter,
    }
}

/// The structs of a batch handed out by a queue that decodes.
fn structs(p: &Payload) -> &Telemetry {
    match p {
        Payload::Structs(d) => d,
        Payload::Encoded(_) => panic!("expected structs"),
    }
}

fn put(q: &Arc<DiskQueue>, data: &Arc<Telemetry>) -> Option<Appended> {
    let rec = encode_record(data, &Metadata::default());
    let res = q.reserve(rec.len() as u64).unwrap()?;
    Some(
        q.append(
            res,
            &rec,
            &Payload::Structs(data.clone()),
            &Metadata::default(),
        )
        .unwrap(),
    )
}

async fn take(q: &Arc<DiskQueue>) -> Option<Entry> {
    let stop = CancellationToken::new();
    tokio::time::timeout(Duration::from_millis(200), q.next(&stop))
        .await
        .ok()
        .flatten()
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-")
        })
        .count()
}

#[tokio::test]
async fn delivers_in_order_from_disk_and_frees_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (q, rec) = DiskQueue::open(cfg(dir.path(), 1 << 20, 4096, WhenFull::Block), "t").unwrap();
    assert_eq!(rec, Recovered::default());
    for i in 0..20 {
        assert_eq!(
            put(&q, &spans(&format!("b{i}"), 30)),
            Some(Appended::Queued)
        );
    }
    assert_eq!(q.pending_items(), 600);
    assert!(segment_files(dir.path()) > 1, "4 KiB segments must rotate");
    for i in 0..20 {
        let e = take(&q).await.expect("queued batch");
        // memory_batches is 0, so every batch was read back and decoded.
        assert_eq!(tag_of(structs(&e.data)), format!("b{i}"));
        assert_eq!(e.data.item_count(), 30);
        q.done(e.seq);
    }
    assert!(take(&q).await.is_none());
    assert_eq!(q.pending_items(), 0);
    assert_eq!(
        segment_files(dir.path()),
        1,
        "only the segment being written stays"
    );
    q.close();
    drop(q);
    let (_q, rec) = DiskQueue::open(cfg(dir.path(), 1 << 20, 4096, WhenFull::Block), "t").unwrap();
    assert_eq!(rec.batches, 0, "nothing done is sent again");
    assert_eq!(segment_files(dir.path()), 0);
}

#[tokio::test]
async fn a_crash_keeps_what_was_not_done_even_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = DiskQueue::open(cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block), "t").unwrap();
    for i in 0..6 {
        put(&q, &spans(&format!("b{i}"), 2));
    }
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(take(&q).await.unwrap());
    }
    // Done out of order: 0 and 2; 1 and 3 still in flight at the "crash".
    q.done(held[0].seq);
    q.done(held[2].seq);
    drop(held);
    drop(q); // no close(): as after kill -9
    let (q, rec) =
        DiskQueue::open(cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block), "t").unwrap();
    assert_eq!(rec.batches, 4);
    assert_eq!(rec.items, 8);
    let mut tags = Vec::new();
    while let Some(e) = take(&q).await {
        tags.push(tag_of(structs(&e.data)));
        q.done(e.seq);
    }
    assert_eq!(tags, ["b1", "b3", "b4", "b5"]);
    // New data after a restart goes to a new segment and is read after.
    put(&q, &spans("new", 1));
    assert_eq!(tag_of(structs(&take(&q).await.unwrap().data)), "new");
}

#[tokio::test]
async fn corrupt_and_torn_records_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = DiskQueue::open(cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block), "t").unwrap();
    let sizes: Vec<usize> = (0..4)
        .map(|i| encode_record(&spans(&format!("b{i}"), 5), &Metadata::default()).len())
        .collect();
    for i in 0..4 {
        put(&q, &spans(&format!("b{i}"), 5));
    }
    drop(q);
    let seg = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    // Flip a payload byte of record 1, and tear record 3 in half.
    let r1 = 4 + sizes[0] + HEADER + 3;
    bytes[r1] ^= 0xff;
    let torn = bytes.len() - sizes[3] / 2;
    bytes.truncate(torn);
    fs::write(&seg, &bytes).unwrap();
    let (q, rec) =
        DiskQueue::open(cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block), "t").unwrap();
    assert_eq!(rec.batches, 2);
    assert_eq!(
        rec.corrupt_bytes as usize,
        sizes[1] + (sizes[3] - sizes[3] / 2),
        "exactly the bad record and the torn tail are skipped"
    );
    let mut tags = Vec::new();
    while let Some(e) = take(&q).await {
        tags.push(tag_of(structs(&e.data)));
        q.done(e.seq);
    }
    assert_eq!(tags, ["b0", "b2"]);
}

#[tokio::test]
async fn block_refuses_when_full_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let rec_len = encode_record(&spans("x", 10), &Metadata::default()).len() as u64;
    // Room for about 4 records in 2-record segments.
    let max = 4 * rec_len + 16;
    let (q, _) =
        DiskQueue::open(cfg(dir.path(), max, 2 * rec_len + 4, WhenFull::Block), "t").unwrap();
    let mut queued = 0;
    while put(&q, &spans("x", 10)).is_some() {
        queued += 1;
        assert!(queued < 10, "the cap must bite");
    }
    assert!(queued >= 3, "{queued}");
    let used: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(used <= max + 64, "on disk {used} > cap {max}");
    // Sending two frees the first segment.
    for _ in 0..2 {
        let e = take(&q).await.unwrap();
        q.done(e.seq);
    }
    assert!(
        put(&q, &spans("x", 10)).is_some(),
        "room again after a segment is sent"
    );
}

#[tokio::test]
async fn drop_newest_and_drop_oldest_count_what_they_drop() {
    let rec_len = encode_record(&spans("x", 10), &Metadata::default()).len() as u64;
    let max = 4 * rec_len + 16;
    let seg = 2 * rec_len + 4;

    let dir = tempfile::tempdir().unwrap();
    let (q, _) = DiskQueue::open(cfg(dir.path(), max, seg, WhenFull::DropNewest), "t").unwrap();
    let mut outcomes = Vec::new();
    for i in 0..8 {
        outcomes.push(put(&q, &spans(&format!("n{i}"), 10)).unwrap());
    }
    let dropped = outcomes.iter().filter(|o| **o == Appended::Dropped).count();
    assert!(dropped >= 4, "{outcomes:?}");
    assert_eq!(outcomes[0], Appended::Queued);
    assert_eq!(q.pending_items() as usize, (8 - dropped) * 10);
    let first = take(&q).await.unwrap();
    assert_eq!(tag_of(structs(&first.data)), "n0", "the oldest are kept");

    let dir = tempfile::tempdir().unwrap();
    let (q, _) = DiskQueue::open(cfg(dir.path(), max, seg, WhenFull::DropOldest), "t").unwrap();
    for i in 0..9 {
        assert_eq!(
            put(&q, &spans(&format!("o{i}"), 10)),
            Some(Appended::Queued)
        );
    }
    let mut tags = Vec::new();
    while let Some(e) = take(&q).await {
        tags.push(tag_of(structs(&e.data)));
        q.done(e.seq);
    }
    assert!(tags.len() < 9 && !tags.is_empty(), "{tags:?}");
    assert_eq!(
        tags.last().map(String::as_str),
        Some("o8"),
        "the newest are kept"
    );
    let kept: Vec<usize> = tags.iter().map(|t| t[1..].parse().unwrap()).collect();
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "a contiguous newest run: {tags:?}"
    );
}

#[tokio::test]
async fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_q, _) = DiskQueue::open(cfg(dir.path(), 1 << 20, 4096, WhenFull::Block), "t").unwrap();
    match DiskQueue::open(cfg(dir.path(), 1 << 20, 4096, WhenFull::Block), "t") {
        Err(DiskQueueError::Locked(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second open of a held directory must fail"),
    }
}

#[tokio::test]
async fn closed_queue_drains_then_ends_and_cache_matches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block);
    c.memory_batches = 2;
    let (q, _) = DiskQueue::open(c, "t").unwrap();
    for i in 0..4 {
        put(&q, &spans(&format!("c{i}"), 3));
    }
    q.close();
    assert!(matches!(q.reserve(10), Err(DiskQueueError::Closed)));
    let stop = CancellationToken::new();
    let mut got = Vec::new();
    // Two come from memory, two are read back: the same data either way.
    while let Some(e) = q.next(&stop).await {
        assert_eq!(*structs(&e.data), *spans(&tag_of(structs(&e.data)), 3));
        got.push(tag_of(structs(&e.data)));
        q.done(e.seq);
    }
    assert_eq!(got, ["c0", "c1", "c2", "c3"]);
}

#[test]
fn exporter_ids_become_safe_directory_names() {
    assert_eq!(dir_name("otlp/backend"), "otlp_backend");
    assert_eq!(dir_name("../x"), ".._x");
    assert_eq!(dir_name("awsxray"), "awsxray");
}

#[tokio::test]
async fn encoded_batches_are_written_as_is_and_read_back_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block);
    c.read_encoded = true;
    c.memory_batches = 1;
    let (q, _) = DiskQueue::open(c.clone(), "t").unwrap();
    // An encoded batch and a structs batch, then one more of each.
    let batches: Vec<Arc<Telemetry>> = (0..4).map(|i| spans(&format!("e{i}"), 4)).collect();
    for (i, b) in batches.iter().enumerate() {
        let payload = if i % 2 == 0 {
            Payload::Encoded(crate::convert::otlp_proto::encode_batch(b))
        } else {
            Payload::Structs(b.clone())
        };
        let rec = match &payload {
            Payload::Encoded(e) => encoded_record(e, &Metadata::default()),
            Payload::Structs(d) => encode_record(d, &Metadata::default()),
        };
        assert_eq!(
            rec.len(),
            encode_record(b, &Metadata::default()).len(),
            "the same record either way"
        );
        let res = q.reserve(rec.len() as u64).unwrap().unwrap();
        assert_eq!(
            q.append(res, &rec, &payload, &Metadata::default()).unwrap(),
            Appended::Queued
        );
    }
    // The first comes from memory as it was appended; the rest are read back
    // as the bytes that were written, not decoded.
    let first = take(&q).await.unwrap();
    assert_eq!(first.data.item_count(), 4);
    let mut read = Vec::new();
    for _ in 1..4 {
        let e = take(&q).await.unwrap();
        match &e.data {
            Payload::Encoded(enc) => read.push(enc.clone()),
            Payload::Structs(_) => panic!("read_encoded hands out bytes"),
        }
        // Not done: the next run sends them again.
    }
    let want: Vec<EncodedBatch> = batches[1..]
        .iter()
        .map(|b| crate::convert::otlp_proto::encode_batch(b))
        .collect();
    assert_eq!(read, want);
    q.close();
    drop(q);
    // The same records, reopened by a queue that decodes (an exporter that
    // takes structs): the data that was sent encoded comes back as structs.
    c.read_encoded = false;
    c.memory_batches = 0;
    let (q, rec) = DiskQueue::open(c, "t").unwrap();
    assert_eq!((rec.batches, rec.items), (4, 16));
    for b in &batches {
        let e = take(&q).await.unwrap();
        assert_eq!(structs(&e.data), &**b);
        q.done(e.seq);
    }
    assert!(take(&q).await.is_none());
}

#[tokio::test]
async fn client_metadata_is_kept_on_disk_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1 << 20, 1 << 16, WhenFull::Block);
    c.memory_batches = 0;
    let md = Metadata::new([
        ("X-AWS-Log-Group".to_string(), "agent-a".to_string()),
        ("x-aws-log-stream".to_string(), "s1".to_string()),
    ]);
    {
        let (q, _) = DiskQueue::open(c.clone(), "t").unwrap();
        for (i, m) in [md.clone(), Metadata::default()].iter().enumerate() {
            let data = spans(&format!("m{i}"), 3);
            let rec = encode_record(&data, m);
            let res = q.reserve(rec.len() as u64).unwrap().unwrap();
            q.append(res, &rec, &Payload::Structs(data), m).unwrap();
        }
        q.close();
    }
    // Read back after a restart, both decoded and as bytes.
    for encoded in [false, true] {
        let mut c = c.clone();
        c.read_encoded = encoded;
        let (q, rec) = DiskQueue::open(c, "t").unwrap();
        assert_eq!(rec.batches, 2);
        let a = take(&q).await.unwrap();
        assert_eq!(a.metadata.first("x-aws-log-group"), Some("agent-a"));
        assert_eq!(a.metadata.first("x-aws-log-stream"), Some("s1"));
        let b = take(&q).await.unwrap();
        assert!(b.metadata.is_empty());
        for e in [&a, &b] {
            let t = match &e.data {
                Payload::Structs(d) => (**d).clone(),
                Payload::Encoded(enc) => {
                    crate::convert::otlp_proto::decode_request(enc.signal, &enc.bytes).unwrap()
                }
            };
            assert_eq!(
                t.item_count(),
                3,
                "the body after the metadata block decodes"
            );
        }
        assert!(tag_of(&structs_or_decode(&a.data)).starts_with("m0"));
        q.close();
    }
}

fn structs_or_decode(p: &Payload) -> Telemetry {
    match p {
        Payload::Structs(d) => (**d).clone(),
        Payload::Encoded(e) => {
            crate::convert::otlp_proto::decode_request(e.signal, &e.bytes).unwrap()
        }
    }
}
