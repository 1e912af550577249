//! What a copy activity means, checked once: the job spec's `source` and `sink` (wire types in
//! `protocol`) turned into typed values, or refused with a sentence that says what to use
//! instead. Pure: no file, network or clock; the hub calls it at submit, the node before it
//! copies.

use crate::protocol::{Activity, CopySink, CopySource, SqlFormat};
use std::path::PathBuf;

/// Most partitions one activity may split into (a SQL `partitions` or a folder listing).
pub const MAX_PARTITIONS: u32 = 10_000;

/// A copy's source, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Folder { root: PathBuf, include: Vec<String>, exclude: Vec<String> },
    Sql { database: DatabaseRef, query: String, format: SqlFormat, split: Option<Split> },
}

/// A database as the spec names it; the password is looked up on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseRef {
    Postgres { url: String, password_credential: Option<String> },
    Sqlite { path: PathBuf },
}

/// How a query is split into ranges of an integer column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub column: String,
    pub partitions: u32,
}

/// A copy's sink, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A folder; `root` is absolute.
    File { root: PathBuf },
    /// `prefix` is empty or ends with `/`.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        credential: String,
        ca_file: Option<PathBuf>,
    },
}

/// Why a copy activity can't run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl SpecError {
    fn new(message: impl Into<String>) -> Self {
        SpecError(message.into())
    }
}

/// Checks a copy activity's source and sink together.
pub fn check(source: &CopySource, sink: &CopySink) -> Result<(Source, Sink), SpecError> {
    Ok((check_source(source)?, check_sink(sink)?))
}

/// Checks what an activity of the job spec means, as the hub does at submit: a copy's source
/// and sink; the test kinds have nothing to check.
pub fn check_activity(activity: &Activity) -> Result<(), SpecError> {
    let Activity::Copy { source, sink, .. } = activity else { return Ok(()) };
    check(source, sink).map(|_| ())
}

/// The node credentials an activity needs, by name (none for the test kinds).
pub fn credential_names(activity: &Activity) -> Vec<&str> {
    let Activity::Copy { source, sink, .. } = activity else { return Vec::new() };
    source.password_credential.iter().chain(sink.credential.iter()).map(String::as_str).collect()
}

