//! Wall-clock time as the state file and the journal write it (RFC 3339, UTC, whole seconds),
//! and the durations the config and the command line take ("20s", "8h", "1h30m", "2d").

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// The time `d` later, at most [`Timestamp::MAX`]: nothing past year 9999 is ever written.
    pub fn plus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(secs).min(Timestamp::MAX.0))
    }

    /// 9999-12-31T23:59:59Z, the last time the format holds.
    pub const MAX: Timestamp = Timestamp(253_402_300_799);

    /// Parses exactly the form [`fmt::Display`] writes: `2026-11-23T15:36:43Z`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        if civil_from_days(days) != (y, mo, d) {
            return None; // 31 February and friends
        }
        Some(Timestamp(days * 86_400 + h * 3600 + mi * 60 + se))
    }
}

/// A run's time. [`Clock::decides_at`] is read once when the run starts: every decision of
/// one run (what has expired, when a lease ends) is made by that one instant. [`Clock::now`]
/// moves on with the run, for the stamps of its journal entries.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub decides_at: Timestamp,
    started: std::time::Instant,
}

impl Clock {
    pub fn starting_at(decides_at: Timestamp) -> Self {
        Clock {
            decides_at,
            started: std::time::Instant::now(),
        }
    }

    /// The time now: the start time plus the time the run has taken.
    pub fn now(&self) -> Timestamp {
        self.decides_at.plus(self.started.elapsed())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a UTC time like 2026-11-23T15:36:43Z"
            ))
        })
    }
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses a duration such as `90s`, `20m`, `8h`, `1h30m` or `2d`. Zero is allowed here; callers
/// that need a positive duration say so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("{text:?} is not a duration like 20s, 15m, 8h, 1h30m or 2d");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() || !saw_unit {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration the way [`parse_duration`] reads it, largest units first: `1h30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(28_800)), "8h");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }

    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp(1_795_448_203);
        assert_eq!(t.to_string(), "2026-11-23T15:36:43Z");
        assert_eq!(Timestamp::parse("2026-11-23T15:36:43Z"), Some(t));
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse("2024-02-29T23:59:59Z"),
            Some(Timestamp(1_709_251_199))
        );
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2026-11-23 15:36:43Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T15:36:43+01:00",
            "+026-11-23T15:36:43Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn no_time_past_year_9999() {
        let far = Timestamp::now().plus(Duration::from_secs(3_000_000 * 86_400));
        assert_eq!(far, Timestamp::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(Timestamp::parse(&far.to_string()), Some(far));
        assert_eq!(Timestamp::MAX.plus(Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn round_trips_many_days() {
        for day in (-719_000..2_900_000).step_by(997) {
            let t = Timestamp(day * 86_400 + 3723);
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(28_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "20", "h", "1.5h", "-1h", "1w", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
