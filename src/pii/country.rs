//! Country codes: ISO 3166-1 alpha-2 plus Amazon's `UNKNOWN`, and the UK/EEA
//! set whose records need a consent signal.
//!
//! Sources: ISO 3166-1 officially assigned alpha-2 codes; Amazon Ads
//! "Advertiser audiences" API (`countryCode` accepts ISO alpha-2 or `UNKNOWN`);
//! Amazon Ads consent guidance (UK and EEA records must carry consent: Amazon
//! Consent Signal, TCF or GPP).

use std::fmt;

use super::PiiError;

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted.
const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// EU member states plus GB, IS, LI, NO and CH (DESIGN.md 4.4): records from
/// these countries need `amznAdStorage` + `amznUserData`, or `tcf`, or `gpp`.
const CONSENT_REQUIRED: &[&str] = &[
    "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR", "HU",
    "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// A validated country: an ISO 3166-1 alpha-2 code, or Amazon's `UNKNOWN`.
///
/// Parsing is case-insensitive and trims surrounding whitespace; `UK` is
/// accepted as an alias of `GB` (Amazon's normalization SDK spells it `UK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Country {
    /// An ISO 3166-1 alpha-2 code, uppercase ASCII.
    Iso([u8; 2]),
    /// Amazon's `UNKNOWN` country code.
    Unknown,
}

impl Country {
    /// The United States (the default when nothing else is configured).
    pub const US: Country = Country::Iso(*b"US");

    /// Parses a country code.
    ///
    /// # Errors
    /// [`PiiError::InvalidCountryCode`] when the value is neither an assigned
    /// ISO 3166-1 alpha-2 code nor `UNKNOWN`.
    pub fn parse(raw: &str) -> Result<Country, PiiError> {
        let t = raw.trim();
        if t.eq_ignore_ascii_case("UNKNOWN") {
            return Ok(Country::Unknown);
        }
        let up = t.to_ascii_uppercase();
        let up = if up == "UK" { "GB".to_string() } else { up };
        if up.len() == 2 && ISO_3166_ALPHA2.binary_search(&up.as_str()).is_ok() {
            let b = up.as_bytes();
            Ok(Country::Iso([b[0], b[1]]))
        } else {
            Err(PiiError::InvalidCountryCode)
        }
    }

    /// The code as Amazon expects it in `countryCode` (`"US"`, `"UNKNOWN"`).
    pub fn as_str(&self) -> &str {
        match self {
            // ISO codes are built only from the ASCII table above.
            Country::Iso(b) => std::str::from_utf8(b).unwrap_or("UNKNOWN"),
            Country::Unknown => "UNKNOWN",
        }
    }

    /// True for UK/EEA countries, whose records need a consent signal.
    pub fn requires_consent(&self) -> bool {
        CONSENT_REQUIRED.contains(&self.as_str())
    }

    /// True when `code` parses as a country.
    pub fn is_valid(code: &str) -> bool {
        Country::parse(code).is_ok()
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Country {
    type Err = PiiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Country::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_complete() {
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ISO_3166_ALPHA2.len(), 249);
        assert!(CONSENT_REQUIRED.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CONSENT_REQUIRED.len(), 27 + 5);
        for c in CONSENT_REQUIRED {
            assert!(ISO_3166_ALPHA2.contains(c), "{c}");
        }
    }

    #[test]
    fn parses_case_insensitively_with_aliases() {
        assert_eq!(Country::parse(" us ").unwrap(), Country::US);
        assert_eq!(Country::parse("uk").unwrap().as_str(), "GB");
        assert_eq!(Country::parse("unknown").unwrap(), Country::Unknown);
        assert_eq!(Country::parse("XX"), Err(PiiError::InvalidCountryCode));
        assert_eq!(Country::parse("USA"), Err(PiiError::InvalidCountryCode));
        assert_eq!(Country::parse(""), Err(PiiError::InvalidCountryCode));
    }

    #[test]
    fn consent_rule_covers_eea_uk_and_switzerland() {
        for c in ["DE", "FR", "GB", "IS", "LI", "NO", "CH", "IE"] {
            assert!(Country::parse(c).unwrap().requires_consent(), "{c}");
        }
        for c in ["US", "CA", "JP", "IN", "UNKNOWN"] {
            assert!(!Country::parse(c).unwrap().requires_consent(), "{c}");
        }
    }
}
