//! The admin API (docs/admin-api.md) on the REAL agent (`amc-sync run` on an
//! ephemeral loopback port, the in-process sandbox Amazon API for uploads):
//! every route's happy path and its refusals (no token 401, a foreign Host
//! 403, a cross-site Origin 403, bad JSON 400), pause/resume, audience
//! validation, write-key rotation, `/metrics`, the embedded UI and
//! `amc-sync dashboard`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{amc, basic, login, received_users, sandbox, start_agent};
use serde_json::{Value, json};

/// An answer: status, headers (lower-case names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

/// One HTTP/1.1 request with exactly these headers (a `Host` naming the
/// listener is added unless one is given).
fn req(method: &str, base: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let hostport = base.strip_prefix("http://").expect("http base");
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {hostport}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The running agent's admin token (from `agent.json`).
fn admin_token(data: &Path) -> String {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("agent.json")).expect("agent.json"),
    )
    .expect("agent.json JSON");
    v["adminToken"].as_str().expect("adminToken").to_string()
}

struct Api {
    base: String,
    bearer: String,
}

impl Api {
    fn new(base: &str, data: &Path) -> Api {
        Api {
            base: base.to_string(),
            bearer: format!("Bearer {}", admin_token(data)),
        }
    }
    fn get(&self, path: &str) -> Resp {
        req(
            "GET",
            &self.base,
            path,
            &[("Authorization", &self.bearer)],
            "",
        )
    }
    fn send(&self, method: &str, path: &str, body: &Value) -> Resp {
        req(
            method,
            &self.base,
            path,
            &[
                ("Authorization", &self.bearer),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
    }
    fn post_empty(&self, path: &str) -> Resp {
        req(
            "POST",
            &self.base,
            path,
            &[("Authorization", &self.bearer)],
            "",
        )
    }
}

fn event(i: usize, audience: &str, country: &str) -> Value {
    json!({
        "type": "track", "event": "Audience Entered", "userId": format!("user_{audience}_{i}"),
        "messageId": format!("m_{audience}_{i}"),
        "properties": {"audience_key": audience, audience: true,
                       "email": format!("person{i}@example.com")},
        "context": {"personas": {"computation_key": audience,
            "audience_settings": {"advertiserId": "585806696618602999", "countryCode": country}}}
    })
}

fn send_batch(base: &str, key: &str, items: Vec<Value>) -> u16 {
    let auth = basic(key);
    req(
        "POST",
        base,
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &json!({ "batch": items }).to_string(),
    )
    .status
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent without Amazon credentials (nothing is uploaded).
fn offline_agent(data: &Path) -> (common::Proc, String, String) {
    start_agent(data, "http://127.0.0.1:9")
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

#[test]
fn every_route_refuses_missing_tokens_foreign_hosts_and_cross_site_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, base, _key) = offline_agent(dir.path());
    let bearer = format!("Bearer {}", admin_token(dir.path()));
    let token_routes: &[(&str, &str)] = &[
        ("GET", "/api/status"),
        ("POST", "/api/flush"),
        ("POST", "/api/pause"),
        ("POST", "/api/resume"),
        ("GET", "/api/audiences"),
        ("POST", "/api/audiences"),
        ("GET", "/api/dead-letters"),
        ("POST", "/api/dead-letters/retry"),
        ("GET", "/api/settings"),
        ("PUT", "/api/settings"),
        ("POST", "/api/settings/write-key/rotate"),
    ];
    for (m, path) in token_routes {
        let r = req(m, &base, path, &[], "");
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthorized"),
            "{m} {path}"
        );
        let wrong = format!("Bearer {}", "0".repeat(64));
        let r = req(m, &base, path, &[("Authorization", &wrong)], "");
        assert_eq!(r.status, 401, "{m} {path} with a wrong token");
        for host in [
            "evil.example",
            "127.0.0.1.evil.example:80",
            "localhost.evil.example",
        ] {
            let r = req(
                m,
                &base,
                path,
                &[("Host", host), ("Authorization", &bearer)],
                "",
            );
            assert_eq!(
                (r.status, r.code().as_str()),
                (403, "forbidden_host"),
                "{m} {path} {host}"
            );
        }
        for origin in ["https://evil.example", "http://127.0.0.1.evil.com", "null"] {
            let r = req(
                m,
                &base,
                path,
                &[("Origin", origin), ("Authorization", &bearer)],
                "",
            );
            assert_eq!(
                (r.status, r.code().as_str()),
                (403, "forbidden_origin"),
                "{m} {path} {origin}"
            );
        }
    }
    // Bad JSON on every route with a body: 400 with a stable code.
    for (m, path) in [
        ("POST", "/api/audiences"),
        ("POST", "/api/dead-letters/retry"),
        ("PUT", "/api/settings"),
    ] {
        let r = req(
            m,
            &base,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            "{not json",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_json"),
            "{m} {path}"
        );
        let r = req(
            m,
            &base,
            path,
            &[("Authorization", &bearer), ("Content-Type", "text/plain")],
            "{}",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (415, "invalid_json"),
            "{m} {path}"
        );
    }
    // Routes without a token still check Host and Origin.
    for path in ["/healthz", "/metrics", "/", "/app.js"] {
        assert_eq!(req("GET", &base, path, &[], "").status, 200, "{path}");
        let r = req("GET", &base, path, &[("Host", "evil.example:80")], "");
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "forbidden_host"),
            "{path}"
        );
        let r = req(
            "GET",
            &base,
            path,
            &[("Origin", "http://127.0.0.1.evil.com")],
            "",
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "forbidden_origin"),
            "{path}"
        );
    }
    // The dashboard's own origins and the Tauri app pass.
    let port = base.rsplit(':').next().expect("port");
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        "tauri://localhost".to_string(),
        "http://tauri.localhost".to_string(),
    ] {
        let r = req(
            "GET",
            &base,
            "/api/status",
            &[("Origin", &origin), ("Authorization", &bearer)],
            "",
        );
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
    }
    let r = req(
        "GET",
        &base,
        "/healthz",
        &[("Host", &format!("localhost:{port}"))],
        "",
    );
    assert_eq!(r.json(), json!({"status": "ok"}));
    // Unknown admin routes are JSON 404s, never the UI.
    let r = req("GET", &base, "/api/nope", &[("Authorization", &bearer)], "");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
}

