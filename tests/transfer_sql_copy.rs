//! SQL copies end to end: a real hub and real `gatehouse node run` processes export a throwaway
//! PostgreSQL cluster (a `reader` role that logs in with a password credential) to a real S3
//! server (SeaweedFS on loopback), and a SQLite file to a `file://` folder, as `gatehouse job
//! submit` asks. The objects must be exactly `part-NNNNN.csv|jsonl`, carry their SHA-256, and
//! together hold every row of the table exactly once, as PostgreSQL's own `COPY … CSV` and
//! `row_to_json` give them; every fault must fail the job with a sentence naming its cause and
//! leave nothing under the prefix. A second run of a SQLite export (same rows, same order)
//! writes nothing. Every wait is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, Node, gateway, submit, wait_over, wait_until};
use common::postgres::Postgres;
use common::s3::{S3Api, SeaweedFs};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rows in the `orders` table.
const ORDERS: i64 = 50_000;
/// What the `reader` role logs in with; the node credential `warehouse` holds it.
const PASSWORD: &str = "correct horse battery staple";

/// `orders`: ids 1…50 000 with every 997th NULL (the partition column), and text that CSV and
/// JSON must escape: commas, quotes, CR and LF, `\.` alone, unicode, tabs, empty strings, NULLs;
/// about 200 bytes a row, so the whole table as JSON lines is one object larger than a part
/// (8 MiB) and goes up in several.
const ORDERS_TABLE: &str = r#"
CREATE TABLE orders (id bigint, customer text, amount numeric(12, 2), note text, placed date,
                     payload bytea, filler text);
INSERT INTO orders
SELECT CASE WHEN g % 997 = 0 THEN NULL ELSE g END,
       'Customer, "' || g || '"',
       round(g * 1.25 / 7, 2),
       CASE g % 6 WHEN 0 THEN NULL
                  WHEN 1 THEN ''
                  WHEN 2 THEN E'line one\nline two\r\nthree'
                  WHEN 3 THEN E'\\.'
                  WHEN 4 THEN E'ünïcödé ✔ 日本\ttab \\ backslash'
                  ELSE repeat('x', g % 40) END,
       date '2024-01-01' + (g % 365),
       CASE WHEN g % 11 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       repeat(md5(g::text), 4)
FROM generate_series(1, 50000) g;
"#;

/// The cluster with `orders`, and the role `reader` that may only read it and must log in
/// with [`PASSWORD`] over TCP (scram, ahead of initdb's `trust` lines).
struct Warehouse {
    postgres: Postgres,
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Warehouse {
    fn start() -> Warehouse {
        let postgres = Postgres::start();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(connect(&postgres.url(), None)).unwrap();
        runtime.block_on(client.batch_execute(ORDERS_TABLE)).unwrap();
        runtime
            .block_on(client.batch_execute(&format!(
                "CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'; GRANT SELECT ON orders TO reader"
            )))
            .unwrap();
        let hba = postgres.dir().join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("host all reader 127.0.0.1/32 scram-sha-256\n{rules}")).unwrap();
        runtime.block_on(client.batch_execute("SELECT pg_reload_conf()")).unwrap();
        let warehouse = Warehouse { postgres, runtime, client };
        let reader = warehouse.reader_url();
        wait_until(Duration::from_secs(10), "the server to ask reader for a password", || {
            warehouse.runtime.block_on(connect(&reader, None)).is_err()
        });
        assert!(warehouse.runtime.block_on(connect(&reader, Some(PASSWORD))).is_ok(), "reader logs in");
        warehouse
    }

    /// The URL a job names: the reader, without its password.
    fn reader_url(&self) -> String {
        format!("postgres://reader@127.0.0.1:{}/gatehouse", self.postgres.port())
    }

    /// What `COPY (query) TO STDOUT CSV HEADER` writes.
    fn copy_csv(&self, query: &str) -> String {
        use futures_util::StreamExt as _;
        self.runtime.block_on(async {
            let sql = format!("COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)");
            let stream = self.client.copy_out(sql.as_str()).await.unwrap();
            let mut stream = std::pin::pin!(stream);
            let mut bytes = Vec::new();
            while let Some(data) = stream.next().await {
                bytes.extend_from_slice(&data.unwrap());
            }
            String::from_utf8(bytes).unwrap()
        })
    }

