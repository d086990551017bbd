//! Segment-style mapping of one message to one hashed membership change
//! (DESIGN.md 4.3). Pure: no I/O, no clocks (the caller passes `now_ms`).
//!
//! Input: one Segment message (`serde_json::Value`) of the HTTP Tracking API
//! or an NDJSON line, with the batch-level `context` / `integrations` already
//! merged in by the caller. Output: an [`Outcome`]:
//!
//! * [`Outcome::Mapped`]: a [`MemberChange`] (hashed by [`crate::pii`]) and the
//!   [`AudienceRef`] the store resolves to an Amazon audience;
//! * [`Outcome::Ignored`]: `page`/`screen`/`group`/`alias` messages and
//!   messages no trigger matches (counted, not dead-lettered);
//! * [`Outcome::Rejected`]: a [`MappingError`] with a stable reason code
//!   ([`MappingError::code`]) for the dead-letter queue. Rejections and every
//!   `Debug` output here name fields and paths only — never raw values.
//!
//! The rules follow, in this order of authority: DESIGN.md 4.3/4.4; Segment's
//! "Amazon Ads DSP and AMC" destination (`actions-amazon-amc`, action "Sync
//! Audiences to DSP": default trigger and field paths); Segment Actions
//! mapping-kit ([`source`]); Segment FQL ([`fql`]); the Engage audience event
//! format (Segment docs "Engage → Audiences → Send audiences to
//! destinations": track events `Audience Entered`/`Audience Exited` with
//! `properties[<audience_key>]`, identify calls with
//! `traits[<audience_key>]`, and `context.personas.{computation_key,
//! external_audience_id, audience_settings}`).
//!
//! Decisions beyond DESIGN.md (each documented where it applies):
//! * a second default mapping with trigger `type = "identify"` handles
//!   identify-based Engage audiences ([`MappingSet::default`]);
//! * default field paths additionally accept `traits.*`, camelCase
//!   (`firstName`, `postalCode`) and `zip` spellings ([`FieldSources`]);
//! * a record needs a valid `externalUserId` **and** at least one hashed PII
//!   field ([`MappingError::NoIdentifiers`]), because Amazon matches people
//!   only on `hashedPII`;
//! * the record country is the message's own (`properties.country_code`, …,
//!   then `context.personas.audience_settings.countryCode`), else the
//!   caller's per-audience default, else the caller's global default, else
//!   `UNKNOWN` ([`MapContext`]).

pub mod fql;
pub mod source;
pub mod time;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use fql::{Trigger, TriggerError};
pub use source::{JsonPath, Source, SourceError};

use crate::model::{Action, MemberChange};
use crate::pii::{self, Country, PiiError, Profile, RawConsent, RawPii};

/// Most mappings one destination instance may hold (DESIGN.md 4.3, as in the
/// Segment destination).
pub const MAX_MAPPINGS: usize = 50;

/// Smallest configurable `batch_size` (DESIGN.md 4.3).
pub const MIN_BATCH_SIZE: u32 = 1_500;

/// Largest and default `batch_size`: Amazon accepts at most 10,000 records
/// per `POST /amc/audiences/records` call.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// The Engage event that means "entered the audience" (→ `CREATE`).
pub const AUDIENCE_ENTERED: &str = "Audience Entered";

/// The Engage event that means "left the audience" (→ `DELETE`).
pub const AUDIENCE_EXITED: &str = "Audience Exited";

// ---------------------------------------------------------------------------
// Errors and outcomes
// ---------------------------------------------------------------------------

/// Where a membership flag was read from (for error messages; names a
/// location, never a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagLocation {
    /// `properties[<audience_key>]` (track).
    Properties,
    /// `traits[<audience_key>]` (identify).
    Traits,
    /// `context.traits[<audience_key>]` (identify fallback).
    ContextTraits,
}

impl fmt::Display for FlagLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlagLocation::Properties => "properties[<audience_key>]",
            FlagLocation::Traits => "traits[<audience_key>]",
            FlagLocation::ContextTraits => "context.traits[<audience_key>]",
        })
    }
}

