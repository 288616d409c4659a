//! Prices as immutable revisions with effective-from dates.
//!
//! The price of a model at time `t` is its revision with the greatest `effective_from <= t`
//! (ties: the later revision); a revision without a price deletes the model from then on.
//! Nothing is updated in place, so the full history stays queryable. The book served in the
//! snapshot carries as `version` the number of revisions in effect by then: it grows by at
//! least one whenever the effective prices change, whether by a write or by a future revision
//! coming into effect, and every replica computes the same number from the same rows.

use serde::Serialize;
use tollgate_core::pricing::{ModelPrice, PriceBook};

use super::audit::{audit, Change, NONE};
use super::{begin_write, with_pool, Store, StoreError};

/// One stored revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceRevision {
    /// Revision id (increasing).
    pub revision: i64,
    /// Model name.
    pub model: String,
    /// Unix seconds from which it applies.
    pub effective_from: i64,
    /// The price, per token; `None` deletes the model.
    pub price: Option<ModelPrice>,
    /// Where it came from (`api`, `litellm`).
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A revision to add.
#[derive(Debug, Clone)]
pub struct NewRevision {
    /// Model name.
    pub model: String,
    /// From when.
    pub effective_from: i64,
    /// Price, or `None` to delete.
    pub price: Option<ModelPrice>,
    /// Origin.
    pub source: String,
}

/// The prices in effect at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePrices {
    /// The book (version = revisions in effect).
    pub book: PriceBook,
    /// The revision each model's price comes from, by model.
    pub revisions: Vec<PriceRevision>,
    /// The next instant a stored revision comes into effect, if any.
    pub next_change: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RevisionRow {
    id: i64,
    model: String,
    effective_from: i64,
    price: Option<String>,
    source: String,
    created_at: i64,
}

impl TryFrom<RevisionRow> for PriceRevision {
    type Error = StoreError;

    fn try_from(r: RevisionRow) -> Result<Self, StoreError> {
        let price = r
            .price
            .map(|p| serde_json::from_str::<ModelPrice>(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("price revision {}: {e}", r.id)))?;
        Ok(PriceRevision {
            revision: r.id,
            model: r.model,
            effective_from: r.effective_from,
            price,
            source: r.source,
            created_at: r.created_at,
        })
    }
}

const REVISION_COLUMNS: &str = "id, model, effective_from, price, source, created_at";

/// Loads the prices effective at `$at` on `$conn` (see [`EffectivePrices`]).
macro_rules! effective_prices {
    ($conn:expr, $at:expr) => {{
        let at: i64 = $at;
        let rows: Vec<$crate::store::prices::RevisionRow> = sqlx::query_as(
            "SELECT id, model, effective_from, price, source, created_at FROM ( \
               SELECT id, model, effective_from, price, source, created_at, ROW_NUMBER() OVER \
                 (PARTITION BY model ORDER BY effective_from DESC, id DESC) AS rn \
               FROM price_revisions WHERE effective_from <= $1) latest \
             WHERE rn = 1 ORDER BY model",
        )
        .bind(at)
        .fetch_all(&mut *$conn)
        .await?;
        let in_effect: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM price_revisions WHERE effective_from <= $1")
                .bind(at)
                .fetch_one(&mut *$conn)
                .await?;
        let next_change: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(effective_from) FROM price_revisions WHERE effective_from > $1",
        )
        .bind(at)
        .fetch_one(&mut *$conn)
        .await?;
        $crate::store::prices::assemble(rows, in_effect, next_change)
    }};
}
pub(crate) use effective_prices;

pub(crate) fn assemble(
    rows: Vec<RevisionRow>,
    in_effect: i64,
    next_change: Option<i64>,
) -> Result<EffectivePrices, StoreError> {
    let mut out = EffectivePrices {
        next_change,
        ..EffectivePrices::default()
    };
    out.book.version = super::to_u64(in_effect);
    for row in rows {
        let rev = PriceRevision::try_from(row)?;
        if let Some(price) = &rev.price {
            out.book.models.insert(rev.model.clone(), price.clone());
            out.revisions.push(rev);
        }
    }
    Ok(out)
}

/// The audit record of added revisions (`{"revisions": […]}`, a deletion's price `null`):
/// one model's id, or `import` for several models.
fn price_change(revisions: &[NewRevision], ids: &[i64]) -> Result<Change, StoreError> {
    let models: std::collections::BTreeSet<&str> =
        revisions.iter().map(|r| r.model.as_str()).collect();
    let object = match (models.len(), models.first()) {
        (1, Some(model)) => *model,
        _ => "import",
    };
    let added: Vec<serde_json::Value> = revisions
        .iter()
        .zip(ids)
        .map(|(r, id)| {
            serde_json::json!({
                "id": id,
                "model": r.model,
                "effective_from": r.effective_from,
                "price": r.price,
                "source": r.source,
            })
        })
        .collect();
    Change::new(
        "price",
        object,
        None,
        NONE,
        Some(&serde_json::json!({ "revisions": added })),
    )
}

impl Store {
    /// Adds revisions in one transaction; returns their ids in order.
    pub async fn add_price_revisions(
        &self,
        revisions: &[NewRevision],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if revisions.is_empty() {
            return Ok(Vec::new());
        }
        let mut prices = Vec::with_capacity(revisions.len());
        for r in revisions {
            prices.push(
                r.price
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        with_pool!(self, write, |pool, pg| {
            let mut tx = pool.begin_with(begin_write(pg)).await?;
            let mut ids = Vec::with_capacity(revisions.len());
            for (r, price) in revisions.iter().zip(&prices) {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO price_revisions (model, effective_from, price, source, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(&r.model)
                .bind(r.effective_from)
                .bind(price)
                .bind(&r.source)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            sqlx::query(
                "UPDATE meta SET version = version + 1, prices_version = prices_version + 1 \
                 WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
            audit!(tx, price_change(revisions, &ids));
            tx.commit().await?;
            self.committed_change();
            Ok(ids)
        })
    }

    /// The prices in effect at `at`.
    pub async fn effective_prices(&self, at: i64) -> Result<EffectivePrices, StoreError> {
        with_pool!(self, read, |pool, pg| {
            let mut conn = pool.acquire().await?;
            effective_prices!(conn, at)
        })
    }

    /// Every revision of `model`, oldest first (empty when it was never priced).
    pub async fn price_history(&self, model: &str) -> Result<Vec<PriceRevision>, StoreError> {
        let rows = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, RevisionRow>(sql!(
                "SELECT {REVISION_COLUMNS} FROM price_revisions WHERE model = $1 \
                 ORDER BY effective_from, id"
            ))
            .bind(model)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(PriceRevision::try_from).collect()
    }

    /// The revision of `model` in effect at `at`, if it has a price then.
    pub async fn price_at(
        &self,
        model: &str,
        at: i64,
    ) -> Result<Option<PriceRevision>, StoreError> {
        let row = with_pool!(self, read, |pool, pg| {
            sqlx::query_as::<_, RevisionRow>(sql!(
                "SELECT {REVISION_COLUMNS} FROM price_revisions WHERE model = $1 \
                 AND effective_from <= $2 ORDER BY effective_from DESC, id DESC LIMIT 1"
            ))
            .bind(model)
            .bind(at)
            .fetch_optional(pool)
            .await?
        });
        Ok(row
            .map(PriceRevision::try_from)
            .transpose()?
            .filter(|r| r.price.is_some()))
    }
}
