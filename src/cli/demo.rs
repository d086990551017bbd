//! `amc-sync demo`: the whole job on a fresh machine, with no Amazon account.
//!
//! Starts the in-process sandbox Amazon Ads API and the real agent (HTTP
//! intake, drop folder, sync engine) on a new data dir, sends generated
//! Segment Engage traffic through the real HTTP endpoint, drops a CRM CSV
//! into the drop folder, flushes, waits for the upload jobs and prints what
//! happened — including a canary check proving that none of the raw PII the
//! demo generated is stored in the data dir or was sent to the (sandbox)
//! Amazon API.

/// `println!` that never panics: a closed stdout (`demo | head`) must not
/// abort the demo before it cleans up its temporary data dir.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amc_sync::agent::runtime::{Agent, RunOptions};
use amc_sync::config::Config;
use amc_sync::pii::{self, Country, Field, Profile};
use amc_sync::sandbox::{self, Sandbox, SandboxOptions};
use amc_sync::store::{DeadLetterFilter, WriterHandle};
use amc_sync::sync::engine::{SyncHandle, SyncOptions};
use serde::Serialize;
use serde_json::{Value, json};

use super::common::{Failure, finish};

/// `amc-sync demo --help` (the subcommand's doc comment is the short about).
pub const LONG_ABOUT: &str = "\
Runs AMC Sync end to end on this machine with no Amazon account:

  1. starts the sandbox Amazon Ads API (Login with Amazon, audiences, records, jobs) in-process,
  2. starts the real agent on a new data dir: Segment-compatible HTTP intake, drop folder, uploads,
  3. sends generated Segment Engage traffic through the HTTP endpoint: track audiences
     (Audience Entered/Exited) and identify audiences (trait true/false) for a US audience and a
     German (EEA) audience with consent, a user with two emails and an enter-then-exit (both
     coalesced), and a few deliberately bad messages (EEA without consent, invalid userId, no PII,
     contradictory membership flag),
  4. drops a CRM list (CSV with BOM, CRLF, quoted values) into the drop folder,
  5. uploads (flush), waits for the upload jobs, and prints a summary: received, hashed,
     coalesced, dead letters by reason, uploaded per audience, job states, what the sandbox
     received, and a privacy check: every raw email, phone and name the demo generated is
     searched for in every file of the data dir and in every request body sent to the sandbox.

All names, emails and phone numbers are synthetic (example.com/.org/.de, 555 numbers). Exit code 0 when
every check passes, 1 otherwise.";

/// `amc-sync demo`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo run --release -- demo                 # the README's first command
  amc-sync demo --json                        # the summary as one JSON object
  amc-sync demo --keep-running                # then send your own events")]
pub struct Args {
    /// Use this data dir (must be new or empty) and keep it afterwards; default: a temporary
    /// dir that is removed at the end. Never the agent's regular data dir.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the summary as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// After the summary, keep the agent and the sandbox running (until Ctrl+C) and print
    /// their URLs, the write key and a curl example.
    #[arg(long)]
    keep_running: bool,
    /// Address of the agent's intake (default: a free port on 127.0.0.1).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Longest wait for the drop folder, the uploads and the jobs, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
}

/// Runs the demo.
pub fn run(args: Args) -> ExitCode {
    finish(run_inner(args))
}

// ---------------------------------------------------------------- data

/// The audience fed by track calls (Audience Entered / Exited).
const US_TRACK: &str = "demo_us_high_value";
/// The EEA audience fed by identify calls (trait true / false), with consent.
const DE_IDENTIFY: &str = "demo_de_newsletter";
/// The configured audience the CRM file feeds (`<key>.csv`).
const CRM: &str = "crm_loyalty_members";
/// An advertiser id for the sandbox (any digits; the sandbox accepts them).
const ADVERTISER_ID: &str = "585806696618602999";

const FIRST: [&str; 20] = [
    "Amara",
    "Bastian",
    "Corwin",
    "Delphine",
    "Evander",
    "Fiorella",
    "Gideon",
    "Henrietta",
    "Isolde",
    "Jasper",
    "Katalin",
    "Leopold",
    "Marisol",
    "Nikolai",
    "Octavia",
    "Quentin",
    "Rosalind",
    "Sigourney",
    "Thaddeus",
    "Wilhelmina",
];
const LAST: [&str; 20] = [
    "Abernathy",
    "Blomqvist",
    "Castellanos",
    "Drummond",
    "Fairweather",
    "Galbraith",
    "Halvorsen",
    "Ingersoll",
    "Jablonski",
    "Kowalczyk",
    "Lindqvist",
    "Montgomery",
    "Nakashima",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Szymanski",
    "Thornbury",
    "Vanterpool",
];
const DE_FIRST: [&str; 8] = [
    "Jürgen",
    "Käthe",
    "Björn",
    "Lieselotte",
    "Wolfgang",
    "Ursula",
    "Mathilde",
    "Reinhold",
];
const DE_LAST: [&str; 8] = [
    "Müller",
    "Schröder",
    "Weißhaupt",
    "Großmann",
    "Köhler",
    "Fuchsberger",
    "Oberhäuser",
    "Brückner",
];

/// One synthetic person.
#[derive(Debug, Clone)]
struct Person {
    user_id: String,
    first: String,
    last: String,
    email: String,
    phone: String,
    country: &'static str,
}

