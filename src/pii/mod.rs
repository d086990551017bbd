//! On-device PII normalization and SHA-256 hashing — the only place raw PII
//! is handled. Everything that leaves this module is hashed (`HashedPii`),
//! validated (`externalUserId`, country codes) or a consent signal.
//!
//! Invariant: raw values never cross below this module. Callers hand raw
//! strings in and get hex digests back; no function here logs, stores or
//! returns a raw value inside an error (errors carry reason codes only).
//!
//! Rules and their sources:
//! * profile [`Profile::Amazon`] (default): Amazon Ads' normalization as
//!   implemented by Amazon's reference uploader and address SDK; the exact
//!   rules are in `shared/vectors/RULES.md` and in [`rules`]'s doc comments;
//! * profile [`Profile::Segment`]: byte-for-byte the Segment "Amazon Ads DSP
//!   and AMC" destination, so hashes match audiences already sent through
//!   Segment;
//! * both: a value that is exactly 64 hex characters (either case) is taken as
//!   already hashed, lowercased and passed through; a value that normalizes to
//!   empty is omitted (DESIGN.md 4.4).

pub mod country;
pub mod phone;
pub mod rules;
pub mod tables;
pub mod text;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use country::Country;

use crate::model::{AmznConsent, Consent, ConsentValue, Geo, HashedPii, UserConsent};

/// Typed validation errors. [`PiiError::code`] gives the stable reason code
/// used in dead letters, reports and HTTP error bodies. No variant carries a
/// raw input value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    /// `externalUserId` does not match `^[0-9a-zA-Z_-]{1,128}$` (Amazon Ads
    /// AMC Audiences API, `POST /amc/audiences/records`).
    #[error("externalUserId must match ^[0-9a-zA-Z_-]{{1,128}}$")]
    InvalidExternalUserId,
    /// A UK/EEA record carries neither `amznAdStorage` + `amznUserData`, nor
    /// `tcf`, nor `gpp` (Amazon Ads consent requirements for UK/EEA data).
    #[error("records from the UK/EEA need consent: amznAdStorage and amznUserData, or tcf, or gpp")]
    ConsentRequired,
    /// An Amazon Consent Signal value other than GRANTED or DENIED.
    #[error("consent values must be GRANTED or DENIED")]
    InvalidConsentValue,
    /// Not an ISO 3166-1 alpha-2 code nor `UNKNOWN`.
    #[error("country code must be an ISO 3166-1 alpha-2 code or UNKNOWN")]
    InvalidCountryCode,
    /// A field name that is neither one of ours nor an Amazon `hashedPII` key.
    #[error("unknown PII field (expected one of: {})", Field::NAMES)]
    UnknownField,
    /// A profile name other than `amazon` or `segment`.
    #[error("unknown normalization profile (expected amazon or segment)")]
    UnknownProfile,
}

impl PiiError {
    /// Stable, machine-readable reason code (`snake_case`).
    pub fn code(&self) -> &'static str {
        match self {
            PiiError::InvalidExternalUserId => "invalid_external_user_id",
            PiiError::ConsentRequired => "consent_required",
            PiiError::InvalidConsentValue => "invalid_consent_value",
            PiiError::InvalidCountryCode => "invalid_country_code",
            PiiError::UnknownField => "unknown_field",
            PiiError::UnknownProfile => "unknown_profile",
        }
    }
}

/// Normalization profile.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Amazon Ads' reference normalization (RULES.md). The default.
    #[default]
    Amazon,
    /// Compatible with the Segment Amazon Ads DSP and AMC destination.
    Segment,
}

impl Profile {
    /// `"amazon"` or `"segment"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Amazon => "amazon",
            Profile::Segment => "segment",
        }
    }
}

impl FromStr for Profile {
    type Err = PiiError;
    fn from_str(s: &str) -> Result<Self, PiiError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amazon" => Ok(Profile::Amazon),
            "segment" => Ok(Profile::Segment),
            _ => Err(PiiError::UnknownProfile),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PII field of Amazon's `hashedPII` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `email`
    Email,
    /// `phone`
    Phone,
    /// `firstname`
    FirstName,
    /// `lastname`
    LastName,
    /// `address`
    Address,
    /// `city`
    City,
    /// `state`
    State,
    /// `postal`
    Postal,
}

impl Field {
    /// Every field, in Amazon's `hashedPII` order.
    pub const ALL: [Field; 8] = [
        Field::FirstName,
        Field::LastName,
        Field::Address,
        Field::Postal,
        Field::Phone,
        Field::City,
        Field::State,
        Field::Email,
    ];

