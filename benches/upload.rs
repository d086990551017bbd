//! Upload benchmark (DESIGN.md 5, issue 4 item 6), in process:
//!
//! 1. **Enqueue** (not part of the upload figure): N realistic hashed changes
//!    (default 1,000,000; six audiences over US/GB/DE; 2–3 `hashedPII`
//!    fields each — email, phone, sometimes first name; GB/DE users carry a
//!    `userConsent`; 1 in 7 is a DELETE) are queued through the store's
//!    group-commit writer ([`WriterHandle::submit_nowait`], 5,000 per
//!    submission) into a real SQLite file in a temp dir.
//! 2. **Upload**: one [`SyncEngine::upload_round`] against the in-process
//!    sandbox Amazon API (real HTTP on loopback, `job_pending_polls: 0`),
//!    then [`SyncEngine::poll_jobs`] until no job is open. Reports records/s,
//!    wall seconds (target ≤ 10 s for 1,000,000), requests, the sandbox's own
//!    time in the records handler (parse + validate + keep), and checks that
//!    the queue is empty and the sandbox accepted every record.
//! 3. **Planner + encoder** for one 10,000-record body (target ≤ 20 ms):
//!    `PendingRecord` → `Record`, plan, encode; median of 25 runs (no
//!    criterion), on records read back from the store.
//!
//! Peak RSS is the bench process's `VmHWM` (it holds the sandbox's copy of
//! every accepted record too, as `Sandbox::received` keeps them).
//!
//! Run: `cargo bench --bench upload`. Environment: `AMC_SYNC_BENCH_RECORDS`
//! (default 1,000,000). The report goes to `bench-report/upload.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use amc_sync::amazon::{
    AmazonClient, ClientOptions, Digits, Record, body_overhead_len, encode_records_body,
    record_encoded_len,
};
use amc_sync::model::{
    Action, AmznConsent, Consent, ConsentValue, Geo, HashedPii, MemberChange, Source, UserConsent,
};
use amc_sync::pii::sha256_hex;
use amc_sync::sandbox::{self, SandboxOptions};
use amc_sync::store::{IncomingItem, NewAudience, PendingRecord, Store, Target, Writer};
use amc_sync::sync::engine::{SyncEngine, SyncOptions};
use amc_sync::sync::planner::{self, Limits};
use serde_json::json;

/// (country, audiences) per market.
const MARKETS: &[(&str, [&str; 2])] = &[
    ("US", ["us_buyers", "us_churn_risk"]),
    ("GB", ["gb_loyal", "gb_cart_abandoners"]),
    ("DE", ["de_newsletter", "de_high_value"]),
];

/// Deterministic 64-bit mix (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Change `i`: one distinct user per change.
fn change(i: u64) -> MemberChange {
    let r = mix(i);
    let (cc, auds) = MARKETS[(r % 3) as usize];
    let aud = auds[((r >> 8) & 1) as usize];
    let action = if (r >> 9).is_multiple_of(7) {
        Action::Delete
    } else {
        Action::Create
    };
    let user_consent = (cc != "US").then(|| UserConsent {
        geo: Geo {
            country_code: cc.into(),
            ip_address: None,
        },
        consent: Some(Consent {
            amzn: Some(AmznConsent {
                amzn_ad_storage: Some(ConsentValue::Granted),
                amzn_user_data: Some(if (r >> 16).is_multiple_of(5) {
                    ConsentValue::Denied
                } else {
                    ConsentValue::Granted
                }),
            }),
            tcf: None,
            gpp: None,
        }),
    });
    MemberChange {
        audience_key: aud.into(),
        external_user_id: format!("u{i:010}"),
        action,
        event_time_ms: 1_790_000_000_000 + (i % 86_400_000) as i64,
        country_code: cc.into(),
        hashed_pii: HashedPii {
            email: Some(sha256_hex(&format!("user.{i}@example.com"))),
            phone: Some(sha256_hex(&format!("1415555{:04}", r % 10_000))),
            firstname: (r >> 20)
                .is_multiple_of(2)
                .then(|| sha256_hex(["john", "marie", "anna"][((r >> 24) % 3) as usize])),
            ..HashedPii::default()
        },
        user_consent,
    }
}

