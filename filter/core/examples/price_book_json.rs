//! Prints the models of a LiteLLM price map as Tollgate's price book holds them (the
//! `prices.models` of a snapshot), for bench fixtures priced like a real deployment:
//!
//! ```sh
//! cargo run -q -p tollgate-core --example price_book_json -- \
//!   .venv/lib/python3.11/site-packages/litellm/model_prices_and_context_window_backup.json
//! ```
#![allow(clippy::expect_used, clippy::print_stdout)]

use tollgate_core::pricing::litellm;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: price_book_json LITELLM_MAP.json");
    let json = std::fs::read(&path).expect("the LiteLLM map");
    let book = litellm::import(&json).expect("a LiteLLM map").book;
    println!("{}", serde_json::to_string(&book.models).expect("the book"));
}
