//! Human durations as operators write them: `500ms`, `90s`, `30m`, `12h`, `7d`, `1h30m`.

use std::time::Duration;

/// Parses a human duration. Units: `ms`, `s`, `m`, `h`, `d`; parts may be chained
/// (`1h30m`). A bare number is refused: a unit-less TTL is a classic typo.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected a duration such as 30s, 15m, 12h or 7d".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (expected e.g. 30s, 15m, 12h, 7d)"
            ));
        }
        let (num, after) = rest.split_at(digits);
        let value: u128 = num
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = after.split_at(unit_len);
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` needs a unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        total = total
            .checked_add(value.saturating_mul(millis_per_unit))
            .ok_or_else(|| format!("`{text}`: duration too large"))?;
        rest = tail;
    }
    let millis = u64::try_from(total).map_err(|_| format!("`{text}`: duration too large"))?;
    Ok(Duration::from_millis(millis))
}

/// Formats a duration back in the largest exact unit (`7d`, `90m`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_chains() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "10",
            "ten",
            "5y",
            "m5",
            "1h-2m",
            "99999999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats_in_largest_unit() {
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "90m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
