//! Request and response bodies of the AMC Audiences API and `/v2/profiles`.

use serde::{Deserialize, Serialize};

use super::Digits;

/// [AUD] `name`: 10–128 characters.
pub const MIN_NAME_CHARS: usize = 10;
/// [AUD] `name`: 10–128 characters.
pub const MAX_NAME_CHARS: usize = 128;
/// [AUD] `description`: at most 1,000 characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// [AUD] `metadata.ttl`: 0–34,300,800 seconds (397 days).
pub const MAX_TTL_SECS: u64 = crate::config::MAX_TTL_SECS;
/// [AUD] `audienceFees[].currency` values.
pub const CURRENCIES: &[&str] = crate::config::CURRENCIES;

/// [AUD] `targetResource`: exactly one of a DSP advertiser (a JSON number,
/// > 2^53) or an AMC connection (a string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetResource {
    /// `{"advertiserId": <number>}`.
    AdvertiserId(Digits),
    /// `{"connectionId": "<string>"}`.
    ConnectionId(String),
}

/// [AUD] `metadata.audienceFees[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceFee {
    /// One of [`CURRENCIES`].
    pub currency: String,
    /// Fee per thousand impressions, in cents.
    pub cpm_cents: u64,
}

/// [AUD] `metadata` of an audience.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceMetadata {
    /// The caller's own id for the audience.
    pub external_audience_id: String,
    /// Membership time-to-live in seconds (0–34,300,800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// Fees charged for the audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_fees: Option<Vec<AudienceFee>>,
}

/// Body of `POST /amc/audiences/metadata` and `PUT /amc/audiences/metadata/{audienceId}` [AUD].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceRequest {
    /// 10–128 characters.
    pub name: String,
    /// At most 1,000 characters.
    pub description: String,
    /// Advertiser or connection the audience belongs to.
    pub target_resource: TargetResource,
    /// ISO 3166-1 alpha-2 country of the audience's members.
    pub country_code: String,
    /// External id, ttl, fees.
    pub metadata: AudienceMetadata,
}

impl AudienceRequest {
    /// Checks [AUD]'s documented limits before anything is sent: name 10–128
    /// characters, description ≤ 1,000, ttl ≤ 34,300,800, known currencies,
    /// a non-empty external audience id, a 2-letter country code.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.name.chars().count();
        if !(MIN_NAME_CHARS..=MAX_NAME_CHARS).contains(&n) {
            return Err(format!(
                "name must be {MIN_NAME_CHARS}–{MAX_NAME_CHARS} characters (got {n})"
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        if let TargetResource::ConnectionId(c) = &self.target_resource
            && c.is_empty()
        {
            return Err("targetResource.connectionId must not be empty".into());
        }
        let cc = self.country_code.as_bytes();
        if cc.len() != 2 || !cc.iter().all(u8::is_ascii_uppercase) {
            return Err("countryCode must be an ISO 3166-1 alpha-2 code".into());
        }
        if self.metadata.external_audience_id.is_empty() {
            return Err("metadata.externalAudienceId must not be empty".into());
        }
        if let Some(ttl) = self.metadata.ttl
            && ttl > MAX_TTL_SECS
        {
            return Err(format!("metadata.ttl must be 0–{MAX_TTL_SECS} seconds"));
        }
        for fee in self.metadata.audience_fees.iter().flatten() {
            if !CURRENCIES.contains(&fee.currency.as_str()) {
                return Err(format!(
                    "metadata.audienceFees currency {:?} is not one of {}",
                    fee.currency,
                    CURRENCIES.join(" ")
                ));
            }
        }
        Ok(())
    }
}

/// 201 response of `POST /amc/audiences/metadata` [AUD].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAudience {
    /// Amazon's id of the new audience (a number > 2^53).
    pub audience_id: Digits,
    /// Echo of `metadata.externalAudienceId`.
    #[serde(default)]
    pub external_audience_id: String,
}

/// Response of `GET /amc/audiences/metadata/{audienceId}` [AUD]. Fields the
/// API may omit are optional; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audience {
    /// The audience id.
    pub audience_id: Digits,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Target resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<TargetResource>,
    /// Country code.
    #[serde(default)]
    pub country_code: String,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AudienceMetadata>,
}

/// [AUD] `jobState` of a records upload job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// Still processing: poll again.
    Pending,
    /// Every record was applied.
    Succeeded,
    /// Some records were rejected: see `invalidRecords`.
    #[serde(rename = "PARTIALLYSUCCEEDED")]
    PartiallySucceeded,
    /// The job failed as a whole.
    Failed,
    /// Finished (older spelling of success).
    Completed,
    /// A state this client does not know; treated as not terminal.
    #[serde(other)]
    Unknown,
}

impl JobState {
    /// True for states that end polling (`SUCCEEDED`, `PARTIALLYSUCCEEDED`,
    /// `FAILED`, `COMPLETED`).
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Unknown)
    }

    /// Amazon's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::PartiallySucceeded => "PARTIALLYSUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Completed => "COMPLETED",
            JobState::Unknown => "UNKNOWN",
        }
    }
}

/// [AUD] one entry of `invalidRecords`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidRecord {
    /// The record's `externalUserId`.
    pub external_id: String,
    /// Why it was rejected.
    #[serde(default)]
    pub error: String,
}

/// Response of `GET /amc/audiences/records/{jobRequestId}` [AUD].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The job's state.
    pub job_state: JobState,
    /// Echo of the job id, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_request_id: Option<String>,
    /// Records that were not applied.
    #[serde(default)]
    pub invalid_records: Vec<InvalidRecord>,
}

/// [PROF] `accountInfo` of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// Marketplace id (`ATVPDKIKX0DER`).
    #[serde(default)]
    pub marketplace_string_id: String,
    /// Entity id.
    #[serde(default)]
    pub id: String,
    /// `seller`, `vendor` or `agency`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Account name.
    #[serde(default)]
    pub name: String,
}

/// [PROF] one entry of `GET /v2/profiles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The profile id (may exceed 2^53).
    pub profile_id: Digits,
    /// Marketplace country.
    #[serde(default)]
    pub country_code: String,
    /// Currency.
    #[serde(default)]
    pub currency_code: String,
    /// IANA time zone.
    #[serde(default)]
    pub timezone: String,
    /// The account.
    #[serde(default)]
    pub account_info: AccountInfo,
}
