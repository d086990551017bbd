//! Upload bookkeeping for the sync engine: jobs (`jobRequestId`s) awaiting a
//! terminal state, records Amazon refused (moved to dead letters), and
//! per-audience upload counts. Only hashed data is stored here too.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{
    AckOutcome, DeadLetterPayload, DeadLetterSource, NewDeadLetter, Store, StoreError, now_ms,
    queue::{ack_in, write_dead_letter},
};
use crate::model::{Action, HashedPii, UserConsent};

/// Marker for records of a job that ended FAILED.
const JOB_FAILED: &str = "\u{0}job failed";

/// Largest stored length of an Amazon error message (characters).
const MAX_MESSAGE_CHARS: usize = 500;

/// An upload job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Local row id.
    pub id: i64,
    /// Local audience key.
    pub audience_key: String,
    /// Amazon's `jobRequestId`.
    pub job_request_id: String,
    /// Records sent in the request.
    pub records: u64,
    /// Last known `jobState` (`PENDING`, `SUCCEEDED`, …).
    pub state: String,
    /// Records Amazon reported in `invalidRecords`.
    pub invalid: u64,
    /// Status polls so far.
    pub polls: u64,
    /// When the records were accepted (202), ms since the epoch.
    pub created_at_ms: i64,
    /// Last state change or poll, ms since the epoch.
    pub updated_at_ms: i64,
}

/// Per-audience upload counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCounts {
    /// Users whose latest change Amazon accepted (rows in `membership`).
    pub uploaded: u64,
    /// Records Amazon refused (dead letters from uploads).
    pub failed: u64,
    /// Jobs not yet in a terminal state.
    pub open_jobs: u64,
}

/// A stored row: action, event time (ms), country, `hashed_pii` JSON, `user_consent` JSON.
type StoredRow = (String, i64, String, String, Option<String>);

/// The dead-letter payload (hashed data only) for a `pending` or
/// `membership` row.
fn payload_from_row(audience_key: &str, ext: &str, row: StoredRow) -> DeadLetterPayload {
    let (action, t, cc, pii, consent) = row;
    DeadLetterPayload {
        audience_key: Some(audience_key.to_string()),
        external_user_id: Some(ext.to_string()),
        action: Action::parse(&action),
        event_time_ms: Some(t),
        country_code: Some(cc),
        hashed_pii: serde_json::from_str::<Vec<HashedPii>>(&pii).unwrap_or_default(),
        user_consent: consent.and_then(|c| serde_json::from_str::<UserConsent>(&c).ok()),
        line: None,
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_MESSAGE_CHARS).collect()
}

