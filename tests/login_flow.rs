//! Issue 6 end to end with the real binaries: the interactive Login with
//! Amazon flow (authorize → loopback callback → token → profiles) against
//! `amc-sync sandbox`, through the agent's admin API and through the CLI
//! alone; its failure modes (wrong state, reused / expired code, bad PKCE
//! verifier, user cancels); a refresh token revoked mid-run (`needs_login`,
//! queue kept, re-login resumes); region switch; logout; the keychain
//! fallback file; and canary secrets that must never reach the data dir's
//! other files or the logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{SandboxProc, amc, basic, http, http_full, received_users, sandbox, start_agent};

fn admin_token(data: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("agent.json")).expect("agent.json"))
            .expect("json");
    format!("Bearer {}", v["adminToken"].as_str().expect("token"))
}

fn api(method: &str, url: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(method, url, Some(token), body);
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Plays the browser: opens the authorize URL at the sandbox and follows its
/// redirect to the loopback callback. Returns (callback status, page, callback URL).
fn browser(authorize_url: &str) -> (u16, String, String) {
    let (status, hs, body) = http_full("GET", authorize_url, &[], "");
    assert_eq!(status, 302, "authorize: {body}");
    let location = header(&hs, "location").expect("Location").to_string();
    let (status, _, page) = http_full("GET", &location, &[], "");
    (status, page, location)
}

fn start_login(url: &str, token: &str, sb: &SandboxProc, region: Option<&str>) -> (String, String) {
    let mut body = serde_json::json!({
        "clientId": sb.creds[0].1,
        "clientSecret": sb.creds[1].1,
    });
    if let Some(r) = region {
        body["region"] = r.into();
    }
    let (status, v) = api(
        "POST",
        &format!("{url}/api/login/start"),
        token,
        &body.to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let auth = v["authorizeUrl"]
        .as_str()
        .expect("authorizeUrl")
        .to_string();
    assert!(auth.starts_with(&format!("{}/ap/oa?", sb.base)), "{auth}");
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "response_type=code",
    ] {
        assert!(auth.contains(p), "{p} missing in {auth}");
    }
    (auth, v["state"].as_str().expect("state").to_string())
}

fn batch(users: std::ops::Range<usize>, prefix: &str) -> String {
    let items: Vec<serde_json::Value> = users
        .map(|i| {
            serde_json::json!({
                "type": "track", "event": "Audience Entered", "userId": format!("{prefix}{i}"),
                "messageId": format!("{prefix}m{i}"),
                "properties": {"audience_key": "vip", "vip": true, "email": format!("u{i}@example.com")},
                "context": {"personas": {"computation_key": "vip",
                    "audience_settings": {"advertiserId": "585806696618602999", "countryCode": "US"}}}
            })
        })
        .collect();
    serde_json::json!({ "batch": items }).to_string()
}

/// Sends a Segment batch to the agent's intake; returns (status, body).
fn send(url: &str, key: &str, body: &str) -> (u16, String) {
    http("POST", &format!("{url}/v1/batch"), Some(&basic(key)), body)
}

/// `amc-sync flush --wait` on the data dir.
fn flush_wait(data: &Path) -> std::process::Output {
    amc(data).args(["flush", "--wait"]).output().expect("flush")
}

fn status_json(data: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &amc(data)
            .args(["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("status json")
}

/// No file of the data dir (recursively, logs included) other than the 0600
/// fallback `credentials.json` holds any of `secrets`.
fn assert_no_secret_in(dir: &Path, secrets: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.ends_with("credentials.json") {
                let bytes = std::fs::read(&p).unwrap_or_default();
                for s in secrets {
                    assert!(
                        !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                        "a secret is in {}",
                        p.display()
                    );
                }
            }
        }
    }
}

#[test]
fn login_through_the_agent_lists_profiles_stores_secrets_and_uploads_resume() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let token = admin_token(dir.path());
    let (s, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "no_credentials", "{v}");
    assert_eq!(v["clientSecretStored"], false, "{v}");
    // Traffic queued before any login waits in the queue.
    let (s, body) = send(&url, &key, &batch(0..20, "pre_"));
    assert_eq!(s, 200, "{body}");

    let (auth, state) = start_login(&url, &token, &sb, None);
    let (s, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("pending")), "{v}");
    let (s, page, callback) = browser(&auth);
    assert!(
        callback.starts_with(&format!("{url}/api/login/callback?")),
        "{callback}"
    );
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("Connected to Amazon Ads"), "{page}");
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!(v["state"], "ok", "{v}");
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(2), "{v}");
    // Profile ids above 2^53 survive as digits.
    assert_eq!(v["profiles"][1]["profileId"], "3074457345618258602", "{v}");
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "ok", "{v}");
    assert_eq!(v["region"], "NA", "{v}");
    assert_eq!(v["secretStore"], "file", "{v}");
    assert_eq!(v["clientSecretStored"], true, "{v}");
    assert_eq!(v["loggedInRegions"], serde_json::json!(["NA"]), "{v}");
    // `status` checks the fallback file's mode instead of assuming it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let f = dir.path().join("credentials.json");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = amc(dir.path()).arg("status").output().expect("status");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("secrets:     file"), "{text}");
        assert!(
            text.contains("readable by other users (mode 644)"),
            "{text}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    // The running agent uploads with the new login, without a restart.
    let out = amc(dir.path())
        .args(["flush", "--wait", "--json"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(received_users(&sb.base).len(), 20);

    // Replaying the callback (same state and code) is refused...
    let (s, _, page) = http_full("GET", &callback, &[], "");
    assert_eq!(s, 400);
    assert!(page.contains("wrong or reused state"), "{page}");
    // ...and does not turn the finished login into an error (regression:
    // replayed_callback_after_success_kept_the_ok_outcome).
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!(v["state"], "ok", "{v}");

    // Logout through the admin API: secrets gone, uploads wait, queue kept.
    let (s, v) = api("POST", &format!("{url}/api/logout"), &token, "");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["secretsRemoved"], 2, "{v}");
    assert!(!dir.path().join("credentials.json").exists());
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "no_credentials", "{v}");
    let (s, _) = send(&url, &key, &batch(0..5, "post_"));
    assert_eq!(s, 200);
    let out = amc(dir.path())
        .args(["flush", "--json"])
        .output()
        .expect("flush");
    assert!(!out.status.success(), "flush must fail while logged out");
    assert_eq!(status_json(dir.path())["pendingTotal"], 5);
    assert_no_secret_in(dir.path(), &[&sb.creds[1].1, &sb.creds[2].1]);
}

