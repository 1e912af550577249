//! One part of a SQL copy: a range of the query's rows, exported as CSV or JSON lines into a
//! spool file in this node's temporary folder (so memory stays bounded whatever the size) and
//! then written to the sink as `part-NNNNN.csv` (or `.jsonl`) exactly like a file, hashed as
//! the file copy reads it.

use super::sink::Sink;
use super::spec::DatabaseRef;
use super::{Context, Reporter, TransferError, copy, credential, sql};
use crate::protocol::{ListedFile, Part, SqlFormat};
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
