//! The bulk fleet loader of the benches: 100,000 keys through the API would take minutes.

use rust_decimal::Decimal;
use tollgate_control_plane::store::key_buckets::refresh_all_sql;
use tollgate_control_plane::store::Money;
use tollgate_testkit::with_connection;

/// Bulk-loads a fleet for benches: `orgs` organisations, a project per 10 keys, a user per 10
/// keys, `keys` virtual keys (secret of key `i` is `tg-bench-{i}`) and `budgets` budgets that
/// cycle through the four scopes, four periods and five timezones. Rows go in with multi-row
/// inserts in one transaction (the API would take minutes for 100,000 keys), the snapshot's
/// key buckets filled once at the end (migration 0003's back-fill).
///
/// It writes on a connection of its own, as another process would: a snapshot service over
/// the store sees the load when it next polls `meta.version` or rebuilds (the benches rebuild
/// before they measure).
pub async fn seed_fleet(
    url: &str,
    orgs: usize,
    budgets: usize,
    keys: usize,
    now: i64,
) -> Result<(), sqlx::Error> {
    let orgs = orgs.max(1);
    let groups = keys.div_ceil(10).max(1);
    let zones = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Sydney",
    ];
    let scopes = ["org", "project", "user", "key"];
    let periods = ["daily", "weekly", "monthly", "total"];
    with_connection!(url, |conn, pg| {
        let mut tx = conn
            .begin_with(if pg { "BEGIN" } else { "BEGIN IMMEDIATE" })
            .await?;
        let org_rows: Vec<usize> = (0..orgs).collect();
        for chunk in org_rows.chunks(5000) {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO orgs (id, name, created_at) ");
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(format!("org-{i}"))
                    .push_bind(format!("Org {i}"))
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let group_rows: Vec<usize> = (0..groups).collect();
        for chunk in group_rows.chunks(5000) {
            // A project and a user per group of ten keys, in the same rows but for the table.
            for (table, id, name) in [("projects", "prj", "p"), ("users", "usr", "u")] {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO {table} (id, org_id, name, created_at) "
                ));
                qb.push_values(chunk, |mut b, i| {
                    b.push_bind(format!("{id}-{i}"))
                        .push_bind(format!("org-{}", i % orgs))
                        .push_bind(name)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
        }
        let key_rows: Vec<usize> = (0..keys).collect();
        for chunk in key_rows.chunks(3000) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO virtual_keys (id, sha256, prefix, name, org_id, project_id, user_id, created_at) ",
            );
            qb.push_values(chunk, |mut b, i| {
                let g = i / 10;
                b.push_bind(format!("key-{i}"))
                    .push_bind(tollgate_core::identity::key_hash(&format!("tg-bench-{i}")))
                    .push_bind("tg-bench")
                    .push_bind("bench")
                    .push_bind(format!("org-{}", g % orgs))
                    .push_bind(format!("prj-{g}"))
                    .push_bind(format!("usr-{g}"))
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let budget_rows: Vec<usize> = (0..budgets).collect();
        for chunk in budget_rows.chunks(3000) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO budgets (id, scope, scope_id, period, timezone, limit_usd, soft_limit_usd, mode, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, i| {
                let scope = scopes.get(i % 4).copied().unwrap_or("org");
                let scope_id = match scope {
                    // Unique per budget (an org budget may name an org that is not
                    // registered, as with a trusted principal header): exactly `budgets` rows.
                    "org" => format!("org-{}", i / 4),
                    "project" => format!("prj-{}", i / 4),
                    "user" => format!("usr-{}", i / 4),
                    _ => format!("key-{}", i / 4),
                };
                b.push_bind(format!("bud-{i}"))
                    .push_bind(scope)
                    .push_bind(scope_id)
                    .push_bind(periods.get((i / 4) % 4).copied().unwrap_or("daily"))
                    .push_bind(zones.get(i % 5).copied().unwrap_or("UTC"))
                    .push_bind(Money(Decimal::from(100)))
                    .push_bind(Some(Money(Decimal::from(80))))
                    .push_bind("enforce")
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE meta SET version = version + 1, keys_version = keys_version + 1, \
             budgets_version = budgets_version + 1 WHERE id = 1",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM key_buckets")
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(refresh_all_sql(pg)))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if pg {
            // Planner statistics, as autovacuum gathers within a minute of a bulk load on a
            // live server: without them PostgreSQL plans for tables a few pages long.
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        Ok(())
    })
}
