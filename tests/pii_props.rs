//! Property tests for the `pii` core: it never panics, its digests are always
//! 64 lowercase hex characters (or the field is omitted), and already-hashed
//! values pass through unchanged.

use amc_sync::pii::{self, Country, Field, Normalized, Profile};
use proptest::prelude::*;

const COUNTRIES: &[&str] = &[
    "US", "CA", "GB", "DE", "FR", "ES", "IT", "IN", "JP", "BR", "CO", "AU", "NL", "UNKNOWN",
];

fn field() -> impl Strategy<Value = Field> {
    proptest::sample::select(Field::ALL.to_vec())
}

fn country() -> impl Strategy<Value = Country> {
    proptest::sample::select(COUNTRIES).prop_map(|c| Country::parse(c).expect("valid"))
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![Just(Profile::Amazon), Just(Profile::Segment)]
}

/// Arbitrary Unicode plus strings biased towards the characters the rules
/// care about (digits, `#`, `-`, `@`, `+`, `C/O`, separators, combining marks).
fn raw_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9A-Za-z#@+ .,/()!\\-\u{301}\u{1c}ßÄöü一½]{0,40}",
        "(C/O|#|-|[0-9]{1,4}|[A-Z]{1,3}| |,)*",
        "\\+?[0-9 ()\\-.]{0,20}",
    ]
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_digest_is_64_lowercase_hex_or_omitted(
        p in profile(), f in field(), c in country(), raw in raw_value()
    ) {
        match pii::normalize(p, f, c, &raw) {
            Normalized::Value { normalized, sha256, passthrough } => {
                prop_assert!(is_lower_hex64(&sha256), "{sha256}");
                prop_assert!(!normalized.is_empty());
                if !passthrough {
                    prop_assert_eq!(sha256, pii::sha256_hex(&normalized));
                }
            }
            Normalized::Omitted(_) => {}
        }
    }

    #[test]
    fn hashing_a_passthrough_value_is_the_identity(
        p in profile(), f in field(), c in country(), bytes in proptest::array::uniform32(any::<u8>()), upper in any::<bool>()
    ) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let input = if upper { hex.to_uppercase() } else { hex.clone() };
        let out = pii::normalize(p, f, c, &input);
        prop_assert_eq!(out.sha256(), Some(hex.as_str()));
    }

    #[test]
    fn normalization_is_idempotent_for_names_and_cities(c in country(), raw in raw_value()) {
        for f in [Field::FirstName, Field::LastName, Field::City] {
            let once = pii::normalize_only(Profile::Amazon, f, c, &raw);
            let twice = pii::normalize_only(Profile::Amazon, f, c, &once);
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    fn external_user_id_validation_never_panics(raw in any::<String>()) {
        let ok = pii::validate_external_user_id(&raw).is_ok();
        let expected = (1..=128).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(ok, expected);
    }

    #[test]
    fn country_parse_never_panics(raw in any::<String>()) {
        if let Ok(c) = Country::parse(&raw) {
            prop_assert!(c.as_str() == "UNKNOWN" || c.as_str().len() == 2);
        }
    }
}
