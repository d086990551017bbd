//! The per-field normalization rules.
//!
//! * `amazon` profile: Amazon Ads' published normalization as implemented by
//!   Amazon's reference uploader ("Amazon Marketing Cloud uploader from AWS",
//!   `source/glue/normalizers/*`) and Amazon's address-normalization SDK
//!   (`amazon-ads-advertiser-audience-normalization-sdk-py`, `AddressHash.py`),
//!   with the four deliberate differences listed at the top of
//!   `shared/vectors/RULES.md`. Section numbers below refer to RULES.md.
//! * `segment` profile: the Segment "Amazon Ads DSP and AMC" cloud destination
//!   (`action-destinations`, `destinations/amazon-amc/function.ts`): lowercase,
//!   keep an allowed character class, trim.
//!
//! Every function returns the normalized string; an empty string means "omit
//! this field". None of them allocates more than its output and a few
//! temporaries, and none can panic on any input.

use super::country::Country;
use super::tables;
use super::text::{is_py_decimal, is_py_numeric, is_py_space, is_py_word};

// ---------------------------------------------------------------- amazon ----

/// Email, RULES.md 1: full Unicode lowercase; keep Python `\w`, `.`, `@`, `-`;
/// then require `[\w.-]+@[\w.-]+` at the start (a non-`@` before the first `@`
/// and a non-`@` right after it), else empty.
pub fn email(raw: &str) -> String {
    let cleaned: String = raw
        .to_lowercase()
        .chars()
        .filter(|&c| is_py_word(c) || c == '.' || c == '@' || c == '-')
        .collect();
    match cleaned.find('@') {
        Some(at) if at > 0 && cleaned[at + 1..].chars().next().is_some_and(|c| c != '@') => cleaned,
        _ => String::new(),
    }
}

/// First and last name, RULES.md 2: lowercase; `ß`→`ss`, `ä`→`ae`, `ö`→`oe`,
/// `ü`→`ue`, `ø`→`o`, `æ`→`ae` (precomposed only); keep ASCII `[a-z0-9]`.
pub fn name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'ß' => out.push_str("ss"),
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ø' => out.push('o'),
            'æ' => out.push_str("ae"),
            _ => {}
        }
    }
    out
}

/// City, RULES.md 4: lowercase, keep ASCII `[a-z0-9]` (no transliteration).
pub fn city(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect()
}

/// State / region, RULES.md 5: uppercase, keep ASCII `[A-Z]`, look the result
/// up in the country's table (US, CA, DE, FR, IT, ES); on a miss keep the first
/// two letters when the raw input is longer than two characters; lowercase.
pub fn state(raw: &str, country: Country) -> String {
    let cleaned: String = raw
        .to_uppercase()
        .chars()
        .filter(|c| c.is_ascii_uppercase())
        .collect();
    if let Some(code) = tables::state_map(country).and_then(|m| m.get(cleaned.as_str())) {
        return code.to_ascii_lowercase();
    }
    if raw.chars().count() > 2 {
        cleaned
            .chars()
            .take(2)
            .collect::<String>()
            .to_ascii_lowercase()
    } else {
        cleaned.to_ascii_lowercase()
    }
}

/// Postal code, RULES.md 6. Case is preserved (`K1A0B1` and `k1a0b1` differ).
///
/// | country | keep | cut to | must match |
/// |---|---|---|---|
/// | CA | ASCII alphanumerics | 6 | `([A-Za-z][0-9]){3}` |
/// | GB | ASCII alphanumerics | 7 | `([A-Za-z]{1,2}[0-9]{2,3}|[A-Za-z]{1,2}[0-9][A-Za-z][0-9])[A-Za-z]{2}` |
/// | IN | Unicode decimal digits | 6 | 6 digits |
/// | JP | ASCII digits | 7 | 7 digits |
/// | others | ASCII digits | 5 | 5 digits |
pub fn postal(raw: &str, country: Country) -> String {
    let (keep, len): (fn(char) -> bool, usize) = match country.as_str() {
        "CA" => (|c| c.is_ascii_alphanumeric(), 6),
        "GB" => (|c| c.is_ascii_alphanumeric(), 7),
        "IN" => (is_py_decimal, 6),
        "JP" => (|c| c.is_ascii_digit(), 7),
        _ => (|c| c.is_ascii_digit(), 5),
    };
    let cut: Vec<char> = raw.chars().filter(|&c| keep(c)).take(len).collect();
    let ok = match country.as_str() {
        "CA" => {
            cut.len() == 6
                && cut
                    .chunks(2)
                    .all(|p| p[0].is_ascii_alphabetic() && p[1].is_ascii_digit())
        }
        "GB" => is_gb_postcode(&cut),
        _ => cut.len() == len,
    };
    if ok {
        cut.into_iter().collect()
    } else {
        String::new()
    }
}

