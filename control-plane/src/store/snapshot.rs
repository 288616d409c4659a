//! What the snapshot builder reads, in one read transaction so that the spend counters and the
//! reporter acknowledgements describe the same committed state (an acknowledgement ahead of
//! the counters would make the filter drop local spend the snapshot does not carry yet).
//!
//! Sections whose version did not change since the last build are not read again: a batch of
//! usage only changes counters and acknowledgements, so the 100,000 keys of a large fleet are
//! read once per key change, not once per batch.
//!
//! When they are read on SQLite, the keys come out of the database already as the snapshot's
//! JSON text (see [`KeysJson`]), in two `sha256` halves on connections of their own while the
//! read transaction reads the rest: a cold build of 100,000 keys was mostly the driver
//! handing 500,000 column values across threads one row at a time, then serde encoding them
//! again, one core doing it all.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use tollgate_core::principal::Principal;
use tollgate_core::snapshot::KeyEntry;

use super::budgets::{budgets_from_rows, counters_at, Budget, BudgetRow, BUDGET_COLUMNS};
use super::prices::{effective_prices, EffectivePrices};
use super::{begin_read, with_pool, Meta, Money, Store, StoreError, SELECT_META};

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

/// The active keys as the JSON text of the snapshot's `keys`: a `Vec<KeyEntry>` in `sha256`
/// order. On SQLite the database writes it (each string quoted by `json_quote`, absent links
/// left out, fields in `KeyEntry`'s order), so that 100,000 keys cross the driver as two
/// strings instead of 100,000 rows; `tests/store.rs` checks it against serde's encoding.
#[derive(Debug, Default)]
pub struct KeysJson {
    /// How many keys.
    pub count: usize,
    /// `[{"sha256":…,"principal":{…}},…]`.
    pub json: Vec<u8>,
}

impl KeysJson {
    /// Joins the parts of consecutive `sha256` ranges into one array.
    fn join(parts: impl IntoIterator<Item = KeysPart>) -> KeysJson {
        let mut out = KeysJson {
            count: 0,
            json: b"[".to_vec(),
        };
        for part in parts {
            if part.entries.is_empty() {
                continue;
            }
            if out.count > 0 {
                out.json.push(b',');
            }
            out.count += usize::try_from(part.count).unwrap_or(0);
            out.json.extend_from_slice(part.entries.as_bytes());
        }
        out.json.push(b']');
        out
    }
}

/// The keys of one `sha256` range, read in one statement with the `keys_version` they are of.
#[derive(sqlx::FromRow)]
struct KeysPart {
    keys_version: i64,
    count: i64,
    /// The entries, comma-separated, without brackets.
    entries: String,
}

/// Where the key ranges read at once are split: `sha256` is lowercase hex, so the halves are
/// even for random secrets (and any other text still falls on one side).
const KEYS_SPLIT: &str = "8";

/// SQLite: the statement reading the active keys whose `sha256` satisfies `range` (SQL,
/// appended to the `WHERE`) as one [`KeysPart`]. The aggregate takes the rows in the
/// subquery's order, which walks the `virtual_keys_active` index (an `ORDER BY` inside
/// `group_concat` would sort them again).
fn keys_sql(range: &str) -> String {
    let optional = |name: &str, col: &str| {
        format!("CASE WHEN {col} IS NULL THEN '' ELSE ',\"{name}\":' || json_quote({col}) END")
    };
    let entry = format!(
        "'{{\"sha256\":' || json_quote(sha256) || ',\"principal\":{{\"key\":' || json_quote(id) \
         || {} || {} || ',\"org\":' || json_quote(org_id) || '}}}}'",
        optional("user", "user_id"),
        optional("project", "project_id"),
    );
    format!(
        "SELECT (SELECT keys_version FROM meta WHERE id = 1) AS keys_version, count(*) AS count, \
         coalesce(group_concat(e, ','), '') AS entries \
         FROM (SELECT {entry} AS e FROM virtual_keys \
               WHERE revoked_at IS NULL AND {range} ORDER BY sha256)"
    )
}

/// PostgreSQL: the active keys as rows. Its `to_json` costs more per key than the driver's
/// decoding of the rows and serde's encoding together, so there the keys are encoded here.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    sha256: String,
    org_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
}

impl KeysJson {
    /// Encodes key rows with serde.
    fn encode(rows: Vec<KeyRow>) -> Result<KeysJson, StoreError> {
        let entries: Vec<KeyEntry> = rows
            .into_iter()
            .map(|r| KeyEntry {
                sha256: r.sha256,
                principal: Principal {
                    key: Some(r.id),
                    user: r.user_id,
                    project: r.project_id,
                    org: r.org_id,
                },
            })
            .collect();
        Ok(KeysJson {
            count: entries.len(),
            json: serde_json::to_vec(&entries)
                .map_err(|e| StoreError::Corrupt(format!("keys json: {e}")))?,
        })
    }
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
            // SQLite: the key halves, on connections of their own, while this transaction goes
            // on (each connection has its own thread: the two cores share the work).
            let want_keys = held.keys_version != Some(meta.keys_version);
            let halves = async {
                if !want_keys || pg {
                    return Ok(None);
                }
                let (low, high) = (
                    keys_sql(&format!("sha256 < '{KEYS_SPLIT}'")),
                    keys_sql(&format!("sha256 >= '{KEYS_SPLIT}'")),
                );
                let (low, high) = tokio::join!(
                    sqlx::query_as::<_, KeysPart>(&low).fetch_one(pool),
                    sqlx::query_as::<_, KeysPart>(&high).fetch_one(pool),
                );
                Ok::<_, StoreError>(Some([low?, high?]))
            };
            let rest = async {
                if held.budgets_version != Some(meta.budgets_version) || budgets.is_none() {
                    let rows: Vec<BudgetRow> = sqlx::query_as(&format!(
                        "SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    out.budgets = Some(budgets_from_rows(rows)?);
                }
                let prices_current = held.prices.is_some_and(|(v, next)| {
                    v == meta.prices_version && next.is_none_or(|n| at < n)
                });
                if !prices_current {
                    out.prices = Some(effective_prices!(tx, at)?);
                }
                let in_force: &[Budget] = match (&out.budgets, budgets) {
                    (Some(b), _) => b,
                    (None, Some(b)) => b,
                    (None, None) => &[],
                };
                let window_starts = starts(in_force, at);
                out.counters = counters_at!(tx, &window_starts);
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
                Ok::<_, StoreError>(())
            };
            let (rest, halves) = tokio::join!(rest, halves);
            rest?;
            let halves = halves?;
            if want_keys {
                // Each half is one statement, so one committed state; when a key changed
                // between them and this transaction, the keys are read in the transaction.
                out.keys = Some(match halves {
                    Some(h) if h.iter().all(|h| h.keys_version == meta.keys_version) => {
                        KeysJson::join(h)
                    }
                    _ if pg => KeysJson::encode(
                        sqlx::query_as(
                            "SELECT id, sha256, org_id, project_id, user_id FROM virtual_keys \
                             WHERE revoked_at IS NULL ORDER BY sha256",
                        )
                        .fetch_all(&mut *tx)
                        .await?,
                    )?,
                    _ => KeysJson::join([sqlx::query_as(&keys_sql("TRUE"))
                        .fetch_one(&mut *tx)
                        .await?]),
                });
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}
