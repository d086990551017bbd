//! Issue 4 end to end with the real binaries: `amc-sync sandbox`, `login
//! --from-env`, `run --api-base-url`, real Segment traffic over HTTP, `flush
//! --wait`; and a SIGKILL during an upload, then a restart: every change is
//! delivered at least once.

mod common;

use std::time::Duration;

use common::{amc, basic, http, login, received_users, sandbox, start_agent};

fn batch(users: std::ops::Range<usize>) -> String {
    let items: Vec<serde_json::Value> = users
        .map(|i| {
            serde_json::json!({
                "type": "track", "event": "Audience Entered", "userId": format!("user_{i}"),
                "messageId": format!("m{i}"),
                "properties": {"audience_key": "vip", "vip": true, "email": format!("u{i}@example.com")},
                "context": {"personas": {"computation_key": "vip",
                    "audience_settings": {"advertiserId": "585806696618602999", "countryCode": "US"}}}
            })
        })
        .collect();
    serde_json::json!({ "batch": items }).to_string()
}

#[test]
fn login_run_send_flush_wait_delivers_hashed_records() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let (status, body) = http(
        "POST",
        &format!("{url}/v1/batch"),
        Some(&basic(&key)),
        &batch(0..30),
    );
    assert_eq!(status, 200, "{body}");
    let out = amc(dir.path())
        .args(["flush", "--wait", "--json"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = received_users(&sb.base);
    assert_eq!(users.len(), 30);
    let st: serde_json::Value = serde_json::from_slice(
        &amc(dir.path())
            .args(["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("status json");
    assert_eq!(st["auth"], "ok", "{st}");
    assert_eq!(st["pendingTotal"], 0, "{st}");
    let vip = st["audiences"]
        .as_array()
        .expect("audiences")
        .iter()
        .find(|a| a["key"] == "vip")
        .cloned()
        .expect("vip");
    assert_eq!(vip["uploaded"], 30, "{st}");
    // Secrets never land in the data dir outside credentials.json.
    for entry in std::fs::read_dir(dir.path()).expect("ls").flatten() {
        let p = entry.path();
        if p.is_file() && !p.ends_with("credentials.json") {
            let bytes = std::fs::read(&p).unwrap_or_default();
            for (_, secret) in &sb.creds[1..] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "secret in {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn sigkill_during_upload_then_restart_delivers_every_change_at_least_once() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (agent, url, key) = start_agent(dir.path(), &sb.base);
    for chunk in 0..4 {
        let (status, body) = http(
            "POST",
            &format!("{url}/v1/batch"),
            Some(&basic(&key)),
            &batch(chunk * 500..(chunk + 1) * 500),
        );
        assert_eq!(status, 200, "{body}");
    }
    // Make the sandbox slow, ask for an upload, and kill the agent mid-request.
    let (status, _) = http(
        "POST",
        &format!("{}/__sandbox/faults", sb.base),
        None,
        r#"{"delay": 2, "delay_ms": 1500}"#,
    );
    assert_eq!(status, 200);
    let out = amc(dir.path()).args(["flush"]).output().expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(agent); // SIGKILL
    let (_agent, _, _) = start_agent(dir.path(), &sb.base);
    let out = amc(dir.path())
        .args(["flush", "--wait", "--timeout", "60"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = received_users(&sb.base);
    assert_eq!(users.len(), 2_000, "every change delivered at least once");
    let st: serde_json::Value = serde_json::from_slice(
        &amc(dir.path())
            .args(["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("status json");
    assert_eq!(st["pendingTotal"], 0, "{st}");
    assert_eq!(st["deadLettersTotal"], 0, "{st}");
}

#[test]
fn flush_wait_fails_when_changes_are_still_queued() {
    // Regression: `flush --wait` said "done" and exited 0 while Amazon kept failing.
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let (status, _) = http(
        "POST",
        &format!("{}/__sandbox/faults", sb.base),
        None,
        r#"{"server_error": 4294967295}"#,
    );
    assert_eq!(status, 200);
    let (status, body) = http(
        "POST",
        &format!("{url}/v1/batch"),
        Some(&basic(&key)),
        &batch(0..5),
    );
    assert_eq!(status, 200, "{body}");
    let out = amc(dir.path())
        .args(["flush", "--wait", "--timeout", "5"])
        .output()
        .expect("flush");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still queued"), "{err}");
    // Amazon recovers: the next flush delivers everything (past the backoff).
    let (status, _) = http(
        "POST",
        &format!("{}/__sandbox/faults", sb.base),
        None,
        r#"{"server_error": 0}"#,
    );
    assert_eq!(status, 200);
    let out = amc(dir.path())
        .args(["flush", "--wait", "--timeout", "30"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(received_users(&sb.base).len(), 5);
}