fn us_person(i: usize, prefix: &str) -> Person {
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i * 7 + 3) % LAST.len()];
    Person {
        user_id: format!("{prefix}_{i:04}"),
        first: first.to_string(),
        last: last.to_string(),
        // Mixed case on purpose: normalization lowercases it before hashing.
        email: format!("{first}.{last}{i:02}@Example.com"),
        phone: format!("(212) 555-01{:02}", i % 100),
        country: "US",
    }
}

fn de_person(i: usize) -> Person {
    let first = DE_FIRST[i % DE_FIRST.len()];
    let last = DE_LAST[(i * 3 + 1) % DE_LAST.len()];
    let ascii = |s: &str| {
        s.replace('ü', "ue")
            .replace('ä', "ae")
            .replace('ö', "oe")
            .replace('ß', "ss")
    };
    Person {
        user_id: format!("demo_de_{i:04}"),
        first: first.to_string(),
        last: last.to_string(),
        email: format!("{}.{}{i:02}@example.de", ascii(first), ascii(last)).to_lowercase(),
        phone: format!("030 5550 {:04}", 1100 + i),
        country: "DE",
    }
}

/// Milliseconds since the epoch → `YYYY-MM-DDThh:mm:ss.mmmZ`.
fn iso(ms: i64) -> String {
    let (y, m, d, hh, mm, ss) = amc_sync::mapping::time::civil_from_unix_secs(ms.div_euclid(1000));
    format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
        ms.rem_euclid(1000)
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the demo sends and what it expects the agent to make of it.
struct Plan {
    /// HTTP requests: (path, body, messages in it).
    requests: Vec<(&'static str, Value, u64)>,
    /// The CRM file's bytes and its data rows.
    csv: Vec<u8>,
    csv_rows: u64,
    /// Every raw PII value generated (emails, phones, names), for the canary check.
    people: Vec<Person>,
    /// Dead-letter reasons the bad messages must produce.
    expected_reasons: Vec<&'static str>,
    /// Distinct (audience, user) changes that must be queued.
    expected_pending: u64,
    /// Changes that must be coalesced into another one.
    expected_coalesced: u64,
}

fn settings(country: &str, description: &str) -> Value {
    json!({"advertiserId": ADVERTISER_ID, "countryCode": country, "description": description})
}

fn plan() -> Plan {
    let mut t = now_ms() - 120_000;
    let mut next_ts = || {
        t += 25;
        iso(t)
    };
    let mut msg_no = 0u32;
    let mut next_id = || {
        msg_no += 1;
        format!("demo-msg-{msg_no:04}")
    };
    let us_settings = settings(
        "US",
        "High-value US customers (AMC Sync demo, track audience)",
    );
    let de_settings = settings(
        "DE",
        "German newsletter subscribers with consent (AMC Sync demo, identify audience)",
    );
    let us_track = |p: &Person, entered: bool, ts: String, id: String| {
        json!({
            "type": "track", "messageId": id, "timestamp": ts, "userId": p.user_id,
            "event": if entered { "Audience Entered" } else { "Audience Exited" },
            "properties": {
                "audience_key": US_TRACK, US_TRACK: entered,
                "email": p.email, "first_name": p.first, "last_name": p.last, "phone": p.phone,
            },
            "context": {"personas": {"computation_key": US_TRACK, "audience_settings": us_settings.clone()}},
        })
    };
    let de_identify = |p: &Person, member: bool, consent: bool, ts: String, id: String| {
        let mut traits = json!({
            DE_IDENTIFY: member, "email": p.email, "first_name": p.first, "last_name": p.last,
            "phone": p.phone,
        });
        if consent {
            traits["amznAdStorage"] = json!("GRANTED");
            traits["amznUserData"] = json!("GRANTED");
        }
        json!({
            "type": "identify", "messageId": id, "timestamp": ts, "userId": p.user_id,
            "traits": traits,
            "context": {"personas": {"computation_key": DE_IDENTIFY, "audience_settings": de_settings.clone()}},
        })
    };

    let mut people = Vec::new();
    let mut requests = Vec::new();
    let mut pending = 0u64;
    let mut coalesced = 0u64;

    // 1. US track audience: 12 members enter.
    let us: Vec<Person> = (0..12).map(|i| us_person(i, "demo_us")).collect();
    let mut batch: Vec<Value> = us
        .iter()
        .map(|p| us_track(p, true, next_ts(), next_id()))
        .collect();
    pending += 12;
    // Engage sends one event per identifier: a second email for user 0 is
    // merged into the same pending change (coalesced).
    let mut second = us[0].clone();
    second.email = format!("{}.{}.work@Example.org", second.first, second.last);
    batch.push(us_track(&second, true, next_ts(), next_id()));
    coalesced += 1;
    // A user Amazon will refuse (the sandbox reports `invalid_*` ids in
    // `invalidRecords`): an upload-side dead letter.
    let refused = us_person(12, "invalid_demo_us");
    batch.push(us_track(&refused, true, next_ts(), next_id()));
    pending += 1;
    let n = batch.len() as u64;
    requests.push(("/v1/batch", json!({"batch": batch}), n));
    people.extend(us.iter().cloned());
    people.push(second);
    people.push(refused);

    // 2. EEA identify audience (DE) with consent: 8 members.
    let de: Vec<Person> = (0..8).map(de_person).collect();
    let batch: Vec<Value> = de
        .iter()
        .map(|p| de_identify(p, true, true, next_ts(), next_id()))
        .collect();
    pending += 8;
    let n = batch.len() as u64;
    requests.push(("/v1/batch", json!({"batch": batch}), n));
    people.extend(de.iter().cloned());

    // 3. Leaving: US user 1 exits after entering (the exit replaces the
    //    pending entry: only the DELETE is uploaded); DE user 8 leaves.
    requests.push((
        "/v1/track",
        us_track(&us[1], false, next_ts(), next_id()),
        1,
    ));
    coalesced += 1;
    let leaver = de_person(8);
    requests.push((
        "/v1/identify",
        de_identify(&leaver, false, true, next_ts(), next_id()),
        1,
    ));
    pending += 1;
    people.push(leaver);

    // 4. Deliberately bad messages, each dead-lettered with a reason code.
    let no_consent = de_person(9);
    let bad_id = us_person(20, "demo_us");
    let mut bad_id_msg = us_track(&bad_id, true, next_ts(), next_id());
    bad_id_msg["userId"] = json!("user 20 (not a valid id!)");
    let mut no_pii = json!({
        "type": "track", "messageId": next_id(), "timestamp": next_ts(), "userId": "demo_us_0021",
        "event": "Audience Entered",
        "properties": {"audience_key": US_TRACK, US_TRACK: true},
        "context": {"personas": {"computation_key": US_TRACK, "audience_settings": us_settings.clone()}},
    });
    no_pii["properties"]["plan"] = json!("gold");
    let contradiction = us_person(22, "demo_us");
    let mut contradiction_msg = us_track(&contradiction, true, next_ts(), next_id());
    contradiction_msg["event"] = json!("Audience Exited");
    let bad = vec![
        de_identify(&no_consent, true, false, next_ts(), next_id()),
        bad_id_msg,
        no_pii,
        contradiction_msg,
    ];
    people.extend([no_consent, bad_id, contradiction]);
    requests.push(("/v1/batch", json!({"batch": bad}), 4));

    // 5. The CRM export: UTF-8 with BOM, CRLF, RFC 4180 quoting; one row
    //    with an invalid id (a file-side dead letter).
    let mut csv = String::from(
        "\u{feff}external_user_id,email,first_name,last_name,phone,postal,city,state,country\r\n",
    );
    let crm: Vec<Person> = (40..48).map(|i| us_person(i, "crm")).collect();
    for p in &crm {
        csv.push_str(&format!(
            "{},\"{}\",\"{}\",\"{}\",\"{}\",\"{:05}\",\"New York, NY\",NY,US\r\n",
            p.user_id,
            p.email,
            p.first,
            p.last,
            p.phone,
            10_001 + (p.user_id.len() % 9)
        ));
    }
    pending += crm.len() as u64;
    let bad_row = us_person(48, "crm");
    csv.push_str(&format!(
        "\"crm #48\",\"{}\",\"{}\",\"{}\",\"{}\",10001,\"New York, NY\",NY,US\r\n",
        bad_row.email, bad_row.first, bad_row.last, bad_row.phone
    ));
    let csv_rows = crm.len() as u64 + 1;
    people.extend(crm);
    people.push(bad_row);

    Plan {
        requests,
        csv: csv.into_bytes(),
        csv_rows,
        people,
        expected_reasons: vec![
            "consent_required",
            "invalid_external_user_id",
            "no_identifiers",
            "membership_contradiction",
            "amazon_invalid_record",
        ],
        expected_pending: pending,
        expected_coalesced: coalesced,
    }
}

/// Every raw PII value of `people` in the forms that could leak: as sent,
/// normalized (what is hashed), and phone digits with and without the
/// country code. Lowercase, deduplicated.
fn canaries(people: &[Person]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in people {
        let country = Country::parse(p.country).unwrap_or(Country::US);
        let norm = |f: Field, v: &str| pii::normalize_only(Profile::Amazon, f, country, v);
        let mut add = |v: String| {
            let v = v.trim().to_lowercase();
            if v.chars().count() >= 4 {
                out.insert(v);
            }
        };
        add(p.email.clone());
        add(norm(Field::Email, &p.email));
        add(p.first.clone());
        add(norm(Field::FirstName, &p.first));
        add(p.last.clone());
        add(norm(Field::LastName, &p.last));
        add(format!("{} {}", p.first, p.last));
        add(p.phone.clone());
        let e164 = norm(Field::Phone, &p.phone);
        let digits: String = p.phone.chars().filter(char::is_ascii_digit).collect();
        add(digits.trim_start_matches('0').to_string());
        add(e164);
    }
    out
}

// ---------------------------------------------------------------- summary

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    http_messages: u64,
    http_requests: u64,
    csv_rows: u64,
    total: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct AudienceSummary {
    key: String,
    country_code: String,
    amazon_audience_id: Option<String>,
    /// Users whose latest change Amazon accepted.
    uploaded: u64,
    /// Records Amazon refused (upload dead letters).
    failed: u64,
    /// Records the sandbox Amazon API holds for this audience.
    sandbox_received: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSummary {
    audience_key: String,
    job_request_id: String,
    state: String,
    records: u64,
    invalid: u64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Privacy {
    raw_values: usize,
    found: usize,
    files: usize,
    bytes: u64,
    request_bodies: usize,
    request_bytes: u64,
    found_in: Vec<String>,
    scope: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    name: String,
    ok: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    ok: bool,
    data_dir: String,
    data_dir_kept: bool,
    intake_url: String,
    sandbox_url: String,
    received: Received,
    /// Changes normalized, SHA-256-hashed and queued.
    hashed: u64,
    /// Hashed identifiers (email, phone, name, …) in the records Amazon received.
    hashed_identifiers_uploaded: u64,
    /// Of `hashed`: merged into another pending change (two emails, enter→exit).
    coalesced: u64,
    /// Pending changes after coalescing, before the upload.
    queued: u64,
    /// Pending changes left after the upload (0 when everything went).
    pending_after: u64,
    dead_letters: BTreeMap<String, u64>,
    dead_letters_by_source: BTreeMap<String, BTreeMap<String, u64>>,
    audiences: Vec<AudienceSummary>,
    jobs: Vec<JobSummary>,
    job_states: BTreeMap<String, u64>,
    sandbox_received_total: u64,
    privacy: Privacy,
    checks: Vec<Check>,
    elapsed_ms: u64,
}

// ---------------------------------------------------------------- progress

/// A spinner on a terminal, plain step lines otherwise (stderr).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Progress { bar }
    }

    fn step(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None => errln!("… {msg}"),
        }
    }

    fn done(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("✓ {msg}")),
            None => errln!("✓ {msg}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

// ---------------------------------------------------------------- run

fn rt(context: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| Failure::runtime(format!("{context}: {e}"))
}

/// Resolves the data dir: a given one must be new or empty.
fn prepare_data_dir(given: Option<&Path>) -> Result<(PathBuf, bool), Failure> {
    if let Some(d) = given {
        if let Ok(mut entries) = std::fs::read_dir(d)
            && entries.next().is_some()
        {
            return Err(Failure::usage(format!(
                "--data-dir {}: the demo needs a new or empty directory (it must not mix with \
                 an existing queue)",
                d.display()
            )));
        }
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", d.display())))?;
        let abs = std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf());
        return Ok((abs, true));
    }
    let mut rnd = [0u8; 6];
    let _ = getrandom::fill(&mut rnd);
    let suffix: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("amc-sync-demo-{suffix}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
    Ok((dir, false))
}

fn demo_config(sandbox_url: &str) -> String {
    format!(
        r#"# Written by `amc-sync demo` (no secrets: the sandbox credentials stay in memory).
api_base_url = "{sandbox_url}"
# Raw PII files should not linger: delete the CSV once it is committed.
delete_processed_files = true

[schedule]
upload_interval_secs = 3600   # the demo uploads on demand (flush)

[[audiences]]
key = "{CRM}"                 # the CSV file's name: {CRM}.csv
advertiser_id = {ADVERTISER_ID}
country_code = "US"
description = "Loyalty members from the nightly CRM export (AMC Sync demo)"
"#
    )
}

/// Installs logging: everything to `<data dir>/logs`, warnings to stderr.
fn init_logging(dir: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let appender = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("amc-sync")
        .filename_suffix("log")
        .build(dir.join("logs"))
        .ok()?;
    let (nb, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = std::io::stderr
        .with_max_level(tracing::Level::WARN)
        .and(nb.with_max_level(tracing::Level::TRACE));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}

fn run_inner(args: Args) -> Result<(), Failure> {
    if !args.listen.ip().is_loopback() {
        return Err(Failure::usage(
            "--listen: the demo listens on a loopback address only",
        ));
    }
    let started = Instant::now();
    let (data_dir, keep_dir) = prepare_data_dir(args.data_dir.as_deref())?;
    let guard = init_logging(&data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))?;
    // Ctrl+C, SIGTERM or SIGHUP end the demo early but still remove its
    // temporary data dir (it may hold the generated CRM file).
    let result = runtime.block_on(async {
        tokio::select! {
            r = demo(&args, &data_dir, keep_dir, guard, started) => r,
            code = interrupted(args.keep_running) => Err(Failure {
                code,
                message: "interrupted; the demo's temporary data was removed".into(),
            }),
        }
    });
    drop(runtime);
    if !keep_dir {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

/// Resolves on Ctrl+C (exit 130), SIGTERM (143) or SIGHUP (129). With
/// `--keep-running`, Ctrl+C is the normal way to stop and is handled by the
/// demo itself (clean exit 0), so only SIGTERM/SIGHUP count here.
async fn interrupted(keep_running: bool) -> u8 {
    let ctrl_c = async move {
        if keep_running {
            std::future::pending::<()>().await;
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            ctrl_c.await;
            return 130;
        };
        tokio::select! {
            () = ctrl_c => 130,
            _ = term.recv() => 143,
            _ = hup.recv() => 129,
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        130
    }
}

async fn demo(
    args: &Args,
    data_dir: &Path,
    keep_dir: bool,
    mut guard: Option<tracing_appender::non_blocking::WorkerGuard>,
    started: Instant,
) -> Result<(), Failure> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let progress = Progress::new();
    progress.step("starting the sandbox Amazon Ads API and the agent");
    let sb = sandbox::try_start(SandboxOptions {
        keep_raw_bodies: true,
        ..SandboxOptions::default()
    })
    .await
    .map_err(|e| Failure::runtime(format!("cannot start the sandbox: {e}")))?;

    let config_text = demo_config(&sb.base_url());
    let config_path = data_dir.join("demo-config.toml");
    std::fs::write(&config_path, &config_text)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", config_path.display())))?;
    let config = Config::from_toml_str(&config_text, &config_path.display().to_string())
        .map_err(|e| Failure::runtime(format!("demo config: {e}")))?;
    let mut opts = RunOptions::new(config.clone(), data_dir.to_path_buf());
    opts.credentials = Some(sb.credentials());
    opts.folder_settle = Some(Duration::from_millis(300));
    opts.sync = Some(SyncOptions {
        interval: Duration::from_secs(3600),
        poll_initial: Duration::from_millis(200),
        poll_max: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(500),
        backoff_max: Duration::from_secs(5),
        ..SyncOptions::from_config(&config)
    });
    let agent = Agent::open(opts).map_err(|e| Failure::runtime(e.to_string()))?;
    let write_key = agent.write_key().to_string();
    let admin_token = agent.admin_token().to_string();
    let drop_dir = agent
        .drop_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| Failure::runtime("the agent has no drop folder"))?;
    let sync = agent.sync();
    let writer = agent.pipeline().writer().clone();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let intake = format!("http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agent.serve(listener, async move {
        let _ = stop_rx.await;
    }));
    // The engine's first round runs at start-up; wait for it so that no
    // upload starts while the demo traffic arrives.
    let engine = &sync;
    wait_until(timeout, || async move { engine.rounds() >= 1 })
        .await
        .map_err(|()| Failure::runtime("the sync engine did not start"))?;
    progress.done(&format!(
        "sandbox Amazon API on {}, agent intake on {intake}, data dir {}",
        sb.base_url(),
        data_dir.display()
    ));

    let outcome = drive(
        &progress, &sb, &sync, &writer, &intake, &write_key, &drop_dir, timeout,
    )
    .await;

    let mut summary = match outcome {
        Ok(s) => s,
        Err(f) => {
            progress.finish();
            let _ = stop_tx.send(());
            let _ = server.await;
            return Err(f);
        }
    };
    summary.data_dir = data_dir.display().to_string();
    summary.data_dir_kept = keep_dir;
    summary.intake_url.clone_from(&intake);
    summary.sandbox_url = sb.base_url();

    // Search the data dir while the agent runs (the WAL holds the latest
    // commits), then stop it (the database is checkpointed and closed, the
    // logs flushed) and search every byte it left behind.
    progress.step("privacy check: searching the data dir for raw PII");
    let mut scanner = Scanner::new(&canaries(&plan().people))?;
    scanner.scan_dir(data_dir)?;
    let mut stop_tx = Some(stop_tx);
    let mut server = Some(server);
    if !args.keep_running {
        progress.step("stopping the agent");
        if let Some(tx) = stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(s) = server.take() {
            match s.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Failure::runtime(format!("agent: {e}"))),
                Err(e) => return Err(Failure::runtime(format!("agent task: {e}"))),
            }
        }
        drop(guard.take());
    }
    scanner.scan_dir(data_dir)?;
    scanner.scan_bodies(&sb.raw_bodies());
    summary.privacy = scanner.result();
    summary.checks.push(Check {
        name: "no raw PII in the data dir or in the requests sent to Amazon".into(),
        ok: summary.privacy.found == 0,
    });
    summary.ok = summary.checks.iter().all(|c| c.ok);
    summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    progress.finish();

    if args.json {
        let mut v = serde_json::to_value(&summary).map_err(|e| Failure::runtime(e.to_string()))?;
        if args.keep_running {
            v["keepRunning"] = json!({
                "intakeUrl": intake, "writeKey": write_key, "adminStatusUrl": format!("{intake}/api/status"),
                "adminToken": admin_token, "sandboxReceivedUrl": format!("{}/__sandbox/received", sb.base_url()),
                "dataDir": data_dir.display().to_string(),
            });
        }
        outln!("{v}");
    } else {
        print_summary(&summary);
    }

    if args.keep_running {
        if !args.json {
            print_keep_running(&intake, &write_key, &admin_token, &sb, data_dir, keep_dir);
        }
        errln!("Agent and sandbox keep running; press Ctrl+C to stop.");
        // Upload what the user sends every 10 s, so it shows up quickly.
        let flusher = {
            let sync = sync.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    sync.flush();
                }
            })
        };
        let _ = tokio::signal::ctrl_c().await;
        flusher.abort();
        if let Some(tx) = stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(s) = server.take() {
            let _ = s.await;
        }
        drop(guard.take());
    }
    sb.shutdown().await;
    if summary.ok {
        Ok(())
    } else {
        let failed: Vec<&str> = summary
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        Err(Failure::runtime(format!(
            "demo check(s) failed: {}",
            failed.join("; ")
        )))
    }
}

