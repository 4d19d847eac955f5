//! The byte-moving commands: planning the delta, downloading the chunks
//! the active slot lacks, and writing the inactive slot. Every chunk is
//! checked against the signed chunk index before it is kept or written.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use nusa_ota_core::chunk::chunk_range;
use nusa_ota_core::{
    plan, ByteRange, ChunkIndex, ChunkVerifier, Command, Event, LocalChunks, Plan, ReleaseInfo,
    Slot, State,
};

use super::exec::slot_index;
use super::{Fail, RunError, Runner};
use crate::fetch::{self, FetchError};
use crate::slotdev::SlotDevice;
use crate::store::LocalCopies;

const INDEX_FILE: &str = "index.cix";

type Done = Result<Result<(), Fail>, RunError>;

impl Runner {
    /// Fetches and checks the chunk index, hashes the active slot and plans
    /// what to copy and what to fetch.
    pub(super) async fn prepare(
        &mut self,
        release: &ReleaseInfo,
    ) -> Result<Result<Plan, Fail>, RunError> {
        let bytes = match self.tuf().await {
            Ok(tuf) => tuf.read_target(&release.chunk_index_target).await,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let index = match ChunkIndex::parse(&bytes) {
            Ok(i) => i,
            Err(e) => return Ok(Err(format!("chunk index: {e}"))),
        };
        self.setup.store.write_atomic(INDEX_FILE, &bytes)?;
        let active = self.setup.slots[slot_index(self.updater.active())].clone();
        let (chunk_size, len) = (index.chunk_size(), index.image_len());
        let local = tokio::task::spawn_blocking(move || -> Result<LocalChunks, String> {
            let mut dev = SlotDevice::open_read(&active).map_err(|e| e.to_string())?;
            let have = dev.capacity().map_err(|e| e.to_string())?.min(len);
            Ok(dev
                .index(chunk_size, have)
                .map_err(|e| e.to_string())?
                .map_or_else(LocalChunks::new, |i| LocalChunks::from_index(&i)))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let local = match local {
            Ok(l) => l,
            Err(e) => return Ok(Err(format!("hashing the active slot: {e}"))),
        };
        let plan = plan(&index, &local, self.setup.config.max_range_bytes);
        self.setup.store.save_copies(&LocalCopies {
            chunk_size,
            chunks: plan.copy_local().to_vec(),
        })?;
        // The download file: fetched chunks at their offsets, sparse.
        let path = self.setup.store.download_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| {
                if f.metadata()?.len() != len {
                    f.set_len(len)?;
                }
                Ok(f)
            });
        if let Err(e) = file {
            return Ok(Err(format!("{}: {e}", path.display())));
        }
        tracing::info!(
            version = %release.version,
            fetch_bytes = plan.bytes_to_fetch(),
            local_bytes = plan.bytes_local(),
            "update planned"
        );
        self.index = Some(index);
        Ok(Ok(plan))
    }

    /// The image's URL, as signed.
    async fn image_url(&mut self, release: &ReleaseInfo) -> Result<nusa_ota_tuf::Url, Fail> {
        let tuf = self.tuf().await?;
        tuf.target_info(&release.image_target)
            .map(|i| i.url)
            .map_err(|e| e.to_string())
    }

    async fn fetch_into(
        &self,
        url: &nusa_ota_tuf::Url,
        range: ByteRange,
        sink: &mut fetch::Sink<'_>,
    ) -> Result<(), FetchError> {
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|()| FetchError::Http {
                url: url.to_string(),
                message: "not a local path".into(),
            })?;
            fetch::read_range(&path, range.start..range.end, sink).await?;
            return Ok(());
        }
        let fetcher = match &self.setup.repository {
            super::Repository::Http { fetcher, .. } => fetcher,
            super::Repository::Dir(_) => {
                return Err(FetchError::Http {
                    url: url.to_string(),
                    message: "a folder repository serves file URLs only".into(),
                })
            }
        };
        fetcher
            .fetch_range(url.as_str(), range.start..range.end, sink)
            .await
            .map(|_| ())
    }

