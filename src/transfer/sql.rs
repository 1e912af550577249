//! SQL sources: a query's rows from PostgreSQL (`COPY … TO STDOUT` for CSV, `row_to_json` rows
//! for JSON lines) or from a SQLite file opened read-only, streamed as chunks of bytes so a
//! node's memory stays bounded whatever the size of the result. Also the min/max of a
//! partition column, for splitting a query into ranges.
//!
//! The SQLite writer formats values the way PostgreSQL does (CSV quoting, floats, `\x` hex for
//! blobs, JSON escapes), so a copy looks the same whichever database it came from. This module
//! never writes to a database: PostgreSQL queries run in a read-only transaction, and SQLite
//! files are opened read-only and never created. Messages name the database as host:port/dbname or the
//! file's path, never the URL as given (it may hold a password).

use crate::protocol::SqlFormat;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::Type;

/// A database to read from, with the password already taken from the node's credentials.
#[derive(Clone)]
pub enum Database {
    Postgres { url: String, password: Option<String> },
    Sqlite { path: PathBuf },
}

// Hand-written so a password can't reach a log line through `{:?}`.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Postgres { url, .. } => {
                f.debug_struct("Postgres").field("url", url).finish_non_exhaustive()
            }
            Database::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
        }
    }
}

/// One range of a partitioned query: `lower <= column < upper`, plus NULLs when `nulls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub column: String,
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    pub nulls: bool,
}

impl Range {
    /// The `WHERE` condition, the same in PostgreSQL and SQLite. The bounds are written as
    /// literals (they are integers, so that is safe) because `COPY` takes no parameters.
    fn condition(&self) -> String {
        let column = quote_identifier(&self.column);
        let mut bounds = Vec::new();
        if let Some(lower) = self.lower {
            bounds.push(format!("{column} >= {lower}"));
        }
        if let Some(upper) = self.upper {
            bounds.push(format!("{column} < {upper}"));
        }
        let in_bounds =
            if bounds.is_empty() { format!("{column} IS NOT NULL") } else { bounds.join(" AND ") };
        if self.nulls { format!("(({in_bounds}) OR {column} IS NULL)") } else { format!("({in_bounds})") }
    }
}

/// Why a query can't be read. Every message says what to do. `database` is
/// "PostgreSQL host:port/dbname" or "SQLite file /path"; no message holds a password.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(
        "the PostgreSQL URL is not valid ({reason}); write it as postgres://user@host:port/dbname \
         and keep the password in the node's credentials"
    )]
    InvalidUrl { reason: String },
    #[error(
        "{database} is set to require TLS (sslmode in the URL), which Gatehouse does not offer for \
         databases yet; use sslmode=prefer or disable, and only on a network you trust"
    )]
    TlsRequired { database: String },
    #[error(
        "cannot reach {database} ({cause}); check the host, the port and any firewall between this \
         node and the database"
    )]
    Unreachable { database: String, cause: String },
    #[error("{database} refused the login ({cause}); check the user in the URL and the password credential")]
    AuthenticationFailed { database: String, cause: String },
    #[error("{database} does not exist ({cause}); check the database name at the end of the URL")]
    NoDatabase { database: String, cause: String },
    #[error(
        "the query on {database} reads a table that does not exist ({cause}); check the table's name \
         and schema in the query"
    )]
    NoTable { database: String, cause: String },
    #[error("the query on {database} is not valid SQL ({cause}); correct the query")]
    Syntax { database: String, cause: String },
    #[error(
        "the query on {database} tries to change data ({cause}); Gatehouse only reads, so give it a \
         query that only reads"
    )]
    WritesData { database: String, cause: String },
    #[error("{database} could not run the query ({cause}); correct the query or the database")]
    Server { database: String, cause: String },
    #[error(
        "the connection to {database} broke during the export ({cause}); check that the database is \
         up and the network to it is stable, then run the copy again"
    )]
    ConnectionLost { database: String, cause: String },
    #[error(
        "SQLite file {} does not exist; check the path (Gatehouse opens it read-only and never \
         creates it)",
        path.display()
    )]
    SqliteMissing { path: PathBuf },
    #[error("cannot open SQLite file {} ({cause}); check that the node's user may read it", path.display())]
    SqliteUnreadable { path: PathBuf, cause: String },
    #[error(
        "{} is not a SQLite database ({cause}); check that the path names the database file itself",
        path.display()
    )]
    NotSqlite { path: PathBuf, cause: String },
    #[error(
        "partition_column \"{column}\" must be an integer column, but in the query on {database} it \
         {found}; choose an integer column or leave partition_column out"
    )]
    NotInteger { database: String, column: String, found: String },
    #[error("the export from {database} stopped because its copy was cancelled (nothing reads its output)")]
    Cancelled { database: String },
    #[error("reading {database} failed unexpectedly ({cause}); this is a bug in Gatehouse, please report it")]
    ReaderFailed { database: String, cause: String },
}

