//! Dates of old exports: `date` is the exporting machine's local time with no zone
//! (`YYYY-MM-DDTHH:MM:SS`), so the user supplies the offset it was written in.

/// Parses `YYYY-MM-DDTHH:MM:SS` written at `offset_seconds` east of UTC into unix seconds.
pub(crate) fn parse_local(date: &str, offset_seconds: i64) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = date.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds)
}

/// Parses a UTC offset written `+HH:MM` or `-HH:MM` (or `Z`) into seconds east of UTC.
pub fn parse_offset(offset: &str) -> Option<i64> {
    if offset == "Z" {
        return Some(0);
    }
    let b = offset.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_dates_with_an_offset() {
        assert_eq!(parse_local("1970-01-01T00:00:00", 0), Some(0));
        assert_eq!(parse_local("2023-10-28T21:14:03", 0), Some(1_698_527_643));
        assert_eq!(
            parse_local("2023-10-28T21:14:03", 3 * 3600),
            Some(1_698_516_843)
        );
        assert_eq!(parse_local("2024-02-29T12:00:00", 0), Some(1_709_208_000));
        assert_eq!(parse_local("2023-10-28 21:14:03", 0), None);
        assert_eq!(parse_local("2023-13-28T21:14:03", 0), None);
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_offset("+03:00"), Some(10_800));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("3"), None);
    }
}
