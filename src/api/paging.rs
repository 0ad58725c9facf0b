//! Bounds on what one approvals reply carries: rows, bytes, and an admin's note.

use super::{ApprovalRecord, Error};

pub(super) fn check_note(note: &str) -> Result<(), Error> {
    if note.len() > MAX_NOTE {
        return Err(Error::InvalidArgument(format!(
            "note of {} bytes: at most {MAX_NOTE}",
            note.len()
        )));
    }
    Ok(())
}

/// Most approvals one reply carries.
pub const PAGE_ROWS: u32 = 1000;

/// Most text one reply carries (payloads, notes, …), far below the bus's message limit
/// (32 MiB on the system bus by default): a page ends early once its rows reach it.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Cuts `rows` to at most [`PAGE_BYTES`] of text (always keeping one row), and returns
/// the id to continue after, or 0 when the listing is done.
pub fn bound_page(mut rows: Vec<ApprovalRecord>, asked: usize) -> (Vec<ApprovalRecord>, i64) {
    let size = |r: &ApprovalRecord| {
        r.agent.len()
            + r.kind.len()
            + r.payload.len()
            + r.status.len()
            + r.note.len()
            + r.decided_by.len()
            + 64
    };
    let mut total = 0;
    let mut keep = rows.len();
    for (i, r) in rows.iter().enumerate() {
        total += size(r);
        if total > PAGE_BYTES && i > 0 {
            keep = i;
            break;
        }
    }
    let cut = keep < rows.len();
    rows.truncate(keep);
    let next = if cut || (asked > 0 && rows.len() >= asked) {
        rows.last().map_or(0, |r| r.id)
    } else {
        0
    };
    (rows, next)
}

/// The longest note an admin may give with a decision.
pub const MAX_NOTE: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, payload_len: usize) -> ApprovalRecord {
        ApprovalRecord {
            id,
            agent: "alice".into(),
            kind: "spec_change".into(),
            payload: "x".repeat(payload_len),
            status: "pending".into(),
            note: String::new(),
            decided_by: String::new(),
            created_at: 1,
            decided_at: 0,
            finished_at: 0,
        }
    }

    #[test]
    fn a_page_ends_at_its_row_count_or_its_byte_budget() {
        // Fewer rows than asked: the listing is done.
        let (rows, next) = bound_page((1..=3).map(|i| record(i, 10)).collect(), 5);
        assert_eq!((rows.len(), next), (3, 0));
        // As many as asked: there may be more, continue after the last.
        let (rows, next) = bound_page((1..=5).map(|i| record(i, 10)).collect(), 5);
        assert_eq!((rows.len(), next), (5, 5));
        // Rows of 64 KiB (older than the 4 KiB cap): cut at about PAGE_BYTES.
        let big: Vec<_> = (1..=1000).map(|i| record(i, 64 * 1024)).collect();
        let (rows, next) = bound_page(big, 1000);
        let bytes: usize = rows.iter().map(|r| r.payload.len()).sum();
        assert!(bytes <= PAGE_BYTES && rows.len() < 1000, "{bytes}");
        assert_eq!(next, rows.last().unwrap().id);
        // One row larger than the budget still goes out alone, so a listing always moves on.
        let (rows, next) = bound_page(vec![record(7, PAGE_BYTES + 1), record(8, 1)], 1000);
        assert_eq!((rows.len(), next), (1, 7));
    }
}
