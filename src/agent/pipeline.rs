//! The intake pipeline shared by the HTTP endpoint, the drop folder and
//! `amc-sync ingest`: Segment messages → [`mapping`] (hashing via `pii`) →
//! audience resolution → one group-committed store submission.
//!
//! Raw messages live only in memory here; what reaches the store is hashed
//! changes and dead letters with reason codes and hashed payloads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::config::{AudienceConfig, Config};
use crate::mapping::{self, AudienceRef, MapContext, MappingSet, Outcome};
use crate::model::Source;
use crate::pii::{Country, Profile};
use crate::store::{
    self, DeadLetterSource, IncomingItem, ItemOutcome, NewAudience, NewDeadLetter, PendingCommit,
    StoreError, Target, WriterHandle,
};
use crate::sync::engine::UploadTrigger;

/// One input to [`Pipeline::ingest`]: a parsed message, or a line that could
/// not be parsed (its reason code and a value-free message).
#[derive(Debug, Clone)]
pub struct Input {
    /// The message, or `(reason code, message)` for an unparseable line.
    pub message: Result<Value, (&'static str, String)>,
    /// 1-based line in the source file, when there is one.
    pub line: Option<u64>,
}

impl Input {
    /// A parsed message without a line number (HTTP).
    pub fn message(v: Value) -> Input {
        Input {
            message: Ok(v),
            line: None,
        }
    }
}

/// A rejected input, for `rejected/<file>.errors.ndjson` and HTTP summaries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// 1-based line, when the input came from a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Index of the input in the submitted list.
    pub index: usize,
    /// Stable reason code.
    pub reason: String,
    /// What is wrong, without any input value.
    pub message: String,
}

/// What one [`Pipeline::ingest`] call did. Counts are records/messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestSummary {
    /// Inputs received.
    pub received: u64,
    /// Changes queued (inserted, merged or replacing a pending change).
    pub queued: u64,
    /// Of `queued`: merged into a pending change for the same user.
    pub coalesced: u64,
    /// Older than a pending or uploaded change with the other action: dropped.
    pub stale: u64,
    /// Duplicate `messageId`s: accepted and dropped (client retries).
    pub duplicates: u64,
    /// Not audience traffic (`page`, `screen`, … or no matching trigger).
    pub ignored: u64,
    /// Dead-lettered, by reason code.
    pub dead_letters: BTreeMap<String, u64>,
    /// Each dead-lettered input (line/index, reason, message).
    pub rejections: Vec<Rejection>,
}

impl IngestSummary {
    /// Total dead-lettered inputs.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Adds `other`'s counts to `self` (rejections are appended).
    pub fn absorb(&mut self, other: IngestSummary) {
        self.received += other.received;
        self.queued += other.queued;
        self.coalesced += other.coalesced;
        self.stale += other.stale;
        self.duplicates += other.duplicates;
        self.ignored += other.ignored;
        for (k, v) in other.dead_letters {
            *self.dead_letters.entry(k).or_insert(0) += v;
        }
        self.rejections.extend(other.rejections);
    }
}

/// What an item of a submission is, for counting its outcome.
#[derive(Debug, Clone, Copy)]
enum ItemKind {
    /// A change: (input index, line).
    Change(usize, Option<u64>),
    /// A dead letter with this reason code.
    DeadLetter(&'static str),
}

/// Inputs mapped and hashed, not yet committed ([`Pipeline::prepare`]).
#[derive(Debug, Default)]
pub struct Prepared {
    items: Vec<IncomingItem>,
    kinds: Vec<ItemKind>,
    summary: IngestSummary,
}

impl Prepared {
    /// Inputs already known to be rejected (unparseable or refused by the
    /// mapping); the store may refuse more (unknown audience).
    pub fn rejected(&self) -> u64 {
        self.summary.rejections.len() as u64
    }

    /// Inputs received.
    pub fn received(&self) -> u64 {
        self.summary.received
    }

