//! Ingestion against its floor: the same usage batches posted through the whole router
//! (`POST /v1/usage`, as `ingest.rs` does) and written by a bare sqlx loop, interleaved batch
//! by batch in one run, on SQLite and on PostgreSQL. Goal: ingestion ≥ 0.6× its floor on each
//! backend (one poster, one batch at a time).
//!
//! The floor writes what the database must hold after each 1,000-event batch, with nothing
//! else: the batch's ledger rows (the same columns and values ingestion stores: the `detail`
//! JSON, the content hash and the cost check computed beforehand, untimed) and the new values
//! of the spend counters the batch moves (~2,000 rows; their deltas computed beforehand from
//! the same budget index), then one commit. Each with the fastest plain statement of its
//! backend: SQLite a multi-row `INSERT` and a multi-row upsert, PostgreSQL `INSERT … SELECT
//! FROM UNNEST` of one array per column and an `UNNEST` upsert that adds in SQL. It skips what
//! ingestion does besides: HTTP, JSON decoding, validation, the cost recomputation and content
//! hash, the budget index, duplicate and conflict detection, reporter acknowledgements and the
//! snapshot version. Ingestion and floor each have their own database, seeded alike (10,000
//! budgets, 10,000 keys, 100 orgs) with the same settings (SQLite: `Store`'s own connection
//! options, WAL and `synchronous=FULL`; PostgreSQL: the bench server's default durability),
//! so both ledgers grow at the same pace.
//!
//! Run: `cargo bench -p tollgate-benches --bench ingest_floor`
//! (`TOLLGATE_BENCH_BACKENDS=sqlite` for one backend, `TOLLGATE_FLOOR_BATCHES` timed batches
//! per side, default 40). Prints per backend the median and mean per batch, events/s, and
//! the ratio ingestion / floor (of the medians' throughputs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tollgate_benches::{
    batch, now, runtime, seeded_store, selected_backends, state, usage_post, Backend, BATCH,
    BUDGETS, KEYS, ORGS,
};
use tollgate_control_plane::http::app;
use tollgate_control_plane::ingest::{check_cost, deltas, BudgetIndex, CostCheck};
use tollgate_control_plane::store::ledger::{content_sha256, detail_json};
use tollgate_control_plane::store::{sqlite_options, Money};
use tollgate_core::event::UsageEvent;
use tollgate_core::pricing::PriceBook;
use tollgate_testkit::TestDb;
use tower::ServiceExt;

/// Untimed batches per side before the timed ones.
const WARMUP: u64 = 3;

const LEDGER_COLUMNS: &str = "id, reporter, seq, ts, org_id, project_id, user_id, key_id, model, \
     api, charge, uncharged, status, stream, price_version, input_tokens, output_tokens, \
     cost_usd, detail, content_sha256, cost_check, requested_model, received_at";

/// One ledger row's values, computed before the timed write.
struct Row {
    e: UsageEvent,
    api: String,
    charge: String,
    input_tokens: i64,
    output_tokens: i64,
    detail: String,
    content: String,
    cost_check: Option<&'static str>,
}

/// The snake_case name serde gives a unit enum value, as the ledger stores it.
fn enum_name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v).unwrap() {
        serde_json::Value::String(s) => s,
        other => panic!("not a unit enum value: {other}"),
    }
}

fn rows(events: Vec<UsageEvent>) -> Vec<Row> {
    let book = PriceBook::default();
    events
        .into_iter()
        .map(|e| Row {
            api: enum_name_of(&e.api),
            charge: enum_name_of(&e.charge),
            input_tokens: i64::try_from(e.usage.prompt_total()).unwrap(),
            output_tokens: i64::try_from(e.usage.output).unwrap(),
            detail: detail_json(&e.usage, &e.cost),
            content: content_sha256(&e),
            cost_check: check_cost(&e, &book).map(CostCheck::as_str),
            e,
        })
        .collect()
}

