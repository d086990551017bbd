//! Helpers shared by the integration tests that drive the real binaries:
//! the sandbox Amazon API (`amc-sync sandbox`), `login --from-env`, the
//! agent (`amc-sync run --api-base-url`), and a minimal HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("amc-sync")
}

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct SandboxProc {
    pub _p: Proc,
    pub base: String,
    pub creds: [(String, String); 3],
}

pub fn sandbox() -> SandboxProc {
    let mut child = Command::new(bin())
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--job-pending-polls",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sandbox");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("startup line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("startup JSON");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    SandboxProc {
        base: s("base_url"),
        creds: [
            ("AMC_SYNC_CLIENT_ID".into(), s("client_id")),
            ("AMC_SYNC_CLIENT_SECRET".into(), s("client_secret")),
            ("AMC_SYNC_REFRESH_TOKEN".into(), s("refresh_token")),
        ],
        _p: Proc(child),
    }
}

pub fn amc(data: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_remove("AMC_SYNC_CONFIG")
        .env_remove("AMC_SYNC_CLIENT_ID")
        .env_remove("AMC_SYNC_CLIENT_SECRET")
        .env_remove("AMC_SYNC_REFRESH_TOKEN")
        .env("HOME", data)
        // Never touch a developer's real keychain from tests; the keychain
        // path has its own test (tests/login_flow.rs, under dbus-run-session).
        .env("AMC_SYNC_SECRET_STORE", "file")
        .env("AMC_SYNC_DATA_DIR", data);
    c
}

/// Minimal HTTP/1.1 request; returns (status, headers lower-cased, body).
pub fn http_full(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, body.to_string())
}

pub fn start_agent(data: &Path, base: &str) -> (Proc, String, String) {
    start_agent_with(data, base, &[])
}

/// [`start_agent`] with extra `run` arguments (e.g. `--config FILE`).
pub fn start_agent_with(data: &Path, base: &str, extra: &[&str]) -> (Proc, String, String) {
    let child = amc(data)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--no-drop-folder",
            "--api-base-url",
            base,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    let pid = u64::from(child.id());
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = std::fs::read_to_string(data.join("agent.json")) {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            if v["pid"].as_u64() == Some(pid)
                && let Some(url) = v["listenUrl"].as_str()
            {
                let key = v["writeKey"].as_str().unwrap_or_default().to_string();
                return (p, url.to_string(), key);
            }
        }
        assert!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Minimal HTTP/1.1 request; returns (status, body).
pub fn http(method: &str, url: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

pub fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Distinct externalUserIds the sandbox accepted.
pub fn received_users(base: &str) -> std::collections::BTreeSet<String> {
    let (status, body) = http("GET", &format!("{base}/__sandbox/received"), None, "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("received json");
    v.as_object()
        .expect("by audience")
        .values()
        .flat_map(|recs| recs.as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["externalUserId"].as_str().map(str::to_string))
        .collect()
}

pub fn login(data: &Path, sb: &SandboxProc) {
    let mut c = amc(data);
    for (k, v) in &sb.creds {
        c.env(k, v);
    }
    let out = c
        .args(["login", "--from-env", "--api-base-url", &sb.base])
        .output()
        .expect("login");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for (_, secret) in &sb.creds[1..] {
        assert!(!text.contains(secret.as_str()), "login printed a secret");
    }
}
