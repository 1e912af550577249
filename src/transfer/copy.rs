//! One part of a folder copy: its files, read and hashed on this node and written to the sink
//! exactly once. Small files go up several at a time in one request each; a large file goes
//! up in parts, checkpointed at the hub as they are stored, so the attempt that takes over
//! continues the same upload. Memory stays bounded: every buffer comes out of one node-wide
//! budget.

use super::bandwidth::Bandwidth;
use super::buffers::{self, Chunk};
use super::checkpoint::Upload;
use super::sink::{Put, Sink, Staged};
use super::{Checkpoint, Context, Reporter, TransferError, folder};
use crate::protocol::{ListedFile, TransferProgress};
use futures_util::future::OptionFuture;
use object_store::PutPayload;
use sha2::Digest as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Files up to this size go in one request; larger ones in parts of this size (S3 wants at
/// least 5 MiB per part but the last).
pub const PART_SIZE: u64 = 8 << 20;
/// Small files in flight at once in one run.
const FILES_IN_FLIGHT: usize = 4;
/// Parts of a large file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// At a folder sink, small files staged before they are committed together (synced, placed,
/// their folders synced once); a partial batch is committed when nothing else is being read,
/// or at the next report. Each holds an open file until then.
const COMMIT_BATCH: usize = 16;
/// How often progress goes to the hub, and at most how long committed files wait for a checkpoint.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A checkpoint on its way to the hub.
type Pending<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), TransferError>> + Send + 'a>>;

/// What a part's copy has done so far.
struct Tally {
    started: Instant,
    progress: TransferProgress,
    checkpoint: Checkpoint,
    last_report: Instant,
    unreported_commits: usize,
    written: u64,
    skipped: u64,
}

impl Tally {
    fn progress(&mut self) -> TransferProgress {
        let seconds = self.started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate needs no more precision")]
        if seconds > 0.0 {
            self.progress.bytes_per_second = self.progress.bytes_sent as f64 / seconds;
        }
        // Parts of the large file under way count as they are stored.
        let stored = self
            .checkpoint
            .upload
            .as_ref()
            .map_or(0, |u| u.parts.iter().flatten().count() as u64 * u.part_size);
        self.progress.bytes_done = (self.checkpoint.bytes_done + stored).min(self.progress.bytes_total);
        self.progress
    }

    fn commit(&mut self, index: usize, size: u64, put: Put) {
        if self.checkpoint.done.insert(index) {
            self.checkpoint.bytes_done += size;
            self.progress.files_done += 1;
            self.unreported_commits += 1;
            match put {
                Put::Written => self.written += 1,
                Put::Same => {
                    self.skipped += 1;
                    self.progress.bytes_skipped += size;
                }
            }
        }
    }

    /// A small file committed: counted as sent when it was written.
    fn commit_small(&mut self, index: usize, size: u64, put: Put) {
        if put == Put::Written {
            self.progress.bytes_sent += size;
        }
        self.commit(index, size, put);
    }

    /// The checkpoint of what is done now, to be awaited, or sent while the copy goes on.
    fn checkpoint_later<'a, R: Reporter>(&mut self, reporter: &'a R) -> Pending<'a> {
        let (progress, checkpoint) = (self.progress(), self.checkpoint.clone());
        self.unreported_commits = 0;
        self.last_report = Instant::now();
        Box::pin(async move { reporter.checkpoint(progress, &checkpoint).await })
    }

    /// Sends a checkpoint when enough is unreported, else plain progress now and then.
    async fn report<R: Reporter>(&mut self, reporter: &R, force: bool) -> Result<(), TransferError> {
        let due = self.last_report.elapsed() >= REPORT_EVERY;
        if force || (self.unreported_commits > 0 && (due || self.unreported_commits >= 64)) {
            self.checkpoint_later(reporter).await?;
        } else if due {
            reporter.progress(self.progress());
            self.last_report = Instant::now();
        }
        Ok(())
    }
}