fn vm_hwm_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `write_bytes` of `/proc/self/io`: bytes this process sent to storage.
fn io_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// As the engine turns a queued row into a wire record (moved, not copied).
fn into_record(p: PendingRecord) -> Record {
    Record {
        external_user_id: p.external_user_id,
        country_code: Some(p.country_code).filter(|c| c != "UNKNOWN"),
        action: p.action,
        hashed_pii: p.hashed_pii,
        user_consent: p.user_consent,
    }
}

/// Planner + encoder for one body of `batch` (as the engine does it).
fn plan_encode_phase(batch: &[PendingRecord], runs: usize) -> serde_json::Value {
    let id = Digits::parse("9223372036854775907").expect("digits");
    let limits = Limits {
        envelope_bytes: body_overhead_len(&id),
        ..Limits::default()
    };
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    let mut bodies = 0;
    for _ in 0..runs {
        let page = batch.to_vec();
        let t = Instant::now();
        let mut seqs = Vec::with_capacity(page.len());
        let records: Vec<Record> = page
            .into_iter()
            .map(|p| {
                seqs.push(p.seq);
                into_record(p)
            })
            .collect();
        let (batches, oversized) =
            planner::plan(records.len(), limits, |i| record_encoded_len(&records[i]));
        assert!(oversized.is_empty());
        for b in &batches {
            let body = encode_records_body(&id, &records[b.range.clone()]);
            bytes = std::hint::black_box(body).len();
        }
        std::hint::black_box(&seqs);
        bodies = batches.len();
        times.push(t.elapsed());
    }
    let ms = median_ms(times.clone());
    json!({
        "records": batch.len(),
        "bodies": bodies,
        "bodyBytes": bytes,
        "runs": runs,
        "medianMs": ms,
        "minMs": times.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        "targetMs": 20,
        "meetsTarget": ms <= 20.0,
    })
}