async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn store<R, F>(writer: &WriterHandle, f: F) -> Result<R, Failure>
where
    R: Send + 'static,
    F: FnOnce(&mut amc_sync::store::Store) -> Result<R, amc_sync::store::StoreError>
        + Send
        + 'static,
{
    let w = writer.clone();
    tokio::task::spawn_blocking(move || w.call(f))
        .await
        .map_err(|e| Failure::runtime(format!("database task: {e}")))?
        .map_err(|e| Failure::runtime(format!("database: {e}")))
}

/// Sends the traffic, drops the CSV, uploads, waits and collects the summary.
#[allow(clippy::too_many_arguments)]
async fn drive(
    progress: &Progress,
    sb: &Sandbox,
    sync: &SyncHandle,
    writer: &WriterHandle,
    intake: &str,
    write_key: &str,
    drop_dir: &Path,
    timeout: Duration,
) -> Result<Summary, Failure> {
    let plan = plan();
    let mut summary = Summary::default();

    // 1. Segment traffic through the real HTTP endpoint.
    progress.step("sending Segment Engage traffic to the HTTP intake");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    for (path, body, n) in &plan.requests {
        let resp = client
            .post(format!("{intake}{path}"))
            .basic_auth(write_key, None::<&str>)
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::runtime(format!("POST {path}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Failure::runtime(format!(
                "POST {path} answered {status}: {text}"
            )));
        }
        summary.received.http_requests += 1;
        summary.received.http_messages += n;
    }
    progress.done(&format!(
        "sent {} Segment messages in {} requests (track + identify audiences, US + DE with consent, 4 deliberately bad)",
        summary.received.http_messages, summary.received.http_requests
    ));

    // 2. The CRM file into the drop folder (written under a hidden name, then renamed).
    progress.step("dropping the CRM list into the drop folder");
    let name = format!("{CRM}.csv");
    let tmp = drop_dir.join(format!(".{name}.tmp"));
    let target = drop_dir.join(&name);
    std::fs::write(&tmp, &plan.csv)
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", target.display())))?;
    let failed = drop_dir.join("failed").join(&name);
    let (t, f) = (&target, &failed);
    let gone = wait_until(timeout, || async move { !t.exists() || f.exists() }).await;
    if gone.is_err() {
        return Err(Failure::runtime(format!(
            "the drop folder did not pick up {} within {} s",
            target.display(),
            timeout.as_secs()
        )));
    }
    if failed.exists() {
        return Err(Failure::runtime(format!(
            "the drop folder could not read {name} (see {})",
            drop_dir.join("failed").display()
        )));
    }
    summary.received.csv_rows = plan.csv_rows;
    summary.received.total = summary.received.http_messages + summary.received.csv_rows;
    progress.done(&format!(
        "{name}: {} rows committed, then the file was deleted (delete_processed_files = true)",
        plan.csv_rows
    ));

    // 3. What the intake made of it, before anything is uploaded.
    let (pending, intake_dead) = store(writer, |s| {
        Ok((
            s.pending_counts()?,
            s.dead_letters(&DeadLetterFilter {
                limit: 100_000,
                ..DeadLetterFilter::default()
            })?,
        ))
    })
    .await?;
    let intake_dead = intake_dead.len() as u64;
    summary.queued = pending.values().sum();
    summary.hashed = summary.received.total.saturating_sub(intake_dead);
    summary.coalesced = summary.hashed.saturating_sub(summary.queued);

    // 4. Upload: flush, wait for the round, then for every job to be terminal.
    progress.step("uploading to the sandbox Amazon API (flush) and waiting for the jobs");
    let deadline = Instant::now() + timeout;
    loop {
        let before = sync.rounds();
        sync.flush();
        wait_until(
            deadline.saturating_duration_since(Instant::now()),
            || async move { sync.rounds() > before },
        )
        .await
        .map_err(|()| Failure::runtime("no upload round finished in time"))?;
        let left: u64 = store(writer, |s| s.pending_counts()).await?.values().sum();
        if left == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let jobs_done = wait_until(deadline.saturating_duration_since(Instant::now()), || {
        let w = writer.clone();
        async move {
            sync.poll_jobs_now();
            tokio::time::sleep(Duration::from_millis(150)).await;
            store(&w, |s| s.open_jobs())
                .await
                .is_ok_and(|j| j.is_empty())
        }
    })
    .await
    .is_ok();

    // 5. Collect.
    let (audiences, uploads, jobs, dead, left) = store(writer, |s| {
        Ok((
            s.audiences()?,
            s.upload_counts()?,
            s.recent_jobs(10_000)?,
            s.dead_letters(&DeadLetterFilter {
                limit: 100_000,
                ..DeadLetterFilter::default()
            })?,
            s.pending_counts()?,
        ))
    })
    .await?;
    summary.pending_after = left.values().sum();
    for d in &dead {
        *summary.dead_letters.entry(d.reason.clone()).or_insert(0) += 1;
        *summary
            .dead_letters_by_source
            .entry(d.source.as_str().to_string())
            .or_default()
            .entry(d.reason.clone())
            .or_insert(0) += 1;
    }
    let received = sb.received();
    for recs in received.values() {
        for r in recs {
            for h in &r.record.hashed_pii {
                if let Ok(Value::Object(m)) = serde_json::to_value(h) {
                    summary.hashed_identifiers_uploaded += m.len() as u64;
                }
            }
        }
    }
    summary.sandbox_received_total = received.values().map(|v| v.len() as u64).sum();
    for a in &audiences {
        let u = uploads.get(&a.key).cloned().unwrap_or_default();
        summary.audiences.push(AudienceSummary {
            key: a.key.clone(),
            country_code: a.country_code.clone(),
            amazon_audience_id: a.audience_id.clone(),
            uploaded: u.uploaded,
            failed: u.failed,
            sandbox_received: a
                .audience_id
                .as_ref()
                .and_then(|id| received.get(id))
                .map_or(0, |v| v.len() as u64),
        });
    }
    for j in &jobs {
        *summary.job_states.entry(j.state.clone()).or_insert(0) += 1;
        summary.jobs.push(JobSummary {
            audience_key: j.audience_key.clone(),
            job_request_id: j.job_request_id.clone(),
            state: j.state.clone(),
            records: j.records,
            invalid: j.invalid,
        });
    }
    progress.done(&format!(
        "uploaded {} records in {} job(s) to {} audiences",
        summary.jobs.iter().map(|j| j.records).sum::<u64>(),
        summary.jobs.len(),
        summary.audiences.len()
    ));

    // 6. Checks: the summary must add up.
    let mut check = |name: String, ok: bool| summary.checks.push(Check { name, ok });
    check(
        format!(
            "{} changes queued after coalescing (expected {})",
            summary.queued, plan.expected_pending
        ),
        summary.queued == plan.expected_pending,
    );
    check(
        format!(
            "{} changes coalesced (expected {})",
            summary.coalesced, plan.expected_coalesced
        ),
        summary.coalesced == plan.expected_coalesced,
    );
    for reason in &plan.expected_reasons {
        let n = summary.dead_letters.get(*reason).copied().unwrap_or(0);
        check(format!("dead letter {reason} recorded ({n})"), n > 0);
    }
    check(
        format!(
            "queue empty after the upload ({} left)",
            summary.pending_after
        ),
        summary.pending_after == 0,
    );
    check(
        format!("every upload job finished ({} job(s))", summary.jobs.len()),
        jobs_done && !summary.jobs.is_empty(),
    );
    for a in &summary.audiences {
        check(
            format!(
                "audience {} uploaded ({} users, {} records at the sandbox)",
                a.key, a.uploaded, a.sandbox_received
            ),
            a.uploaded > 0 && a.sandbox_received > 0 && a.amazon_audience_id.is_some(),
        );
    }
    let expected_at_amazon = summary.queued
        - summary
            .dead_letters
            .get("amazon_invalid_record")
            .copied()
            .unwrap_or(0);
    check(
        format!(
            "the sandbox holds every accepted record ({} of {expected_at_amazon})",
            summary.sandbox_received_total
        ),
        summary.sandbox_received_total == expected_at_amazon,
    );
    Ok(summary)
}

