//! ISO 8601 / RFC 3339 timestamps as Segment sends them
//! (Segment Spec "Common fields": `timestamp`, `sentAt`, `receivedAt` are
//! ISO 8601 date strings), parsed by hand to avoid a date-time dependency.

/// Parses an ISO 8601 / RFC 3339 date-time into milliseconds since the Unix
/// epoch (UTC).
///
/// Accepted: `YYYY-MM-DD`, optionally followed by `T`/`t`/space and
/// `hh:mm[:ss[.fraction]]`, optionally followed by `Z`/`z` or a
/// `±hh[:mm]`/`±hhmm` offset. A missing offset means UTC (JavaScript's
/// `Date.parse` treats a date-only string as UTC too). Fractions beyond
/// milliseconds are truncated; a leap second `:60` is clamped to `:59`.
/// Years 0000–9999 only. Returns `None` for anything else; never panics.
/// A UTC calendar time: (year, month 1–12, day 1–31, hour, minute, second).
pub type Civil = (i64, i64, i64, i64, i64, i64);

/// Seconds since the Unix epoch → UTC calendar time (proleptic Gregorian,
/// Howard Hinnant's `civil_from_days`). Total for every `i64`.
pub fn civil_from_unix_secs(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3_600, sod % 3_600 / 60, sod % 60)
}

pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut i = 10;
    let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
    if i < b.len() {
        if !matches!(b[i], b'T' | b't' | b' ') {
            return None;
        }
        hour = num(i + 1, 2)?;
        if b.get(i + 3) != Some(&b':') {
            return None;
        }
        minute = num(i + 4, 2)?;
        i += 6;
        if b.get(i) == Some(&b':') {
            second = num(i + 1, 2)?;
            i += 3;
            if matches!(b.get(i), Some(b'.' | b',')) {
                i += 1;
                let start = i;
                let mut scale = 100;
                while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
                    millis += i64::from(d - b'0') * scale;
                    scale /= 10;
                    i += 1;
                }
                if i == start {
                    return None;
                }
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        second = second.min(59);
    }
    let mut offset_min = 0;
    match b.get(i) {
        None => {}
        Some(b'Z' | b'z') => i += 1,
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(i + 1, 2)?;
            i += 3;
            let om = if b.get(i) == Some(&b':') {
                i += 3;
                num(i - 2, 2)?
            } else if b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 2;
                num(i - 2, 2)?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return None;
            }
            offset_min = (oh * 60 + om) * if *sign == b'-' { -1 } else { 1 };
        }
        Some(_) => return None,
    }
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp_ms as p;

    #[test]
    fn timestamp_formats_segment_sends() {
        let base = 1_793_491_200_000; // 2026-11-01T00:00:00Z
        assert_eq!(p("2026-11-01T00:00:00Z"), Some(base));
        assert_eq!(p("2026-11-01T00:00:00+00:00"), Some(base));
        assert_eq!(p("2026-11-01T00:00:00.123Z"), Some(base + 123));
        assert_eq!(p("2026-11-01T00:00:00.1234567Z"), Some(base + 123));
        assert_eq!(p("2026-11-01T01:30:00+01:30"), Some(base));
        assert_eq!(p("2026-10-31T19:00:00-0500"), Some(base));
        assert_eq!(p("2026-10-31T19:00:00-05"), Some(base));
        assert_eq!(p("2026-11-01 00:00:00"), Some(base));
        assert_eq!(p("2026-11-01T00:00Z"), Some(base));
        assert_eq!(p("2026-11-01"), Some(base));
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(p("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(p("2016-12-31T23:59:60Z"), Some(1_483_228_799_000));
    }

    #[test]
    fn timestamp_rejects_garbage_without_panicking() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-11-01T",
            "2026-11-01T25:00",
            "2026-11-01T00:00:00.Z",
            "2026-11-01T00:00:00+",
            "2026-11-01T00:00:00Zjunk",
            "yesterday",
            "２０２６-11-01",
            "2026-11-01T00:00:00+24:00",
            "1793491200000",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
