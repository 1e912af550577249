//! One part of a SQL copy: a range of the query's rows, exported as CSV or JSON lines to the
//! sink as `part-NNNNN.csv` (or `.jsonl`), exactly once. At a folder sink the rows stream
//! straight into the object's staging file, hashed as they are written, and it is published
//! after the hub's fence. At S3 they stream into a multipart upload ([`super::stream`]).

use super::checkpoint::Upload;
use super::sink::{Put, Sink, Staging};
use super::spec::DatabaseRef;
use super::{Checkpoint, Context, Reporter, TransferError, credential, sql, stream};
use crate::protocol::{Part, SqlFormat, TransferProgress};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The database a SQL source names, with its password from the node's credentials.
pub(super) fn open<R>(database: &DatabaseRef, ctx: &Context<'_, R>) -> Result<sql::Database, TransferError> {
    Ok(match database {
        DatabaseRef::Postgres { url, password_credential } => sql::Database::Postgres {
            url: url.clone(),
            password: password_credential.as_deref().map(|name| credential(ctx, name)).transpose()?,
        },
        DatabaseRef::Sqlite { path } => sql::Database::Sqlite { path: path.clone() },
    })
}

/// Splits `[min, max]` of the partition column into at most `partitions` ranges. The first is
/// open below and takes the NULLs, the last is open above, so rows added since the bounds were
/// read still land in exactly one range.
pub(super) fn ranges(bounds: Option<(i64, i64)>, partitions: u32) -> Vec<Part> {
    let Some((min, max)) = bounds else {
        return vec![Part::Rows { index: 0, lower: None, upper: None, nulls: true }];
    };
    let span = i128::from(max) - i128::from(min) + 1;
    let count = i128::from(partitions.max(1)).min(span);
    let width = (span + count - 1) / count;
    (0..count)
        .map(|i| {
            let bound = |k: i128| i64::try_from(i128::from(min) + k * width).ok();
            Part::Rows {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                lower: if i == 0 { None } else { bound(i) },
                upper: if i == count - 1 { None } else { bound(i + 1) },
                nulls: i == 0,
            }
        })
        .collect()
}

/// The object name of a part's output.
pub fn object_name(index: u32, format: SqlFormat) -> String {
    let extension = match format {
        SqlFormat::Csv => "csv",
        SqlFormat::Jsonl => "jsonl",
    };
    format!("part-{index:05}.{extension}")
}

/// Exports one range to the sink; returns the part's result.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
pub(super) async fn rows<R: Reporter>(
    database: &sql::Database,
    query: &str,
    format: SqlFormat,
    range: Option<&sql::Range>,
    index: u32,
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
) -> Result<serde_json::Value, TransferError> {
    let name = object_name(index, format);
    if ctx.checkpoint.done.contains(&0) {
        // An earlier attempt committed this part's object; the query needn't run again.
        return Ok(serde_json::json!({ "object": sink.key(&name), "resumed": true }));
    }
    if sink.is_folder() {
        return into_staging(database, query, format, range, &name, sink, overwrite, ctx).await;
    }
    stream::to_s3(database, query, format, range, &sink.key(&name), sink, overwrite, ctx).await
}

/// How often a streaming export tells the hub how far it is.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Exports one range straight into the object's staging file at a folder sink, then
/// publishes it create-only (or over it) right after the hub took the fence checkpoint.
#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
async fn into_staging<R: Reporter>(
    database: &sql::Database,
    query: &str,
    format: SqlFormat,
    range: Option<&sql::Range>,
    name: &str,
    sink: &Sink,
    overwrite: bool,
    ctx: &Context<'_, R>,
) -> Result<serde_json::Value, TransferError> {
    let started = Instant::now();
    let key = sink.key(name);
    let keys = [key.clone()];
    // An earlier attempt that took the fence and then died may have published it already.
    if let Some(upload) = ctx.checkpoint.upload.as_ref().filter(|u| u.key == key)
        && let Some(existing) = sink.existing(&key).await?
        && existing.sha256.as_deref() == Some(upload.sha256.as_str())
    {
        sink.sweep(&keys, None).await?;
        return Ok(serde_json::json!({ "object": key, "resumed": true }));
    }
    sink.sweep(&keys, None).await?;
    let Some(staging) = sink.stage(&key).await? else {
        return Err(TransferError::Sink(format!("{key}: only a folder sink takes a streamed export")));
    };
    let upload_id = staging.upload_id.clone();
    let streamed = tokio::select! {
        streamed = stream_into(database, query, format, range, staging, ctx, started) => streamed,
        () = ctx.cancel.cancelled() => Err(TransferError::Cancelled),
    };
    let (rows, staged) = match streamed {
        Ok(done) => done,
        Err(e) => {
            sink.abort(&key, &upload_id).await;
            return Err(e);
        }
    };
    let size = staged.size;
    let sha256 = staged.finish();
    // The fence: the hub takes this checkpoint only from the run's current attempt.
    let mut checkpoint = Checkpoint {
        upload: Some(Upload {
            file: 0,
            key: key.clone(),
            upload_id: upload_id.clone(),
            sha256: sha256.clone(),
            size,
            part_size: size,
            parts: Vec::new(),
        }),
        ..Checkpoint::default()
    };
    let mut report = progress(started, size);
    if let Err(e) = ctx.reporter.checkpoint(report, &checkpoint).await {
        sink.abort(&key, &upload_id).await;
        return Err(e);
    }
    let put = match sink.complete(&key, &upload_id, Vec::new(), &sha256, overwrite).await {
        Ok(put) => put,
        Err(e) => {
            sink.abort(&key, &upload_id).await;
            return Err(e);
        }
    };
    sink.sync_folders(&keys).await?;
    checkpoint.done.insert(0);
    checkpoint.bytes_done = size;
    report.files_done = 1;
    if put == Put::Same {
        report.bytes_skipped = size;
        report.bytes_sent = 0;
    }
    ctx.reporter.checkpoint(report, &checkpoint).await?;
    Ok(serde_json::json!({
        "files": 1,
        "bytes": size,
        "written": u64::from(put == Put::Written),
        "skipped": u64::from(put == Put::Same),
        "bytes_sent": report.bytes_sent,
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows,
        "object": key,
    }))
}

