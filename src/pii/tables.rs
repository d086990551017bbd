//! The word tables used by the state and address rules, kept as data in
//! `data/` (our own text format) and merged at load time.
//!
//! Format of every table file: `#` comments and blank lines are ignored; each
//! other line is `STANDARD: VARIANT VARIANT …`, meaning every whitespace-separated
//! VARIANT maps to STANDARD. Each file names the public standard it follows in
//! its header (USPS Publication 28 appendices C1/C2, ISO 3166-2, …).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::country::Country;

/// A word map: uppercase key → replacement.
pub type WordMap = HashMap<&'static str, &'static str>;

/// Parses one table file into `(key, value)` pairs, in file order.
///
/// # Errors
/// Returns the 1-based line number of the first line without a `:`.
pub fn parse_table(text: &'static str) -> Result<Vec<(&'static str, &'static str)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (standard, variants) = line.split_once(": ").ok_or(i + 1)?;
        for v in variants.split_whitespace() {
            out.push((v, standard.trim()));
        }
    }
    Ok(out)
}

/// Merges tables in order: a later table overwrites an earlier one for the
/// same key (RULES.md 7.4).
fn merge(tables: &[&'static str]) -> WordMap {
    let mut map = WordMap::new();
    for t in tables {
        // The tables are compiled into the binary; `embedded_tables_parse` checks them.
        for (k, v) in parse_table(t).unwrap_or_default() {
            map.insert(k, v);
        }
    }
    map
}

macro_rules! table {
    ($name:literal) => {
        include_str!(concat!("../../data/", $name))
    };
}

const NUMBER_INDICATORS: &str = table!("address/number_indicators.txt");
const DIRECTIONAL_WORDS: &str = table!("address/directional_words.txt");
const DEFAULT_STREET_SUFFIXES: &str = table!("address/default_street_suffixes.txt");
const US_STREET_SUFFIXES: &str = table!("address/us_street_suffixes.txt");
const US_SECONDARY_UNITS: &str = table!("address/us_secondary_unit_designators.txt");
const IT_STREET_PREFIXES: &str = table!("address/it_street_prefixes.txt");
const FR_STREET_DESIGNATORS: &str = table!("address/fr_street_designators.txt");
const ES_STREET_PREFIXES: &str = table!("address/es_street_prefixes.txt");
const UK_ORGANIZATION_SUFFIXES: &str = table!("address/uk_organization_suffixes.txt");
const UK_STREET_SUFFIXES: &str = table!("address/uk_street_suffixes.txt");
const UK_SUB_BUILDING: &str = table!("address/uk_sub_building_designators.txt");

const STATE_US: &str = table!("state/us.txt");
const STATE_CA: &str = table!("state/ca.txt");
const STATE_DE: &str = table!("state/de.txt");
const STATE_FR: &str = table!("state/fr.txt");
const STATE_IT: &str = table!("state/it.txt");
const STATE_ES: &str = table!("state/es.txt");

/// Every embedded table with its file name (for tests and diagnostics).
pub const ALL_TABLES: &[(&str, &str)] = &[
    ("address/number_indicators.txt", NUMBER_INDICATORS),
    ("address/directional_words.txt", DIRECTIONAL_WORDS),
    (
        "address/default_street_suffixes.txt",
        DEFAULT_STREET_SUFFIXES,
    ),
    ("address/us_street_suffixes.txt", US_STREET_SUFFIXES),
    (
        "address/us_secondary_unit_designators.txt",
        US_SECONDARY_UNITS,
    ),
    ("address/it_street_prefixes.txt", IT_STREET_PREFIXES),
    ("address/fr_street_designators.txt", FR_STREET_DESIGNATORS),
    ("address/es_street_prefixes.txt", ES_STREET_PREFIXES),
    (
        "address/uk_organization_suffixes.txt",
        UK_ORGANIZATION_SUFFIXES,
    ),
    ("address/uk_street_suffixes.txt", UK_STREET_SUFFIXES),
    ("address/uk_sub_building_designators.txt", UK_SUB_BUILDING),
    ("state/us.txt", STATE_US),
    ("state/ca.txt", STATE_CA),
    ("state/de.txt", STATE_DE),
    ("state/fr.txt", STATE_FR),
    ("state/it.txt", STATE_IT),
    ("state/es.txt", STATE_ES),
];

static ADDR_US: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        US_STREET_SUFFIXES,
        US_SECONDARY_UNITS,
    ])
});
static ADDR_GB: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        UK_ORGANIZATION_SUFFIXES,
        UK_STREET_SUFFIXES,
        UK_SUB_BUILDING,
    ])
});
static ADDR_FR: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        FR_STREET_DESIGNATORS,
        DEFAULT_STREET_SUFFIXES,
    ])
});
static ADDR_ES: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        DEFAULT_STREET_SUFFIXES,
        ES_STREET_PREFIXES,
    ])
});
static ADDR_IT: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        DEFAULT_STREET_SUFFIXES,
        IT_STREET_PREFIXES,
    ])
});
static ADDR_DEFAULT: LazyLock<WordMap> = LazyLock::new(|| {
    merge(&[
        NUMBER_INDICATORS,
        DIRECTIONAL_WORDS,
        DEFAULT_STREET_SUFFIXES,
    ])
});

