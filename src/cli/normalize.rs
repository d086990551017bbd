//! `amc-sync normalize`: expose the `pii` core to users (DESIGN.md 4.9).
//!
//! Privacy: values may be PII, so no message of this command repeats a value
//! it was given — errors name the option or the line number instead.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use amc_sync::pii::{self, Country, Field, Normalized, Profile};
use serde_json::{Map, Value};

/// Longest `--ndjson` input line, in bytes; longer lines are reported and skipped.
pub const MAX_NDJSON_LINE: usize = 1024 * 1024;

/// Arguments of `amc-sync normalize`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  amc-sync normalize --field email --country US ' John.Doe+promo@Example.COM '
  amc-sync normalize --field phone --country GB '020 7946 0958'
  amc-sync normalize --field state --country DE 'Bavaria'          # table keys are English names
  amc-sync normalize --field address --country US --profile segment '123 Main Street'
  printf '%s' 'jane@example.com' | amc-sync normalize --field email -   # value from stdin
  echo '{\"country\":\"DE\",\"field\":\"state\",\"raw\":\"Bayern\"}' | amc-sync normalize --ndjson

Fields: email, phone, first_name (firstname), last_name (lastname), address, city, state,
postal (zip, postal_code). Countries: ISO 3166-1 alpha-2 or UNKNOWN.
A value of 64 hex characters (surrounding whitespace ignored) is taken as already hashed and
passed through lowercased. Use VALUE `-` to read the value from stdin, keeping it out of your
shell history and the process list; put `--` before a value that starts with `-`.")]
pub struct Args {
    /// The PII field the value belongs to.
    #[arg(long, required_unless_present = "ndjson")]
    field: Option<String>,
    /// The record's country (selects the phone, state, postal and address rules). With
    /// --ndjson: the country of lines that have no "country" member.
    #[arg(long, default_value = "US")]
    country: String,
    /// Normalization profile: `amazon` (Amazon Ads' rules) or `segment`
    /// (byte-compatible with the Segment Amazon Ads DSP and AMC destination).
    /// Default: the config's `profile` (what the agent uploads), else `amazon`.
    #[arg(long)]
    profile: Option<String>,
    /// Config file whose `profile` is the default (default: $AMC_SYNC_CONFIG, else the
    /// OS config dir's config.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "ndjson")]
    json: bool,
    /// Read lines `{"country","field","raw"}` from stdin and write each back with
    /// `"normalized"` and `"sha256"` added (`""` and `null` when the field is omitted, plus
    /// `"omitted":"<reason>"`). Bad lines are reported on stderr by number and skipped;
    /// the exit code is then 2.
    #[arg(long, conflicts_with_all = ["field", "value"])]
    ndjson: bool,
    /// The raw value to normalize (`-` reads it from stdin).
    #[arg(required_unless_present = "ndjson")]
    value: Option<String>,
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Exit status for a failed write to stdout: a closed pipe (`| head`) is a
/// normal end; anything else (disk full) is a runtime failure.
fn write_failed(e: &std::io::Error) -> ExitCode {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: cannot write the output: {e}");
        ExitCode::from(1)
    }
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let profile: Profile = match &args.profile {
        Some(p) => match p.parse() {
            Ok(p) => p,
            Err(e) => return usage_error(format!("--profile: {e}")),
        },
        // The same rules the agent applies: the config's profile.
        None => match amc_sync::config::Config::load(args.config.as_deref()) {
            Ok((cfg, _)) => cfg.profile,
            Err(e) => return usage_error(e),
        },
    };
    let country = match Country::parse(&args.country) {
        Ok(c) => c,
        Err(e) => return usage_error(format!("--country: {e}")),
    };
    if args.ndjson {
        return run_ndjson(profile, country);
    }
    let (Some(field_name), Some(value)) = (args.field, args.value) else {
        return usage_error("--field and a VALUE are required (or use --ndjson)");
    };
    let field = match Field::parse(&field_name) {
        Ok(f) => f,
        Err(e) => return usage_error(format!("--field: {e}")),
    };
    let value = if value == "-" {
        let mut buf = String::new();
        if let Err(e) = std::io::stdin()
            .take(MAX_NDJSON_LINE as u64)
            .read_to_string(&mut buf)
        {
            eprintln!("error: cannot read the value from stdin: {e}");
            return ExitCode::from(1);
        }
        buf.trim_end_matches(['\r', '\n']).to_string()
    } else {
        value
    };
    let result = pii::normalize(profile, field, country, &value);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let obj = output_object(field, country, profile, &result);
        writeln!(out, "{}", Value::Object(obj))
    } else {
        write_text(&mut out, field, &result)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => write_failed(&e),
    }
}

