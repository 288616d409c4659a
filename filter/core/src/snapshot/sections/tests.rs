use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;
use crate::snapshot::tests::doc;
use crate::snapshot::KeyLookup;

fn apply(held: &mut Held, v: &Value) -> Result<Changed, SnapshotError> {
    held.apply(v.to_string().as_bytes())
}

/// What a worker builds from what `held` published (sections in a map, as in shared data).
fn worker(held: &Held, previous: Option<&SnapshotIndex>) -> SnapshotIndex {
    let mut shared: HashMap<&str, Vec<u8>> = HashMap::new();
    shared.insert("prices", held.prices_json().as_bytes().to_vec());
    shared.insert("budgets", held.budgets_json());
    shared.insert("spend", held.spend_bytes());
    SnapshotIndex::from_sections(held.manifest, previous, |k| shared.get(k).cloned()).unwrap()
}

#[test]
fn a_whole_document_is_held_by_sections_and_read_back_the_same() {
    let mut held = Held::default();
    let changed = apply(&mut held, &doc()).unwrap();
    assert!(changed.prices && changed.budgets);
    assert_eq!(
        changed.buckets,
        ["ab1"],
        "keys grouped by their hash's first three digits"
    );
    assert_eq!(
        held.manifest,
        Manifest {
            version: 7,
            generated_at: 1500,
            stamps: Stamps {
                prices: 7,
                budgets: 7,
                spend: 7,
                keys: 7
            }
        }
    );
    let whole = SnapshotIndex::decode(doc().to_string().as_bytes()).unwrap();
    let w = worker(&held, None);
    assert_eq!(w.snapshot.prices, whole.snapshot.prices);
    // Budgets come back in id order.
    let mut budgets = (*whole.snapshot.budgets).clone();
    budgets.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(*w.snapshot.budgets, budgets);
    let p = principal_in_bucket(held.bucket("ab1").as_bytes(), "ab12").unwrap();
    assert_eq!(Some(p.clone()), whole.principal_for_key("ab12"));
    assert!(principal_in_bucket(held.bucket("ab1").as_bytes(), "ab13").is_none());
    let ids: Vec<&str> = w
        .budgets_for(&p)
        .map(|(b, _)| b.budget.id.as_str())
        .collect();
    assert_eq!(ids, ["b-key", "b-org"]);
    assert_eq!(held.reporters["r1"], 41);
}

#[test]
fn a_delta_changes_only_what_it_names() {
    let mut held = Held::default();
    apply(&mut held, &doc()).unwrap();
    let first = worker(&held, None);
    // Spend moved, a key was added in a new bucket, reporter r1 moved on.
    let delta = json!({
        "version": 9, "generated_at": 1600, "base": 7,
        "spend": [["b-org", 1000, "13"]],
        "key_buckets": {"cd3": [{"sha256": "cd34", "principal": {"key": "k2", "org": "acme"}}]},
        "reporters": {"r1": 50}
    });
    let changed = apply(&mut held, &delta).unwrap();
    assert_eq!(
        changed,
        Changed {
            prices: false,
            budgets: false,
            spend: true,
            buckets: vec!["cd3".into()]
        }
    );
    assert_eq!(
        held.manifest.stamps,
        Stamps {
            prices: 7,
            budgets: 7,
            spend: 9,
            keys: 9
        }
    );
    assert_eq!(held.budgets["b-org"].spent_usd, Decimal::from(13));
    assert_eq!(held.budgets["b-key"].spent_usd, Decimal::ONE, "untouched");
    assert_eq!(held.reporters["r1"], 50);
    let next = worker(&held, Some(&first));
    assert!(
        Arc::ptr_eq(&next.snapshot.prices, &first.snapshot.prices),
        "prices reused"
    );
    assert!(
        Arc::ptr_eq(&next.snapshot.budgets, &first.snapshot.budgets),
        "definitions reused: only the spend section is read"
    );
    assert_eq!(next.snapshot.version, 9);
    let p = principal_in_bucket(held.bucket("ab1").as_bytes(), "ab12").unwrap();
    let spent: Vec<_> = next
        .budgets_for(&p)
        .map(|(b, _)| (b.budget.id.clone(), b.spent))
        .collect();
    assert_eq!(
        spent,
        [
            ("b-key".to_string(), (None, Decimal::ONE)),
            ("b-org".to_string(), (Some(1000), Decimal::from(13)))
        ],
        "the new spend with the old definitions"
    );

    // A budget redefined, one removed, a bucket emptied, new prices.
    let mut redefined = doc()["budgets"][1].clone();
    redefined["limit_usd"] = json!("6");
    let delta = json!({
        "version": 10, "generated_at": 1700, "base": 9,
        "prices": {"version": 3, "models": {}},
        "budgets": [redefined],
        "removed_budgets": ["b-org"],
        "key_buckets": {"ab1": []}
    });
    let changed = apply(&mut held, &delta).unwrap();
    assert!(changed.prices && changed.budgets && changed.spend);
    assert_eq!(changed.buckets, ["ab1"]);
    assert_eq!(held.bucket("ab1"), "[]");
    assert_eq!(held.bucket_count(), 1);
    assert_eq!(held.budgets.len(), 1);
    assert_eq!(held.budgets["b-key"].limit_usd, Decimal::from(6));
    assert!(
        held.reporters.is_empty(),
        "each document carries the reporters it knows"
    );
    let last = worker(&held, Some(&next));
    assert_eq!(last.snapshot.prices.version, 3);

    // A delta that changes nothing moves no stamp.
    let same = json!({"version": 11, "generated_at": 1800, "base": 10});
    assert_eq!(apply(&mut held, &same).unwrap(), Changed::default());
    assert_eq!(
        held.manifest.stamps,
        Stamps {
            prices: 10,
            budgets: 10,
            spend: 10,
            keys: 10
        }
    );
}