#[test]
fn wrong_state_reused_code_expired_code_and_cancel_give_clear_errors() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url, _key) = start_agent(dir.path(), &sb.base);
    let token = admin_token(dir.path());

    // A callback for a login this agent never started.
    let (s, _, page) = http_full(
        "GET",
        &format!("{url}/api/login/callback?code=ANforged&state=not-ours"),
        &[],
        "",
    );
    assert_eq!(s, 400);
    assert!(page.contains("wrong or reused state"), "{page}");

    // Reused code: complete one login, then present its code with a new state.
    let (auth, _) = start_login(&url, &token, &sb, None);
    let (s, _, callback) = browser(&auth);
    assert_eq!(s, 200);
    let code = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .expect("code")
        .to_string();
    let (_, state2) = start_login(&url, &token, &sb, None);
    let (s, _, page) = http_full(
        "GET",
        &format!("{url}/api/login/callback?code={code}&state={state2}"),
        &[],
        "",
    );
    assert_eq!(s, 400);
    assert!(page.contains("invalid_grant"), "{page}");
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state2}"),
        &token,
        "",
    );
    assert_eq!(v["state"], "error", "{v}");
    assert_eq!(v["code"], "login_code_rejected", "{v}");

    // Expired code: the sandbox issues codes that expire at once.
    let (s, _) = http(
        "POST",
        &format!("{}/__sandbox/settings", sb.base),
        None,
        r#"{"autoApprove": true, "codeTtlSecs": 0}"#,
    );
    assert_eq!(s, 200);
    let (auth, _) = start_login(&url, &token, &sb, None);
    std::thread::sleep(Duration::from_millis(20));
    let (s, page, _) = browser(&auth);
    assert_eq!(s, 400);
    assert!(page.contains("expired"), "{page}");

    // The user cancels on the consent page.
    http(
        "POST",
        &format!("{}/__sandbox/settings", sb.base),
        None,
        r#"{"autoApprove": false, "codeTtlSecs": 300}"#,
    );
    let (auth, state) = start_login(&url, &token, &sb, None);
    let (s, _, consent) = http_full("GET", &auth, &[], "");
    assert_eq!(s, 200);
    assert!(consent.contains("id=\"deny\""), "{consent}");
    // Submit the consent form with "deny" (the form's hidden fields + decision).
    let query = auth.split_once('?').expect("query").1;
    let (s, hs, _) = http_full(
        "POST",
        &format!("{}/ap/oa/consent", sb.base),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("{query}&decision=deny"),
    );
    assert_eq!(s, 302);
    let location = header(&hs, "location").expect("Location");
    assert!(location.contains("error=access_denied"), "{location}");
    let (s, _, page) = http_full("GET", location, &[], "");
    assert_eq!(s, 400);
    assert!(page.contains("access_denied"), "{page}");
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!(v["code"], "login_denied", "{v}");

    // A redirect_uri that is not registered is refused by the authorize page.
    let bad = auth.replace(
        "redirect_uri=http%3A%2F%2F127.0.0.1",
        "redirect_uri=http%3A%2F%2Fevil.example",
    );
    assert_ne!(bad, auth);
    let (s, _, body) = http_full("GET", &bad, &[], "");
    assert_eq!(s, 400, "{body}");
}

