//! Field sources: the subset of Segment's mapping-kit directives
//! (`@segment/actions-core` "mapping-kit", documented in Segment's
//! "Destination Actions → Customizing mappings") that says where a mapped
//! field's value comes from.
//!
//! Supported forms (as JSON; the same shapes work from TOML tables):
//!
//! * `{"@path": "$.a.b"}`: the value at a path of the message. Paths start at
//!   `$` and continue with `.key`, `["key"]` / `['key']` (any characters) or
//!   `[0]` (array index), as mapping-kit's `@path` accepts.
//! * `{"@if": {"exists": <source>, "then": <source>, "else": <source>}}`:
//!   `then` when `exists` resolves to a non-null value, else `else`.
//!   mapping-kit's `blank` condition is accepted instead of `exists` (true
//!   when the value is non-null and not `""`). `then` and `else` are optional
//!   (an absent branch resolves to nothing), as in mapping-kit.
//! * literals: strings, numbers and booleans; JSON `null` is the "no value"
//!   literal (useful to switch a default field off).
//!
//! Objects that are not one of these directives, arrays, and other
//! directives (`@template`, `@arrayPath`, …) are rejected when the
//! configuration is loaded ([`SourceError`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathStep {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A parsed `@path` expression (`$.context.traits.email`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonPath {
    text: String,
    steps: Vec<PathStep>,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({:?})", self.text)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a field source could not be loaded. Messages quote only configuration
/// (directive names, paths), never message data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A `@path` that is not `$` followed by `.key`, `["key"]` or `[n]` steps.
    #[error(
        "invalid @path {path:?} at character {column}: expected `$`, `.key`, `[\"key\"]` or `[n]`"
    )]
    InvalidPath {
        /// The path as written (configuration, not message data).
        path: String,
        /// 1-based character column.
        column: usize,
    },
    /// `@path` whose value is not a string.
    #[error("@path needs a string")]
    PathNotString,
    /// An `@if` object without `exists`/`blank`, or with unknown keys.
    #[error("@if needs an object with `exists` or `blank`, and optional `then` / `else`")]
    InvalidIf,
    /// A directive this subset does not implement, or an object mixing a
    /// directive with other keys.
    #[error("unsupported mapping directive (supported: @path, @if, literals)")]
    UnsupportedDirective,
    /// An array or a plain object literal.
    #[error("a field source must be a @path, an @if, a string, a number, a boolean or null")]
    UnsupportedLiteral,
}

impl JsonPath {
    /// Parses a mapping-kit `@path`.
    ///
    /// # Errors
    /// [`SourceError::InvalidPath`] with the column of the first bad character.
    pub fn parse(text: &str) -> Result<JsonPath, SourceError> {
        let chars: Vec<char> = text.trim().chars().collect();
        let bad = |i: usize| SourceError::InvalidPath {
            path: text.to_string(),
            column: i + 1,
        };
        if chars.first() != Some(&'$') {
            return Err(bad(0));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                        j += 1;
                    }
                    if j == start {
                        return Err(bad(start));
                    }
                    steps.push(PathStep::Key(chars[start..j].iter().collect()));
                    i = j;
                }
                '[' => {
                    let q = chars.get(i + 1).copied();
                    if let Some(quote @ ('"' | '\'')) = q {
                        let start = i + 2;
                        let mut j = start;
                        while j < chars.len() && chars[j] != quote {
                            j += 1;
                        }
                        if chars.get(j + 1) != Some(&']') {
                            return Err(bad(j.min(chars.len())));
                        }
                        steps.push(PathStep::Key(chars[start..j].iter().collect()));
                        i = j + 2;
                    } else {
                        let start = i + 1;
                        let mut j = start;
                        while j < chars.len() && chars[j].is_ascii_digit() {
                            j += 1;
                        }
                        if j == start || chars.get(j) != Some(&']') {
                            return Err(bad(j.min(chars.len())));
                        }
                        let digits: String = chars[start..j].iter().collect();
                        let idx = digits.parse::<usize>().map_err(|_| bad(start))?;
                        steps.push(PathStep::Index(idx));
                        i = j + 1;
                    }
                }
                _ => return Err(bad(i)),
            }
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed steps (empty for `$`, the whole message).
    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// The value at this path, if every step exists. JSON `null` counts as
    /// absent.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut cur = root;
        for s in &self.steps {
            cur = match s {
                PathStep::Key(k) => object_get(cur.as_object()?, k)?,
                PathStep::Index(i) => cur.as_array()?.get(*i)?,
            };
        }
        (!cur.is_null()).then_some(cur)
    }
}