/// Why a message was rejected (dead-lettered). [`MappingError::code`] is the
/// stable reason code; `Display` explains it using field names and paths
/// only — no variant carries a value taken from the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The message is not a JSON object, or its `type` is missing / not a string.
    #[error("invalid message: `{field}` is missing or has the wrong JSON type")]
    InvalidMessage {
        /// `"message"` (not an object) or `"type"`.
        field: &'static str,
    },
    /// A `type` that is none of the Segment Spec types (`track`, `identify`,
    /// `page`, `screen`, `group`, `alias`).
    #[error("unsupported message type (expected a Segment Spec type)")]
    UnsupportedMessageType,
    /// Neither `context.personas.computation_key` nor `properties.audience_key`
    /// holds a non-empty string.
    #[error(
        "no audience key: context.personas.computation_key and properties.audience_key are missing"
    )]
    MissingAudienceKey,
    /// `context.personas.external_audience_id` is present but not a string of
    /// digits or an integer (Amazon `audienceId`s are numeric).
    #[error("context.personas.external_audience_id must be an Amazon audienceId (digits)")]
    InvalidExternalAudienceId,
    /// The membership flag is neither a boolean nor the string `"true"`/`"false"`.
    #[error("the membership flag at {location} must be true/false or \"true\"/\"false\"")]
    InvalidMembershipFlag {
        /// Where the flag was found.
        location: FlagLocation,
    },
    /// The flag and the event name disagree (e.g. flag `true` on `Audience Exited`).
    #[error("the membership flag at {location} says {} but the event name says {}", flag.as_str(), event.as_str())]
    MembershipContradiction {
        /// Where the flag was found.
        location: FlagLocation,
        /// What the flag says.
        flag: Action,
        /// What the event name says.
        event: Action,
    },
    /// No flag and an event name other than `Audience Entered`/`Audience Exited`.
    #[error(
        "no membership signal: no flag at properties/traits[<audience_key>] and the event is not Audience Entered/Exited"
    )]
    NoMembershipSignal,
    /// The `external_user_id` source (default `$.userId`) resolved to nothing.
    #[error("missing externalUserId (mapped field external_user_id, default $.userId)")]
    MissingExternalUserId,
    /// The external user id does not match `^[0-9a-zA-Z_-]{1,128}$`.
    #[error("externalUserId must match ^[0-9a-zA-Z_-]{{1,128}}$")]
    InvalidExternalUserId,
    /// The mapped `country` is not an ISO 3166-1 alpha-2 code nor `UNKNOWN`.
    #[error("country code must be an ISO 3166-1 alpha-2 code or UNKNOWN (mapped field country)")]
    InvalidCountryCode,
    /// A UK/EEA record without `amznAdStorage` + `amznUserData`, `tcf` or `gpp`.
    #[error("records from the UK/EEA need consent: amznAdStorage and amznUserData, or tcf, or gpp")]
    ConsentRequired,
    /// `amznAdStorage` / `amznUserData` other than `GRANTED` / `DENIED`.
    #[error("consent values amznAdStorage/amznUserData must be GRANTED or DENIED")]
    InvalidConsentValue,
    /// Every PII field was absent or normalized to empty: Amazon cannot match
    /// a record without `hashedPII`.
    #[error(
        "no identifiers: no PII field left after normalization (email, phone, name, address, …)"
    )]
    NoIdentifiers,
}

impl MappingError {
    /// Stable, machine-readable reason code (`snake_case`), used in dead
    /// letters, reports and metrics. Codes shared with [`PiiError::code`]
    /// are spelled identically.
    pub fn code(&self) -> &'static str {
        match self {
            MappingError::InvalidMessage { .. } => "invalid_message",
            MappingError::UnsupportedMessageType => "unsupported_message_type",
            MappingError::MissingAudienceKey => "missing_audience_key",
            MappingError::InvalidExternalAudienceId => "invalid_external_audience_id",
            MappingError::InvalidMembershipFlag { .. } => "invalid_membership_flag",
            MappingError::MembershipContradiction { .. } => "membership_contradiction",
            MappingError::NoMembershipSignal => "no_membership_signal",
            MappingError::MissingExternalUserId => "missing_external_user_id",
            MappingError::InvalidExternalUserId => "invalid_external_user_id",
            MappingError::InvalidCountryCode => "invalid_country_code",
            MappingError::ConsentRequired => "consent_required",
            MappingError::InvalidConsentValue => "invalid_consent_value",
            MappingError::NoIdentifiers => "no_identifiers",
        }
    }

    fn from_pii(e: PiiError) -> MappingError {
        match e {
            PiiError::InvalidExternalUserId => MappingError::InvalidExternalUserId,
            PiiError::ConsentRequired => MappingError::ConsentRequired,
            PiiError::InvalidConsentValue => MappingError::InvalidConsentValue,
            // `UnknownField`/`UnknownProfile` cannot come from the calls made here.
            PiiError::InvalidCountryCode | PiiError::UnknownField | PiiError::UnknownProfile => {
                MappingError::InvalidCountryCode
            }
        }
    }
}

