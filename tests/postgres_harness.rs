//! The test harness in `tests/common` really works: a throwaway PostgreSQL cluster takes
//! queries, clusters and their databases are kept apart, a dropped cluster is gone (port closed,
//! dir removed), and the real `gatehouse` binary runs against one and stops on SIGTERM.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::postgres::Postgres;
use common::process::spawn_gatehouse;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Whether the table exists in the database `pool` connects to.
async fn has_table(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cluster_takes_queries_and_is_gone_after_drop() {
    let postgres = Postgres::start();
    let url = postgres.url();
    assert_eq!(url, format!("postgres://gatehouse@127.0.0.1:{}/gatehouse", postgres.port()));
    let pool = connect(&url).await;

    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&pool).await.unwrap();
    assert!(version.contains("PostgreSQL"), "SELECT version() said {version:?}");
    let encoding: String = sqlx::query_scalar("SHOW server_encoding").fetch_one(&pool).await.unwrap();
    assert_eq!(encoding, "UTF8");

    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
        .bind(7_i64)
        .bind("naïve café ✔")
        .execute(&pool)
        .await
        .unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
        .bind(7_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(body, "naïve café ✔");
    pool.close().await;

    // Dropped: the port closes (bounded wait) and the dir is removed.
    let address = SocketAddr::from(([127, 0, 0, 1], postgres.port()));
    let dir = postgres.dir().to_owned();
    TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("the running server refuses connections on {address}: {e}"));
    drop(postgres);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
        assert!(Instant::now() < deadline, "{address} still accepts connections 5 s after drop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[tokio::test]
async fn clusters_and_databases_are_kept_apart() {
    // Started side by side, as parallel tests would.
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(Postgres::start);
        let second = scope.spawn(Postgres::start);
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_ne!(first.port(), second.port());
    assert_ne!(first.dir(), second.dir());

    let other_url = first.new_database("other");
    assert_eq!(other_url, format!("postgres://gatehouse@127.0.0.1:{}/other", first.port()));
    let main = connect(&first.url()).await;
    let other = connect(&other_url).await;
    let elsewhere = connect(&second.url()).await;

    sqlx::query("CREATE TABLE only_in_main (id BIGINT)").execute(&main).await.unwrap();
    sqlx::query("CREATE TABLE only_in_other (id BIGINT)").execute(&other).await.unwrap();
    assert!(has_table(&main, "only_in_main").await);
    assert!(!has_table(&main, "only_in_other").await, "the second database leaks into the first");
    assert!(has_table(&other, "only_in_other").await);
    assert!(!has_table(&other, "only_in_main").await, "the first database leaks into the second");
    assert!(!has_table(&elsewhere, "only_in_main").await, "the first cluster leaks into the second");

    for pool in [main, other, elsewhere] {
        pool.close().await;
    }
}

#[tokio::test]
async fn the_hub_runs_on_a_throwaway_cluster_and_stops_on_sigterm() {
    let postgres = Postgres::start();
    let home = tempfile::tempdir().unwrap();
    let url = postgres.url();
    let mut hub = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0", "--db", &url],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    let address = hub.read_line_matching("listening on http://", Duration::from_secs(30));
    assert!(address.starts_with("127.0.0.1:"), "the hub listens on {address}");
    let token = hub.read_admin_token(Duration::from_secs(10));
    assert!(!token.is_empty());

    // The hub's schema went into the cluster, not into a file in its data dir.
    let pool = connect(&url).await;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(tables > 0, "the hub created no tables in PostgreSQL");
    pool.close().await;

    let status = hub.stop();
    assert!(status.success(), "the hub ended with {status} after SIGTERM; stderr:\n{}", hub.stderr());
}

#[test]
#[should_panic(expected = "printed no line starting with \"never printed\"")]
fn waiting_for_a_line_gives_up_at_its_timeout() {
    let home = tempfile::tempdir().unwrap();
    let mut hub = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0"],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    hub.read_line_matching("listening on ", Duration::from_secs(30));
    hub.read_line_matching("never printed", Duration::from_millis(500));
}
