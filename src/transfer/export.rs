//! One part of a SQL copy: a range of the query's rows, exported as CSV or JSON lines to the
//! sink as `part-NNNNN.csv` (or `.jsonl`), exactly once. At a folder sink the rows stream
//! straight into the object's staging file, hashed as they are written, and it is published
//! after the hub's fence. At S3 the object's SHA-256 must go with the upload when it starts,
//! so the rows are spooled to a file in this node's temporary folder first (memory stays
//! bounded whatever the size) and then written like a file of a folder copy.

use super::checkpoint::Upload;
use super::sink::{Put, Sink, Staging};
use super::spec::DatabaseRef;
use super::{Checkpoint, Context, Reporter, TransferError, copy, credential, sql};
use crate::protocol::{ListedFile, Part, SqlFormat, TransferProgress};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

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
    let folder = tempfile::Builder::new().prefix("gatehouse-export-").tempdir().map_err(|e| {
        TransferError::Source(format!("node {} can't make a spool folder for the export: {e}", ctx.node))
    })?;
    let path = folder.path().join(&name);
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| {
        TransferError::Source(format!("node {} can't write its spool file {}: {e}", ctx.node, path.display()))
    })?;
    let rows = tokio::select! {
        spooled = spool(database, query, format, range, &mut file) => spooled,
        () = ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
    };
    let rows = rows.map_err(|e| match e {
        Spooled::Query(e) => TransferError::Sql(e),
        Spooled::Write(e) => TransferError::Source(format!(
            "node {} can't write its spool file {}: {e}; free space in its temporary folder",
            ctx.node,
            path.display()
        )),
    })?;
    drop(file);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| TransferError::Source(format!("the spool file {} went away: {e}", path.display())))?;
    let listed = ListedFile { path: name, size: meta.len(), modified_ms: super::folder::modified_ms(&meta) };
    let mut result = copy::files(folder.path(), std::slice::from_ref(&listed), sink, overwrite, ctx).await?;
    if let Some(object) = result.as_object_mut() {
        object.insert("rows".into(), rows.into());
        object.insert("object".into(), sink.key(&listed.path).into());
    }
    Ok(result)
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

/// Why spooling an export stopped.
#[derive(Debug)]
enum Spooled {
    /// The query failed.
    Query(sql::SqlError),
    /// The spool file couldn't be written (the export then stopped too, for nothing read it).
    Write(std::io::Error),
}

/// Exports the rows into `file`; how many there were.
async fn spool(
    database: &sql::Database,
    query: &str,
    format: SqlFormat,
    range: Option<&sql::Range>,
    file: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, Spooled> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let export = sql::export(database, query, format, range, sender);
    // The receiver lives in here, so a failed write closes the channel and stops the export.
    let write = async {
        let mut receiver = receiver;
        while let Some(chunk) = receiver.recv().await {
            file.write_all(&chunk).await?;
        }
        file.flush().await
    };
    let (rows, written) = tokio::join!(export, write);
    // A failed write first: it is why an export stopped as "cancelled" (nothing read its rows).
    written.map_err(Spooled::Write)?;
    rows.map_err(Spooled::Query)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails like a full disk.
    struct FullDisk {
        room: usize,
    }

    impl AsyncWrite for FullDisk {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.room == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::from_raw_os_error(28)));
            }
            let taken = buf.len().min(self.room);
            self.room -= taken;
            std::task::Poll::Ready(Ok(taken))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A SQLite file whose `SELECT * FROM t` is about `rows` × 100 bytes of CSV.
    fn database(rows: u32) -> (tempfile::TempDir, sql::Database) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("t.db");
        let connection = rusqlite::Connection::open(&path).expect("a SQLite file");
        connection
            .execute_batch(&format!(
                "CREATE TABLE t AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
                 SELECT i, printf('%.90d', i) AS padding FROM n"
            ))
            .expect("the table");
        (dir, sql::Database::Sqlite { path })
    }

    #[tokio::test]
    async fn a_spool_file_that_cant_be_written_is_named_as_the_cause_not_the_query() {
        let (_dir, db) = database(100_000);
        let mut full = FullDisk { room: 3 << 20 };
        let error = spool(&db, "SELECT * FROM t", SqlFormat::Csv, None, &mut full).await.expect_err("fails");
        assert!(matches!(&error, Spooled::Write(e) if e.raw_os_error() == Some(28)), "{error:?}");

        let mut file = Vec::new();
        assert_eq!(
            spool(&db, "SELECT * FROM t", SqlFormat::Csv, None, &mut file).await.expect("spooled"),
            100_000
        );
        assert!(file.starts_with(b"i,padding\n1,0000"), "{:?}", String::from_utf8_lossy(&file[..40]));
        let error = spool(&db, "SELEC 1", SqlFormat::Csv, None, &mut Vec::new()).await.expect_err("fails");
        assert!(matches!(&error, Spooled::Query(sql::SqlError::Syntax { .. })), "{error:?}");
    }

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
