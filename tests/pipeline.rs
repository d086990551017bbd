//! The intake pipeline end to end below HTTP: real SQLite file, real writer
//! thread, the shared sample traffic.

use std::path::PathBuf;

use amc_sync::agent::pipeline::{Input, Pipeline};
use amc_sync::config::Config;
use amc_sync::model::Source;
use amc_sync::store::{DeadLetterFilter, Store, Writer};
use serde_json::json;

fn open(cfg: &Config) -> (tempfile::TempDir, Writer, Pipeline) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("amc-sync.db")).expect("open store");
    let writer = Writer::spawn(store).expect("writer");
    let pipeline = Pipeline::new(cfg, writer.handle()).expect("pipeline");
    (dir, writer, pipeline)
}

fn engage(user: &str, key: &str, entered: bool, email: &str) -> serde_json::Value {
    json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "userId": user,
        "messageId": format!("m-{user}-{key}-{entered}-{email}"),
        "timestamp": "2026-11-01T00:00:00Z",
        "properties": {"audience_key": key, key: entered},
        "context": {"traits": {"email": email}, "personas": {"computation_key": key,
            "audience_settings": {"advertiserId": "585806696618602999", "countryCode": "US"}}}
    })
}

#[test]
fn sample_engage_traffic_is_queued_with_audiences_created_from_settings() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/engage-track.ndjson");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("SKIPPED: {} not found", path.display());
        return;
    };
    let (_dir, writer, p) = open(&Config::default());
    let inputs: Vec<Input> = text
        .lines()
        .map(|l| Input::message(serde_json::from_str(l).expect("sample json")))
        .collect();
    let n = inputs.len() as u64;
    let s = p.ingest(inputs, Source::File, Vec::new()).expect("commit");
    assert_eq!(s.received, n);
    assert_eq!(s.dead_lettered(), 0, "{:?}", s.rejections.first());
    assert_eq!(s.queued + s.stale + s.duplicates, n);
    let audiences = writer
        .handle()
        .call(|st| st.audiences())
        .expect("audiences");
    let keys: Vec<&str> = audiences.iter().map(|a| a.key.as_str()).collect();
    assert!(keys.contains(&"order_completed_last_30days"), "{keys:?}");
    // external_audience_id from the message is recorded as the Amazon audienceId.
    let a = audiences
        .iter()
        .find(|a| a.key == "order_completed_last_30days")
        .expect("audience");
    assert_eq!(a.audience_id.as_deref(), Some("379909525712777677"));
    // Re-sending the same messages: all duplicates, nothing new queued.
    let again: Vec<Input> = text
        .lines()
        .map(|l| Input::message(serde_json::from_str(l).expect("json")))
        .collect();
    let s2 = p.ingest(again, Source::Http, Vec::new()).expect("commit");
    assert_eq!(s2.duplicates, n);
    assert_eq!(s2.queued, 0);
}

#[test]
fn enter_then_exit_coalesces_and_bad_inputs_get_reason_codes() {
    let (_dir, writer, p) = open(&Config::default());
    let inputs = vec![
        Input::message(engage("u1", "vip", true, "a@example.com")),
        Input::message(engage("u1", "vip", true, "b@example.com")),
        Input::message(json!({"type": "page", "name": "Home"})),
        Input::message(
            json!({"type": "track", "event": "Audience Entered", "userId": "u2",
            "properties": {"nobody": true}, "context": {"personas": {"computation_key": "unknown_aud"}}}),
        ),
        Input {
            message: Err(("invalid_json", "line is not valid JSON".into())),
            line: Some(7),
        },
    ];
    let s = p.ingest(inputs, Source::File, Vec::new()).expect("commit");
    assert_eq!(s.queued, 2);
    assert_eq!(
        s.coalesced, 1,
        "second email merged into the pending change"
    );
    assert_eq!(s.ignored, 1);
    assert_eq!(s.dead_letters.get("invalid_json"), Some(&1));
    assert_eq!(s.dead_lettered(), 2, "{:?}", s.dead_letters);
    let line7 = s
        .rejections
        .iter()
        .find(|r| r.reason == "invalid_json")
        .expect("rejection");
    assert_eq!(line7.line, Some(7));
    let pending = writer
        .handle()
        .call(|st| st.pending_counts())
        .expect("counts");
    assert_eq!(pending.get("vip"), Some(&1));
    let dls = writer
        .handle()
        .call(|st| st.dead_letters(&DeadLetterFilter::default()))
        .expect("dl");
    assert_eq!(dls.len(), 2);
}

#[test]
fn configured_audience_is_created_at_start() {
    let cfg = Config::from_toml_str(
        "[[audiences]]\nkey = \"crm_list\"\nadvertiser_id = 123456789012345678\ncountry_code = \"GB\"\n",
        "t",
    )
    .expect("config");
    let (_dir, writer, _p) = open(&cfg);
    let a = writer
        .handle()
        .call(|st| st.audience("crm_list"))
        .expect("call")
        .expect("exists");
    assert_eq!(a.country_code, "GB");
}