    /// Accepted names, for help texts and errors.
    pub const NAMES: &'static str = "email, phone, first_name|firstname, last_name|lastname, \
address, city, state, postal|postal_code|zip";

    /// Parses a field name: ours (`first_name`), Amazon's `hashedPII` keys
    /// (`firstname`, `postal`) and common aliases (`zip`, `postal_code`,
    /// `firstName`). Case-insensitive; `-` and `_` are interchangeable.
    ///
    /// # Errors
    /// [`PiiError::UnknownField`] for anything else.
    pub fn parse(name: &str) -> Result<Field, PiiError> {
        let n: String = name
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-' && *c != ' ')
            .flat_map(char::to_lowercase)
            .collect();
        Ok(match n.as_str() {
            "email" | "emailaddress" => Field::Email,
            "phone" | "phonenumber" => Field::Phone,
            "firstname" | "fn" | "givenname" => Field::FirstName,
            "lastname" | "ln" | "surname" | "familyname" => Field::LastName,
            "address" | "street" | "streetaddress" | "address1" => Field::Address,
            "city" => Field::City,
            "state" | "region" | "province" => Field::State,
            "postal" | "postalcode" | "zip" | "zipcode" | "postcode" => Field::Postal,
            _ => return Err(PiiError::UnknownField),
        })
    }

    /// Amazon's `hashedPII` key for this field.
    pub fn amazon_key(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::Phone => "phone",
            Field::FirstName => "firstname",
            Field::LastName => "lastname",
            Field::Address => "address",
            Field::City => "city",
            Field::State => "state",
            Field::Postal => "postal",
        }
    }
}

impl FromStr for Field {
    type Err = PiiError;
    fn from_str(s: &str) -> Result<Self, PiiError> {
        Field::parse(s)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.amazon_key())
    }
}

/// Why a field was omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OmitReason {
    /// The input was empty or whitespace only.
    EmptyInput,
    /// The value failed the field's validity check (an email without a valid
    /// `@`, a phone number of impossible length, a malformed postal code).
    Invalid,
    /// Nothing was left after normalization (e.g. a name in a non-Latin script).
    EmptyAfterNormalization,
}

impl OmitReason {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            OmitReason::EmptyInput => "empty_input",
            OmitReason::Invalid => "invalid_value",
            OmitReason::EmptyAfterNormalization => "empty_after_normalization",
        }
    }

    /// A sentence for users (`amc-sync normalize`).
    pub fn explain(self, field: Field) -> &'static str {
        match (self, field) {
            (OmitReason::EmptyInput, _) => "the value is empty",
            (OmitReason::Invalid, Field::Email) => {
                "not an email address after cleaning (needs text before and after the first @)"
            }
            (OmitReason::Invalid, Field::Phone) => {
                "not a possible phone number for the record's country (wrong length or unparseable)"
            }
            (OmitReason::Invalid, Field::Postal) => {
                "does not match the country's postal code format"
            }
            (OmitReason::Invalid, _) => "the value is not valid for this field",
            (OmitReason::EmptyAfterNormalization, _) => {
                "nothing is left after normalization (only characters the rule removes)"
            }
        }
    }
}

/// Result of normalizing one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// The normalized string and its lowercase hex SHA-256 (for an already
    /// hashed input both are the lowercased input).
    Value {
        /// The normalized string that was hashed.
        normalized: String,
        /// 64 lowercase hex characters.
        sha256: String,
        /// True when the input was already a SHA-256 hex digest.
        passthrough: bool,
    },
    /// The field is left out of the record.
    Omitted(OmitReason),
}

impl Normalized {
    /// The digest, when the field is kept.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Normalized::Value { sha256, .. } => Some(sha256),
            Normalized::Omitted(_) => None,
        }
    }

    /// Consumes `self`, returning the digest when the field is kept.
    pub fn into_sha256(self) -> Option<String> {
        match self {
            Normalized::Value { sha256, .. } => Some(sha256),
            Normalized::Omitted(_) => None,
        }
    }
}

/// Lowercase hex SHA-256 of the UTF-8 bytes of `s` (64 characters).
pub fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The lowercased digest when `raw` is an already-hashed value: 64 hex
/// characters, either case, surrounding whitespace ignored (a CRLF export
/// leaves a `\r`; such a value must never be re-hashed — DESIGN.md 4.4).
fn already_hashed(raw: &str) -> Option<String> {
    let t = raw.trim_matches(text::is_py_space);
    text::is_sha256_hex(t).then(|| t.to_ascii_lowercase())
}

