//! The records request body (`POST /amc/audiences/records`, [AUD]) written by
//! hand: one pass, no intermediate `serde_json::Value`, `audienceId` as bare
//! digits, and an exact size function so the planner can split batches by a
//! byte cap before encoding anything.
//!
//! Body shape ([AUD]):
//! `{"audienceId":<number>,"records":[{"externalUserId":"…","countryCode":"US",
//! "action":"CREATE","hashedPII":[{"email":"<64 hex>",…}],"userConsent":{…}},…]}`.
//! `encode_records_body(id, rs).len() == body_encoded_len(id, rs)` always.

use serde::{Deserialize, Serialize};

use super::Digits;
use crate::model::{Action, AmznConsent, ConsentValue, HashedPii, MemberChange, UserConsent};

/// [AUD]: 1–10,000 records per `POST /amc/audiences/records`.
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// The bytes that close a records body (`]}`).
pub const BODY_CLOSE: &[u8] = b"]}";

/// One record of a records upload ([AUD] `records[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// `externalUserId`, `^[0-9a-zA-Z_-]{1,128}$`.
    pub external_user_id: String,
    /// `countryCode` (optional; ISO 3166-1 alpha-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// `action`: `CREATE` or `DELETE`.
    pub action: Action,
    /// `hashedPII`: 1–100 objects of 64-hex SHA-256 digests.
    #[serde(rename = "hashedPII")]
    pub hashed_pii: Vec<HashedPii>,
    /// `userConsent` (required for UK/EEA users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_consent: Option<UserConsent>,
}

impl Record {
    /// The record for one queued change.
    pub fn from_change(c: &MemberChange) -> Record {
        Record {
            external_user_id: c.external_user_id.clone(),
            country_code: Some(c.country_code.clone()),
            action: c.action,
            hashed_pii: vec![c.hashed_pii.clone()],
            user_consent: c.user_consent.clone(),
        }
    }
}

const OPEN: &[u8] = b"{\"audienceId\":";
const RECORDS: &[u8] = b",\"records\":[";

/// Bytes of a body with no records: `{"audienceId":<digits>,"records":[]}`.
/// A body of `n` records is this plus the records plus `n - 1` commas.
pub fn body_overhead_len(audience_id: &Digits) -> usize {
    OPEN.len() + audience_id.as_str().len() + RECORDS.len() + BODY_CLOSE.len()
}

/// Exact size of the body [`encode_records_body`] writes.
pub fn body_encoded_len(audience_id: &Digits, records: &[Record]) -> usize {
    body_overhead_len(audience_id)
        + records.iter().map(record_encoded_len).sum::<usize>()
        + records.len().saturating_sub(1)
}

/// Encodes a records body. Writes exactly [`body_encoded_len`] bytes.
pub fn encode_records_body(audience_id: &Digits, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_encoded_len(audience_id, records));
    encode_records_body_into(&mut out, audience_id, records);
    out
}

/// Appends a records body to `out` (reuse one buffer across batches).
pub fn encode_records_body_into(out: &mut Vec<u8>, audience_id: &Digits, records: &[Record]) {
    out.extend_from_slice(OPEN);
    out.extend_from_slice(audience_id.as_str().as_bytes());
    out.extend_from_slice(RECORDS);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_record(out, r);
    }
    out.extend_from_slice(BODY_CLOSE);
}

/// Exact encoded size of one record (without the separating comma).
pub fn record_encoded_len(r: &Record) -> usize {
    let mut n = b"{\"externalUserId\":".len() + str_len(&r.external_user_id);
    if let Some(cc) = &r.country_code {
        n += b",\"countryCode\":".len() + str_len(cc);
    }
    n += b",\"action\":\"".len() + r.action.as_str().len() + 1;
    n += b",\"hashedPII\":[".len() + 1; // `[` … `]`
    n += r.hashed_pii.iter().map(pii_len).sum::<usize>() + r.hashed_pii.len().saturating_sub(1);
    if let Some(uc) = &r.user_consent {
        n += b",\"userConsent\":".len() + consent_len(uc);
    }
    n + 1 // `}`
}

fn write_record(out: &mut Vec<u8>, r: &Record) {
    out.extend_from_slice(b"{\"externalUserId\":");
    write_str(out, &r.external_user_id);
    if let Some(cc) = &r.country_code {
        out.extend_from_slice(b",\"countryCode\":");
        write_str(out, cc);
    }
    out.extend_from_slice(b",\"action\":\"");
    out.extend_from_slice(r.action.as_str().as_bytes());
    out.push(b'"');
    out.extend_from_slice(b",\"hashedPII\":[");
    for (i, p) in r.hashed_pii.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_pii(out, p);
    }
    out.push(b']');
    if let Some(uc) = &r.user_consent {
        out.extend_from_slice(b",\"userConsent\":");
        write_consent(out, uc);
    }
    out.push(b'}');
}

fn pii_fields(p: &HashedPii) -> [(&'static [u8], Option<&String>); 8] {
    [
        (b"\"firstname\":", p.firstname.as_ref()),
        (b"\"lastname\":", p.lastname.as_ref()),
        (b"\"address\":", p.address.as_ref()),
        (b"\"postal\":", p.postal.as_ref()),
        (b"\"phone\":", p.phone.as_ref()),
        (b"\"city\":", p.city.as_ref()),
        (b"\"state\":", p.state.as_ref()),
        (b"\"email\":", p.email.as_ref()),
    ]
}

fn pii_len(p: &HashedPii) -> usize {
    let mut n = 2;
    let mut first = true;
    for (k, v) in pii_fields(p) {
        if let Some(v) = v {
            n += usize::from(!first) + k.len() + str_len(v);
            first = false;
        }
    }
    n
}

fn write_pii(out: &mut Vec<u8>, p: &HashedPii) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in pii_fields(p) {
        if let Some(v) = v {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(k);
            write_str(out, v);
            first = false;
        }
    }
    out.push(b'}');
}

