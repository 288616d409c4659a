//! What the snapshot builder reads, in one read transaction so that the spend counters and the
//! reporter acknowledgements describe the same committed state (an acknowledgement ahead of
//! the counters would make the filter drop local spend the snapshot does not carry yet).
//!
//! Sections whose version did not change since the last build are not read again: a batch of
//! usage only changes counters and acknowledgements, so the 100,000 keys of a large fleet are
//! read once per key change, not once per batch.
//!
//! The keys come out of the database already as the JSON text of the snapshot's `keys`, in
//! the 4,096 buckets every key change keeps up to date (`key_buckets.rs`): a cold build of
//! 100,000 keys used to be mostly the driver handing over 500,000 column values one row at a
//! time and serde encoding them again.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use super::budgets::{budgets_from_rows, counters_at, Budget, BudgetRow, BUDGET_COLUMNS};
use super::key_buckets;
use super::prices::{effective_prices, EffectivePrices};
use super::{
    begin_read, from_json_rows, sqlite_json_rows, with_pool, Meta, Money, Store, StoreError,
    SELECT_META,
};

/// The section versions a builder already holds (`None`: never loaded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// `meta.keys_version` of the held keys.
    pub keys_version: Option<i64>,
    /// `meta.budgets_version` of the held budgets.
    pub budgets_version: Option<i64>,
    /// `meta.prices_version` of the held prices and the next instant a revision comes into
    /// effect after them (they are read again once that instant passes).
    pub prices: Option<(i64, Option<i64>)>,
}

/// One consistent read.
#[derive(Debug, Default)]
pub struct SnapshotRead {
    /// The versions read.
    pub meta: Meta,
    /// The instant the read is for: `max(now, meta.clock)`.
    pub at: i64,
    /// Active keys, when they changed.
    pub keys: Option<KeysJson>,
    /// Budgets, when they changed.
    pub budgets: Option<Vec<Budget>>,
    /// Prices in effect at `at`, when they changed.
    pub prices: Option<EffectivePrices>,
    /// Counters of the requested window starts: `(budget id, start) → spent`.
    pub counters: HashMap<(String, i64), Decimal>,
    /// Acknowledged sequence per reporter seen since `reporters_since`.
    pub reporters: BTreeMap<String, u64>,
}

/// The active keys as the JSON text of the snapshot's `keys` (a `Vec<KeyEntry>` in `sha256`
/// order), in the pieces the database keeps (`key_buckets.rs`; `tests/store.rs` checks the
/// bytes against serde's encoding). Kept in pieces: the snapshot document is where they are
/// joined, so 17 MB of keys are copied once per build, not twice; and a delta sends only the
/// buckets that changed.
#[derive(Debug, Default)]
pub struct KeysJson {
    /// How many keys.
    pub count: usize,
    /// The non-empty buckets in name order.
    pub parts: Vec<KeyPart>,
}

/// One bucket of keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyPart {
    /// Its name: the first three hex digits of its keys' hashes.
    pub bucket: String,
    /// Comma-separated `{"sha256":…,"principal":{…}}` objects.
    pub entries: String,
}

impl KeysJson {
    fn from_buckets(buckets: Vec<KeyBucket>) -> KeysJson {
        let mut out = KeysJson::default();
        for b in buckets {
            out.count += usize::try_from(b.keys).unwrap_or(0);
            out.parts.push(KeyPart {
                bucket: b.bucket,
                entries: b.entries,
            });
        }
        out
    }

    /// Length of the JSON array, bytes.
    pub fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.entries.len() + 1)
            .sum::<usize>()
            + 1
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends the JSON array to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part.entries.as_bytes());
        }
        out.push(b']');
    }
}

/// One non-empty bucket as read, with the `keys_version` of the state it was read from.
#[derive(sqlx::FromRow)]
struct KeyBucket {
    keys_version: i64,
    bucket: String,
    keys: i64,
    entries: String,
}

impl Store {
    /// Reads what changed since `held`. `budgets` are the held budgets (used when they did
    /// not change); `starts` maps the budgets in force and `at` to the window start of each,
    /// whose counters are read. Reporters not seen since `reporters_since` are left out.
    pub async fn read_snapshot(
        &self,
        held: Held,
        budgets: Option<&[Budget]>,
        now: i64,
        reporters_since: i64,
        starts: impl FnOnce(&[Budget], i64) -> Vec<i64>,
    ) -> Result<SnapshotRead, StoreError> {
        with_pool!(self, read, |pool, pg| {
            let mut tx = pool.begin_with(begin_read(pg)).await?;
            let meta: Meta = sqlx::query_as(SELECT_META).fetch_one(&mut *tx).await?;
            let at = now.max(meta.clock);
            let mut out = SnapshotRead {
                meta,
                at,
                ..SnapshotRead::default()
            };
            // The keys on a connection of their own, while this transaction reads the rest
            // (on SQLite each connection has its own thread, on PostgreSQL its own server
            // process: the two cores share the work). One statement sees one committed
            // state; when a key changed between it and this transaction, the keys are read
            // again here.
            let want_keys = held.keys_version != Some(meta.keys_version);
            let keys_aside = want_keys.then(|| {
                // A task of its own, so that the driver's side of it runs on another runtime
                // thread too.
                let pool = pool.clone();
                tokio::spawn(async move {
                    sqlx::query_as::<_, KeyBucket>(key_buckets::SELECT_BUCKETS)
                        .fetch_all(&pool)
                        .await
                })
            });
            if held.budgets_version != Some(meta.budgets_version) || budgets.is_none() {
                let rows: Vec<BudgetRow> =
                    if pg {
                        sqlx::query_as(sql!("SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY id"))
                            .fetch_all(&mut *tx)
                            .await?
                    } else {
                        let json: String = sqlx::query_scalar(sqlx::AssertSqlSafe(
                            sqlite_json_rows(BUDGET_COLUMNS, "budgets", Some("id")),
                        ))
                        .fetch_one(&mut *tx)
                        .await?;
                        from_json_rows("budgets", &json)?
                    };
                out.budgets = Some(budgets_from_rows(rows)?);
            }
            let prices_current = held
                .prices
                .is_some_and(|(v, next)| v == meta.prices_version && next.is_none_or(|n| at < n));
            if !prices_current {
                out.prices = Some(effective_prices!(tx, at)?);
            }
            let in_force: &[Budget] = match (&out.budgets, budgets) {
                (Some(b), _) => b,
                (None, Some(b)) => b,
                (None, None) => &[],
            };
            let window_starts = starts(in_force, at);
            out.counters = counters_at!(tx, pg, &window_starts);
            let acks: Vec<(String, i64)> = sqlx::query_as(
                "SELECT reporter, acked_seq FROM reporters WHERE last_seen >= $1 AND acked_seq > 0",
            )
            .bind(reporters_since)
            .fetch_all(&mut *tx)
            .await?;
            out.reporters = acks
                .into_iter()
                .map(|(r, s)| (r, super::to_u64(s)))
                .collect();
            if let Some(aside) = keys_aside {
                let mut buckets = match aside.await {
                    Ok(read) => read?,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                if buckets.is_empty() || buckets.iter().any(|b| b.keys_version != meta.keys_version)
                {
                    buckets = sqlx::query_as(key_buckets::SELECT_BUCKETS)
                        .fetch_all(&mut *tx)
                        .await?;
                }
                out.keys = Some(KeysJson::from_buckets(buckets));
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}