#[test]
fn revoked_refresh_token_mid_run_needs_login_keeps_the_queue_and_relogin_resumes() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let token = admin_token(dir.path());
    let (auth, _) = start_login(&url, &token, &sb, None);
    assert_eq!(browser(&auth).0, 200);
    send(&url, &key, &batch(0..10, "a_"));
    assert!(flush_wait(dir.path()).status.success());
    assert_eq!(received_users(&sb.base).len(), 10);

    // The user removes the app's access at Amazon.
    let (s, _) = http("POST", &format!("{}/__sandbox/revoke", sb.base), None, "{}");
    assert_eq!(s, 200);
    let (s, _) = send(&url, &key, &batch(0..15, "b_"));
    assert_eq!(s, 200, "intake continues");
    let out = flush_wait(dir.path());
    assert!(!out.status.success());
    let st = status_json(dir.path());
    assert_eq!(st["auth"], "needs_login", "{st}");
    assert_eq!(st["pendingTotal"], 15, "{st}");
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "needs_login", "{v}");

    // Log in again (the stored client secret is reused): everything goes.
    let (s, v) = api("POST", &format!("{url}/api/login/start"), &token, "{}");
    assert_eq!(s, 200, "{v}");
    assert_eq!(browser(v["authorizeUrl"].as_str().expect("url")).0, 200);
    let out = flush_wait(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(received_users(&sb.base).len(), 25);
    assert_eq!(status_json(dir.path())["pendingTotal"], 0);
}

#[test]
fn region_switch_keeps_the_queue_and_needs_a_login_in_the_new_region() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let token = admin_token(dir.path());
    let (auth, _) = start_login(&url, &token, &sb, None);
    assert_eq!(browser(&auth).0, 200);
    send(&url, &key, &batch(0..3, "na_"));
    assert!(flush_wait(dir.path()).status.success());
    let na_id = status_json(dir.path())["audiences"][0]["audienceId"].clone();
    assert!(na_id.is_string());

    let (s, v) = api(
        "PUT",
        &format!("{url}/api/region"),
        &token,
        r#"{"region":"EU"}"#,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["region"], "EU", "{v}");
    assert_eq!(v["state"], "needs_login", "{v}");
    let (s, v) = api(
        "PUT",
        &format!("{url}/api/region"),
        &token,
        r#"{"region":"XX"}"#,
    );
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_field")), "{v}");
    send(&url, &key, &batch(0..4, "eu_"));
    let out = amc(dir.path()).args(["flush"]).output().expect("flush");
    assert!(!out.status.success(), "no EU login yet");
    let st = status_json(dir.path());
    assert_eq!(st["region"], "EU", "{st}");
    assert_eq!(st["pendingTotal"], 4, "{st}");

    // Log in to EU: the audience is created again there, the queue drains.
    let (auth, _) = start_login(&url, &token, &sb, Some("EU"));
    assert_eq!(browser(&auth).0, 200);
    let out = flush_wait(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_json(dir.path());
    assert_eq!(st["pendingTotal"], 0, "{st}");
    assert_ne!(
        st["audiences"][0]["audienceId"], na_id,
        "a new audience in EU: {st}"
    );
    assert_eq!(received_users(&sb.base).len(), 7);
    // Back to NA: its login is still stored.
    let out = amc(dir.path())
        .args(["region", "NA", "--json"])
        .output()
        .expect("region");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v, serde_json::json!({"region": "NA", "loggedIn": true}));
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "ok", "{v}");
}

