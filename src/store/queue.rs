//! The pending queue: group-committed enqueue with coalescing, FIFO dequeue,
//! acknowledgement.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::{
    AckOutcome, BatchOutcome, DeadLetterPayload, DeadLetterSource, FileCheckpoint, IncomingItem,
    ItemOutcome, MAX_HASHED_PII, NewDeadLetter, PendingRecord, Store, StoreError, audience_row_id,
    now_ms, reason, valid_country_code, valid_external_user_id, valid_hashed_pii,
};
use crate::model::{Action, HashedPii, MemberChange, UserConsent};

/// The pending row as read for coalescing.
struct Existing {
    seq: i64,
    action: Action,
    event_time_ms: i64,
    country_code: String,
    hashed_pii: Vec<HashedPii>,
    user_consent: Option<UserConsent>,
}

/// What to do with a change given the current pending row.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Write the merged row (`dropped` objects did not fit).
    Merge {
        hashed_pii: Vec<HashedPii>,
        event_time_ms: i64,
        country_code: String,
        user_consent: Option<UserConsent>,
        dropped: u64,
    },
    /// Same action, nothing new: no write.
    Unchanged { dropped: u64 },
    /// The change replaces the row.
    Replace,
    /// The change is older with another action: ignore.
    Stale,
}

/// DESIGN 4.5 coalescing rule for one (audience, externalUserId).
fn coalesce(old: &Existing, new: &MemberChange) -> Decision {
    if old.action != new.action {
        return if new.event_time_ms >= old.event_time_ms {
            Decision::Replace
        } else {
            Decision::Stale
        };
    }
    let mut hashed_pii = old.hashed_pii.clone();
    let mut dropped = 0;
    let mut grew = false;
    if !new.hashed_pii.is_empty() && !hashed_pii.contains(&new.hashed_pii) {
        if hashed_pii.len() < MAX_HASHED_PII {
            hashed_pii.push(new.hashed_pii.clone());
            grew = true;
        } else {
            dropped = 1;
        }
    }
    let newer = new.event_time_ms > old.event_time_ms;
    let (country_code, user_consent) = if new.event_time_ms >= old.event_time_ms {
        (new.country_code.clone(), new.user_consent.clone())
    } else {
        (old.country_code.clone(), old.user_consent.clone())
    };
    if !grew && !newer && country_code == old.country_code && user_consent == old.user_consent {
        return Decision::Unchanged { dropped };
    }
    Decision::Merge {
        hashed_pii,
        event_time_ms: old.event_time_ms.max(new.event_time_ms),
        country_code,
        user_consent,
        dropped,
    }
}

fn message_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn to_i64(v: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        field,
        reason: "exceeds i64::MAX",
    })
}

pub(super) fn write_checkpoint(
    conn: &Connection,
    cp: &FileCheckpoint,
    now: i64,
) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(
        "INSERT INTO files (fingerprint, path, byte_offset, rows_ok, rows_rejected, state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (fingerprint) DO UPDATE SET path = excluded.path,
             byte_offset = excluded.byte_offset, rows_ok = excluded.rows_ok,
             rows_rejected = excluded.rows_rejected, state = excluded.state,
             updated_at = excluded.updated_at",
    )?;
    st.execute(params![
        cp.fingerprint,
        cp.path,
        to_i64(cp.byte_offset, "byte_offset")?,
        to_i64(cp.rows_ok, "rows_ok")?,
        to_i64(cp.rows_rejected, "rows_rejected")?,
        cp.state.as_str(),
        now
    ])?;
    Ok(())
}