/// GB: `^(([A-Za-z]{1,2}\d{2,3})|([A-Za-z]{1,2}\d[A-Za-z]\d))[A-Za-z]{2}$`
/// (the input holds ASCII alphanumerics only).
fn is_gb_postcode(s: &[char]) -> bool {
    let n = s.len();
    if !(5..=7).contains(&n) || !s[n - 2..].iter().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    let head = &s[..n - 2];
    let letters = head.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if !(1..=2).contains(&letters) {
        return false;
    }
    let rest = &head[letters..];
    let all_digits = rest.iter().all(|c| c.is_ascii_digit());
    (all_digits && (2..=3).contains(&rest.len()))
        || (rest.len() == 3
            && rest[0].is_ascii_digit()
            && rest[1].is_ascii_alphabetic()
            && rest[2].is_ascii_digit())
}

/// Phone, RULES.md 3: see [`super::phone::e164`].
pub fn phone(raw: &str, country: Country) -> String {
    super::phone::e164(raw, country).unwrap_or_default()
}

/// Street address, RULES.md 7: a port of Amazon's address-normalization SDK.
pub fn address(raw: &str, country: Country) -> String {
    let upper = raw.to_uppercase();
    let mut tokens = tokenize_address(&upper);
    apply_dash_rule(&mut tokens);
    apply_pound_rule(&mut tokens);
    let map = tables::address_map(country);
    let mut out = String::with_capacity(upper.len());
    for t in &tokens {
        match map.get(t.as_str()) {
            Some(v) => out.push_str(v),
            None => out.push_str(t),
        }
    }
    out.to_lowercase()
}

/// 7.1: split on comma runs, whitespace (Python `\s`), `!`, brackets `[{(` `]})`,
/// `.`, and the word-bounded literal `C/O`; delimiters are dropped, empty
/// pieces too.
fn tokenize_address(s: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for piece in s.split(|c: char| {
        is_py_space(c) || matches!(c, ',' | '!' | '[' | '{' | '(' | ']' | '}' | ')' | '.')
    }) {
        if piece.is_empty() {
            continue;
        }
        split_care_of(piece, &mut tokens);
    }
    tokens
}

