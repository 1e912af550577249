//! SQL sources against real databases: a throwaway PostgreSQL cluster (`tests/common/postgres`)
//! and SQLite files made here, holding the same awkward values (commas, quotes, newlines,
//! unicode, NULLs, empty strings, float edge cases, bytes). The format contract is PostgreSQL's
//! own `COPY … CSV HEADER` and `row_to_json`: the exports must equal them, and the SQLite writer
//! must give the same text for the same rows. Also ranges, bounds, chunk sizes, cancellation,
//! read-only access and what every error says. Every wait is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use bytes::Bytes;
use common::postgres::Postgres;
use gatehouse::protocol::SqlFormat;
use gatehouse::transfer::sql::{self, CHUNK_BYTES, Database, Range, SqlError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One row of the `things` table, in both databases.
struct Thing {
    id: Option<i64>,
    name: Option<&'static str>,
    score: Option<f64>,
    data: Option<&'static [u8]>,
}

const fn thing(
    id: Option<i64>,
    name: Option<&'static str>,
    score: Option<f64>,
    data: Option<&'static [u8]>,
) -> Thing {
    Thing { id, name, score, data }
}

/// In the order of [`ORDERED`].
const THINGS: &[Thing] = &[
    thing(Some(1), Some("plain"), Some(1.5), Some(&[0x00, 0x01, 0xff])),
    thing(Some(2), Some("comma, here"), Some(0.1), Some(&[])),
    thing(Some(3), Some("quote \" inside"), Some(1e20), None),
    thing(Some(4), Some("new\nline and\r\nCRLF"), Some(-2.5e-5), Some(&[0xde, 0xad, 0xbe, 0xef])),
    thing(Some(5), Some("ünïcödé ✔ 日本"), Some(1e-7), None),
    thing(Some(6), Some(""), None, None),
    thing(Some(7), None, Some(123_456_789_012_345.6), None),
    thing(Some(8), Some("\\."), Some(1e15), None),
    thing(Some(9), Some("tab\there \\ backslash \u{1} control"), Some(5e-324), None),
    thing(None, Some("  spaces  "), Some(f64::MAX), None),
    thing(None, Some("no id"), Some(2.0), None),
];

const ORDERED: &str = "SELECT * FROM things ORDER BY id IS NULL, id, name";

/// What both databases write for [`ORDERED`] as CSV.
const THINGS_CSV: &str = concat!(
    "id,name,score,data\n",
    "1,plain,1.5,\\x0001ff\n",
    "2,\"comma, here\",0.1,\\x\n",
    "3,\"quote \"\" inside\",1e+20,\n",
    "4,\"new\nline and\r\nCRLF\",-2.5e-05,\\xdeadbeef\n",
    "5,ünïcödé ✔ 日本,1e-07,\n",
    "6,\"\",,\n",
    "7,,123456789012345.6,\n",
    "8,\\.,1e+15,\n",
    "9,tab\there \\ backslash \u{1} control,5e-324,\n",
    ",  spaces  ,1.7976931348623157e+308,\n",
    ",no id,2,\n",
);

/// What both databases write for [`ORDERED`] as JSON lines.
const THINGS_JSONL: &str = concat!(
    r#"{"id":1,"name":"plain","score":1.5,"data":"\\x0001ff"}"#,
    "\n",
    r#"{"id":2,"name":"comma, here","score":0.1,"data":"\\x"}"#,
    "\n",
    r#"{"id":3,"name":"quote \" inside","score":1e+20,"data":null}"#,
    "\n",
    r#"{"id":4,"name":"new\nline and\r\nCRLF","score":-2.5e-05,"data":"\\xdeadbeef"}"#,
    "\n",
    r#"{"id":5,"name":"ünïcödé ✔ 日本","score":1e-07,"data":null}"#,
    "\n",
    r#"{"id":6,"name":"","score":null,"data":null}"#,
    "\n",
    r#"{"id":7,"name":null,"score":123456789012345.6,"data":null}"#,
    "\n",
    r#"{"id":8,"name":"\\.","score":1e+15,"data":null}"#,
    "\n",
    r#"{"id":9,"name":"tab\there \\ backslash \u0001 control","score":5e-324,"data":null}"#,
    "\n",
    r#"{"id":null,"name":"  spaces  ","score":1.7976931348623157e+308,"data":null}"#,
    "\n",
    r#"{"id":null,"name":"no id","score":2,"data":null}"#,
    "\n",
);

// --- helpers ---------------------------------------------------------------------------------

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A cluster with the `things` table; the database to export from and a client for checks.
async fn postgres_with_things() -> (Postgres, Database, tokio_postgres::Client) {
    let postgres = Postgres::start();
    let client = connect(&postgres.url()).await;
    client
        .batch_execute("CREATE TABLE things (id bigint, name text, score double precision, data bytea)")
        .await
        .unwrap();
    for t in THINGS {
        client
            .execute("INSERT INTO things VALUES ($1, $2, $3, $4)", &[&t.id, &t.name, &t.score, &t.data])
            .await
            .unwrap();
    }
    let db = Database::Postgres { url: postgres.url(), password: None };
    (postgres, db, client)
}

/// A SQLite file `things.db` with the `things` table, in a temp dir.
fn sqlite_with_things() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.execute_batch("CREATE TABLE things (id INTEGER, name TEXT, score REAL, data BLOB)").unwrap();
    for t in THINGS {
        connection
            .execute("INSERT INTO things VALUES (?1, ?2, ?3, ?4)", (t.id, t.name, t.score, t.data))
            .unwrap();
    }
    drop(connection);
    (dir, Database::Sqlite { path })
}

