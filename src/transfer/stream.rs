//! One SQL part streamed to S3 as its rows arrive, exactly once. The rows are cut into parts
//! of a multipart upload (invisible until completed) and sent while the query runs, out of the
//! node's copy budget, so memory stays bounded whatever the size; the bytes streamed are
//! reported every second. The SHA-256 is known only at the end: it goes into the fence
//! checkpoint, and onto the completed object with a copy onto itself. Output that fits one
//! part goes up in a single create-only PUT with its SHA-256, like a small file.
//!
//! A query can't be resumed midway: the attempt that takes over aborts what earlier ones
//! began (checkpointed or not) and runs the query again, unless an earlier attempt got past
//! the fence and completed the object.

use super::buffers::{self, Chunk};
use super::checkpoint::Upload;
use super::copy::PART_SIZE;
use super::sink::{Put, Sink};
use super::{Checkpoint, Context, Reporter, TransferError, sql};
use crate::protocol::{SqlFormat, TransferProgress};
use bytes::Bytes;
use object_store::PutPayload;
use sha2::Digest as _;
use std::time::Instant;
use tokio::task::JoinSet;

/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// S3 takes at most this many parts in one upload.
const MAX_PARTS: usize = 10_000;
/// How often the bytes streamed go to the hub.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Exports one range to `key` at an S3 sink; returns the part's result.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
pub(super) async fn to_s3<R: Reporter>(
    database: &sql::Database,
    query: &str,
    format: SqlFormat,
    range: Option<&sql::Range>,
    key: &str,
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
) -> Result<serde_json::Value, TransferError> {
    let started = Instant::now();
    let earlier = ctx.checkpoint.upload.as_ref().filter(|u| u.key == key);
    if let Some(fenced) = earlier.filter(|u| !u.sha256.is_empty())
        && let Some(existing) = sink.existing(key).await?
        && existing.size == fenced.size
    {
        // Completed by an attempt that took the fence, maybe before it gave the object its
        // SHA-256 (an object of the fenced size without one is taken for that attempt's).
        let done = if let Some(sha256) = existing.sha256 {
            sha256 == fenced.sha256
        } else {
            attach(sink, key, &fenced.sha256).await;
            true
        };
        if done {
            return Ok(serde_json::json!({ "object": key, "resumed": true }));
        }
    }
    if let Some(upload) = earlier {
        sink.abort(key, &upload.upload_id).await;
    }
    sink.sweep_uploads(&[key.to_owned()], None).await;

    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
    let mut streaming = Streaming {
        key,
        sink,
        ctx,
        started,
        overwrite,
        hasher: sha2::Sha256::new(),
        size: 0,
        part: Vec::new(),
        part_len: 0,
        upload: None,
        tasks: JoinSet::new(),
    };
    // The receiver lives in `send`: a failed upload drops it, which stops the query.
    let (rows, sent) =
        tokio::join!(sql::export(database, query, format, range, sender), streaming.send(receiver));
    let finished = match sent {
        // A failed upload first: it is why an export stopped as "cancelled" (nothing read its rows).
        Err(e) => Err(e),
        Ok(()) => match rows {
            Ok(rows) => streaming.finish(rows).await,
            Err(e) => Err(TransferError::Sql(e)),
        },
    };
    if finished.is_err()
        && let Some(upload) = &streaming.upload
    {
        streaming.tasks.abort_all();
        sink.abort(key, &upload.upload_id).await;
    }
    finished
}

/// A streaming export's state.
struct Streaming<'a, 'c, R> {
    key: &'a str,
    sink: &'a Sink,
    ctx: &'a Context<'c, R>,
    started: Instant,
    overwrite: bool,
    hasher: sha2::Sha256,
    /// Bytes streamed so far.
    size: u64,
    /// The part being filled (a part's worth of the node's budget, filled in order).
    part: Vec<Chunk>,
    part_len: u64,
    /// The multipart upload, once the output is larger than a part.
    upload: Option<Upload>,
    tasks: JoinSet<(usize, Result<String, TransferError>)>,
}

