//! What the unit tests of several modules share (compiled for tests only).

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::config::Config;

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
