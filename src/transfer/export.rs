//! One part of a SQL copy: a range of the query's rows, exported as CSV or JSON lines into a
//! spool file on this node (hashed as it is written, so memory stays bounded whatever the
//! size) and then written to the sink as `part-NNNNN.csv` (or `.jsonl`) exactly like a file.

use super::sink::Sink;
use super::spec::DatabaseRef;
use super::{Context, Reporter, TransferError, copy, credential, sql};
use crate::protocol::{ListedFile, Part, SqlFormat};
use tokio::io::AsyncWriteExt as _;

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
    let spool = tempfile::Builder::new().prefix("gatehouse-export-").tempdir().map_err(|e| {
        TransferError::Source(format!("node {} can't make a spool folder for the export: {e}", ctx.node))
    })?;
    let path = spool.path().join(&name);
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| {
        TransferError::Source(format!("node {} can't write its spool file {}: {e}", ctx.node, path.display()))
    })?;
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
    let (rows, written) = tokio::select! {
        both = async { tokio::join!(export, write) } => both,
        () = ctx.cancel.cancelled() => return Err(TransferError::Cancelled),
    };
    let rows = rows?;
    written.map_err(|e| {
        TransferError::Source(format!(
            "node {} can't write its spool file {}: {e}; free space in its temporary folder",
            ctx.node,
            path.display()
        ))
    })?;
    drop(file);
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| TransferError::Source(format!("the spool file {} went away: {e}", path.display())))?;
    let listed = ListedFile { path: name, size: meta.len(), modified_ms: super::folder::modified_ms(&meta) };
    let mut result = copy::files(spool.path(), std::slice::from_ref(&listed), sink, overwrite, ctx).await?;
    if let Some(object) = result.as_object_mut() {
        object.insert("rows".into(), rows.into());
        object.insert("object".into(), sink.key(&listed.path).into());
    }
    Ok(result)
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
