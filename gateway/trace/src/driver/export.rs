//! The exporter: a thread of its own with a one-thread tokio runtime,
//! fed through a bounded queue that the request path only ever `try_send`s
//! into. A collector that is down, slow or refusing fills the queue; what
//! does not fit is counted and dropped, and no request waits for it.
// The exporter's batching window and shutdown wait read the clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::Duration;

use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::metrics::{self, Lost};

/// A batch goes out when it has this many spans...
const MAX_BATCH: usize = 512;
/// ...or this long after its first span arrived.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// The request path's end of the export queue.
pub(crate) struct Queue {
    tx: mpsc::Sender<SpanData>,
    stop: Mutex<Option<watch::Sender<bool>>>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Queue {
    /// Queues a kept trace's spans; never waits. Spans that do not fit are
    /// counted as dropped.
    pub fn send(&self, spans: Vec<SpanData>) {
        let mut lost = 0;
        for s in spans {
            if self.tx.try_send(s).is_err() {
                lost += 1;
            }
        }
        metrics::lost(Lost::QueueFull, lost);
    }

    /// Exports what is queued and stops the thread, waiting at most
    /// `timeout` (a collector that does not answer is not waited for).
    pub fn stop(&self, timeout: Duration) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(true);
        }
        if let Some(done) = self.done.lock().take() {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// Starts the exporter thread, with a queue of `capacity` spans.
pub(crate) fn start<E>(exporter: E, capacity: usize, timeout: Duration) -> Result<Queue, String>
where
    E: SpanExporter + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the exporter's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("nusa-trace-export".into())
        .spawn(move || {
            runtime.block_on(run(exporter, rx, stop_rx, timeout));
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("the exporter's thread: {e}"))?;
    Ok(Queue {
        tx,
        stop: Mutex::new(Some(stop_tx)),
        done: Mutex::new(Some(done_rx)),
    })
}

async fn run<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: watch::Receiver<bool>,
    timeout: Duration,
) {
    let mut health = Health::Working;
    let mut stopping = false;
    while !stopping {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = stop.changed() => None,
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => batch.push(s),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => {
                    stopping = true;
                    break;
                }
            }
        }
        export(&exporter, batch, timeout, &mut health).await;
    }
    // What was queued when the stop came goes out once more.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(s) = rx.try_recv() {
        rest.push(s);
        if rest.len() == MAX_BATCH {
            export(&exporter, std::mem::take(&mut rest), timeout, &mut health).await;
        }
    }
    if !rest.is_empty() {
        export(&exporter, rest, timeout, &mut health).await;
    }
}

/// Whether the last export reached the collector: the log says when this
/// changes, not at every failed batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    Working,
    Failing,
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    health: &mut Health,
) {
    let n = batch.len();
    let result = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    match result {
        Ok(()) => {
            metrics::exported(n);
            if *health == Health::Failing {
                tracing::info!("trace export to the collector works again");
            }
            *health = Health::Working;
        }
        Err(why) => {
            metrics::lost(Lost::ExportFailed, n);
            if *health == Health::Working {
                tracing::warn!(spans = n, error = %why, "trace export failed; spans are dropped (nusa_trace_spans_dropped_total) until the collector answers");
            } else {
                tracing::debug!(spans = n, error = %why, "trace export failed");
            }
            *health = Health::Failing;
        }
    }
}