/// Copies `files` (listed under `root`) to `sink`; returns the part's result.
pub(super) async fn files<R: Reporter>(
    root: &Path,
    files: &[ListedFile],
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
) -> Result<serde_json::Value, TransferError> {
    let root_meta = tokio::fs::metadata(root).await;
    if let Err(e) = root_meta {
        return Err(folder::unseen(ctx.node, root, &e));
    }
    let mut tally = Tally {
        started: Instant::now(),
        progress: TransferProgress {
            bytes_total: files.iter().map(|f| f.size).sum(),
            files_total: files.len() as u64,
            ..TransferProgress::default()
        },
        checkpoint: ctx.checkpoint.clone(),
        last_report: Instant::now(),
        unreported_commits: 0,
        written: 0,
        skipped: 0,
    };
    tally.checkpoint.done.retain(|&i| i < files.len());
    tally.progress.files_done = tally.checkpoint.done.len() as u64;
    let keys: Vec<String> = files.iter().map(|f| sink.key(&f.path)).collect();
    let resumed = tally.checkpoint.upload.clone();
    let keep = resumed.as_ref().map(|u| u.upload_id.as_str());
    sink.sweep(&keys, keep).await?;
    // Uploads earlier attempts began for the large files, the checkpointed one but kept.
    let large: Vec<String> =
        files.iter().zip(&keys).filter(|(f, _)| f.size > PART_SIZE).map(|(_, k)| k.clone()).collect();
    sink.sweep_uploads(&large, keep).await;

    let result = copy_all(root, files, &keys, sink, overwrite, ctx, &mut tally).await;
    if let Err(e) = result {
        // Keep what was committed for the next attempt, unless the run is somebody else's now.
        if !matches!(e, TransferError::Superseded) {
            let progress = tally.progress();
            let _ = ctx.reporter.checkpoint(progress, &tally.checkpoint).await;
        }
        return Err(e);
    }
    // The new names are durable before the part says it is done.
    sink.sync_folders(&keys).await?;
    tally.report(ctx.reporter, true).await?;
    let progress = tally.progress();
    Ok(serde_json::json!({
        "files": files.len(),
        "bytes": progress.bytes_total,
        "written": tally.written,
        "skipped": tally.skipped,
        "bytes_sent": progress.bytes_sent,
        "seconds": tally.started.elapsed().as_secs_f64(),
    }))
}

#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn copy_all<R: Reporter>(
    root: &Path,
    files: &[ListedFile],
    keys: &[String],
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
    tally: &mut Tally,
) -> Result<(), TransferError> {
    let pending: Vec<usize> = (0..files.len()).filter(|i| !tally.checkpoint.done.contains(i)).collect();
    let (small, large): (Vec<usize>, Vec<usize>) =
        pending.into_iter().partition(|&i| files[i].size <= PART_SIZE);

    copy_small_files(root, files, keys, small, sink, overwrite, ctx, tally).await?;
    for index in large {
        if ctx.cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        let path = folder::local_path(root, &files[index]);
        let put = copy_large(index, &path, &files[index], &keys[index], sink, overwrite, ctx, tally).await?;
        tally.commit(index, files[index].size, put);
        tally.checkpoint.upload = None;
        tally.report(ctx.reporter, true).await?;
    }
    Ok(())
}

/// What a small file's task did: written at S3, or staged at a folder for a batch commit.
enum Small {
    Put(Put),
    Staged(Staged),
}

/// A batch commit under way: the files' indexes and what the sink found for each.
type Committing = tokio::task::JoinHandle<Result<Vec<(usize, Put)>, TransferError>>;

