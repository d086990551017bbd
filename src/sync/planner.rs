//! The upload planner (DESIGN.md 4.6, issue 4): pure, no I/O.
//!
//! Input: one audience's pending records in queue (FIFO) order, already
//! coalesced per (audience, externalUserId) by the store. Output: request
//! batches that respect Amazon's limits — at most `max_records` records
//! (1–10,000, AMC Audiences API `POST /amc/audiences/records`) and at most
//! `max_body_bytes` of encoded request body — without reordering records
//! (a later change for the same user can never overtake an earlier one, and
//! the store's coalescing guarantees one record per user anyway).

/// Amazon's per-request record limit (AMC Audiences API).
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// Planner limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records per request, clamped to 1..=[`MAX_RECORDS_PER_REQUEST`].
    pub max_records: usize,
    /// Encoded body bytes per request (default 4,000,000).
    pub max_body_bytes: usize,
    /// Bytes of the body envelope around the records
    /// (`{"audienceId":…,"records":[` … `]}`).
    pub envelope_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: MAX_RECORDS_PER_REQUEST,
            max_body_bytes: 4_000_000,
            envelope_bytes: 64,
        }
    }
}

/// One planned request: indexes into the input slice, in order, and the
/// estimated body size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Range of input indexes `start..end` (contiguous: order is preserved).
    pub range: std::ops::Range<usize>,
    /// Estimated encoded body size, bytes.
    pub body_bytes: usize,
}

/// A record that alone exceeds the byte cap (it can never be sent as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// Index in the input.
    pub index: usize,
    /// Its encoded size, bytes.
    pub bytes: usize,
}

/// Splits `n` records into batches. `size_of(i)` is the encoded size of record
/// `i` in bytes (without the separating comma). Records too large for any
/// request are reported in `oversized` and skipped (the caller dead-letters
/// them); every other index appears in exactly one batch, in order.
pub fn plan(
    n: usize,
    limits: Limits,
    size_of: impl Fn(usize) -> usize,
) -> (Vec<Batch>, Vec<Oversized>) {
    let max_records = limits.max_records.clamp(1, MAX_RECORDS_PER_REQUEST);
    let mut batches = Vec::new();
    let mut oversized = Vec::new();
    let mut start = 0usize;
    let mut count = 0usize;
    let mut bytes = limits.envelope_bytes;
    let mut i = 0usize;
    while i < n {
        let s = size_of(i);
        if limits.envelope_bytes + s > limits.max_body_bytes {
            // Close the current batch before the oversized record.
            if count > 0 {
                batches.push(Batch {
                    range: start..i,
                    body_bytes: bytes,
                });
            }
            oversized.push(Oversized { index: i, bytes: s });
            i += 1;
            start = i;
            count = 0;
            bytes = limits.envelope_bytes;
            continue;
        }
        let sep = usize::from(count > 0);
        if count == max_records || bytes + sep + s > limits.max_body_bytes {
            batches.push(Batch {
                range: start..i,
                body_bytes: bytes,
            });
            start = i;
            count = 0;
            bytes = limits.envelope_bytes;
            continue; // re-examine record i in the new batch
        }
        bytes += sep + s;
        count += 1;
        i += 1;
    }
    if count > 0 {
        batches.push(Batch {
            range: start..n,
            body_bytes: bytes,
        });
    }
    (batches, oversized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_input_plans_nothing() {
        let (b, o) = plan(0, Limits::default(), |_| 100);
        assert!(b.is_empty() && o.is_empty());
    }

    #[test]
    fn ten_thousand_records_fit_one_request_and_one_more_spills() {
        let (b, _) = plan(10_000, Limits::default(), |_| 300);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].range, 0..10_000);
        let (b, _) = plan(10_001, Limits::default(), |_| 300);
        assert_eq!(
            b.iter().map(|x| x.range.len()).collect::<Vec<_>>(),
            vec![10_000, 1]
        );
    }

    #[test]
    fn byte_cap_splits_before_the_record_that_would_overflow() {
        let limits = Limits {
            max_records: 10_000,
            max_body_bytes: 1_000,
            envelope_bytes: 50,
        };
        // 50 + 300 + 1 + 300 + 1 + 300 = 952; a fourth record would overflow.
        let (b, o) = plan(7, limits, |_| 300);
        assert!(o.is_empty());
        assert_eq!(
            b.iter().map(|x| x.range.clone()).collect::<Vec<_>>(),
            vec![0..3, 3..6, 6..7]
        );
        assert!(b.iter().all(|x| x.body_bytes <= 1_000));
    }

    #[test]
    fn an_oversized_record_is_reported_and_order_is_kept() {
        let limits = Limits {
            max_records: 10,
            max_body_bytes: 1_000,
            envelope_bytes: 50,
        };
        let sizes = [100, 100, 5_000, 100];
        let (b, o) = plan(4, limits, |i| sizes[i]);
        assert_eq!(
            o,
            vec![Oversized {
                index: 2,
                bytes: 5_000
            }]
        );
        assert_eq!(
            b.iter().map(|x| x.range.clone()).collect::<Vec<_>>(),
            vec![0..2, 3..4]
        );
    }

    proptest! {
        #[test]
        fn every_record_is_planned_once_in_order_within_limits(
            sizes in proptest::collection::vec(1usize..3_000, 0..500),
            max_records in 1usize..50,
            max_body in 500usize..20_000,
        ) {
            let limits = Limits { max_records, max_body_bytes: max_body, envelope_bytes: 40 };
            let (batches, oversized) = plan(sizes.len(), limits, |i| sizes[i]);
            let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.range.clone()).collect();
            seen.extend(oversized.iter().map(|o| o.index));
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..sizes.len()).collect::<Vec<_>>());
            let mut last_end = 0;
            for b in &batches {
                prop_assert!(!b.range.is_empty());
                prop_assert!(b.range.start >= last_end);
                last_end = b.range.end;
                prop_assert!(b.range.len() <= max_records);
                let body: usize = 40 + b.range.clone().map(|i| sizes[i]).sum::<usize>() + b.range.len() - 1;
                prop_assert_eq!(body, b.body_bytes);
                prop_assert!(body <= max_body);
            }
            for o in &oversized {
                prop_assert!(40 + o.bytes > max_body);
            }
        }
    }
}