/// `map.get(key)`, by a linear scan for the small objects Segment messages
/// are made of: cheaper than hashing the key (SipHash) for every one of the
/// dozens of default paths probed per message.
fn object_get<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() <= 16 {
        map.iter().find_map(|(k, v)| (k == key).then_some(v))
    } else {
        map.get(key)
    }
}

/// A field source (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `{"@path": "$.a.b"}`.
    Path(JsonPath),
    /// `{"@if": {...}}`.
    If {
        /// The value tested.
        cond: Box<Source>,
        /// `false` for `exists` (non-null), `true` for `blank` (non-null and not `""`).
        blank: bool,
        /// Used when the condition holds; `None` resolves to nothing.
        then: Option<Box<Source>>,
        /// Used otherwise; `None` resolves to nothing.
        otherwise: Option<Box<Source>>,
    },
    /// A string, number or boolean, or `null` (resolves to nothing).
    Literal(Value),
}

impl Source {
    /// `{"@path": path}`.
    ///
    /// # Errors
    /// [`SourceError::InvalidPath`].
    pub fn path(path: &str) -> Result<Source, SourceError> {
        JsonPath::parse(path).map(Source::Path)
    }

    /// The first of `paths` that exists (non-null), as nested
    /// `{"@if": {"exists": p1, "then": p1, "else": {"@if": …}}}` — the way the
    /// Segment destination writes its fallbacks. `None` for an empty list.
    ///
    /// # Errors
    /// [`SourceError::InvalidPath`].
    pub fn first_existing(paths: &[&str]) -> Result<Option<Source>, SourceError> {
        Source::first_of(paths, false)
    }

    /// Like [`Source::first_existing`] but with mapping-kit's `blank`
    /// condition: the first path whose value is non-null and not `""`.
    ///
    /// # Errors
    /// [`SourceError::InvalidPath`].
    pub fn first_non_blank(paths: &[&str]) -> Result<Option<Source>, SourceError> {
        Source::first_of(paths, true)
    }

    fn first_of(paths: &[&str], blank: bool) -> Result<Option<Source>, SourceError> {
        let mut acc: Option<Source> = None;
        for p in paths.iter().rev() {
            let here = Source::path(p)?;
            acc = Some(match acc {
                None => here,
                Some(rest) => Source::If {
                    cond: Box::new(here.clone()),
                    blank,
                    then: Some(Box::new(here)),
                    otherwise: Some(Box::new(rest)),
                },
            });
        }
        Ok(acc)
    }

    /// Resolves the source against a message. `None` when the path is absent,
    /// the value is `null`, or the chosen `@if` branch is missing.
    pub fn resolve<'a>(&'a self, msg: &'a Value) -> Option<&'a Value> {
        match self {
            Source::Path(p) => p.get(msg),
            Source::If {
                cond,
                blank,
                then,
                otherwise,
            } => {
                let v = cond.resolve(msg);
                let holds = match v {
                    None => false,
                    Some(Value::String(s)) if *blank => !s.is_empty(),
                    Some(_) => true,
                };
                let branch = if holds { then } else { otherwise };
                branch.as_deref().and_then(|b| b.resolve(msg))
            }
            Source::Literal(v) => (!v.is_null()).then_some(v),
        }
    }