/// The small files, a few at a time, each its own task so a checkpoint doesn't hold them up.
/// At a folder sink they are staged and committed in batches, one batch syncing while the
/// next files are read; a file counts as done (and is checkpointed) only once committed.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn copy_small_files<R: Reporter>(
    root: &Path,
    files: &[ListedFile],
    keys: &[String],
    small: Vec<usize>,
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
    tally: &mut Tally,
) -> Result<(), TransferError> {
    let sink_arc = Arc::new(sink.clone());
    let mut tasks: JoinSet<(usize, Result<Small, TransferError>)> = JoinSet::new();
    let mut queue = small.into_iter().peekable();
    let mut interval = tokio::time::interval(REPORT_EVERY);
    // Staged files waiting for a commit, and the commit under way (one at a time).
    let mut batch: Vec<(usize, Staged)> = Vec::new();
    let mut committing: Option<Committing> = None;
    let mut flush = false;
    let outcome = loop {
        while tasks.len() < FILES_IN_FLIGHT {
            let Some(index) = queue.next() else { break };
            let (file, key, path) =
                (files[index].clone(), keys[index].clone(), folder::local_path(root, &files[index]));
            let (sink, node, bandwidth) = (Arc::clone(&sink_arc), ctx.node.to_owned(), ctx.bandwidth.clone());
            tasks.spawn(async move {
                (index, copy_small(&node, &path, &file, &key, &sink, overwrite, &bandwidth).await)
            });
        }
        let idle = tasks.is_empty() && queue.peek().is_none();
        if committing.is_none() && !batch.is_empty() && (batch.len() >= COMMIT_BATCH || idle || flush) {
            let (sink, staged) = (Arc::clone(&sink_arc), std::mem::take(&mut batch));
            committing = Some(tokio::spawn(async move { sink.commit(staged, overwrite).await }));
            flush = false;
        }
        if idle && committing.is_none() && batch.is_empty() {
            break Ok(());
        }
        let step = tokio::select! {
            Some(joined) = tasks.join_next() => match joined {
                Ok((index, Ok(Small::Put(put)))) => {
                    tally.commit_small(index, files[index].size, put);
                    Ok(())
                }
                Ok((index, Ok(Small::Staged(staged)))) => {
                    batch.push((index, staged));
                    Ok(())
                }
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(TransferError::Source(format!("a file copy stopped: {e}"))),
            },
            Some(done) = async { match committing.as_mut() { Some(commit) => Some(commit.await), None => None } }, if committing.is_some() => {
                committing = None;
                match done {
                    Ok(Ok(puts)) => {
                        for (index, put) in puts {
                            tally.commit_small(index, files[index].size, put);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(TransferError::Sink(format!("a commit of staged files stopped: {e}"))),
                }
            }
            _ = interval.tick() => { flush = true; Ok(()) }
            () = ctx.cancel.cancelled() => Err(TransferError::Cancelled),
        };
        if let Err(e) = step {
            break Err(e);
        }
        if let Err(e) = tally.report(ctx.reporter, false).await {
            break Err(e);
        }
    };
    // A commit under way finishes before the part says how it ended: its names are placed
    // whole or not at all, and no staging file of it is left behind for the next attempt.
    if let Some(commit) = committing.take() {
        let _ = commit.await;
    }
    outcome
}

/// One small file: read whole into buffers of the budget (it fits a request), hashed as it
/// is read, written create-only or over (at a folder: staged, for [`Sink::commit`]).
async fn copy_small(
    node: &str,
    path: &Path,
    listed: &ListedFile,
    key: &str,
    sink: &Sink,
    overwrite: bool,
    bandwidth: &Bandwidth,
) -> Result<Small, TransferError> {
    let mut chunks = buffers::take(listed.size).await?;
    let (node_name, source, file_listed) = (node.to_owned(), path.to_owned(), listed.clone());
    let (chunks, sha256) = source_work(move || {
        let (file, opened) = open_listed(&node_name, &source, &file_listed)?;
        let mut hasher = sha2::Sha256::new();
        let read = read_at(&file, 0, &mut chunks, file_listed.size, |data| hasher.update(data))
            .map_err(|e| unreadable(&node_name, &source, &e))?;
        ends_at(&file, read, &node_name, &source, &file_listed)?;
        unchanged(&source, &file_listed, opened)?;
        Ok((chunks, crate::encoding::hex(&hasher.finalize())))
    })
    .await?;
    bandwidth.consume(listed.size).await;
    if sink.is_folder() {
        sink.stage_small(key, payload(chunks), &sha256).await.map(Small::Staged)
    } else {
        sink.put(key, payload(chunks), &sha256, overwrite).await.map(Small::Put)
    }
}

/// Buffers as one request body, without a copy.
fn payload(chunks: Vec<Chunk>) -> PutPayload {
    chunks.into_iter().filter(|c| !c.is_empty()).map(Chunk::into_bytes).collect()
}

/// What a first pass over a large file found: its SHA-256 and a CRC of each part, which the
/// sending pass checks so that a file changed in between fails.
struct Prehash {
    sha256: String,
    crcs: Vec<u64>,
    opened: Changed,
}

/// One large file in parts, resuming the upload an earlier attempt checkpointed.
///
/// At S3 the SHA-256 goes with the upload when it starts, so the file is read once before
/// (hashed, and a CRC taken of each part); the sending pass then checks each part's CRC
/// instead of hashing again. A folder sink gets the SHA-256 while the file is written (it is
/// stored when the file is published), so the file is read once, unless an object is there
/// already and must be compared first.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn copy_large<R: Reporter>(
    index: usize,
    path: &Path,
    listed: &ListedFile,
    key: &str,
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
    tally: &mut Tally,
) -> Result<Put, TransferError> {
    let resumed = tally
        .checkpoint
        .upload
        .take()
        .filter(|u| u.file == index && u.key == key && u.part_size == PART_SIZE);
    let existing = sink.existing(key).await?;
    let prehash = if sink.is_folder() && existing.is_none() {
        None
    } else {
        Some(prehash(ctx.node, path, listed).await?)
    };
    if let (Some(existing), Some(prehash)) = (&existing, &prehash) {
        let sha256 = &prehash.sha256;
        let same = existing.size == listed.size && existing.sha256.as_deref() == Some(sha256.as_str());
        if same && (!overwrite || resumed.as_ref().is_some_and(|u| &u.sha256 == sha256)) {
            if let Some(upload) = &resumed {
                sink.abort(key, &upload.upload_id).await;
            }
            return Ok(Put::Same);
        }
        if !overwrite {
            return Err(sink.differs(key));
        }
    }
    // An upload goes on only with the content it started with: at S3 the same SHA-256; in a
    // folder (hashed while written) one that was hashed while written too.
    let expected = prehash.as_ref().map_or("", |p| p.sha256.as_str());
    let mut upload = match resumed {
        Some(upload) if upload.sha256 == expected => {
            tracing::info!(%key, stored = upload.parts.iter().flatten().count(), "resuming the upload an earlier attempt started");
            upload
        }
        stale => {
            if let Some(stale) = stale {
                sink.abort(key, &stale.upload_id).await;
            }
            let upload_id = sink.create_upload(key, expected).await?;
            let parts = usize::try_from(listed.size.div_ceil(PART_SIZE)).unwrap_or(usize::MAX);
            Upload {
                file: index,
                key: key.to_owned(),
                upload_id,
                sha256: expected.to_owned(),
                size: listed.size,
                part_size: PART_SIZE,
                parts: vec![None; parts],
            }
        }
    };
    tally.checkpoint.upload = Some(upload.clone());
    if let Err(e) = tally.report(ctx.reporter, true).await {
        // The hub didn't take the checkpoint naming the upload: a cancelled job has no attempt
        // to take over and find it, so it goes now (one that supersedes this sweeps it).
        if !matches!(e, TransferError::Superseded) {
            sink.abort(key, &upload.upload_id).await;
        }
        return Err(e);
    }

    let since = prehash.as_ref().map(|p| p.opened);
    let crcs = prehash.map(|p| p.crcs);
    let result = send_parts(path, listed, key, sink, &mut upload, crcs, since, ctx, tally).await;
    if let Err(e) = result {
        // Only the attempt that takes over from a superseded one continues the upload; a run
        // that fails (or a job cancelled) ends it, so no unfinished upload or staging file stays.
        if !matches!(e, TransferError::Superseded) {
            sink.abort(key, &upload.upload_id).await;
            tally.checkpoint.upload = None;
        }
        return Err(e);
    }
    let sha256 = upload.sha256.clone();
    // The fence: the hub takes this checkpoint only from the run's current attempt.
    tally.checkpoint.upload = Some(upload.clone());
    tally.report(ctx.reporter, true).await?;
    if !overwrite && let Some(existing) = sink.existing(key).await? {
        sink.abort(key, &upload.upload_id).await;
        return if existing.sha256.as_deref() == Some(sha256.as_str()) {
            Ok(Put::Same)
        } else {
            Err(sink.differs(key))
        };
    }
    let parts: Vec<String> = upload.parts.iter().flatten().cloned().collect();
    match sink.complete(key, &upload.upload_id, parts, &sha256, overwrite).await {
        Ok(put) => Ok(put),
        // Completed by an attempt that died before it could say so.
        Err(e) => match sink.existing(key).await? {
            Some(existing) if existing.sha256.as_deref() == Some(sha256.as_str()) => Ok(Put::Written),
            _ => Err(e),
        },
    }
}

/// Reads the file in order and sends the parts the upload lacks. With `crcs` (the first
/// pass's), each part read must match its CRC, and parts already stored aren't read again;
/// without, the file is hashed here and its SHA-256 goes into `upload`.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn send_parts<R: Reporter>(
    path: &Path,
    listed: &ListedFile,
    key: &str,
    sink: &Sink,
    upload: &mut Upload,
    crcs: Option<Vec<u64>>,
    since: Option<Changed>,
    ctx: &Context<'_, R>,
    tally: &mut Tally,
) -> Result<(), TransferError> {
    let (node, source, file_listed) = (ctx.node.to_owned(), path.to_owned(), listed.clone());
    let (file, opened) = source_work(move || open_listed(&node, &source, &file_listed)).await?;
    let file = Arc::new(file);
    // A change since the first pass, if there was one, counts too.
    let since = since.unwrap_or(opened);
    let crcs = crcs.map(Arc::new);
    let mut hasher = crcs.is_none().then(sha2::Sha256::new);
    let sink_arc = Arc::new(sink.clone());
    let mut tasks: JoinSet<(usize, u64, Result<String, TransferError>)> = JoinSet::new();
    let mut interval = tokio::time::interval(REPORT_EVERY);
    let part_count = upload.parts.len();
    let mut next = 0;
    // Every stored part is checkpointed, with one checkpoint in flight at a time while the
    // next parts are read and sent (waiting for the hub's answer would stall the file): a
    // take-over sends again only the parts in flight, or in that checkpoint.
    let mut checkpointing: Option<Pending<'_>> = None;
    let mut unreported = false;
    while next < part_count || !tasks.is_empty() || checkpointing.is_some() {
        if unreported && checkpointing.is_none() {
            checkpointing = Some(tally.checkpoint_later(ctx.reporter));
            unreported = false;
        }
        if next < part_count && tasks.len() < PARTS_IN_FLIGHT {
            let stored = upload.parts[next].is_some();
            if stored && hasher.is_none() {
                next += 1;
                continue;
            }
            let offset = next as u64 * PART_SIZE;
            let size = PART_SIZE.min(listed.size.saturating_sub(offset));
            let mut chunks = buffers::take_unless(size, &ctx.cancel).await?;
            let (file, crcs, mut part_hasher) = (Arc::clone(&file), crcs.clone(), hasher.take());
            let (node, source, file_listed, part) =
                (ctx.node.to_owned(), path.to_owned(), listed.clone(), next);
            let (chunks, part_hasher) = source_work(move || {
                let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
                let read = read_at(&file, offset, &mut chunks, size, |data| match &mut part_hasher {
                    Some(hasher) => hasher.update(data),
                    None => crc.update(data),
                })
                .map_err(|e| unreadable(&node, &source, &e))?;
                let crc_differs = crcs.as_ref().is_some_and(|c| c.get(part) != Some(&crc.finalize()));
                if read != size || crc_differs {
                    return Err(changed(&source, &file_listed));
                }
                Ok((chunks, part_hasher))
            })
            .await?;
            hasher = part_hasher;
            if !stored {
                let (sink, key, upload_id, index) =
                    (Arc::clone(&sink_arc), key.to_owned(), upload.upload_id.clone(), next);
                let bandwidth = ctx.bandwidth.clone();
                tasks.spawn(async move {
                    bandwidth.consume(size).await;
                    let stored = sink.put_part(&key, &upload_id, index, PART_SIZE, payload(chunks)).await;
                    (index, size, stored)
                });
            }
            next += 1;
            continue;
        }
        let joined = tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => joined,
            Some(taken) = OptionFuture::from(checkpointing.as_mut()), if checkpointing.is_some() => {
                checkpointing = None;
                taken?;
                continue;
            }
            _ = interval.tick(), if checkpointing.is_none() => { tally.report(ctx.reporter, false).await?; continue; }
            () = ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
        };
        let (index, size, stored) =
            joined.map_err(|e| TransferError::Sink(format!("a part upload stopped: {e}")))?;
        upload.parts[index] = Some(stored?);
        tally.progress.bytes_sent += size;
        tally.checkpoint.upload = Some(upload.clone());
        unreported = true;
    }
    if let Some(hasher) = hasher {
        upload.sha256 = crate::encoding::hex(&hasher.finalize());
    }
    let (node, source, file_listed) = (ctx.node.to_owned(), path.to_owned(), listed.clone());
    source_work(move || {
        ends_at(&file, file_listed.size, &node, &source, &file_listed)?;
        unchanged(&source, &file_listed, since)
    })
    .await
}