/// The floor's side of one backend.
enum Floor {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Floor {
    /// Writes one batch: ledger rows, counters (SQLite: new totals; PostgreSQL: deltas added in
    /// SQL), one commit.
    async fn write(&mut self, rows: &[Row], counters: &[(String, i64, Decimal)], now: i64) {
        match self {
            Floor::Sqlite(conn) => {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO usage_events ({LEDGER_COLUMNS}) "
                ));
                qb.push_values(rows, |mut b, r| {
                    let p = &r.e.principal;
                    b.push_bind(r.e.id.as_str())
                        .push_bind(r.e.reporter.as_str())
                        .push_bind(i64::try_from(r.e.seq).unwrap())
                        .push_bind(r.e.ts)
                        .push_bind(p.org.as_str())
                        .push_bind(p.project.as_deref())
                        .push_bind(p.user.as_deref())
                        .push_bind(p.key.as_deref())
                        .push_bind(r.e.model.as_str())
                        .push_bind(r.api.as_str())
                        .push_bind(r.charge.as_str())
                        .push_bind(None::<&str>)
                        .push_bind(i32::from(r.e.status))
                        .push_bind(r.e.stream)
                        .push_bind(i64::try_from(r.e.price_version).unwrap())
                        .push_bind(r.input_tokens)
                        .push_bind(r.output_tokens)
                        .push_bind(Money(r.e.cost.total))
                        .push_bind(r.detail.as_str())
                        .push_bind(r.content.as_str())
                        .push_bind(r.cost_check)
                        .push_bind(r.e.requested_model.as_deref())
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await.unwrap();
                for chunk in counters.chunks(5_000) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO budget_spend (budget_id, window_start, spent_usd) ",
                    );
                    qb.push_values(chunk, |mut b, (id, s, v)| {
                        b.push_bind(id.as_str()).push_bind(*s).push_bind(Money(*v));
                    });
                    qb.push(
                        " ON CONFLICT (budget_id, window_start) DO UPDATE SET spent_usd = excluded.spent_usd",
                    );
                    qb.build().execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
            Floor::Postgres(conn) => {
                let mut tx = conn.begin().await.unwrap();
                macro_rules! col {
                    (|$r:ident| $e:expr) => {
                        rows.iter().map(|$r| $e).collect::<Vec<_>>()
                    };
                }
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO usage_events ({LEDGER_COLUMNS}) \
                     SELECT u.*, $23 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
                       $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
                       $11::text[], $12::text[], $13::int4[], $14::bool[], $15::int8[], $16::int8[], \
                       $17::int8[], $18::numeric[], $19::text[], $20::text[], $21::text[], \
                       $22::text[]) AS u"
                )))
                .bind(col!(|r| r.e.id.as_str()))
                .bind(col!(|r| r.e.reporter.as_str()))
                .bind(col!(|r| i64::try_from(r.e.seq).unwrap()))
                .bind(col!(|r| r.e.ts))
                .bind(col!(|r| r.e.principal.org.as_str()))
                .bind(col!(|r| r.e.principal.project.as_deref()))
                .bind(col!(|r| r.e.principal.user.as_deref()))
                .bind(col!(|r| r.e.principal.key.as_deref()))
                .bind(col!(|r| r.e.model.as_str()))
                .bind(col!(|r| r.api.as_str()))
                .bind(col!(|r| r.charge.as_str()))
                .bind(col!(|_r| None::<&str>))
                .bind(col!(|r| i32::from(r.e.status)))
                .bind(col!(|r| r.e.stream))
                .bind(col!(|r| i64::try_from(r.e.price_version).unwrap()))
                .bind(col!(|r| r.input_tokens))
                .bind(col!(|r| r.output_tokens))
                .bind(col!(|r| r.e.cost.total))
                .bind(col!(|r| r.detail.as_str()))
                .bind(col!(|r| r.content.as_str()))
                .bind(col!(|r| r.cost_check))
                .bind(col!(|r| r.e.requested_model.as_deref()))
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO budget_spend (budget_id, window_start, spent_usd) \
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::numeric[]) \
                     ON CONFLICT (budget_id, window_start) DO UPDATE \
                     SET spent_usd = budget_spend.spent_usd + EXCLUDED.spent_usd",
                )
                .bind(counters.iter().map(|c| c.0.as_str()).collect::<Vec<_>>())
                .bind(counters.iter().map(|c| c.1).collect::<Vec<_>>())
                .bind(counters.iter().map(|c| c.2).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }
    }
}