fn check_source(source: &CopySource) -> Result<Source, SpecError> {
    let given: Vec<&str> = [
        source.folder.as_ref().map(|_| "folder"),
        source.postgres.as_ref().map(|_| "postgres"),
        source.sqlite.as_ref().map(|_| "sqlite"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => Err(SpecError::new(
            "the source names nothing to read; give one of folder (an absolute path), postgres (a URL) or sqlite (an absolute path to a database file)",
        )),
        [_] => {
            if let Some(folder) = &source.folder {
                folder_source(folder, source)
            } else {
                sql_source(source)
            }
        }
        [first, second, ..] => Err(SpecError::new(format!(
            "the source names both {first} and {second}; a copy reads one source, so keep one and copy the other in another activity"
        ))),
    }
}

fn folder_source(folder: &str, source: &CopySource) -> Result<Source, SpecError> {
    let root = absolute_path(folder, "source folder")?;
    let sql_keys = [
        ("query", source.query.is_some()),
        ("format", source.format.is_some()),
        ("partition_column", source.partition_column.is_some()),
        ("partitions", source.partitions.is_some()),
        ("password_credential", source.password_credential.is_some()),
    ];
    if let Some((key, _)) = sql_keys.iter().find(|(_, set)| *set) {
        return Err(SpecError::new(format!(
            "{key} is for postgres and sqlite sources; a folder copy takes only include and exclude globs"
        )));
    }
    for glob in source.include.iter().chain(&source.exclude) {
        globset::Glob::new(glob).map_err(|e| {
            SpecError::new(format!(
                "the glob {glob:?} can't be read ({}); write globs like **/*.csv or tmp/**",
                e.kind()
            ))
        })?;
    }
    Ok(Source::Folder { root, include: source.include.clone(), exclude: source.exclude.clone() })
}

fn sql_source(source: &CopySource) -> Result<Source, SpecError> {
    if !source.include.is_empty() || !source.exclude.is_empty() {
        return Err(SpecError::new(
            "include and exclude are for folder sources; narrow a SQL source with its query's WHERE clause",
        ));
    }
    let database = if let Some(url) = &source.postgres {
        postgres_url(url)?;
        DatabaseRef::Postgres { url: url.clone(), password_credential: source.password_credential.clone() }
    } else {
        if source.password_credential.is_some() {
            return Err(SpecError::new(
                "password_credential is for postgres sources; a SQLite file needs no password",
            ));
        }
        let path = source.sqlite.as_deref().unwrap_or_default();
        DatabaseRef::Sqlite { path: absolute_path(path, "sqlite database")? }
    };
    let query = source.query.as_deref().map(str::trim).unwrap_or_default();
    if query.is_empty() {
        return Err(SpecError::new("a SQL source needs a query, e.g. \"query\": \"SELECT * FROM orders\""));
    }
    let split = match (&source.partition_column, source.partitions) {
        (None, None) => None,
        (Some(column), Some(partitions)) => {
            if column.trim().is_empty() {
                return Err(SpecError::new("partition_column is empty; name an integer column of the query"));
            }
            if partitions == 0 || partitions > MAX_PARTITIONS {
                return Err(SpecError::new(format!("partitions is {partitions}; use 1 to {MAX_PARTITIONS}")));
            }
            Some(Split { column: column.clone(), partitions })
        }
        (Some(_), None) => {
            return Err(SpecError::new(
                "partition_column needs partitions too: how many ranges to split the query into, e.g. 8",
            ));
        }
        (None, Some(_)) => {
            return Err(SpecError::new(
                "partitions needs partition_column too: the integer column whose ranges split the query",
            ));
        }
    };
    Ok(Source::Sql {
        database,
        query: query.trim_end_matches(';').to_owned(),
        format: source.format.unwrap_or_default(),
        split,
    })
}

fn postgres_url(url: &str) -> Result<(), SpecError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(SpecError::new(format!(
            "the postgres source {:?} is not a postgres:// URL; write postgres://user@host:5432/database",
            redact_url(url)
        )));
    }
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        SpecError::new(format!(
            "the postgres URL {:?} can't be read ({e}); write postgres://user@host:5432/database",
            redact_url(url)
        ))
    })?;
    if config.get_password().is_some() {
        return Err(SpecError::new(
            "the postgres URL carries a password, which would be stored at the hub; remove it and name a node credential in password_credential",
        ));
    }
    Ok(())
}