/// The smallest and largest value of `column` in the query's rows; `None` when it has no rows
/// (or only NULLs).
pub async fn bounds(db: &Database, query: &str, column: &str) -> Result<Option<(i64, i64)>, SqlError> {
    match db {
        Database::Postgres { url, password } => {
            postgres_bounds(url, password.as_deref(), query, column).await
        }
        Database::Sqlite { path } => {
            let (path, query, column) = (path.clone(), query.to_owned(), column.to_owned());
            let label = sqlite_label(&path);
            tokio::task::spawn_blocking(move || sqlite_bounds(&path, &query, &column))
                .await
                .map_err(|e| SqlError::ReaderFailed { database: label, cause: e.to_string() })?
        }
    }
}

/// Streams the query's rows (only those in `range`, when given) in `format` into `out`, in
/// chunks of about [`CHUNK_BYTES`]; returns how many rows were written.
///
/// Every chunk ends at the end of a row (a CSV header counts as one), so a chunk is larger than
/// [`CHUNK_BYTES`] only when a single row is. When `out` is closed the export stops (the
/// database is told to cancel the query) and returns [`SqlError::Cancelled`].
pub async fn export(
    db: &Database,
    query: &str,
    format: SqlFormat,
    range: Option<&Range>,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, SqlError> {
    match db {
        Database::Postgres { url, password } => {
            postgres_export(url, password.as_deref(), query, format, range, &out).await
        }
        Database::Sqlite { path } => sqlite_export(path, query, format, range, out).await,
    }
}

/// The size the exporters aim for in each chunk they send.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How long a TCP connection to PostgreSQL may take, so an unreachable database fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take in all, TLS negotiation and login included: a port that
/// accepts but never answers (not a PostgreSQL server, or one that hangs) fails too.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive: a database that vanishes during a long query, before it sends any rows, is
/// noticed within about two minutes instead of the OS default of hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 4;
/// How long the cancel request for an abandoned query may take; it is sent in the background.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// `"name"`, with `"` doubled: an identifier in PostgreSQL and SQLite alike.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A statement made of Gatehouse's text around the user's query, remembering where the query
/// sits so a server's error position can be given relative to the query.
struct Statement {
    sql: String,
    /// Characters before the query.
    query_start: usize,
    /// Characters in the query.
    query_chars: usize,
}

impl Statement {
    /// `before` + query + `after`. The query loses trailing `;`s (it becomes a subquery) and
    /// sits on lines of its own, so a trailing `-- comment` doesn't swallow what follows.
    fn new(before: &str, query: &str, after: &str) -> Statement {
        let query = query.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        let before = format!("{before}\n");
        Statement {
            sql: format!("{before}{query}\n{after}"),
            query_start: before.chars().count(),
            query_chars: query.chars().count(),
        }
    }

    /// " at character N of the query" for a 1-based character position in `sql`, or "at the
    /// end of the query" when the server stumbled on Gatehouse's text right after it.
    fn describe_position(&self, position: u32) -> String {
        let position = usize::try_from(position).unwrap_or(usize::MAX);
        if position > self.query_start && position <= self.query_start + self.query_chars {
            format!(" at character {} of the query", position - self.query_start)
        } else if position > self.query_start + self.query_chars {
            " at the end of the query".to_owned()
        } else {
            String::new()
        }
    }
}

/// Whole rows gathered into chunks of at most [`CHUNK_BYTES`] (unless one row is larger).
struct Chunks {
    buffer: BytesMut,
    /// Where the row being written starts in `buffer`.
    row_start: usize,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks { buffer: BytesMut::with_capacity(CHUNK_BYTES), row_start: 0 }
    }

    /// Ends the row just written into `buffer`; returns a chunk when one is full.
    fn end_row(&mut self) -> Option<Bytes> {
        let chunk = if self.buffer.len() > CHUNK_BYTES && self.row_start > 0 {
            // This row overflows the chunk: send the rows before it, keep it for the next one.
            Some(self.buffer.split_to(self.row_start).freeze())
        } else if self.buffer.len() >= CHUNK_BYTES {
            Some(self.buffer.split().freeze())
        } else {
            None
        };
        if chunk.is_some() {
            // A fresh allocation for the next chunk, rather than growing from a few bytes.
            self.buffer.reserve(CHUNK_BYTES);
        }
        self.row_start = self.buffer.len();
        chunk
    }

    /// The last, partly filled chunk, if any.
    fn finish(self) -> Option<Bytes> {
        (!self.buffer.is_empty()).then(|| self.buffer.freeze())
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A connection to PostgreSQL for one export or one bounds query.
struct Session {
    client: tokio_postgres::Client,
    /// The task driving the socket; its error says why a connection broke.
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    /// "PostgreSQL host:port/dbname".
    label: String,
}

impl Session {
    /// The connection settings from the URL and the credential, and the label naming them.
    fn config(url: &str, password: Option<&str>) -> Result<(tokio_postgres::Config, String), SqlError> {
        // tokio-postgres's parse errors name the option, never its value.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| SqlError::InvalidUrl { reason: error_text(&e) })?;
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.keepalives_interval(KEEPALIVE_INTERVAL);
        config.keepalives_retries(KEEPALIVE_RETRIES);
        if config.get_application_name().is_none() {
            // So a database administrator can tell Gatehouse's sessions apart.
            config.application_name("gatehouse");
        }
        let label = postgres_label(&config);
        Ok((config, label))
    }

    async fn open(config: &tokio_postgres::Config, label: &str) -> Result<Session, SqlError> {
        use tokio_postgres::config::SslMode;
        // TLS to the database is a follow-up: for now the connection is plain TCP (NoTls), so a
        // URL that insists on TLS is refused here rather than with an obscure handshake error.
        if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(SqlError::TlsRequired { database: label.to_owned() });
        }
        let connecting = config.connect(tokio_postgres::NoTls);
        let (client, connection) = match tokio::time::timeout(STARTUP_TIMEOUT, connecting).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Err(connect_error(label, &e)),
            Err(_) => {
                return Err(SqlError::Unreachable {
                    database: label.to_owned(),
                    cause: format!("no answer within {} s", STARTUP_TIMEOUT.as_secs()),
                });
            }
        };
        let connection = tokio::spawn(connection);
        let mut session = Session { client, connection, label: label.to_owned() };
        // Read-only, so no query can change the database: not `COPY (DELETE … RETURNING *)`, not
        // a function with side effects. A transaction rather than a startup option, which
        // connection poolers such as PgBouncer refuse. It ends with the connection.
        if let Err(e) = session.client.batch_execute("START TRANSACTION READ ONLY").await {
            return Err(session.error(&e, None).await);
        }
        Ok(session)
    }

    /// The error for a failed query or row. When the connection itself broke, the
    /// connection task's error (the socket's) says why, not the client's "connection closed".
    async fn error(&mut self, e: &tokio_postgres::Error, statement: Option<&Statement>) -> SqlError {
        if e.as_db_error().is_none() && (e.is_closed() || io_source(e).is_some()) {
            let cause = match tokio::time::timeout(Duration::from_secs(1), &mut self.connection).await {
                Ok(Ok(Err(connection_error))) => error_text(&connection_error),
                _ => error_text(e),
            };
            return SqlError::ConnectionLost { database: self.label.clone(), cause };
        }
        query_error(&self.label, e, statement)
    }

    /// Stops the query server-side and drops the socket: the receiver is gone.
    fn cancel(self) -> SqlError {
        let token = self.client.cancel_token();
        // In the background, bounded: the caller shouldn't wait for a slow network, and the
        // server stops a query that is still computing only when asked (closing the socket is
        // noticed only when it next sends rows).
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tokio_postgres::NoTls)).await;
        });
        self.connection.abort();
        SqlError::Cancelled { database: self.label }
    }
}