    /// `row_to_json` of each row of `query`, one line each.
    fn json_lines(&self, query: &str) -> Vec<String> {
        let sql = format!("SELECT row_to_json(q)::text FROM ({query}) AS q");
        let rows = self.runtime.block_on(self.client.query(sql.as_str(), &[])).unwrap();
        rows.iter().map(|row| row.get::<_, String>(0)).collect()
    }
}

async fn connect(url: &str, password: Option<&str>) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Sets `values` as node credentials on `node` and waits until the hub shows every node of
/// the gateway holding each of them (they sync among the nodes).
fn set_credentials(hub: &Hub, node: &Node, values: &[(&str, &str)]) {
    for (name, value) in values {
        node.set_credential(name, value);
    }
    wait_until(Duration::from_secs(30), "every node to hold the credentials", || {
        hub.nodes("lake").iter().all(|n| {
            let held = n["metrics"]["credential_names"].as_array().cloned().unwrap_or_default();
            values.iter().all(|(name, _)| held.iter().any(|h| h == name))
        })
    });
}

/// A job of one copy activity.
fn copy_job(source: &Value, sink: &Value) -> Value {
    json!({ "name": "export", "activities": [{ "kind": "copy", "source": source, "sink": sink }] })
}

/// An S3 sink under `prefix` of the server's bucket, written with the credential `lake`.
fn s3_sink(s3: &S3Api, prefix: &str) -> Value {
    json!({
        "url": format!("s3://{}/{prefix}", s3.bucket()),
        "endpoint": s3.endpoint(),
        "region": s3.region(),
        "credential": "lake",
    })
}

/// CSV as `COPY … CSV` writes it, one record per row, each field `None` for NULL (an
/// unquoted empty field) or its text. Quoted fields may hold commas, quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (false, '"') => (quoted, in_quotes) = (true, true),
            (false, ',' | '\n') => {
                let text = std::mem::take(&mut field);
                record.push((quoted || !text.is_empty()).then_some(text));
                quoted = false;
                if c == '\n' {
                    records.push(std::mem::take(&mut record));
                }
            }
            (_, c) => field.push(c),
        }
    }
    assert!(!in_quotes && field.is_empty() && record.is_empty(), "the CSV ends mid-record");
    records
}

/// The header and the rows of one CSV object.
fn header_and_rows(text: &str) -> (Vec<Option<String>>, Vec<Vec<Option<String>>>) {
    let mut records = parse_csv(text);
    assert!(!records.is_empty(), "every object starts with a header row");
    let header = records.remove(0);
    (header, records)
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn sha256(bytes: &[u8]) -> String {
    gatehouse::encoding::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// `part-00000.EXT` … for `count` parts.
fn part_names(count: usize, extension: &str) -> Vec<String> {
    (0..count).map(|i| format!("part-{i:05}.{extension}")).collect()
}

/// The objects under `prefix`, by name below it, with their bytes; each must carry its
/// SHA-256 as `x-amz-meta-sha256`.
fn objects_with_checksums(s3: &S3Api, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    for (key, size) in s3.list_objects(prefix) {
        let bytes = s3.get_object(&key);
        assert_eq!(bytes.len() as u64, size, "{key}: its listed size");
        assert_eq!(s3.head_metadata(&key).get("sha256"), Some(&sha256(&bytes)), "{key} carries its SHA-256");
        objects.insert(key.strip_prefix(prefix).unwrap().to_owned(), bytes);
    }
    objects
}

/// The runs that copied a part (not the listing run, partition 0) of a job.
fn part_runs(job: &Value) -> Vec<&Value> {
    job["runs"].as_array().unwrap().iter().filter(|r| r["partition"] != 0).collect()
}

/// The one sentence a failed job gives: its failed run's error.
fn job_error(job: &Value) -> String {
    assert_eq!(job["state"], "failed", "{job:#}");
    let errors: Vec<&str> =
        job["runs"].as_array().unwrap().iter().filter_map(|r| r["error"].as_str()).collect();
    assert_eq!(errors.len(), 1, "one run failed and said why: {job:#}");
    errors[0].to_owned()
}

fn assert_says(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "{error:?} should say {part:?}");
    }
}

