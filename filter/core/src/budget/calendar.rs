//! Proleptic Gregorian civil-date arithmetic on day numbers (days since 1970-01-01).
//!
//! Core cannot depend on chrono (it must stay small on wasm32-wasip1), and the windows only
//! need three things: a day number from a date, a date from a day number, and the weekday.
//! The algorithms are Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>), written with Euclidean division so
//! they are exact for every day number an `i64` of seconds can reach (years ±2.9·10¹¹), with
//! no overflow and no panic. Tested by `cargo test -p tollgate-core --lib budget::calendar`.

/// Seconds in a civil day (no leap seconds: Unix time has none).
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Days in a 400-year Gregorian era.
const DAYS_PER_ERA: i64 = 146_097;

/// A civil date: proleptic Gregorian year, month `1..=12`, day `1..=31`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    /// Year; year 0 is 1 BC.
    pub year: i64,
    /// Month, 1 = January.
    pub month: u32,
    /// Day of the month, from 1.
    pub day: u32,
}

/// The day number (days since 1970-01-01) of a civil date.
///
/// Months and days outside their range are not rejected: the arithmetic simply carries (day 0
/// of March is the last day of February), which is what callers computing "the 1st of the
/// next month" rely on. The caller keeps `year` within ±2.9·10¹¹ (what an `i64` of seconds
/// reaches); beyond that the result saturates instead of overflowing.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Carry months past December into the year, then shift the year to start in March so
    // the leap day is the last day of the year.
    let m0 = i64::from(month) - 1;
    let year = year.saturating_add(m0.div_euclid(12));
    let m = m0.rem_euclid(12) + 1;
    let y = if m <= 2 { year.saturating_sub(1) } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (m + 9).rem_euclid(12); // March = 0 .. February = 11
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365] for valid days
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era.saturating_mul(DAYS_PER_ERA)
        .saturating_add(doe)
        .saturating_sub(719_468) // 0000-03-01 to 1970-01-01
}

/// The civil date of a day number (days since 1970-01-01). Exact for every `i64` day number
/// that comes from dividing an `i64` of seconds by [`SECONDS_PER_DAY`].
pub fn civil_from_days(days: i64) -> CivilDate {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z.rem_euclid(DAYS_PER_ERA); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = era
        .saturating_mul(400)
        .saturating_add(yoe)
        .saturating_add(i64::from(month <= 2));
    CivilDate {
        year,
        // Both are small by construction; the fallbacks are unreachable but keep this total.
        month: u32::try_from(month).unwrap_or(1),
        day: u32::try_from(day).unwrap_or(1),
    }
}

/// Days since the most recent Monday: 0 for Monday .. 6 for Sunday (ISO 8601 week).
pub fn days_since_monday(days: i64) -> i64 {
    // 1970-01-01 was a Thursday, three days after a Monday.
    days.saturating_add(3).rem_euclid(7)
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        let cases: &[(i64, u32, u32, i64)] = &[
            (1970, 1, 1, 0),
            (1969, 12, 31, -1),
            (2000, 3, 1, 11_017),
            (2000, 2, 29, 11_016),
            (2024, 2, 29, 19_782),
            (2025, 1, 1, 20_089),
            (1900, 3, 1, -25_508),
            (0, 3, 1, -719_468),
            (-1, 12, 31, -719_529),
        ];
        for &(y, m, d, n) in cases {
            assert_eq!(days_from_civil(y, m, d), n, "{y}-{m}-{d}");
            assert_eq!(
                civil_from_days(n),
                CivilDate {
                    year: y,
                    month: m,
                    day: d
                }
            );
        }
    }

    #[test]
    fn carries_out_of_range_months_and_days() {
        // Month 13 of 2024 is January 2025; day 0 of March is the last of February.
        assert_eq!(days_from_civil(2024, 13, 1), days_from_civil(2025, 1, 1));
        assert_eq!(days_from_civil(2024, 3, 0), days_from_civil(2024, 2, 29));
        assert_eq!(days_from_civil(2023, 3, 0), days_from_civil(2023, 2, 28));
    }

    #[test]
    fn weekdays() {
        assert_eq!(days_since_monday(0), 3); // Thursday
        assert_eq!(days_since_monday(days_from_civil(2024, 12, 30)), 0); // Monday
        assert_eq!(days_since_monday(days_from_civil(2025, 1, 5)), 6); // Sunday
        assert_eq!(days_since_monday(-3), 0); // 1969-12-29, Monday
        assert_eq!(days_since_monday(-4), 6); // 1969-12-28, Sunday
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2023));
        assert!(is_leap_year(-4));
    }

    #[test]
    fn round_trips_across_a_wide_range() {
        let mut prev = civil_from_days(-800_000);
        for n in -799_999..800_000 {
            let d = civil_from_days(n);
            assert_eq!(days_from_civil(d.year, d.month, d.day), n);
            assert!(d > prev, "{d:?} after {prev:?}");
            prev = d;
        }
    }

    #[test]
    fn extreme_day_numbers_do_not_panic() {
        for n in [i64::MIN, i64::MIN / 86_400, i64::MAX / 86_400, i64::MAX] {
            let d = civil_from_days(n);
            let _ = days_from_civil(d.year, d.month, d.day);
        }
        let secs_days = i64::MAX.div_euclid(SECONDS_PER_DAY);
        let d = civil_from_days(secs_days);
        assert_eq!(days_from_civil(d.year, d.month, d.day), secs_days);
        let secs_days = i64::MIN.div_euclid(SECONDS_PER_DAY);
        let d = civil_from_days(secs_days);
        assert_eq!(days_from_civil(d.year, d.month, d.day), secs_days);
    }
}