/// "PostgreSQL host:port/dbname", with tokio-postgres's defaults (port 5432, the user's name
/// as the database) filled in.
fn postgres_label(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
            };
            // One port for all hosts, one per host, or none (the default).
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        // `hostaddr=` alone names the server by address.
        let port = ports.first().copied().unwrap_or(5432);
        let addresses: Vec<String> = config.get_hostaddrs().iter().map(|ip| format!("{ip}:{port}")).collect();
        if addresses.is_empty() { "(no host)".to_owned() } else { addresses.join(",") }
    } else {
        hosts.join(",")
    };
    let database = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("PostgreSQL {hosts}/{database}")
}

/// An error's text with its causes, on one line: tokio-postgres's own text is only the kind
/// ("db error"), the server's message is its source, and DETAIL/HINT are lines of their own.
fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text.replace('\n', "; ")
}

fn io_source(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    std::error::Error::source(e).and_then(|source| source.downcast_ref::<std::io::Error>())
}

/// An error from connecting and logging in.
fn connect_error(label: &str, e: &tokio_postgres::Error) -> SqlError {
    let database = label.to_owned();
    if e.as_db_error().is_some() {
        return query_error(label, e, None);
    }
    if let Some(io) = io_source(e) {
        let cause = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            _ => io.to_string(),
        };
        return SqlError::Unreachable { database, cause };
    }
    // tokio-postgres keeps its error kinds private; the text is the only way to tell these apart.
    let text = error_text(e);
    if text.contains("password missing") {
        SqlError::AuthenticationFailed {
            database,
            cause: "it asks for a password and none is set".to_owned(),
        }
    } else if text.starts_with("invalid configuration") {
        // "both host and hostaddr are missing", "invalid number of ports", …
        SqlError::InvalidUrl { reason: text }
    } else if text.starts_with("authentication error") {
        SqlError::AuthenticationFailed { database, cause: text }
    } else if text.starts_with("error performing TLS handshake") {
        SqlError::TlsRequired { database }
    } else if e.is_closed() {
        SqlError::Unreachable {
            database,
            cause: "the server closed the connection while logging in; is it a PostgreSQL server?".to_owned(),
        }
    } else {
        SqlError::Unreachable { database, cause: text }
    }
}

