//! Numeric Amazon ids that exceed 2^53 (`audienceId`, `advertiserId`,
//! `profileId`), kept as their digit string and written as bare JSON digits.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Amazon numeric id held as its decimal digits.
///
/// [AUD]: `audienceId` (records upload, metadata paths) and
/// `targetResource.advertiserId` are JSON *numbers* whose values exceed 2^53;
/// a quoted `audienceId` is rejected with 400 and a value that went through an
/// IEEE-754 double loses its low digits. `Digits` therefore never touches
/// `f64`: it serializes with `serialize_u128` (serde_json writes the exact
/// digits) and deserializes with `deserialize_u128` (serde_json parses the
/// integer exactly and refuses strings and fractions).
///
/// Invariant: 1–39 ASCII digits, no leading zero unless the value is `0`
/// (every such string fits in a `u128`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digits(String);

impl Digits {
    /// Parses a digit string (`"18446744073709551615"`). `None` for anything
    /// else (signs, spaces, fractions, leading zeros, > 39 digits).
    pub fn parse(s: &str) -> Option<Digits> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 39 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if b.len() > 1 && b[0] == b'0' {
            return None;
        }
        s.parse::<u128>().ok()?;
        Some(Digits(s.to_string()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as `u128` (always fits).
    pub fn to_u128(&self) -> u128 {
        self.0.parse().expect("Digits invariant: fits in u128")
    }
}

impl From<u64> for Digits {
    fn from(n: u64) -> Digits {
        Digits(n.to_string())
    }
}

impl From<u128> for Digits {
    fn from(n: u128) -> Digits {
        Digits(n.to_string())
    }
}

impl From<&crate::config::DigitsId> for Digits {
    /// Config ids are digit strings; leading zeros are dropped.
    fn from(id: &crate::config::DigitsId) -> Digits {
        let t = id.0.trim_start_matches('0');
        Digits::parse(if t.is_empty() { "0" } else { t }).unwrap_or_else(|| Digits("0".into()))
    }
}

impl std::str::FromStr for Digits {
    type Err = String;
    fn from_str(s: &str) -> Result<Digits, String> {
        Digits::parse(s).ok_or_else(|| format!("{s:?} is not a numeric id (digits only)"))
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(self.to_u128())
    }
}

impl<'de> Deserialize<'de> for Digits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digits, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Digits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bare JSON integer id")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Digits, E> {
                Ok(Digits::from(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Digits, E> {
                Ok(Digits::from(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Digits, E> {
                u64::try_from(v)
                    .map(Digits::from)
                    .map_err(|_| E::custom("a negative id"))
            }
        }
        d.deserialize_u128(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_ids_round_trip_as_bare_digits() {
        for s in [
            "0",
            "9007199254740993",
            "18446744073709551615",
            "340282366920938463463374607431768211455",
        ] {
            let d = Digits::parse(s).unwrap();
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, s);
            let back: Digits = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_str(), s);
        }
        assert!(serde_json::from_str::<Digits>("\"9007199254740993\"").is_err());
        assert!(serde_json::from_str::<Digits>("9007199254740993.0").is_err());
        assert!(serde_json::from_str::<Digits>("-1").is_err());
        for bad in ["", "01", "1a", " 1", "+1", &"9".repeat(40)] {
            assert!(Digits::parse(bad).is_none(), "{bad:?}");
        }
    }
}
