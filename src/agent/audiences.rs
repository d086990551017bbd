//! Validation of a user-created audience, shared by `amc-sync audiences
//! create` and `POST /api/audiences` (docs/admin-api.md "Audiences"), so both
//! apply the same rules: key `^[0-9A-Za-z_.:-]{1,128}$` (Amazon's name
//! "AMC Sync <key>", 10–128 characters, is derived from it), an ISO 3166-1
//! alpha-2 country, exactly one of a positive 1–39-digit `advertiserId` or a
//! non-empty `connectionId`, a description of at most 1,000 characters, a
//! TTL of 0–34,300,800 s, and `cpmCents` with one of Amazon's currencies
//! (DESIGN.md 4.6), both or neither.

use crate::config::{CURRENCIES, MAX_TTL_SECS};
use crate::pii::Country;
use crate::store::{NewAudience, Target};

/// What a user asks for (API body / CLI flags), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AudienceInput {
    /// Local key (Segment `computation_key` or the CSV audience name).
    pub key: String,
    /// ISO 3166-1 alpha-2 country of the members (case-insensitive).
    pub country_code: String,
    /// Free text, at most 1,000 characters (default empty).
    #[serde(default)]
    pub description: Option<String>,
    /// Amazon DSP advertiser id: ASCII digits (may exceed 2^53).
    #[serde(default)]
    pub advertiser_id: Option<String>,
    /// AMC connection id.
    #[serde(default)]
    pub connection_id: Option<String>,
    /// Amazon `externalAudienceId` (default: the key).
    #[serde(default)]
    pub external_audience_id: Option<String>,
    /// Membership TTL, seconds (0–34,300,800).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Audience fee, CPM in cents (needs `currency`).
    #[serde(default)]
    pub cpm_cents: Option<u64>,
    /// Fee currency (needs `cpm_cents`).
    #[serde(default)]
    pub currency: Option<String>,
}