/// An error the server (or the protocol) gave for a statement.
/// `statement`, when there is one, places an error position in the user's query.
fn query_error(label: &str, e: &tokio_postgres::Error, statement: Option<&Statement>) -> SqlError {
    let database = label.to_owned();
    let Some(db_error) = e.as_db_error() else {
        return SqlError::Server { database, cause: error_text(e) };
    };
    let mut cause = error_text(e);
    if let (Some(ErrorPosition::Original(position)), Some(statement)) = (db_error.position(), statement) {
        cause.push_str(&statement.describe_position(*position));
    }
    let code = db_error.code();
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        SqlError::AuthenticationFailed { database, cause }
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        SqlError::NoDatabase { database, cause }
    } else if *code == SqlState::UNDEFINED_TABLE {
        SqlError::NoTable { database, cause }
    } else if *code == SqlState::SYNTAX_ERROR {
        SqlError::Syntax { database, cause }
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        SqlError::WritesData { database, cause }
    } else {
        SqlError::Server { database, cause }
    }
}

async fn postgres_bounds(
    url: &str,
    password: Option<&str>,
    query: &str,
    column: &str,
) -> Result<Option<(i64, i64)>, SqlError> {
    let (config, label) = Session::config(url, password)?;
    let mut session = Session::open(&config, &label).await?;
    let quoted = quote_identifier(column);
    let statement = Statement::new(&format!("SELECT min({quoted}), max({quoted}) FROM ("), query, ") AS q");
    let prepared = match session.client.prepare(&statement.sql).await {
        Ok(prepared) => prepared,
        Err(e) => return Err(session.error(&e, Some(&statement)).await),
    };
    let ty = prepared.columns().first().map_or(Type::VOID, |c| c.type_().clone());
    if ![Type::INT2, Type::INT4, Type::INT8].contains(&ty) {
        return Err(SqlError::NotInteger {
            database: session.label,
            column: column.to_owned(),
            found: format!("is of type {}", ty.name()),
        });
    }
    let row = match session.client.query_one(&prepared, &[]).await {
        Ok(row) => row,
        Err(e) => return Err(session.error(&e, Some(&statement)).await),
    };
    let value = |i: usize| -> Result<Option<i64>, tokio_postgres::Error> {
        Ok(match ty {
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from),
            _ => row.try_get::<_, Option<i64>>(i)?,
        })
    };
    match (value(0), value(1)) {
        (Ok(Some(min)), Ok(Some(max))) => Ok(Some((min, max))),
        (Ok(_), Ok(_)) => Ok(None),
        (Err(e), _) | (_, Err(e)) => Err(session.error(&e, Some(&statement)).await),
    }
}