/// The first pass over a large file (for an S3 upload, which needs the SHA-256 first).
async fn prehash(node: &str, path: &Path, listed: &ListedFile) -> Result<Prehash, TransferError> {
    let mut chunks = buffers::take(buffers::CHUNK as u64).await?;
    let (node, path, listed) = (node.to_owned(), path.to_owned(), listed.clone());
    source_work(move || {
        let (file, opened) = open_listed(&node, &path, &listed)?;
        let mut hasher = sha2::Sha256::new();
        let mut crcs = Vec::new();
        let mut offset = 0;
        while offset < listed.size {
            let size = PART_SIZE.min(listed.size - offset);
            let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
            let mut part_read = 0;
            while part_read < size {
                let want = (size - part_read).min(buffers::CHUNK as u64);
                let read = read_at(&file, offset + part_read, &mut chunks, want, |data| {
                    hasher.update(data);
                    crc.update(data);
                })
                .map_err(|e| unreadable(&node, &path, &e))?;
                if read != want {
                    return Err(changed(&path, &listed));
                }
                part_read += read;
            }
            crcs.push(crc.finalize());
            offset += size;
        }
        ends_at(&file, listed.size, &node, &path, &listed)?;
        unchanged(&path, &listed, opened)?;
        Ok(Prehash { sha256: crate::encoding::hex(&hasher.finalize()), crcs, opened })
    })
    .await
}