/// Why a message was ignored (counted, not dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// A `page`, `screen`, `group` or `alias` message (DESIGN.md 4.1).
    NonAudienceType {
        /// The Segment type.
        message_type: &'static str,
    },
    /// No mapping's trigger matched.
    NoMatchingTrigger,
}

impl Ignored {
    /// Stable reason code for metrics: `non_audience_type` or `no_matching_trigger`.
    pub fn code(self) -> &'static str {
        match self {
            Ignored::NonAudienceType { .. } => "non_audience_type",
            Ignored::NoMatchingTrigger => "no_matching_trigger",
        }
    }
}

/// Which audience a change belongs to, as far as the message says; the store
/// resolves it (DESIGN.md 4.3 "Which Amazon audience").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRef {
    /// Local audience key: `context.personas.computation_key`, else
    /// `properties.audience_key`. Equal to [`MemberChange::audience_key`].
    pub key: String,
    /// Amazon `audienceId` from `context.personas.external_audience_id`
    /// (digits as a string; never passed through f64), when present.
    pub external_audience_id: Option<String>,
    /// `context.personas.audience_settings` (the Segment destination's
    /// audience settings: `advertiserId`, `countryCode`, `description`,
    /// `externalAudienceId`, …), when present and an object. Used by the
    /// store to create an unknown audience. Configuration, not PII.
    pub settings: Option<Map<String, Value>>,
}

/// A successfully mapped message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The hashed change, ready for the store.
    pub change: MemberChange,
    /// The audience the change targets.
    pub audience: AudienceRef,
}

/// The result of mapping one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Mapped to a change.
    Mapped {
        /// The change and its audience.
        mapped: Box<Mapped>,
        /// Index in the [`MappingSet`] of the mapping whose trigger matched.
        mapping: usize,
    },
    /// Not an audience event, or no trigger matched.
    Ignored(Ignored),
    /// Dead-letter with [`MappingError::code`].
    Rejected {
        /// Why.
        error: MappingError,
        /// Index of the mapping whose trigger matched, when one did.
        mapping: Option<usize>,
    },
}

impl Outcome {
    /// The reason code of an ignored or rejected message; `None` when mapped.
    pub fn reason_code(&self) -> Option<&'static str> {
        match self {
            Outcome::Mapped { .. } => None,
            Outcome::Ignored(i) => Some(i.code()),
            Outcome::Rejected { error, .. } => Some(error.code()),
        }
    }
}

/// Invalid mapping configuration (reported by `config check`; never about
/// message data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingConfigError {
    /// More than [`MAX_MAPPINGS`] mappings.
    #[error("at most {MAX_MAPPINGS} mappings per destination, got {count}")]
    TooManyMappings {
        /// How many were configured.
        count: usize,
    },
    /// An empty mapping list (every message would be ignored).
    #[error("at least one mapping is required (omit `mappings` to use the defaults)")]
    NoMappings,
    /// `batch_size` outside 1,500–10,000.
    #[error("batch_size must be between {MIN_BATCH_SIZE} and {MAX_BATCH_SIZE}, got {value}")]
    BatchSizeOutOfRange {
        /// The configured value.
        value: u64,
    },
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Records per upload request for a mapping: 1,500–10,000, default 10,000
/// (DESIGN.md 4.3; actual batches may be smaller). Deserializes from an
/// integer and rejects out-of-range values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct BatchSize(u32);

impl BatchSize {
    /// Validates a batch size.
    ///
    /// # Errors
    /// [`MappingConfigError::BatchSizeOutOfRange`].
    pub fn new(value: u64) -> Result<BatchSize, MappingConfigError> {
        match u32::try_from(value) {
            Ok(v) if (MIN_BATCH_SIZE..=MAX_BATCH_SIZE).contains(&v) => Ok(BatchSize(v)),
            _ => Err(MappingConfigError::BatchSizeOutOfRange { value }),
        }
    }

