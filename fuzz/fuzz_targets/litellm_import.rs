//! The LiteLLM price-map import, as the control plane runs it on an uploaded
//! `model_prices_and_context_window.json` (`POST /v1/prices/import`, `tollgate prices import`:
//! `litellm::import`).
//!
//! Input: the map bytes. Checks: no panic; every entry is either imported or skipped with a
//! reason; every imported price has no negative rate at any prompt size, `max_rates` (what
//! worst-case estimates use) is never below the rate that bills, costs are non-negative and
//! exactly summed; and each price survives the JSON round trip the snapshot puts it through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_core::pricing::{litellm, ModelPrice};
use tollgate_fuzz::{check_cost, check_price, sample_usages};

fuzz_target!(|data: &[u8]| {
    let Ok(import) = litellm::import(data) else {
        return;
    };
    let entries = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
        .map(|m| m.len())
        .unwrap_or_default();
    assert_eq!(
        import.book.models.len() + import.skipped.len(),
        entries,
        "an entry neither imported nor skipped"
    );
    for (name, price) in &import.book.models {
        check_price(price);
        for u in sample_usages(price) {
            check_cost(price, &u);
        }
        let json = serde_json::to_vec(price).unwrap_or_default();
        let back: ModelPrice = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{name}: price does not read back: {e}"));
        assert_eq!(&back, price, "{name}: price changes on the round trip");
    }
});