/// Runs an export to the end; the chunks it sent and the row count it returned.
async fn export(
    db: &Database,
    query: &str,
    format: SqlFormat,
    range: Option<&Range>,
) -> Result<(Vec<Bytes>, u64), SqlError> {
    let (sender, mut receiver) = mpsc::channel(4);
    let receiving = async {
        let mut chunks = Vec::new();
        while let Some(chunk) = receiver.recv().await {
            chunks.push(chunk);
        }
        chunks
    };
    let (result, chunks) = tokio::join!(sql::export(db, query, format, range, sender), receiving);
    result.map(|rows| (chunks, rows))
}

/// The whole output of an export that must succeed, as text, and its row count.
async fn export_text(db: &Database, query: &str, format: SqlFormat, range: Option<&Range>) -> (String, u64) {
    let (chunks, rows) =
        export(db, query, format, range).await.unwrap_or_else(|e| panic!("exporting {query}: {e}"));
    (String::from_utf8(chunks.concat()).unwrap(), rows)
}

/// The error of an export that must fail.
async fn export_error(db: &Database, query: &str) -> SqlError {
    match export(db, query, SqlFormat::Csv, None).await {
        Ok((chunks, rows)) => {
            panic!("exporting {query} gave {rows} rows in {} chunks, not an error", chunks.len())
        }
        Err(e) => e,
    }
}

/// What PostgreSQL's own `COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)` writes.
async fn copy_csv(client: &tokio_postgres::Client, query: &str) -> String {
    use futures_util::StreamExt as _;
    let copy = format!("COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)");
    let stream = client.copy_out(copy.as_str()).await.unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut bytes = Vec::new();
    while let Some(data) = stream.next().await {
        bytes.extend_from_slice(&data.unwrap());
    }
    String::from_utf8(bytes).unwrap()
}

/// RFC 4180 CSV with `\n` line ends into rows of fields; an unquoted empty field is NULL.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut in_quotes) = (false, false);
    let end_field = |row: &mut Vec<Option<String>>, field: &mut String, quoted: &mut bool| {
        let value = std::mem::take(field);
        row.push((*quoted || !value.is_empty()).then_some(value));
        *quoted = false;
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (false, '"') => (in_quotes, quoted) = (true, true),
            (false, ',') => end_field(&mut row, &mut field, &mut quoted),
            (false, '\n') => {
                end_field(&mut row, &mut field, &mut quoted);
                rows.push(std::mem::take(&mut row));
            }
            (_, c) => field.push(c),
        }
    }
    assert!(
        row.is_empty() && field.is_empty() && !in_quotes,
        "the CSV does not end with a line end: {text:?}"
    );
    rows
}

