//! The sync engine against the sandbox Amazon API: real HTTP on loopback, a
//! real SQLite file, the real pipeline. What the sandbox received must equal,
//! record by record, what the inputs should produce; every fault ends with
//! each accepted change delivered or dead-lettered with a reason — never lost.

use std::sync::Arc;
use std::time::Duration;

use amc_sync::agent::pipeline::{Input, Pipeline};
use amc_sync::amazon::{AmazonClient, ClientOptions};
use amc_sync::config::Config;
use amc_sync::model::{Action, HashedPii, MemberChange, Source};
use amc_sync::pii::sha256_hex;
use amc_sync::sandbox::{self, Faults, Sandbox, SandboxOptions};
use amc_sync::store::{DeadLetterFilter, IncomingItem, Store, Writer};
use amc_sync::sync::engine::{AuthState, SyncEngine, SyncOptions};
use serde_json::json;

struct World {
    _dir: tempfile::TempDir,
    sandbox: Sandbox,
    writer: Writer,
    pipeline: Arc<Pipeline>,
}

const CONFIG: &str = r#"
[[audiences]]
key = "vip"
advertiser_id = 585806696618602999
country_code = "US"
description = "VIP customers"
"#;

async fn world(opts: SandboxOptions) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = sandbox::start(opts).await;
    let store = Store::open(dir.path().join("amc-sync.db")).expect("store");
    let writer = Writer::spawn(store).expect("writer");
    let cfg = Config::from_toml_str(CONFIG, "t").expect("config");
    let pipeline = Arc::new(Pipeline::new(&cfg, writer.handle()).expect("pipeline"));
    World {
        _dir: dir,
        sandbox,
        writer,
        pipeline,
    }
}

fn fast() -> SyncOptions {
    SyncOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        poll_initial: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        ..SyncOptions::default()
    }
}

fn engine(w: &World, opts: SyncOptions) -> SyncEngine {
    let client = AmazonClient::new(
        &ClientOptions::for_base_url(&w.sandbox.base_url()),
        w.sandbox.credentials(),
    )
    .expect("client");
    SyncEngine::new(Some(client), w.writer.handle(), opts, None, None)
}

fn track(user: &str, entered: bool, email: &str) -> Input {
    Input::message(json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "userId": user,
        "timestamp": "2026-11-01T00:00:00Z",
        "properties": {"audience_key": "vip", "vip": entered, "email": email, "first_name": "Ann"},
        "context": {"personas": {"computation_key": "vip"}}
    }))
}

fn ingest(w: &World, inputs: Vec<Input>) {
    let s = w
        .pipeline
        .ingest(inputs, Source::Http, Vec::new())
        .expect("commit");
    assert_eq!(s.dead_lettered(), 0, "{:?}", s.rejections);
}

fn pending(w: &World) -> u64 {
    w.writer
        .handle()
        .call(|s| s.pending_counts())
        .expect("counts")
        .values()
        .sum()
}

fn dead_letters(w: &World) -> Vec<amc_sync::store::DeadLetter> {
    w.writer
        .handle()
        .call(|s| {
            s.dead_letters(&DeadLetterFilter {
                limit: 100_000,
                ..Default::default()
            })
        })
        .expect("dead letters")
}

