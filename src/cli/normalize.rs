//! `amc-sync normalize`: expose the `pii` core to users (DESIGN.md 4.9).

use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

use amc_sync::pii::{self, Country, Field, Normalized, Profile};
use serde_json::{Map, Value};

/// Arguments of `amc-sync normalize`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  amc-sync normalize --field email --country US ' John.Doe+promo@Example.COM '
  amc-sync normalize --field phone --country GB '020 7946 0958'
  amc-sync normalize --field address --country US --profile segment '123 Main Street'
  echo '{\"country\":\"DE\",\"field\":\"state\",\"raw\":\"Bayern\"}' | amc-sync normalize --ndjson

Fields: email, phone, first_name (firstname), last_name (lastname), address, city, state,
postal (zip, postal_code). Countries: ISO 3166-1 alpha-2 or UNKNOWN.
A value of exactly 64 hex characters is taken as already hashed and passed through lowercased.")]
pub struct Args {
    /// The PII field the value belongs to.
    #[arg(long, required_unless_present = "ndjson")]
    field: Option<String>,
    /// The record's country (selects the phone, state, postal and address rules).
    #[arg(long, default_value = "US")]
    country: String,
    /// Normalization profile: `amazon` (Amazon Ads' rules, default) or `segment`
    /// (byte-compatible with the Segment Amazon Ads DSP and AMC destination).
    #[arg(long, default_value = "amazon")]
    profile: String,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "ndjson")]
    json: bool,
    /// Read lines `{"country","field","raw"}` from stdin and write each back with
    /// `"normalized"` and `"sha256"` added (`""` and `null` when the field is omitted).
    #[arg(long, conflicts_with_all = ["field", "value"])]
    ndjson: bool,
    /// The raw value to normalize.
    #[arg(required_unless_present = "ndjson", allow_hyphen_values = true)]
    value: Option<String>,
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let profile: Profile = match args.profile.parse() {
        Ok(p) => p,
        Err(e) => return usage_error(format!("--profile {:?}: {e}", args.profile)),
    };
    if args.ndjson {
        return run_ndjson(profile);
    }
    let (Some(field_name), Some(value)) = (args.field, args.value) else {
        return usage_error("--field and a VALUE are required (or use --ndjson)");
    };
    let field = match Field::parse(&field_name) {
        Ok(f) => f,
        Err(e) => return usage_error(format!("--field {field_name:?}: {e}")),
    };
    let country = match Country::parse(&args.country) {
        Ok(c) => c,
        Err(e) => return usage_error(format!("--country {:?}: {e}", args.country)),
    };
    let result = pii::normalize(profile, field, country, &value);
    if args.json {
        let obj = output_object(field, country, profile, &result);
        println!("{}", Value::Object(obj));
        return ExitCode::SUCCESS;
    }
    match result {
        Normalized::Value {
            normalized,
            sha256,
            passthrough,
        } => {
            if passthrough {
                println!("already hashed (64 hex characters): passed through lowercased");
            }
            println!("normalized: {normalized}");
            println!("sha256:     {sha256}");
        }
        Normalized::Omitted(reason) => {
            println!(
                "omitted: the {} field would be left out of the record: {} ({})",
                field.amazon_key(),
                reason.explain(field),
                reason.code()
            );
        }
    }
    ExitCode::SUCCESS
}

fn output_object(
    field: Field,
    country: Country,
    profile: Profile,
    result: &Normalized,
) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("field".into(), Value::from(field.amazon_key()));
    obj.insert("country".into(), Value::from(country.as_str()));
    obj.insert("profile".into(), Value::from(profile.as_str()));
    add_result(&mut obj, result);
    obj
}

fn add_result(obj: &mut Map<String, Value>, result: &Normalized) {
    match result {
        Normalized::Value {
            normalized, sha256, ..
        } => {
            obj.insert("normalized".into(), Value::from(normalized.as_str()));
            obj.insert("sha256".into(), Value::from(sha256.as_str()));
        }
        Normalized::Omitted(reason) => {
            obj.insert("normalized".into(), Value::from(""));
            obj.insert("sha256".into(), Value::Null);
            obj.insert("omitted".into(), Value::from(reason.code()));
        }
    }
}

/// `--ndjson`: one object per line. A line that is not a JSON object with
/// string `country`, `field` and `raw` stops the run with exit 2 and names the
/// line number (never its content, which may be PII).
fn run_ndjson(profile: Profile) -> ExitCode {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (i, line) in stdin.lock().lines().enumerate() {
        let n = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => return usage_error(format!("stdin line {n}: {e}")),
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut obj = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return usage_error(format!("line {n}: expected a JSON object")),
            Err(e) => {
                return usage_error(format!(
                    "line {n}: invalid JSON at column {}: {}",
                    e.column(),
                    e.classify_name()
                ));
            }
        };
        let get = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(country), Some(field), Some(raw)) = (get("country"), get("field"), get("raw"))
        else {
            return usage_error(format!(
                "line {n}: needs string members \"country\", \"field\" and \"raw\""
            ));
        };
        let field = match Field::parse(&field) {
            Ok(f) => f,
            Err(e) => return usage_error(format!("line {n}: field {field:?}: {e}")),
        };
        let country = match Country::parse(&country) {
            Ok(c) => c,
            Err(e) => return usage_error(format!("line {n}: country {country:?}: {e}")),
        };
        let result = pii::normalize(profile, field, country, &raw);
        add_result(&mut obj, &result);
        if writeln!(out, "{}", Value::Object(obj)).is_err() {
            // stdout closed (e.g. piped into `head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end of line",
        }
    }
}
