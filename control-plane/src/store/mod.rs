//! The SQL store: organisations, projects, users, virtual keys, budgets and their spend
//! counters, price revisions, the usage ledger and per-reporter acknowledgements, on SQLite
//! (embedded, the default) or PostgreSQL (several stateless replicas).
//!
//! One query text serves both backends wherever it can: sqlx's SQLite driver accepts the `$N`
//! placeholders PostgreSQL uses, money crosses the boundary as [`Money`] (`NUMERIC` on
//! PostgreSQL, an exact decimal `TEXT` on SQLite), times are Unix seconds. Where the backends
//! differ (money arithmetic, locking) the code says so next to the difference.
//!
//! SQLite runs in WAL mode with a busy timeout, one writer connection (so write transactions
//! never fight over the lock inside one process, and read-modify-write of money is safe) and a
//! few reader connections. PostgreSQL uses one pool; changes that must not interleave with
//! ingestion (a budget's back-fill) take an advisory lock.
//!
//! Every store method is tested on both backends by `tests/store.rs`
//! (`cargo test -p tollgate-control-plane --test store`), the spend rollup against the ledger
//! by `tests/spend_rollup.rs`.

pub mod audit;
pub mod budgets;
mod counters;
pub mod key_buckets;
mod key_use;
pub mod keys;
pub mod ledger;
mod money;
pub mod prices;
pub mod provision;
pub mod refusals;
pub mod reporters;
pub mod rollup;
pub mod snapshot;
pub mod spend;
pub mod tenants;
pub mod tokens;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use money::Money;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (WAL).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lowercase name, for logs and test names.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Handle to the database; cheap to clone (clones share one [`Changes`]).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    changes: Arc<Changes>,
    /// Keys' last use as this process wrote it (see `key_use.rs`).
    key_use: Arc<key_use::KeyUse>,
    /// Reporters' last snapshot poll as this process wrote it (see `reporters.rs`).
    sync_seen: Arc<key_use::Throttle>,
    /// Wakes the alert dispatcher (`crate::alerts::dispatch`) after a commit that recorded an
    /// alert delivery.
    alert_wake: Arc<tokio::sync::Notify>,
}

