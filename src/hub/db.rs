//! The hub's storage: one SQL database, SQLite (embedded default, WAL) or PostgreSQL (for
//! several hub replicas), behind plain functions. All state that matters lives here, so a
//! restarted hub, or a second hub on the same PostgreSQL database, loses nothing.
//!
//! **Invariant:** only this module writes SQL. Every multi-step change is one transaction;
//! queue and lease changes are single conditional statements, so two hubs can't both win.

use crate::protocol::{GatewaySettings, JoinKeyInfo, KeySlot, NodeMetrics, Policy, ReleaseView, RunState};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};
use std::collections::HashMap;
use std::time::Duration;

/// Storage failures. `Busy`/`Sqlx` are the hub's problem; the others are the caller's.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// Only the URL's scheme: the rest may hold a password.
    #[error("unsupported kind of database URL ({0}…); use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
}

type Result<T, E = DbError> = std::result::Result<T, E>;

/// Which SQL engine is behind the pool; the few statements that differ switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Migrations, applied in order once each, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (2, "dispatched_ms", include_str!("migrations/0002_dispatched_ms.sql")),
    (3, "copy_parts", include_str!("migrations/0003_copy_parts.sql")),
    (4, "bandwidth_limit", include_str!("migrations/0004_bandwidth_limit.sql")),
    (5, "history", include_str!("migrations/0005_history.sql")),
    (6, "join_keys", include_str!("migrations/0006_join_keys.sql")),
    (7, "node_keys", include_str!("migrations/0007_node_keys.sql")),
    (8, "credential_manager", include_str!("migrations/0008_credential_manager.sql")),
    (9, "releases", include_str!("migrations/0009_releases.sql")),
    (10, "bandwidth_grants", include_str!("migrations/0010_bandwidth_grants.sql")),
];

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

/// A gateway as stored.
#[derive(Debug, Clone)]
pub struct GatewayRow {
    pub id: String,
    pub name: String,
    pub settings: GatewaySettings,
    pub encryption: bool,
    pub primary_key_hash: String,
    pub primary_key_hint: String,
    pub primary_key_created_ms: i64,
    pub secondary_key_hash: String,
    pub secondary_key_hint: String,
    pub secondary_key_created_ms: i64,
    pub lease_node_id: Option<String>,
    pub lease_expires_ms: i64,
    pub lease_epoch: i64,
    pub created_ms: i64,
}

/// A node as stored.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub gateway_id: String,
    pub name: String,
    pub machine_id: String,
    pub token_hash: String,
    pub version: String,
    pub peer_address: String,
    pub encryption_thumbprint: Option<String>,
    /// Its X25519 public key for the peer channel (base64); empty until a node of an older
    /// version announces one.
    pub public_key: String,
    pub registered_order: i64,
    pub registered_ms: i64,
    pub last_heartbeat_ms: Option<i64>,
    pub metrics: NodeMetrics,
}

/// What a registration inserts.
pub struct NewNode {
    pub id: String,
    pub name: String,
    pub machine_id: String,
    pub token_hash: String,
    pub version: String,
    pub peer_address: String,
    pub encryption_thumbprint: Option<String>,
    pub public_key: String,
    pub now_ms: i64,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub gateway_id: String,
    pub name: String,
    pub spec: String,
    pub created_ms: i64,
    /// The job this one re-runs (`job rerun`), if any.
    pub rerun_of: Option<String>,
}

/// An activity run as stored.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub job_id: String,
    pub gateway_id: String,
    pub activity_index: i64,
    pub partition_index: i64,
    pub activity: String,
    pub state: RunState,
    pub attempt: i64,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub queued_ms: i64,
    /// When the current attempt's node started it; `None` while it waits.
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// JSON `Part`: the piece of a copy this run moves; `None` for a listing run, for runs of
    /// other kinds, and in job listings (see [`Db::runs_of_job`]).
    pub part: Option<String>,
    /// JSON, the node's: what earlier attempts committed.
    pub checkpoint: Option<String>,
}

/// A run to insert with its job.
pub struct NewRun {
    pub id: String,
    pub activity_index: i64,
    pub partition_index: i64,
    pub activity: String,
    /// JSON `Part` for a partition run of a copy (a re-run job's), else `None`.
    pub part: Option<String>,
    /// JSON `TransferProgress` known before it starts (a part's totals), or `None`.
    pub progress: Option<String>,
}

/// An attempt of a run that ended without ending the run: lost with its node, or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub run_id: String,
    pub attempt: i64,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub started_ms: Option<i64>,
    pub ended_ms: i64,
    /// `lost` or `cancelled`.
    pub outcome: String,
    /// The sentence that says why.
    pub error: Option<String>,
}

/// A token made for one purpose (its hash stays in the database only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    /// `metrics`, `viewer` or `credential_manager`.
    pub kind: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The gateway a credential-manager token is for.
    pub gateway_id: Option<String>,
}

/// A credential sealed for one node by the credential manager (ciphertext only).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub node_id: String,
    pub name: String,
    pub version: i64,
    pub deleted: bool,
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// Which jobs a listing wants, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs created at or after this (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only jobs created before this.
    pub until_ms: Option<i64>,
    /// Only jobs created before this one (its `created_ms`, `id`): the next page.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at_ms: i64,
    pub gateway_id: Option<String>,
    pub gateway_name: Option<String>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// A partition run a listing run splits off.
pub struct NewPart {
    pub id: String,
    /// JSON `Part`.
    pub part: String,
    /// JSON `TransferProgress` with what is known before it starts (its totals), or `None`.
    pub progress: Option<String>,
}

/// How a listing run ended: the parts it found and its result.
pub struct Split<'a> {
    pub parts: &'a [NewPart],
    /// JSON, the listing's summary.
    pub result: &'a str,
    pub now_ms: i64,
    /// The most runs the job may have once split.
    pub max_runs_per_job: i64,
}

/// What came of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitOutcome {
    Done,
    /// The attempt isn't the node's (any more), or the run ended.
    NotCurrent,
    /// The job has `existing` runs, and the parts would take it over its limit.
    TooManyRuns {
        existing: i64,
    },
}

/// How an attempt ended.
pub struct RunEnd<'a> {
    pub state: RunState,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub now_ms: i64,
}

/// What the sweeper looks for (ms since the Unix epoch, all by [`Db::clock_ms`]).
pub struct Sweep {
    /// Nodes silent since before this are lost.
    pub cutoff_ms: i64,
    /// Hand-offs made before this (less the gateway's queue timeout) that no worker started
    /// are lost.
    pub handoff_cutoff_ms: i64,
    /// When this hub started: a node silent since before was cut off by the restart.
    pub hub_started_ms: i64,
    pub now_ms: i64,
}

/// The heartbeat's outcome for the lease.
pub struct LeaseState {
    pub holder: Option<String>,
    pub epoch: i64,
    /// When the current lease lapses unless renewed (ms since the Unix epoch).
    pub expires_ms: i64,
}

/// Keys for adding nodes stay listed this long after they expire.
const JOIN_KEYS_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

const GATEWAY_COLUMNS: &str = "id, name, max_nodes, policy, cpu_threshold, memory_threshold, aggregation_minutes, \
     queue_timeout_seconds, encryption, primary_key_hash, primary_key_hint, primary_key_created_ms, \
     secondary_key_hash, secondary_key_hint, secondary_key_created_ms, lease_node_id, \
     lease_expires_ms, lease_epoch, created_ms, bandwidth_limit_mbps";