    /// The number of records.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize(MAX_BATCH_SIZE)
    }
}

impl TryFrom<u64> for BatchSize {
    type Error = MappingConfigError;
    fn try_from(v: u64) -> Result<Self, MappingConfigError> {
        BatchSize::new(v)
    }
}

impl From<BatchSize> for u32 {
    fn from(b: BatchSize) -> u32 {
        b.0
    }
}

/// Where each mapped field comes from. Every field is a mapping-kit
/// [`Source`]; fields left out of a configuration keep their default.
///
/// Defaults (first path whose value is non-null and not `""` wins, written
/// as nested mapping-kit `@if` with the `blank` condition; the Segment
/// destination uses `exists`, which lets an empty string shadow a later
/// source — we skip it instead. `snake_case` first, then Segment's
/// camelCase trait spellings):
///
/// | field | default paths |
/// |---|---|
/// | `external_user_id` | `$.userId` |
/// | `email` | `$.context.traits.email`, `$.properties.email`, `$.traits.email` |
/// | `first_name` | `properties.{first_name,firstName}`, `traits.{…}`, `context.traits.{…}` |
/// | `last_name` | `properties.{last_name,lastName}`, `traits.{…}`, `context.traits.{…}` |
/// | `phone` | `properties.phone`, `traits.phone`, `context.traits.phone` |
/// | `postal` | `properties.{postal,postal_code,postalCode,zip}`, `traits.{…}`, `traits.address.postal_code`, `context.traits.{…}`, `context.traits.address.postal_code` |
/// | `city`, `state` | `properties.X`, `traits.X`, `traits.address.X`, `context.traits.X`, `context.traits.address.X` |
/// | `address` | `properties.address`, `traits.address.street`, `traits.address`, `context.traits.address.street`, `context.traits.address` |
/// | `country` | `properties.{country_code,countryCode}`, `traits.{…}`, `context.traits.{…}`, `context.personas.audience_settings.countryCode` |
/// | `ip` | `$.properties.ip`, `$.context.ip` |
/// | `amzn_ad_storage`, `amzn_user_data`, `tcf`, `gpp` | `properties.{amznAdStorage,amznUserData,tcf,gpp}`, then the same key under `traits` (identify) |
///
/// The Segment `address` trait is an object (`street`, `city`,
/// `postal_code`, `state`, `country`); its parts are read as above. Country
/// *names* (`address.country: "United States"`) are not read by default:
/// they are not codes and would reject the record — map them explicitly.
/// Resolved values may be strings or numbers (numbers are stringified);
/// booleans, objects and arrays count as absent for PII fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldSources {
    /// Amazon `externalUserId` (required; default `$.userId`).
    pub external_user_id: Source,
    /// Email address.
    pub email: Source,
    /// Phone number.
    pub phone: Source,
    /// First name.
    pub first_name: Source,
    /// Last name.
    pub last_name: Source,
    /// Street address.
    pub address: Source,
    /// City.
    pub city: Source,
    /// State / region.
    pub state: Source,
    /// Postal code.
    pub postal: Source,
    /// Record country (ISO 3166-1 alpha-2 or `UNKNOWN`).
    pub country: Source,
    /// The user's IP address (`userConsent.geo.ipAddress`).
    pub ip: Source,
    /// Amazon Consent Signal `amznAdStorage` (`GRANTED`/`DENIED`).
    pub amzn_ad_storage: Source,
    /// Amazon Consent Signal `amznUserData` (`GRANTED`/`DENIED`).
    pub amzn_user_data: Source,
    /// IAB TCF v2 string.
    pub tcf: Source,
    /// IAB GPP string.
    pub gpp: Source,
}

/// `first_non_blank` over constant paths; the paths are tested to parse, so
/// the `Literal(null)` fallback is unreachable.
fn chain(paths: &[&str]) -> Source {
    match Source::first_non_blank(paths) {
        Ok(Some(s)) => s,
        _ => Source::Literal(Value::Null),
    }
}

/// `prefix.key` for every prefix × key, prefix-major.
fn under(prefixes: &[&str], keys: &[&str]) -> Vec<String> {
    prefixes
        .iter()
        .flat_map(|p| keys.iter().map(move |k| format!("{p}.{k}")))
        .collect()
}

fn chain_owned(paths: &[String]) -> Source {
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    chain(&refs)
}