/// Moves acknowledged pending rows (unchanged `seq`) to `membership` inside
/// `tx`; rows whose `seq` changed are kept pending.
pub(crate) fn ack_in(
    tx: &Transaction<'_>,
    audience: i64,
    records: &[(String, i64)],
    now: i64,
) -> Result<AckOutcome, StoreError> {
    let mut out = AckOutcome::default();
    let mut copy = tx.prepare_cached(
        "INSERT INTO membership (audience, external_user_id, action, event_time_ms,
             country_code, hashed_pii, user_consent, uploaded_at)
         SELECT audience, external_user_id, action, event_time_ms, country_code,
             hashed_pii, user_consent, ?4
         FROM pending WHERE seq = ?3 AND audience = ?1 AND external_user_id = ?2
         ON CONFLICT (audience, external_user_id) DO UPDATE SET
             action = excluded.action, event_time_ms = excluded.event_time_ms,
             country_code = excluded.country_code, hashed_pii = excluded.hashed_pii,
             user_consent = excluded.user_consent, uploaded_at = excluded.uploaded_at",
    )?;
    let mut del = tx.prepare_cached(
        "DELETE FROM pending WHERE seq = ?3 AND audience = ?1 AND external_user_id = ?2",
    )?;
    for (ext, seq) in records {
        if copy.execute(params![audience, ext, seq, now])? == 1 {
            del.execute(params![audience, ext, seq])?;
            out.acked += 1;
        } else {
            out.kept += 1;
        }
    }
    Ok(out)
}

pub(crate) fn write_dead_letter(
    tx: &Transaction<'_>,
    dl: &NewDeadLetter,
    now: i64,
) -> Result<(), StoreError> {
    let payload = match &dl.payload {
        Some(p) => Some(serde_json::to_string(&p.clone().sanitized())?),
        None => None,
    };
    let mut st = tx.prepare_cached(
        "INSERT INTO dead_letters (source, reason, message, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    st.execute(params![
        dl.source.as_str(),
        dl.reason,
        dl.message,
        payload,
        now
    ])?;
    Ok(())
}

/// Mutable state of one group commit.
struct Ctx<'a> {
    tx: Transaction<'a>,
    audience_ids: &'a mut HashMap<String, i64>,
    last_seq: i64,
    now: i64,
}