/// The commits through one [`Store`] (and its clones) that bumped `meta.version`: every store
/// method that changes what the snapshot shows (keys, budgets, prices, usage) counts its
/// commit here, after it commits, so the snapshot service rebuilds before its next answer
/// whichever caller wrote (an API handler, ingestion, the CLI in process). Writes by other
/// processes are seen by the snapshot refresher polling `meta.version` instead.
#[derive(Debug)]
pub struct Changes {
    count: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Changes {
    fn new() -> Changes {
        // Starts at 1, so a snapshot built by nobody yet (seen 0) counts as stale.
        Changes {
            count: AtomicU64::new(1),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// How many changes were committed (plus one).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits for the next committed change (or one committed since the last wait).
    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Counts a committed change and wakes a waiter.
    fn committed(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// The spend counters as ingestion last wrote them (see `counters.rs`).
        counters: Arc<counters::CounterCache>,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`read` or `write` side: SQLite's
/// field of that name, PostgreSQL's one pool) and `$pg` to whether it is PostgreSQL. The body
/// is compiled once per backend, so generic sqlx calls type-check against each.
macro_rules! with_pool {
    ($store:expr, $side:ident, |$pool:ident, $pg:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite { $side: $pool, .. } => {
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// `BEGIN` for a write transaction: `IMMEDIATE` on SQLite so the write lock is taken up front
/// (a deferred transaction that upgrades later can fail at once with `SQLITE_BUSY` when another
/// process wrote in between, whatever the busy timeout).
pub(crate) fn begin_write(pg: bool) -> &'static str {
    if pg {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    }
}

/// `BEGIN` for a read that must see one consistent state (the snapshot: counters and reporter
/// acknowledgements must agree). SQLite in WAL mode reads from one snapshot per transaction.
pub(crate) fn begin_read(pg: bool) -> &'static str {
    if pg {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    } else {
        "BEGIN"
    }
}

/// The advisory lock key that orders budget back-fills against ingestion on PostgreSQL
/// (ingestion holds it shared, budget changes exclusively). `0x7011_6a7e` spells nothing.
pub(crate) const BUDGET_LOCK: i64 = 0x7011_6a7e;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A referenced row does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Kind of row (`org`, `budget`, ...).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A unique or reference constraint refused the change.
    #[error("{field}: {detail}")]
    Conflict {
        /// The field that collides.
        field: &'static str,
        /// What collides.
        detail: String,
    },
    /// A value the store cannot accept (a reference to a row that does not exist, a value out
    /// of the database's range).
    #[error("{field}: {detail}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back (written by something else, or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Maps a unique violation to [`StoreError::Conflict`] on `field` and a reference
    /// violation to a conflict saying the row is still in use; anything else passes through.
    pub(crate) fn from_constraint(e: sqlx::Error, field: &'static str, detail: String) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict { field, detail };
            }
            if d.is_foreign_key_violation() {
                return StoreError::Conflict {
                    field,
                    detail: format!("{detail}: still referenced by other rows"),
                };
            }
        }
        StoreError::Database(e)
    }
}

/// The versions in the `meta` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct Meta {
    /// Snapshot version: bumped by every change.
    pub version: i64,
    /// Bumped when keys change.
    pub keys_version: i64,
    /// Bumped when budgets change.
    pub budgets_version: i64,
    /// Bumped when price revisions are added.
    pub prices_version: i64,
    /// Latest time boundary already accounted for (see [`Store::advance_clock`]).
    pub clock: i64,
}

pub(crate) const SELECT_META: &str =
    "SELECT version, keys_version, budgets_version, prices_version, clock FROM meta WHERE id = 1";

/// SQLite: a statement returning the rows of `FROM {from}` as ONE JSON text, an array of
/// `[columns…]` arrays (in `order_by` when given), for [`from_json_rows`]. sqlx's SQLite driver
/// hands rows over from its worker thread one at a time, a few µs each: thousands of rows
/// (budgets, counters) come over several times faster as one text.
pub(crate) fn sqlite_json_rows(columns: &str, from: &str, order_by: Option<&str>) -> String {
    let order = order_by.map_or(String::new(), |o| format!(" ORDER BY {o}"));
    format!("SELECT coalesce(json_group_array(json_array({columns}){order}), '[]') FROM {from}")
}

/// Decodes the text of a [`sqlite_json_rows`] statement into rows (tuples, or structs whose
/// fields are in the columns' order). `what` names the table in the error.
pub(crate) fn from_json_rows<T: serde::de::DeserializeOwned>(
    what: &str,
    json: &str,
) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The listing of keys and tokens: `columns` of `table`'s rows of organisation `$1` (every
/// one when NULL), revoked ones only when `$2`, by id.
pub(crate) fn revocable_listing(columns: &str, table: &str) -> String {
    format!(
        "SELECT {columns} FROM {table} WHERE ($1 IS NULL OR org_id = $1) \
         AND ($2 OR revoked_at IS NULL) ORDER BY id"
    )
}

/// Converts a `u64` from the wire to the `BIGINT` the database stores, naming the field when
/// it does not fit.
pub(crate) fn to_i64(field: impl FnOnce() -> String, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        field: field(),
        detail: format!("{v} is larger than {}", i64::MAX),
    })
}