/// A migrated database seeded with the fleet (its store, and for the floor its URL).
async fn seeded(backend: Backend) -> TestDb {
    seeded_store(backend, ORGS as usize, BUDGETS, KEYS as usize).await
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / u32::try_from(v.len()).unwrap()
}

fn per_s(d: Duration) -> f64 {
    BATCH as f64 / d.as_secs_f64()
}

async fn run(backend: Backend, batches: u64) {
    // Ingestion's side: the router over its own store, an enrolled reporter posting.
    let TestDb {
        store: ingest_store,
        file: _g1,
        ..
    } = seeded(backend).await;
    let me = ingest_store
        .enroll_reporter(Some("floor-bench"), now())
        .await
        .unwrap();
    let router = app(state(ingest_store).await);

    // The floor's side: a bare connection to a database seeded alike.
    let TestDb {
        store: floor_store,
        url: floor_url,
        file: _g2,
    } = seeded(backend).await;
    let budgets = floor_store.list_budgets(None, None).await.unwrap();
    let index = BudgetIndex::new(1, &budgets);
    floor_store.close().await;
    let mut floor = match backend {
        Backend::Sqlite => Floor::Sqlite(
            SqliteConnection::connect_with(&sqlite_options(&floor_url).unwrap())
                .await
                .unwrap(),
        ),
        Backend::Postgres => Floor::Postgres(PgConnection::connect(&floor_url).await.unwrap()),
    };
    // SQLite's floor writes the counters' new totals: kept here, as the database holds them.
    let mut totals: HashMap<(String, i64), Decimal> = HashMap::new();

    let mut ingest_times = Vec::new();
    let mut floor_times = Vec::new();
    for k in 0..WARMUP + batches {
        let ts = now();
        // Ingestion: the body encoded beforehand, the call timed (as `ingest.rs`).
        let req = usage_post(&me.secret, &batch(&me.reporter, k, BATCH, KEYS, ORGS, ts));
        let started = Instant::now();
        let resp = router.clone().oneshot(req).await.unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), 200);

        // The floor: the same batch's rows and counter values computed beforehand.
        let events = batch("floor-bench", k, BATCH, KEYS, ORGS, ts).events;
        let d = deltas(&index, events.iter()).unwrap();
        let counters: Vec<(String, i64, Decimal)> = d
            .into_iter()
            .map(|((id, start), v)| match backend {
                Backend::Postgres => (id, start, v),
                Backend::Sqlite => {
                    let t = totals.entry((id.clone(), start)).or_default();
                    *t += v;
                    (id, start, *t)
                }
            })
            .collect();
        let rows = rows(events);
        let started = Instant::now();
        floor.write(&rows, &counters, ts).await;
        let floor_took = started.elapsed();

        if k >= WARMUP {
            ingest_times.push(took);
            floor_times.push(floor_took);
        }
    }
    let (im, fm) = (median(ingest_times.clone()), median(floor_times.clone()));
    let (ia, fa) = (mean(&ingest_times), mean(&floor_times));
    println!(
        "{:<8} ingest  median {:>6.2} ms  mean {:>6.2} ms  {:>7.0} events/s",
        backend.as_str(),
        im.as_secs_f64() * 1e3,
        ia.as_secs_f64() * 1e3,
        per_s(im)
    );
    println!(
        "{:<8} floor   median {:>6.2} ms  mean {:>6.2} ms  {:>7.0} events/s",
        backend.as_str(),
        fm.as_secs_f64() * 1e3,
        fa.as_secs_f64() * 1e3,
        per_s(fm)
    );
    let ratio = fm.as_secs_f64() / im.as_secs_f64();
    println!(
        "{:<8} ingestion / floor = {ratio:.2} (medians; means {:.2}), {batches} batches of {BATCH} each side, goal ≥ 0.6: {}",
        backend.as_str(),
        fa.as_secs_f64() / ia.as_secs_f64(),
        if ratio >= 0.6 { "met" } else { "NOT met" }
    );
}

fn main() {
    let batches = std::env::var("TOLLGATE_FLOOR_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let rt = runtime();
    for backend in selected_backends() {
        rt.block_on(run(backend, batches));
    }
}
