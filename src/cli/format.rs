//! How the CLI shows numbers, sizes, times and tables, the way Ollama's
//! `format` package and its table writer do, so scripts that scrape
//! `ollama list` read `hearth list` the same.

use std::time::{Duration, SystemTime};

/// Bytes in decimal units: `253 MB`, `1.2 GB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    let Some((scale, unit)) = UNITS.iter().find(|(scale, _)| b >= *scale) else {
        return format!("{b} B");
    };
    let value = b as f64 / *scale as f64;
    if value >= 10.0 || value == value.trunc() {
        format!("{} {unit}", value as u64)
    } else {
        format!("{value:.1} {unit}")
    }
}

/// A parameter count: `268.10M`, `8B`, `3.2B`, `137K`.
pub fn human_number(n: u64) -> String {
    let v = n as f64;
    if n >= 1_000_000_000 {
        let b = v / 1e9;
        if b == b.floor() {
            format!("{b:.0}B")
        } else {
            format!("{b:.1}B")
        }
    } else if n >= 1_000_000 {
        let m = v / 1e6;
        if m == m.floor() {
            format!("{m:.0}M")
        } else {
            format!("{m:.2}M")
        }
    } else if n >= 1_000 {
        format!("{:.0}K", v / 1e3)
    } else {
        n.to_string()
    }
}

/// A span of time in words: `Less than a second`, `2 minutes`, `3 weeks`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => return "Less than a second".into(),
        1 => return "1 second".into(),
        2..=59 => return format!("{secs} seconds"),
        _ => {}
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    match hours {
        1 => "About an hour".into(),
        h if h < 48 => format!("{h} hours"),
        h if h < 24 * 7 * 2 => format!("{} days", h / 24),
        h if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        h if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        h => format!("{} years", h / 24 / 365),
    }
}

/// A point in time relative to `now`: `2 minutes ago`, `4 minutes from
/// now`, or `Forever` for the far-future time that stands for "never
/// expires" (more than 20 years ahead, as Ollama decides).
pub fn human_time(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(ago) => format!("{} ago", human_duration(ago)),
        Err(ahead) => {
            let ahead = ahead.duration();
            if ahead > Duration::from_secs(20 * 365 * 24 * 3600) {
                "Forever".into()
            } else {
                format!("{} from now", human_duration(ahead))
            }
        }
    }
}

/// Parses an RFC 3339 time such as `2026-08-21T10:04:05.123456789Z` or
/// with a `+02:00` offset. Returns `None` for anything else; callers show
/// a placeholder rather than fail a listing over one odd date.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        let text = &frac[..digits.min(9)];
        nanos = text.parse::<u32>().ok()? * 10u32.pow(9 - text.len() as u32);
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let base = SystemTime::UNIX_EPOCH;
    if secs >= 0 {
        base.checked_add(Duration::new(secs as u64, nanos))
    } else {
        base.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
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

/// Lays rows out in left-aligned columns separated by four spaces, as
/// Ollama's table writer does (no borders, no header rule).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 4;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        let check = |b: u64, expected: &str| assert_eq!(human_bytes(b), expected, "{b}");
        check(512, "512 B");
        check(1_000, "1 KB");
        check(1_500, "1.5 KB");
        check(253_000_000, "253 MB");
        check(291_548_672, "291 MB");
        check(2_019_393_189, "2.0 GB");
        check(1_200_000_000, "1.2 GB");
    }

    #[test]
    fn numbers() {
        let check = |n: u64, expected: &str| assert_eq!(human_number(n), expected, "{n}");
        check(268_098_176, "268.10M");
        check(8_000_000_000, "8B");
        check(3_212_749_888, "3.2B");
        check(137_000, "137K");
        check(999, "999");
    }

    #[test]
    fn times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let check = |offset: i64, expected: &str| {
            let t = if offset >= 0 {
                now + Duration::from_secs(offset as u64)
            } else {
                now - Duration::from_secs(offset.unsigned_abs())
            };
            assert_eq!(human_time(t, now), expected, "{offset}");
        };
        check(-120, "2 minutes ago");
        check(-30, "30 seconds ago");
        check(-70, "About a minute ago");
        check(-3 * 86_400, "3 days ago");
        check(240, "4 minutes from now");
        check(300 * 365 * 86_400, "Forever");
    }

    #[test]
    fn rfc3339() {
        let check = |s: &str, secs: Option<u64>| {
            let got = parse_rfc3339(s)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            assert_eq!(got, secs, "{s}");
        };
        check("1970-01-01T00:00:00Z", Some(0));
        check("2026-08-21T10:04:05.123456789Z", Some(1_787_306_645));
        check("2026-08-21T12:04:05+02:00", Some(1_787_306_645));
        check("2318-01-01T00:00:00Z", Some(10_981_785_600));
        check("yesterday", None);
    }

    #[test]
    fn tables() {
        let rows = vec![
            vec!["NAME".to_string(), "ID".to_string(), "SIZE".to_string()],
            vec![
                "gemma3:270m".to_string(),
                "abc".to_string(),
                "253 MB".to_string(),
            ],
        ];
        assert_eq!(
            table(&rows),
            "NAME           ID     SIZE\ngemma3:270m    abc    253 MB\n"
        );
    }
}