#[test]
fn status_audiences_dead_letters_settings_metrics_ui_and_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, base, key) = offline_agent(dir.path());
    let api = Api::new(&base, dir.path());

    // --- audiences: create, validation (the CLI's rules), conflict, list
    let created = api.send(
        "POST",
        "/api/audiences",
        &json!({"key": "crm_list", "countryCode": "de", "description": "CRM export",
                "connectionId": "amc-conn-1", "ttlSecs": 86400, "cpmCents": 150, "currency": "EUR"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let a = created.json();
    assert_eq!(a["key"], "crm_list");
    assert_eq!(a["countryCode"], "DE");
    assert_eq!(a["connectionId"], "amc-conn-1");
    assert_eq!(a["advertiserId"], Value::Null);
    assert_eq!(a["audienceId"], Value::Null);
    assert_eq!(a["externalAudienceId"], "crm_list");
    assert_eq!(a["ttlSecs"], 86400);
    let dup = api.send(
        "POST",
        "/api/audiences",
        &json!({"key": "crm_list", "countryCode": "DE", "connectionId": "c"}),
    );
    assert_eq!((dup.status, dup.code().as_str()), (409, "conflict"));
    for (body, field) in [
        (
            json!({"key": "bad key", "countryCode": "US", "advertiserId": "1"}),
            "key",
        ),
        (
            json!({"key": "k1", "countryCode": "XX", "advertiserId": "1"}),
            "countryCode",
        ),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "000"}),
            "advertiserId",
        ),
        (json!({"key": "k1", "countryCode": "US"}), "advertiserId"),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "1", "connectionId": "c"}),
            "connectionId",
        ),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "1", "ttlSecs": 34_300_801}),
            "ttlSecs",
        ),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "1", "cpmCents": 5, "currency": "BTC"}),
            "currency",
        ),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "1", "cpmCents": 5}),
            "currency",
        ),
        (
            json!({"key": "k1", "countryCode": "US", "advertiserId": "1", "bogus": 1}),
            "bogus",
        ),
        (json!({"countryCode": "US", "advertiserId": "1"}), "key"),
    ] {
        let r = api.send("POST", "/api/audiences", &body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_field"),
            "{body}: {}",
            r.body
        );
        assert_eq!(r.json()["field"], field, "{body}");
    }
    // The CLI applies the same rules (shared validation): ttl too large → exit 2.
    let list = api.get("/api/audiences").json();
    let keys: Vec<&str> = list["audiences"]
        .as_array()
        .expect("audiences")
        .iter()
        .map(|a| a["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["crm_list"], "refused audiences must not be created");

    // --- intake: 3 changes for vip (US), one German change without consent
    let items = vec![
        event(1, "vip", "US"),
        event(2, "vip", "US"),
        event(3, "vip", "US"),
        event(4, "eu_vip", "DE"),
    ];
    assert_eq!(send_batch(&base, &key, items), 200);

    // --- status
    let st = api.get("/api/status");
    assert_eq!(st.status, 200, "{}", st.body);
    let st = st.json();
    assert_eq!(st["auth"], "no_credentials");
    assert_eq!(st["paused"], false);
    assert_eq!(st["region"], "NA");
    assert_eq!(st["pendingTotal"], 3, "{st}");
    assert_eq!(st["deadLettersTotal"], 1, "{st}");
    assert_eq!(st["audiences"]["vip"]["pending"], 3);
    assert_eq!(st["audiences"]["vip"]["audienceId"], Value::Null);
    assert_eq!(st["audiences"]["crm_list"]["pending"], 0);
    assert!(st["backlogAgeSecs"].as_u64().is_some(), "{st}");
    assert_eq!(st["listen"], base.as_str());
    assert_eq!(st["writeKeyHint"], format!("{}…", &key[..4]));
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["dropDir"], Value::Null, "started with --no-drop-folder");
    let hours = st["uploadsByHour"].as_array().expect("uploadsByHour");
    assert_eq!(hours.len(), 24);
    for w in hours.windows(2) {
        assert_eq!(
            w[1]["hourMs"].as_i64().unwrap() - w[0]["hourMs"].as_i64().unwrap(),
            3_600_000,
            "oldest first, one hour apart"
        );
    }
    assert!(
        hours.iter().all(|h| h["records"] == 0),
        "nothing uploaded yet"
    );
    assert!(st["recentErrors"].as_array().is_some_and(Vec::is_empty));
    assert!(
        !st.to_string().contains(&key),
        "status must not show the write key"
    );

    // --- dead letters: filtered list + counts, hashed/ids only
    let dl = api.get("/api/dead-letters?reason=consent_required&limit=10");
    assert_eq!(dl.status, 200, "{}", dl.body);
    let dl = dl.json();
    let items = dl["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{dl}");
    assert_eq!(items[0]["reason"], "consent_required");
    assert_eq!(items[0]["source"], "http");
    assert_eq!(items[0]["retried"], false);
    assert!(items[0]["id"].as_i64().is_some() && items[0]["atMs"].as_i64().is_some());
    assert_eq!(dl["counts"]["consent_required"], 1);
    assert!(
        !dl.to_string().contains("person4@example.com"),
        "raw PII in dead letters"
    );
    let none = api.get("/api/dead-letters?reason=no_such_reason").json();
    assert!(none["items"].as_array().is_some_and(Vec::is_empty));
    let r = api.get("/api/dead-letters?limit=0");
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("limit")));
    let retry = api.send(
        "POST",
        "/api/dead-letters/retry",
        &json!({"reason": "consent_required"}),
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(
        retry.json()["requeued"],
        0,
        "input errors keep no data to re-queue"
    );

    // --- metrics
    let m = req("GET", &base, "/metrics", &[], "");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    for line in [
        "amc_sync_pending_records{audience=\"vip\"} 3",
        "amc_sync_pending_records{audience=\"crm_list\"} 0",
        "amc_sync_dead_letters{reason=\"consent_required\"} 1",
        "amc_sync_auth_ok 0",
        "amc_sync_paused 0",
        "amc_sync_ingested_events_total{source=\"http\"} 4",
        "amc_sync_uploaded_records_total{audience=\"vip\"} 0",
        "amc_sync_failed_records_total{audience=\"vip\"} 0",
        "# TYPE amc_sync_backlog_age_seconds gauge",
    ] {
        assert!(m.body.contains(line), "{line} not in\n{}", m.body);
    }
    assert!(!m.body.contains(&key) && !m.body.contains("example.com"));

    // --- settings
    let s = api.get("/api/settings").json();
    assert_eq!(s["scheduleIntervalSecs"], 900);
    assert_eq!(s["batchSize"], 10_000);
    assert_eq!(s["profile"], "amazon");
    assert_eq!(s["writeKeyHint"], format!("{}…", &key[..4]));
    let drop = dir.path().join("elsewhere");
    let put = api.send(
        "PUT",
        "/api/settings",
        &json!({"scheduleIntervalSecs": 120, "profile": "segment", "dropDir": drop}),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    let s = put.json();
    assert_eq!(s["scheduleIntervalSecs"], 120);
    assert_eq!(s["profile"], "segment");
    assert_eq!(s["dropDir"], drop.display().to_string());
    assert_eq!(api.get("/api/settings").json(), s);
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("settings.json")).expect("settings.json"),
    )
    .expect("settings JSON");
    assert_eq!(saved["scheduleIntervalSecs"], 120);
    assert_eq!(saved["profile"], "segment");
    for (body, field) in [
        (json!({"scheduleIntervalSecs": 59}), "scheduleIntervalSecs"),
        (
            json!({"scheduleIntervalSecs": 86_401}),
            "scheduleIntervalSecs",
        ),
        (
            json!({"scheduleIntervalSecs": "120"}),
            "scheduleIntervalSecs",
        ),
        (json!({"profile": "other"}), "profile"),
        (json!({"dropDir": "relative/dir"}), "dropDir"),
        (json!({"bogus": true}), "bogus"),
    ] {
        let r = api.send("PUT", "/api/settings", &body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_field"),
            "{body}"
        );
        assert_eq!(r.json()["field"], field, "{body}");
    }
    assert_eq!(
        api.get("/api/settings").json()["scheduleIntervalSecs"],
        120,
        "a refused PUT changes nothing"
    );

    // --- the embedded UI, with its security headers
    let page = req("GET", &base, "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "{}",
        page.body
    );
    let js = req("GET", &base, "/app.js", &[], "");
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .is_some_and(|c| c.starts_with("text/javascript"))
    );
    assert_eq!(js.header("content-security-policy"), Some(CSP));
    let css = req("GET", &base, "/style.css", &[], "");
    assert!(
        css.header("content-type")
            .is_some_and(|c| c.starts_with("text/css"))
    );
    let missing = req("GET", &base, "/no-such-file.js", &[], "");
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "not_found")
    );

    // --- amc-sync dashboard prints the URL with the token in the fragment
    let out = amc(dir.path())
        .args(["dashboard", "--no-browser"])
        .output()
        .expect("dashboard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = base.rsplit(':').next().expect("port");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("http://127.0.0.1:{port}/#token={}", admin_token(dir.path()))
    );
}