/// Reads up to `size` bytes from `offset` into `chunks` (in order, as many as it takes), and
/// hands each chunk's bytes to `each` as they are read; the bytes read (fewer at the end of
/// the file).
fn read_at(
    file: &std::fs::File,
    offset: u64,
    chunks: &mut [Chunk],
    size: u64,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<u64> {
    let mut read = 0_u64;
    for chunk in chunks.iter_mut() {
        chunk.set_len(0);
        let want = usize::try_from((size - read).min(buffers::CHUNK as u64)).unwrap_or(0);
        let mut filled = 0;
        while filled < want {
            match file.read_at(&mut chunk.space()[filled..want], offset + read + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        chunk.set_len(filled);
        each(chunk.as_ref());
        read += filled as u64;
        if filled < want || read == size {
            break;
        }
    }
    Ok(read)
}

/// Fails unless the file ends at `size` (read that far): a file that grew changed.
fn ends_at(
    file: &std::fs::File,
    size: u64,
    node: &str,
    path: &Path,
    listed: &ListedFile,
) -> Result<(), TransferError> {
    let mut extra = [0u8; 1];
    let more = file.read_at(&mut extra, size).map_err(|e| unreadable(node, path, &e))?;
    if more > 0 || size != listed.size { Err(changed(path, listed)) } else { Ok(()) }
}

/// Runs blocking file work (reads, hashing) off the async threads.
async fn source_work<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransferError::Source(format!("reading a source file stopped: {e}")))?
}

/// A file's status-change time (ctime, in nanoseconds): every write, and every change of its
/// modification time, moves it on, and nobody can set it back, so it tells a file that was
/// changed and given its old size and modification time again.
type Changed = i128;

fn changed_at(meta: &std::fs::Metadata) -> Changed {
    use std::os::unix::fs::MetadataExt as _;
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

/// Opens `path` if it is still the regular file that was listed (size and modification time):
/// opening a FIFO put in its place would wait for a writer forever (a symbolic link, which
/// listings skip, is refused too). Also its status-change time now, for [`unchanged`].
fn open_listed(
    node: &str,
    path: &Path,
    listed: &ListedFile,
) -> Result<(std::fs::File, Changed), TransferError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(changed(path, listed)),
        Err(e) => return Err(unreadable(node, path, &e)),
    }
    let file = std::fs::File::open(path).map_err(|e| unreadable(node, path, &e))?;
    let meta = file.metadata().map_err(|e| unreadable(node, path, &e))?;
    if meta.is_file() && meta.len() == listed.size && folder::modified_ms(&meta) == listed.modified_ms {
        Ok((file, changed_at(&meta)))
    } else {
        Err(changed(path, listed))
    }
}

