//! One part of a folder copy: its files, read and hashed on this node and written to the sink
//! exactly once. Small files go up several at a time in one request each; a large file goes
//! up in parts, checkpointed at the hub as they are stored, so the attempt that takes over
//! continues the same upload. Memory stays bounded: every buffer comes out of one node-wide
//! budget.

use super::bandwidth::Bandwidth;
use super::checkpoint::Upload;
use super::sink::{Put, Sink};
use super::{Checkpoint, Context, Reporter, TransferError, folder};
use crate::protocol::{ListedFile, TransferProgress};
use bytes::Bytes;
use sha2::Digest as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Files up to this size go in one request; larger ones in parts of this size (S3 wants at
/// least 5 MiB per part but the last).
pub const PART_SIZE: u64 = 8 << 20;
/// Small files in flight at once in one run.
const FILES_IN_FLIGHT: usize = 4;
/// Parts of a large file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Buffers of every copy on this node together, in MiB.
const BUDGET_MIB: usize = 32;
/// How often progress goes to the hub, and at most how long committed files wait for a checkpoint.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The node-wide buffer budget, in MiB permits.
fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BUDGET_MIB)))
}

async fn reserve(bytes: u64) -> Result<tokio::sync::OwnedSemaphorePermit, TransferError> {
    let mib = u32::try_from(bytes.div_ceil(1 << 20).clamp(1, BUDGET_MIB as u64)).unwrap_or(1);
    Arc::clone(budget())
        .acquire_many_owned(mib)
        .await
        .map_err(|_| TransferError::Source("the copy's memory budget is closed".into()))
}

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

    /// Sends a checkpoint when enough is unreported, else plain progress now and then.
    async fn report<R: Reporter>(&mut self, reporter: &R, force: bool) -> Result<(), TransferError> {
        let due = self.last_report.elapsed() >= REPORT_EVERY;
        if force || (self.unreported_commits > 0 && (due || self.unreported_commits >= 64)) {
            let progress = self.progress();
            reporter.checkpoint(progress, &self.checkpoint).await?;
            self.unreported_commits = 0;
            self.last_report = Instant::now();
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
    sink.sweep(&keys, resumed.as_ref().map(|u| u.upload_id.as_str())).await?;

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

    // Small files: a few at a time, each its own task so a checkpoint doesn't hold them up.
    let sink_arc = Arc::new(sink.clone());
    let mut tasks: JoinSet<(usize, Result<Put, TransferError>)> = JoinSet::new();
    let mut queue = small.into_iter();
    let mut interval = tokio::time::interval(REPORT_EVERY);
    loop {
        while tasks.len() < FILES_IN_FLIGHT {
            let Some(index) = queue.next() else { break };
            let (file, key, path) =
                (files[index].clone(), keys[index].clone(), folder::local_path(root, &files[index]));
            let (sink, node, bandwidth) = (Arc::clone(&sink_arc), ctx.node.to_owned(), ctx.bandwidth.clone());
            tasks.spawn(async move {
                (index, copy_small(&node, &path, &file, &key, &sink, overwrite, &bandwidth).await)
            });
        }
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = interval.tick() => { tally.report(ctx.reporter, false).await?; continue; }
            () = ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
        };
        let Some(joined) = joined else { break };
        let (index, outcome) =
            joined.map_err(|e| TransferError::Source(format!("a file copy stopped: {e}")))?;
        let put = outcome?;
        if put == Put::Written {
            tally.progress.bytes_sent += files[index].size;
        }
        tally.commit(index, files[index].size, put);
        tally.report(ctx.reporter, false).await?;
    }

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

/// One small file: read whole (it fits a request), hashed, written create-only or over.
async fn copy_small(
    node: &str,
    path: &Path,
    listed: &ListedFile,
    key: &str,
    sink: &Sink,
    overwrite: bool,
    bandwidth: &Bandwidth,
) -> Result<Put, TransferError> {
    let _permit = reserve(listed.size).await?;
    still_a_file(node, path, listed).await?;
    let data = tokio::fs::read(path).await.map_err(|e| unreadable(node, path, &e))?;
    unchanged(path, listed, Some(data.len() as u64)).await?;
    let sha256 = crate::encoding::hex(&sha2::Sha256::digest(&data));
    bandwidth.consume(listed.size).await;
    sink.put(key, Bytes::from(data), &sha256, overwrite).await
}

/// One large file in parts, resuming the upload an earlier attempt checkpointed.
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
    // The SHA-256 goes with the upload when it starts, so the file is read once before.
    still_a_file(ctx.node, path, listed).await?;
    let sha256 = hash_file(ctx.node, path).await?;
    unchanged(path, listed, None).await?;
    let resumed = tally.checkpoint.upload.take().filter(|u| u.file == index && u.key == key);
    if let Some(existing) = sink.existing(key).await? {
        let same = existing.size == listed.size && existing.sha256.as_deref() == Some(sha256.as_str());
        if same && (!overwrite || resumed.as_ref().is_some_and(|u| u.sha256 == sha256)) {
            if let Some(upload) = &resumed {
                sink.abort(key, &upload.upload_id).await;
            }
            return Ok(Put::Same);
        }
        if !overwrite {
            return Err(sink.differs(key));
        }
    }
    let mut upload = match resumed {
        Some(upload) if upload.sha256 == sha256 && upload.part_size == PART_SIZE => {
            tracing::info!(%key, stored = upload.parts.iter().flatten().count(), "resuming the upload an earlier attempt started");
            upload
        }
        stale => {
            if let Some(stale) = stale {
                sink.abort(key, &stale.upload_id).await;
            }
            let upload_id = sink.create_upload(key, &sha256).await?;
            let parts = usize::try_from(listed.size.div_ceil(PART_SIZE)).unwrap_or(usize::MAX);
            Upload {
                file: index,
                key: key.to_owned(),
                upload_id,
                sha256: sha256.clone(),
                part_size: PART_SIZE,
                parts: vec![None; parts],
            }
        }
    };
    tally.checkpoint.upload = Some(upload.clone());
    tally.report(ctx.reporter, true).await?;

    let result = send_parts(path, listed, key, sink, &mut upload, ctx, tally).await;
    if let Err(e) = result {
        // Only the attempt that takes over from a superseded one continues the upload; a run
        // that fails (or a job cancelled) ends it, so no unfinished upload or staging file stays.
        if !matches!(e, TransferError::Superseded) {
            sink.abort(key, &upload.upload_id).await;
            tally.checkpoint.upload = None;
        }
        return Err(e);
    }
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

/// Reads the file in order, re-hashing it, and sends the parts the upload lacks.
async fn send_parts<R: Reporter>(
    path: &Path,
    listed: &ListedFile,
    key: &str,
    sink: &Sink,
    upload: &mut Upload,
    ctx: &Context<'_, R>,
    tally: &mut Tally,
) -> Result<(), TransferError> {
    still_a_file(ctx.node, path, listed).await?;
    let mut file = tokio::fs::File::open(path).await.map_err(|e| unreadable(ctx.node, path, &e))?;
    let mut hasher = sha2::Sha256::new();
    let sink_arc = Arc::new(sink.clone());
    let mut tasks: JoinSet<(usize, u64, Result<String, TransferError>)> = JoinSet::new();
    let mut interval = tokio::time::interval(REPORT_EVERY);
    let part_count = upload.parts.len();
    let mut next = 0;
    while next < part_count || !tasks.is_empty() {
        if next < part_count && tasks.len() < PARTS_IN_FLIGHT {
            let permit = reserve(PART_SIZE).await?;
            let mut buffer = vec![0; usize::try_from(PART_SIZE).unwrap_or(usize::MAX)];
            let filled =
                read_full(&mut file, &mut buffer).await.map_err(|e| unreadable(ctx.node, path, &e))?;
            buffer.truncate(filled);
            hasher.update(&buffer);
            let size = filled as u64;
            if upload.parts[next].is_none() {
                let (sink, key, upload_id, index) =
                    (Arc::clone(&sink_arc), key.to_owned(), upload.upload_id.clone(), next);
                let bandwidth = ctx.bandwidth.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    bandwidth.consume(size).await;
                    let stored = sink.put_part(&key, &upload_id, index, PART_SIZE, Bytes::from(buffer)).await;
                    (index, size, stored)
                });
            }
            next += 1;
            continue;
        }
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = interval.tick() => { tally.report(ctx.reporter, false).await?; continue; }
            () = ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
        };
        let Some(joined) = joined else { continue };
        let (index, size, stored) =
            joined.map_err(|e| TransferError::Sink(format!("a part upload stopped: {e}")))?;
        upload.parts[index] = Some(stored?);
        tally.progress.bytes_sent += size;
        tally.checkpoint.upload = Some(upload.clone());
        // Every stored part is checkpointed: a take-over sends again only the parts in flight.
        tally.report(ctx.reporter, true).await?;
    }
    let mut extra = [0u8; 1];
    let longer = file.read(&mut extra).await.map_err(|e| unreadable(ctx.node, path, &e))? > 0;
    if longer || crate::encoding::hex(&hasher.finalize()) != upload.sha256 {
        return Err(changed(path, listed));
    }
    unchanged(path, listed, None).await
}

async fn read_full(file: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = file.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

async fn hash_file(node: &str, path: &Path) -> Result<String, TransferError> {
    let (node, path) = (node.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(|e| unreadable(&node, &path, &e))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| unreadable(&node, &path, &e))?;
        Ok(crate::encoding::hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| TransferError::Source(format!("hashing stopped: {e}")))?
}

/// Fails unless `path` is still a regular file, as listed: opening a FIFO put in its place
/// would wait for a writer forever (a symbolic link, which listings skip, is refused too).
async fn still_a_file(node: &str, path: &Path, listed: &ListedFile) -> Result<(), TransferError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(changed(path, listed)),
        Err(e) => Err(unreadable(node, path, &e)),
    }
}

/// Fails when the file isn't as listed any more (size, modification time, or bytes read).
async fn unchanged(path: &Path, listed: &ListedFile, read: Option<u64>) -> Result<(), TransferError> {
    let meta = tokio::fs::metadata(path).await.map_err(|_| changed(path, listed))?;
    let same = meta.len() == listed.size
        && folder::modified_ms(&meta) == listed.modified_ms
        && read.is_none_or(|n| n == listed.size);
    if same { Ok(()) } else { Err(changed(path, listed)) }
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