#[test]
fn logout_cancels_a_pending_login_and_a_callback_without_code_keeps_it_pending() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url, _key) = start_agent(dir.path(), &sb.base);
    let token = admin_token(dir.path());
    let (auth, state) = start_login(&url, &token, &sb, None);
    // A callback with the right state but no code is not Amazon's answer.
    let (s, _, page) = http_full(
        "GET",
        &format!("{url}/api/login/callback?state={state}"),
        &[],
        "",
    );
    assert_eq!(s, 400);
    assert!(page.contains("no authorization code"), "{page}");
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!(v["state"], "pending", "{v}");
    // Logout cancels it: completing the consent afterwards stores nothing.
    let (s, _) = api("POST", &format!("{url}/api/logout"), &token, "");
    assert_eq!(s, 200);
    let (_, v) = api(
        "GET",
        &format!("{url}/api/login/status?state={state}"),
        &token,
        "",
    );
    assert_eq!(v["code"], "login_cancelled", "{v}");
    let (s, page, _) = browser(&auth);
    assert_eq!(s, 400, "{page}");
    assert!(!dir.path().join("credentials.json").exists());
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "no_credentials", "{v}");
    let (s, v) = api(
        "GET",
        &format!("{url}/api/login/status?state=never"),
        &token,
        "",
    );
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
}

#[test]
fn corrupt_connection_file_does_not_stop_the_agent_and_a_login_repairs_it() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("connection.json"),
        "{\"region\":\"NA\",\"regions\":{",
    )
    .expect("write");
    std::fs::write(dir.path().join("credentials.json"), "{\"secrets\":").expect("write");
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    let (s, _) = send(&url, &key, &batch(0..2, "c_"));
    assert_eq!(s, 200, "intake runs");
    let token = admin_token(dir.path());
    let (s, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(s, 200, "{v}");
    assert!(
        v["problem"]
            .as_str()
            .is_some_and(|p| p.contains("unreadable")),
        "{v}"
    );
    let (auth, _) = start_login(&url, &token, &sb, None);
    assert_eq!(browser(&auth).0, 200);
    let (_, v) = api("GET", &format!("{url}/api/connection"), &token, "");
    assert_eq!(v["state"], "ok", "{v}");
    assert!(v["problem"].is_null(), "{v}");
    assert!(flush_wait(dir.path()).status.success());
    assert_eq!(received_users(&sb.base).len(), 2);
}

#[test]
fn redirect_uri_on_another_port_than_the_agent_is_refused_at_login_start() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "redirect_uri = \"http://127.0.0.1:9/api/login/callback\"\n",
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf-8 path");
    let (_agent, url, _key) = common::start_agent_with(dir.path(), &sb.base, &["--config", cfg]);
    let token = admin_token(dir.path());
    let body = serde_json::json!({"clientId": sb.creds[0].1, "clientSecret": sb.creds[1].1});
    let (s, v) = api(
        "POST",
        &format!("{url}/api/login/start"),
        &token,
        &body.to_string(),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not point at this agent")),
        "{v}"
    );
}

#[test]
fn wrong_client_secret_is_reported_as_such_not_as_a_refresh_token_problem() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = amc(dir.path())
        .env("AMC_SYNC_CLIENT_ID", &sb.creds[0].1)
        .env("AMC_SYNC_CLIENT_SECRET", "WRONG-secret")
        .env("AMC_SYNC_REFRESH_TOKEN", &sb.creds[2].1)
        .args(["login", "--from-env", "--api-base-url", &sb.base])
        .output()
        .expect("login");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client id or client secret"), "{err}");
    assert!(!err.contains("refresh token was rejected"), "{err}");
    assert!(!err.contains("WRONG-secret"), "{err}");
}