impl Default for FieldSources {
    fn default() -> Self {
        const PTC: [&str; 3] = ["$.properties", "$.traits", "$.context.traits"];
        let three = |keys: &[&str]| chain_owned(&under(&PTC, keys));
        let with_address_part = |keys: &[&str], part: &str| {
            let mut v = under(&["$.properties", "$.traits"], keys);
            v.push(format!("$.traits.address.{part}"));
            v.extend(under(&["$.context.traits"], keys));
            v.push(format!("$.context.traits.address.{part}"));
            chain_owned(&v)
        };
        let consent = |key: &str| chain_owned(&under(&["$.properties", "$.traits"], &[key]));
        FieldSources {
            external_user_id: chain(&["$.userId"]),
            email: chain(&[
                "$.context.traits.email",
                "$.properties.email",
                "$.traits.email",
            ]),
            phone: three(&["phone"]),
            first_name: three(&["first_name", "firstName"]),
            last_name: three(&["last_name", "lastName"]),
            address: chain(&[
                "$.properties.address",
                "$.traits.address.street",
                "$.traits.address",
                "$.context.traits.address.street",
                "$.context.traits.address",
            ]),
            city: with_address_part(&["city"], "city"),
            state: with_address_part(&["state"], "state"),
            postal: with_address_part(
                &["postal", "postal_code", "postalCode", "zip"],
                "postal_code",
            ),
            country: {
                let mut v = under(&PTC, &["country_code", "countryCode"]);
                v.push("$.context.personas.audience_settings.countryCode".to_string());
                chain_owned(&v)
            },
            ip: chain(&["$.properties.ip", "$.context.ip"]),
            amzn_ad_storage: consent("amznAdStorage"),
            amzn_user_data: consent("amznUserData"),
            tcf: consent("tcf"),
            gpp: consent("gpp"),
        }
    }
}

/// One mapping (a Segment Actions "subscription"): a trigger, field sources
/// and batching settings. Deserializes from JSON or TOML; every key is
/// optional and defaults to the Segment destination's behaviour.
///
/// ```toml
/// [[mappings]]
/// name = "engage track"
/// trigger = 'event = "Audience Entered" or event = "Audience Exited"'
/// batch_size = 6000
/// [mappings.fields]
/// email = { "@path" = "$.traits.work_email" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// A label for status pages and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which messages this mapping handles (default
    /// [`fql::DEFAULT_AUDIENCE_TRIGGER`]).
    #[serde(default)]
    pub trigger: Trigger,
    /// Where each field comes from.
    #[serde(default)]
    pub fields: FieldSources,
    /// Upload changes in batches (default true). When false the scheduler
    /// should send one record per request.
    #[serde(default = "default_true")]
    pub enable_batching: bool,
    /// Records per upload request (1,500–10,000, default 10,000).
    #[serde(default)]
    pub batch_size: BatchSize,
}

fn default_true() -> bool {
    true
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::default_audience()
    }
}

/// A per-audience country lookup: the configured `countryCode` of the local
/// audience with this key, if any.
pub type AudienceCountryFn = dyn Fn(&str) -> Option<Country> + Sync;

/// What the caller knows that the message may not carry.
#[derive(Clone, Copy)]
pub struct MapContext<'a> {
    /// Normalization profile for hashing (configured once per agent).
    pub profile: Profile,
    /// "Now", milliseconds since the Unix epoch: the event time of a message
    /// without a parseable `timestamp`, `receivedAt` or `sentAt`.
    pub now_ms: i64,
    /// The configured country of a local audience, by audience key; used
    /// when the message carries no country.
    pub audience_country: Option<&'a AudienceCountryFn>,
    /// Used when neither the message nor `audience_country` gives a country;
    /// when `None` the record's country is `UNKNOWN`.
    pub default_country: Option<Country>,
}

impl fmt::Debug for MapContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapContext")
            .field("profile", &self.profile)
            .field("now_ms", &self.now_ms)
            .field("audience_country", &self.audience_country.map(|_| "<fn>"))
            .field("default_country", &self.default_country)
            .finish()
    }
}