#[test]
fn dashboard_without_a_running_agent_fails_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = amc(dir.path())
        .args(["dashboard", "--no-browser"])
        .output()
        .expect("dashboard");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("amc-sync run"));
}

#[test]
fn pause_stops_uploads_survives_a_restart_and_resume_restarts_them() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (agent, base, key) = start_agent(dir.path(), &sb.base);
    let api = Api::new(&base, dir.path());
    let r = api.post_empty("/api/pause");
    assert_eq!((r.status, r.json()), (200, json!({"paused": true})));
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("settings.json")).expect("settings.json"),
    )
    .expect("settings JSON");
    assert_eq!(saved["paused"], true, "paused is persisted");

    // Paused survives a restart.
    drop(agent);
    let (_agent, base, key2) = start_agent(dir.path(), &sb.base);
    assert_eq!(key, key2);
    let api = Api::new(&base, dir.path());
    assert_eq!(api.get("/api/status").json()["paused"], true);

    // Intake continues while paused; nothing is uploaded, a flush is refused.
    assert_eq!(
        send_batch(&base, &key, (0..5).map(|i| event(i, "vip", "US")).collect()),
        200
    );
    let r = api.post_empty("/api/flush");
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let cli = amc(dir.path()).args(["flush"]).output().expect("flush");
    assert!(!cli.status.success(), "the CLI flush is refused too");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(received_users(&sb.base).is_empty(), "uploaded while paused");
    let st = api.get("/api/status").json();
    assert_eq!(
        (st["paused"].clone(), st["pendingTotal"].clone()),
        (json!(true), json!(5))
    );
    assert_eq!(st["nextUploadMs"], Value::Null);
    let m = req("GET", &base, "/metrics", &[], "").body;
    assert!(
        m.contains("amc_sync_paused 1") && m.contains("amc_sync_auth_ok 1"),
        "{m}"
    );

    // The first upload after resuming gets a 429: it shows in recentErrors, then succeeds.
    let f = req(
        "POST",
        &sb.base,
        "/__sandbox/faults",
        &[("Content-Type", "application/json")],
        &json!({"rate_limit": 1, "retry_after": "1"}).to_string(),
    );
    assert!(f.status < 300, "fault injection: {}", f.body);
    let r = api.post_empty("/api/resume");
    assert_eq!((r.status, r.json()), (200, json!({"paused": false})));
    wait_until("uploads after resume", 60, || {
        received_users(&sb.base).len() == 5
    });
    let st = api.get("/api/status").json();
    assert_eq!(st["paused"], false);
    let errors = st["recentErrors"].as_array().expect("recentErrors");
    assert!(
        errors.iter().any(|e| e["audience"] == "vip"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("rate_limited"))
            && e["atMs"].as_i64().is_some()),
        "{st}"
    );
    // Flush now works and waits; the hour's bucket counts the uploaded records.
    let r = api.post_empty("/api/flush?wait=true&timeout=60");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["flushed"], true, "{}", r.body);
    let st = api.get("/api/status").json();
    assert_eq!(st["pendingTotal"], 0);
    assert_eq!(st["audiences"]["vip"]["uploaded"], 5);
    assert!(
        st["audiences"]["vip"]["audienceId"]
            .as_str()
            .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
    );
    let hourly: u64 = st["uploadsByHour"]
        .as_array()
        .expect("uploadsByHour")
        .iter()
        .map(|h| h["records"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(hourly, 5, "{st}");
    let m = req("GET", &base, "/metrics", &[], "").body;
    assert!(
        m.contains("amc_sync_uploaded_records_total{audience=\"vip\"} 5"),
        "{m}"
    );
    assert!(m.contains("amc_sync_paused 0"), "{m}");
}

#[test]
fn write_key_rotation_refuses_the_old_key_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, base, old) = offline_agent(dir.path());
    let api = Api::new(&base, dir.path());
    assert_eq!(send_batch(&base, &old, vec![event(1, "vip", "US")]), 200);
    let r = api.post_empty("/api/settings/write-key/rotate");
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["writeKey"].as_str().expect("writeKey").to_string();
    assert_eq!(new.len(), 32);
    assert!(new.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(new, old);
    assert_eq!(
        send_batch(&base, &old, vec![event(2, "vip", "US")]),
        401,
        "old key"
    );
    assert_eq!(
        send_batch(&base, &new, vec![event(3, "vip", "US")]),
        200,
        "new key"
    );
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("agent.json")).expect("agent.json"),
    )
    .expect("agent JSON");
    assert_eq!(saved["writeKey"], new.as_str(), "persisted");
    assert_eq!(
        api.get("/api/status").json()["writeKeyHint"],
        format!("{}…", &new[..4])
    );
    assert_eq!(api.get("/api/status").json()["pendingTotal"], 2);
    // The new key survives a clean shutdown (the agent rewrites agent.json
    // as it stops) and a restart.
    let mut agent = agent;
    #[cfg(unix)]
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    unsafe {
        libc::kill(i32::try_from(agent.0.id()).expect("pid"), libc::SIGTERM);
    }
    let _ = agent.0.wait();
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("agent.json")).expect("agent.json"),
    )
    .expect("agent JSON");
    assert_eq!(saved["writeKey"], new.as_str(), "kept at shutdown");
    assert_eq!(
        saved["listenUrl"],
        Value::Null,
        "a clean shutdown clears the address"
    );
    drop(agent);
    let (_agent, base, after) = offline_agent(dir.path());
    assert_eq!(after, new);
    assert_eq!(send_batch(&base, &new, vec![event(4, "vip", "US")]), 200);
}

