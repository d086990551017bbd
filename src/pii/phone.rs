//! Phone normalization (RULES.md 3): E.164 digits with the country calling
//! code and no `+`, parsed with libphonenumber semantics using the record's
//! country as the default region.
//!
//! Parsing and metadata come from the `phonenumber` crate (a maintained port
//! of Google's libphonenumber, metadata 9.0.x). Two decisions of that crate
//! differ from libphonenumber and are made here as libphonenumber makes them
//! (`PhoneNumberUtil.maybeExtractCountryCode`, `isPossibleNumberWithReason`):
//!
//! 1. Digits that start with the default region's calling code keep it as
//!    part of the national number unless the whole string is not a valid
//!    national number while the rest is, or the whole string is too long.
//!    (The crate strips the code whenever its buggy length check fails, so
//!    German `4964721108` became `4964721108` instead of `494964721108`.)
//! 2. "Possible" means the national significant number's length is one of
//!    the region's possible or local-only lengths, the union over all number
//!    types (libphonenumber computes that union at build time; the crate
//!    leaves the general descriptor's lengths empty).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{DATABASE, Metadata};
use regex::Regex;

use super::country::Country;

/// The E.164 digits (no `+`) for `raw` in `country`, or `None` when the value
/// is not a possible phone number there.
pub fn e164(raw: &str, country: Country) -> Option<String> {
    let stripped: String = raw.chars().filter(|&c| c != '+').collect();
    let region_meta = match country {
        Country::Iso(_) => DATABASE.by_id(country.as_str()),
        Country::Unknown => None,
    };
    let Some(meta) = region_meta else {
        // No default region (UNKNOWN, or a country without a numbering plan
        // in the metadata): the digits must start with a calling code.
        let n = phonenumber::parse(None, format!("+{stripped}")).ok()?;
        return finish(n.code().value(), &national_string(&n));
    };
    let parsed = phonenumber::parse(meta.id().parse().ok(), &stripped).ok();
    let cc = meta.country_code();
    let full = full_digits(&stripped, parsed.as_ref());
    let cc_str = cc.to_string();
    if !full.is_empty() && full.starts_with(&cc_str) {
        let general = anchored(meta)?;
        let potential = strip_national_prefix(meta, &general, &full[cc_str.len()..]);
        let strip_cc = (!general.is_match(&full) && general.is_match(&potential))
            || length_check(meta, full.len()) == Length::TooLong;
        let national = if strip_cc {
            potential
        } else {
            strip_national_prefix(meta, &general, &full)
        };
        return finish(cc, &national);
    }
    let n = parsed?;
    finish(n.code().value(), &national_string(&n))
}

fn national_string(n: &phonenumber::PhoneNumber) -> String {
    let national = n.national();
    format!(
        "{}{}",
        "0".repeat(usize::from(national.zeros())),
        national.value()
    )
}

fn finish(code: u16, national: &str) -> Option<String> {
    if national.is_empty() {
        return None;
    }
    let metas = DATABASE.by_code(&code)?;
    let meta = metas
        .iter()
        .find(|m| m.is_main_country_for_code())
        .or_else(|| metas.first())?;
    match length_check(meta, national.len()) {
        Length::Possible => Some(format!("{code}{national}")),
        _ => None,
    }
}

/// The digits libphonenumber works on before extracting a calling code: the
/// extension (as the crate found it) removed, vanity letters mapped to keypad
/// digits when there are at least three letters, everything else dropped.
fn full_digits(stripped: &str, parsed: Option<&phonenumber::PhoneNumber>) -> String {
    let letters = stripped.chars().filter(|c| c.is_ascii_alphabetic()).count();
    // Cut the extension: the crate reports its digits; they are the last ones.
    let mut body: Vec<char> = Vec::with_capacity(stripped.len());
    let lower = stripped.to_ascii_lowercase();
    let ext_at = parsed.and_then(|n| n.extension()).and_then(|_| {
        ["ext", "x", "#", ";"]
            .iter()
            .filter_map(|m| lower.find(m))
            .min()
    });
    let source = match ext_at {
        Some(i) => &stripped[..i],
        None => stripped,
    };
    for c in source.chars() {
        if c.is_ascii_digit() {
            body.push(c);
        } else if let Some(d) = c.to_digit(10) {
            // Non-ASCII decimal digits (e.g. full-width) count as digits.
            body.extend(char::from_digit(d, 10));
        } else if letters >= 3 && c.is_ascii_alphabetic() {
            body.push(keypad(c));
        }
    }
    body.into_iter().collect()
}

