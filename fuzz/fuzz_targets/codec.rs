//! The binary wire formats of Envoy shared data and the shared queue, and the usage batch the
//! control plane reads: what crosses a process or VM boundary as bytes.
//!
//! Input: a selector byte, then the bytes of
//! - 0: a queue item (`QueuedUsage::decode`, the sync service draining the queue,
//!   `service.rs`), then the sync service numbering it and posting it as a `UsageBatch`;
//! - 1: one budget's local state (`LocalBudget::decode`, every worker's `host::read_budget`),
//!   then what a request does to it (read unsynced spend, reserve, release, settle, ack);
//! - 2: a `POST /v1/usage` body as the control plane reads it (`UsageBatch` + `validate`).
//!
//! Checks: no panic; decode ∘ encode is the identity on everything decoded, and encoding is
//! stable; the posted batch reads back as exactly the events queued.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use tollgate_core::event::UsageBatch;
use tollgate_core::local_spend::LocalBudget;
use tollgate_core::sync_protocol::{QueuedUsage, SyncCall, SyncState};
use tollgate_fuzz::split_selector;

fn queue_item(bytes: &[u8]) {
    let Ok(item) = QueuedUsage::decode(bytes) else {
        return;
    };
    let encoded = item.encode();
    let back = QueuedUsage::decode(&encoded).expect("an encoded item decodes");
    assert_eq!(back, item, "queue item changes on the round trip");
    assert_eq!(back.encode(), encoded, "encoding is not stable");

    let mut sync = SyncState::new("fuzz-node".into(), 16, 16);
    sync.enroll_answered(
        200,
        br#"{"reporter":"fuzz-reporter","secret":"tgr-fuzz"}"#,
        0,
    )
    .expect("the enrollment answer reads");
    sync.push(item.clone());
    let posted = sync.on_tick(0).into_iter().find_map(|call| match call {
        SyncCall::PostUsage { body, .. } => Some(body),
        SyncCall::FetchSnapshot { .. } | SyncCall::Enroll { .. } => None,
    });
    let body = posted.expect("a pending event is posted on the first tick");
    let batch: UsageBatch = serde_json::from_slice(&body).expect("the posted batch reads back");
    let [event] = batch.events.as_slice() else {
        panic!("one event queued, {} posted", batch.events.len());
    };
    let mut want = item.event;
    want.reporter = "fuzz-reporter".into();
    want.seq = 1;
    want.id = "fuzz-reporter-1".into();
    assert_eq!(event, &want, "the control plane would read another event");
    let _ = batch.validate();
}

fn local_budget(bytes: &[u8]) {
    let Ok(mut state) = LocalBudget::decode(bytes.to_vec()) else {
        return;
    };
    assert_eq!(
        state.encoded(),
        bytes,
        "a state is held as the bytes it was read from"
    );
    // What one request does to the state it read: decide with the unsynced spend of each
    // window, reserve, release, settle, and what the sync service does on an ack.
    let windows: Vec<i64> = state.unsynced().map(|(w, _)| w).collect();
    for &w in &windows {
        let _ = state.unsynced_in(w);
    }
    for amount in [Decimal::ZERO, Decimal::new(1, 6), Decimal::MAX] {
        let before = state.reserved();
        if state.reserve(amount).is_some() {
            state.release(amount);
            // Never above what it was, but for rounding: a value with 28 or 29 significant
            // digits cannot hold `before + amount` exactly, and the sum is rounded to one
            // unit in the last place it keeps. Real reservations have far fewer digits.
            let after = state.reserved();
            let ulp = Decimal::new(1, before.scale().min(after.scale()));
            let drift = after.checked_sub(before.max(Decimal::ZERO));
            assert!(
                drift.is_some_and(|d| d <= ulp),
                "reserve then release drifted: {before} -> {}",
                after
            );
        }
        for &w in windows.iter().chain([&i64::MIN, &0]) {
            state.add_unsynced(w, amount);
            let _ = state.unsynced_in(w);
            state.ack(w, amount);
        }
    }
    let encoded = state.encoded().to_vec();
    assert_eq!(
        LocalBudget::decode(encoded).as_ref(),
        Ok(&state),
        "an edited state reads back"
    );
}

fn usage_batch(bytes: &[u8]) {
    if let Ok(batch) = serde_json::from_slice::<UsageBatch>(bytes) {
        let _ = batch.validate();
        let json = serde_json::to_vec(&batch).unwrap_or_default();
        let back: UsageBatch = serde_json::from_slice(&json).expect("a batch reads back");
        assert_eq!(back, batch, "batch changes on the JSON round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = split_selector(data) else {
        return;
    };
    match selector % 3 {
        0 => queue_item(bytes),
        1 => local_budget(bytes),
        _ => usage_batch(bytes),
    }
});