/// Normalizes one raw value without hashing it: the string Amazon would hash,
/// or `""` when the field would be omitted. Already-hashed input is returned
/// lowercased.
pub fn normalize_only(profile: Profile, field: Field, country: Country, raw: &str) -> String {
    if let Some(hex) = already_hashed(raw) {
        return hex;
    }
    match profile {
        Profile::Amazon => match field {
            Field::Email => rules::email(raw),
            Field::Phone => rules::phone(raw, country),
            Field::FirstName | Field::LastName => rules::name(raw),
            Field::Address => rules::address(raw, country),
            Field::City => rules::city(raw),
            Field::State => rules::state(raw, country),
            Field::Postal => rules::postal(raw, country),
        },
        Profile::Segment => match field {
            Field::Email => rules::segment_email(raw),
            Field::Phone => rules::segment_phone(raw),
            _ => rules::segment_standard(raw),
        },
    }
}

/// Normalizes and hashes one raw value (DESIGN.md 4.4).
///
/// `country` is the record's country (the audience's `countryCode` unless the
/// record carries its own); it selects the state, postal, address and phone
/// rules. Never panics, whatever the input.
pub fn normalize(profile: Profile, field: Field, country: Country, raw: &str) -> Normalized {
    if let Some(lower) = already_hashed(raw) {
        return Normalized::Value {
            normalized: lower.clone(),
            sha256: lower,
            passthrough: true,
        };
    }
    if raw.chars().all(text::is_py_space) {
        return Normalized::Omitted(OmitReason::EmptyInput);
    }
    let normalized = normalize_only(profile, field, country, raw);
    if normalized.is_empty() {
        let reason = match (profile, field) {
            (Profile::Amazon, Field::Email | Field::Phone | Field::Postal) => OmitReason::Invalid,
            _ => OmitReason::EmptyAfterNormalization,
        };
        return Normalized::Omitted(reason);
    }
    let sha256 = sha256_hex(&normalized);
    Normalized::Value {
        normalized,
        sha256,
        passthrough: false,
    }
}

/// Raw PII of one person, as mapped from an event or a CSV row. Lives only in
/// memory between mapping and [`hash_pii`]; its `Debug` output is redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawPii {
    /// Email address.
    pub email: Option<String>,
    /// Phone number, national or international format.
    pub phone: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Street address.
    pub address: Option<String>,
    /// City.
    pub city: Option<String>,
    /// State, region or province.
    pub state: Option<String>,
    /// Postal / ZIP code.
    pub postal: Option<String>,
}

impl fmt::Debug for RawPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<&str> = Field::ALL
            .iter()
            .filter(|fl| self.get(**fl).is_some())
            .map(|fl| fl.amazon_key())
            .collect();
        write!(f, "RawPii {{ present: {present:?}, values: <redacted> }}")
    }
}

impl RawPii {
    /// The raw value of `field`, if set.
    pub fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::Email => self.email.as_deref(),
            Field::Phone => self.phone.as_deref(),
            Field::FirstName => self.first_name.as_deref(),
            Field::LastName => self.last_name.as_deref(),
            Field::Address => self.address.as_deref(),
            Field::City => self.city.as_deref(),
            Field::State => self.state.as_deref(),
            Field::Postal => self.postal.as_deref(),
        }
    }

    /// Sets the raw value of `field`.
    pub fn set(&mut self, field: Field, value: Option<String>) {
        let slot = match field {
            Field::Email => &mut self.email,
            Field::Phone => &mut self.phone,
            Field::FirstName => &mut self.first_name,
            Field::LastName => &mut self.last_name,
            Field::Address => &mut self.address,
            Field::City => &mut self.city,
            Field::State => &mut self.state,
            Field::Postal => &mut self.postal,
        };
        *slot = value;
    }
}

/// Normalizes and hashes every present field into Amazon's `hashedPII`
/// object. Omitted fields (empty after normalization) are absent; the result
/// may be empty ([`HashedPii::is_empty`]).
pub fn hash_pii(profile: Profile, country: Country, raw: &RawPii) -> HashedPii {
    let h = |f: Field| {
        raw.get(f)
            .and_then(|v| normalize(profile, f, country, v).into_sha256())
    };
    HashedPii {
        firstname: h(Field::FirstName),
        lastname: h(Field::LastName),
        address: h(Field::Address),
        postal: h(Field::Postal),
        phone: h(Field::Phone),
        city: h(Field::City),
        state: h(Field::State),
        email: h(Field::Email),
    }
}