/// Regression (ux review: a rejection was invisible on the Status page):
/// records Amazon rejects after upload appear in `recentErrors`, without
/// marking the upload path as failing (`lastError` stays empty).
#[test]
fn records_rejected_by_amazon_show_in_recent_errors() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    login(dir.path(), &sb);
    let (_agent, base, key) = start_agent(dir.path(), &sb.base);
    let api = Api::new(&base, dir.path());
    let mut bad = event(1, "vip", "US");
    bad["userId"] = json!("invalid_someone");
    assert_eq!(
        send_batch(&base, &key, vec![event(0, "vip", "US"), bad]),
        200
    );
    let r = api.post_empty("/api/flush?wait=true");
    assert_eq!(r.status, 200, "{}", r.body);
    let st = api.get("/api/status").json();
    let errors = st["recentErrors"].as_array().expect("recentErrors");
    assert!(
        errors.iter().any(|e| e["audience"] == "vip"
            && e["message"].as_str().is_some_and(
                |m| m.contains("1 record(s) rejected by Amazon (amazon_invalid_record)")
            )),
        "{st}"
    );
    assert!(st["lastError"].is_null(), "{st}");
    assert_eq!(st["audiences"]["vip"]["failed"], 1, "{st}");
    assert_eq!(
        received_users(&sb.base).len(),
        1,
        "the sandbox keeps only the accepted record"
    );
}

/// Regression (new-user review: `dashboard` claimed to open a browser on a
/// box without a graphical session): it prints the URL instead.
#[test]
fn dashboard_on_a_headless_box_prints_the_url_instead_of_claiming_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, base, _key) = offline_agent(dir.path());
    let out = amc(dir.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .arg("dashboard")
        .output()
        .expect("dashboard");
    assert!(out.status.success());
    let port = base.rsplit(':').next().expect("port");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("http://127.0.0.1:{port}/#token={}", admin_token(dir.path()))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no graphical session"));
}
