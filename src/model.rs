//! Domain types shared by every layer below the ingest edge: what a membership
//! change looks like once its PII has been hashed.
//!
//! Field names follow the Amazon Ads AMC Audiences API ("Advertiser audiences"
//! OpenAPI, `POST /amc/audiences/records`): `externalUserId`, `hashedPII`,
//! `userConsent`, `action`. Nothing in this module ever holds raw PII: every
//! string inside [`HashedPii`] is a 64-character lowercase hex SHA-256 digest
//! produced by [`crate::pii`].

use serde::{Deserialize, Serialize};

/// Membership action, as Amazon spells it in a record's `action` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Add the user to the audience (`CREATE`).
    Create,
    /// Remove the user from the audience (`DELETE`).
    Delete,
}

impl Action {
    /// Amazon's wire spelling: `"CREATE"` or `"DELETE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Delete => "DELETE",
        }
    }

    /// Parses Amazon's spelling (case-insensitive). `None` for anything else.
    pub fn parse(s: &str) -> Option<Action> {
        if s.eq_ignore_ascii_case("CREATE") {
            Some(Action::Create)
        } else if s.eq_ignore_ascii_case("DELETE") {
            Some(Action::Delete)
        } else {
            None
        }
    }
}

/// One `hashedPII` object of an Amazon audience record.
///
/// Keys are Amazon's (`firstname`, `lastname`, `postal`, …). Every present value
/// is 64 lowercase hex characters (SHA-256 of the normalized value, or a value
/// the caller had already hashed). Absent fields are omitted from JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HashedPii {
    /// SHA-256 of the normalized first name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    /// SHA-256 of the normalized last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<String>,
    /// SHA-256 of the normalized street address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// SHA-256 of the normalized postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal: Option<String>,
    /// SHA-256 of the normalized phone number (E.164 digits, no `+`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// SHA-256 of the normalized city.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// SHA-256 of the normalized state / region code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// SHA-256 of the normalized email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl HashedPii {
    /// True when no field is present (such an object must not be sent).
    pub fn is_empty(&self) -> bool {
        self.firstname.is_none()
            && self.lastname.is_none()
            && self.address.is_none()
            && self.postal.is_none()
            && self.phone.is_none()
            && self.city.is_none()
            && self.state.is_none()
            && self.email.is_none()
    }
}

/// Amazon Consent Signal value (`GRANTED` or `DENIED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConsentValue {
    /// The user granted this purpose.
    Granted,
    /// The user denied this purpose.
    Denied,
}

/// `userConsent.consent.amzn`: the Amazon Consent Signal pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmznConsent {
    /// Consent to read/write Amazon cookies (`amznAdStorage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amzn_ad_storage: Option<ConsentValue>,
    /// Consent to use personal data for advertising (`amznUserData`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amzn_user_data: Option<ConsentValue>,
}

/// `userConsent.consent`: one or more consent formats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Consent {
    /// Amazon Consent Signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amzn: Option<AmznConsent>,
    /// IAB TCF v2 consent string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcf: Option<String>,
    /// IAB Global Privacy Platform string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpp: Option<String>,
}

/// `userConsent.geo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code (or Amazon's `UNKNOWN`).
    pub country_code: String,
    /// The user's IP address, when the source supplied one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// A record's `userConsent` object:
/// `{geo:{countryCode, ipAddress?}, consent?:{amzn?:{amznAdStorage?, amznUserData?}, tcf?, gpp?}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserConsent {
    /// Where the user is.
    pub geo: Geo,
    /// What the user agreed to; absent outside the UK/EEA when no signal was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
}

/// Where a change came from (for dead letters, status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The Segment-compatible HTTP endpoint (`/v1/batch`, `/v1/track`, …).
    Http,
    /// A file in the drop folder, or `amc-sync ingest`.
    File,
}

/// One hashed membership change, ready to be queued: the output of
/// mapping + `pii`, the input of the store. Holds no raw PII.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberChange {
    /// The local audience key (Segment `context.personas.computation_key`, or
    /// the CSV's audience). Resolved to an Amazon `audienceId` by the store.
    pub audience_key: String,
    /// Amazon's `externalUserId` (validated: `^[0-9a-zA-Z_-]{1,128}$`).
    pub external_user_id: String,
    /// `CREATE` (enter) or `DELETE` (exit).
    pub action: Action,
    /// Event time, milliseconds since the Unix epoch (Segment `timestamp`, else
    /// the time of receipt). Later events win when changes are coalesced.
    pub event_time_ms: i64,
    /// The record's country (ISO 3166-1 alpha-2 or `UNKNOWN`).
    pub country_code: String,
    /// One `hashedPII` object (Engage sends one identifier per event; the
    /// store merges distinct objects per user, up to 100).
    pub hashed_pii: HashedPii,
    /// Consent for the record, when the source carried one or the country needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_consent: Option<UserConsent>,
}