impl<'a> MapContext<'a> {
    /// A context with no country defaults.
    pub fn new(profile: Profile, now_ms: i64) -> MapContext<'a> {
        MapContext {
            profile,
            now_ms,
            audience_country: None,
            default_country: None,
        }
    }

    /// Sets [`MapContext::default_country`].
    pub fn with_default_country(mut self, country: Country) -> MapContext<'a> {
        self.default_country = Some(country);
        self
    }

    /// Sets [`MapContext::audience_country`].
    pub fn with_audience_country(mut self, lookup: &'a AudienceCountryFn) -> MapContext<'a> {
        self.audience_country = Some(lookup);
        self
    }
}

impl Mapping {
    /// The Segment destination's default mapping: trigger
    /// `event = "Audience Entered" or event = "Audience Exited"`, default
    /// fields, batching on, 10,000 records per batch.
    pub fn default_audience() -> Mapping {
        Mapping {
            name: Some("engage audience track".to_string()),
            trigger: Trigger::default_audience(),
            fields: FieldSources::default(),
            enable_batching: true,
            batch_size: BatchSize::default(),
        }
    }

    /// The second default mapping, for identify-based Engage audiences:
    /// trigger `type = "identify"`, otherwise as [`Mapping::default_audience`].
    pub fn default_identify() -> Mapping {
        Mapping {
            name: Some("engage audience identify".to_string()),
            trigger: Trigger::default_identify(),
            ..Mapping::default_audience()
        }
    }

    /// Maps a message this mapping's trigger matched (the trigger is not
    /// re-checked). Steps, each with its rejection: audience key
    /// (`missing_audience_key`, `invalid_external_audience_id`), membership
    /// (`invalid_membership_flag`, `membership_contradiction`,
    /// `no_membership_signal`), external user id (`missing_external_user_id`,
    /// `invalid_external_user_id`), country (`invalid_country_code`), consent
    /// (`consent_required`, `invalid_consent_value`), PII (`no_identifiers`),
    /// then the event time (never fails).
    ///
    /// # Errors
    /// [`MappingError`]; never carries message values.
    pub fn apply(&self, msg: &Value, ctx: &MapContext<'_>) -> Result<Mapped, MappingError> {
        let audience = audience_ref(msg)?;
        let action = membership(msg, &audience.key)?;
        let f = &self.fields;

        let external_user_id = match f.external_user_id.resolve(msg) {
            None => return Err(MappingError::MissingExternalUserId),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(MappingError::MissingExternalUserId);
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(MappingError::InvalidExternalUserId),
        };
        pii::validate_external_user_id(&external_user_id).map_err(MappingError::from_pii)?;

        let country = match f.country.resolve(msg) {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                Country::parse(s).map_err(MappingError::from_pii)?
            }
            Some(Value::String(_)) | None => ctx
                .audience_country
                .and_then(|lookup| lookup(&audience.key))
                .or(ctx.default_country)
                .unwrap_or(Country::Unknown),
            Some(_) => return Err(MappingError::InvalidCountryCode),
        };

        let raw_consent = RawConsent {
            ip_address: consent_string(f.ip.resolve(msg)),
            amzn_ad_storage: consent_string(f.amzn_ad_storage.resolve(msg)),
            amzn_user_data: consent_string(f.amzn_user_data.resolve(msg)),
            tcf: consent_string(f.tcf.resolve(msg)),
            gpp: consent_string(f.gpp.resolve(msg)),
        };
        let consent = pii::user_consent(country, &raw_consent).map_err(MappingError::from_pii)?;
        // Send userConsent only when it carries a consent signal (always the
        // case for UK/EEA, which `user_consent` enforces); a bare geo/IP adds
        // nothing Amazon needs and the IP is personal data.
        let user_consent = consent.consent.is_some().then_some(consent);

        let raw = RawPii {
            email: pii_string(f.email.resolve(msg)),
            phone: pii_string(f.phone.resolve(msg)),
            first_name: pii_string(f.first_name.resolve(msg)),
            last_name: pii_string(f.last_name.resolve(msg)),
            address: pii_string(f.address.resolve(msg)),
            city: pii_string(f.city.resolve(msg)),
            state: pii_string(f.state.resolve(msg)),
            postal: pii_string(f.postal.resolve(msg)),
        };
        let hashed_pii = pii::hash_pii(ctx.profile, country, &raw);
        drop(raw);
        if hashed_pii.is_empty() {
            return Err(MappingError::NoIdentifiers);
        }

        Ok(Mapped {
            change: MemberChange {
                audience_key: audience.key.clone(),
                external_user_id,
                action,
                event_time_ms: event_time_ms(msg, ctx.now_ms),
                country_code: country.as_str().to_string(),
                hashed_pii,
                user_consent,
            },
            audience,
        })
    }
}