async fn postgres_export(
    url: &str,
    password: Option<&str>,
    query: &str,
    format: SqlFormat,
    range: Option<&Range>,
    out: &mpsc::Sender<Bytes>,
) -> Result<u64, SqlError> {
    let (config, label) = Session::config(url, password)?;
    let mut session = tokio::select! {
        session = Session::open(&config, &label) => session?,
        // Not connected yet, so there is no query to cancel.
        () = out.closed() => return Err(SqlError::Cancelled { database: label }),
    };
    let statement = match (format, range) {
        (SqlFormat::Csv, None) => Statement::new("COPY (", query, ") TO STDOUT WITH (FORMAT csv, HEADER)"),
        (SqlFormat::Csv, Some(range)) => Statement::new(
            "COPY (SELECT * FROM (",
            query,
            &format!(") AS q WHERE {}) TO STDOUT WITH (FORMAT csv, HEADER)", range.condition()),
        ),
        (SqlFormat::Jsonl, range) => {
            let filter = range.map(|r| format!(" WHERE {}", r.condition())).unwrap_or_default();
            Statement::new("SELECT row_to_json(q)::text FROM (", query, &format!(") AS q{filter}"))
        }
    };
    let result = tokio::select! {
        // Work first: an export that finished isn't reported as cancelled.
        biased;
        result = postgres_rows(&session.client, format, &statement, out) => result,
        () = out.closed() => Err(Failure::Closed),
    };
    match result {
        Ok(rows) => Ok(rows),
        Err(Failure::Closed) => Err(session.cancel()),
        Err(Failure::Postgres(e)) => Err(session.error(&e, Some(&statement)).await),
    }
}

/// Why sending rows stopped.
enum Failure {
    /// The receiver is gone.
    Closed,
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Postgres(e)
    }
}

/// Runs the statement and sends its output in chunks; returns the number of rows.
async fn postgres_rows(
    client: &tokio_postgres::Client,
    format: SqlFormat,
    statement: &Statement,
    out: &mpsc::Sender<Bytes>,
) -> Result<u64, Failure> {
    let mut chunks = Chunks::new();
    let mut rows = 0_u64;
    match format {
        SqlFormat::Csv => {
            // Each CopyData message from the server holds exactly one row (the protocol promises
            // it for COPY TO), the first one the header.
            let stream = client.copy_out(statement.sql.as_str()).await?;
            let mut stream = std::pin::pin!(stream);
            let mut header = true;
            while let Some(data) = stream.next().await {
                chunks.buffer.extend_from_slice(&data?);
                if !std::mem::take(&mut header) {
                    rows += 1;
                }
                send(out, chunks.end_row()).await?;
            }
        }
        SqlFormat::Jsonl => {
            let no_parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
            let stream = client.query_raw(statement.sql.as_str(), no_parameters).await?;
            let mut stream = std::pin::pin!(stream);
            while let Some(row) = stream.next().await {
                let row = row?;
                chunks.buffer.extend_from_slice(row.try_get::<_, &str>(0)?.as_bytes());
                chunks.buffer.put_u8(b'\n');
                rows += 1;
                send(out, chunks.end_row()).await?;
            }
        }
    }
    send(out, chunks.finish()).await?;
    Ok(rows)
}