async fn drain_jobs(e: &SyncEngine) {
    for _ in 0..200 {
        if e.poll_jobs().await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("jobs never finished");
}

/// `n` queued CREATE changes for users u0..u{n}, straight into the store.
fn queue_direct(w: &World, n: usize) {
    let items: Vec<IncomingItem> = (0..n)
        .map(|i| {
            IncomingItem::change(
                MemberChange {
                    audience_key: "vip".into(),
                    external_user_id: format!("user_{i}"),
                    action: Action::Create,
                    event_time_ms: 1_700_000_000_000,
                    country_code: "US".into(),
                    hashed_pii: HashedPii {
                        email: Some(sha256_hex(&format!("user{i}@example.com"))),
                        ..HashedPii::default()
                    },
                    user_consent: None,
                },
                Source::File,
            )
        })
        .collect();
    for chunk in items.chunks(5_000) {
        w.writer.handle().submit(chunk.to_vec()).expect("submit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_received_equal_what_the_inputs_produce() {
    let w = world(SandboxOptions {
        keep_raw_bodies: true,
        ..SandboxOptions::default()
    })
    .await;
    ingest(
        &w,
        vec![
            track("u1", true, " Ann.Smith@Example.com "),
            track("u2", true, "bob@example.com"),
            track("u3", false, "carol@example.com"),
        ],
    );
    let e = engine(&w, fast());
    let r = e.upload_round().await;
    assert_eq!(
        (r.uploaded, r.requests, r.audiences_created),
        (3, 1, 1),
        "{r:?}"
    );
    drain_jobs(&e).await;
    assert_eq!(pending(&w), 0);
    let audience = w
        .writer
        .handle()
        .call(|s| s.audience("vip"))
        .expect("call")
        .expect("vip");
    let audience_id = audience.audience_id.expect("created at Amazon");
    assert!(audience_id.parse::<u128>().expect("digits") > (1u128 << 53));
    let received = w.sandbox.received();
    let records = &received[&audience_id];
    assert_eq!(records.len(), 3);
    let by_user = |u: &str| {
        &records
            .iter()
            .find(|r| r.record.external_user_id == u)
            .expect(u)
            .record
    };
    let u1 = by_user("u1");
    assert_eq!(u1.action, Action::Create);
    assert_eq!(u1.hashed_pii.len(), 1);
    assert_eq!(
        u1.hashed_pii[0].email.as_deref(),
        Some(sha256_hex("ann.smith@example.com").as_str())
    );
    assert_eq!(
        u1.hashed_pii[0].firstname.as_deref(),
        Some(sha256_hex("ann").as_str())
    );
    assert_eq!(u1.country_code.as_deref(), Some("US"));
    assert_eq!(by_user("u3").action, Action::Delete);
    // The audienceId travelled as bare digits.
    let body = String::from_utf8(w.sandbox.raw_bodies()[0].to_vec()).expect("utf-8");
    assert!(
        body.starts_with(&format!("{{\"audienceId\":{audience_id},")),
        "{body}"
    );
    let counts = w
        .writer
        .handle()
        .call(|s| s.upload_counts())
        .expect("counts");
    assert_eq!(counts["vip"].uploaded, 3);
    assert_eq!(counts["vip"].open_jobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_per_request_and_byte_cap_splits() {
    let w = world(SandboxOptions {
        keep_raw_bodies: true,
        ..SandboxOptions::default()
    })
    .await;
    queue_direct(&w, 12_000);
    let e = engine(&w, fast());
    let r = e.upload_round().await;
    assert_eq!((r.uploaded, r.requests), (12_000, 2), "{r:?}");
    assert_eq!(w.sandbox.received_count(), 12_000);
    // A small byte cap: more requests, each body under the cap.
    let w = world(SandboxOptions {
        keep_raw_bodies: true,
        ..SandboxOptions::default()
    })
    .await;
    queue_direct(&w, 1_000);
    let cap = 20_000;
    let e = engine(
        &w,
        SyncOptions {
            max_body_bytes: cap,
            ..fast()
        },
    );
    let r = e.upload_round().await;
    assert_eq!(r.uploaded, 1_000);
    assert!(r.requests > 5, "{r:?}");
    for b in w.sandbox.raw_bodies() {
        assert!(b.len() <= cap, "{} > {cap}", b.len());
    }
    assert_eq!(w.sandbox.received_count(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_split_to_isolate_and_dead_letter_the_bad_record() {
    let w = world(SandboxOptions::default()).await;
    ingest(
        &w,
        (0..40)
            .map(|i| {
                let user = if i == 17 {
                    "rejected_17".to_string()
                } else {
                    format!("u{i}")
                };
                track(&user, true, &format!("p{i}@example.com"))
            })
            .collect(),
    );
    let e = engine(&w, fast());
    let r = e.upload_round().await;
    assert_eq!(r.uploaded, 39, "{r:?}");
    assert_eq!(r.dead_lettered, 1);
    assert_eq!(pending(&w), 0);
    let dl = dead_letters(&w);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "amazon_rejected_record");
    let p = dl[0].payload.as_ref().expect("hashed payload kept");
    assert_eq!(p.external_user_id.as_deref(), Some("rejected_17"));
    assert_eq!(
        p.hashed_pii[0].email.as_deref(),
        Some(sha256_hex("p17@example.com").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partially_succeeded_and_failed_jobs_dead_letter_their_records() {
    let w = world(SandboxOptions::default()).await;
    ingest(
        &w,
        vec![
            track("invalid_1", true, "x@example.com"),
            track("u2", true, "y@example.com"),
        ],
    );
    let e = engine(&w, fast());
    assert_eq!(e.upload_round().await.uploaded, 2);
    drain_jobs(&e).await;
    let dl = dead_letters(&w);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "amazon_invalid_record");
    assert_eq!(
        dl[0]
            .payload
            .as_ref()
            .and_then(|p| p.external_user_id.as_deref()),
        Some("invalid_1")
    );
    // A FAILED job: every record it carried is dead-lettered.
    w.sandbox.update_faults(|f| f.fail_jobs = 1);
    ingest(
        &w,
        vec![
            track("u3", true, "z@example.com"),
            track("u4", true, "q@example.com"),
        ],
    );
    assert_eq!(e.upload_round().await.uploaded, 2);
    drain_jobs(&e).await;
    let dl = dead_letters(&w);
    assert_eq!(
        dl.iter()
            .filter(|d| d.reason == "amazon_invalid_record")
            .count(),
        1
    );
    // Regression: a FAILED job's records were reported as invalid records.
    assert_eq!(
        dl.iter()
            .filter(|d| d.reason == "amazon_job_failed")
            .count(),
        2
    );
    let counts = w
        .writer
        .handle()
        .call(|s| s.upload_counts())
        .expect("counts");
    assert_eq!(counts["vip"].uploaded, 1, "only u2 is a member at Amazon");
    assert_eq!(counts["vip"].failed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_server_errors_and_resets_back_off_then_deliver_everything() {
    for faults in [
        Faults {
            rate_limit: 2,
            retry_after: Some("0".into()),
            ..Faults::default()
        },
        Faults {
            server_error: 3,
            ..Faults::default()
        },
        Faults {
            reset: 2,
            ..Faults::default()
        },
        Faults {
            rate_limit: 1,
            server_error: 1,
            reset: 1,
            delay: 1,
            delay_ms: 20,
            ..Faults::default()
        },
    ] {
        let w = world(SandboxOptions {
            faults: faults.clone(),
            ..SandboxOptions::default()
        })
        .await;
        ingest(
            &w,
            (0..25)
                .map(|i| track(&format!("u{i}"), true, &format!("m{i}@example.com")))
                .collect(),
        );
        let e = engine(&w, fast());
        let mut uploaded = 0;
        for _ in 0..50 {
            uploaded += e.upload_round().await.uploaded;
            if pending(&w) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(uploaded, 25, "{faults:?}");
        assert_eq!(pending(&w), 0, "{faults:?}");
        assert!(dead_letters(&w).is_empty(), "{faults:?}");
        assert_eq!(w.sandbox.received_count(), 25, "{faults:?}");
        let st = e.handle().status();
        assert_eq!(st.auth, AuthState::Ok);
        assert!(st.audiences["vip"].last_error.is_none(), "{st:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_pauses_uploads_and_keeps_the_queue() {
    let w = world(SandboxOptions {
        faults: Faults {
            invalid_grant: u32::MAX,
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    ingest(
        &w,
        (0..5)
            .map(|i| track(&format!("u{i}"), true, &format!("m{i}@example.com")))
            .collect(),
    );
    let e = engine(&w, fast());
    let r = e.upload_round().await;
    assert_eq!(r.uploaded, 0);
    assert_eq!(e.handle().status().auth, AuthState::NeedsLogin);
    assert_eq!(pending(&w), 5, "nothing dropped");
    // Intake goes on while paused.
    ingest(&w, vec![track("u9", true, "n@example.com")]);
    assert_eq!(pending(&w), 6);
    assert_eq!(
        e.upload_round().await.requests,
        0,
        "no calls while needs_login"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_tokens_are_refreshed_transparently() {
    let w = world(SandboxOptions {
        faults: Faults {
            expire_tokens: 1,
            ..Faults::default()
        },
        token_ttl: Duration::from_secs(2),
        ..SandboxOptions::default()
    })
    .await;
    ingest(&w, vec![track("u1", true, "a@example.com")]);
    let e = engine(&w, fast());
    assert_eq!(e.upload_round().await.uploaded, 1);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    ingest(&w, vec![track("u2", true, "b@example.com")]);
    assert_eq!(e.upload_round().await.uploaded, 1);
    assert_eq!(e.handle().status().auth, AuthState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_refused_at_upload_can_be_retried_and_delivered() {
    let w = world(SandboxOptions {
        faults: Faults {
            fail_jobs: 1,
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    ingest(
        &w,
        vec![
            track("u1", true, "a@example.com"),
            track("u2", true, "b@example.com"),
        ],
    );
    // An input error: never retryable (no data kept).
    let bad = w
        .pipeline
        .ingest(
            vec![Input::message(json!({"type": "track", "event": "Audience Entered", "userId": "bad id",
                "properties": {"email": "c@example.com"}, "context": {"personas": {"computation_key": "vip"}}}))],
            Source::Http,
            Vec::new(),
        )
        .expect("commit");
    assert_eq!(bad.dead_lettered(), 1);
    let e = engine(&w, fast());
    assert_eq!(e.upload_round().await.uploaded, 2);
    drain_jobs(&e).await; // the job FAILED: both records dead-lettered
    assert_eq!(w.sandbox.received_count(), 0);
    let out = w
        .writer
        .handle()
        .call(|s| s.retry_dead_letters(&DeadLetterFilter::default(), None))
        .expect("retry");
    assert_eq!((out.requeued, out.not_retryable), (2, 1), "{out:?}");
    assert_eq!(pending(&w), 2);
    assert_eq!(e.upload_round().await.uploaded, 2);
    drain_jobs(&e).await;
    assert_eq!(w.sandbox.received_count(), 2);
    // Retrying again does nothing: they are marked retried.
    let again = w
        .writer
        .handle()
        .call(|s| s.retry_dead_letters(&DeadLetterFilter::default(), None))
        .expect("retry");
    assert_eq!(again.requeued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_secret_means_needs_login_not_endless_retries() {
    // Regression: invalid_client from the token endpoint was a per-audience
    // "permanent" error retried forever while status said `ok`.
    let w = world(SandboxOptions::default()).await;
    ingest(&w, vec![track("u1", true, "a@example.com")]);
    let mut creds = w.sandbox.credentials();
    creds.client_secret = amc_sync::amazon::Secret::new("wrong-secret");
    let client = AmazonClient::new(&ClientOptions::for_base_url(&w.sandbox.base_url()), creds)
        .expect("client");
    let e = SyncEngine::new(Some(client), w.writer.handle(), fast(), None, None);
    assert_eq!(e.upload_round().await.uploaded, 0);
    assert_eq!(e.handle().status().auth, AuthState::NeedsLogin);
    assert_eq!(pending(&w), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_is_picked_up_without_a_restart() {
    // Regression: after needs_login only a restart helped.
    let w = world(SandboxOptions {
        faults: Faults {
            invalid_grant: 1,
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    ingest(&w, vec![track("u1", true, "a@example.com")]);
    let base = w.sandbox.base_url();
    let creds = w.sandbox.credentials();
    let generation = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let g = generation.clone();
    let loader: amc_sync::sync::engine::ClientLoader = Arc::new(move || {
        let n = g.load(std::sync::atomic::Ordering::SeqCst);
        let client = AmazonClient::new(&ClientOptions::for_base_url(&base), creds.clone()).ok()?;
        Some((format!("login-{n}"), client))
    });
    let e = engine(&w, fast()).with_client_loader(loader, Some("login-0".into()));
    assert_eq!(e.upload_round().await.uploaded, 0);
    assert_eq!(e.handle().status().auth, AuthState::NeedsLogin);
    // Same credentials: still blocked, no calls.
    assert_eq!(e.upload_round().await.requests, 0);
    generation.store(1, std::sync::atomic::Ordering::SeqCst); // `amc-sync login` again
    assert_eq!(e.upload_round().await.uploaded, 1);
    assert_eq!(e.handle().status().auth, AuthState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_flush_retries_audiences_that_are_backing_off() {
    // Regression: a flush skipped audiences in backoff, so after an outage it did nothing.
    let w = world(SandboxOptions {
        faults: Faults {
            server_error: 1,
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    ingest(&w, vec![track("u1", true, "a@example.com")]);
    let slow = SyncOptions {
        backoff_initial: Duration::from_secs(600),
        backoff_max: Duration::from_secs(900),
        ..fast()
    };
    let e = engine(&w, slow);
    assert_eq!(e.upload_round().await.uploaded, 0);
    assert_eq!(e.upload_round().await.requests, 0, "in backoff");
    e.handle().flush();
    assert_eq!(
        e.upload_round().await.uploaded,
        1,
        "a flush goes past the backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_capped_at_an_hour() {
    // Regression: Retry-After: 86400 parked the audience for a day.
    let w = world(SandboxOptions {
        faults: Faults {
            rate_limit: 1,
            retry_after: Some("86400".into()),
            ..Faults::default()
        },
        ..SandboxOptions::default()
    })
    .await;
    ingest(&w, vec![track("u1", true, "a@example.com")]);
    let e = engine(&w, fast());
    assert_eq!(e.upload_round().await.uploaded, 0);
    let until = e.handle().status().audiences["vip"]
        .backoff_until_ms
        .expect("backing off");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(until - now <= 3_600_000 + 1_000, "{}", until - now);
    assert!(
        until - now >= 3_500_000,
        "Retry-After is still honoured up to the cap"
    );
}