fn consent_value(v: ConsentValue) -> &'static [u8] {
    match v {
        ConsentValue::Granted => b"\"GRANTED\"",
        ConsentValue::Denied => b"\"DENIED\"",
    }
}

/// Writes or measures `userConsent` (one routine, so size and bytes agree).
fn consent_walk(uc: &UserConsent, sink: &mut dyn FnMut(&[u8], Option<&str>)) {
    sink(b"{\"geo\":{\"countryCode\":", Some(&uc.geo.country_code));
    if let Some(ip) = &uc.geo.ip_address {
        sink(b",\"ipAddress\":", Some(ip));
    }
    sink(b"}", None);
    if let Some(c) = &uc.consent {
        sink(b",\"consent\":{", None);
        let mut first = true;
        let mut sep = |sink: &mut dyn FnMut(&[u8], Option<&str>)| {
            if !first {
                sink(b",", None);
            }
            first = false;
        };
        if let Some(AmznConsent {
            amzn_ad_storage,
            amzn_user_data,
        }) = &c.amzn
        {
            sep(sink);
            sink(b"\"amzn\":{", None);
            let mut inner_first = true;
            for (k, v) in [
                (&b"\"amznAdStorage\":"[..], amzn_ad_storage),
                (&b"\"amznUserData\":"[..], amzn_user_data),
            ] {
                if let Some(v) = v {
                    if !inner_first {
                        sink(b",", None);
                    }
                    inner_first = false;
                    sink(k, None);
                    sink(consent_value(*v), None);
                }
            }
            sink(b"}", None);
        }
        if let Some(t) = &c.tcf {
            sep(sink);
            sink(b"\"tcf\":", Some(t));
        }
        if let Some(g) = &c.gpp {
            sep(sink);
            sink(b"\"gpp\":", Some(g));
        }
        sink(b"}", None);
    }
    sink(b"}", None);
}

fn consent_len(uc: &UserConsent) -> usize {
    let mut n = 0;
    consent_walk(uc, &mut |raw, s| n += raw.len() + s.map_or(0, str_len));
    n
}

fn write_consent(out: &mut Vec<u8>, uc: &UserConsent) {
    consent_walk(uc, &mut |raw, s| {
        out.extend_from_slice(raw);
        if let Some(s) = s {
            write_str(out, s);
        }
    });
}

/// Bytes that need a JSON escape: `"`, `\`, controls (< 0x20).
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Encoded length of a JSON string literal, quotes included.
#[inline]
fn str_len(s: &str) -> usize {
    let b = s.as_bytes();
    if !b.iter().any(|&c| needs_escape(c)) {
        return b.len() + 2;
    }
    2 + b
        .iter()
        .map(|&c| match c {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            c if c < 0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Writes a JSON string literal (RFC 8259 §7); UTF-8 passes through.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.push(b'"');
    if !b.iter().any(|&c| needs_escape(c)) {
        out.extend_from_slice(b);
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &c in b {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                c if c < 0x20 => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c >> 4) as usize]);
                    out.push(HEX[(c & 15) as usize]);
                }
                c => out.push(c),
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Consent, Geo};

    fn rec(i: usize) -> Record {
        Record {
            external_user_id: format!("user_{i}"),
            country_code: Some("DE".into()),
            action: if i.is_multiple_of(2) {
                Action::Create
            } else {
                Action::Delete
            },
            hashed_pii: vec![
                HashedPii {
                    email: Some("a".repeat(64)),
                    phone: Some("b".repeat(64)),
                    ..Default::default()
                },
                HashedPii {
                    firstname: Some("c".repeat(64)),
                    ..Default::default()
                },
            ],
            user_consent: Some(UserConsent {
                geo: Geo {
                    country_code: "DE".into(),
                    ip_address: Some("10.0.0.1".into()),
                },
                consent: Some(Consent {
                    amzn: Some(AmznConsent {
                        amzn_ad_storage: Some(ConsentValue::Granted),
                        amzn_user_data: Some(ConsentValue::Denied),
                    }),
                    tcf: Some("CP\"x\\\n\u{1}é".into()),
                    gpp: None,
                }),
            }),
        }
    }

    #[test]
    fn encoder_matches_serde_and_its_size() {
        let id = Digits::parse("18446744073709551615").unwrap();
        let mut rs: Vec<Record> = (0..5).map(rec).collect();
        rs[1].user_consent = None;
        rs[2].country_code = None;
        rs[3].user_consent.as_mut().unwrap().consent = None;
        rs[4]
            .user_consent
            .as_mut()
            .unwrap()
            .consent
            .as_mut()
            .unwrap()
            .amzn = None;
        rs[4]
            .user_consent
            .as_mut()
            .unwrap()
            .consent
            .as_mut()
            .unwrap()
            .gpp = Some("DBABMA~x".into());
        let body = encode_records_body(&id, &rs);
        assert_eq!(body.len(), body_encoded_len(&id, &rs));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("{\"audienceId\":18446744073709551615,"));
        // Same JSON as serde's encoding of the same structures.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            audience_id: &'a Digits,
            records: &'a [Record],
        }
        let expected = serde_json::to_string(&Body {
            audience_id: &id,
            records: &rs,
        })
        .unwrap();
        assert_eq!(text, expected);
        assert_eq!(encode_records_body(&id, &[]).len(), body_overhead_len(&id));
    }
}