    fn release(&self) -> Option<ReleaseInfo> {
        match self.updater.state() {
            State::Downloading { release, .. } | State::Writing { release, .. } => {
                Some(release.clone())
            }
            _ => None,
        }
    }

    fn load_index(&mut self, release: &ReleaseInfo) -> Result<ChunkIndex, Fail> {
        if let Some(i) = &self.index {
            return Ok(i.clone());
        }
        let path = self.setup.store.dir().join(INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let index = ChunkIndex::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if index.image_len() != release.image_len || index.image_sha256() != release.image_sha256 {
            return Err(format!("{} is for another image", path.display()));
        }
        self.index = Some(index.clone());
        Ok(index)
    }

    /// Carries out at once the state records the core queued (the newest
    /// one holds the others), ahead of the rest of the queue.
    async fn persist_queued(&mut self) -> Result<(), RunError> {
        let mut newest = None;
        while let Some(Command::Persist(_)) = self.queue.front() {
            newest = self.queue.pop_front();
        }
        if let Some(Command::Persist(state)) = newest {
            self.record_state(&state).await?;
        }
        Ok(())
    }

    pub(super) async fn download(&mut self, ranges: Vec<ByteRange>) -> Done {
        let Some(release) = self.release() else {
            return Ok(Err("download outside Downloading".into()));
        };
        let index = match self.load_index(&release) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let url = match self.image_url(&release).await {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        let path = self.setup.store.download_path();
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("{}: {e}", path.display()))),
        };
        let (size, len) = (index.chunk_size(), index.image_len());
        // Each range in pieces of whole chunks, at most checkpoint_bytes
        // each: what verified is recorded after every piece, so a kill
        // refetches at most one piece.
        let step = (self.setup.checkpoint_bytes / u64::from(size)).max(1) * u64::from(size);
        let pieces = ranges.into_iter().flat_map(|r| {
            (r.start..r.end)
                .step_by(step as usize)
                .map(move |start| ByteRange {
                    start,
                    end: (start + step).min(r.end),
                })
        });
        for range in pieces {
            let first = u32::try_from(range.start / u64::from(size)).unwrap_or(u32::MAX);
            let mut next = first;
            let mut pending: Vec<u8> = Vec::with_capacity(size as usize);
            let verifier = ChunkVerifier::new(&index);
            let mut delivered = 0u64;
            let result = {
                let mut sink = |data: &[u8]| -> Result<(), fetch::SinkError> {
                    delivered += data.len() as u64;
                    let mut data = data;
                    while !data.is_empty() {
                        let chunk =
                            chunk_range(next, size, len).ok_or("bytes past the image's end")?;
                        let want = chunk.len() as usize - pending.len();
                        let take = want.min(data.len());
                        pending.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if pending.len() == chunk.len() as usize {
                            verifier.verify(next, &pending)?;
                            file.write_all_at(&pending, chunk.start)?;
                            pending.clear();
                            next += 1;
                        }
                    }
                    Ok(())
                };
                self.fetch_into(&url, range, &mut sink).await
            };
            self.fetched += delivered;
            // What verified is kept, even when the range broke off: synced
            // before it is recorded, so a recorded chunk is on the disk.
            if next > first {
                if let Err(e) = file.sync_data() {
                    return Ok(Err(format!("{}: {e}", path.display())));
                }
                self.feed(Event::DownloadProgress {
                    first,
                    count: next - first,
                })?;
                // Recorded now, not when the whole download ends: a kill,
                // power cut or timeout resumes from this piece.
                self.persist_queued().await?;
                if let State::Downloading {
                    bytes_done,
                    bytes_total,
                    ..
                } = self.updater.state()
                {
                    let (d, t) = (*bytes_done, *bytes_total);
                    self.report("download", d, t);
                }
            }
            if let Err(e) = result {
                return Ok(Err(e.to_string()));
            }
        }
        self.feed(Event::DownloadDone)?;
        Ok(Ok(()))
    }

    /// Assembles the image in the inactive slot from the active slot's
    /// chunks and the downloaded ones, each verified; a chunk that does not
    /// verify (bit rot, a torn download file) is fetched again.
    pub(super) async fn write_slot(&mut self, slot: Slot, release: &ReleaseInfo) -> Done {
        if slot == self.updater.active() {
            return Ok(Err(format!(
                "refusing to write slot {slot}: it is the running system"
            )));
        }
        let index = match self.load_index(release) {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        let copies: HashMap<u32, u64> = self
            .setup
            .store
            .copies()?
            .filter(|c| c.chunk_size == index.chunk_size())
            .map(|c| c.chunks.into_iter().collect())
            .unwrap_or_default();
        let target_path = self.setup.slots[slot_index(slot)].clone();
        let mut target = match SlotDevice::open_write(&target_path) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e.to_string())),
        };
        match target.capacity() {
            Ok(c) if c < index.image_len() => {
                return Ok(Err(format!(
                    "slot {slot} holds {c} bytes, the image is {}",
                    index.image_len()
                )))
            }
            Ok(_) => {}
            Err(e) => return Ok(Err(e.to_string())),
        }
        let active = SlotDevice::open_read(&self.setup.slots[slot_index(self.updater.active())]);
        let download = SlotDevice::open_read(&self.setup.store.download_path());
        let verifier = ChunkVerifier::new(&index);
        let (size, len) = (index.chunk_size(), index.image_len());
        let mut buf = vec![0u8; size as usize];
        let mut refetched = 0u32;
        for i in 0..index.chunk_count() {
            let Some(range) = chunk_range(i, size, len) else {
                break;
            };
            let data = &mut buf[..range.len() as usize];
            let from = match copies.get(&i) {
                Some(&offset) => active.as_ref().ok().map(|d| (d, offset)),
                None => download.as_ref().ok().map(|d| (d, range.start)),
            };
            let good = from.is_some_and(|(dev, offset)| {
                matches!(dev.read_at(offset, data), Ok(n) if n == data.len())
                    && verifier.verify(i, data).is_ok()
            });
            if !good {
                refetched += 1;
                tracing::warn!(
                    chunk = i,
                    local = copies.contains_key(&i),
                    "a chunk did not verify: fetching it again"
                );
                if let Err(e) = self.refetch(release, &verifier, i, range, data).await {
                    return Ok(Err(format!("chunk {i}: {e}")));
                }
            }
            if let Err(e) = target.write_at(range.start, data) {
                return Ok(Err(e.to_string()));
            }
            if let Some(cut) = self.setup.cut_write_at {
                if range.end >= cut {
                    return Err(RunError::PowerCut(range.end));
                }
            }
            if i % 64 == 0 || range.end == len {
                self.report("write", range.end, len);
            }
        }
        if let Err(e) = target.sync() {
            return Ok(Err(e.to_string()));
        }
        if refetched > 0 {
            tracing::info!(chunks = refetched, "chunks fetched again while writing");
        }
        // What this install cost the link, for operators and benchmarks.
        let stats = serde_json::json!({
            "version": release.version.to_string(),
            "image_bytes": len,
            "fetched": self.fetched,
            "refetched_chunks": refetched,
        });
        self.setup
            .store
            .write_atomic("stats.json", stats.to_string().as_bytes())?;
        self.feed(Event::WriteProgress { bytes_written: len })?;
        Ok(Ok(()))
    }

    async fn refetch(
        &mut self,
        release: &ReleaseInfo,
        verifier: &ChunkVerifier<'_>,
        i: u32,
        range: ByteRange,
        data: &mut [u8],
    ) -> Result<(), String> {
        let url = self.image_url(release).await?;
        let mut got = Vec::with_capacity(data.len());
        let mut sink = |b: &[u8]| -> Result<(), fetch::SinkError> {
            got.extend_from_slice(b);
            Ok(())
        };
        self.fetch_into(&url, range, &mut sink)
            .await
            .map_err(|e| e.to_string())?;
        self.fetched += got.len() as u64;
        verifier.verify(i, &got).map_err(|e| e.to_string())?;
        data.copy_from_slice(&got);
        Ok(())
    }
}