/// Removes `\bC/O\b` occurrences from one delimiter-free piece, pushing the
/// non-empty remainders. Boundaries use Python's Unicode `\w`; the piece's own
/// edges count as boundaries because its neighbours were delimiters.
fn split_care_of(piece: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = piece.chars().collect();
    let mut start = 0;
    let mut i = 0;
    while i + 3 <= chars.len() {
        let is_co = chars[i] == 'C' && chars[i + 1] == '/' && chars[i + 2] == 'O';
        let left_ok = i == 0 || !is_py_word(chars[i - 1]);
        let right_ok = i + 3 == chars.len() || !is_py_word(chars[i + 3]);
        if is_co && left_ok && right_ok {
            if i > start {
                out.push(chars[start..i].iter().collect());
            }
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < chars.len() {
        out.push(chars[start..].iter().collect());
    }
}

/// 7.2: for each of the first N tokens (N fixed before the loop), split
/// `<numeric>-<non-numeric>` at the last dash (not first/last character).
fn apply_dash_rule(tokens: &mut Vec<String>) {
    let n = tokens.len();
    for i in 0..n {
        let Some(word) = tokens.get(i) else { break };
        let Some(pos) = word.rfind('-') else { continue };
        if pos == 0 || pos + 1 == word.len() {
            continue;
        }
        let (first, second) = (&word[..pos], &word[pos + 1..]);
        if is_py_numeric(first) && !is_py_numeric(second) {
            let (a, b) = (first.to_string(), second.to_string());
            tokens[i] = a;
            tokens.insert(i + 1, b);
        }
    }
}

/// 7.3: for each of the first N tokens, each match of `([A-Z]*)#([0-9A-Z/-]*)`
/// in the original word replaces the token at a moving cursor with its parts.
fn apply_pound_rule(tokens: &mut Vec<String>) {
    let n = tokens.len();
    for i in 0..n {
        let Some(word) = tokens.get(i).cloned() else {
            break;
        };
        if !word.contains('#') {
            continue;
        }
        let mut cursor = i;
        for (letters, tail) in pound_matches(&word) {
            if letters.is_empty() && tail.is_empty() {
                continue;
            }
            let parts: Vec<String> = if letters.is_empty() {
                vec!["#".into(), tail]
            } else if tail.is_empty() {
                vec![letters, "#".into()]
            } else {
                vec![letters, "#".into(), tail]
            };
            let step = parts.len() - 1;
            if cursor < tokens.len() {
                tokens.splice(cursor..=cursor, parts);
            } else {
                tokens.extend(parts);
            }
            cursor += step;
        }
    }
}

/// Non-overlapping, leftmost matches of `([A-Z]*)#([0-9A-Z/-]*)` (ASCII classes),
/// as Python's `re.finditer` finds them.
fn pound_matches(word: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < chars.len() {
        // Leftmost match start: the first position p >= pos such that
        // chars[p..] = [A-Z]* '#'. Scan for the next '#', then extend left over
        // ASCII uppercase letters not before `pos`.
        let Some(hash_off) = chars[pos..].iter().position(|&c| c == '#') else {
            break;
        };
        let hash = pos + hash_off;
        let mut start = hash;
        while start > pos && chars[start - 1].is_ascii_uppercase() {
            start -= 1;
        }
        let mut end = hash + 1;
        while end < chars.len()
            && (chars[end].is_ascii_digit()
                || chars[end].is_ascii_uppercase()
                || chars[end] == '-'
                || chars[end] == '/')
        {
            end += 1;
        }
        out.push((
            chars[start..hash].iter().collect(),
            chars[hash + 1..end].iter().collect(),
        ));
        pos = end;
    }
    out
}

// --------------------------------------------------------------- segment ----

/// Segment profile, email: lowercase, keep `[a-z0-9.@-]`, trim.
pub fn segment_email(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '@' | '-'))
        .collect()
}