impl Store {
    /// Completes an accepted upload (202 `jobRequestId`) in ONE transaction:
    /// acknowledges the sent records (pending → `membership`, unless a newer
    /// change arrived meanwhile: that one stays pending) and records the job
    /// and the users it carried for polling. A crash before this commit
    /// re-sends the batch later (at-least-once), never loses it.
    ///
    /// # Errors
    /// [`StoreError::UnknownAudience`], SQLite errors.
    pub fn complete_upload(
        &mut self,
        audience_key: &str,
        sent: &[(String, i64)],
        job_request_id: &str,
    ) -> Result<AckOutcome, StoreError> {
        let audience =
            self.audience_row_id(audience_key)?
                .ok_or_else(|| StoreError::UnknownAudience {
                    key: audience_key.to_string(),
                })?;
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = ack_in(&tx, audience, sent, now)?;
        let inserted = tx.execute(
            "INSERT INTO jobs (audience, job_request_id, records, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'PENDING', ?4, ?4)
             ON CONFLICT (job_request_id) DO NOTHING",
            params![
                audience,
                job_request_id,
                i64::try_from(sent.len()).unwrap_or(i64::MAX),
                now
            ],
        )?;
        if inserted == 1 {
            let job = tx.last_insert_rowid();
            let mut st = tx.prepare_cached(
                "INSERT INTO job_records (job, external_user_id) VALUES (?1, ?2)",
            )?;
            for (ext, _) in sent {
                st.execute(params![job, ext])?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Jobs not yet in a terminal state, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.jobs_where(
            "j.state NOT IN ('SUCCEEDED', 'PARTIALLYSUCCEEDED', 'FAILED', 'COMPLETED')",
            10_000,
        )
    }

    /// The newest jobs (any state), newest first, at most `limit`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn recent_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        let mut jobs = self.jobs_where("1", limit)?;
        jobs.reverse();
        Ok(jobs)
    }

    fn jobs_where(&self, cond: &str, limit: u32) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT * FROM (SELECT j.id, a.key, j.job_request_id, j.records, j.state, j.invalid, j.polls,
                 j.created_at, j.updated_at
             FROM jobs j JOIN audiences a ON a.id = j.audience WHERE {cond}
             ORDER BY j.id DESC LIMIT ?1) ORDER BY id"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![limit], |r| {
            Ok(Job {
                id: r.get(0)?,
                audience_key: r.get(1)?,
                job_request_id: r.get(2)?,
                records: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                state: r.get(4)?,
                invalid: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                polls: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                created_at_ms: r.get(7)?,
                updated_at_ms: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Counts one status poll of a job that is still running.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn job_polled(&mut self, job_request_id: &str, state: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE jobs SET polls = polls + 1, state = ?2, updated_at = ?3 WHERE job_request_id = ?1",
            params![job_request_id, state, now_ms()],
        )?;
        Ok(())
    }

    /// Records a job's terminal state. Each `invalidRecords` entry
    /// (`externalId`, Amazon's error) becomes a dead letter (source `upload`,
    /// reason `amazon_invalid_record`) carrying the record's hashed payload,
    /// and the user's `membership` row is removed (Amazon did not apply it).
    /// A `FAILED` job without `invalidRecords` applied nothing: every record
    /// it carried is dead-lettered the same way. One transaction. Returns the
    /// number of records dead-lettered.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn finish_job(
        &mut self,
        job_request_id: &str,
        state: &str,
        invalid: &[(String, String)],
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let audience: Option<(i64, String)> = tx
            .query_row(
                "SELECT j.audience, a.key FROM jobs j JOIN audiences a ON a.id = j.audience
                 WHERE j.job_request_id = ?1",
                params![job_request_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let mut dead = 0u64;
        // A FAILED job applied nothing: every record it carried is refused.
        let failed_all: Vec<(String, String)> = if state == "FAILED" && invalid.is_empty() {
            let mut st = tx.prepare_cached(
                "SELECT r.external_user_id FROM job_records r JOIN jobs j ON j.id = r.job
                 WHERE j.job_request_id = ?1",
            )?;
            st.query_map(params![job_request_id], |r| r.get::<_, String>(0))?
                .map(|r| r.map(|ext| (ext, JOB_FAILED.to_string())))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let invalid = if failed_all.is_empty() {
            invalid
        } else {
            &failed_all[..]
        };
        if let Some((audience, key)) = audience {
            for (ext, error) in invalid {
                let row: Option<(String, i64, String, String, Option<String>)> = tx
                    .query_row(
                        "SELECT action, event_time_ms, country_code, hashed_pii, user_consent
                         FROM membership WHERE audience = ?1 AND external_user_id = ?2",
                        params![audience, ext],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let payload = row.map(|r| payload_from_row(&key, ext, r));
                let job_failed = error == JOB_FAILED;
                write_dead_letter(
                    &tx,
                    &NewDeadLetter {
                        source: DeadLetterSource::Upload,
                        reason: if job_failed {
                            "amazon_job_failed"
                        } else {
                            "amazon_invalid_record"
                        }
                        .into(),
                        message: if job_failed {
                            "the upload job FAILED at Amazon (the record itself may be fine): `amc-sync dead-letters retry --reason amazon_job_failed` re-sends it".to_string()
                        } else {
                            format!("Amazon rejected the record: {}", truncate(error))
                        },
                        payload,
                        message_id: None,
                    },
                    now,
                )?;
                tx.execute(
                    "DELETE FROM membership WHERE audience = ?1 AND external_user_id = ?2",
                    params![audience, ext],
                )?;
                dead += 1;
            }
        }
        tx.execute(
            "UPDATE jobs SET state = ?2, invalid = ?3, polls = polls + 1, updated_at = ?4
             WHERE job_request_id = ?1",
            params![
                job_request_id,
                state,
                i64::try_from(dead).unwrap_or(i64::MAX),
                now
            ],
        )?;
        tx.commit()?;
        Ok(dead)
    }

    /// Moves pending records that Amazon refused (an isolated 400, or a record
    /// too large for any request) to dead letters: reason code `reason`,
    /// Amazon's message, the hashed payload. Rows whose `seq` changed since
    /// they were read (a newer change arrived) are left pending. Returns how
    /// many were moved.
    ///
    /// # Errors
    /// [`StoreError::UnknownAudience`], SQLite errors.
    pub fn dead_letter_pending(
        &mut self,
        audience_key: &str,
        records: &[(String, i64)],
        reason: &str,
        message: &str,
    ) -> Result<u64, StoreError> {
        let audience =
            self.audience_row_id(audience_key)?
                .ok_or_else(|| StoreError::UnknownAudience {
                    key: audience_key.to_string(),
                })?;
        let now = now_ms();
        let message = truncate(message);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut moved = 0u64;
        for (ext, seq) in records {
            let row: Option<(String, i64, String, String, Option<String>)> = tx
                .query_row(
                    "SELECT action, event_time_ms, country_code, hashed_pii, user_consent
                     FROM pending WHERE audience = ?1 AND external_user_id = ?2 AND seq = ?3",
                    params![audience, ext, seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((action, t, cc, pii, consent)) = row else {
                continue;
            };
            write_dead_letter(
                &tx,
                &NewDeadLetter {
                    source: DeadLetterSource::Upload,
                    reason: reason.to_string(),
                    message: message.clone(),
                    payload: Some(payload_from_row(
                        audience_key,
                        ext,
                        (action, t, cc, pii, consent),
                    )),
                    message_id: None,
                },
                now,
            )?;
            tx.execute(
                "DELETE FROM pending WHERE audience = ?1 AND external_user_id = ?2 AND seq = ?3",
                params![audience, ext, seq],
            )?;
            moved += 1;
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Records accepted by Amazon (202) per hour, from the jobs table:
    /// hour start (ms since the epoch, a multiple of 3,600,000) → records,
    /// for jobs created at or after `since_ms`. Hours without uploads are
    /// absent.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn uploads_by_hour(
        &self,
        since_ms: i64,
    ) -> Result<std::collections::BTreeMap<i64, u64>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT (created_at / 3600000) * 3600000 AS h, SUM(records) FROM jobs
             WHERE created_at >= ?1 GROUP BY h",
        )?;
        let mut out = std::collections::BTreeMap::new();
        for row in st.query_map([since_ms], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (h, n) = row?;
            out.insert(h, u64::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    /// Upload counters per audience key.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn upload_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, UploadCounts>, StoreError> {
        let mut out: std::collections::BTreeMap<String, UploadCounts> = self
            .audiences()?
            .into_iter()
            .map(|a| (a.key, UploadCounts::default()))
            .collect();
        let mut st = self.conn.prepare_cached(
            "SELECT a.key, COUNT(*) FROM membership m JOIN audiences a ON a.id = m.audience GROUP BY a.key",
        )?;
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            out.entry(k).or_default().uploaded = u64::try_from(n).unwrap_or(0);
        }
        let mut st = self.conn.prepare_cached(
            "SELECT json_extract(payload, '$.audienceKey'), COUNT(*) FROM dead_letters
             WHERE source = 'upload' GROUP BY 1",
        )?;
        for row in st.query_map([], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (k, n) = row?;
            if let Some(k) = k {
                out.entry(k).or_default().failed = u64::try_from(n).unwrap_or(0);
            }
        }
        let mut st = self.conn.prepare_cached(
            "SELECT a.key, COUNT(*) FROM jobs j JOIN audiences a ON a.id = j.audience
             WHERE j.state NOT IN ('SUCCEEDED', 'PARTIALLYSUCCEEDED', 'FAILED', 'COMPLETED')
             GROUP BY a.key",
        )?;
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            out.entry(k).or_default().open_jobs = u64::try_from(n).unwrap_or(0);
        }
        Ok(out)
    }
}
