//! Unicode helpers that reproduce the Python semantics the reference
//! normalization relies on (RULES.md section 8). Rust's own predicates differ
//! in small ways (`char::is_alphanumeric` keeps combining marks, `is_whitespace`
//! misses U+001C–U+001F), so each rule is spelled out here.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Python's `str.isspace` / regex `\s` for `str` patterns: Unicode White_Space
/// plus the information separators U+001C–U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// True for the Unicode letter categories Lu, Ll, Lt, Lm, Lo (Python `str.isalpha`).
pub fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Python's regex `\w` for `str` patterns: a letter (L*), any character with a
/// numeric value (Nd, Nl, No, and CJK ideographs with a numeric value, which
/// are letters anyway) or `_`. Combining marks (Mn, Mc) are *not* word
/// characters.
pub fn is_py_word(c: char) -> bool {
    c == '_' || is_letter(c) || c.is_numeric()
}

/// Ideographs (general category Lo) that carry a Unihan numeric value, so that
/// Python's `str.isnumeric` is true for them (e.g. 一, 二, 十, 百, 千, 万, 億, 零).
/// Generated from Python 3.11's `unicodedata` (Unicode 14.0): every code point
/// where `chr(c).isnumeric()` holds but the general category is not N*.
const NUMERIC_IDEOGRAPHS: &[u32] = &[
    0x3405, 0x3483, 0x382A, 0x3B4D, 0x4E00, 0x4E03, 0x4E07, 0x4E09, 0x4E5D, 0x4E8C, 0x4E94, 0x4E96,
    0x4EBF, 0x4EC0, 0x4EDF, 0x4EE8, 0x4F0D, 0x4F70, 0x5104, 0x5146, 0x5169, 0x516B, 0x516D, 0x5341,
    0x5343, 0x5344, 0x5345, 0x534C, 0x53C1, 0x53C2, 0x53C3, 0x53C4, 0x56DB, 0x58F1, 0x58F9, 0x5E7A,
    0x5EFE, 0x5EFF, 0x5F0C, 0x5F0D, 0x5F0E, 0x5F10, 0x62FE, 0x634C, 0x67D2, 0x6F06, 0x7396, 0x767E,
    0x8086, 0x842C, 0x8CAE, 0x8CB3, 0x8D30, 0x9621, 0x9646, 0x964C, 0x9678, 0x96F6, 0xF96B, 0xF973,
    0xF978, 0xF9B2, 0xF9D1, 0xF9D3, 0xF9FD, 0x20001, 0x20064, 0x200E2, 0x20121, 0x2092A, 0x20983,
    0x2098C, 0x2099C, 0x20AEA, 0x20AFD, 0x20B19, 0x22390, 0x22998, 0x23B1B, 0x2626D, 0x2F890,
];

/// Python's `str.isnumeric` for one character: Nd, Nl, No, or a numeric ideograph.
pub fn is_py_numeric_char(c: char) -> bool {
    c.is_numeric() || NUMERIC_IDEOGRAPHS.binary_search(&(c as u32)).is_ok()
}

/// Python's `str.isnumeric` for a string: non-empty and every character numeric.
pub fn is_py_numeric(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_py_numeric_char)
}

/// Python's regex `\d` for `str` patterns: general category Nd.
pub fn is_py_decimal(c: char) -> bool {
    get_general_category(c) == GeneralCategory::DecimalNumber
}

/// True when `s` is exactly 64 ASCII hex digits, either case: a value the
/// caller already hashed with SHA-256 (DESIGN.md 4.4, RULES.md "Already hashed").
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ideographs_are_sorted_for_binary_search() {
        assert!(NUMERIC_IDEOGRAPHS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn python_word_class_excludes_combining_marks() {
        assert!(is_py_word('é'));
        assert!(is_py_word('_'));
        assert!(is_py_word('²'));
        assert!(!is_py_word('\u{301}'));
        assert!(!is_py_word('+'));
    }

    #[test]
    fn python_numeric_includes_cjk_and_fractions() {
        assert!(is_py_numeric("一"));
        assert!(is_py_numeric("½"));
        assert!(is_py_numeric("12"));
        assert!(!is_py_numeric(""));
        assert!(!is_py_numeric("1a"));
    }

    #[test]
    fn python_space_includes_information_separators() {
        assert!(is_py_space('\u{1f}'));
        assert!(is_py_space('\u{a0}'));
        assert!(!is_py_space('x'));
    }
}