/// The canary search: one case-insensitive pattern over every value.
struct Scanner {
    re: regex::bytes::Regex,
    raw_values: usize,
    found: BTreeSet<String>,
    paths: BTreeSet<PathBuf>,
    found_in: BTreeSet<String>,
    bytes: u64,
    request_bodies: usize,
    request_bytes: u64,
}

impl Scanner {
    fn new(canaries: &BTreeSet<String>) -> Result<Scanner, Failure> {
        // Longest first: a match reports the whole value (an email), not a
        // name inside it.
        let mut values: Vec<&String> = canaries.iter().collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let pattern = values
            .iter()
            .map(|c| regex::escape(c))
            .collect::<Vec<_>>()
            .join("|");
        let re = regex::bytes::RegexBuilder::new(&pattern)
            .case_insensitive(true)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| Failure::runtime(format!("canary pattern: {e}")))?;
        Ok(Scanner {
            re,
            raw_values: canaries.len(),
            found: BTreeSet::new(),
            paths: BTreeSet::new(),
            found_in: BTreeSet::new(),
            bytes: 0,
            request_bodies: 0,
            request_bytes: 0,
        })
    }

    /// Searches `bytes`; true when a canary was found.
    fn search(&mut self, bytes: &[u8]) -> bool {
        let mut hit = false;
        for m in self.re.find_iter(bytes) {
            self.found
                .insert(String::from_utf8_lossy(m.as_bytes()).to_lowercase());
            hit = true;
        }
        hit
    }

    /// Searches every file under `dir` (a file that vanished meanwhile, such
    /// as the WAL at close, is skipped).
    fn scan_dir(&mut self, dir: &Path) -> Result<(), Failure> {
        let mut files = Vec::new();
        walk(dir, &mut files).map_err(rt("privacy check"))?;
        for f in files {
            let bytes = match std::fs::read(&f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Failure::runtime(format!(
                        "privacy check: {}: {e}",
                        f.display()
                    )));
                }
            };
            self.bytes += bytes.len() as u64;
            if self.search(&bytes) {
                self.found_in.insert(f.display().to_string());
            }
            self.paths.insert(f);
        }
        Ok(())
    }

    /// Searches request bodies sent to the (sandbox) Amazon API.
    fn scan_bodies(&mut self, bodies: &[bytes::Bytes]) {
        for b in bodies {
            self.request_bodies += 1;
            self.request_bytes += b.len() as u64;
            if self.search(b) {
                self.found_in
                    .insert("a request body sent to the sandbox Amazon API".into());
            }
        }
    }

    fn result(self) -> Privacy {
        Privacy {
            raw_values: self.raw_values,
            found: self.found.len(),
            files: self.paths.len(),
            bytes: self.bytes,
            request_bodies: self.request_bodies,
            request_bytes: self.request_bytes,
            found_in: self.found_in.into_iter().collect(),
            scope: "every file in the data dir, searched while the agent ran (database, WAL, \
                    logs, agent state, drop folder incl. rejected/ reports) and again after it \
                    stopped; the CSV itself was deleted after commit; and every records request \
                    body sent to the sandbox Amazon API"
                .into(),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let path = e.path();
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    let mut o = String::new();
    let mut line = |t: String| {
        o.push_str(&t);
        o.push('\n');
    };
    line(String::new());
    line("AMC Sync demo — summary".into());
    line(format!(
        "  received        {} Segment messages over HTTP ({} requests) + {} CSV rows = {}",
        s.received.http_messages, s.received.http_requests, s.received.csv_rows, s.received.total
    ));
    line(format!(
        "  hashed          {} changes normalized and SHA-256-hashed on this device",
        s.hashed
    ));
    line(format!(
        "  coalesced       {} (a second email merged into one record; an enter then exit sent as the exit only)",
        s.coalesced
    ));
    line(format!(
        "  queued          {} changes, uploaded in {} job(s); {} left pending",
        s.queued,
        s.jobs.len(),
        s.pending_after
    ));
    let total_dead: u64 = s.dead_letters.values().sum();
    line(format!("  dead letters    {total_dead}"));
    for (source, reasons) in &s.dead_letters_by_source {
        for (reason, n) in reasons {
            line(format!("    {reason:<28} {n:>3}   ({source})"));
        }
    }
    line("  uploaded per audience".into());
    for a in &s.audiences {
        line(format!(
            "    {:<22} {}  audienceId {:<22} {:>3} users uploaded, {} refused by Amazon",
            a.key,
            a.country_code,
            a.amazon_audience_id.as_deref().unwrap_or("-"),
            a.uploaded,
            a.failed
        ));
    }
    let states: Vec<String> = s
        .job_states
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    line(format!("  jobs            {}", states.join(", ")));
    line(format!(
        "  sandbox Amazon  {} records received ({} hashed identifiers)",
        s.sandbox_received_total, s.hashed_identifiers_uploaded
    ));
    for a in &s.audiences {
        if let Some(id) = &a.amazon_audience_id {
            line(format!(
                "    audience {id:<24} {:>3} records   ({})",
                a.sandbox_received, a.key
            ));
        }
    }
    line(format!(
        "  privacy check: {} of {} raw PII values found in {} bytes of {} files \
         (+ {} bytes of {} request bodies sent to Amazon)",
        s.privacy.found,
        s.privacy.raw_values,
        s.privacy.bytes,
        s.privacy.files,
        s.privacy.request_bytes,
        s.privacy.request_bodies
    ));
    for f in &s.privacy.found_in {
        line(format!("    FOUND in {f}"));
    }
    line("  checks".into());
    for c in &s.checks {
        line(format!(
            "    {} {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name
        ));
    }
    line(format!(
        "  data dir        {}{}",
        s.data_dir,
        if s.data_dir_kept {
            "  (kept: `amc-sync status --data-dir <it>`)"
        } else {
            "  (temporary)"
        }
    ));
    line(format!(
        "{} in {:.1} s",
        if s.ok {
            "Demo finished: every check passed"
        } else {
            "Demo FAILED"
        },
        s.elapsed_ms as f64 / 1000.0
    ));
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(o.as_bytes()).and_then(|()| out.flush());
}

fn print_keep_running(
    intake: &str,
    write_key: &str,
    admin_token: &str,
    sb: &Sandbox,
    data_dir: &Path,
    keep_dir: bool,
) {
    let dd = data_dir.display();
    outln!(
        "
The agent and the sandbox keep running:
  intake (Segment host): {intake}      write key: {write_key}
  admin API:             {intake}/api/status   (Authorization: Bearer {admin_token})
  dashboard:             not built yet — use `amc-sync status --data-dir {dd}`
  sandbox Amazon API:    {sb_url}   (what it received: {sb_url}/__sandbox/received)
  data dir:              {dd}{tmp}
Queued changes are uploaded every 10 s (or now: `amc-sync flush --wait --data-dir {dd}`).

Send your own event:
  curl -sS -u '{write_key}:' -H 'Content-Type: application/json' {intake}/v1/track -d '{{
    \"userId\": \"my_user_1\", \"event\": \"Audience Entered\",
    \"properties\": {{\"audience_key\": \"{US_TRACK}\", \"{US_TRACK}\": true, \"email\": \"you@example.com\"}},
    \"context\": {{\"personas\": {{\"computation_key\": \"{US_TRACK}\"}}}}}}'",
        sb_url = sb.base_url(),
        tmp = if keep_dir {
            ""
        } else {
            "   (temporary: removed when you stop the demo)"
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_formats_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            amc_sync::mapping::time::parse_timestamp_ms(&iso(1_767_225_599_999)),
            Some(1_767_225_599_999)
        );
    }

    #[test]
    fn scanner_finds_a_planted_value_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let people = [de_person(3)];
        let c = canaries(&people);
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("clean.db"), b"hashed only: 0123abcd").unwrap();
        let mut s = Scanner::new(&c).unwrap();
        s.scan_dir(dir.path()).unwrap();
        s.scan_bodies(&[bytes::Bytes::from_static(b"{\"email\":\"0a1b\"}")]);
        assert_eq!(s.result().found, 0);
        let planted = format!("xx{}yy", people[0].email.to_uppercase());
        std::fs::write(dir.path().join("logs").join("a.log"), planted).unwrap();
        let mut s = Scanner::new(&c).unwrap();
        s.scan_dir(dir.path()).unwrap();
        let r = s.result();
        assert_eq!(r.found, 1);
        assert_eq!(r.files, 2);
        assert!(r.found_in[0].ends_with("a.log"), "{:?}", r.found_in);
    }

    #[test]
    fn canaries_cover_raw_and_normalized_forms() {
        let c = canaries(&[de_person(0)]);
        assert!(c.contains("jürgen"));
        assert!(c.contains("juergen"));
        assert!(c.iter().any(|v| v.starts_with("4930")), "{c:?}");
    }
}
