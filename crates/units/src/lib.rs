//! Units every layer of imgbuild shares, written once: calendar dates from Unix seconds (the
//! proleptic Gregorian calendar, UTC), sizes for people (`529.0 MiB`), sizes from text
//! (`8GiB`, `2GB`), and errors for people (`outer: inner: innermost`). No dependencies, no
//! clock: pure functions.

#![warn(missing_docs)]

/// Days from 1970-01-01 to the given proleptic Gregorian date (month 1-12, day 1-31).
pub const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of day `z` counted from 1970-01-01: (year, month 1-12, day 1-31).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are proven small: 1 <= day <= 31, 1 <= month <= 12.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A Unix time as a UTC date and time of day: (year, month, day, hour, minute, second).
pub fn utc(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    // rem < 86400: every part fits.
    let part = |v: i64| u32::try_from(v).unwrap_or(0);
    (
        y,
        m,
        d,
        part(rem / 3600),
        part(rem % 3600 / 60),
        part(rem % 60),
    )
}

/// `YYYY-MM-DD` (UTC).
pub fn date(secs: i64) -> String {
    let (y, m, d, ..) = utc(secs);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM` (UTC).
pub fn date_time(secs: i64) -> String {
    let (y, m, d, h, min, _) = utc(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}")
}

/// `512 B`, `4.0 KiB`, `529.0 MiB`, `2.1 GiB`: a size for people, in powers of 1024.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    // For display only: f64's 53-bit mantissa is plenty for one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parse a size as coreutils does: `123` (bytes), binary `4K`/`4KiB`, `8M`/`8MiB`,
/// `1.5G`/`1.5GiB`, `1T`/`1TiB` (powers of 1024), decimal `8KB`, `8MB`, `2GB`, `1TB` (powers
/// of 1000: an "8GB" image fits an 8 GB card). Units are case-insensitive but for `B`/`iB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let (prefix, suffix) = match unit.char_indices().nth(1) {
        Some((i, _)) => unit.split_at(i),
        None => (unit, ""),
    };
    let exp = match prefix.to_ascii_lowercase().as_str() {
        "" | "b" if suffix.is_empty() => Some(0),
        "k" => Some(1),
        "m" => Some(2),
        "g" => Some(3),
        "t" => Some(4),
        _ => None,
    };
    let base: Option<u64> = match suffix {
        "" | "iB" | "ib" => Some(1024),
        "B" | "b" => Some(1000),
        _ => None,
    };
    let (Some(exp), Some(base)) = (exp, base) else {
        return Err(format!(
            "`{s}`: unknown size unit `{unit}` (use K, M, G, T or KiB, MiB, GiB, TiB for powers \
             of 1024, KB, MB, GB, TB for powers of 1000)"
        ));
    };
    let mult = base.pow(exp);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size"));
    }
    if !num.contains('.') {
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large"));
    }
    // A fractional size: exact enough in f64 for any disk (rounded to whole bytes).
    #[allow(clippy::cast_precision_loss)]
    let v = num
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is not a size"))?
        * mult as f64;
    if !(0.0..1.8e19).contains(&v) {
        return Err(format!("`{s}` is out of range"));
    }
    // In range and rounded: the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v.round() as u64)
}

/// `e` and every error below it, `outer: inner: innermost`: how an error is told to people,
/// by the CLI and in report text (a warning, a JSON field), so no cause is lost. Our own
/// errors chain their source without printing it; third-party errors often print it too, so
/// a cause whose text the message already ends with is not repeated, and a cause that
/// restates the previous one with a prefix (`Error code 26: file is not a database`)
/// replaces it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut last = String::new();
    let mut cur = Some(e);
    while let Some(cause) = cur {
        let s = cause.to_string();
        if msg.ends_with(&s) {
            // Already said.
        } else if !last.is_empty() && s.ends_with(&last) && msg.ends_with(&last) {
            msg.truncate(msg.len() - last.len());
            msg.push_str(&s);
        } else {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
        last = s;
        cur = cause.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chains_say_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = |m: &'static str, s: Option<E>| E(m, s.map(Box::new));
        let plain = e("outer", Some(e("inner", Some(e("innermost", None)))));
        assert_eq!(super::error_chain(&plain), "outer: inner: innermost");
        // A source already printed by its parent (rusqlite's style) is not repeated.
        let printed = e("db: broken: bad page", Some(e("bad page", None)));
        assert_eq!(super::error_chain(&printed), "db: broken: bad page");
        // A source restating its parent's text with a prefix replaces it.
        let restated = e(
            "db",
            Some(e(
                "file is not a database",
                Some(e("Error code 26: file is not a database", None)),
            )),
        );
        assert_eq!(
            super::error_chain(&restated),
            "db: Error code 26: file is not a database"
        );
    }

    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1980, 1, 1) * 86_400, 315_532_800);
        assert_eq!(date(315_532_800), "1980-01-01");
        assert_eq!(date_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(date(-1), "1969-12-31");
        for z in [-800_000i64, -1, 0, 59, 60, 11_016, 47_482, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), z, "{z}");
        }
        assert_eq!(utc(4_354_819_198), (2107, 12, 31, 23, 59, 58));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(4096), "4.0 KiB");
        assert_eq!(human_size(554_696_704), "529.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4kB"), Ok(4000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("3Gi").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