async fn send(out: &mpsc::Sender<Bytes>, chunk: Option<Bytes>) -> Result<(), Failure> {
    match chunk {
        Some(chunk) => out.send(chunk).await.map_err(|_| Failure::Closed),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

/// "SQLite file /path".
fn sqlite_label(path: &Path) -> String {
    format!("SQLite file {}", path.display())
}

/// Opens the file read-only; never creates it (no `SQLITE_OPEN_CREATE`) and never interprets
/// the path as a URI (no `SQLITE_OPEN_URI`).
fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, SqlError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SqlError::SqliteMissing { path: path.to_owned() });
        }
        Err(e) => return Err(SqlError::SqliteUnreadable { path: path.to_owned(), cause: e.to_string() }),
        Ok(metadata) if metadata.is_dir() => {
            return Err(SqlError::NotSqlite { path: path.to_owned(), cause: "it is a directory".to_owned() });
        }
        Ok(_) => {}
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    rusqlite::Connection::open_with_flags(path, flags).map_err(|e| sqlite_error(path, &e))
}

fn sqlite_error(path: &Path, e: &rusqlite::Error) -> SqlError {
    let database = sqlite_label(path);
    let rusqlite::Error::SqliteFailure(failure, message) = e else {
        return SqlError::Server { database, cause: e.to_string() };
    };
    let cause = message.clone().unwrap_or_else(|| failure.to_string());
    match failure.code {
        rusqlite::ErrorCode::NotADatabase => SqlError::NotSqlite { path: path.to_owned(), cause },
        rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied => {
            SqlError::SqliteUnreadable { path: path.to_owned(), cause }
        }
        rusqlite::ErrorCode::OperationInterrupted => SqlError::Cancelled { database },
        rusqlite::ErrorCode::ReadOnly => SqlError::WritesData { database, cause },
        // SQLite has one code for all of these; its message tells them apart.
        _ if cause.starts_with("no such table") => SqlError::NoTable { database, cause },
        _ if cause.contains("syntax error") || cause.starts_with("incomplete input") => {
            SqlError::Syntax { database, cause }
        }
        _ => SqlError::Server { database, cause },
    }
}

fn sqlite_bounds(path: &Path, query: &str, column: &str) -> Result<Option<(i64, i64)>, SqlError> {
    let connection = open_sqlite(path)?;
    let c = quote_identifier(column);
    // SQLite columns hold any type: min/max alone would mix integers with reals or text, so
    // the third value is the type of a value that isn't an integer, if there is one.
    let statement = Statement::new(
        &format!(
            "SELECT min({c}), max({c}), max(CASE WHEN typeof({c}) NOT IN ('integer', 'null') THEN typeof({c}) END) FROM ("
        ),
        query,
        ") AS q",
    );
    let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Result<Option<(i64, i64)>, String>> {
        // A value that isn't an integer makes min/max unreadable as integers: its type first.
        if let Some(other_type) = row.get::<_, Option<String>>(2)? {
            return Ok(Err(other_type));
        }
        let (min, max) = (row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?);
        Ok(Ok(min.zip(max)))
    };
    connection.query_row(&statement.sql, [], read).map_err(|e| sqlite_error(path, &e))?.map_err(
        |other_type| SqlError::NotInteger {
            database: sqlite_label(path),
            column: column.to_owned(),
            found: format!("holds {other_type} values"),
        },
    )
}

async fn sqlite_export(
    path: &Path,
    query: &str,
    format: SqlFormat,
    range: Option<&Range>,
    out: mpsc::Sender<Bytes>,
) -> Result<u64, SqlError> {
    let label = sqlite_label(path);
    let failed =
        |e: tokio::task::JoinError| SqlError::ReaderFailed { database: label.clone(), cause: e.to_string() };
    let opening = path.to_owned();
    let connection = tokio::task::spawn_blocking(move || open_sqlite(&opening)).await.map_err(failed)??;
    // The interrupt handle stops a query that is still computing (a big sort, say) when the
    // receiver goes away; a query that sends rows notices at its next chunk anyway.
    let interrupt = connection.get_interrupt_handle();
    let (path, query, range, sender) = (path.to_owned(), query.to_owned(), range.cloned(), out.clone());
    let mut reading = tokio::task::spawn_blocking(move || {
        sqlite_rows(&connection, &path, &query, format, range.as_ref(), &sender)
    });
    tokio::select! {
        biased;
        result = &mut reading => result.map_err(failed)?,
        () = out.closed() => {
            interrupt.interrupt();
            let _ = reading.await;
            Err(SqlError::Cancelled { database: label.clone() })
        }
    }
}