/// Checks an `externalUserId` against Amazon's pattern `^[0-9a-zA-Z_-]{1,128}$`
/// (AMC Audiences API, record schema).
///
/// # Errors
/// [`PiiError::InvalidExternalUserId`].
pub fn validate_external_user_id(id: &str) -> Result<(), PiiError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PiiError::InvalidExternalUserId)
    }
}

/// Consent inputs as mapped from an event (`properties.amznAdStorage`, …) or
/// a CSV row. Values are raw strings; see [`user_consent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConsent {
    /// The user's IP address (`properties.ip` or `context.ip`).
    pub ip_address: Option<String>,
    /// Amazon Consent Signal `amznAdStorage` (`GRANTED`/`DENIED`).
    pub amzn_ad_storage: Option<String>,
    /// Amazon Consent Signal `amznUserData` (`GRANTED`/`DENIED`).
    pub amzn_user_data: Option<String>,
    /// IAB TCF v2 string.
    pub tcf: Option<String>,
    /// IAB GPP string.
    pub gpp: Option<String>,
}

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn consent_value(v: &str) -> Result<ConsentValue, PiiError> {
    if v.eq_ignore_ascii_case("GRANTED") {
        Ok(ConsentValue::Granted)
    } else if v.eq_ignore_ascii_case("DENIED") {
        Ok(ConsentValue::Denied)
    } else {
        Err(PiiError::InvalidConsentValue)
    }
}