impl Ctx<'_> {
    fn next_seq(&mut self) -> i64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// True if `id` was seen before this submission; records it otherwise.
    fn seen_before(&mut self, id: &str, mine: &mut HashSet<[u8; 32]>) -> Result<bool, StoreError> {
        let h = message_hash(id);
        if mine.contains(&h) {
            return Ok(false);
        }
        let mut st = self.tx.prepare_cached(
            "INSERT INTO seen_messages (message_hash, seen_at) VALUES (?1, ?2)
             ON CONFLICT (message_hash) DO NOTHING",
        )?;
        let inserted = st.execute(params![&h[..], self.now])? == 1;
        if inserted {
            mine.insert(h);
        }
        Ok(!inserted)
    }

    fn refuse(
        &mut self,
        change: &MemberChange,
        source: DeadLetterSource,
        code: &str,
        message: &str,
    ) -> Result<ItemOutcome, StoreError> {
        let dl = NewDeadLetter {
            source,
            reason: code.to_string(),
            message: message.to_string(),
            payload: Some(DeadLetterPayload::from_change(change)),
            message_id: None,
        };
        write_dead_letter(&self.tx, &dl, self.now)?;
        Ok(ItemOutcome::DeadLettered)
    }

    fn apply_change(
        &mut self,
        change: &MemberChange,
        source: DeadLetterSource,
        out: &mut BatchOutcome,
    ) -> Result<ItemOutcome, StoreError> {
        if !valid_external_user_id(&change.external_user_id) {
            return self.refuse(
                change,
                source,
                reason::INVALID_EXTERNAL_USER_ID,
                "externalUserId must match ^[0-9a-zA-Z_-]{1,128}$",
            );
        }
        if !valid_hashed_pii(&change.hashed_pii) {
            return self.refuse(
                change,
                source,
                reason::INVALID_HASHED_PII,
                "hashedPII values must be 64 lowercase hex characters",
            );
        }
        if !valid_country_code(&change.country_code) {
            return self.refuse(
                change,
                source,
                reason::INVALID_COUNTRY_CODE,
                "countryCode must be ISO 3166-1 alpha-2 or UNKNOWN",
            );
        }
        let Some(audience) = audience_row_id(&self.tx, self.audience_ids, &change.audience_key)?
        else {
            return self.refuse(
                change,
                source,
                reason::UNKNOWN_AUDIENCE,
                "no local audience has this key",
            );
        };
        let existing = {
            let mut st = self.tx.prepare_cached(
                "SELECT seq, action, event_time_ms, country_code, hashed_pii, user_consent
                 FROM pending WHERE audience = ?1 AND external_user_id = ?2",
            )?;
            st.query_row(params![audience, change.external_user_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .optional()?
        };
        let Some((seq, action, event_time_ms, country_code, pii_json, consent_json)) = existing
        else {
            if self.stale_against_membership(audience, change)? {
                return Ok(ItemOutcome::Stale);
            }
            self.insert_pending(audience, change)?;
            return Ok(ItemOutcome::Inserted);
        };
        let old = Existing {
            seq,
            action: parse_action(&action)?,
            event_time_ms,
            country_code,
            hashed_pii: serde_json::from_str(&pii_json)?,
            user_consent: match consent_json {
                Some(c) => Some(serde_json::from_str(&c)?),
                None => None,
            },
        };
        match coalesce(&old, change) {
            Decision::Stale => Ok(ItemOutcome::Stale),
            Decision::Unchanged { dropped } => {
                out.pii_dropped += dropped;
                Ok(ItemOutcome::Merged)
            }
            Decision::Replace => {
                let pii = single_pii(&change.hashed_pii);
                self.update_pending(
                    old.seq,
                    change.action,
                    change.event_time_ms,
                    &change.country_code,
                    &pii,
                    change.user_consent.as_ref(),
                )?;
                Ok(ItemOutcome::Replaced)
            }
            Decision::Merge {
                hashed_pii,
                event_time_ms,
                country_code,
                user_consent,
                dropped,
            } => {
                out.pii_dropped += dropped;
                self.update_pending(
                    old.seq,
                    old.action,
                    event_time_ms,
                    &country_code,
                    &hashed_pii,
                    user_consent.as_ref(),
                )?;
                Ok(ItemOutcome::Merged)
            }
        }
    }

    /// An older event with another action than the last uploaded state is stale
    /// (e.g. a late "enter" after an uploaded, newer "exit").
    fn stale_against_membership(
        &mut self,
        audience: i64,
        change: &MemberChange,
    ) -> Result<bool, StoreError> {
        let mut st = self.tx.prepare_cached(
            "SELECT action, event_time_ms FROM membership
             WHERE audience = ?1 AND external_user_id = ?2",
        )?;
        let m = st
            .query_row(params![audience, change.external_user_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        Ok(match m {
            Some((action, t)) => action != change.action.as_str() && change.event_time_ms < t,
            None => false,
        })
    }

    fn insert_pending(&mut self, audience: i64, c: &MemberChange) -> Result<(), StoreError> {
        let seq = self.next_seq();
        let pii = serde_json::to_string(&single_pii(&c.hashed_pii))?;
        let consent = match &c.user_consent {
            Some(u) => Some(serde_json::to_string(u)?),
            None => None,
        };
        let mut st = self.tx.prepare_cached(
            "INSERT INTO pending (seq, audience, external_user_id, action, event_time_ms,
                 country_code, hashed_pii, user_consent, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        st.execute(params![
            seq,
            audience,
            c.external_user_id,
            c.action.as_str(),
            c.event_time_ms,
            c.country_code,
            pii,
            consent,
            self.now
        ])?;
        Ok(())
    }

    fn update_pending(
        &mut self,
        old_seq: i64,
        action: Action,
        event_time_ms: i64,
        country_code: &str,
        hashed_pii: &[HashedPii],
        user_consent: Option<&UserConsent>,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq();
        let pii = serde_json::to_string(hashed_pii)?;
        let consent = match user_consent {
            Some(u) => Some(serde_json::to_string(u)?),
            None => None,
        };
        let mut st = self.tx.prepare_cached(
            "UPDATE pending SET seq = ?2, action = ?3, event_time_ms = ?4, country_code = ?5,
                 hashed_pii = ?6, user_consent = ?7, updated_at = ?8
             WHERE seq = ?1",
        )?;
        st.execute(params![
            old_seq,
            seq,
            action.as_str(),
            event_time_ms,
            country_code,
            pii,
            consent,
            self.now
        ])?;
        Ok(())
    }

    fn apply_submission(&mut self, items: &[IncomingItem]) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        let mut mine = HashSet::new();
        for item in items {
            let o = match item {
                IncomingItem::Change {
                    change,
                    message_id,
                    source,
                } => {
                    if let Some(id) = message_id
                        && self.seen_before(id, &mut mine)?
                    {
                        ItemOutcome::Duplicate
                    } else {
                        self.apply_change(change, (*source).into(), &mut out)?
                    }
                }
                IncomingItem::DeadLetter(dl) => {
                    if let Some(id) = &dl.message_id
                        && self.seen_before(id, &mut mine)?
                    {
                        ItemOutcome::Duplicate
                    } else {
                        write_dead_letter(&self.tx, dl, self.now)?;
                        ItemOutcome::DeadLettered
                    }
                }
                IncomingItem::FileCheckpoint(cp) => {
                    write_checkpoint(&self.tx, cp, self.now)?;
                    ItemOutcome::Checkpointed
                }
            };
            out.push(o);
        }
        Ok(out)
    }
}

fn single_pii(p: &HashedPii) -> Vec<HashedPii> {
    if p.is_empty() {
        Vec::new()
    } else {
        vec![p.clone()]
    }
}

fn parse_action(s: &str) -> Result<Action, StoreError> {
    Action::parse(s).ok_or(StoreError::Invalid {
        field: "pending.action",
        reason: "stored action is neither CREATE nor DELETE",
    })
}

impl Store {
    /// Commits `items` in one transaction (one fsync) and returns what
    /// happened to each.
    ///
    /// Changes are coalesced per (audience, externalUserId) with the pending
    /// row (DESIGN 4.5, see [`ItemOutcome`]); a change the store refuses
    /// (unknown audience, malformed id/digest/country) becomes a dead letter
    /// and never fails its siblings. Items are applied in order, so later
    /// items see earlier ones.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`], [`StoreError::Sqlite`],
    /// [`StoreError::CorruptJson`]: nothing of the batch is committed.
    pub fn enqueue_batch(&mut self, items: &[IncomingItem]) -> Result<BatchOutcome, StoreError> {
        let mut outs = self.commit_group(&[items])?;
        Ok(outs.pop().unwrap_or_default())
    }

    /// Commits several submissions in ONE transaction; one outcome per
    /// submission. messageId dedup is per submission (see
    /// [`IncomingItem::Change`]).
    pub(crate) fn commit_group(
        &mut self,
        submissions: &[&[IncomingItem]],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let now = now_ms();
        let start_seq = self.last_seq;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ctx = Ctx {
            tx,
            audience_ids: &mut self.audience_ids,
            last_seq: start_seq,
            now,
        };
        let result = (|| {
            let mut outs = Vec::with_capacity(submissions.len());
            for items in submissions {
                outs.push(ctx.apply_submission(items)?);
            }
            if ctx.last_seq != start_seq {
                ctx.tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'last_seq'",
                    [ctx.last_seq],
                )?;
            }
            Ok::<_, StoreError>(outs)
        })();
        let outs = result?;
        let last_seq = ctx.last_seq;
        ctx.tx.commit()?;
        self.last_seq = last_seq;
        self.commits += 1;
        Ok(outs)
    }

    /// Up to `max_records` pending records of audience `audience_key` with
    /// `seq > after_seq`, by increasing seq (FIFO). Uses the
    /// `(audience, seq)` index: O(batch), whatever the queue length. Pass the
    /// last returned seq as `after_seq` to page; 0 starts at the head.
    ///
    /// # Errors
    /// [`StoreError::UnknownAudience`]; SQLite errors;
    /// [`StoreError::CorruptJson`].
    pub fn pending_batch(
        &mut self,
        audience_key: &str,
        max_records: usize,
        after_seq: i64,
    ) -> Result<Vec<PendingRecord>, StoreError> {
        let audience = self.audience_or_err(audience_key)?;
        let limit = i64::try_from(max_records).unwrap_or(i64::MAX);
        let mut st = self.conn.prepare_cached(
            "SELECT seq, external_user_id, action, event_time_ms, country_code, hashed_pii,
                 user_consent, updated_at
             FROM pending WHERE audience = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![audience, after_seq, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, ext, action, event_time_ms, country_code, pii, consent, updated) = row?;
            out.push(PendingRecord {
                seq,
                external_user_id: ext,
                action: parse_action(&action)?,
                event_time_ms,
                country_code,
                hashed_pii: serde_json::from_str(&pii)?,
                user_consent: match consent {
                    Some(c) => Some(serde_json::from_str(&c)?),
                    None => None,
                },
                updated_at_ms: updated,
            });
        }
        Ok(out)
    }

    /// Records that Amazon accepted these records: for each
    /// `(external_user_id, seq)`, if the pending row still has that seq it is
    /// copied to `membership` (upsert) and deleted; if it changed since it was
    /// dequeued (new seq) it is kept for the next upload. One transaction.
    ///
    /// # Errors
    /// [`StoreError::UnknownAudience`]; [`StoreError::DiskFull`]; SQLite errors.
    pub fn ack_uploaded(
        &mut self,
        audience_key: &str,
        records: &[(String, i64)],
    ) -> Result<AckOutcome, StoreError> {
        let audience = self.audience_or_err(audience_key)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = ack_in(&tx, audience, records, now_ms())?;
        tx.commit()?;
        Ok(out)
    }
    fn audience_or_err(&mut self, key: &str) -> Result<i64, StoreError> {
        self.audience_row_id(key)?
            .ok_or_else(|| StoreError::UnknownAudience {
                key: key.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pii(email: char) -> HashedPii {
        HashedPii {
            email: Some(email.to_string().repeat(64)),
            ..HashedPii::default()
        }
    }

    fn change(action: Action, t: i64, p: HashedPii) -> MemberChange {
        MemberChange {
            audience_key: "a".into(),
            external_user_id: "u1".into(),
            action,
            event_time_ms: t,
            country_code: "US".into(),
            hashed_pii: p,
            user_consent: None,
        }
    }

    fn existing(action: Action, t: i64, p: Vec<HashedPii>) -> Existing {
        Existing {
            seq: 1,
            action,
            event_time_ms: t,
            country_code: "US".into(),
            hashed_pii: p,
            user_consent: None,
        }
    }

    #[test]
    fn coalesce_rules() {
        let old = existing(Action::Create, 10, vec![pii('a')]);
        assert_eq!(
            coalesce(&old, &change(Action::Delete, 11, pii('b'))),
            Decision::Replace
        );
        assert_eq!(
            coalesce(&old, &change(Action::Delete, 10, pii('b'))),
            Decision::Replace
        );
        assert_eq!(
            coalesce(&old, &change(Action::Delete, 9, pii('b'))),
            Decision::Stale
        );
        assert_eq!(
            coalesce(&old, &change(Action::Create, 10, pii('a'))),
            Decision::Unchanged { dropped: 0 }
        );
        match coalesce(&old, &change(Action::Create, 5, pii('b'))) {
            Decision::Merge {
                hashed_pii,
                event_time_ms,
                ..
            } => {
                assert_eq!(hashed_pii, vec![pii('a'), pii('b')]);
                assert_eq!(event_time_ms, 10, "newest event time is kept");
            }
            d => panic!("unexpected {d:?}"),
        }
    }

    #[test]
    fn coalesce_caps_at_100() {
        let full: Vec<HashedPii> = (0..100)
            .map(|i| HashedPii {
                phone: Some(format!("{i:064x}")),
                ..HashedPii::default()
            })
            .collect();
        let old = existing(Action::Create, 10, full);
        assert_eq!(
            coalesce(&old, &change(Action::Create, 10, pii('b'))),
            Decision::Unchanged { dropped: 1 }
        );
    }
}
