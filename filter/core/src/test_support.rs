//! What the unit tests of several modules share (compiled for tests only).

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::config::Config;
use crate::pricing::{Rates, TierOverride, TierRates};

/// A decimal from its text.
pub(crate) fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A filter config: the minimum (a control plane with an inline token) plus `extra`, more
/// top-level members written `, "name": value`.
pub(crate) fn config(extra: &str) -> Config {
    let text = format!(
        r#"{{"control_plane": {{"cluster": "cp", "authority": "127.0.0.1:8080", "token": "t"}}{extra}}}"#
    );
    Config::parse(text.as_bytes()).unwrap()
}

/// A service tier whose base rates override the input rate (and the output rate when given).
pub(crate) fn tier(input: &str, output: Option<&str>) -> TierRates {
    TierRates {
        base: TierOverride {
            input: Some(d(input)),
            output: output.map(d),
            ..TierOverride::default()
        },
        ..TierRates::default()
    }
}

/// Claude-like rates (USD per token): input 3/M, output 15/M, cache read 0.3/M, cache write
/// 3.75/M (5 min) and 6/M (1 h).
pub(crate) fn claude_rates() -> Rates {
    Rates {
        input: d("0.000003"),
        output: d("0.000015"),
        cache_read: Some(d("0.0000003")),
        cache_write_5m: Some(d("0.00000375")),
        cache_write_1h: Some(d("0.000006")),
        reasoning: None,
    }
}
