//! The snapshot's `keys` array, kept assembled in the database in buckets (migration 0003):
//! the active keys whose `sha256` starts with the same three hex digits, as the comma-separated
//! JSON of their `KeyEntry`s in `sha256` order. Every key change re-encodes its own bucket in
//! the same transaction (~25 keys in a fleet of 100,000), so a snapshot build that needs the
//! keys reads 4,096 ready pieces instead of encoding 100,000 keys.
//!
//! The database writes the JSON (each string quoted by `json_quote` on SQLite, `to_json` on
//! PostgreSQL, absent links left out, fields in `KeyEntry`'s order); `tests/store.rs` checks
//! it byte for byte against serde's encoding of the same keys.

/// The JSON object of the `KeyEntry` of the `virtual_keys` row in scope, as SQL.
fn entry_sql(pg: bool) -> String {
    let quote = |col: &str| {
        if pg {
            format!("to_json({col})::text")
        } else {
            format!("json_quote({col})")
        }
    };
    let optional = |name: &str, col: &str| {
        format!(
            "CASE WHEN {col} IS NULL THEN '' ELSE ',\"{name}\":' || {} END",
            quote(col)
        )
    };
    format!(
        "'{{\"sha256\":' || {} || ',\"principal\":{{\"key\":' || {} || {} || {} || ',\"org\":' \
         || {} || '}}}}'",
        quote("sha256"),
        quote("id"),
        optional("user", "user_id"),
        optional("project", "project_id"),
        quote("org_id"),
    )
}

/// Fills `key_buckets` from every active key (it must be empty): the back-fill of migration
/// 0003, which holds this very text; public for the benches' bulk loader and the test that
/// compares the back-fill with the buckets kept key by key.
pub fn refresh_all_sql(pg: bool) -> String {
    format!(
        "INSERT INTO key_buckets (bucket, keys, entries)\n\
         SELECT substr(sha256, 1, 3), count(*), string_agg({}, ',' ORDER BY sha256)\n\
         FROM virtual_keys WHERE revoked_at IS NULL GROUP BY substr(sha256, 1, 3)",
        entry_sql(pg)
    )
}

/// Re-encodes the bucket `$1` (see [`bucket_of`]) from its active keys.
///
/// On PostgreSQL the transaction must already hold the `meta` row lock (taken by the
/// `keys_version` bump, which therefore comes first): key changes then run one at a time, and
/// this statement sees every key change committed before it, so none is lost from a bucket.
pub(crate) fn refresh_sql(pg: bool) -> String {
    format!(
        "INSERT INTO key_buckets (bucket, keys, entries)\n\
         SELECT $1, count(*), coalesce(string_agg({}, ',' ORDER BY sha256), '')\n\
         FROM virtual_keys WHERE revoked_at IS NULL AND substr(sha256, 1, 3) = $1\n\
         ON CONFLICT (bucket) DO UPDATE SET keys = excluded.keys, entries = excluded.entries",
        entry_sql(pg)
    )
}

/// The bucket of a key: the first three characters of its `sha256`, as SQL's
/// `substr(sha256, 1, 3)` counts them.
pub(crate) fn bucket_of(sha256: &str) -> &str {
    let end = sha256
        .char_indices()
        .nth(3)
        .map_or(sha256.len(), |(i, _)| i);
    sha256.get(..end).unwrap_or(sha256)
}

/// Reads the non-empty buckets in order (the keys section, in pieces), each with its name and
/// the `keys_version` of the state it was read from.
pub(crate) const SELECT_BUCKETS: &str =
    "SELECT (SELECT keys_version FROM meta WHERE id = 1) AS keys_version, bucket, keys, entries \
     FROM key_buckets WHERE keys > 0 ORDER BY bucket";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_0003_backfills_with_the_same_statement() {
        for (pg, migration) in [
            (
                false,
                include_str!("../../../migrations/sqlite/0003_key_buckets.sql"),
            ),
            (
                true,
                include_str!("../../../migrations/postgres/0003_key_buckets.sql"),
            ),
        ] {
            assert!(
                migration.contains(&format!("{};\n", refresh_all_sql(pg))),
                "migration 0003 (pg: {pg}) must back-fill with:\n{}",
                refresh_all_sql(pg)
            );
        }
    }

    #[test]
    fn a_bucket_is_three_characters() {
        assert_eq!(bucket_of("ab12ef"), "ab1");
        assert_eq!(bucket_of("ab"), "ab");
        assert_eq!(bucket_of("é/\"x"), "é/\"");
    }
}