static STATES: LazyLock<[(&str, WordMap); 6]> = LazyLock::new(|| {
    [
        ("US", merge(&[STATE_US])),
        ("CA", merge(&[STATE_CA])),
        ("DE", merge(&[STATE_DE])),
        ("FR", merge(&[STATE_FR])),
        ("IT", merge(&[STATE_IT])),
        ("ES", merge(&[STATE_ES])),
    ]
});

/// The merged address word map for a country (RULES.md 7.4). Countries
/// without a table of their own (CA, DE, JP, IN and every other country,
/// including `UNKNOWN`) use number indicators + directional words + default
/// street suffixes. (The reference tool refuses other countries; we apply the
/// default table instead, as DESIGN.md asks for "a sane default".)
pub fn address_map(country: Country) -> &'static WordMap {
    match country.as_str() {
        "US" => &ADDR_US,
        "GB" => &ADDR_GB,
        "FR" => &ADDR_FR,
        "ES" => &ADDR_ES,
        "IT" => &ADDR_IT,
        _ => &ADDR_DEFAULT,
    }
}

/// The state/province table for a country, if it has one (US, CA, DE, FR, IT, ES).
pub fn state_map(country: Country) -> Option<&'static WordMap> {
    let code = country.as_str();
    STATES.iter().find(|(c, _)| *c == code).map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_tables_parse() {
        for (name, text) in ALL_TABLES {
            let entries = parse_table(text).unwrap_or_else(|l| panic!("{name}: bad line {l}"));
            assert!(!entries.is_empty(), "{name} is empty");
            let mut seen = std::collections::HashSet::new();
            for (k, _) in &entries {
                assert!(seen.insert(*k), "{name}: duplicate key {k}");
                assert!(
                    !k.contains('.'),
                    "{name}: key {k} contains '.' and can never match"
                );
                assert_eq!(k.to_uppercase(), *k, "{name}: key {k} is not uppercase");
            }
        }
    }

    #[test]
    fn merged_key_counts_match_rules_md() {
        // RULES.md 7.4 counts include keys containing '.', which can never match
        // and are not kept; the counts below exclude them.
        let c = |s: &str| Country::parse(s).unwrap();
        assert_eq!(address_map(c("US")).len(), 608);
        assert_eq!(address_map(c("CA")).len(), 68);
        assert_eq!(address_map(c("FR")).len(), 84);
        assert_eq!(address_map(c("GB")).len(), 517);
        assert_eq!(address_map(c("ES")).len(), 112);
        assert_eq!(address_map(c("IT")).len(), 88);
    }

    #[test]
    fn state_tables_have_the_documented_sizes() {
        let c = |s: &str| Country::parse(s).unwrap();
        let sizes = [
            ("US", 50),
            ("CA", 13),
            ("DE", 16),
            ("FR", 22),
            ("IT", 110),
            ("ES", 63),
        ];
        for (cc, n) in sizes {
            assert_eq!(state_map(c(cc)).map(|m| m.len()), Some(n), "{cc}");
        }
        assert!(state_map(c("GB")).is_none());
        assert!(state_map(c("JP")).is_none());
    }

    #[test]
    fn later_tables_override_earlier_ones() {
        let us = address_map(Country::US);
        // USPS C2 `KEY` (secondary unit) overrides the C1 street suffix `KEY` -> `KY`.
        assert_eq!(us.get("KEY"), Some(&"KEY"));
        assert_eq!(us.get("STREET"), Some(&"ST"));
        assert_eq!(us.get("APARTMENT"), Some(&"APT"));
    }
}