fn main() {
    let n = env_u64("AMC_SYNC_BENCH_RECORDS", 1_000_000).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("amc-sync.db")).expect("store");
    let writer = Writer::spawn(store).expect("writer");
    let h = writer.handle();
    for (cc, auds) in MARKETS {
        for key in auds {
            let a = NewAudience {
                key: (*key).into(),
                country_code: (*cc).into(),
                description: "Upload benchmark audience".into(),
                target: Target::AdvertiserId("585806696618602999".into()),
                external_audience_id: None,
                ttl_secs: None,
                cpm_cents: None,
                currency: None,
            };
            h.call(move |s| s.create_audience(&a)).expect("audience");
        }
    }

    // 1. Enqueue (timed apart): a generator thread hashes, this one submits.
    eprintln!("enqueueing {n} changes …");
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<IncomingItem>>(4);
    let gen_thread = std::thread::spawn(move || {
        let mut i = 0;
        while i < n {
            let end = (i + 5_000).min(n);
            let chunk = (i..end)
                .map(|i| IncomingItem::change(change(i), Source::File))
                .collect();
            if tx.send(chunk).is_err() {
                break;
            }
            i = end;
        }
    });
    let mut inflight = std::collections::VecDeque::new();
    let mut queued = 0u64;
    for chunk in rx {
        inflight.push_back(h.submit_nowait(chunk).expect("submit"));
        if inflight.len() > 4
            && let Some(p) = inflight.pop_front()
        {
            queued += p.wait().expect("commit").inserted;
        }
    }
    for p in inflight {
        queued += p.wait().expect("commit").inserted;
    }
    gen_thread.join().expect("generator");
    let enqueue_secs = t.elapsed().as_secs_f64();
    assert_eq!(queued, n, "every change is queued");
    eprintln!(
        "enqueued {n} in {enqueue_secs:.2} s ({:.0}/s)",
        n as f64 / enqueue_secs
    );

    // 3. (measured first, on records as the store returns them)
    let sample = h
        .call(|s| s.pending_batch("us_buyers", 10_000, 0))
        .expect("pending");
    let plan_encode = plan_encode_phase(&sample, 25);
    drop(sample);

    // 2. Upload.
    let upload = rt.block_on(async {
        let sb = sandbox::start(SandboxOptions {
            job_pending_polls: 0,
            ..SandboxOptions::default()
        })
        .await;
        let client = AmazonClient::new(
            &ClientOptions::for_base_url(&sb.base_url()),
            sb.credentials(),
        )
        .expect("client");
        let engine = SyncEngine::new(Some(client), h.clone(), SyncOptions::default(), None, None);
        let written = io_write_bytes();
        let t = Instant::now();
        let report = engine.upload_round().await;
        let round_secs = t.elapsed().as_secs_f64();
        let mut polls = 0;
        while engine.poll_jobs().await > 0 {
            polls += 1;
            assert!(polls < 1_000, "jobs never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let written = io_write_bytes().saturating_sub(written);
        let stats = sb.stats();
        let pending: u64 = h
            .call(|s| s.pending_counts())
            .expect("counts")
            .values()
            .sum();
        assert_eq!(pending, 0, "the queue drained");
        assert_eq!(report.uploaded, n, "{report:?}");
        assert_eq!(
            stats.records_accepted, n,
            "the sandbox accepted every record"
        );
        let sandbox_secs = stats.records_handler_micros as f64 / 1e6;
        json!({
            "records": n,
            "wallSecs": secs,
            "roundSecs": round_secs,
            "jobPollSecs": secs - round_secs,
            "recordsPerSec": n as f64 / secs,
            "requests": report.requests,
            "jobStatusRequests": stats.api_requests - report.requests - report.audiences_created,
            "audiencesCreated": report.audiences_created,
            "storeWriteMb": written as f64 / 1e6,
            "sandboxRecordsHandlerSecs": sandbox_secs,
            "sandboxShareOfWall": sandbox_secs / secs,
            "targetSecs": 10,
            "meetsTarget": n < 1_000_000 || secs <= 10.0,
        })
    });
    let hwm = vm_hwm_kib().unwrap_or(0);
    drop(writer);

    let report = json!({
        "benchmark": "upload",
        "cpus": std::thread::available_parallelism().map_or(0, |p| p.get()),
        "unixTime": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "enqueue": {
            "records": n,
            "secs": enqueue_secs,
            "recordsPerSec": n as f64 / enqueue_secs,
        },
        "upload": upload,
        "planEncode10k": plan_encode,
        "peakRssMb": hwm as f64 / 1024.0,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-report");
    let _ = std::fs::create_dir_all(&out);
    let path = out.join("upload.json");
    let text = serde_json::to_string_pretty(&report).expect("json");
    match std::fs::write(&path, format!("{text}\n")) {
        Ok(()) => eprintln!("report: {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    let u = &report["upload"];
    let p = &report["planEncode10k"];
    println!(
        "upload: {} records in {:.2} s ({:.0} records/s; target ≤ 10 s for 1M), {} requests, \
         sandbox handler {:.2} s; enqueue {:.2} s (not counted); plan+encode 10k: {:.2} ms median \
         (target ≤ 20 ms); peak RSS {:.0} MB",
        u["records"],
        u["wallSecs"].as_f64().unwrap_or(0.0),
        u["recordsPerSec"].as_f64().unwrap_or(0.0),
        u["requests"],
        u["sandboxRecordsHandlerSecs"].as_f64().unwrap_or(0.0),
        enqueue_secs,
        p["medianMs"].as_f64().unwrap_or(0.0),
        report["peakRssMb"].as_f64().unwrap_or(0.0),
    );
}
