//! `amc-sync dead-letters retry`: re-queues dead letters whose hashed
//! payload is complete (a change that was queued and then refused, e.g. by
//! Amazon). Dead letters from mapping (bad input) carry no payload by
//! design — the raw input is never kept — so they cannot be retried; the
//! source must send them again, corrected.

use serde::Serialize;

use super::{DeadLetterFilter, IncomingItem, Store, StoreError};
use crate::model::{MemberChange, Source};

/// What a retry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryOutcome {
    /// Dead letters put back in the queue.
    pub requeued: u64,
    /// Dead letters without a complete hashed payload (input errors): left as they are.
    pub not_retryable: u64,
    /// Re-queued changes that were older than the user's current state (dropped as stale).
    pub stale: u64,
}

impl Store {
    /// Re-queues the not-yet-retried dead letters matching `filter` (its
    /// `retried` field is ignored) — or only `ids` when given — and marks
    /// them retried, in one transaction per batch of 1,000.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn retry_dead_letters(
        &mut self,
        filter: &DeadLetterFilter,
        ids: Option<&[i64]>,
    ) -> Result<RetryOutcome, StoreError> {
        let mut out = RetryOutcome::default();
        let mut f = filter.clone();
        f.retried = Some(false);
        f.limit = 1_000;
        loop {
            let batch = self.dead_letters(&f)?;
            let Some(last) = batch.last() else { break };
            f.after_id = last.id;
            let mut items = Vec::new();
            let mut marked = Vec::new();
            for d in batch {
                if ids.is_some_and(|ids| !ids.contains(&d.id)) {
                    continue;
                }
                let change = d.payload.as_ref().and_then(|p| {
                    Some(MemberChange {
                        audience_key: p.audience_key.clone()?,
                        external_user_id: p.external_user_id.clone()?,
                        action: p.action?,
                        event_time_ms: p.event_time_ms?,
                        country_code: p.country_code.clone()?,
                        hashed_pii: p.hashed_pii.first().cloned().filter(|h| !h.is_empty())?,
                        user_consent: p.user_consent.clone(),
                    })
                });
                match change {
                    Some(c) => {
                        // Every identifier object of the payload, not just the first.
                        let extra: Vec<_> = d
                            .payload
                            .as_ref()
                            .map_or(Vec::new(), |p| p.hashed_pii[1..].to_vec());
                        for h in extra.into_iter().filter(|h| !h.is_empty()) {
                            let mut c2 = c.clone();
                            c2.hashed_pii = h;
                            items.push(IncomingItem::change(c2, Source::File));
                        }
                        items.push(IncomingItem::change(c, Source::File));
                        marked.push(d.id);
                    }
                    None => out.not_retryable += 1,
                }
            }
            if !items.is_empty() {
                let o = self.enqueue_batch(&items)?;
                out.stale += o.stale;
                out.requeued += marked.len() as u64;
                self.mark_dead_letters_retried(&marked)?;
            }
        }
        Ok(out)
    }
}
