//! Triggers: the subset of Segment's Filter Query Language (FQL) that the
//! Segment Actions "subscription" field uses to pick the events a mapping
//! handles (Segment docs: "Destination Actions → Customizing mappings →
//! Conditions" and the FQL reference, `segmentio/fql`).
//!
//! Grammar (whitespace between tokens is free; spaces, tabs, CR and LF):
//!
//! ```text
//! expr  := and ( "or" and )*
//! and   := atom ( "and" atom )*
//! atom  := "(" expr ")" | field op string
//! field := "event" | "type"
//! op    := "=" | "!="
//! string:= '"' chars '"' | "'" chars "'"      (backslash escapes \" \' \\)
//! ```
//!
//! As in FQL, `and` binds tighter than `or`, keywords are lowercase and
//! string comparison is exact and case-sensitive (`event = "audience
//! entered"` does not match `Audience Entered`). A field the message lacks
//! (or that is not a string) compares as null: `=` is false, `!=` is true.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The default trigger of Segment's "Amazon Ads DSP and AMC" destination
/// ("Sync Audiences to DSP" `defaultSubscription`).
pub const DEFAULT_AUDIENCE_TRIGGER: &str =
    r#"event = "Audience Entered" or event = "Audience Exited""#;

/// The trigger of the second default mapping: Engage audiences connected to
/// an identify-based destination arrive as `identify` calls whose traits hold
/// `<audience_key>: true|false` (Segment docs: "Engage → Audiences → Send
/// audiences to destinations", identify vs. track events).
pub const DEFAULT_IDENTIFY_TRIGGER: &str = r#"type = "identify""#;

/// A message field a trigger can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerField {
    /// `event`: the track event name.
    Event,
    /// `type`: the Segment message type (`track`, `identify`, …).
    Type,
}