/// `\x0102` back into bytes.
fn unhex(text: &str) -> Vec<u8> {
    let hex = text.strip_prefix("\\x").unwrap_or_else(|| panic!("{text:?} is not bytea hex"));
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// Checks CSV rows against [`THINGS`], each value parsed back into its type.
fn assert_csv_is_things(text: &str) {
    let rows = parse_csv(text);
    assert_eq!(rows[0], ["id", "name", "score", "data"].map(|s| Some(s.to_owned())));
    assert_eq!(rows.len() - 1, THINGS.len(), "{text}");
    for (row, t) in rows[1..].iter().zip(THINGS) {
        assert_eq!(row[0].as_deref().map(|s| s.parse::<i64>().unwrap()), t.id);
        assert_eq!(row[1].as_deref(), t.name);
        let score = row[2].as_deref().map(|s| s.parse::<f64>().unwrap());
        assert_eq!(score.map(f64::to_bits), t.score.map(f64::to_bits), "{row:?}: floats read back exactly");
        assert_eq!(row[3].as_deref().map(unhex).as_deref(), t.data);
    }
}

/// Checks JSON lines against [`THINGS`]: one object per line, keys in column order.
fn assert_jsonl_is_things(text: &str) {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), THINGS.len(), "{text}");
    for (line, t) in lines.iter().zip(THINGS) {
        let keys: Vec<usize> = ["\"id\":", "\"name\":", "\"score\":", "\"data\":"]
            .iter()
            .map(|key| line.find(key).unwrap_or_else(|| panic!("{key} missing in {line}")))
            .collect();
        assert!(keys.is_sorted(), "keys out of column order in {line}");
        let value: Value = serde_json::from_str(line).unwrap();
        let hex = |bytes: &[u8]| bytes.iter().fold("\\x".to_owned(), |hex, b| hex + &format!("{b:02x}"));
        assert_eq!(value["id"], json!(t.id), "{line}");
        assert_eq!(value["name"], json!(t.name), "{line}");
        assert_eq!(value["data"], json!(t.data.map(hex)), "{line}");
        match (value["score"].as_f64(), t.score) {
            // serde_json's default float parsing may be off by one in the last place.
            (Some(got), Some(want)) => assert!((got - want).abs() <= want.abs() * 1e-15, "{line}"),
            (got, want) => assert_eq!(got, want, "{line}"),
        }
    }
}