#[test]
fn a_whole_document_after_another_removes_what_it_lacks() {
    let mut held = Held::default();
    apply(&mut held, &doc()).unwrap();
    let mut next = doc();
    next["version"] = json!(8);
    next["keys"] = json!([{"sha256": "EF01", "principal": {"key": "k9", "org": "acme"}}]);
    let changed = apply(&mut held, &next).unwrap();
    assert!(!changed.prices, "the same price book");
    assert!(!changed.budgets && !changed.spend);
    assert_eq!(
        changed.buckets,
        ["ab1", "ef0"],
        "one emptied, one new (hash lowercased)"
    );
    assert!(principal_in_bucket(held.bucket("ef0").as_bytes(), "ef01").is_some());
    assert_eq!(
        held.manifest.stamps,
        Stamps {
            prices: 7,
            budgets: 7,
            spend: 7,
            keys: 8
        }
    );
}

#[test]
fn what_does_not_fit_the_held_version_is_refused_and_changes_nothing() {
    let mut held = Held::default();
    apply(&mut held, &doc()).unwrap();
    let before = (
        held.manifest,
        held.budgets.clone(),
        held.bucket("ab1").to_owned(),
    );
    let unchanged = |held: &Held| {
        assert_eq!(
            (
                held.manifest,
                held.budgets.clone(),
                held.bucket("ab1").to_owned()
            ),
            before
        );
    };
    let refusals = [
        // A delta from a version not held.
        json!({"version": 9, "generated_at": 1600, "base": 6, "spend": [["b-org", 1000, "2"]]}),
        // A whole document older than the one held, built no later (a lagging replica).
        {
            let mut v = doc();
            v["version"] = json!(6);
            v
        },
        // Spend for a budget not held, negative spend, a key in the wrong bucket, flat keys
        // in a delta, a negative limit, a negative rate; each after a change that would apply.
        json!({"version": 8, "generated_at": 1600, "base": 7,
               "spend": [["b-key", null, "2"], ["nope", null, "1"]]}),
        json!({"version": 8, "generated_at": 1600, "base": 7, "spend": [["b-org", 1000, "-1"]]}),
        json!({"version": 8, "generated_at": 1600, "base": 7, "removed_budgets": ["b-org"],
               "key_buckets": {"ab1": [{"sha256": "ff00", "principal": {"org": "x"}}]}}),
        json!({"version": 8, "generated_at": 1600, "base": 7,
               "keys": [{"sha256": "ab19", "principal": {"org": "x"}}]}),
        {
            let mut b = doc()["budgets"][0].clone();
            b["limit_usd"] = json!("-5");
            json!({"version": 8, "generated_at": 1600, "base": 7, "budgets": [b]})
        },
        json!({"version": 8, "generated_at": 1600, "base": 7, "removed_budgets": ["b-org"],
               "prices": {"models": {"m": {"rates": {"input": "-1", "output": "0"}}}}}),
        json!({"version": 8, "generated_at": 1600, "base": 7, "extra": 1}),
    ];
    for (i, bad) in refusals.iter().enumerate() {
        assert!(apply(&mut held, bad).is_err(), "refusal {i}: {bad}");
        unchanged(&held);
    }
    // A whole document of an older version but built later: a new database, taken.
    let mut replaced = doc();
    replaced["version"] = json!(2);
    replaced["generated_at"] = json!(1501);
    apply(&mut held, &replaced).unwrap();
    assert_eq!(held.manifest.version, 2);
}