/// Runs the query on a blocking thread and sends its rows, formatted like PostgreSQL's.
fn sqlite_rows(
    connection: &rusqlite::Connection,
    path: &Path,
    query: &str,
    format: SqlFormat,
    range: Option<&Range>,
    out: &mpsc::Sender<Bytes>,
) -> Result<u64, SqlError> {
    let statement = match range {
        Some(range) => {
            Statement::new("SELECT * FROM (", query, &format!(") AS q WHERE {}", range.condition()))
        }
        None => Statement::new("SELECT * FROM (", query, ") AS q"),
    };
    let mut prepared = connection.prepare(&statement.sql).map_err(|e| sqlite_error(path, &e))?;
    let names: Vec<String> = prepared.column_names().into_iter().map(str::to_owned).collect();
    let single_column = names.len() == 1;
    let cancelled = || SqlError::Cancelled { database: sqlite_label(path) };
    let mut chunks = Chunks::new();
    if format == SqlFormat::Csv {
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                chunks.buffer.put_u8(b',');
            }
            write_csv_text(&mut chunks.buffer, name.as_bytes(), single_column);
        }
        chunks.buffer.put_u8(b'\n');
        if let Some(chunk) = chunks.end_row() {
            out.blocking_send(chunk).map_err(|_| cancelled())?;
        }
    }
    let mut rows = prepared.query([]).map_err(|e| sqlite_error(path, &e))?;
    let mut count = 0_u64;
    while let Some(row) = rows.next().map_err(|e| sqlite_error(path, &e))? {
        let buffer = &mut chunks.buffer;
        if format == SqlFormat::Jsonl {
            buffer.put_u8(b'{');
        }
        for (i, name) in names.iter().enumerate() {
            let value = row.get_ref(i).map_err(|e| sqlite_error(path, &e))?;
            match format {
                SqlFormat::Csv => {
                    if i > 0 {
                        buffer.put_u8(b',');
                    }
                    write_csv_value(buffer, value, single_column);
                }
                SqlFormat::Jsonl => {
                    if i > 0 {
                        buffer.put_u8(b',');
                    }
                    write_json_string(buffer, name);
                    buffer.put_u8(b':');
                    write_json_value(buffer, value);
                }
            }
        }
        if format == SqlFormat::Jsonl {
            buffer.put_u8(b'}');
        }
        buffer.put_u8(b'\n');
        count += 1;
        if let Some(chunk) = chunks.end_row() {
            out.blocking_send(chunk).map_err(|_| cancelled())?;
        }
    }
    if let Some(chunk) = chunks.finish() {
        out.blocking_send(chunk).map_err(|_| cancelled())?;
    }
    Ok(count)
}

/// A CSV field as PostgreSQL's `COPY … CSV` writes it: quoted when it holds `,`, `"`, CR or LF
/// (quotes doubled), when it is empty (an empty field means NULL), or when it is `\.` alone on
/// a line (the end-of-data marker).
fn write_csv_text(buffer: &mut BytesMut, text: &[u8], single_column: bool) {
    let quote = text.is_empty()
        || text.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        || (single_column && text == b"\\.");
    if !quote {
        buffer.extend_from_slice(text);
        return;
    }
    buffer.put_u8(b'"');
    for (i, part) in text.split(|&b| b == b'"').enumerate() {
        if i > 0 {
            buffer.extend_from_slice(b"\"\"");
        }
        buffer.extend_from_slice(part);
    }
    buffer.put_u8(b'"');
}

// Writing into a BytesMut can't fail (it grows), hence the ignored `write!` results below.
fn write_csv_value(buffer: &mut BytesMut, value: rusqlite::types::ValueRef<'_>, single_column: bool) {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => {}
        ValueRef::Integer(i) => {
            let _ = write!(buffer, "{i}");
        }
        ValueRef::Real(x) => write_float(buffer, x),
        ValueRef::Text(text) => write_csv_text(buffer, text, single_column),
        ValueRef::Blob(blob) => write_hex(buffer, blob),
    }
}