/// Reads a `BIGINT` back as `u64` (negative values are not written by us).
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens the database at `url`: `postgres://…` / `postgresql://…` for PostgreSQL,
    /// `sqlite://PATH` / `sqlite:PATH` or a bare path for SQLite (created when missing).
    /// Does not migrate: see [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            return Ok(Store {
                db: Db::Postgres(pool),
                changes: Arc::new(Changes::new()),
                key_use: Arc::default(),
                sync_seen: Arc::new(key_use::Throttle::new(reporters::SYNC_RESOLUTION_S)),
                alert_wake: Arc::default(),
            });
        }
        let opts = sqlite_options(url)?;
        let counters = Arc::new(counters::CounterCache::default());
        let opened = counters.clone();
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // Counted: the cached counters are valid on the connection that wrote them only.
            .after_connect(move |_, _| {
                opened.connected();
                Box::pin(async { Ok(()) })
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Store {
            db: Db::Sqlite {
                read,
                write,
                counters,
            },
            changes: Arc::new(Changes::new()),
            key_use: Arc::default(),
            sync_seen: Arc::new(key_use::Throttle::new(reporters::SYNC_RESOLUTION_S)),
            alert_wake: Arc::default(),
        })
    }

    /// Applies the embedded migrations (`migrations/sqlite` or `migrations/postgres`), then
    /// sums the ledger into the spend rollup if it was not yet (the rows stored before
    /// migration 0011; see `rollup.rs`). Safe to run from several replicas at once: sqlx
    /// serialises the migrations with a lock, and the rollup is built under the write lock
    /// once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite { write, .. } => SQLITE_MIGRATOR.run(write).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        if self.build_spend_rollup_if_needed().await? {
            tracing::info!("spend rollup built from the ledger");
        }
        Ok(())
    }

    /// The changes committed through this store (see [`Changes`]).
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// What the alert dispatcher waits on (see [`Store::wake_alerts`]).
    pub fn alert_wake(&self) -> &tokio::sync::Notify {
        &self.alert_wake
    }

    /// Records that a transaction that bumped `meta.version` committed. Call it after the
    /// commit, never before: a snapshot built in between would count the change as seen.
    pub(crate) fn committed_change(&self) {
        self.changes.committed();
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, read, |pool, pg| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// The `meta` row.
    pub async fn meta(&self) -> Result<Meta, StoreError> {
        Ok(with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, Meta>(SELECT_META)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Records that the time boundary `at` (a budget window end or a price's effective date)
    /// has passed: bumps the version once, whichever replica gets there first, so every
    /// replica serves the new windows under one new version. Returns whether this call bumped.
    /// Not counted in [`Changes`]: the snapshot refresher calls it and rebuilds right after.
    pub async fn advance_clock(&self, at: i64) -> Result<bool, StoreError> {
        let done = with_pool!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE meta SET version = version + 1, clock = $1 WHERE id = 1 AND clock < $1",
            )
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// The connection options of a SQLite database at `url` (`sqlite://PATH`, `sqlite:PATH` or a
/// bare path): WAL, `synchronous=FULL`, a busy timeout, foreign keys and the pragmas below.
/// Every connection of a [`Store`] uses them; the ingestion floor bench
/// (`benches/benches/ingest_floor.rs`) opens its bare connection with them too, so both write
/// with the same durability.
pub fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    Ok(if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)?
    } else {
        SqliteConnectOptions::new().filename(url)
    }
    .create_if_missing(true)
    .journal_mode(SqliteJournalMode::Wal)
    // FULL: an acknowledged usage batch survives a power cut (the filter forgets it after
    // the ack). One fsync per transaction, which batching makes cheap.
    .synchronous(SqliteSynchronous::Full)
    .busy_timeout(Duration::from_secs(10))
    .foreign_keys(true)
    // 64 MiB of page cache (the default is 2 MiB): ledger index inserts stay in memory
    // as the ledger grows instead of reading pages back through the OS.
    .pragma("cache_size", "-65536")
    // Statement journals in memory: a multi-row insert journals the pages it changes so
    // that it can be undone alone, and past 64 KiB SQLite would spill that to a temp file.
    .pragma("temp_store", "MEMORY")
    // Checkpoint the WAL every ~16 MiB rather than every 4 MiB: fewer, larger
    // write-backs on the commit path of usage batches.
    .pragma("wal_autocheckpoint", "4000"))
}

/// Now, Unix seconds, from the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