fn keypad(c: char) -> char {
    match c.to_ascii_uppercase() {
        'A'..='C' => '2',
        'D'..='F' => '3',
        'G'..='I' => '4',
        'J'..='L' => '5',
        'M'..='O' => '6',
        'P'..='S' => '7',
        'T'..='V' => '8',
        _ => '9',
    }
}

/// libphonenumber `maybeStripNationalPrefixAndCarrierCode`, without the
/// transform rule (used by a handful of regions such as AR, BR, MX): strips the
/// national prefix unless that turns a valid national number into an invalid one.
fn strip_national_prefix(meta: &Metadata, general: &Regex, number: &str) -> String {
    if meta.national_prefix_transform_rule().is_some() {
        return number.to_string();
    }
    // nationalPrefixForParsing defaults to nationalPrefix (BuildMetadataFromXml).
    let end = match (meta.national_prefix_for_parsing(), meta.national_prefix()) {
        (Some(re), _) => re.find(number).filter(|m| m.start() == 0).map(|m| m.end()),
        (None, Some(p)) if !p.is_empty() => number.starts_with(p).then_some(p.len()),
        _ => None,
    };
    match end {
        Some(end) if end > 0 => {
            let rest = &number[end..];
            if general.is_match(number) && !general.is_match(rest) {
                number.to_string()
            } else {
                rest.to_string()
            }
        }
        _ => number.to_string(),
    }
}

type Cache = RwLock<HashMap<String, Arc<Regex>>>;
static GENERAL: LazyLock<Cache> = LazyLock::new(|| RwLock::new(HashMap::new()));

/// The region's general national-number pattern, anchored for a full match.
fn anchored(meta: &Metadata) -> Option<Arc<Regex>> {
    if let Some(r) = GENERAL.read().ok()?.get(meta.id()) {
        return Some(r.clone());
    }
    let pattern = meta.descriptors().general().national_number().as_str();
    let re = Arc::new(Regex::new(&format!("(?x)^(?:{pattern})$")).ok()?);
    GENERAL
        .write()
        .ok()?
        .insert(meta.id().to_string(), re.clone());
    Some(re)
}

#[derive(Debug, PartialEq, Eq)]
enum Length {
    Possible,
    TooShort,
    TooLong,
    Invalid,
}

/// libphonenumber `testNumberLength` for type UNKNOWN.
fn length_check(meta: &Metadata, len: usize) -> Length {
    let d = meta.descriptors();
    let types = [
        Some(d.general()),
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ];
    let Ok(len) = u16::try_from(len) else {
        return Length::TooLong;
    };
    let mut possible: Vec<u16> = Vec::new();
    let mut local: Vec<u16> = Vec::new();
    for t in types.iter().flatten() {
        possible.extend(t.possible_length());
        local.extend(t.possible_local_length());
    }
    if local.contains(&len) || possible.contains(&len) {
        return Length::Possible;
    }
    match (possible.iter().min(), possible.iter().max()) {
        (Some(&min), _) if len < min => Length::TooShort,
        (_, Some(&max)) if len > max => Length::TooLong,
        (None, None) => Length::Invalid,
        _ => Length::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str, cc: &str) -> String {
        e164(raw, Country::parse(cc).unwrap()).unwrap_or_default()
    }

    #[test]
    fn calling_code_is_kept_only_when_libphonenumber_would_keep_it() {
        // Regression: a German national number starting with 49 lost its
        // first two digits (the crate stripped them as a calling code).
        assert_eq!(p("4964721108", "DE"), "494964721108");
        assert_eq!(p("819-318-8662", "JP"), "818193188662");
        assert_eq!(p("(810) 8728826", "JP"), "818108728826");
        // Too long for a national number: the leading digits are the code.
        assert_eq!(p("44 20 7946 0958", "GB"), "442079460958");
        assert_eq!(p("1 415 555 2671", "US"), "14155552671");
    }

    #[test]
    fn trunk_prefix_idd_extension_and_vanity() {
        assert_eq!(p("020 7946 0958", "GB"), "442079460958");
        assert_eq!(p("0049 30 1234567", "GB"), "49301234567");
        assert_eq!(p("011 44 20 7946 0958", "US"), "442079460958");
        assert_eq!(p("(415) 555-2671 ext. 123", "US"), "14155552671");
        assert_eq!(p("1-800-FLOWERS", "US"), "18003569377");
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        assert_eq!(p("+1 415 555", "US"), "");
        assert_eq!(p("12", "US"), "");
        assert_eq!(p("", "US"), "");
        assert_eq!(p("☎", "US"), "");
    }
}