fn write_json_value(buffer: &mut BytesMut, value: rusqlite::types::ValueRef<'_>) {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => buffer.extend_from_slice(b"null"),
        ValueRef::Integer(i) => {
            let _ = write!(buffer, "{i}");
        }
        // Like PostgreSQL's row_to_json: NaN and the infinities, which JSON can't hold as
        // numbers, become strings.
        ValueRef::Real(x) if !x.is_finite() => {
            buffer.put_u8(b'"');
            write_float(buffer, x);
            buffer.put_u8(b'"');
        }
        ValueRef::Real(x) => write_float(buffer, x),
        ValueRef::Text(text) => write_json_string(buffer, &String::from_utf8_lossy(text)),
        ValueRef::Blob(blob) => {
            // "\\x0102": the backslash of bytea's hex form, escaped for JSON.
            buffer.extend_from_slice(b"\"\\");
            write_hex(buffer, blob);
            buffer.put_u8(b'"');
        }
    }
}

/// `\x` and lowercase hex, PostgreSQL's bytea output.
fn write_hex(buffer: &mut BytesMut, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    buffer.reserve(2 + 2 * bytes.len());
    buffer.extend_from_slice(b"\\x");
    for &b in bytes {
        buffer.put_u8(DIGITS[usize::from(b >> 4)]);
        buffer.put_u8(DIGITS[usize::from(b & 0xf)]);
    }
}

/// A float as PostgreSQL's float8 output writes it (with the default extra_float_digits = 1):
/// the shortest digits that read back as the same value, in fixed notation when the decimal
/// exponent is from -4 to 14, else as `1.5e+20` / `1e-07` (two exponent digits at least).
fn write_float(buffer: &mut BytesMut, x: f64) {
    if x.is_nan() {
        buffer.extend_from_slice(b"NaN");
        return;
    }
    if x.is_infinite() {
        buffer.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits with the exponent: "-1.5e-7".
    let scientific = format!("{x:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..15).contains(&exponent) {
        let _ = write!(buffer, "{x}");
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(buffer, "{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
}

/// A JSON string escaped as PostgreSQL's `escape_json` does: `\"`, `\\`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, other control characters as `\u00XX`; everything else, non-ASCII included, as is.
fn write_json_string(buffer: &mut BytesMut, text: &str) {
    buffer.put_u8(b'"');
    let mut plain_from = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\x08' => b"\\b",
            b'\x0c' => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => b"",
            _ => continue,
        };
        buffer.extend_from_slice(&text.as_bytes()[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(buffer, "\\u{b:04x}");
        } else {
            buffer.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    buffer.extend_from_slice(&text.as_bytes()[plain_from..]);
    buffer.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut buffer = BytesMut::new();
        write_float(&mut buffer, x);
        String::from_utf8(buffer.to_vec()).unwrap()
    }

    #[test]
    fn floats_are_written_like_postgresql_float8() {
        let check = |x: f64, expected: &str| assert_eq!(float(x), expected, "{x:?}");
        check(0.0, "0");
        check(-0.0, "-0");
        check(1.0, "1");
        check(1.5, "1.5");
        check(0.1, "0.1");
        check(0.0001, "0.0001");
        check(0.00001, "1e-05");
        check(-1.5e-7, "-1.5e-07");
        check(123_456_789_012_345.6, "123456789012345.6");
        check(1e15, "1e+15");
        check(1e20, "1e+20");
        check(f64::MAX, "1.7976931348623157e+308");
        check(f64::NAN, "NaN");
        check(f64::NEG_INFINITY, "-Infinity");
    }

    #[test]
    fn a_range_becomes_a_condition_on_the_quoted_column() {
        let range = |lower, upper, nulls| Range { column: "we\"ird".to_owned(), lower, upper, nulls };
        assert_eq!(range(Some(1), Some(5), false).condition(), r#"("we""ird" >= 1 AND "we""ird" < 5)"#);
        assert_eq!(range(None, Some(-5), true).condition(), r#"(("we""ird" < -5) OR "we""ird" IS NULL)"#);
        assert_eq!(range(None, None, false).condition(), r#"("we""ird" IS NOT NULL)"#);
    }

    #[test]
    fn an_error_position_is_counted_from_the_start_of_the_query() {
        let statement = Statement::new("COPY (", "SELEC 1;", ") TO STDOUT");
        assert_eq!(statement.sql, "COPY (\nSELEC 1\n) TO STDOUT");
        assert_eq!(statement.describe_position(8), " at character 1 of the query");
        assert_eq!(statement.describe_position(16), " at the end of the query");
        assert_eq!(statement.describe_position(2), "");
    }
}