/// A streaming export's progress: what is written is all that is known.
fn progress(started: Instant, bytes: u64) -> TransferProgress {
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "a rate needs no more precision")]
    let rate = if seconds > 0.0 { bytes as f64 / seconds } else { 0.0 };
    TransferProgress {
        bytes_done: bytes,
        bytes_total: bytes,
        files_total: 1,
        bytes_sent: bytes,
        bytes_per_second: rate,
        ..TransferProgress::default()
    }
}

/// Runs the export into `staging` on a blocking writer, reporting the bytes written every
/// second; the rows and the written staging file.
async fn stream_into<R: Reporter>(
    database: &sql::Database,
    query: &str,
    format: SqlFormat,
    range: Option<&sql::Range>,
    staging: Staging,
    ctx: &Context<'_, R>,
    started: Instant,
) -> Result<(u64, Staging), TransferError> {
    let written = Arc::new(AtomicU64::new(0));
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
    let counter = Arc::clone(&written);
    // A failed write drops the receiver, which stops the export.
    let writer = tokio::task::spawn_blocking(move || {
        let mut staging = staging;
        while let Some(chunk) = receiver.blocking_recv() {
            staging.write(&chunk)?;
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok::<_, TransferError>(staging)
    });
    let work = async { tokio::join!(sql::export(database, query, format, range, sender), writer) };
    let mut work = std::pin::pin!(work);
    let mut interval = tokio::time::interval(REPORT_EVERY);
    interval.tick().await;
    let (rows, staged) = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = interval.tick() => ctx.reporter.progress(progress(started, written.load(Ordering::Relaxed))),
        }
    };
    // A failed write first: it is why an export stopped as "cancelled" (nothing read its rows).
    let staged = staged.map_err(|e| TransferError::Sink(format!("writing the export stopped: {e}")))??;
    Ok((rows?, staged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds_of(parts: &[Part]) -> Vec<(Option<i64>, Option<i64>, bool)> {
        parts
            .iter()
            .map(|p| match p {
                Part::Rows { lower, upper, nulls, .. } => (*lower, *upper, *nulls),
                Part::Files { .. } => panic!("a rows part"),
            })
            .collect()
    }

    #[test]
    fn ranges_cover_everything_once() {
        let parts = ranges(Some((1, 100)), 4);
        assert_eq!(
            bounds_of(&parts),
            vec![
                (None, Some(26), true),
                (Some(26), Some(51), false),
                (Some(51), Some(76), false),
                (Some(76), None, false)
            ]
        );
    }

    #[test]
    fn fewer_values_than_partitions_make_fewer_ranges() {
        assert_eq!(bounds_of(&ranges(Some((5, 6)), 8)), vec![(None, Some(6), true), (Some(6), None, false)]);
        assert_eq!(bounds_of(&ranges(None, 8)), vec![(None, None, true)]);
        assert_eq!(ranges(Some((i64::MIN, i64::MAX)), 3).len(), 3);
    }

    #[test]
    fn objects_are_named_by_partition() {
        assert_eq!(object_name(7, SqlFormat::Csv), "part-00007.csv");
        assert_eq!(object_name(12, SqlFormat::Jsonl), "part-00012.jsonl");
    }
}