/// Fails when the file at `path` isn't as listed any more (size and modification time), or
/// was changed at all since it was opened (`opened`, its status-change time then).
fn unchanged(path: &Path, listed: &ListedFile, opened: Changed) -> Result<(), TransferError> {
    let meta = std::fs::metadata(path).map_err(|_| changed(path, listed))?;
    if meta.len() == listed.size
        && folder::modified_ms(&meta) == listed.modified_ms
        && changed_at(&meta) == opened
    {
        Ok(())
    } else {
        Err(changed(path, listed))
    }
}

fn changed(path: &Path, listed: &ListedFile) -> TransferError {
    TransferError::Source(format!(
        "{} changed while it was being copied (it had {} bytes when the folder was listed); run the job again once the file stays unchanged",
        path.display(),
        listed.size
    ))
}

fn unreadable(node: &str, path: &Path, error: &std::io::Error) -> TransferError {
    if error.kind() == std::io::ErrorKind::NotFound {
        return TransferError::Source(format!(
            "node {node} can't find {}, which was listed; it was removed, or the share isn't mounted at the same path on every node",
            path.display()
        ));
    }
    let hint = match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "the node's user may not read it: check the file's permissions"
        }
        std::io::ErrorKind::IsADirectory => {
            "it is a folder now, not the file that was listed; run the job again"
        }
        _ => "check the disk or share it is on, then run the job again",
    };
    TransferError::Source(format!("node {node} can't read {}: {error}; {hint}", path.display()))
}