impl TriggerField {
    /// The FQL spelling (`"event"`, `"type"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerField::Event => "event",
            TriggerField::Type => "type",
        }
    }
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`: exact, case-sensitive string equality.
    Eq,
    /// `!=`: negation of `=` (true when the field is absent).
    Ne,
}

/// A parsed trigger expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `field op "value"`.
    Cmp {
        /// The message field.
        field: TriggerField,
        /// `=` or `!=`.
        op: CmpOp,
        /// The literal compared with (already unescaped).
        value: String,
    },
    /// Both sides match.
    And(Box<Expr>, Box<Expr>),
    /// Either side matches.
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Evaluates the expression against a Segment message (a JSON object).
    pub fn matches(&self, msg: &Value) -> bool {
        match self {
            Expr::Cmp { field, op, value } => {
                let actual = msg.get(field.as_str()).and_then(Value::as_str);
                let eq = actual == Some(value.as_str());
                match op {
                    CmpOp::Eq => eq,
                    CmpOp::Ne => !eq,
                }
            }
            Expr::And(a, b) => a.matches(msg) && b.matches(msg),
            Expr::Or(a, b) => a.matches(msg) || b.matches(msg),
        }
    }
}

/// What went wrong while parsing a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerErrorKind {
    /// The text is empty or only whitespace.
    Empty,
    /// A field name other than `event` or `type`.
    UnsupportedField,
    /// Expected `=` or `!=` after a field.
    ExpectedOperator,
    /// Expected a quoted string after an operator.
    ExpectedString,
    /// A string literal without its closing quote.
    UnterminatedString,
    /// Expected a field or `(`.
    ExpectedOperand,
    /// Expected `)` to close a group.
    ExpectedCloseParen,
    /// Expected `and`, `or`, `)` or the end of the text.
    UnexpectedToken,
}

impl TriggerErrorKind {
    /// A short description (never quotes the input).
    pub fn describe(self) -> &'static str {
        match self {
            TriggerErrorKind::Empty => "the trigger is empty",
            TriggerErrorKind::UnsupportedField => {
                "unsupported field (only `event` and `type` are supported)"
            }
            TriggerErrorKind::ExpectedOperator => "expected `=` or `!=`",
            TriggerErrorKind::ExpectedString => "expected a quoted string",
            TriggerErrorKind::UnterminatedString => "unterminated string literal",
            TriggerErrorKind::ExpectedOperand => "expected `event`, `type` or `(`",
            TriggerErrorKind::ExpectedCloseParen => "expected `)`",
            TriggerErrorKind::UnexpectedToken => "expected `and`, `or`, `)` or the end",
        }
    }
}

/// A trigger parse error: what was expected and where.
///
/// `column` is 1-based and counts Unicode scalar values (characters), so it
/// lines up with what an editor shows for a single-line trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid trigger at column {column}: {}", kind.describe())]
pub struct TriggerError {
    /// 1-based character column of the offending token.
    pub column: usize,
    /// What went wrong.
    pub kind: TriggerErrorKind,
}

/// A parsed trigger together with its source text (kept for display and
/// serialization). Serializes to and deserializes from the FQL string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Trigger {
    text: String,
    expr: Expr,
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trigger({:?})", self.text)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Trigger {
    /// Parses an FQL trigger (see the module documentation for the grammar).
    ///
    /// # Errors
    /// [`TriggerError`] with the 1-based column of the first bad token.
    pub fn parse(text: &str) -> Result<Trigger, TriggerError> {
        let mut p = Parser {
            chars: text.char_indices().collect(),
            pos: 0,
        };
        p.skip_ws();
        if p.peek().is_none() {
            return Err(p.error(TriggerErrorKind::Empty));
        }
        let expr = p.parse_or()?;
        p.skip_ws();
        if p.peek().is_some() {
            return Err(p.error(TriggerErrorKind::UnexpectedToken));
        }
        Ok(Trigger {
            text: text.to_string(),
            expr,
        })
    }

    /// The Segment destination's default trigger, [`DEFAULT_AUDIENCE_TRIGGER`].
    pub fn default_audience() -> Trigger {
        Trigger {
            text: DEFAULT_AUDIENCE_TRIGGER.to_string(),
            expr: Expr::Or(
                Box::new(Expr::Cmp {
                    field: TriggerField::Event,
                    op: CmpOp::Eq,
                    value: "Audience Entered".to_string(),
                }),
                Box::new(Expr::Cmp {
                    field: TriggerField::Event,
                    op: CmpOp::Eq,
                    value: "Audience Exited".to_string(),
                }),
            ),
        }
    }

    /// The identify trigger of the second default mapping,
    /// [`DEFAULT_IDENTIFY_TRIGGER`].
    pub fn default_identify() -> Trigger {
        Trigger {
            text: DEFAULT_IDENTIFY_TRIGGER.to_string(),
            expr: Expr::Cmp {
                field: TriggerField::Type,
                op: CmpOp::Eq,
                value: "identify".to_string(),
            },
        }
    }

    /// The source text, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// True when the message satisfies the trigger.
    pub fn matches(&self, msg: &Value) -> bool {
        self.expr.matches(msg)
    }
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger::default_audience()
    }
}

impl std::str::FromStr for Trigger {
    type Err = TriggerError;
    fn from_str(s: &str) -> Result<Self, TriggerError> {
        Trigger::parse(s)
    }
}

impl Serialize for Trigger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Trigger::parse(&text).map_err(serde::de::Error::custom)
    }
}

struct Parser {
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn error(&self, kind: TriggerErrorKind) -> TriggerError {
        TriggerError {
            column: self.pos + 1,
            kind,
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.pos += 1;
        }
    }

    /// Reads an identifier-like word (`[A-Za-z0-9_.$]+`) without consuming it.
    fn peek_word(&self) -> String {
        self.chars[self.pos..]
            .iter()
            .map(|(_, c)| *c)
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
            .collect()
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        if self.peek_word() == kw {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn parse_or(&mut self) -> Result<Expr, TriggerError> {
        let mut left = self.parse_and()?;
        while self.eat_keyword("or") {
            let right = self.parse_and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Expr, TriggerError> {
        let mut left = self.parse_atom()?;
        while self.eat_keyword("and") {
            let right = self.parse_atom()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_atom(&mut self) -> Result<Expr, TriggerError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            let inner = self.parse_or()?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error(TriggerErrorKind::ExpectedCloseParen));
            }
            self.pos += 1;
            return Ok(inner);
        }
        let word = self.peek_word();
        let field = match word.as_str() {
            "event" => TriggerField::Event,
            "type" => TriggerField::Type,
            "" => return Err(self.error(TriggerErrorKind::ExpectedOperand)),
            _ => return Err(self.error(TriggerErrorKind::UnsupportedField)),
        };
        self.pos += word.chars().count();
        self.skip_ws();
        let op = match self.peek() {
            Some('=') => {
                self.pos += 1;
                CmpOp::Eq
            }
            Some('!') if self.chars.get(self.pos + 1).map(|(_, c)| *c) == Some('=') => {
                self.pos += 2;
                CmpOp::Ne
            }
            _ => return Err(self.error(TriggerErrorKind::ExpectedOperator)),
        };
        self.skip_ws();
        let value = self.parse_string()?;
        Ok(Expr::Cmp { field, op, value })
    }

    fn parse_string(&mut self) -> Result<String, TriggerError> {
        let quote = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            _ => return Err(self.error(TriggerErrorKind::ExpectedString)),
        };
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(TriggerError {
                        column: start + 1,
                        kind: TriggerErrorKind::UnterminatedString,
                    });
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        None => {
                            return Err(TriggerError {
                                column: start + 1,
                                kind: TriggerErrorKind::UnterminatedString,
                            });
                        }
                    }
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Trigger {
        Trigger::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn fql_default_trigger_parses_to_the_builtin() {
        assert_eq!(
            t(DEFAULT_AUDIENCE_TRIGGER).expr(),
            Trigger::default_audience().expr()
        );
        assert_eq!(
            t(DEFAULT_IDENTIFY_TRIGGER).expr(),
            Trigger::default_identify().expr()
        );
        let tr = Trigger::default();
        assert!(tr.matches(&json!({"type": "track", "event": "Audience Entered"})));
        assert!(tr.matches(&json!({"type": "track", "event": "Audience Exited"})));
        assert!(!tr.matches(&json!({"type": "track", "event": "audience entered"})));
        assert!(!tr.matches(&json!({"type": "identify"})));
    }

    #[test]
    fn fql_and_binds_tighter_than_or() {
        // a or (b and c)
        let tr = t(r#"type = "identify" or type = "track" and event = "X""#);
        assert!(tr.matches(&json!({"type": "identify"})));
        assert!(tr.matches(&json!({"type": "track", "event": "X"})));
        assert!(!tr.matches(&json!({"type": "track", "event": "Y"})));
        // (a or b) and c
        let tr = t(r#"(type = "identify" or type = "track") and event = "X""#);
        assert!(!tr.matches(&json!({"type": "identify"})));
        assert!(tr.matches(&json!({"type": "identify", "event": "X"})));
    }

    #[test]
    fn fql_not_equal_single_quotes_and_whitespace() {
        let tr = t("\n\t( type='track'and event!= 'Audience Exited' )  ");
        assert!(tr.matches(&json!({"type": "track", "event": "Audience Entered"})));
        assert!(
            tr.matches(&json!({"type": "track"})),
            "missing field != x is true"
        );
        assert!(!tr.matches(&json!({"type": "track", "event": "Audience Exited"})));
        assert!(!tr.matches(&json!({"type": "identify"})));
        let esc = t(r#"event = "say \"hi\"" or event = 'it\'s'"#);
        assert!(esc.matches(&json!({"event": "say \"hi\""})));
        assert!(esc.matches(&json!({"event": "it's"})));
        // A non-string field compares as null.
        assert!(!t(r#"event = "1""#).matches(&json!({"event": 1})));
    }

    #[test]
    fn fql_errors_carry_kind_and_column() {
        let cases: &[(&str, usize, TriggerErrorKind)] = &[
            ("", 1, TriggerErrorKind::Empty),
            ("   ", 4, TriggerErrorKind::Empty),
            ("name = \"x\"", 1, TriggerErrorKind::UnsupportedField),
            ("event == \"x\"", 8, TriggerErrorKind::ExpectedString),
            ("event ~ \"x\"", 7, TriggerErrorKind::ExpectedOperator),
            ("event = x", 9, TriggerErrorKind::ExpectedString),
            ("event = \"abc", 9, TriggerErrorKind::UnterminatedString),
            ("(event = \"a\"", 13, TriggerErrorKind::ExpectedCloseParen),
            ("event = \"a\" and", 16, TriggerErrorKind::ExpectedOperand),
            (
                "event = \"a\" AND type = \"b\"",
                13,
                TriggerErrorKind::UnexpectedToken,
            ),
            ("event = \"a\")", 12, TriggerErrorKind::UnexpectedToken),
            ("é = \"a\"", 1, TriggerErrorKind::ExpectedOperand),
            ("event = \"é\" or ", 16, TriggerErrorKind::ExpectedOperand),
        ];
        for (src, column, kind) in cases {
            let err = Trigger::parse(src).expect_err(src);
            assert_eq!((err.column, err.kind), (*column, *kind), "{src:?}");
            assert!(err.to_string().contains(&format!("column {column}")));
        }
    }

    #[test]
    fn fql_trigger_round_trips_through_serde() {
        let tr: Trigger = serde_json::from_value(json!("type = \"identify\"")).unwrap();
        assert_eq!(
            serde_json::to_value(&tr).unwrap(),
            json!("type = \"identify\"")
        );
        let err = serde_json::from_value::<Trigger>(json!("type =")).unwrap_err();
        assert!(err.to_string().contains("column 7"), "{err}");
    }
}