    /// Appends `other` (prepared from the inputs that follow this one's), so
    /// several small preparations commit as one submission. Input indexes
    /// of `other` are shifted past this one's inputs.
    pub fn append(&mut self, mut other: Prepared) {
        let offset = usize::try_from(self.summary.received).unwrap_or(usize::MAX);
        for k in &mut other.kinds {
            if let ItemKind::Change(index, _) = k {
                *index = index.saturating_add(offset);
            }
        }
        for r in &mut other.summary.rejections {
            r.index = r.index.saturating_add(offset);
        }
        self.items.append(&mut other.items);
        self.kinds.append(&mut other.kinds);
        self.summary.absorb(other.summary);
    }
}

/// A submission on its way to the store ([`Pipeline::submit`]).
#[derive(Debug)]
pub struct InFlight {
    pending: PendingCommit,
    kinds: Vec<ItemKind>,
    summary: IngestSummary,
    trigger: Option<Arc<UploadTrigger>>,
}

impl InFlight {
    /// Blocks until the submission is committed and returns its summary.
    ///
    /// # Errors
    /// The store could not commit (e.g. disk full): nothing was committed and
    /// the caller must not acknowledge the inputs (HTTP answers 503).
    pub fn wait(self) -> Result<IngestSummary, StoreError> {
        let InFlight {
            pending,
            kinds,
            mut summary,
            trigger,
        } = self;
        let outcome = pending.wait()?;
        for (i, o) in outcome.outcomes.iter().enumerate() {
            match (o, kinds.get(i)) {
                (ItemOutcome::Inserted | ItemOutcome::Replaced, _) => summary.queued += 1,
                (ItemOutcome::Merged, _) => {
                    summary.queued += 1;
                    summary.coalesced += 1;
                }
                (ItemOutcome::Stale, _) => summary.stale += 1,
                (ItemOutcome::Duplicate, _) => summary.duplicates += 1,
                (ItemOutcome::DeadLettered, Some(ItemKind::DeadLetter(reason))) => {
                    *summary
                        .dead_letters
                        .entry((*reason).to_string())
                        .or_insert(0) += 1;
                }
                (ItemOutcome::DeadLettered, Some(ItemKind::Change(index, line))) => {
                    // The store refused the change (e.g. unknown audience).
                    let reason = store::reason::UNKNOWN_AUDIENCE.to_string();
                    *summary.dead_letters.entry(reason.clone()).or_insert(0) += 1;
                    summary.rejections.push(Rejection {
                        line: *line,
                        index: *index,
                        reason,
                        message:
                            "the audience is neither configured nor described by audience_settings"
                                .into(),
                    });
                }
                _ => {}
            }
        }
        if let Some(t) = trigger {
            t.queued(summary.queued);
        }
        Ok(summary)
    }
}

/// Maps, resolves audiences and commits. Cheap to share (`Arc<Pipeline>`);
/// [`Pipeline::ingest`] blocks until the store has committed, so async
/// callers run it on a blocking thread.
pub struct Pipeline {
    mappings: MappingSet,
    profile: Profile,
    configured: HashMap<String, AudienceConfig>,
    /// Audience key → country, for audiences known to exist in the store.
    known: Mutex<HashMap<String, Country>>,
    writer: WriterHandle,
    /// Tells the sync engine when a batch has filled.
    trigger: std::sync::OnceLock<Arc<UploadTrigger>>,
    /// Inputs received since start: `[http, file]` (for `/metrics`).
    received: [std::sync::atomic::AtomicU64; 2],
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Pipeline {
    /// Builds the pipeline: creates configured audiences that the store does
    /// not have yet, and caches the store's audiences.
    ///
    /// # Errors
    /// A store failure, or a configured audience the store refuses.
    pub fn new(cfg: &Config, writer: WriterHandle) -> Result<Pipeline, StoreError> {
        let configured: HashMap<String, AudienceConfig> = cfg
            .audiences
            .iter()
            .map(|a| (a.key.clone(), a.clone()))
            .collect();
        let to_create: Vec<NewAudience> =
            cfg.audiences.iter().map(new_audience_from_config).collect();
        let existing = writer.call(move |s| {
            for a in &to_create {
                if s.audience(&a.key)?.is_none() {
                    s.create_audience(a)?;
                }
            }
            s.audiences()
        })?;
        let known = existing
            .into_iter()
            .filter_map(|a| Some((a.key, Country::parse(&a.country_code).ok()?)))
            .collect();
        Ok(Pipeline {
            mappings: cfg.mappings.clone(),
            profile: cfg.profile,
            configured,
            known: Mutex::new(known),
            writer,
            trigger: std::sync::OnceLock::new(),
            received: Default::default(),
        })
    }

    /// Connects the sync engine's "batch filled" trigger (once; later calls
    /// are ignored).
    pub fn set_upload_trigger(&self, trigger: Arc<UploadTrigger>) {
        let _ = self.trigger.set(trigger);
    }

    /// Inputs (messages, CSV rows) received since start, per source:
    /// `[("http", n), ("file", n)]`, counted before mapping (ignored and
    /// dead-lettered inputs included).
    pub fn received(&self) -> [(&'static str, u64); 2] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            ("http", self.received[0].load(Relaxed)),
            ("file", self.received[1].load(Relaxed)),
        ]
    }

    /// The store writer this pipeline commits through.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Country>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps `inputs`, makes sure their audiences exist, and commits every
    /// change and dead letter (plus `extra` items such as a file checkpoint)
    /// in one store submission. Returns only after the commit.
    ///
    /// # Errors
    /// The store could not commit (e.g. disk full): nothing was committed and
    /// the caller must not acknowledge the inputs (HTTP answers 503).
    pub fn ingest(
        &self,
        inputs: Vec<Input>,
        source: Source,
        extra: Vec<IncomingItem>,
    ) -> Result<IngestSummary, StoreError> {
        let prepared = self.prepare(inputs, source)?;
        self.submit(prepared, extra)?.wait()
    }

    /// The first half of [`Pipeline::ingest`]: maps `inputs` (hashing their
    /// PII) and makes sure their audiences exist. Nothing of the inputs is
    /// committed yet; pass the result to [`Pipeline::submit`].
    ///
    /// # Errors
    /// The store could not create a missing audience.
    pub fn prepare(&self, inputs: Vec<Input>, source: Source) -> Result<Prepared, StoreError> {
        let (dl_source, slot) = match source {
            Source::Http => (DeadLetterSource::Http, 0),
            Source::File => (DeadLetterSource::File, 1),
        };
        self.received[slot].fetch_add(inputs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut summary = IngestSummary {
            received: inputs.len() as u64,
            ..Default::default()
        };
        let now = now_ms();
        // Countries of known and configured audiences (owned: the mapping
        // context wants a `'static` lookup).
        let mut countries = self.known().clone();
        for (k, a) in &self.configured {
            if let Ok(c) = Country::parse(&a.country_code) {
                countries.entry(k.clone()).or_insert(c);
            }
        }
        let lookup = move |key: &str| countries.get(key).copied();
        let ctx = MapContext::new(self.profile, now).with_audience_country(&lookup);
        let mut items: Vec<IncomingItem> = Vec::with_capacity(inputs.len() + 1);
        // What each item is, for the summary: (input index, line) of changes,
        // the reason code of dead letters.
        let mut kinds: Vec<ItemKind> = Vec::with_capacity(inputs.len() + 1);
        let mut missing: HashMap<String, AudienceRef> = HashMap::new();
        let known = self.known().clone();
        let reject = |summary: &mut IngestSummary,
                      items: &mut Vec<IncomingItem>,
                      kinds: &mut Vec<ItemKind>,
                      index: usize,
                      line: Option<u64>,
                      reason: &'static str,
                      message: String,
                      message_id: Option<String>| {
            summary.rejections.push(Rejection {
                line,
                index,
                reason: reason.to_string(),
                message: message.clone(),
            });
            items.push(IncomingItem::DeadLetter(NewDeadLetter {
                source: dl_source,
                reason: reason.to_string(),
                message,
                payload: None,
                message_id,
            }));
            kinds.push(ItemKind::DeadLetter(reason));
        };
        for (index, input) in inputs.into_iter().enumerate() {
            let line = input.line;
            let msg = match input.message {
                Ok(m) => m,
                Err((code, message)) => {
                    reject(
                        &mut summary,
                        &mut items,
                        &mut kinds,
                        index,
                        line,
                        code,
                        message,
                        None,
                    );
                    continue;
                }
            };
            let message_id = mapping::message_id(&msg).map(str::to_string);
            match self.mappings.map(&msg, &ctx) {
                Outcome::Mapped { mapped, .. } => {
                    let mapping::Mapped { change, audience } = *mapped;
                    if !known.contains_key(&audience.key) && !missing.contains_key(&audience.key) {
                        missing.insert(audience.key.clone(), audience);
                    }
                    items.push(IncomingItem::Change {
                        change,
                        message_id,
                        source,
                    });
                    kinds.push(ItemKind::Change(index, line));
                }
                Outcome::Ignored(_) => summary.ignored += 1,
                Outcome::Rejected { error, .. } => {
                    let code = error.code();
                    let message = error.to_string();
                    reject(
                        &mut summary,
                        &mut items,
                        &mut kinds,
                        index,
                        line,
                        code,
                        message,
                        message_id,
                    );
                }
            }
            // Drop the raw message here, on this thread, not on the writer's.
            drop(msg);
        }
        if !missing.is_empty() {
            self.resolve_audiences(missing)?;
        }
        Ok(Prepared {
            items,
            kinds,
            summary,
        })
    }

    /// The second half of [`Pipeline::ingest`]: queues `prepared` (plus
    /// `extra` items such as a file checkpoint) for the next group commit
    /// and returns at once; [`InFlight::wait`] blocks until it is durable.
    /// Submissions commit in the order they are made.
    ///
    /// # Errors
    /// [`StoreError::WriterClosed`].
    pub fn submit(
        &self,
        prepared: Prepared,
        extra: Vec<IncomingItem>,
    ) -> Result<InFlight, StoreError> {
        let Prepared {
            mut items,
            kinds,
            summary,
        } = prepared;
        items.extend(extra);
        let pending = self.writer.submit_nowait(items)?;
        Ok(InFlight {
            pending,
            kinds,
            summary,
            trigger: self.trigger.get().cloned(),
        })
    }

    /// Creates audiences that the store does not know yet: from the config,
    /// else from the message's `audience_settings`. Others stay unknown (their
    /// changes are dead-lettered `unknown_audience` by the store).
    fn resolve_audiences(&self, missing: HashMap<String, AudienceRef>) -> Result<(), StoreError> {
        let mut creations: Vec<(NewAudience, Option<String>)> = Vec::new();
        for (key, aref) in missing {
            let new = match self.configured.get(&key) {
                Some(cfg) => Some(new_audience_from_config(cfg)),
                None => aref
                    .settings
                    .as_ref()
                    .and_then(|s| new_audience_from_settings(&key, s)),
            };
            if let Some(n) = new {
                creations.push((n, aref.external_audience_id.clone()));
            }
        }
        if creations.is_empty() {
            return Ok(());
        }
        let created = self.writer.call(move |s| {
            let mut out = Vec::new();
            for (a, amazon_id) in &creations {
                let aud = match s.audience(&a.key)? {
                    Some(existing) => existing,
                    None => match s.create_audience(a) {
                        Ok(x) => x,
                        // Invalid settings: leave it unknown, the change is dead-lettered.
                        Err(StoreError::Invalid { .. }) => continue,
                        Err(e) => return Err(e),
                    },
                };
                if let (Some(id), None) = (amazon_id, &aud.audience_id) {
                    s.set_amazon_audience_id(&aud.key, id)?;
                }
                out.push((aud.key, aud.country_code));
            }
            Ok(out)
        })?;
        let mut known = self.known();
        for (key, cc) in created {
            if let Ok(c) = Country::parse(&cc) {
                known.insert(key, c);
            }
        }
        Ok(())
    }
}

fn new_audience_from_config(a: &AudienceConfig) -> NewAudience {
    let target = match (&a.advertiser_id, &a.connection_id) {
        (Some(id), _) => Target::AdvertiserId(id.0.clone()),
        (None, Some(c)) => Target::ConnectionId(c.clone()),
        // Config validation guarantees one of them.
        (None, None) => Target::ConnectionId(String::new()),
    };
    NewAudience {
        key: a.key.clone(),
        country_code: a.country_code.to_ascii_uppercase(),
        description: a.description.clone(),
        target,
        external_audience_id: a.external_audience_id.clone(),
        ttl_secs: a.ttl_secs.and_then(|t| u32::try_from(t).ok()),
        cpm_cents: a.cpm_cents.and_then(|t| u32::try_from(t).ok()),
        currency: a.currency.clone(),
    }
}

/// The Segment "Amazon Ads DSP and AMC" destination's audience settings:
/// `advertiserId` (or `connectionId`), `countryCode`, `description`,
/// `externalAudienceId`, `ttl`, `cpmCents`, `currency`.
fn new_audience_from_settings(key: &str, s: &Map<String, Value>) -> Option<NewAudience> {
    let text = |k: &str| match s.get(k) {
        Some(Value::String(v)) if !v.trim().is_empty() => Some(v.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let num = |k: &str| text(k).and_then(|v| v.parse::<u32>().ok());
    let target = match (text("advertiserId"), text("connectionId")) {
        (Some(a), _) => Target::AdvertiserId(a),
        (None, Some(c)) => Target::ConnectionId(c),
        (None, None) => return None,
    };
    Some(NewAudience {
        key: key.to_string(),
        country_code: text("countryCode")
            .unwrap_or_else(|| "US".into())
            .to_ascii_uppercase(),
        description: text("description").unwrap_or_default(),
        target,
        external_audience_id: text("externalAudienceId"),
        ttl_secs: num("ttl"),
        cpm_cents: num("cpmCents"),
        currency: text("currency"),
    })
}