/// Why an [`AudienceInput`] was refused: the offending field (the API's
/// camelCase name, e.g. `countryCode`) and a message that never repeats the
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidAudience {
    /// The field, as named in the API body.
    pub field: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidAudience {
    InvalidAudience {
        field,
        message: message.into(),
    }
}

/// Longest `advertiserId`, digits.
const MAX_ADVERTISER_ID_DIGITS: usize = 39;

/// Checks `input` and builds what [`crate::store::Store::create_audience`]
/// needs (the country code canonicalized to upper case).
///
/// # Errors
/// [`InvalidAudience`] for the first field that breaks a rule.
pub fn validate(input: AudienceInput) -> Result<NewAudience, InvalidAudience> {
    if !crate::store::valid_audience_key(&input.key) {
        return Err(invalid(
            "key",
            "must be 1–128 characters of A–Z a–z 0–9 _ . : -",
        ));
    }
    let country = Country::parse(&input.country_code)
        .map_err(|_| invalid("countryCode", "not an ISO 3166-1 alpha-2 code"))?;
    let description = input.description.unwrap_or_default();
    if description.chars().count() > 1000 {
        return Err(invalid("description", "must be at most 1,000 characters"));
    }
    let target = match (input.advertiser_id, input.connection_id) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "connectionId",
                "give advertiserId or connectionId, not both",
            ));
        }
        (Some(id), None) => {
            if id.is_empty()
                || id.len() > MAX_ADVERTISER_ID_DIGITS
                || !id.bytes().all(|b| b.is_ascii_digit())
                || id.bytes().all(|b| b == b'0')
            {
                return Err(invalid(
                    "advertiserId",
                    "must be a positive number of 1–39 digits",
                ));
            }
            Target::AdvertiserId(id)
        }
        (None, Some(c)) => {
            if c.trim().is_empty() || c.chars().count() > 256 || c.chars().any(char::is_control) {
                return Err(invalid(
                    "connectionId",
                    "must be 1–256 printable characters",
                ));
            }
            Target::ConnectionId(c)
        }
        (None, None) => {
            return Err(invalid(
                "advertiserId",
                "advertiserId or connectionId is required",
            ));
        }
    };
    let ttl_secs = match input.ttl_secs {
        Some(t) if t > MAX_TTL_SECS => {
            return Err(invalid(
                "ttlSecs",
                format!("must be 0–{MAX_TTL_SECS} seconds"),
            ));
        }
        Some(t) => Some(u32::try_from(t).map_err(|_| invalid("ttlSecs", "out of range"))?),
        None => None,
    };
    let (cpm_cents, currency) = match (input.cpm_cents, input.currency) {
        (Some(c), Some(cur)) => {
            if !CURRENCIES.contains(&cur.as_str()) {
                return Err(invalid(
                    "currency",
                    format!("Amazon accepts {}", CURRENCIES.join(" ")),
                ));
            }
            let c = u32::try_from(c).map_err(|_| invalid("cpmCents", "too large"))?;
            (Some(c), Some(cur))
        }
        (Some(_), None) => return Err(invalid("currency", "cpmCents needs a currency")),
        (None, Some(_)) => return Err(invalid("cpmCents", "a currency needs cpmCents")),
        (None, None) => (None, None),
    };
    if let Some(e) = &input.external_audience_id
        && (e.is_empty() || e.chars().count() > 256 || e.chars().any(char::is_control))
    {
        return Err(invalid(
            "externalAudienceId",
            "must be 1–256 printable characters",
        ));
    }
    Ok(NewAudience {
        key: input.key,
        country_code: country.as_str().to_string(),
        description,
        target,
        external_audience_id: input.external_audience_id,
        ttl_secs,
        cpm_cents,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> AudienceInput {
        AudienceInput {
            key: "vip_2026".into(),
            country_code: "us".into(),
            advertiser_id: Some("585806696618602999".into()),
            ..AudienceInput::default()
        }
    }

    #[test]
    fn a_valid_input_is_canonicalized() {
        let a = validate(ok()).unwrap();
        assert_eq!(a.country_code, "US");
        assert_eq!(a.target, Target::AdvertiserId("585806696618602999".into()));
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(AudienceInput, &str)> = vec![
            (
                AudienceInput {
                    key: "a b".into(),
                    ..ok()
                },
                "key",
            ),
            (
                AudienceInput {
                    key: "k".repeat(129),
                    ..ok()
                },
                "key",
            ),
            (
                AudienceInput {
                    country_code: "XX1".into(),
                    ..ok()
                },
                "countryCode",
            ),
            (
                AudienceInput {
                    advertiser_id: Some("000".into()),
                    ..ok()
                },
                "advertiserId",
            ),
            (
                AudienceInput {
                    advertiser_id: Some("12a".into()),
                    ..ok()
                },
                "advertiserId",
            ),
            (
                AudienceInput {
                    advertiser_id: None,
                    ..ok()
                },
                "advertiserId",
            ),
            (
                AudienceInput {
                    connection_id: Some("c".into()),
                    ..ok()
                },
                "connectionId",
            ),
            (
                AudienceInput {
                    ttl_secs: Some(34_300_801),
                    ..ok()
                },
                "ttlSecs",
            ),
            (
                AudienceInput {
                    cpm_cents: Some(5),
                    currency: Some("BTC".into()),
                    ..ok()
                },
                "currency",
            ),
            (
                AudienceInput {
                    cpm_cents: Some(5),
                    ..ok()
                },
                "currency",
            ),
            (
                AudienceInput {
                    currency: Some("USD".into()),
                    ..ok()
                },
                "cpmCents",
            ),
            (
                AudienceInput {
                    description: Some("d".repeat(1001)),
                    ..ok()
                },
                "description",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(validate(input).unwrap_err().field, field);
        }
        assert!(
            validate(AudienceInput {
                ttl_secs: Some(34_300_800),
                ..ok()
            })
            .is_ok()
        );
    }
}
