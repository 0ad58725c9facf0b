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

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0 (never). A value
/// past what a calendar date can hold (year 9999) is shown as the raw number.
pub fn format_usec(usec: u64) -> String {
    if usec == 0 {
        return "-".into();
    }
    match i64::try_from(usec)
        .ok()
        .and_then(|u| jiff::Timestamp::from_microsecond(u).ok())
    {
        Some(at) => at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{usec} µs after the epoch"),
    }
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
        assert_eq!(
            format_usec(u64::MAX),
            "18446744073709551615 µs after the epoch"
        );
    }

    #[test]
    fn tables_align_and_trim() {
        let t = table(Some(&["A", "BB"]), &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(table(None, &[]), "");
    }
}