#[test]
fn the_manifest_round_trips() {
    let m = Manifest {
        version: u64::MAX,
        generated_at: -5,
        stamps: Stamps {
            prices: 1,
            budgets: 2,
            spend: 3,
            keys: 4,
        },
    };
    assert_eq!(Manifest::decode(m.encode().as_bytes()), Some(m));
    assert_eq!(Manifest::decode(b"7"), None);
    assert_eq!(Manifest::decode(b"7 1 2 x 4 5"), None);
    assert_eq!(Manifest::decode(b"\xff"), None);
}

#[test]
fn key_buckets_are_the_first_three_characters() {
    assert_eq!(key_bucket("ab12ef"), "ab1");
    assert_eq!(key_bucket("ab"), "ab");
    assert_eq!(key_bucket("é/\"x"), "é/\"");
}

#[test]
fn a_spend_section_of_other_definitions_is_refused() {
    let mut held = Held::default();
    apply(&mut held, &doc()).unwrap();
    let prices = held.prices_json().as_bytes().to_vec();
    let budgets = held.budgets_json();
    let read = |spend: Vec<u8>| {
        let (prices, budgets) = (prices.clone(), budgets.clone());
        move |s: &str| match s {
            "prices" => Some(prices.clone()),
            "budgets" => Some(budgets.clone()),
            _ => Some(spend.clone()),
        }
    };
    assert!(SnapshotIndex::from_sections(held.manifest, None, read(held.spend_bytes())).is_ok());
    // Written for definitions of another stamp (a worker between two sections' writes).
    let mut later = held.manifest;
    later.stamps.budgets += 1;
    assert!(SnapshotIndex::from_sections(later, None, read(held.spend_bytes())).is_err());
    // Truncated, or a negative amount.
    let bytes = held.spend_bytes();
    let cut = bytes[..bytes.len() - 1].to_vec();
    assert!(SnapshotIndex::from_sections(held.manifest, None, read(cut)).is_err());
    let mut negative = bytes.clone();
    let last = negative.len() - 16;
    negative.splice(last.., (-Decimal::ONE).serialize());
    assert!(SnapshotIndex::from_sections(held.manifest, None, read(negative)).is_err());
}

#[test]
fn a_short_spend_row_is_the_current_window_s() {
    let mut held = Held::default();
    apply(&mut held, &doc()).unwrap();
    let delta = json!({"version": 8, "generated_at": 1600, "base": 7,
                       "spend": [["b-org", "14"], ["b-key", "3"]]});
    apply(&mut held, &delta).unwrap();
    // The org budget's current window starts at its first bound; a total budget has none.
    assert_eq!(held.budgets["b-org"].spent_window_start, Some(1000));
    assert_eq!(held.budgets["b-org"].spent_usd, Decimal::from(14));
    assert_eq!(held.budgets["b-key"].spent_window_start, None);
    assert_eq!(held.budgets["b-key"].spent_usd, Decimal::from(3));
    let bad = json!({"version": 9, "generated_at": 1700, "base": 8, "spend": [["b-org"]]});
    assert!(apply(&mut held, &bad).is_err());
}