/// Every file under `dir`, hidden ones included, by relative path.
fn files_in(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    sorted(found)
}

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_partitioned_postgresql_table_copied_to_s3_as_csv_is_every_row_exactly_once_in_checksummed_parts() {
    let warehouse = Warehouse::start();
    let s3 = SeaweedFs::start();
    let (hub, nodes) = gateway(3);
    set_credentials(&hub, &nodes[0], &[("warehouse", PASSWORD), ("lake", &s3.credential())]);
    let source = json!({
        "postgres": warehouse.reader_url(), "password_credential": "warehouse",
        "query": "SELECT * FROM orders", "format": "csv", "partition_column": "id", "partitions": 4,
    });

    let job = wait_over(&hub, &submit(&hub, &copy_job(&source, &s3_sink(&s3, "orders/"))).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let objects = objects_with_checksums(&s3, "orders/");
    assert_eq!(objects.keys().cloned().collect::<Vec<_>>(), part_names(4, "csv"), "four parts, nothing else");
    let (expected_header, expected_rows) = header_and_rows(&warehouse.copy_csv("SELECT * FROM orders"));
    assert_eq!(expected_rows.len(), usize::try_from(ORDERS).unwrap());
    let mut rows = Vec::new();
    for (name, bytes) in &objects {
        let (header, part) = header_and_rows(std::str::from_utf8(bytes).unwrap());
        assert_eq!(header, expected_header, "{name} starts with the header row");
        assert!(!part.is_empty(), "{name} holds rows");
        rows.extend(part);
    }
    assert!(sorted(rows) == sorted(expected_rows), "the parts hold every row of the table exactly once");
    let nulls =
        objects["part-00000.csv"].split(|&b| b == b'\n').filter(|line| line.starts_with(b",")).count();
    assert_eq!(
        nulls,
        usize::try_from(ORDERS / 997).unwrap(),
        "the rows with a NULL id are in the first part"
    );
    let counted: u64 = part_runs(&job).iter().map(|r| r["result"]["rows"].as_u64().unwrap()).sum();
    assert_eq!(counted, u64::try_from(ORDERS).unwrap(), "the parts' results count every row");
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
}

#[test]
fn an_unpartitioned_postgresql_query_copied_to_s3_as_json_lines_is_one_object_of_every_row() {
    json_lines_to_s3(&SeaweedFs::start());
}

/// The same at a second S3 implementation: the streamed upload, then its SHA-256 put on with a
/// copy of the object onto itself, as the other server takes them.
#[test]
fn json_lines_copied_to_a_second_s3_implementation_moto_are_one_object_of_every_row() {
    json_lines_to_s3(&common::moto::Moto::start());
}

/// Two nodes export every row of `orders` as JSON lines to `s3`, one object in several parts.
fn json_lines_to_s3(s3: &S3Api) {
    let warehouse = Warehouse::start();
    let (hub, nodes) = gateway(2);
    set_credentials(&hub, &nodes[1], &[("warehouse", PASSWORD), ("lake", &s3.credential())]);
    let source = json!({
        "postgres": warehouse.reader_url(), "password_credential": "warehouse",
        "query": "SELECT * FROM orders;", "format": "jsonl",
    });

    let job = wait_over(&hub, &submit(&hub, &copy_job(&source, &s3_sink(s3, "orders/json/"))).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let objects = objects_with_checksums(s3, "orders/json/");
    assert_eq!(objects.keys().cloned().collect::<Vec<_>>(), part_names(1, "jsonl"), "one object");
    let text = std::str::from_utf8(&objects["part-00000.jsonl"]).unwrap();
    assert!(text.len() > 8 << 20, "larger than a part, so it went up in several: {} bytes", text.len());
    assert!(text.ends_with('\n'), "every line ends");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), usize::try_from(ORDERS).unwrap(), "one line per row");
    for line in lines.iter().step_by(4999) {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row.as_object().unwrap().len(), 7, "every column: {line}");
    }
    assert!(
        sorted(lines) == sorted(warehouse.json_lines("SELECT * FROM orders")),
        "the lines are row_to_json of every row, once each"
    );
    let runs = part_runs(&job);
    assert_eq!(runs.len(), 1, "one part");
    assert_eq!(runs[0]["result"]["rows"], ORDERS);
    assert_eq!(runs[0]["result"]["object"], "orders/json/part-00000.jsonl");
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
}

