//! Issue 5: the official Segment clients, unchanged but for their host, send
//! Engage audience traffic to the real agent (`amc-sync run`), which uploads
//! it to the sandbox Amazon API; the sandbox must receive the right hashed
//! records. Requires the clients (`.ci/run` installs them); without them the
//! tests say SKIPPED unless `AMC_SYNC_REQUIRE_CLIENTS=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use amc_sync::pii::sha256_hex;
use common::{amc, http, login, sandbox, start_agent};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn required() -> bool {
    std::env::var("AMC_SYNC_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

/// Records the sandbox accepted: (externalUserId, action, email hash).
fn received(base: &str) -> Vec<(String, String, Option<String>)> {
    let (status, body) = http("GET", &format!("{base}/__sandbox/received"), None, "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut out = Vec::new();
    for recs in v.as_object().expect("by audience").values() {
        for r in recs.as_array().cloned().unwrap_or_default() {
            out.push((
                r["externalUserId"].as_str().unwrap_or_default().to_string(),
                r["action"].as_str().unwrap_or_default().to_string(),
                r["hashedPII"][0]["email"].as_str().map(str::to_string),
            ));
        }
    }
    out
}

fn flush(data: &std::path::Path) {
    let out = amc(data)
        .args(["flush", "--wait", "--timeout", "60"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_client_traffic_reaches_the_sandbox_hashed() {
    let ok = Command::new("python3")
        .args(["-c", "import segment.analytics"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!required(), "segment-analytics-python is not installed");
        eprintln!("SKIPPED: pip install segment-analytics-python");
        return;
    }
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let out = Command::new("python3")
        .arg(clients_dir().join("send_python.py"))
        .args([&url, &key, "py_sandbox", "25"])
        .output()
        .expect("python client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    flush(dir.path());
    let recs = received(&sb.base);
    // 25 track (audience py_sandbox) + 25 identify (audience py_sandbox_id).
    assert_eq!(recs.len(), 50, "{recs:?}");
    for i in 0..25 {
        let user = format!("py_user_{i}");
        let want = sha256_hex(&format!("py{i}@example.com"));
        let mine: Vec<_> = recs.iter().filter(|r| r.0 == user).collect();
        assert_eq!(mine.len(), 2, "{user}");
        assert!(
            mine.iter()
                .all(|r| r.1 == "CREATE" && r.2.as_deref() == Some(want.as_str())),
            "{mine:?}"
        );
    }
}

#[test]
fn node_client_traffic_reaches_the_sandbox_hashed_with_exits() {
    let ok = clients_dir()
        .join("node_modules/@segment/analytics-node")
        .is_dir();
    if !ok {
        assert!(!required(), "@segment/analytics-node is not installed");
        eprintln!("SKIPPED: npm ci --prefix tests/clients");
        return;
    }
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let out = Command::new("node")
        .arg(clients_dir().join("send_node.mjs"))
        .args([&url, &key, "node_sandbox", "20"])
        .current_dir(clients_dir())
        .output()
        .expect("node client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    flush(dir.path());
    let recs = received(&sb.base);
    assert_eq!(recs.len(), 20, "one coalesced record per user: {recs:?}");
    for i in 0..20 {
        let r = recs
            .iter()
            .find(|r| r.0 == format!("node_user_{i}"))
            .expect("user");
        // Users 0..10 entered then exited before the upload: only the exit is sent.
        let want_action = if i < 10 { "DELETE" } else { "CREATE" };
        assert_eq!(r.1, want_action, "node_user_{i}");
        assert_eq!(
            r.2.as_deref(),
            Some(sha256_hex(&format!("node{i}@example.com")).as_str())
        );
    }
}