impl Db {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            let scheme = url.split_once(':').map_or("no scheme", |(scheme, _)| scheme);
            return Err(DbError::UnsupportedUrl(scheme.chars().take(20).collect()));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let url = match dialect {
            Dialect::Sqlite => {
                // One connection: SQLite has one writer anyway, and several connections made
                // writers sleep-and-retry on the lock (measured: half the throughput, twice
                // the CPU). WAL keeps readers of other processes beside it; busy_timeout
                // covers them; NORMAL sync is durable across process crashes.
                options = options.max_connections(1).after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        Ok(())
                    })
                });
                if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") }
            }
            Dialect::Postgres => {
                options = options.max_connections(16);
                url.to_owned()
            }
        };
        let pool = options.connect(&url).await?;
        let db = Db { pool, dialect };
        db.migrate().await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a write transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`),
    /// so two writers queue instead of one failing when it upgrades a read lock.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.write().await?;
        if self.dialect == Dialect::Postgres {
            // Two hubs starting at once on one database must not both migrate.
            sqlx::query("SELECT pg_advisory_xact_lock(7070)").execute(&mut *tx).await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for &(version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            for statement in sql.split(';').map(strip_comments).filter(|s| !s.is_empty()) {
                sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)")
                .bind(version)
                .bind(name)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(newest) = applied.iter().max()
            && *newest > MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
        {
            return Err(DbError::Conflict(format!(
                "the database was written by a newer hub (schema version {newest}); upgrade this hub"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- admin token ----

    /// Stores the admin token's hash unless one exists; returns whether this call stored it.
    pub async fn create_admin_token(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO admin_tokens (id, token_hash, created_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(token_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the admin token's hash: the old token stops working with this write. False if
    /// the hub has no admin token yet.
    pub async fn replace_admin_token(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE admin_tokens SET token_hash = $1, created_ms = $2 WHERE id = 1")
            .bind(token_hash)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn admin_token_hash(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT token_hash FROM admin_tokens WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    // ---- gateways ----

    pub async fn insert_gateway(&self, g: &GatewayRow) -> Result<()> {
        let result = sqlx::query(
            "INSERT INTO gateways (id, name, max_nodes, policy, cpu_threshold, memory_threshold, aggregation_minutes, \
             queue_timeout_seconds, encryption, primary_key_hash, primary_key_hint, primary_key_created_ms, \
             secondary_key_hash, secondary_key_hint, secondary_key_created_ms, lease_node_id, \
             lease_expires_ms, lease_epoch, registrations, created_ms, bandwidth_limit_mbps) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL, 0, 0, 0, $16, $17)",
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(i64::from(g.settings.max_nodes))
        .bind(policy_name(g.settings.policy))
        .bind(i64::from(g.settings.cpu_threshold))
        .bind(i64::from(g.settings.memory_threshold))
        .bind(i64::from(g.settings.aggregation_minutes))
        .bind(i64::from(g.settings.queue_timeout_seconds))
        .bind(i64::from(g.encryption))
        .bind(&g.primary_key_hash)
        .bind(&g.primary_key_hint)
        .bind(g.primary_key_created_ms)
        .bind(&g.secondary_key_hash)
        .bind(&g.secondary_key_hint)
        .bind(g.secondary_key_created_ms)
        .bind(g.created_ms)
        .bind(i64::from(g.settings.bandwidth_limit_mbps))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
                "a gateway named '{}' already exists; choose another name",
                g.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn gateways(&self) -> Result<Vec<GatewayRow>> {
        let sql = format!("SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY created_ms, name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(gateway_row).collect()
    }

    /// The gateway with this id, or else this name.
    pub async fn gateway(&self, id_or_name: &str) -> Result<Option<GatewayRow>> {
        let sql = format!(
            "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id_or_name).fetch_optional(&self.pool).await?;
        row.as_ref().map(gateway_row).transpose()
    }

    /// Deletes a gateway with its nodes, jobs and runs; returns whether it existed.
    pub async fn delete_gateway(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM gateways WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn update_settings(&self, id: &str, s: &GatewaySettings) -> Result<()> {
        sqlx::query(
            "UPDATE gateways SET max_nodes = $1, policy = $2, cpu_threshold = $3, memory_threshold = $4, \
             aggregation_minutes = $5, queue_timeout_seconds = $6, bandwidth_limit_mbps = $7 WHERE id = $8",
        )
        .bind(i64::from(s.max_nodes))
        .bind(policy_name(s.policy))
        .bind(i64::from(s.cpu_threshold))
        .bind(i64::from(s.memory_threshold))
        .bind(i64::from(s.aggregation_minutes))
        .bind(i64::from(s.queue_timeout_seconds))
        .bind(i64::from(s.bandwidth_limit_mbps))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces one auth key; the other keeps working.
    pub async fn set_key(&self, id: &str, slot: KeySlot, hash: &str, hint: &str) -> Result<()> {
        let sql = match slot {
            KeySlot::Primary => {
                "UPDATE gateways SET primary_key_hash = $1, primary_key_hint = $2, primary_key_created_ms = $3 WHERE id = $4"
            }
            KeySlot::Secondary => {
                "UPDATE gateways SET secondary_key_hash = $1, secondary_key_hint = $2, secondary_key_created_ms = $3 WHERE id = $4"
            }
        };
        sqlx::query(sql).bind(hash).bind(hint).bind(now_ms()).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    // ---- nodes ----

    pub async fn nodes(&self, gateway_id: &str) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT id, gateway_id, name, machine_id, token_hash, version, peer_address, encryption_thumbprint, public_key, \
             registered_order, registered_ms, last_heartbeat_ms, metrics FROM nodes WHERE gateway_id = $1 \
             ORDER BY registered_order",
        )
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(node_row).collect()
    }

    pub async fn node(&self, id: &str) -> Result<Option<NodeRow>> {
        let row = sqlx::query(
            "SELECT id, gateway_id, name, machine_id, token_hash, version, peer_address, encryption_thumbprint, public_key, \
             registered_order, registered_ms, last_heartbeat_ms, metrics FROM nodes WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_row).transpose()
    }

    /// Registers a node in one transaction: `rules` sees the gateway, its nodes and any node
    /// this machine already is (with that node's gateway name), and may refuse; nothing is
    /// written then.
    pub async fn register_node<E>(
        &self,
        gateway_id: &str,
        new: &NewNode,
        join_key: Option<&str>,
        rules: impl FnOnce(&GatewayRow, &[NodeRow], Option<(&NodeRow, &str)>) -> Result<(), E>,
    ) -> Result<Result<(), E>> {
        let mut tx = self.write().await?;
        // Serialize registrations per gateway (SQLite already holds the write lock).
        let lock = match self.dialect {
            Dialect::Sqlite => format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1"),
            Dialect::Postgres => format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1 FOR UPDATE"),
        };
        let Some(gateway) =
            sqlx::query(sqlx::AssertSqlSafe(lock)).bind(gateway_id).fetch_optional(&mut *tx).await?
        else {
            return Err(DbError::Conflict("the gateway was deleted".to_owned()));
        };
        let gateway = gateway_row(&gateway)?;
        let nodes: Vec<NodeRow> = sqlx::query(
            "SELECT id, gateway_id, name, machine_id, token_hash, version, peer_address, encryption_thumbprint, public_key, \
             registered_order, registered_ms, last_heartbeat_ms, metrics FROM nodes WHERE gateway_id = $1 \
             ORDER BY registered_order",
        )
        .bind(gateway_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(node_row)
        .collect::<Result<_>>()?;
        let existing = sqlx::query(
            "SELECT n.id, n.gateway_id, n.name, n.machine_id, n.token_hash, n.version, n.peer_address, \
             n.encryption_thumbprint, n.public_key, n.registered_order, n.registered_ms, n.last_heartbeat_ms, n.metrics, \
             g.name AS gateway_name FROM nodes n JOIN gateways g ON g.id = n.gateway_id WHERE n.machine_id = $1",
        )
        .bind(&new.machine_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| Ok::<_, DbError>((node_row(&row)?, row.try_get::<String, _>("gateway_name")?)))
        .transpose()?;
        let existing = existing.as_ref().map(|(node, gateway)| (node, gateway.as_str()));
        if let Err(refusal) = rules(&gateway, &nodes, existing) {
            return Ok(Err(refusal));
        }
        // A key made for adding nodes is taken in the same transaction, so a one-time key
        // registers one node even when two use it at once.
        if let Some(key_id) = join_key {
            claim_join_key(&mut tx, gateway_id, key_id, new).await?;
        }
        let order: i64 = sqlx::query(
            "UPDATE gateways SET registrations = registrations + 1 WHERE id = $1 RETURNING registrations",
        )
        .bind(gateway_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        // The first node decides whether the gateway encrypts its peer channel.
        if nodes.is_empty() {
            sqlx::query("UPDATE gateways SET encryption = $1 WHERE id = $2")
                .bind(i64::from(new.encryption_thumbprint.is_some()))
                .bind(gateway_id)
                .execute(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO nodes (id, gateway_id, name, machine_id, token_hash, version, peer_address, \
             encryption_thumbprint, public_key, registered_order, registered_ms, last_heartbeat_ms, metrics) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12)",
        )
        .bind(&new.id)
        .bind(gateway_id)
        .bind(&new.name)
        .bind(&new.machine_id)
        .bind(&new.token_hash)
        .bind(&new.version)
        .bind(&new.peer_address)
        .bind(new.encryption_thumbprint.as_deref())
        .bind(&new.public_key)
        .bind(order)
        .bind(new.now_ms)
        .bind(to_json(&NodeMetrics::default()))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(DbError::Conflict(format!(
                    "a node named '{}' or this machine registered at the same moment; try again",
                    new.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Removes a node; its runs go back to the queue at the next sweep. Returns whether it existed.
    pub async fn delete_node(&self, id: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE gateways SET lease_node_id = NULL, lease_expires_ms = 0 WHERE lease_node_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM nodes WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a heartbeat. A gateway with a single node follows that node's encryption mode.
    pub async fn heartbeat(
        &self,
        node: &NodeRow,
        version: &str,
        metrics: &NodeMetrics,
        peer_address: &str,
        now_ms: i64,
        single_node: bool,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE nodes SET last_heartbeat_ms = $1, version = $2, metrics = $3, encryption_thumbprint = $4, \
             peer_address = $5 WHERE id = $6",
        )
        .bind(now_ms)
        .bind(version)
        .bind(to_json(metrics))
        .bind(metrics.encryption_thumbprint.as_deref())
        .bind(peer_address)
        .bind(&node.id)
        .execute(&mut *tx)
        .await?;
        if single_node {
            sqlx::query("UPDATE gateways SET encryption = $1 WHERE id = $2")
                .bind(i64::from(metrics.encryption_thumbprint.is_some()))
                .bind(&node.gateway_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the peer-channel public key a node announced, only if it has none yet (a node
    /// registered by an older version): a key, once known, is never replaced. Returns whether
    /// it was stored.
    pub async fn set_node_public_key(&self, node_id: &str, public_key: &str) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE nodes SET public_key = $1 WHERE id = $2 AND public_key = ''")
            .bind(public_key)
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes or renews the dispatcher lease for `node_id` if it is free, lapsed or already
    /// its own, in one statement; then reports who holds it. Taking a lapsed lease over from
    /// another node also puts that node's claims no worker started back in the queue (same
    /// attempt): it dropped them when it stopped being the dispatcher, and they would wait
    /// out the queue timeout otherwise.
    pub async fn acquire_lease(
        &self,
        gateway_id: &str,
        node_id: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<LeaseState> {
        let expires = now_ms + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4);
        // As of time 0 the holder is whoever held the lease last, lapsed or not.
        let before = self.lease(gateway_id, 0).await?;
        if let Some(previous) = before.holder.filter(|p| p != node_id && before.expires_ms < now_ms) {
            self.take_over_lease(gateway_id, node_id, &previous, expires, now_ms).await?;
            return self.lease(gateway_id, now_ms).await;
        }
        sqlx::query(
            "UPDATE gateways SET lease_epoch = CASE WHEN lease_node_id = $1 THEN lease_epoch ELSE lease_epoch + 1 END, \
             lease_node_id = $1, lease_expires_ms = $2 \
             WHERE id = $3 AND (lease_node_id IS NULL OR lease_node_id = $1 OR lease_expires_ms < $4)",
        )
        .bind(node_id)
        .bind(expires)
        .bind(gateway_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        self.lease(gateway_id, now_ms).await
    }

    /// The lapsed lease of `previous` goes to `node_id` if nobody took it first, and in the
    /// same transaction the runs `previous` claimed and no worker started go back to the queue.
    async fn take_over_lease(
        &self,
        gateway_id: &str,
        node_id: &str,
        previous: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let taken = sqlx::query(
            "UPDATE gateways SET lease_epoch = lease_epoch + 1, lease_node_id = $1, lease_expires_ms = $2 \
             WHERE id = $3 AND lease_node_id = $4 AND lease_expires_ms < $5",
        )
        .bind(node_id)
        .bind(expires_ms)
        .bind(gateway_id)
        .bind(previous)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 1 {
            let released = sqlx::query(
                "UPDATE runs SET state = 'queued', node_id = NULL, node_name = NULL, dispatched_ms = NULL \
                 WHERE gateway_id = $1 AND node_id = $2 AND state = 'dispatched'",
            )
            .bind(gateway_id)
            .bind(previous)
            .execute(&mut *tx)
            .await?;
            if released.rows_affected() > 0 {
                tracing::info!(
                    runs = released.rows_affected(),
                    "the dispatcher changed: the runs the previous one held and no worker started went back to the queue"
                );
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Milliseconds since the Unix epoch by the one clock every hub on this database shares,
    /// for leases and offline checks: the database server's on PostgreSQL (hubs on several
    /// machines may disagree by seconds, and a lease would flap between them), this process's
    /// on SQLite (one hub process at a time).
    pub async fn clock_ms(&self) -> Result<i64> {
        match self.dialect {
            Dialect::Sqlite => Ok(now_ms()),
            Dialect::Postgres => {
                let row = sqlx::query("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get(0)?)
            }
        }
    }

    /// Whether the gateway has a queued run: a read, so a waiting claim can look often
    /// without taking the write lock.
    pub async fn has_queued_runs(&self, gateway_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM runs WHERE gateway_id = $1 AND state = 'queued' LIMIT 1")
            .bind(gateway_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Who holds the lease now (`None` when it has lapsed).
    pub async fn lease(&self, gateway_id: &str, now_ms: i64) -> Result<LeaseState> {
        let row =
            sqlx::query("SELECT lease_node_id, lease_epoch, lease_expires_ms FROM gateways WHERE id = $1")
                .bind(gateway_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(LeaseState { holder: None, epoch: 0, expires_ms: 0 }) };
        let expires_ms: i64 = row.try_get(2)?;
        let holder: Option<String> = row.try_get(0)?;
        Ok(LeaseState { holder: holder.filter(|_| expires_ms >= now_ms), epoch: row.try_get(1)?, expires_ms })
    }

    // ---- jobs and runs ----

    pub async fn insert_job(&self, job: &JobRow, runs: &[NewRun]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, gateway_id, name, spec, created_ms, rerun_of) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&job.id)
        .bind(&job.gateway_id)
        .bind(&job.name)
        .bind(&job.spec)
        .bind(job.created_ms)
        .bind(job.rerun_of.as_deref())
        .execute(&mut *tx)
        .await?;
        // seq orders the queue: submission time first, then position in the job.
        let base_seq = job.created_ms.saturating_mul(1 << 16);
        for (batch_index, batch) in runs.chunks(RUNS_PER_INSERT).enumerate() {
            // $1…$3 are shared by every row; each row adds its id, activity, partition, the
            // activity's JSON, its part, its progress and its seq.
            let rows: Vec<String> = (0..batch.len())
                .map(|i| {
                    let n = 4 + 7 * i;
                    format!(
                        "(${n}, $1, $2, ${}, ${}, ${}, 'queued', 1, $3, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 6,
                        n + 4,
                        n + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO runs (id, job_id, gateway_id, activity_index, partition_index, activity, state, \
                 attempt, queued_ms, seq, part, progress) VALUES {}",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&job.id)
                .bind(&job.gateway_id)
                .bind(job.created_ms);
            for (i, run) in batch.iter().enumerate() {
                let n = i64::try_from(batch_index * RUNS_PER_INSERT + i).unwrap_or(i64::MAX);
                insert = insert
                    .bind(&run.id)
                    .bind(run.activity_index)
                    .bind(run.partition_index)
                    .bind(&run.activity)
                    .bind(run.part.as_deref())
                    .bind(run.progress.as_deref())
                    .bind(base_seq.saturating_add(n));
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    /// A gateway's jobs that `filter` wants, newest first.
    pub async fn jobs(&self, gateway_id: &str, filter: &JobFilter) -> Result<Vec<JobRow>> {
        let (before_ms, before_id) = filter.before.clone().unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE gateway_id = $1 AND created_ms >= $2 AND created_ms < $3 \
             AND (created_ms < $4 OR (created_ms = $4 AND id > $5)) ORDER BY created_ms DESC, id LIMIT $6"
        )))
        .bind(gateway_id)
        .bind(filter.since_ms.unwrap_or(i64::MIN))
        .bind(filter.until_ms.unwrap_or(i64::MAX))
        .bind(before_ms)
        .bind(before_id)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    /// The states of the runs of each job in `job_ids`, for filtering jobs by their state
    /// without loading their runs.
    pub async fn run_states_of_jobs(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<RunState>>> {
        let mut states: HashMap<String, Vec<RunState>> = HashMap::new();
        for batch in job_ids.chunks(500) {
            let marks: Vec<String> = (1..=batch.len()).map(|n| format!("${n}")).collect();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT job_id, state FROM runs WHERE job_id IN ({})",
                marks.join(", ")
            )));
            for id in batch {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let state = parse_state(&row.try_get::<String, _>(1)?)?;
                states.entry(row.try_get(0)?).or_default().push(state);
            }
        }
        Ok(states)
    }

    /// A job's runs in activity and partition order, without their parts (`part` is `None`).
    pub async fn runs_of_job(&self, job_id: &str) -> Result<Vec<RunRow>> {
        self.runs_of_job_as(job_id, RUN_COLUMNS_NO_PART).await
    }

    /// A job's runs with their parts, for re-running it.
    pub async fn runs_of_job_with_parts(&self, job_id: &str) -> Result<Vec<RunRow>> {
        self.runs_of_job_as(job_id, RUN_COLUMNS).await
    }

    /// A job's runs in activity and partition order, reading `columns` ([`RUN_COLUMNS`] or
    /// [`RUN_COLUMNS_NO_PART`]).
    async fn runs_of_job_as(&self, job_id: &str, columns: &str) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM runs WHERE job_id = $1 ORDER BY activity_index, partition_index"
        )))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    pub async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_row).transpose()
    }

    /// Hands up to `max` queued runs to the dispatcher, oldest first, if it still holds the
    /// lease with `epoch`. One statement: on PostgreSQL `FOR UPDATE SKIP LOCKED` lets two
    /// hubs claim at once without ever taking the same run.
    pub async fn claim_runs(
        &self,
        gateway_id: &str,
        dispatcher: &NodeRow,
        epoch: i64,
        max: u32,
        now_ms: i64,
    ) -> Result<Vec<RunRow>> {
        let sql = match self.dialect {
            Dialect::Sqlite => CLAIM_SQLITE,
            Dialect::Postgres => CLAIM_POSTGRES,
        };
        let mut tx = self.write().await?;
        let rows = sqlx::query(sql)
            .bind(&dispatcher.id)
            .bind(&dispatcher.name)
            .bind(gateway_id)
            .bind(i64::from(max))
            .bind(epoch)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut runs: Vec<RunRow> = rows.iter().map(run_row).collect::<Result<_>>()?;
        runs.sort_by_key(|r| (r.queued_ms, r.activity_index, r.partition_index));
        Ok(runs)
    }

    /// The runs `dispatcher` claimed that no worker started yet, oldest first.
    pub async fn unstarted_claims(&self, dispatcher: &NodeRow) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE gateway_id = $1 AND node_id = $2 AND state = 'dispatched' \
             ORDER BY seq"
        )))
        .bind(&dispatcher.gateway_id)
        .bind(&dispatcher.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// The dispatcher (holding the lease with `epoch`) moves a claimed run to a worker of the
    /// same gateway. One statement; `None` if any condition fails (the caller finds out which).
    pub async fn assign_run(
        &self,
        run_id: &str,
        attempt: i64,
        dispatcher: &NodeRow,
        epoch: i64,
        worker_id: &str,
        now_ms: i64,
    ) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET node_id = $1, node_name = (SELECT name FROM nodes WHERE id = $1) \
             WHERE id = $2 AND attempt = $3 AND node_id = $4 AND state = 'dispatched' AND gateway_id = $5 \
             AND EXISTS (SELECT 1 FROM nodes w WHERE w.id = $1 AND w.gateway_id = $5) \
             AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $5 AND g.lease_node_id = $4 \
             AND g.lease_epoch = $6 AND g.lease_expires_ms >= $7) \
             RETURNING {RUN_COLUMNS}"
        )))
        .bind(worker_id)
        .bind(run_id)
        .bind(attempt)
        .bind(&dispatcher.id)
        .bind(&dispatcher.gateway_id)
        .bind(epoch)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_row).transpose()
    }

    /// A worker starts a run the dispatcher handed it over the peer channel: the run becomes
    /// the worker's, once. `None` if it isn't waiting for a worker (any more). A worker that
    /// asks again for the attempt it already started (the first answer was lost) gets it again:
    /// it runs each attempt once by itself.
    pub async fn start_run(
        &self,
        run_id: &str,
        attempt: i64,
        worker: &NodeRow,
        now_ms: i64,
    ) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = 'running', node_id = $1, node_name = $2, \
             started_ms = CASE WHEN state = 'running' THEN started_ms ELSE $6 END WHERE id = $3 \
             AND attempt = $4 AND gateway_id = $5 \
             AND (state = 'dispatched' OR (state = 'running' AND node_id = $1)) RETURNING {RUN_COLUMNS}"
        )))
        .bind(&worker.id)
        .bind(&worker.name)
        .bind(run_id)
        .bind(attempt)
        .bind(&worker.gateway_id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_row).transpose()
    }

    /// Records progress from the node running `attempt`, and its checkpoint when one is given
    /// (else the stored one stays); false if the run isn't its any more. One conditional
    /// statement, so a checkpoint is only ever taken from the current attempt: the node commits
    /// what the checkpoint covers only after this said yes.
    pub async fn run_progress(
        &self,
        run_id: &str,
        attempt: i64,
        node_id: &str,
        progress: &str,
        checkpoint: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET state = 'running', progress = $1, checkpoint = COALESCE($5, checkpoint) \
             WHERE id = $2 AND attempt = $3 AND node_id = $4 AND state IN ('dispatched', 'running')",
        )
        .bind(progress)
        .bind(run_id)
        .bind(attempt)
        .bind(node_id)
        .bind(checkpoint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `attempt` of a copy's listing run with the parts it found, in one transaction: the
    /// listing run succeeds with `split.result`, and each part becomes a queued run (partition
    /// 1, 2, …) of the same activity, at the listing run's place in the queue. Nothing changes
    /// unless the attempt is still `node_id`'s and unfinished, and the job stays within
    /// `split.max_runs_per_job` runs in all.
    pub async fn split_run(
        &self,
        run_id: &str,
        attempt: i64,
        node_id: &str,
        split: &Split<'_>,
    ) -> Result<SplitOutcome> {
        let mut tx = self.write().await?;
        // The job first, as a cancel takes it: a split that commits first has its parts
        // cancelled with the rest, one that comes second finds its listing run cancelled.
        // Splits of one job's copies take turns too, so their parts are counted together.
        self.lock_job(&mut tx, "(SELECT job_id FROM runs WHERE id = $1)", run_id).await?;
        let existing: i64 =
            sqlx::query("SELECT COUNT(*) FROM runs WHERE job_id = (SELECT job_id FROM runs WHERE id = $1)")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let adding = i64::try_from(split.parts.len()).unwrap_or(i64::MAX);
        if existing.saturating_add(adding) > split.max_runs_per_job {
            return Ok(SplitOutcome::TooManyRuns { existing });
        }
        // The fence, and a row lock on PostgreSQL: a second split of the run waits, then finds
        // it succeeded and changes nothing.
        let listing = sqlx::query(
            "UPDATE runs SET state = 'succeeded', result = $1, finished_ms = $2 WHERE id = $3 AND attempt = $4 \
             AND node_id = $5 AND state IN ('dispatched', 'running') AND part IS NULL \
             RETURNING job_id, gateway_id, activity_index, activity, seq",
        )
        .bind(split.result)
        .bind(split.now_ms)
        .bind(run_id)
        .bind(attempt)
        .bind(node_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(listing) = listing else { return Ok(SplitOutcome::NotCurrent) };
        let job_id: String = listing.try_get("job_id")?;
        let gateway_id: String = listing.try_get("gateway_id")?;
        let activity_index: i64 = listing.try_get("activity_index")?;
        let activity: String = listing.try_get("activity")?;
        let seq: i64 = listing.try_get("seq")?;
        let mut partition: i64 = 1;
        for batch in split.parts.chunks(PARTS_PER_INSERT) {
            // $1…$6 are shared by every row; each row adds its id, partition, part and progress.
            let rows: Vec<String> = (0..batch.len())
                .map(|i| {
                    let n = 7 + 4 * i;
                    format!("(${n}, $1, $2, $3, ${}, $4, 'queued', 1, $5, $6, ${}, ${})", n + 1, n + 2, n + 3)
                })
                .collect();
            let sql = format!(
                "INSERT INTO runs (id, job_id, gateway_id, activity_index, partition_index, activity, state, \
                 attempt, queued_ms, seq, part, progress) VALUES {}",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&job_id)
                .bind(&gateway_id)
                .bind(activity_index)
                .bind(&activity)
                .bind(split.now_ms)
                .bind(seq);
            for part in batch {
                insert =
                    insert.bind(&part.id).bind(partition).bind(&part.part).bind(part.progress.as_deref());
                partition += 1;
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(SplitOutcome::Done)
    }

    /// Ends `attempt` of a run, once; `None` if it was already finished or re-queued. One
    /// statement: the final attempt's record is the run row itself (`run_attempts` keeps the
    /// attempts that were lost).
    pub async fn finish_run(
        &self,
        run_id: &str,
        attempt: i64,
        node_id: &str,
        end: &RunEnd<'_>,
    ) -> Result<Option<RunRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = $1, result = $2, error = $3, finished_ms = $4 WHERE id = $5 AND attempt = $6 \
             AND node_id = $7 AND state IN ('dispatched', 'running') RETURNING {RUN_COLUMNS}"
        )))
        .bind(end.state.as_str())
        .bind(end.result)
        .bind(end.error)
        .bind(end.now_ms)
        .bind(run_id)
        .bind(attempt)
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_row).transpose()
    }

    /// Cancels every run of the job that hasn't ended, in one transaction: each becomes
    /// `cancelled` (finished now, its node kept), and its attempt is recorded as cancelled.
    /// Returns the runs it cancelled (without their parts); none when the job had ended.
    pub async fn cancel_job(&self, job_id: &str, now_ms: i64) -> Result<Vec<RunRow>> {
        let mut tx = self.write().await?;
        self.lock_job(&mut tx, "$1", job_id).await?;
        sqlx::query(
            "INSERT INTO run_attempts (run_id, attempt, node_id, node_name, outcome, error, ended_ms, started_ms) \
             SELECT id, attempt, node_id, node_name, 'cancelled', 'the job was cancelled', $2, started_ms FROM runs \
             WHERE job_id = $1 AND state IN ('dispatched', 'running') ON CONFLICT (run_id, attempt) DO NOTHING",
        )
        .bind(job_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = 'cancelled', finished_ms = $2 WHERE job_id = $1 \
             AND state IN ('queued', 'dispatched', 'running') RETURNING {RUN_COLUMNS_NO_PART}"
        )))
        .bind(job_id)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(run_row).collect()
    }

    /// Takes the row lock of the job `which` names (SQL with `$1` = `value`) on PostgreSQL,
    /// for the rest of `tx`: cancels and splits of one job take turns. SQLite's write
    /// transactions take turns anyway.
    async fn lock_job(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        which: &'static str,
        value: &str,
    ) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT id FROM jobs WHERE id = {which} FOR UPDATE")))
                .bind(value)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// A run's state and job, without the rest of it (a part may be large).
    pub async fn run_state(&self, run_id: &str) -> Result<Option<(RunState, String)>> {
        let row = sqlx::query("SELECT state, job_id FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((parse_state(&r.try_get::<String, _>(0)?)?, r.try_get(1)?))).transpose()
    }

    /// Puts back in the queue every unfinished run whose node has had no heartbeat since
    /// `sweep.cutoff_ms` (or no longer exists), and every hand-off made before
    /// `sweep.handoff_cutoff_ms` that no worker started, with its attempt number raised and its
    /// queue time reset to `sweep.now_ms`; the lost attempt stays in the history with the reason.
    /// Returns how many runs went back.
    pub async fn requeue_lost_runs(&self, sweep: &Sweep) -> Result<u64> {
        // Lost: its node went silent, or a hand-off that no worker started in time. A
        // dispatcher may hold a run for up to the gateway's queue timeout while no node has
        // room, so a hand-off is only lost after that too.
        const SILENT: &str = "(state IN ('dispatched', 'running') AND (node_id IS NULL OR node_id NOT IN \
             (SELECT id FROM nodes WHERE last_heartbeat_ms >= $1)))";
        const UNSTARTED: &str = "(state = 'dispatched' AND dispatched_ms < $2 - 1000 * \
             (SELECT g.queue_timeout_seconds FROM gateways g WHERE g.id = runs.gateway_id))";
        // Why, in words: a node silent since before this hub started was probably cut off by
        // the restart itself (it had the grace to come back and didn't).
        const WHY: &str = "CASE \
             WHEN node_id IS NULL THEN 'no node held it' \
             WHEN node_id NOT IN (SELECT id FROM nodes) THEN 'node ' || COALESCE(node_name, '?') || ' was removed' \
             WHEN node_id NOT IN (SELECT id FROM nodes WHERE last_heartbeat_ms >= $4) THEN 'the hub restarted and node ' \
             || COALESCE(node_name, '?') || ' did not send a heartbeat within the grace after it' \
             WHEN node_id NOT IN (SELECT id FROM nodes WHERE last_heartbeat_ms >= $1) THEN 'node ' \
             || COALESCE(node_name, '?') || ' stopped sending heartbeats' \
             ELSE 'node ' || COALESCE(node_name, '?') || ' never started the hand-off within the queue timeout' END";
        let mut tx = self.write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO run_attempts (run_id, attempt, node_id, node_name, outcome, error, ended_ms, started_ms) \
             SELECT id, attempt, node_id, node_name, 'lost', {WHY}, $3, started_ms \
             FROM runs WHERE {SILENT} OR {UNSTARTED} ON CONFLICT (run_id, attempt) DO NOTHING"
        )))
        .bind(sweep.cutoff_ms)
        .bind(sweep.handoff_cutoff_ms)
        .bind(sweep.now_ms)
        .bind(sweep.hub_started_ms)
        .execute(&mut *tx)
        .await?;
        // The checkpoint stays: the next attempt resumes from what the lost one committed. The
        // queue timeout starts again (queued_ms), but the run keeps its place in the queue (seq).
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', attempt = attempt + 1, node_id = NULL, node_name = NULL, progress = NULL, \
             dispatched_ms = NULL, started_ms = NULL, queued_ms = $3 WHERE {SILENT} OR {UNSTARTED}"
        )))
        .bind(sweep.cutoff_ms)
        .bind(sweep.handoff_cutoff_ms)
        .bind(sweep.now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Puts back in the queue every unfinished run held by `node_id` (handed to it or
    /// running there), because the node's process restarted and lost them: attempt raised,
    /// queue time reset to `now_ms`, the lost attempt kept in the history with the reason.
    /// Returns how many runs went back.
    pub async fn requeue_runs_of_restarted_node(&self, node_id: &str, now_ms: i64) -> Result<u64> {
        const HELD: &str = "node_id = $1 AND state IN ('dispatched', 'running')";
        let mut tx = self.write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO run_attempts (run_id, attempt, node_id, node_name, outcome, error, ended_ms, started_ms) \
             SELECT id, attempt, node_id, node_name, 'lost', 'node ' || COALESCE(node_name, '?') || \
             ' restarted (its process ended before the run did)', $2, started_ms \
             FROM runs WHERE {HELD} ON CONFLICT (run_id, attempt) DO NOTHING"
        )))
        .bind(node_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = 'queued', attempt = attempt + 1, node_id = NULL, node_name = NULL, progress = NULL, \
             dispatched_ms = NULL, started_ms = NULL, queued_ms = $2 WHERE {HELD}"
        )))
        .bind(node_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// The nodes of a gateway that hold copy runs (dispatched or running), each once: they
    /// share the gateway's bandwidth limit.
    pub async fn copying_nodes(&self, gateway_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT node_id FROM runs WHERE gateway_id = $1 AND state IN ('dispatched', 'running') \
             AND node_id IS NOT NULL AND activity LIKE '{COPY_ACTIVITY}%'"
        )))
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Grants `node_id` up to `fair` bytes a second of the gateway's `limit`, less what the
    /// other nodes' grants still held at `now_ms` take, and records it held for `hold_ms`;
    /// returns the grant. One write transaction (the gateway row locked on PostgreSQL), so two
    /// hubs granting at once can't hand out more than the limit between them.
    pub async fn grant_bandwidth(
        &self,
        gateway_id: &str,
        node_id: &str,
        limit: u64,
        fair: u64,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<u64> {
        let mut tx = self.write().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT id FROM gateways WHERE id = $1 FOR UPDATE")
                .bind(gateway_id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(bandwidth_grant), 0) AS BIGINT) FROM nodes \
             WHERE gateway_id = $1 AND id <> $2 AND bandwidth_grant_until_ms > $3",
        )
        .bind(gateway_id)
        .bind(node_id)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let held: i64 = row.try_get(0)?;
        let grant = fair.min(limit.saturating_sub(u64::try_from(held).unwrap_or(0)));
        sqlx::query("UPDATE nodes SET bandwidth_grant = $1, bandwidth_grant_until_ms = $2 WHERE id = $3")
            .bind(i64::try_from(grant).unwrap_or(i64::MAX))
            .bind(now_ms + hold_ms)
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(grant)
    }

    /// Ids of the gateways with queued runs, for waking long-polls on other hubs.
    pub async fn queued_count(&self, gateway_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM runs WHERE gateway_id = $1 AND state = 'queued'")
            .bind(gateway_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The attempts of the job's runs that ended without ending their run (lost or
    /// cancelled), by run and attempt.
    pub async fn attempts_of_job(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT a.run_id, a.attempt, a.node_id, a.node_name, a.started_ms, a.ended_ms, a.outcome, a.error \
             FROM run_attempts a JOIN runs r ON r.id = a.run_id WHERE r.job_id = $1 ORDER BY a.run_id, a.attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    run_id: r.try_get(0)?,
                    attempt: r.try_get(1)?,
                    node_id: r.try_get(2)?,
                    node_name: r.try_get(3)?,
                    started_ms: r.try_get(4)?,
                    ended_ms: r.try_get(5)?,
                    outcome: r.try_get(6)?,
                    error: r.try_get(7)?,
                })
            })
            .collect()
    }

    // ---- metrics ----

    /// How many runs each gateway has in each state: (gateway id, state, count).
    pub async fn run_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT gateway_id, state, COUNT(*) FROM runs GROUP BY gateway_id, state ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    /// How many attempts were lost (and tried again) per gateway id.
    pub async fn retries(&self) -> Result<HashMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT r.gateway_id, COUNT(*) FROM run_attempts a JOIN runs r ON r.id = a.run_id \
             WHERE a.outcome = 'lost' GROUP BY r.gateway_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The final progress (JSON) of every copy partition that succeeded: (gateway id, progress).
    pub async fn copied_progress(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT gateway_id, progress FROM runs WHERE state = 'succeeded' AND part IS NOT NULL \
             AND progress IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    // ---- purpose tokens ----

    pub async fn insert_token(&self, token: &TokenRow, token_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, kind, token_hash, created_ms, gateway_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(&token.kind)
        .bind(token_hash)
        .bind(token.created_ms)
        .bind(token.gateway_id.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A token that isn't revoked, with its hash.
    pub async fn live_token(&self, id: &str) -> Result<Option<(TokenRow, String)>> {
        let row = sqlx::query(
            "SELECT id, kind, created_ms, revoked_ms, gateway_id, token_hash FROM tokens WHERE id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((token_row(&r)?, r.try_get(5)?))).transpose()
    }

    /// Every token, revoked ones too, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, created_ms, revoked_ms, gateway_id FROM tokens ORDER BY created_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_row).collect()
    }

    // ---- the credential manager ----

    /// Stores a credential sealed for each node (`rows`), replacing an older version of the
    /// same name for a node, in one transaction. Rows of nodes no longer in `gateway_id` are
    /// not stored; returns the node ids stored for.
    pub async fn put_sealed(&self, gateway_id: &str, rows: &[SealedRow], now_ms: i64) -> Result<Vec<String>> {
        let mut tx = self.write().await?;
        let mut stored = Vec::new();
        for row in rows {
            let done = sqlx::query(
                "INSERT INTO sealed_credentials (node_id, gateway_id, name, version, deleted, ciphertext, created_ms)                  SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND gateway_id = $2)                  ON CONFLICT (node_id, name) DO UPDATE SET version = excluded.version, deleted = excluded.deleted,                  ciphertext = excluded.ciphertext, created_ms = excluded.created_ms                  WHERE sealed_credentials.version < excluded.version",
            )
            .bind(&row.node_id)
            .bind(gateway_id)
            .bind(&row.name)
            .bind(row.version)
            .bind(i64::from(row.deleted))
            .bind(&row.ciphertext)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                stored.push(row.node_id.clone());
            }
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The credentials sealed for one node that it hasn't taken yet, by name.
    pub async fn sealed_for(&self, node_id: &str) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT node_id, name, version, deleted, ciphertext FROM sealed_credentials WHERE node_id = $1 ORDER BY name",
        )
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sealed_row).collect()
    }

    /// The credentials sealed for any node of a gateway, without their ciphertexts.
    pub async fn sealed_in(&self, gateway_id: &str) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT node_id, name, version, deleted, '' AS ciphertext FROM sealed_credentials WHERE gateway_id = $1              ORDER BY name, node_id",
        )
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sealed_row).collect()
    }

    /// Forgets what a node has taken: its rows of `name` at `version` or older.
    pub async fn taken_sealed(&self, node_id: &str, name: &str, version: i64) -> Result<()> {
        sqlx::query("DELETE FROM sealed_credentials WHERE node_id = $1 AND name = $2 AND version <= $3")
            .bind(node_id)
            .bind(name)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The key proofs (JSON) of a gateway's nodes that sent one, by node id.
    pub async fn key_proofs(&self, gateway_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, key_proof FROM nodes WHERE gateway_id = $1 AND key_proof <> ''")
            .bind(gateway_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The certificate thumbprint a node's stored key proof came with (empty: none).
    pub async fn key_proof_thumbprint(&self, node_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT key_proof_thumbprint FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or_default())
    }

    /// Stores a node's key proof (JSON) and the certificate thumbprint it came with.
    pub async fn set_key_proof(&self, node_id: &str, proof: &str, thumbprint: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET key_proof = $1, key_proof_thumbprint = $2 WHERE id = $3")
            .bind(proof)
            .bind(thumbprint)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes a token; false if there is no such live token.
    pub async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
            .bind(id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- keys made for adding nodes ----

    /// Stores a new key for adding nodes; drops the gateway's keys that expired over a week ago.
    pub async fn insert_join_key(&self, gateway_id: &str, key: &JoinKeyInfo, key_hash: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM join_keys WHERE gateway_id = $1 AND expires_ms < $2")
            .bind(gateway_id)
            .bind(key.created_ms - JOIN_KEYS_KEPT_MS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO join_keys (id, gateway_id, key_hash, hint, once, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(gateway_id)
        .bind(key_hash)
        .bind(&key.hint)
        .bind(i64::from(key.once))
        .bind(key.created_ms)
        .bind(key.expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A gateway's keys for adding nodes, newest first (used and expired ones too, for a week).
    pub async fn join_keys(&self, gateway_id: &str) -> Result<Vec<JoinKeyInfo>> {
        let rows = sqlx::query(
            "SELECT id, hint, once, created_ms, expires_ms, used_count, last_used_ms, last_used_by \
             FROM join_keys WHERE gateway_id = $1 ORDER BY created_ms DESC, id",
        )
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(join_key_row).collect()
    }

    /// The key for adding nodes of `gateway_id` whose hash is `key_hash`, if any. (A lookup by
    /// the hash of a 256-bit secret tells a timing observer nothing about the secret.)
    pub async fn join_key_by_hash(&self, gateway_id: &str, key_hash: &str) -> Result<Option<JoinKeyInfo>> {
        let row = sqlx::query(
            "SELECT id, hint, once, created_ms, expires_ms, used_count, last_used_ms, last_used_by \
             FROM join_keys WHERE gateway_id = $1 AND key_hash = $2",
        )
        .bind(gateway_id)
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(join_key_row).transpose()
    }

    /// Deletes a key for adding nodes; false if the gateway has no such key.
    pub async fn delete_join_key(&self, gateway_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM join_keys WHERE gateway_id = $1 AND id = $2")
            .bind(gateway_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- audit trail ----

    /// Adds one entry to the audit trail.
    pub async fn record_audit(&self, entry: &AuditRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (id, at_ms, gateway_id, gateway_name, actor, action, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(crate::encoding::random_hex::<16>())
        .bind(entry.at_ms)
        .bind(entry.gateway_id.as_deref())
        .bind(entry.gateway_name.as_deref())
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` audit entries, oldest first: of the gateway with id or name
    /// `gateway` as it was then (deleted ones too), or of all.
    pub async fn audit(&self, gateway: Option<&str>, limit: u32) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT at_ms, gateway_id, gateway_name, actor, action, detail FROM audit \
             WHERE CAST($1 AS TEXT) IS NULL OR gateway_id = $1 OR gateway_name = $1 \
             ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(gateway)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut entries = rows
            .iter()
            .map(|r| {
                Ok(AuditRow {
                    at_ms: r.try_get(0)?,
                    gateway_id: r.try_get(1)?,
                    gateway_name: r.try_get(2)?,
                    actor: r.try_get(3)?,
                    action: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        entries.reverse();
        Ok(entries)
    }

    // ---- releases (`hub release publish`, `node update`) ----

    /// Begins a release; one of the same version and platform that never finished publishing
    /// is replaced. A published one is a conflict.
    pub async fn begin_release(&self, release: &ReleaseView) -> Result<()> {
        let mut tx = self.write().await?;
        let existing = sqlx::query("SELECT published FROM releases WHERE version = $1 AND platform = $2")
            .bind(&release.version)
            .bind(&release.platform)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            if row.try_get::<i64, _>(0)? != 0 {
                return Err(DbError::Conflict(format!(
                    "release {} for {} is published already; publish a new version instead",
                    release.version, release.platform
                )));
            }
            sqlx::query("DELETE FROM releases WHERE version = $1 AND platform = $2")
                .bind(&release.version)
                .bind(&release.platform)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO releases (id, version, platform, size_bytes, sha256, signature, key_id, published, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(&release.id)
        .bind(&release.version)
        .bind(&release.platform)
        .bind(i64::try_from(release.size_bytes).unwrap_or(i64::MAX))
        .bind(&release.sha256)
        .bind(&release.signature)
        .bind(&release.key_id)
        .bind(release.created_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores piece `seq` of an unpublished release (again: replaced).
    pub async fn put_release_part(&self, release_id: &str, seq: i64, data: &[u8]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM release_parts WHERE release_id = $1 AND seq = $2")
            .bind(release_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO release_parts (release_id, seq, data) VALUES ($1, $2, $3)")
            .bind(release_id)
            .bind(seq)
            .bind(data.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The numbers and sizes of a release's stored pieces, in order.
    pub async fn release_part_sizes(&self, release_id: &str) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT seq, CAST(LENGTH(data) AS BIGINT) FROM release_parts WHERE release_id = $1 ORDER BY seq",
        )
        .bind(release_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Piece `seq` of a release, if stored.
    pub async fn release_part(&self, release_id: &str, seq: i64) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM release_parts WHERE release_id = $1 AND seq = $2")
            .bind(release_id)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Marks a release published: from now on nodes are offered it.
    pub async fn publish_release(&self, release_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE releases SET published = 1 WHERE id = $1")
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a release and its pieces.
    pub async fn delete_release(&self, release_id: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM releases WHERE id = $1").bind(release_id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// One release by id.
    pub async fn release(&self, release_id: &str) -> Result<Option<ReleaseView>> {
        let row = sqlx::query("SELECT id, version, platform, size_bytes, sha256, signature, key_id, published, created_ms FROM releases WHERE id = $1")
            .bind(release_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(release_row).transpose()
    }

    /// Every release, newest first by creation.
    pub async fn releases(&self) -> Result<Vec<ReleaseView>> {
        let rows = sqlx::query("SELECT id, version, platform, size_bytes, sha256, signature, key_id, published, created_ms FROM releases ORDER BY created_ms DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(release_row).collect()
    }

    /// Takes or renews the gateway's update slot for `node_id` until `expires_ms`, unless
    /// another node holds it unexpired (one conditional statement, so two hubs can't both
    /// grant it); returns the holder after the attempt.
    pub async fn acquire_update_slot(
        &self,
        gateway_id: &str,
        node_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Option<String>> {
        sqlx::query(
            "INSERT INTO update_slots (gateway_id, node_id, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (gateway_id) DO UPDATE SET node_id = excluded.node_id, expires_ms = excluded.expires_ms \
             WHERE update_slots.node_id = excluded.node_id OR update_slots.expires_ms < $4",
        )
        .bind(gateway_id)
        .bind(node_id)
        .bind(expires_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        self.update_slot(gateway_id, now_ms).await
    }

    /// Who holds the gateway's update slot at `now_ms`, if anyone.
    pub async fn update_slot(&self, gateway_id: &str, now_ms: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT node_id FROM update_slots WHERE gateway_id = $1 AND expires_ms >= $2")
            .bind(gateway_id)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Frees the gateway's update slot if `node_id` holds it.
    pub async fn release_update_slot(&self, gateway_id: &str, node_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM update_slots WHERE gateway_id = $1 AND node_id = $2")
            .bind(gateway_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn release_row(row: &AnyRow) -> Result<ReleaseView> {
    Ok(ReleaseView {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        platform: row.try_get(2)?,
        size_bytes: small(row.try_get(3)?, "size_bytes")?,
        sha256: row.try_get(4)?,
        signature: row.try_get(5)?,
        key_id: row.try_get(6)?,
        published: row.try_get::<i64, _>(7)? != 0,
        created_ms: row.try_get(8)?,
    })
}

/// The columns every run query returns, as a literal so the claim statements can `concat!` it.
macro_rules! run_columns {
    () => {
        "id, job_id, gateway_id, activity_index, partition_index, activity, state, attempt, \
         node_id, node_name, progress, result, error, queued_ms, started_ms, finished_ms, part, checkpoint"
    };
}

const RUN_COLUMNS: &str = run_columns!();

/// [`RUN_COLUMNS`] without the part: job views list runs by the thousand, and one part of a
/// large folder holds hundreds of file names, so only the node that moves it gets it.
const RUN_COLUMNS_NO_PART: &str = "id, job_id, gateway_id, activity_index, partition_index, activity, state, \
     attempt, node_id, node_name, progress, result, error, queued_ms, started_ms, finished_ms, \
     CAST(NULL AS TEXT) AS part, \
     checkpoint";

/// How a copy activity's JSON starts, as stored in `runs.activity`: serde writes an internally
/// tagged enum's tag first (a test below holds it to that).
const COPY_ACTIVITY: &str = r#"{"kind":"copy""#;

/// Partition runs one INSERT adds: 4 binds each plus 6 shared stay under SQLite's oldest
/// limit of 999 binds, and 10,000 parts take 50 statements, not 10,000.
const PARTS_PER_INSERT: usize = 200;

/// Runs one INSERT of a new job adds: 7 binds each plus 3 shared stay under 999 binds.
const RUNS_PER_INSERT: usize = 140;

const JOB_COLUMNS: &str = "id, gateway_id, name, spec, created_ms, rerun_of";

const CLAIM_SQLITE: &str = concat!(
    "UPDATE runs SET state = 'dispatched', node_id = $1, node_name = $2, dispatched_ms = $6 \
     WHERE id IN (SELECT id FROM runs WHERE gateway_id = $3 AND state = 'queued' ORDER BY seq LIMIT $4) \
     AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $3 AND g.lease_node_id = $1 AND g.lease_epoch = $5 \
     AND g.lease_expires_ms >= $6) \
     RETURNING ",
    run_columns!()
);

const CLAIM_POSTGRES: &str = concat!(
    "UPDATE runs SET state = 'dispatched', node_id = $1, node_name = $2, dispatched_ms = $6 \
     WHERE id IN (SELECT id FROM runs WHERE gateway_id = $3 AND state = 'queued' ORDER BY seq LIMIT $4 \
     FOR UPDATE SKIP LOCKED) \
     AND EXISTS (SELECT 1 FROM gateways g WHERE g.id = $3 AND g.lease_node_id = $1 AND g.lease_epoch = $5 \
     AND g.lease_expires_ms >= $6) \
     RETURNING ",
    run_columns!()
);

fn strip_comments(statement: &str) -> &str {
    let mut rest = statement.trim();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, after)| after).trim();
    }
    rest
}

/// Counts a registration with a key made for adding nodes, in the registration's transaction;
/// a conflict if the key was used up or expired meanwhile.
async fn claim_join_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    gateway_id: &str,
    key_id: &str,
    new: &NewNode,
) -> Result<()> {
    let claimed = sqlx::query(
        "UPDATE join_keys SET used_count = used_count + 1, last_used_ms = $1, last_used_by = $2 \
         WHERE id = $3 AND gateway_id = $4 AND expires_ms > $1 AND (once = 0 OR used_count = 0)",
    )
    .bind(new.now_ms)
    .bind(&new.name)
    .bind(key_id)
    .bind(gateway_id)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 1 {
        Ok(())
    } else {
        Err(DbError::Conflict(
            "this auth key was used up or expired a moment ago; make a new one with: gatehouse hub key create"
                .to_owned(),
        ))
    }
}

fn join_key_row(row: &AnyRow) -> Result<JoinKeyInfo> {
    let once: i64 = row.try_get("once")?;
    let used_count: i64 = row.try_get("used_count")?;
    Ok(JoinKeyInfo {
        id: row.try_get("id")?,
        hint: row.try_get("hint")?,
        once: once != 0,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        used_count: u64::try_from(used_count).unwrap_or(0),
        last_used_ms: row.try_get("last_used_ms")?,
        last_used_by: row.try_get("last_used_by")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// This process's clock, in ms since the Unix epoch. `GATEHOUSE_FAKE_CLOCK_SKEW_MS=N` moves
/// it by N ms (a machine whose clock is off, for tests of hubs sharing one PostgreSQL only:
/// a test can't set a real clock), announced loudly.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX).saturating_add(fake_skew_ms())
}

fn fake_skew_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        let skew = std::env::var("GATEHOUSE_FAKE_CLOCK_SKEW_MS").ok().and_then(|v| v.trim().parse().ok());
        if let Some(skew) = skew {
            tracing::warn!(skew_ms = skew, "FAKE clock skew: this process's clock is moved; for tests only");
        }
        skew.unwrap_or(0)
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Primary => "primary",
        Policy::Distribute => "distribute",
    }
}

fn parse_state(name: &str) -> Result<RunState> {
    Ok(match name {
        "queued" => RunState::Queued,
        "dispatched" => RunState::Dispatched,
        "running" => RunState::Running,
        "succeeded" => RunState::Succeeded,
        "failed" => RunState::Failed,
        "cancelled" => RunState::Cancelled,
        other => return Err(DbError::Corrupt(format!("unknown run state {other:?}"))),
    })
}

fn small<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T> {
    T::try_from(value).map_err(|_| DbError::Corrupt(format!("{column} is out of range: {value}")))
}

fn gateway_row(row: &AnyRow) -> Result<GatewayRow> {
    let policy = match row.try_get::<String, _>("policy")?.as_str() {
        "primary" => Policy::Primary,
        "distribute" => Policy::Distribute,
        other => return Err(DbError::Corrupt(format!("unknown policy {other:?}"))),
    };
    Ok(GatewayRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        settings: GatewaySettings {
            max_nodes: small(row.try_get("max_nodes")?, "max_nodes")?,
            policy,
            cpu_threshold: small(row.try_get("cpu_threshold")?, "cpu_threshold")?,
            memory_threshold: small(row.try_get("memory_threshold")?, "memory_threshold")?,
            aggregation_minutes: small(row.try_get("aggregation_minutes")?, "aggregation_minutes")?,
            queue_timeout_seconds: small(row.try_get("queue_timeout_seconds")?, "queue_timeout_seconds")?,
            bandwidth_limit_mbps: small(row.try_get("bandwidth_limit_mbps")?, "bandwidth_limit_mbps")?,
        },
        encryption: row.try_get::<i64, _>("encryption")? != 0,
        primary_key_hash: row.try_get("primary_key_hash")?,
        primary_key_hint: row.try_get("primary_key_hint")?,
        primary_key_created_ms: row.try_get("primary_key_created_ms")?,
        secondary_key_hash: row.try_get("secondary_key_hash")?,
        secondary_key_hint: row.try_get("secondary_key_hint")?,
        secondary_key_created_ms: row.try_get("secondary_key_created_ms")?,
        lease_node_id: row.try_get("lease_node_id")?,
        lease_expires_ms: row.try_get("lease_expires_ms")?,
        lease_epoch: row.try_get("lease_epoch")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn node_row(row: &AnyRow) -> Result<NodeRow> {
    let metrics: String = row.try_get("metrics")?;
    Ok(NodeRow {
        id: row.try_get("id")?,
        gateway_id: row.try_get("gateway_id")?,
        name: row.try_get("name")?,
        machine_id: row.try_get("machine_id")?,
        token_hash: row.try_get("token_hash")?,
        version: row.try_get("version")?,
        peer_address: row.try_get("peer_address")?,
        encryption_thumbprint: row.try_get("encryption_thumbprint")?,
        public_key: row.try_get("public_key")?,
        registered_order: row.try_get("registered_order")?,
        registered_ms: row.try_get("registered_ms")?,
        last_heartbeat_ms: row.try_get("last_heartbeat_ms")?,
        metrics: serde_json::from_str(&metrics)
            .map_err(|e| DbError::Corrupt(format!("node metrics: {e}")))?,
    })
}

fn job_row(row: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: row.try_get("id")?,
        gateway_id: row.try_get("gateway_id")?,
        name: row.try_get("name")?,
        spec: row.try_get("spec")?,
        created_ms: row.try_get("created_ms")?,
        rerun_of: row.try_get("rerun_of")?,
    })
}

fn token_row(row: &AnyRow) -> Result<TokenRow> {
    Ok(TokenRow {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        created_ms: row.try_get(2)?,
        revoked_ms: row.try_get(3)?,
        gateway_id: row.try_get(4)?,
    })
}

fn sealed_row(row: &AnyRow) -> Result<SealedRow> {
    Ok(SealedRow {
        node_id: row.try_get(0)?,
        name: row.try_get(1)?,
        version: row.try_get(2)?,
        deleted: row.try_get::<i64, _>(3)? != 0,
        ciphertext: row.try_get(4)?,
    })
}

fn run_row(row: &AnyRow) -> Result<RunRow> {
    Ok(RunRow {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        gateway_id: row.try_get("gateway_id")?,
        activity_index: row.try_get("activity_index")?,
        partition_index: row.try_get("partition_index")?,
        activity: row.try_get("activity")?,
        state: parse_state(&row.try_get::<String, _>("state")?)?,
        attempt: row.try_get("attempt")?,
        node_id: row.try_get("node_id")?,
        node_name: row.try_get("node_name")?,
        progress: row.try_get("progress")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        queued_ms: row.try_get("queued_ms")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        part: row.try_get("part")?,
        checkpoint: row.try_get("checkpoint")?,
    })
}

/// The `sqlite://` URL of the database file `path`. The driver reads `?` as the start of the
/// options and decodes `%XX`, so those (and `#`, which starts a URL's fragment) are escaped.
pub fn sqlite_url(path: &std::path::Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.display().to_string().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Activity;

    #[test]
    fn a_stored_copy_activity_starts_with_its_kind() {
        let copy: Activity = serde_json::from_value(serde_json::json!({
            "kind": "copy", "source": {"folder": "/data"}, "sink": {"url": "file:///out/"}
        }))
        .unwrap();
        assert!(to_json(&copy).starts_with(COPY_ACTIVITY), "{}", to_json(&copy));
        let echo = Activity::Echo { message: "copy".into(), partitions: 1 };
        assert!(!to_json(&echo).starts_with(COPY_ACTIVITY));
    }
}