/// An export to S3 streams: bytes are reported while the query still runs (held open here by a
/// lock the test holds, which its last row waits for), and nothing is under the object's name
/// until it is complete.
#[test]
fn a_postgresql_export_to_s3_reports_progress_while_its_query_runs_and_shows_nothing_until_done() {
    let warehouse = Warehouse::start();
    let s3 = SeaweedFs::start();
    let (hub, nodes) = gateway(1);
    set_credentials(&hub, &nodes[0], &[("warehouse", PASSWORD), ("lake", &s3.credential())]);
    let hold = "CREATE FUNCTION gate() RETURNS text LANGUAGE plpgsql AS $$ \
                BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN 'opened'; END $$; \
                SELECT pg_advisory_lock(4242)";
    warehouse.runtime.block_on(warehouse.client.batch_execute(hold)).unwrap();
    let query = "SELECT * FROM orders UNION ALL SELECT NULL, gate(), NULL, NULL, NULL, NULL, NULL";
    let source = json!({
        "postgres": warehouse.reader_url(), "password_credential": "warehouse", "query": query, "format": "csv",
    });

    let id = submit(&hub, &copy_job(&source, &s3_sink(&s3, "gated/"))).unwrap();
    wait_until(Duration::from_secs(60), "progress of the part while its query waits", || {
        let job = hub.admin(&["job", "show", &id]);
        part_runs(&job)
            .iter()
            .any(|r| r["state"] == "running" && r["progress"]["bytes_done"].as_u64() > Some(0))
    });
    assert!(s3.list_objects("gated/").is_empty(), "nothing under the prefix before the query ends");
    warehouse.runtime.block_on(warehouse.client.batch_execute("SELECT pg_advisory_unlock(4242)")).unwrap();

    let job = wait_over(&hub, &id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let objects = objects_with_checksums(&s3, "gated/");
    assert_eq!(objects.keys().cloned().collect::<Vec<_>>(), part_names(1, "csv"), "one object");
    let (_, rows) = header_and_rows(std::str::from_utf8(&objects["part-00000.csv"]).unwrap());
    let (_, expected) = header_and_rows(&warehouse.copy_csv(query));
    assert_eq!(rows.len(), usize::try_from(ORDERS).unwrap() + 1, "every row and the gate's");
    assert!(sorted(rows) == sorted(expected), "the object holds the query's rows");
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
}

/// A SQLite file with `readings` (ids 1…`count` with every 50th NULL, awkward text).
fn sqlite_readings(path: &Path, count: i64) -> Vec<Vec<Option<String>>> {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.execute_batch("CREATE TABLE readings (id INTEGER, sensor TEXT, value INTEGER)").unwrap();
    let mut rows = Vec::new();
    let transaction = connection.unchecked_transaction().unwrap();
    for i in 1..=count {
        let id = (i % 50 != 0).then_some(i);
        let sensor = match i % 5 {
            0 => None,
            1 => Some(String::new()),
            2 => Some(format!("probe \"{i}\", hall\nB")),
            3 => Some("ünïcödé ✔ \\.".to_owned()),
            _ => Some(format!("s{i}")),
        };
        transaction.execute("INSERT INTO readings VALUES (?1, ?2, ?3)", (id, &sensor, i * 7)).unwrap();
        rows.push(vec![id.map(|id| id.to_string()), sensor, Some((i * 7).to_string())]);
    }
    transaction.commit().unwrap();
    rows
}

#[test]
fn a_partitioned_sqlite_table_copied_to_a_folder_is_its_rows_once_in_part_files_and_a_rerun_writes_nothing() {
    let (hub, _nodes) = gateway(2);
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("readings.db");
    let expected = sqlite_readings(&database, 20_000);
    let sink = tempfile::tempdir().unwrap();
    let source = json!({
        "sqlite": database, "query": "SELECT id, sensor, value FROM readings",
        "partition_column": "id", "partitions": 3,
    });

    let spec = copy_job(&source, &json!({ "url": format!("file://{}/", sink.path().display()) }));
    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(files_in(sink.path()), part_names(3, "csv"), "the parts and no staging file");
    let mut rows = Vec::new();
    for name in part_names(3, "csv") {
        let (header, part) = header_and_rows(&std::fs::read_to_string(sink.path().join(&name)).unwrap());
        assert_eq!(header, ["id", "sensor", "value"].map(|c| Some(c.to_owned())), "{name}'s header");
        rows.extend(part);
    }
    assert!(sorted(rows) == sorted(expected), "every row of the table exactly once");

    // SQLite reads a table in the same order each time: the same parts again, so none is written.
    let before: Vec<Vec<u8>> =
        part_names(3, "csv").iter().map(|n| std::fs::read(sink.path().join(n)).unwrap()).collect();
    let again = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(again["state"], "succeeded", "{again:#}");
    let results: Vec<&Value> = part_runs(&again).iter().map(|r| &r["result"]).collect();
    assert!(
        results.len() == 3 && results.iter().all(|r| r["written"] == 0 && r["skipped"] == 1),
        "nothing written again: {results:?}"
    );
    let after: Vec<Vec<u8>> =
        part_names(3, "csv").iter().map(|n| std::fs::read(sink.path().join(n)).unwrap()).collect();
    assert!(before == after && files_in(sink.path()) == part_names(3, "csv"), "the folder is unchanged");
}

#[test]
fn faults_fail_the_job_with_a_sentence_naming_their_cause_and_leave_nothing_under_the_prefix() {
    let warehouse = Warehouse::start();
    let s3 = SeaweedFs::start();
    let (hub, nodes) = gateway(2);
    set_credentials(
        &hub,
        &nodes[0],
        &[("warehouse", PASSWORD), ("stale", "an old password"), ("lake", &s3.credential())],
    );
    let port = warehouse.postgres.port();
    let here = format!("PostgreSQL 127.0.0.1:{port}/gatehouse");
    let postgres = |url: &str, credential: &str, query: &str| json!({ "postgres": url, "password_credential": credential, "query": query });
    let reader = warehouse.reader_url();
    let closed = closed_port();
    let unreachable = format!("postgres://reader@127.0.0.1:{closed}/gatehouse");
    let mut partitioned = postgres(&reader, "warehouse", "SELEC * FROM orders");
    partitioned["partition_column"] = json!("id");
    partitioned["partitions"] = json!(4);
    let missing_file = PathBuf::from("/nonexistent/warehouse/orders.db");
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "syntax",
            postgres(&reader, "warehouse", "SELEC * FROM orders"),
            vec![
                format!("the query on {here} is not valid SQL"),
                "syntax error".into(),
                "of the query".into(),
                "correct the query".into(),
            ],
        ),
        (
            // Partitioned: the listing run reads the bounds, and fails there.
            "syntax-partitioned",
            partitioned,
            vec![format!("the query on {here} is not valid SQL"), "syntax error".into()],
        ),
        (
            "unreachable",
            postgres(&unreachable, "warehouse", "SELECT * FROM orders"),
            vec![
                format!("cannot reach PostgreSQL 127.0.0.1:{closed}/gatehouse"),
                "connection refused".into(),
                "firewall".into(),
            ],
        ),
        (
            "wrong-password",
            postgres(&reader, "stale", "SELECT * FROM orders"),
            vec![
                format!("{here} refused the login"),
                r#"password authentication failed for user "reader""#.into(),
                "check the user in the URL and the password credential".into(),
            ],
        ),
        (
            "missing-sqlite",
            json!({ "sqlite": missing_file, "query": "SELECT * FROM orders" }),
            vec![format!("SQLite file {} does not exist", missing_file.display())],
        ),
    ];
    for (case, source, says) in cases {
        let started = Instant::now();
        let spec = copy_job(&source, &s3_sink(&s3, &format!("faults/{case}/")));
        let error = job_error(&wait_over(&hub, &submit(&hub, &spec).unwrap()));
        let says: Vec<&str> = says.iter().map(String::as_str).collect();
        assert_says(&error, &says);
        for secret in [PASSWORD, "an old password", s3.secret_key()] {
            assert!(!error.contains(secret), "{case}: {error:?} shows a secret");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{case} took {:?}", started.elapsed());
    }

    // No node holds the password credential: refused at submit, before any run.
    let spec = copy_job(
        &postgres(&reader, "nobody-holds-this", "SELECT * FROM orders"),
        &s3_sink(&s3, "faults/missing-credential/"),
    );
    let error = submit(&hub, &spec).expect_err("refused at submit");
    assert_says(
        &error,
        &[
            r#"no node of gateway 'lake' holds a credential named "nobody-holds-this""#,
            "gatehouse node credential set nobody-holds-this",
        ],
    );
    assert!(hub.admin(&["job", "list", "lake"]).as_array().unwrap().len() == 5, "no job was made for it");

    assert_eq!(s3.list_objects(""), Vec::<(String, u64)>::new(), "nothing under any prefix");
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");
}