fn write_text(out: &mut impl Write, field: Field, result: &Normalized) -> std::io::Result<()> {
    match result {
        Normalized::Value {
            normalized,
            sha256,
            passthrough,
        } => {
            if *passthrough {
                writeln!(
                    out,
                    "already hashed (64 hex characters): passed through lowercased"
                )?;
            }
            writeln!(out, "normalized: {normalized}")?;
            writeln!(out, "sha256:     {sha256}")
        }
        Normalized::Omitted(reason) => writeln!(
            out,
            "omitted: the {} field would be left out of the record: {} ({})",
            field.amazon_key(),
            reason.explain(field),
            reason.code()
        ),
    }
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

/// Why one `--ndjson` line was skipped (never includes the line's content).
fn ndjson_line(
    line: &[u8],
    profile: Profile,
    default_country: Country,
) -> Result<Option<Map<String, Value>>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not valid UTF-8".to_string())?;
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("expected a JSON object".into()),
        Err(e) => return Err(format!("invalid JSON at column {}", e.column())),
    };
    let field = match obj.get("field").and_then(Value::as_str) {
        Some(f) => Field::parse(f).map_err(|e| format!("\"field\": {e}"))?,
        None => return Err("needs a string member \"field\"".into()),
    };
    let country = match obj.get("country") {
        None | Some(Value::Null) => default_country,
        Some(Value::String(c)) => Country::parse(c).map_err(|e| format!("\"country\": {e}"))?,
        Some(_) => return Err("\"country\" must be a string".into()),
    };
    let raw = match obj.get("raw") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Null) => None,
        Some(_) => return Err("\"raw\" must be a string, a number or null".into()),
        None => return Err("needs a member \"raw\"".into()),
    };
    let result = match raw {
        Some(r) => pii::normalize(profile, field, country, &r),
        None => Normalized::Omitted(pii::OmitReason::EmptyInput),
    };
    add_result(&mut obj, &result);
    Ok(Some(obj))
}

/// `--ndjson`: one object per line; bad lines are reported by number on
/// stderr and skipped (exit 2 at the end).
fn run_ndjson(profile: Profile, default_country: Country) -> ExitCode {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = 0u64;
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = (&mut input)
            .take(MAX_NDJSON_LINE as u64 + 1)
            .read_until(b'\n', &mut buf);
        let len = match read {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot read stdin: {e}");
                return ExitCode::from(1);
            }
        };
        if len == 0 {
            break;
        }
        n += 1;
        if len > MAX_NDJSON_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut sink = Vec::new();
            if let Err(e) = input.read_until(b'\n', &mut sink) {
                eprintln!("error: cannot read stdin: {e}");
                return ExitCode::from(1);
            }
            eprintln!("error: line {n}: longer than {MAX_NDJSON_LINE} bytes; skipped");
            bad += 1;
            continue;
        }
        match ndjson_line(&buf, profile, default_country) {
            Ok(Some(obj)) => {
                if let Err(e) = writeln!(out, "{}", Value::Object(obj)) {
                    return write_failed(&e);
                }
            }
            Ok(None) => {}
            Err(why) => {
                eprintln!("error: line {n}: {why}; skipped");
                bad += 1;
            }
        }
    }
    if let Err(e) = out.flush() {
        return write_failed(&e);
    }
    if bad > 0 {
        eprintln!("{bad} line(s) skipped");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