/// Up to [`MAX_MAPPINGS`] mappings; the first whose trigger matches a message
/// handles it (Segment evaluates each subscription independently; with
/// first-match we never upload one message twice). Deserializes from a list
/// and rejects an empty list or more than 50 entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Mapping>", into = "Vec<Mapping>")]
pub struct MappingSet {
    mappings: Vec<Mapping>,
}

impl Default for MappingSet {
    /// [`Mapping::default_audience`] then [`Mapping::default_identify`]:
    /// Engage track audiences and identify audiences both work unconfigured.
    fn default() -> Self {
        MappingSet {
            mappings: vec![Mapping::default_audience(), Mapping::default_identify()],
        }
    }
}

impl TryFrom<Vec<Mapping>> for MappingSet {
    type Error = MappingConfigError;
    fn try_from(v: Vec<Mapping>) -> Result<Self, MappingConfigError> {
        MappingSet::new(v)
    }
}

impl From<MappingSet> for Vec<Mapping> {
    fn from(s: MappingSet) -> Vec<Mapping> {
        s.mappings
    }
}

impl MappingSet {
    /// Validates a list of mappings.
    ///
    /// # Errors
    /// [`MappingConfigError::NoMappings`] for an empty list,
    /// [`MappingConfigError::TooManyMappings`] above [`MAX_MAPPINGS`].
    pub fn new(mappings: Vec<Mapping>) -> Result<MappingSet, MappingConfigError> {
        if mappings.is_empty() {
            return Err(MappingConfigError::NoMappings);
        }
        if mappings.len() > MAX_MAPPINGS {
            return Err(MappingConfigError::TooManyMappings {
                count: mappings.len(),
            });
        }
        Ok(MappingSet { mappings })
    }

    /// The mappings, in evaluation order.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The mapping at `index` (as reported in [`Outcome`]).
    pub fn get(&self, index: usize) -> Option<&Mapping> {
        self.mappings.get(index)
    }