/// Segment profile, phone: keep ASCII digits (JavaScript `\d`).
pub fn segment_phone(raw: &str) -> String {
    raw.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Segment profile, every other field: lowercase, keep `[a-z0-9]`.
pub fn segment_standard(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Country {
        Country::parse(s).unwrap()
    }

    #[test]
    fn email_rules() {
        assert_eq!(email("  John.Doe@Example.COM "), "john.doe@example.com");
        assert_eq!(email("john.doe+promo@gmail.com"), "john.doepromo@gmail.com");
        assert_eq!(email("jürgen@bücher.de"), "jürgen@bücher.de");
        assert_eq!(email("E\u{301}lodie@x.fr"), "elodie@x.fr");
        assert_eq!(email("a_b@x"), "a_b@x");
        assert_eq!(email("@x.com"), "");
        assert_eq!(email("a@@x.com"), "");
        assert_eq!(email("a@"), "");
        assert_eq!(email("no-at-sign"), "");
        assert_eq!(email("a@b@c"), "a@b@c");
    }

    #[test]
    fn name_rules() {
        assert_eq!(name("Müller"), "mueller");
        assert_eq!(name("STRAẞE"), "strasse");
        assert_eq!(name("Øyvind"), "oyvind");
        assert_eq!(name("Æsa"), "aesa");
        assert_eq!(name("José"), "jos");
        assert_eq!(name("Mu\u{308}ller"), "muller");
        assert_eq!(name("O'Connor"), "oconnor");
        assert_eq!(name("山田"), "");
    }

    #[test]
    fn city_rules() {
        assert_eq!(city("München"), "mnchen");
        assert_eq!(city("Saint-Étienne"), "sainttienne");
        assert_eq!(city("Pamplona/Iruña"), "pamplonairua");
    }

    #[test]
    fn state_rules() {
        assert_eq!(state("new york", c("US")), "ny");
        assert_eq!(state("n.y.", c("US")), "ny");
        assert_eq!(state("Calif.", c("US")), "ca");
        assert_eq!(state("Québec", c("CA")), "qu");
        assert_eq!(state("Quebec", c("CA")), "qc");
        assert_eq!(state("madrid", c("ES")), "m");
        assert_eq!(state("Bayern", c("DE")), "ba");
        assert_eq!(state("Bavaria", c("DE")), "by");
        assert_eq!(state("Andhra Pradesh", c("IN")), "an");
        assert_eq!(state("N", c("US")), "n");
        assert_eq!(state("1", c("US")), "");
        assert_eq!(state("straße", c("DE")), "st");
    }

    #[test]
    fn postal_rules() {
        assert_eq!(postal("94105-1234", c("US")), "94105");
        assert_eq!(postal("2134", c("US")), "");
        assert_eq!(postal("77304 CEDEX", c("FR")), "77304");
        assert_eq!(postal("100-0001", c("JP")), "1000001");
        assert_eq!(postal("k1a 0b1", c("CA")), "k1a0b1");
        assert_eq!(postal("K1A 0B1", c("CA")), "K1A0B1");
        assert_eq!(postal("K1A", c("CA")), "");
        assert_eq!(postal("SW1A 1AA", c("GB")), "SW1A1AA");
        assert_eq!(postal("sw1a 1aa", c("GB")), "sw1a1aa");
        assert_eq!(postal("M1 1AE", c("GB")), "M11AE");
        assert_eq!(postal("GIR 0AA", c("GB")), "");
        assert_eq!(postal("४००००१", c("IN")), "४००००१");
        assert_eq!(postal("110 001", c("IN")), "110001");
        assert_eq!(postal("12345", c("BR")), "12345");
    }

    #[test]
    fn phone_rules() {
        let p = |raw: &str, cc: &str| phone(raw, c(cc));
        assert_eq!(p("+44 20 7946 0958", "GB"), "442079460958");
        assert_eq!(p("020 7946 0958", "GB"), "442079460958");
        assert_eq!(p("+1 415.555.2671", "US"), "14155552671");
        assert_eq!(p("4155552671", "US"), "14155552671");
        assert_eq!(p("1 415 555 2671", "US"), "14155552671");
        assert_eq!(p("+1 415 555", "US"), "");
        assert_eq!(p("(415) 555-2671 ext. 123", "US"), "14155552671");
        assert_eq!(p("", "US"), "");
        assert_eq!(p("not a phone", "US"), "");
        assert_eq!(p("14155552671", "UNKNOWN"), "14155552671");
    }

    #[test]
    fn address_examples_from_rules_md() {
        assert_eq!(
            address("123 North Main Street, Apt #4B", c("US")),
            "123nmainstaptnumber4b"
        );
        assert_eq!(address("Müllerstraße 5", c("DE")), "müllerstrasse5");
        assert_eq!(
            address("5 Avenue des Champs-Élysées", c("FR")),
            "5avedeschamps-élysées"
        );
        assert_eq!(address("V. Roma 10", c("IT")), "vroma10");
        assert_eq!(address("C/ Mayor 5", c("ES")), "callemayor5");
        assert_eq!(
            address("100 O'Farrell St (rear)", c("US")),
            "100o'farrellstrear"
        );
    }

    #[test]
    fn address_dash_and_pound_edge_cases() {
        assert_eq!(address("Elm 12-B 5-C", c("DE")), "elm12b5-c");
        assert_eq!(address("12-34 1-2-A", c("DE")), "12-341-2-a");
        assert_eq!(address("12#7", c("DE")), "number7");
        assert_eq!(address("É#5", c("DE")), "number5");
        assert_eq!(address("A#1#2", c("DE")), "anumbernumber2");
        assert_eq!(address("Elm Apt#5 Unit#6", c("US")), "elmaptnumber5unit#6");
        assert_eq!(address("1 Main St C/O Smith", c("US")), "1mainstsmith");
        assert_eq!(address("XC/O", c("US")), "xc/o");
        assert_eq!(address("", c("US")), "");
        assert_eq!(address("一-A", c("JP")), "一a");
    }

    #[test]
    fn segment_profile_rules() {
        assert_eq!(
            segment_email(" John.Doe+x@Ex_ample.COM "),
            "john.doex@example.com"
        );
        assert_eq!(segment_phone("+1 (413) 871-4499"), "14138714499");
        assert_eq!(segment_standard("New York"), "newyork");
        assert_eq!(segment_standard("14905-5785"), "149055785");
    }
}