/// `url` with anything between `//` and `@` hidden, so a password typed into it isn't echoed.
fn redact_url(url: &str) -> String {
    match (url.find("//"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}//…{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

fn check_sink(sink: &CopySink) -> Result<Sink, SpecError> {
    let (scheme, rest) = sink.url.split_once("://").ok_or_else(|| {
        SpecError::new(format!(
            "the sink URL {:?} has no scheme; use file:///absolute/path/ or s3://bucket/prefix/",
            sink.url
        ))
    })?;
    match scheme {
        "file" => {
            for (key, set) in [
                ("endpoint", sink.endpoint.is_some()),
                ("region", sink.region.is_some()),
                ("credential", sink.credential.is_some()),
                ("ca_file", sink.ca_file.is_some()),
            ] {
                if set {
                    return Err(SpecError::new(format!(
                        "{key} is for s3:// sinks; a file:// sink is a folder and takes only its URL"
                    )));
                }
            }
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(SpecError::new(format!(
                    "the sink URL {:?} names no absolute folder; write file:///absolute/path/ (three slashes)",
                    sink.url
                )));
            }
            Ok(Sink::File { root: absolute_path(path, "sink folder")? })
        }
        "s3" => s3_sink(rest, sink),
        other => Err(SpecError::new(format!(
            "sink URLs with {other}:// are not supported; use file:///absolute/path/ or s3://bucket/prefix/ (with endpoint for any S3-compatible server)"
        ))),
    }
}

fn s3_sink(rest: &str, sink: &CopySink) -> Result<Sink, SpecError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_bucket {
        return Err(SpecError::new(format!(
            "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' or '.'); write s3://bucket/prefix/"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(SpecError::new(format!(
            "the sink prefix {prefix:?} has empty, '.' or '..' parts; write s3://bucket/some/prefix/"
        )));
    }
    if let Some(endpoint) = &sink.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(SpecError::new(format!(
            "the endpoint {endpoint:?} is not an http:// or https:// URL; write e.g. https://s3.example.internal:9000"
        )));
    }
    let credential = sink.credential.clone().ok_or_else(|| {
        SpecError::new(
            "an s3:// sink needs credential: the name of a node credential holding ACCESS_KEY_ID:SECRET_ACCESS_KEY (set it with: gatehouse node credential set NAME)",
        )
    })?;
    let ca_file = sink.ca_file.as_deref().map(|f| absolute_path(f, "ca_file")).transpose()?;
    Ok(Sink::S3 {
        bucket: bucket.to_owned(),
        prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        endpoint: sink.endpoint.clone(),
        region: sink.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
        credential,
        ca_file,
    })
}

fn absolute_path(path: &str, what: &str) -> Result<PathBuf, SpecError> {
    if path.starts_with("\\\\") || path.contains('\\') || path.get(1..2) == Some(":") {
        return Err(SpecError::new(format!(
            "the {what} {path:?} is a Windows path; mount the share at the same absolute path on every node (e.g. /mnt/exports) and name that"
        )));
    }
    if !path.starts_with('/') {
        return Err(SpecError::new(format!(
            "the {what} {path:?} is relative; name it by its absolute path (e.g. /srv/exports), the same on every node"
        )));
    }
    if path.split('/').any(|p| p == "..") {
        return Err(SpecError::new(format!(
            "the {what} {path:?} has '..' in it; name the folder it means directly"
        )));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(json: serde_json::Value) -> Result<Source, SpecError> {
        let source: CopySource = serde_json::from_value(json).expect("a CopySource");
        check_source(&source)
    }

    fn sink(json: serde_json::Value) -> Result<Sink, SpecError> {
        let sink: CopySink = serde_json::from_value(json).expect("a CopySink");
        check_sink(&sink)
    }

    fn refused(result: Result<impl std::fmt::Debug, SpecError>, says: &str) {
        let error = result.expect_err("refused").to_string();
        assert!(error.contains(says), "{error:?} should say {says:?}");
    }

    #[test]
    fn a_folder_source_must_be_absolute() {
        refused(source(serde_json::json!({"folder": "exports"})), "relative");
        refused(source(serde_json::json!({"folder": "\\\\localhost\\share"})), "Windows path");
        refused(source(serde_json::json!({"folder": "C:/data"})), "Windows path");
        refused(source(serde_json::json!({"folder": "/srv/../etc"})), "'..'");
        assert!(matches!(source(serde_json::json!({"folder": "/srv/exports"})), Ok(Source::Folder { .. })));
    }

    #[test]
    fn a_source_reads_exactly_one_thing() {
        refused(source(serde_json::json!({})), "names nothing");
        refused(
            source(serde_json::json!({"folder": "/a", "sqlite": "/b.db", "query": "x"})),
            "both folder and sqlite",
        );
        refused(source(serde_json::json!({"folder": "/a", "query": "SELECT 1"})), "query is for");
        refused(
            source(serde_json::json!({"sqlite": "/a.db", "query": "x", "include": ["*"]})),
            "include and exclude",
        );
    }

    #[test]
    fn bad_globs_are_named() {
        refused(source(serde_json::json!({"folder": "/a", "include": ["a[b"]})), "\"a[b\"");
    }

    #[test]
    fn sql_sources_need_a_query_and_both_split_keys() {
        refused(source(serde_json::json!({"sqlite": "/a.db"})), "needs a query");
        refused(
            source(serde_json::json!({"sqlite": "/a.db", "query": "q", "partitions": 4})),
            "partition_column",
        );
        refused(
            source(serde_json::json!({"sqlite": "/a.db", "query": "q", "partition_column": "id"})),
            "needs partitions",
        );
        refused(
            source(
                serde_json::json!({"sqlite": "/a.db", "query": "q", "partition_column": "id", "partitions": 0}),
            ),
            "use 1 to 10000",
        );
        let ok = source(
            serde_json::json!({"sqlite": "/a.db", "query": "SELECT 1;", "partition_column": "id", "partitions": 3}),
        );
        assert_eq!(
            ok,
            Ok(Source::Sql {
                database: DatabaseRef::Sqlite { path: "/a.db".into() },
                query: "SELECT 1".into(),
                format: SqlFormat::Csv,
                split: Some(Split { column: "id".into(), partitions: 3 }),
            })
        );
    }

    #[test]
    fn a_postgres_url_never_carries_its_password() {
        let error = source(serde_json::json!({"postgres": "postgres://u:hunter2@db/x", "query": "q"}))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("password_credential") && !error.contains("hunter2"), "{error}");
        refused(
            source(serde_json::json!({"postgres": "mysql://u@db/x", "query": "q"})),
            "not a postgres:// URL",
        );
        assert!(
            source(serde_json::json!({"postgres": "postgres://reader@db.internal:5432/sales", "query": "q"}))
                .is_ok()
        );
    }

    #[test]
    fn sink_urls_are_file_or_s3() {
        refused(sink(serde_json::json!({"url": "gs://b/p/"})), "gs:// are not supported");
        refused(sink(serde_json::json!({"url": "landing/"})), "no scheme");
        refused(sink(serde_json::json!({"url": "file://landing/"})), "three slashes");
        refused(sink(serde_json::json!({"url": "file:///l/", "endpoint": "http://x"})), "endpoint is for s3");
        refused(
            sink(serde_json::json!({"url": "s3://Bad_Bucket/p/", "credential": "c"})),
            "not an S3 bucket name",
        );
        refused(sink(serde_json::json!({"url": "s3://lake/p/"})), "needs credential");
        refused(
            sink(serde_json::json!({"url": "s3://lake/p/", "credential": "c", "endpoint": "ftp://x"})),
            "not an http",
        );
        assert_eq!(
            sink(serde_json::json!({"url": "file:///mnt/landing/"})),
            Ok(Sink::File { root: "/mnt/landing/".into() })
        );
        let Ok(Sink::S3 { bucket, prefix, region, .. }) =
            sink(serde_json::json!({"url": "s3://lake/exports", "credential": "lake"}))
        else {
            panic!("an s3 sink")
        };
        assert_eq!((bucket.as_str(), prefix.as_str(), region.as_str()), ("lake", "exports/", "us-east-1"));
    }

    #[test]
    fn credentials_named_by_an_activity() {
        let activity: Activity = serde_json::from_value(serde_json::json!({
            "kind": "copy",
            "source": {"postgres": "postgres://r@db/x", "password_credential": "warehouse", "query": "q"},
            "sink": {"url": "s3://lake/x/", "credential": "lake"}
        }))
        .expect("an activity");
        assert_eq!(credential_names(&activity), vec!["warehouse", "lake"]);
    }

    #[test]
    fn unknown_keys_are_refused_by_the_wire_types() {
        let error = serde_json::from_value::<Activity>(serde_json::json!({
            "kind": "copy", "source": {"folder": "/a", "recursive": true}, "sink": {"url": "file:///b/"}
        }))
        .expect_err("refused")
        .to_string();
        assert!(error.contains("recursive"), "{error}");
    }
}