    /// Maps one message: checks its `type` (`page`, `screen`, `group`,
    /// `alias` → ignored; anything but `track`/`identify` → rejected), picks
    /// the first mapping whose trigger matches (none → ignored) and applies
    /// it ([`Mapping::apply`]). Never panics.
    pub fn map(&self, msg: &Value, ctx: &MapContext<'_>) -> Outcome {
        let reject = |error, mapping| Outcome::Rejected { error, mapping };
        if !msg.is_object() {
            return reject(MappingError::InvalidMessage { field: "message" }, None);
        }
        match msg.get("type").and_then(Value::as_str) {
            None => return reject(MappingError::InvalidMessage { field: "type" }, None),
            Some("track" | "identify") => {}
            Some(t) => {
                return match non_audience_type(t) {
                    Some(message_type) => {
                        Outcome::Ignored(Ignored::NonAudienceType { message_type })
                    }
                    None => reject(MappingError::UnsupportedMessageType, None),
                };
            }
        }
        let Some(index) = self.mappings.iter().position(|m| m.trigger.matches(msg)) else {
            return Outcome::Ignored(Ignored::NoMatchingTrigger);
        };
        match self.mappings[index].apply(msg, ctx) {
            Ok(mapped) => Outcome::Mapped {
                mapped: Box::new(mapped),
                mapping: index,
            },
            Err(error) => reject(error, Some(index)),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn non_audience_type(t: &str) -> Option<&'static str> {
    ["page", "screen", "group", "alias"]
        .into_iter()
        .find(|k| *k == t)
}

/// The message's `messageId` (Segment's dedup key), when it is a non-empty
/// string. Segment SDKs always send one; callers deduplicate on it
/// (DESIGN.md 4.1).
pub fn message_id(msg: &Value) -> Option<&str> {
    msg.get("messageId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Event time in ms since the Unix epoch: the first parseable of
/// `timestamp`, `receivedAt`, `sentAt` (ISO 8601, see
/// [`time::parse_timestamp_ms`]), else `now_ms`. An unparseable timestamp
/// falls through rather than rejecting the record (ordering precision is
/// not worth a lost membership change).
pub fn event_time_ms(msg: &Value, now_ms: i64) -> i64 {
    ["timestamp", "receivedAt", "sentAt"]
        .iter()
        .filter_map(|k| msg.get(*k).and_then(Value::as_str))
        .find_map(time::parse_timestamp_ms)
        .unwrap_or(now_ms)
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The audience reference of a message (DESIGN.md 4.3): key from
/// `context.personas.computation_key`, else `properties.audience_key`.
///
/// # Errors
/// [`MappingError::MissingAudienceKey`],
/// [`MappingError::InvalidExternalAudienceId`].
pub fn audience_ref(msg: &Value) -> Result<AudienceRef, MappingError> {
    let personas = msg.get("context").and_then(|c| c.get("personas"));
    let key = non_empty_str(personas.and_then(|p| p.get("computation_key")))
        .or_else(|| non_empty_str(msg.get("properties").and_then(|p| p.get("audience_key"))))
        .ok_or(MappingError::MissingAudienceKey)?;
    let external_audience_id = match personas.and_then(|p| p.get("external_audience_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(_) => return Err(MappingError::InvalidExternalAudienceId),
    };
    let settings = personas
        .and_then(|p| p.get("audience_settings"))
        .and_then(Value::as_object)
        .cloned();
    Ok(AudienceRef {
        key: key.to_string(),
        external_audience_id,
        settings,
    })
}

/// A membership flag: a boolean, or the string `"true"`/`"false"` (any case,
/// surrounding whitespace ignored; Journeys send strings). `Ok(None)` when
/// absent or null.
fn flag_value(v: Option<&Value>, location: FlagLocation) -> Result<Option<Action>, MappingError> {
    let to_action = |b: bool| if b { Action::Create } else { Action::Delete };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(to_action(*b))),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(Action::Create)),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => {
            Ok(Some(Action::Delete))
        }
        Some(_) => Err(MappingError::InvalidMembershipFlag { location }),
    }
}

/// CREATE or DELETE for a message (DESIGN.md 4.3 "Membership"): the flag at
/// `properties[audience_key]` (track) or `traits[audience_key]`, then
/// `context.traits[audience_key]` (identify) decides; only without a flag
/// does the track event name decide (`Audience Entered` → CREATE,
/// `Audience Exited` → DELETE). A flag contradicting the event name is an
/// error.
///
/// # Errors
/// [`MappingError::InvalidMembershipFlag`],
/// [`MappingError::MembershipContradiction`],
/// [`MappingError::NoMembershipSignal`].
pub fn membership(msg: &Value, audience_key: &str) -> Result<Action, MappingError> {
    let is_track = msg.get("type").and_then(Value::as_str) == Some("track");
    fn at<'a>(obj: Option<&'a Value>, key: &str) -> Option<&'a Value> {
        obj.and_then(|o| o.get(key))
    }
    let flag = if is_track {
        flag_value(
            at(msg.get("properties"), audience_key),
            FlagLocation::Properties,
        )?
        .map(|a| (a, FlagLocation::Properties))
    } else {
        match flag_value(at(msg.get("traits"), audience_key), FlagLocation::Traits)? {
            Some(a) => Some((a, FlagLocation::Traits)),
            None => flag_value(
                at(
                    msg.get("context").and_then(|c| c.get("traits")),
                    audience_key,
                ),
                FlagLocation::ContextTraits,
            )?
            .map(|a| (a, FlagLocation::ContextTraits)),
        }
    };
    let by_event = if is_track {
        match msg.get("event").and_then(Value::as_str) {
            Some(AUDIENCE_ENTERED) => Some(Action::Create),
            Some(AUDIENCE_EXITED) => Some(Action::Delete),
            _ => None,
        }
    } else {
        None
    };
    match (flag, by_event) {
        (Some((f, location)), Some(e)) if f != e => Err(MappingError::MembershipContradiction {
            location,
            flag: f,
            event: e,
        }),
        (Some((f, _)), _) => Ok(f),
        (None, Some(e)) => Ok(e),
        (None, None) => Err(MappingError::NoMembershipSignal),
    }
}

/// A PII value: strings (non-blank) as is, numbers stringified; anything
/// else is absent.
fn pii_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A consent value: like [`pii_string`], plus booleans stringified (so a
/// boolean `amznAdStorage` is reported as `invalid_consent_value` instead of
/// silently missing).
fn consent_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Bool(b) => Some(b.to_string()),
        other => pii_string(Some(other)),
    }
}

#[cfg(test)]
mod tests;