impl<R: Reporter> Streaming<'_, '_, R> {
    /// Takes the rows as they come, sending every full part.
    async fn send(&mut self, mut receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Result<(), TransferError> {
        let mut interval = tokio::time::interval(REPORT_EVERY);
        interval.tick().await;
        loop {
            tokio::select! {
                chunk = receiver.recv() => match chunk {
                    Some(chunk) => self.take(&chunk).await?,
                    None => return Ok(()),
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.stored(joined)?,
                _ = interval.tick() => self.ctx.reporter.progress(self.progress()),
                () = self.ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
            }
        }
    }

    /// Copies `data` into the part being filled, sending it when full. A part's buffers are
    /// taken from the budget all at once, so exports waiting for buffers hold none: several
    /// of them can't each hold part of the budget and wait for the rest.
    async fn take(&mut self, mut data: &[u8]) -> Result<(), TransferError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.part.is_empty() {
                self.part = buffers::take_unless(PART_SIZE, &self.ctx.cancel).await?;
            }
            let at = usize::try_from(self.part_len).unwrap_or(usize::MAX);
            let (index, filled) = (at / buffers::CHUNK, at % buffers::CHUNK);
            let Some(chunk) = self.part.get_mut(index) else {
                return Err(TransferError::Sink("an export part outgrew its buffers".into()));
            };
            let n = (buffers::CHUNK - filled).min(data.len());
            chunk.space()[filled..filled + n].copy_from_slice(&data[..n]);
            chunk.set_len(filled + n);
            self.part_len += n as u64;
            data = &data[n..];
            if self.part_len == PART_SIZE {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Sends the part filled so far (starting the upload for the first).
    async fn send_part(&mut self) -> Result<(), TransferError> {
        if self.upload.is_none() {
            let upload_id = self.sink.create_upload(self.key, "").await?;
            let upload = Upload {
                file: 0,
                key: self.key.to_owned(),
                upload_id,
                sha256: String::new(),
                size: 0,
                part_size: PART_SIZE,
                parts: Vec::new(),
            };
            // The next attempt aborts it (it also looks for an upload not checkpointed yet).
            let checkpoint = Checkpoint { upload: Some(upload.clone()), ..Checkpoint::default() };
            self.upload = Some(upload);
            self.ctx.reporter.checkpoint(self.progress(), &checkpoint).await?;
        }
        while self.tasks.len() >= PARTS_IN_FLIGHT {
            if let Some(joined) = self.tasks.join_next().await {
                self.stored(joined)?;
            }
        }
        let Some(upload) = &mut self.upload else { return Ok(()) };
        let index = upload.parts.len();
        if index >= MAX_PARTS {
            return Err(TransferError::Sink(format!(
                "{} would need more than {MAX_PARTS} parts of {} MiB, more than S3 takes in one object; split the query into more partitions",
                self.key,
                PART_SIZE >> 20
            )));
        }
        upload.parts.push(None);
        let payload = payload(std::mem::take(&mut self.part));
        let size = std::mem::take(&mut self.part_len);
        let (sink, key, upload_id) = (self.sink.clone(), self.key.to_owned(), upload.upload_id.clone());
        let bandwidth = self.ctx.bandwidth.clone();
        self.tasks.spawn(async move {
            bandwidth.consume(size).await;
            (index, sink.put_part(&key, &upload_id, index, PART_SIZE, payload).await)
        });
        Ok(())
    }

    fn stored(
        &mut self,
        joined: Result<(usize, Result<String, TransferError>), tokio::task::JoinError>,
    ) -> Result<(), TransferError> {
        let (index, stored) =
            joined.map_err(|e| TransferError::Sink(format!("a part upload stopped: {e}")))?;
        let id = stored?;
        if let Some(slot) = self.upload.as_mut().and_then(|u| u.parts.get_mut(index)) {
            *slot = Some(id);
        }
        Ok(())
    }

    fn progress(&self) -> TransferProgress {
        let seconds = self.started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate needs no more precision")]
        let rate = if seconds > 0.0 { self.size as f64 / seconds } else { 0.0 };
        // What is streamed is all that is known: the total grows with it.
        TransferProgress {
            bytes_done: self.size,
            bytes_total: self.size,
            files_total: 1,
            bytes_sent: self.size,
            bytes_per_second: rate,
            ..TransferProgress::default()
        }
    }

    /// After the last row: the single PUT, or the last part, the fence and the completion.
    async fn finish(&mut self, rows: u64) -> Result<serde_json::Value, TransferError> {
        let sha256 = crate::encoding::hex(&std::mem::take(&mut self.hasher).finalize());
        let mut report = self.progress();
        let put = if self.upload.is_none() {
            let payload = payload(std::mem::take(&mut self.part));
            self.ctx.bandwidth.consume(self.size).await;
            self.sink.put(self.key, payload, &sha256, self.overwrite).await?
        } else {
            if self.part_len > 0 {
                self.send_part().await?;
            }
            while let Some(joined) = self.tasks.join_next().await {
                self.stored(joined)?;
            }
            let Some(upload) = &mut self.upload else { return Err(TransferError::Cancelled) };
            upload.sha256.clone_from(&sha256);
            upload.size = self.size;
            // The fence: the hub takes this checkpoint only from the run's current attempt.
            let checkpoint = Checkpoint { upload: Some(upload.clone()), ..Checkpoint::default() };
            self.ctx.reporter.checkpoint(report, &checkpoint).await?;
            let upload = upload.clone();
            self.complete(&upload).await?
        };
        let checkpoint = Checkpoint { done: [0].into(), bytes_done: self.size, upload: None };
        report.files_done = 1;
        if put == Put::Same {
            report.bytes_skipped = self.size;
            report.bytes_sent = 0;
        }
        self.ctx.reporter.checkpoint(report, &checkpoint).await?;
        Ok(serde_json::json!({
            "files": 1,
            "bytes": self.size,
            "written": u64::from(put == Put::Written),
            "skipped": u64::from(put == Put::Same),
            "bytes_sent": report.bytes_sent,
            "seconds": self.started.elapsed().as_secs_f64(),
            "rows": rows,
            "object": self.key,
            "sha256": sha256,
        }))
    }

    /// Completes the upload create-only (or over what is there), then stores its SHA-256.
    async fn complete(&mut self, upload: &Upload) -> Result<Put, TransferError> {
        let (key, sink) = (self.key, self.sink);
        if !self.overwrite
            && let Some(existing) = sink.existing(key).await?
        {
            sink.abort(key, &upload.upload_id).await;
            self.upload = None;
            return if existing.size == upload.size
                && existing.sha256.as_deref() == Some(upload.sha256.as_str())
            {
                Ok(Put::Same)
            } else {
                Err(sink.differs(key))
            };
        }
        let parts: Vec<String> = upload.parts.iter().flatten().cloned().collect();
        sink.complete(key, &upload.upload_id, parts, &upload.sha256, self.overwrite).await?;
        self.upload = None;
        attach(sink, key, &upload.sha256).await;
        Ok(Put::Written)
    }
}

/// Gives the object its SHA-256, logging a failure. A server that can't (or an object
/// over 5 GiB, which S3 won't copy in one request) keeps the object without it, which
/// costs a later `overwrite: false` run a "differs" instead of a skip, not data.
async fn attach(sink: &Sink, key: &str, sha256: &str) {
    if let Err(e) = sink.attach_sha256(key, sha256).await {
        tracing::warn!(%key, "the exported object is complete but its SHA-256 couldn't be stored with it: {e}");
    }
}

/// Buffers as one request body, without a copy.
fn payload(chunks: Vec<Chunk>) -> PutPayload {
    chunks.into_iter().filter(|c| !c.is_empty()).map(Chunk::into_bytes).collect()
}