/// Ranges below 4 (with NULLs), 4 to 8, 8 and above: together every row of [`THINGS`] once.
async fn assert_three_ranges_give_every_row_once(db: &Database) {
    let range = |lower, upper, nulls| Range { column: "id".to_owned(), lower, upper, nulls };
    let ranges = [range(None, Some(4), true), range(Some(4), Some(8), false), range(Some(8), None, false)];
    let mut rows = Vec::new();
    let mut total = 0;
    for range in &ranges {
        let (text, count) = export_text(db, ORDERED, SqlFormat::Csv, Some(range)).await;
        let mut parsed = parse_csv(&text);
        assert_eq!(parsed.remove(0)[0].as_deref(), Some("id"), "every range has the header");
        assert_eq!(parsed.len() as u64, count);
        assert!(count > 0, "{range:?} is empty");
        total += count;
        rows.extend(parsed);
    }
    assert_eq!(total, THINGS.len() as u64);
    let mut all = parse_csv(&export_text(db, ORDERED, SqlFormat::Csv, None).await.0);
    all.remove(0);
    rows.sort();
    all.sort();
    assert_eq!(rows, all, "the three ranges together are every row exactly once");

    // JSON lines take the same ranges.
    let (text, count) = export_text(db, ORDERED, SqlFormat::Jsonl, Some(&ranges[0])).await;
    assert_eq!(count, 5, "ids 1..=3 and the two NULLs: {text}");
    assert!(text.lines().all(|line| line.starts_with(r#"{"id":1,"#)
        || line.starts_with(r#"{"id":2,"#)
        || line.starts_with(r#"{"id":3,"#)
        || line.starts_with(r#"{"id":null,"#)));
}

/// More than a few chunks, each ending at a row end (no field below holds a newline), none
/// larger than CHUNK_BYTES, all but the last nearly full.
fn assert_chunks_of_about_chunk_bytes(chunks: &[Bytes]) {
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        assert!(chunk.len() <= CHUNK_BYTES, "chunk {i} has {} bytes", chunk.len());
        assert!(chunk.ends_with(b"\n"), "chunk {i} ends inside a row");
        if i + 1 < chunks.len() {
            assert!(chunk.len() > CHUNK_BYTES - 1000, "chunk {i} has only {} bytes", chunk.len());
        }
    }
}

/// Prints an export's speed (see it with `--no-capture`); never asserted.
#[allow(clippy::cast_precision_loss, reason = "rates for a log line")]
fn report_speed(what: &str, rows: u64, chunks: &[Bytes], elapsed: Duration) {
    let mib = chunks.iter().map(Bytes::len).sum::<usize>() as f64 / f64::from(1 << 20);
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "{what}: {rows} rows, {mib:.1} MiB in {} chunks, {elapsed:.2?}: {:.0} rows/s, {:.1} MiB/s",
        chunks.len(),
        rows as f64 / seconds,
        mib / seconds,
    );
}

/// Whether a query of ours (application_name `gatehouse`) is running on the server.
async fn gatehouse_query_running(client: &tokio_postgres::Client) -> bool {
    let sql =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gatehouse' AND state = 'active'";
    client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) > 0
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn assert_says(error: &SqlError, parts: &[&str]) {
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "{message:?} should say {part:?}");
    }
    assert!(!message.contains('\n'), "{message:?} is one line");
}

/// Waits (bounded) until `condition` holds.
async fn wait_until<F: Future<Output = bool>>(limit: Duration, what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an export whose receiver is dropped after `receive` chunks (or after `wait` when 0);
/// returns how the export ended and how long it took to end after the drop.
async fn export_then_drop_receiver(
    db: &Database,
    query: &str,
    format: SqlFormat,
    receive: usize,
    wait: Duration,
) -> (Result<u64, SqlError>, Duration) {
    let (sender, mut receiver) = mpsc::channel(1);
    let exporting = tokio::spawn({
        let (db, query) = (db.clone(), query.to_owned());
        async move { sql::export(&db, &query, format, None, sender).await }
    });
    for _ in 0..receive {
        tokio::time::timeout(Duration::from_secs(30), receiver.recv()).await.unwrap().unwrap();
    }
    tokio::time::sleep(wait).await;
    drop(receiver);
    let dropped = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), exporting)
        .await
        .expect("the export goes on after its receiver is gone")
        .unwrap();
    (result, dropped.elapsed())
}

// --- PostgreSQL --------------------------------------------------------------------------------

#[tokio::test]
async fn postgresql_csv_is_what_copy_writes_and_reads_back_as_the_rows() {
    let (_postgres, db, client) = postgres_with_things().await;
    let (text, rows) = export_text(&db, ORDERED, SqlFormat::Csv, None).await;
    assert_eq!(text, copy_csv(&client, ORDERED).await, "the export is COPY's output, byte for byte");
    assert_eq!(text, THINGS_CSV);
    assert_eq!(rows, THINGS.len() as u64);
    assert_csv_is_things(&text);

    // Read-only: not even COPY's data-modifying form changes anything.
    let error = export_error(&db, "DELETE FROM things RETURNING *").await;
    assert!(matches!(error, SqlError::WritesData { .. }), "{error:?}");
    assert_says(&error, &["cannot execute DELETE in a read-only transaction", "only reads"]);
    assert_eq!(export_text(&db, ORDERED, SqlFormat::Csv, None).await.0, text);

    // A trailing `;` or `-- comment` doesn't break the statement the query is wrapped in.
    let (again, _) =
        export_text(&db, &format!("{ORDERED} -- newest first?\n;  "), SqlFormat::Csv, None).await;
    assert_eq!(again, text);
}

#[tokio::test]
async fn postgresql_json_lines_are_one_object_per_row_in_column_order() {
    let (_postgres, db, _client) = postgres_with_things().await;
    let (text, rows) = export_text(&db, ORDERED, SqlFormat::Jsonl, None).await;
    assert_eq!(rows, THINGS.len() as u64);
    assert_jsonl_is_things(&text);
    assert_eq!(text, THINGS_JSONL);

    let (empty, rows) = export_text(&db, "SELECT * FROM things WHERE false", SqlFormat::Jsonl, None).await;
    assert_eq!((empty.as_str(), rows), ("", 0));
}

#[tokio::test]
async fn postgresql_ranges_together_give_every_row_exactly_once() {
    let (_postgres, db, _client) = postgres_with_things().await;
    assert_three_ranges_give_every_row_once(&db).await;

    // The column is quoted as an identifier.
    let query = r#"SELECT id AS "Odd ""Id""", name FROM things"#;
    let range = Range { column: "Odd \"Id\"".to_owned(), lower: Some(2), upper: Some(3), nulls: false };
    let (text, rows) = export_text(&db, query, SqlFormat::Csv, Some(&range)).await;
    assert_eq!((text.as_str(), rows), ("\"Odd \"\"Id\"\"\",name\n2,\"comma, here\"\n", 1));
}

#[tokio::test]
async fn postgresql_bounds_are_the_smallest_and_largest_value_or_none() {
    let (_postgres, db, _client) = postgres_with_things().await;
    assert_eq!(sql::bounds(&db, "SELECT * FROM things", "id").await.unwrap(), Some((1, 9)));
    let narrow = "SELECT id::int4 AS four, id::int2 AS two FROM things";
    assert_eq!(sql::bounds(&db, narrow, "four").await.unwrap(), Some((1, 9)));
    assert_eq!(sql::bounds(&db, narrow, "two").await.unwrap(), Some((1, 9)));
    let extremes = "SELECT * FROM (VALUES ('-9223372036854775808'::bigint), (9223372036854775807)) AS v(n)";
    assert_eq!(sql::bounds(&db, extremes, "n").await.unwrap(), Some((i64::MIN, i64::MAX)));
    assert_eq!(sql::bounds(&db, "SELECT * FROM things WHERE false", "id").await.unwrap(), None);
    assert_eq!(sql::bounds(&db, "SELECT * FROM things WHERE id IS NULL", "id").await.unwrap(), None);

    for (column, type_name) in [("name", "text"), ("score", "float8")] {
        let error = sql::bounds(&db, "SELECT * FROM things", column).await.unwrap_err();
        assert!(matches!(error, SqlError::NotInteger { .. }), "{error:?}");
        assert_says(
            &error,
            &[&format!("partition_column \"{column}\" must be an integer column"), type_name, "/gatehouse"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_postgresql_export_arrives_in_chunks_of_about_chunk_bytes() {
    let postgres = Postgres::start();
    let client = connect(&postgres.url()).await;
    client
        .batch_execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS hash, g * 0.5 AS half, \
             'row, with \"quotes\"' AS note FROM generate_series(1, 200000) AS g",
        )
        .await
        .unwrap();
    let db = Database::Postgres { url: postgres.url(), password: None };
    let query = "SELECT * FROM big ORDER BY id";

    for format in [SqlFormat::Csv, SqlFormat::Jsonl] {
        let started = Instant::now();
        let (chunks, rows) = export(&db, query, format, None).await.unwrap();
        report_speed(&format!("PostgreSQL {format:?}"), rows, &chunks, started.elapsed());
        assert_eq!(rows, 200_000);
        assert_chunks_of_about_chunk_bytes(&chunks);
        if format == SqlFormat::Csv {
            assert!(
                chunks.concat() == copy_csv(&client, query).await.into_bytes(),
                "chunks are COPY's output"
            );
        } else {
            let text = String::from_utf8(chunks.concat()).unwrap();
            assert_eq!(text.lines().count(), 200_000);
            let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            assert_eq!(last["id"], 200_000);
            assert_eq!(last["note"], "row, with \"quotes\"");
        }
    }
}

#[tokio::test]
async fn postgresql_query_errors_name_the_database_and_the_cause() {
    let (postgres, db, _client) = postgres_with_things().await;
    let port = postgres.port();
    let here = format!("PostgreSQL 127.0.0.1:{port}/gatehouse");

    let error = export_error(&db, "SELEC * FROM things").await;
    assert!(matches!(error, SqlError::Syntax { .. }), "{error:?}");
    assert_says(
        &error,
        &[&here, r#"db error: ERROR: syntax error at or near "SELEC""#, "at character 1 of the query"],
    );
    let error = export_error(&db, "SELECT * FROM things WHERE").await;
    assert_says(&error, &["syntax error", "at the end of the query"]);

    let error = export_error(&db, "SELECT * FROM nowhere").await;
    assert!(matches!(error, SqlError::NoTable { .. }), "{error:?}");
    assert_says(&error, &[&here, r#"relation "nowhere" does not exist"#, "at character 15 of the query"]);

    let error = export_error(&db, "SELECT 1 / 0").await;
    assert!(matches!(error, SqlError::Server { .. }), "{error:?}");
    assert_says(&error, &[&here, "division by zero"]);

    let elsewhere =
        Database::Postgres { url: format!("postgres://gatehouse@127.0.0.1:{port}/nope"), password: None };
    let error = export_error(&elsewhere, "SELECT 1").await;
    assert!(matches!(error, SqlError::NoDatabase { .. }), "{error:?}");
    assert_says(&error, &[&format!("127.0.0.1:{port}/nope"), r#"database "nope" does not exist"#]);

    let error = export_error(
        &Database::Postgres {
            url: "postgres://reader:in-url-secret@127.0.0.1:notaport/x".to_owned(),
            password: None,
        },
        "SELECT 1",
    )
    .await;
    assert!(matches!(error, SqlError::InvalidUrl { .. }), "{error:?}");
    assert_says(&error, &["URL is not valid", "port"]);
    let error =
        export_error(&Database::Postgres { url: "dbname=x user=y".to_owned(), password: None }, "SELECT 1")
            .await;
    assert!(matches!(error, SqlError::InvalidUrl { .. }), "{error:?}");
    assert_says(&error, &["URL is not valid", "host"]);
    let error = export_error(
        &Database::Postgres {
            url: format!("postgres://gatehouse@127.0.0.1:{port}/gatehouse?sslmode=require"),
            password: None,
        },
        "SELECT 1",
    )
    .await;
    assert!(matches!(error, SqlError::TlsRequired { .. }), "{error:?}");
    assert_says(&error, &[&here, "TLS"]);

    let error = sql::bounds(&db, "SELECT * FROM things", "name").await.unwrap_err();
    assert!(matches!(error, SqlError::NotInteger { .. }), "{error:?}");
    assert_says(&error, &[r#"partition_column "name" must be an integer column"#, "text", &here]);
}

#[tokio::test]
async fn postgresql_login_errors_say_what_to_check_and_never_show_the_password() {
    let (postgres, _db, client) = postgres_with_things().await;
    let port = postgres.port();
    let here = format!("PostgreSQL 127.0.0.1:{port}/gatehouse");

    // A role that must log in with a password: scram for it, ahead of initdb's `trust` lines.
    let password = "correct horse battery staple";
    client.batch_execute(&format!("CREATE ROLE reader LOGIN PASSWORD '{password}'")).await.unwrap();
    client.batch_execute("GRANT SELECT ON things TO reader").await.unwrap();
    let hba = postgres.dir().join("data").join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all reader 127.0.0.1/32 scram-sha-256\n{rules}")).unwrap();
    client.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let reader = |password: Option<&str>| Database::Postgres {
        url: format!("postgres://reader@127.0.0.1:{port}/gatehouse"),
        password: password.map(str::to_owned),
    };
    let without_password = reader(None);
    wait_until(Duration::from_secs(10), "the server asks reader for a password", || {
        let db = without_password.clone();
        async move { export(&db, "SELECT 1", SqlFormat::Csv, None).await.is_err() }
    })
    .await;
    let (text, _) =
        export_text(&reader(Some(password)), "SELECT id FROM things WHERE id = 1", SqlFormat::Csv, None)
            .await;
    assert_eq!(text, "id\n1\n", "the password credential logs in");

    let wrong = "wrong-secret-1234";
    let error = export_error(&reader(Some(wrong)), "SELECT 1").await;
    assert!(matches!(error, SqlError::AuthenticationFailed { .. }), "{error:?}");
    assert_says(
        &error,
        &[
            &here,
            r#"password authentication failed for user "reader""#,
            "check the user in the URL and the password credential",
        ],
    );
    assert!(!error.to_string().contains(wrong) && !format!("{error:?}").contains(wrong));
    let error = export_error(&reader(None), "SELECT 1").await;
    assert!(matches!(error, SqlError::AuthenticationFailed { .. }), "{error:?}");
    assert_says(&error, &["asks for a password and none is set"]);

    // A closed port fails at once; a password in the URL is not repeated either.
    let closed = closed_port();
    let unreachable = Database::Postgres {
        url: format!("postgres://reader:in-url-secret@127.0.0.1:{closed}/gatehouse"),
        password: Some(password.to_owned()),
    };
    let started = Instant::now();
    let error = export_error(&unreachable, "SELECT 1").await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(error, SqlError::Unreachable { .. }), "{error:?}");
    assert_says(
        &error,
        &[&format!("cannot reach PostgreSQL 127.0.0.1:{closed}/gatehouse"), "connection refused", "firewall"],
    );
    let error = sql::bounds(&unreachable, "SELECT 1 AS n", "n").await.unwrap_err();
    assert!(matches!(error, SqlError::Unreachable { .. }), "{error:?}");

    for secret in [password, wrong, "in-url-secret"] {
        for error in [
            export_error(&reader(Some(secret)), "SELEC 1").await,
            export_error(&unreachable, "SELECT 1").await,
            export_error(
                &Database::Postgres {
                    url: "postgres://reader:in-url-secret@127.0.0.1:notaport/x".to_owned(),
                    password: Some(secret.to_owned()),
                },
                "SELECT 1",
            )
            .await,
        ] {
            assert!(!error.to_string().contains(secret), "{error} shows a password");
            assert!(!format!("{error:?}").contains(secret), "{error:?} shows a password");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_receiver_stops_a_postgresql_export_and_its_query() {
    let postgres = Postgres::start();
    let client = connect(&postgres.url()).await;
    let db = Database::Postgres { url: postgres.url(), password: None };
    let client = &client;
    let stopped = move || async move { !gatehouse_query_running(client).await };

    // Rows without end (10^10), in both formats: the export stops after a few chunks.
    let endless =
        "SELECT a, b, repeat('x', 50) FROM generate_series(1, 100000) a, generate_series(1, 100000) b";
    for format in [SqlFormat::Csv, SqlFormat::Jsonl] {
        let (result, took) = export_then_drop_receiver(&db, endless, format, 3, Duration::ZERO).await;
        assert!(matches!(result, Err(SqlError::Cancelled { .. })), "{format:?}: {result:?}");
        assert!(took < Duration::from_secs(2), "{format:?}: stopping took {took:?}");
        wait_until(Duration::from_secs(10), "the server stops the endless query", stopped).await;
    }

    // A query still computing when the receiver goes: the server is told to cancel it.
    let (result, took) =
        export_then_drop_receiver(&db, "SELECT pg_sleep(60)", SqlFormat::Csv, 0, Duration::from_millis(500))
            .await;
    assert!(
        matches!(&result, Err(error @ SqlError::Cancelled { .. }) if error.to_string().contains("cancelled")),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    wait_until(Duration::from_secs(10), "the server cancels pg_sleep", stopped).await;
}

// --- SQLite ------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_csv_is_written_like_postgresql() {
    let (_dir, db) = sqlite_with_things();
    let (text, rows) = export_text(&db, ORDERED, SqlFormat::Csv, None).await;
    assert_eq!(text, THINGS_CSV);
    assert_eq!(rows, THINGS.len() as u64);
    assert_csv_is_things(&text);

    // `\.` alone on a line would end COPY's data, so PostgreSQL quotes it there, and so do we.
    let (single, _) = export_text(&db, "SELECT name FROM things WHERE id = 8", SqlFormat::Csv, None).await;
    assert_eq!(single, "name\n\"\\.\"\n");
    let (header_only, rows) =
        export_text(&db, "SELECT id AS \"a,b\" FROM things WHERE 0", SqlFormat::Csv, None).await;
    assert_eq!((header_only.as_str(), rows), ("\"a,b\"\n", 0));
}

#[tokio::test]
async fn sqlite_json_lines_are_written_like_postgresql() {
    let (_dir, db) = sqlite_with_things();
    let (text, rows) = export_text(&db, ORDERED, SqlFormat::Jsonl, None).await;
    assert_eq!(text, THINGS_JSONL);
    assert_eq!(rows, THINGS.len() as u64);
    assert_jsonl_is_things(&text);
}

#[tokio::test]
async fn sqlite_and_postgresql_write_the_same_text_for_the_same_rows() {
    let (_postgres, postgres, client) = postgres_with_things().await;
    let (_dir, sqlite) = sqlite_with_things();
    // Float notation at its edges, and infinities (NaN can't be stored in SQLite).
    let floats =
        [1e-4, 1e-5, 123_456_789_012_345.0, 999_999_999_999_999.0, 1e16, 0.3, 1.0 / 3.0, f64::MIN_POSITIVE];
    let floats: Vec<f64> =
        floats.iter().flat_map(|&x| [x, -x]).chain([f64::INFINITY, f64::NEG_INFINITY]).collect();
    client.batch_execute("CREATE TABLE floats (n int8, x float8)").await.unwrap();
    let path = match &sqlite {
        Database::Sqlite { path } => path.clone(),
        Database::Postgres { .. } => unreachable!(),
    };
    let file = rusqlite::Connection::open(&path).unwrap();
    file.execute_batch("CREATE TABLE floats (n INTEGER, x REAL)").unwrap();
    for (n, x) in (0_i64..).zip(&floats) {
        client.execute("INSERT INTO floats VALUES ($1, $2)", &[&n, x]).await.unwrap();
        file.execute("INSERT INTO floats VALUES (?1, ?2)", (n, x)).unwrap();
    }
    drop(file);

    for query in [ORDERED, "SELECT * FROM floats ORDER BY n"] {
        for format in [SqlFormat::Csv, SqlFormat::Jsonl] {
            let (from_postgres, _) = export_text(&postgres, query, format, None).await;
            let (from_sqlite, _) = export_text(&sqlite, query, format, None).await;
            assert_eq!(from_sqlite, from_postgres, "{format:?} of {query}");
        }
    }
}

#[tokio::test]
async fn sqlite_ranges_together_give_every_row_exactly_once() {
    let (_dir, db) = sqlite_with_things();
    assert_three_ranges_give_every_row_once(&db).await;
}

#[tokio::test]
async fn sqlite_bounds_are_the_smallest_and_largest_integer_or_none() {
    let (_dir, db) = sqlite_with_things();
    assert_eq!(sql::bounds(&db, "SELECT * FROM things", "id").await.unwrap(), Some((1, 9)));
    assert_eq!(sql::bounds(&db, "SELECT * FROM things WHERE 0", "id").await.unwrap(), None);
    assert_eq!(sql::bounds(&db, "SELECT * FROM things WHERE id IS NULL", "id").await.unwrap(), None);
    for (column, kind) in [("name", "text"), ("score", "real"), ("data", "blob")] {
        let error = sql::bounds(&db, "SELECT * FROM things", column).await.unwrap_err();
        assert!(matches!(error, SqlError::NotInteger { .. }), "{error:?}");
        assert_says(
            &error,
            &[
                &format!("partition_column \"{column}\" must be an integer column"),
                &format!("{kind} values"),
                "things.db",
            ],
        );
    }
    // One stray value is enough.
    let mixed = "SELECT id FROM things UNION ALL SELECT 2.5";
    assert!(matches!(sql::bounds(&db, mixed, "id").await, Err(SqlError::NotInteger { .. })));
}

#[tokio::test]
async fn sqlite_files_are_only_read_never_written_or_created() {
    let (dir, db) = sqlite_with_things();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let path = dir.path().join("things.db");
    let (before_bytes, before_listing) = (std::fs::read(&path).unwrap(), listing(dir.path()));
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();

    export_text(&db, ORDERED, SqlFormat::Csv, None).await;
    export_text(&db, ORDERED, SqlFormat::Jsonl, None).await;
    sql::bounds(&db, "SELECT * FROM things", "id").await.unwrap();
    let error = export_error(&db, "DELETE FROM things").await;
    assert!(matches!(error, SqlError::Syntax { .. }), "DELETE isn't a subquery: {error:?}");

    assert_eq!(listing(dir.path()), before_listing, "no -journal, -wal or -shm file appeared");
    assert!(std::fs::read(&path).unwrap() == before_bytes, "the file changed");
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified);
}

#[tokio::test]
async fn sqlite_errors_name_the_file_and_say_what_is_wrong() {
    let (dir, db) = sqlite_with_things();

    let missing = dir.path().join("missing.db");
    let error = export_error(&Database::Sqlite { path: missing.clone() }, "SELECT 1").await;
    assert!(matches!(error, SqlError::SqliteMissing { .. }), "{error:?}");
    assert_says(&error, &[&format!("SQLite file {} does not exist", missing.display()), "never creates it"]);
    let error =
        sql::bounds(&Database::Sqlite { path: missing.clone() }, "SELECT 1 AS n", "n").await.unwrap_err();
    assert!(matches!(error, SqlError::SqliteMissing { .. }), "{error:?}");
    assert!(!missing.exists(), "the missing file was created");

    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "these are not the tables you are looking for\n".repeat(100)).unwrap();
    let error = export_error(&Database::Sqlite { path: text_file.clone() }, "SELECT * FROM things").await;
    assert!(matches!(error, SqlError::NotSqlite { .. }), "{error:?}");
    assert_says(&error, &[&format!("{} is not a SQLite database", text_file.display())]);
    let error = export_error(&Database::Sqlite { path: dir.path().to_owned() }, "SELECT 1").await;
    assert!(matches!(error, SqlError::NotSqlite { .. }), "{error:?}");

    let error = export_error(&db, "SELEC * FROM things").await;
    assert!(matches!(error, SqlError::Syntax { .. }), "{error:?}");
    // SQLite's message points at what follows `SELEC` once it sits in Gatehouse's subquery.
    assert_says(&error, &["things.db", "syntax error", "correct the query"]);

    let error = export_error(&db, "SELECT * FROM nowhere").await;
    assert!(matches!(error, SqlError::NoTable { .. }), "{error:?}");
    assert_says(&error, &["things.db", "no such table: nowhere"]);

    let error = export_error(&db, "SELECT missing FROM things").await;
    assert!(matches!(error, SqlError::Server { .. }), "{error:?}");
    assert_says(&error, &["no such column: missing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sqlite_export_arrives_in_chunks_of_about_chunk_bytes() {
    let (dir, db) = sqlite_with_things();
    let file = rusqlite::Connection::open(dir.path().join("things.db")).unwrap();
    file.execute_batch(
        "CREATE TABLE big AS WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 200000) \
         SELECT n AS id, hex(randomblob(16)) AS hash, n * 0.5 AS half, 'row, with \"quotes\"' AS note FROM g",
    )
    .unwrap();
    drop(file);
    for format in [SqlFormat::Csv, SqlFormat::Jsonl] {
        let started = Instant::now();
        let (chunks, rows) = export(&db, "SELECT * FROM big", format, None).await.unwrap();
        report_speed(&format!("SQLite {format:?}"), rows, &chunks, started.elapsed());
        assert_eq!(rows, 200_000);
        assert_chunks_of_about_chunk_bytes(&chunks);
        let text = String::from_utf8(chunks.concat()).unwrap();
        let lines = if format == SqlFormat::Csv { 200_001 } else { 200_000 };
        assert_eq!(text.lines().count(), lines);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_receiver_stops_a_sqlite_export() {
    let (_dir, db) = sqlite_with_things();
    let endless =
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g) SELECT n, 'padding' FROM g";
    let (result, took) = export_then_drop_receiver(&db, endless, SqlFormat::Csv, 3, Duration::ZERO).await;
    assert!(matches!(result, Err(SqlError::Cancelled { .. })), "{result:?}");
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");

    // Still computing its only row when the receiver goes: the query is interrupted.
    let slow = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g) SELECT count(*) FROM g";
    let (result, took) =
        export_then_drop_receiver(&db, slow, SqlFormat::Jsonl, 0, Duration::from_millis(300)).await;
    assert!(matches!(result, Err(SqlError::Cancelled { .. })), "{result:?}");
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}