/// Builds a record's `userConsent`:
/// `{geo:{countryCode, ipAddress?}, consent?:{amzn?:{amznAdStorage, amznUserData}, tcf?, gpp?}}`.
///
/// The Amazon Consent Signal is used only when both `amznAdStorage` and
/// `amznUserData` are present (as the Segment destination does). UK/EEA
/// countries ([`Country::requires_consent`]) must carry the pair, `tcf` or
/// `gpp` (DESIGN.md 4.4, Amazon Ads consent guidance).
///
/// # Errors
/// [`PiiError::ConsentRequired`] for a UK/EEA record without a signal;
/// [`PiiError::InvalidConsentValue`] for an ACS value other than GRANTED/DENIED.
pub fn user_consent(country: Country, raw: &RawConsent) -> Result<UserConsent, PiiError> {
    let ads = non_blank(&raw.amzn_ad_storage);
    let data = non_blank(&raw.amzn_user_data);
    let amzn = match (ads, data) {
        (Some(a), Some(d)) => Some(AmznConsent {
            amzn_ad_storage: Some(consent_value(&a)?),
            amzn_user_data: Some(consent_value(&d)?),
        }),
        (Some(v), None) | (None, Some(v)) => {
            consent_value(&v)?;
            None
        }
        (None, None) => None,
    };
    let tcf = non_blank(&raw.tcf);
    let gpp = non_blank(&raw.gpp);
    let has_signal = amzn.is_some() || tcf.is_some() || gpp.is_some();
    if country.requires_consent() && !has_signal {
        return Err(PiiError::ConsentRequired);
    }
    Ok(UserConsent {
        geo: Geo {
            country_code: country.as_str().to_string(),
            ip_address: non_blank(&raw.ip_address),
        },
        consent: has_signal.then_some(Consent { amzn, tcf, gpp }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_string_is_the_known_constant() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn passthrough_lowercases_and_never_rehashes() {
        let h = "31C5543C1734D25C7206F5FD591525D0295BEC6FE84FF82F946A34FE970A1E66";
        for f in Field::ALL {
            let n = normalize(Profile::Amazon, f, Country::US, h);
            assert_eq!(n.sha256(), Some(h.to_ascii_lowercase().as_str()), "{f}");
        }
    }

    #[test]
    fn already_hashed_value_with_whitespace_or_cr_is_not_rehashed() {
        let h = "31c5543c1734d25c7206f5fd591525d0295bec6fe84ff82f946a34fe970a1e66";
        for raw in [
            format!(" {h} "),
            format!("{h}\r"),
            format!("\t{}", h.to_uppercase()),
        ] {
            for p in [Profile::Amazon, Profile::Segment] {
                for f in Field::ALL {
                    let n = normalize(p, f, Country::US, &raw);
                    assert_eq!(n.sha256(), Some(h), "{p} {f} {raw:?}");
                }
            }
        }
    }

    #[test]
    fn empty_and_invalid_fields_are_omitted_with_a_reason() {
        let us = Country::US;
        assert_eq!(
            normalize(Profile::Amazon, Field::FirstName, us, "  "),
            Normalized::Omitted(OmitReason::EmptyInput)
        );
        assert_eq!(
            normalize(Profile::Amazon, Field::Email, us, "nope"),
            Normalized::Omitted(OmitReason::Invalid)
        );
        assert_eq!(
            normalize(Profile::Amazon, Field::LastName, us, "山田"),
            Normalized::Omitted(OmitReason::EmptyAfterNormalization)
        );
    }

    #[test]
    fn field_names_accept_vector_and_amazon_spellings() {
        for (n, f) in [
            ("zip", Field::Postal),
            ("postal", Field::Postal),
            ("postal_code", Field::Postal),
            ("first_name", Field::FirstName),
            ("firstname", Field::FirstName),
            ("firstName", Field::FirstName),
            ("last_name", Field::LastName),
            ("EMAIL", Field::Email),
        ] {
            assert_eq!(Field::parse(n), Ok(f), "{n}");
        }
        assert_eq!(Field::parse("ssn"), Err(PiiError::UnknownField));
    }

    #[test]
    fn external_user_id_pattern() {
        assert!(validate_external_user_id("user_123-ABC").is_ok());
        assert!(validate_external_user_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "user@x.com", "é", &"a".repeat(129)] {
            assert_eq!(
                validate_external_user_id(bad),
                Err(PiiError::InvalidExternalUserId),
                "{bad}"
            );
        }
    }

    #[test]
    fn eea_records_need_consent() {
        let de = Country::parse("DE").unwrap();
        assert_eq!(
            user_consent(de, &RawConsent::default()),
            Err(PiiError::ConsentRequired)
        );
        // One half of the Amazon pair is not a signal.
        let half = RawConsent {
            amzn_ad_storage: Some("GRANTED".into()),
            ..Default::default()
        };
        assert_eq!(user_consent(de, &half), Err(PiiError::ConsentRequired));
        let pair = RawConsent {
            amzn_ad_storage: Some("granted".into()),
            amzn_user_data: Some("DENIED".into()),
            ip_address: Some(" 192.0.2.1 ".into()),
            ..Default::default()
        };
        let uc = user_consent(de, &pair).unwrap();
        assert_eq!(
            serde_json::to_value(&uc).unwrap(),
            serde_json::json!({
                "geo": {"countryCode": "DE", "ipAddress": "192.0.2.1"},
                "consent": {"amzn": {"amznAdStorage": "GRANTED", "amznUserData": "DENIED"}}
            })
        );
        let tcf = RawConsent {
            tcf: Some("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA".into()),
            ..Default::default()
        };
        assert!(user_consent(de, &tcf).is_ok());
    }

    #[test]
    fn us_records_need_no_consent_and_bad_values_are_rejected() {
        let uc = user_consent(Country::US, &RawConsent::default()).unwrap();
        assert_eq!(
            serde_json::to_value(&uc).unwrap(),
            serde_json::json!({"geo": {"countryCode": "US"}})
        );
        let bad = RawConsent {
            amzn_ad_storage: Some("yes".into()),
            amzn_user_data: Some("GRANTED".into()),
            ..Default::default()
        };
        assert_eq!(
            user_consent(Country::US, &bad),
            Err(PiiError::InvalidConsentValue)
        );
    }

    #[test]
    fn raw_pii_debug_is_redacted() {
        let raw = RawPii {
            email: Some("canary@example.com".into()),
            ..Default::default()
        };
        let dbg = format!("{raw:?}");
        assert!(!dbg.contains("canary"), "{dbg}");
        assert!(dbg.contains("email"));
    }

    #[test]
    fn hash_pii_builds_amazon_keys() {
        let raw = RawPii {
            email: Some("A@B.com".into()),
            first_name: Some("山田".into()),
            ..Default::default()
        };
        let h = hash_pii(Profile::Amazon, Country::US, &raw);
        assert_eq!(h.email.as_deref(), Some(sha256_hex("a@b.com").as_str()));
        assert!(h.firstname.is_none());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("{{\"email\":\"{}\"}}", sha256_hex("a@b.com")));
    }
}