    /// Builds a source from its JSON form.
    ///
    /// # Errors
    /// [`SourceError`] for shapes outside the supported subset.
    pub fn from_value(v: &Value) -> Result<Source, SourceError> {
        match v {
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
                Ok(Source::Literal(v.clone()))
            }
            Value::Array(_) => Err(SourceError::UnsupportedLiteral),
            Value::Object(m) => {
                if m.len() != 1 {
                    return Err(if m.keys().any(|k| k.starts_with('@')) {
                        SourceError::UnsupportedDirective
                    } else {
                        SourceError::UnsupportedLiteral
                    });
                }
                let (k, inner) = m.iter().next().ok_or(SourceError::UnsupportedLiteral)?;
                match k.as_str() {
                    "@path" => {
                        let p = inner.as_str().ok_or(SourceError::PathNotString)?;
                        Source::path(p)
                    }
                    "@if" => Source::if_from_map(inner.as_object().ok_or(SourceError::InvalidIf)?),
                    k if k.starts_with('@') => Err(SourceError::UnsupportedDirective),
                    _ => Err(SourceError::UnsupportedLiteral),
                }
            }
        }
    }

    fn if_from_map(m: &Map<String, Value>) -> Result<Source, SourceError> {
        if m.keys()
            .any(|k| !matches!(k.as_str(), "exists" | "blank" | "then" | "else"))
        {
            return Err(SourceError::InvalidIf);
        }
        let (cond, blank) = match (m.get("exists"), m.get("blank")) {
            (Some(c), None) => (c, false),
            (None, Some(c)) => (c, true),
            _ => return Err(SourceError::InvalidIf),
        };
        let branch = |key: &str| -> Result<Option<Box<Source>>, SourceError> {
            m.get(key)
                .map(|v| Source::from_value(v).map(Box::new))
                .transpose()
        };
        Ok(Source::If {
            cond: Box::new(Source::from_value(cond)?),
            blank,
            then: branch("then")?,
            otherwise: branch("else")?,
        })
    }

    /// The JSON form (inverse of [`Source::from_value`]).
    pub fn to_value(&self) -> Value {
        match self {
            Source::Path(p) => serde_json::json!({"@path": p.as_str()}),
            Source::If {
                cond,
                blank,
                then,
                otherwise,
            } => {
                let mut m = Map::new();
                m.insert(
                    if *blank { "blank" } else { "exists" }.to_string(),
                    cond.to_value(),
                );
                if let Some(t) = then {
                    m.insert("then".to_string(), t.to_value());
                }
                if let Some(e) = otherwise {
                    m.insert("else".to_string(), e.to_value());
                }
                serde_json::json!({ "@if": m })
            }
            Source::Literal(v) => v.clone(),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Source::from_value(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(v: Value) -> Source {
        Source::from_value(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    #[test]
    fn directive_path_resolves_keys_brackets_and_indexes() {
        let msg = json!({
            "context": {"traits": {"email": "a@b.c", "odd key": 1}},
            "list": [{"x": "first"}, {"x": "second"}],
            "nul": null
        });
        let r = |p: &str| Source::path(p).unwrap().resolve(&msg).cloned();
        assert_eq!(r("$.context.traits.email"), Some(json!("a@b.c")));
        assert_eq!(r("$.context.traits[\"odd key\"]"), Some(json!(1)));
        assert_eq!(r("$['context'].traits.email"), Some(json!("a@b.c")));
        assert_eq!(r("$.list[1].x"), Some(json!("second")));
        assert_eq!(r("$.list[2].x"), None);
        assert_eq!(r("$.nul"), None);
        assert_eq!(r("$.context.traits.email.deeper"), None);
        assert_eq!(r("$"), Some(msg.clone()));
        for bad in [
            "context.traits",
            "$..a",
            "$.a[",
            "$.a[x]",
            "$.a[\"b]",
            "$a",
            "",
        ] {
            assert!(
                matches!(JsonPath::parse(bad), Err(SourceError::InvalidPath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn directive_if_exists_blank_and_missing_branches() {
        let s = src(json!({"@if": {
            "exists": {"@path": "$.a"}, "then": {"@path": "$.a"}, "else": "fallback"}}));
        assert_eq!(s.resolve(&json!({"a": "x"})), Some(&json!("x")));
        assert_eq!(
            s.resolve(&json!({"a": ""})),
            Some(&json!("")),
            "exists: \"\" exists"
        );
        assert_eq!(s.resolve(&json!({"a": null})), Some(&json!("fallback")));
        assert_eq!(s.resolve(&json!({})), Some(&json!("fallback")));
        let b =
            src(json!({"@if": {"blank": {"@path": "$.a"}, "then": {"@path": "$.a"}, "else": 7}}));
        assert_eq!(b.resolve(&json!({"a": ""})), Some(&json!(7)));
        assert_eq!(b.resolve(&json!({"a": "y"})), Some(&json!("y")));
        let no_else = src(json!({"@if": {"exists": {"@path": "$.a"}, "then": true}}));
        assert_eq!(no_else.resolve(&json!({})), None);
        assert_eq!(no_else.resolve(&json!({"a": 0})), Some(&json!(true)));
    }

    #[test]
    fn directive_literals_and_round_trip() {
        assert_eq!(src(json!("lit")).resolve(&json!({})), Some(&json!("lit")));
        assert_eq!(src(json!(42)).resolve(&json!({})), Some(&json!(42)));
        assert_eq!(src(json!(null)).resolve(&json!({})), None);
        let v = json!({"@if": {"exists": {"@path": "$.a"}, "then": {"@path": "$.a"},
                       "else": {"@path": "$.b[0]"}}});
        assert_eq!(src(v.clone()).to_value(), v);
        let via_serde: Source = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&via_serde).unwrap(), v);
        let chain = Source::first_existing(&["$.a", "$.b", "$.c"])
            .unwrap()
            .unwrap();
        assert_eq!(chain.resolve(&json!({"b": 2, "c": 3})), Some(&json!(2)));
        assert_eq!(chain.resolve(&json!({"c": 3})), Some(&json!(3)));
        assert_eq!(chain.resolve(&json!({"a": "", "c": 3})), Some(&json!("")));
        let nb = Source::first_non_blank(&["$.a", "$.c"]).unwrap().unwrap();
        assert_eq!(nb.resolve(&json!({"a": "", "c": 3})), Some(&json!(3)));
        assert_eq!(
            nb.to_value(),
            json!({"@if": {"blank": {"@path": "$.a"}, "then": {"@path": "$.a"}, "else": {"@path": "$.c"}}})
        );
    }

    #[test]
    fn directive_rejects_unsupported_shapes() {
        let cases = [
            (json!([1]), SourceError::UnsupportedLiteral),
            (json!({"a": 1}), SourceError::UnsupportedLiteral),
            (
                json!({"@template": "{{x}}"}),
                SourceError::UnsupportedDirective,
            ),
            (
                json!({"@path": "$.a", "extra": 1}),
                SourceError::UnsupportedDirective,
            ),
            (json!({"@path": 3}), SourceError::PathNotString),
            (json!({"@if": {"then": 1}}), SourceError::InvalidIf),
            (
                json!({"@if": {"exists": 1, "blank": 1}}),
                SourceError::InvalidIf,
            ),
            (
                json!({"@if": {"exists": 1, "otherwise": 1}}),
                SourceError::InvalidIf,
            ),
            (json!({"@if": "x"}), SourceError::InvalidIf),
        ];
        for (v, want) in cases {
            assert_eq!(Source::from_value(&v), Err(want), "{v}");
        }
    }
}
