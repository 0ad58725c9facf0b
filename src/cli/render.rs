//! Output helpers: plain tables (no colour, no pager) and timestamps.

/// Left-aligned columns separated by two spaces, like systemctl's tables.
pub fn table(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let cols = header
        .map(|h| h.len())
        .or_else(|| rows.first().map(Vec::len))
        .unwrap_or(0);
    let mut width = vec![0usize; cols];
    let all = header
        .map(|h| h.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .into_iter()
        .chain(rows.iter().cloned());
    let all: Vec<Vec<String>> = all.collect();
    for row in &all {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(cols) {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = width[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0 (never).
pub fn format_usec(usec: u64) -> String {
    if usec == 0 {
        return "-".into();
    }
    let secs = usec / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_usec(0), "-");
        assert_eq!(format_usec(1_000_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(
            format_usec(1_795_000_000_000_000),
            "2026-11-18 11:06:40 UTC"
        );
        assert_eq!(format_usec(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn tables_align_and_trim() {
        let t = table(Some(&["A", "BB"]), &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(table(None, &[]), "");
    }
}