/// `amc-sync login` with no agent: it listens on the redirect URI itself.
#[test]
fn cli_login_without_an_agent_completes_on_its_own_loopback_listener() {
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = dir.path().join("amc-sync.toml");
    std::fs::write(
        &cfg,
        format!(
            "api_base_url = \"{}\"\nredirect_uri = \"http://127.0.0.1:{port}/callback\"\n",
            sb.base
        ),
    )
    .expect("config");
    let mut child = amc(dir.path())
        .args(["login", "--no-browser", "--config"])
        .arg(&cfg)
        .args(["--client-id", &sb.creds[0].1, "--timeout", "60"])
        .env("AMC_SYNC_CLIENT_SECRET", &sb.creds[1].1)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
        .env_remove("AMC_SYNC_SECRET_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(u) = line.trim().strip_prefix("http://") {
            break format!("http://{u}");
        }
        assert!(Instant::now() < deadline, "no URL printed");
    };
    // A stray request to the callback (an old tab) does not abort the login
    // (regression: stray_callback_aborted_the_cli_login).
    let (s, _, _) = http_full(
        "GET",
        &format!("http://127.0.0.1:{port}/callback?code=x&state=bad"),
        &[],
        "",
    );
    assert_eq!(s, 400);
    let (s, page, callback) = browser(&url);
    assert!(callback.starts_with(&format!("http://127.0.0.1:{port}/callback?")));
    assert_eq!(s, 200, "{page}");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Logged in to Amazon Ads (NA): 2 advertising profile(s)"),
        "{text}"
    );
    // Keyring fallback: no Secret Service here, so a 0600 file, with a warning.
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(rest.contains("no usable OS keychain"), "{rest}");
    let conn: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("connection.json")).expect("connection.json"),
    )
    .expect("json");
    assert_eq!(conn["secretStore"], "file", "{conn}");
    assert!(conn["secretStoreWarning"].is_string(), "{conn}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("credentials.json"))
            .expect("credentials.json")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let st = amc(dir.path())
        .args(["status"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("region NA, logged in to NA   secrets: file"),
        "{text}"
    );
    assert_no_secret_in(dir.path(), &[&sb.creds[1].1]);
    // Logout from the CLI (no agent) removes the file.
    let out = amc(dir.path()).args(["logout"]).output().expect("logout");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 stored secret(s) removed"));
    assert!(!dir.path().join("credentials.json").exists());
}

/// The real OS keychain (Secret Service over D-Bus). Needs a session bus with
/// an unlocked keyring: `.ci/run` runs it under `dbus-run-session` with
/// gnome-keyring and sets AMC_SYNC_TEST_KEYRING=1.
#[test]
fn keychain_holds_the_secrets_when_a_secret_service_runs() {
    if std::env::var("AMC_SYNC_TEST_KEYRING").as_deref() != Ok("1") {
        eprintln!("skipped: set AMC_SYNC_TEST_KEYRING=1 under a Secret Service (see .ci/run)");
        return;
    }
    let sb = sandbox();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = amc(dir.path());
    for (k, v) in &sb.creds {
        c.env(k, v);
    }
    let out = c
        .env("AMC_SYNC_SECRET_STORE", "keychain")
        .args(["login", "--from-env", "--api-base-url", &sb.base])
        .output()
        .expect("login");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("secrets stored in the OS keychain"));
    assert!(
        !dir.path().join("credentials.json").exists(),
        "no fallback file"
    );
    let (_agent, url, key) = start_agent(dir.path(), &sb.base);
    send(&url, &key, &batch(0..3, "k_"));
    let out = flush_wait(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(received_users(&sb.base).len(), 3);
    assert_no_secret_in(dir.path(), &[&sb.creds[1].1, &sb.creds[2].1]);
    let out = amc(dir.path()).args(["logout"]).output().expect("logout");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 stored secret(s) removed"));
    let (_, v) = api(
        "GET",
        &format!("{url}/api/connection"),
        &admin_token(dir.path()),
        "",
    );
    assert_eq!(v["state"], "no_credentials", "{v}");
}
