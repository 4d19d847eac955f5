//! The thread that owns every write to the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::open::{self, Counters};
use super::{DiskError, Op, Shared, BY_SEQ, DISABLED, INDEX, META, READY, RECORDS};
use crate::codec;
use crate::metrics::Tier;

/// One transaction (one fsync) covers up to this much queued work.
const BATCH_OPS: usize = 256;
const BATCH_BYTES: u64 = 16 << 20;
/// A failing disk (full, I/O errors) is logged once, then at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub(super) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Op>) {
    let Some((db, mut counters)) = open::open_or_replace(&shared.path) else {
        disable(&shared, &mut rx);
        return;
    };
    let db = Arc::new(db);
    // The budget may have shrunk since the file was written.
    if let Err(error) = apply(&shared, &db, &mut counters, Vec::new()) {
        tracing::warn!(%error, "cache disk tier: eviction at start failed");
    }
    shared.metrics.set_bytes(Tier::Disk, counters.total);
    // `set` fails only if already set, and only this thread sets it.
    let _ = shared.db.set(db.clone());
    shared.state.store(READY, Ordering::Release);

    // Failed transactions since the last warning, and when that was.
    let mut failed_since_warn = 0u64;
    let mut last_warn: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut bytes = 0;
        while batch.len() < BATCH_OPS && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    if let Op::Put { record, .. } = &op {
                        bytes += record.len() as u64;
                    }
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut ops = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Flush(done) => flushes.push(done),
                Op::Put { key, record } => {
                    shared
                        .queued_bytes
                        .fetch_sub(record.len() as u64, Ordering::AcqRel);
                    ops.push(Op::Put { key, record });
                }
                op => ops.push(op),
            }
        }
        let puts = ops.iter().filter(|op| matches!(op, Op::Put { .. })).count() as u64;
        match catch_unwind(AssertUnwindSafe(|| apply(&shared, &db, &mut counters, ops))) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                shared.metrics.disk_write_failed(puts);
                failed_since_warn += 1;
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        %error,
                        failed_batches = failed_since_warn,
                        "cache disk write failed; the batch is lost (counted in nusa_cache_disk_write_errors_total; logged at most once a minute)"
                    );
                    failed_since_warn = 0;
                    last_warn = Some(Instant::now());
                }
            }
            Err(_) => {
                tracing::warn!("cache disk writer panicked; running memory-only from now on");
                answer(flushes);
                disable(&shared, &mut rx);
                return;
            }
        }
        shared.metrics.set_bytes(Tier::Disk, counters.total);
        answer(flushes);
    }
}

fn answer(flushes: Vec<oneshot::Sender<()>>) {
    for done in flushes {
        let _ = done.send(());
    }
}

/// Stops taking work. Closing the receiver makes later sends fail at once,
/// and dropping what is queued wakes any flush waiting on it.
fn disable(shared: &Shared, rx: &mut mpsc::Receiver<Op>) {
    shared.state.store(DISABLED, Ordering::Release);
    rx.close();
    while rx.blocking_recv().is_some() {}
    shared.queued_bytes.store(0, Ordering::Release);
}

/// Applies `ops` and evicts down to the budget in one transaction. The
/// counters change only when it commits.
fn apply(
    shared: &Shared,
    db: &Database,
    counters: &mut Counters,
    ops: Vec<Op>,
) -> Result<(), DiskError> {
    let mut next = *counters;
    let mut evicted = 0u64;
    let txn = db.begin_write()?;
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut index = txn.open_table(INDEX)?;
        let mut by_seq = txn.open_table(BY_SEQ)?;
        for op in ops {
            match op {
                Op::Put { key, record } => {
                    // `put` keeps records under redb's 3 GiB limit.
                    let Ok(len32) = u32::try_from(record.len()) else {
                        continue;
                    };
                    let k = key.as_bytes();
                    let old = index.get(k)?.map(|v| v.value());
                    if let Some((old_seq, old_len, _)) = old {
                        by_seq.remove(old_seq)?;
                        next.total = next.total.saturating_sub(old_len);
                    }
                    let seq = next.next_seq;
                    next.next_seq += 1;
                    let len = record.len() as u64;
                    // Sealed here, off the async runtime, straight into
                    // redb's page: no second copy of the record.
                    let mut slot = records.insert_reserve(k, len32)?;
                    let buf = slot.as_mut();
                    buf.copy_from_slice(&record);
                    codec::seal(&key, buf);
                    drop(slot);
                    index.insert(k, (seq, len, seq))?;
                    by_seq.insert(seq, k)?;
                    next.total += len;
                }
                Op::Touch { key, put } => {
                    let k = key.as_bytes();
                    let cur = index.get(k)?.map(|v| v.value());
                    if let Some((seq, len, cur_put)) = cur {
                        if cur_put == put {
                            by_seq.remove(seq)?;
                            let fresh = next.next_seq;
                            next.next_seq += 1;
                            by_seq.insert(fresh, k)?;
                            index.insert(k, (fresh, len, put))?;
                        }
                    }
                }
                Op::Delete { key, put } => {
                    let k = key.as_bytes();
                    let cur = index.get(k)?.map(|v| v.value());
                    match (cur, put) {
                        (Some((seq, len, cur_put)), Some(put)) if cur_put == put => {
                            index.remove(k)?;
                            by_seq.remove(seq)?;
                            records.remove(k)?;
                            next.total = next.total.saturating_sub(len);
                        }
                        // A record with no index row was never counted.
                        (None, None) => {
                            records.remove(k)?;
                        }
                        // Replaced since it was read: the new one stays.
                        _ => {}
                    }
                }
                Op::Flush(_) => {}
                Op::Purge => {
                    records.retain(|_, _| false)?;
                    index.retain(|_, _| false)?;
                    by_seq.retain(|_, _| false)?;
                    next.total = 0;
                }
            }
        }
        while next.total > shared.budget {
            let Some(seq_key) = by_seq.pop_first()? else {
                // Nothing indexed is left, so nothing counted is either.
                next.total = 0;
                break;
            };
            let key = seq_key.1.value();
            drop(seq_key);
            let removed = index.remove(&key)?.map(|v| v.value());
            if let Some((_, len, _)) = removed {
                next.total = next.total.saturating_sub(len);
            }
            records.remove(&key)?;
            evicted += 1;
        }
        let mut meta = txn.open_table(META)?;
        meta.insert("total_bytes", next.total)?;
        meta.insert("next_seq", next.next_seq)?;
    }
    txn.commit()?;
    *counters = next;
    if evicted > 0 {
        shared.metrics.evicted(Tier::Disk, evicted);
    }
    Ok(())
}
