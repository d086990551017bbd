//! The real agent (`amc-sync run` binary) on a real SQLite file and an
//! ephemeral loopback port, fed by the official Segment clients and by the
//! drop folder; killed and restarted.
//!
//! The Python and Node clients come from PyPI / npm (`.ci/run` installs them:
//! `pip install segment-analytics-python`, `npm ci --prefix tests/clients`).
//! Without them these tests say SKIPPED, unless `AMC_SYNC_REQUIRE_CLIENTS=1`
//! (set by CI), which turns a missing client into a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CANARY_EMAIL: &str = "canary.7f3e9b@pii-canary.example";
/// A canary phone number (raw) and its normalized E.164 digits: neither may be stored.
const CANARY_PHONE: &str = "+1 (415) 555-0142";
const CANARY_PHONE_DIGITS: &str = "14155550142";

struct AgentProc {
    child: Child,
    url: String,
    write_key: String,
}

impl Drop for AgentProc {
    /// A failing test must not leave an agent running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AgentProc {
    fn start(data: &Path, drop_dir: Option<&Path>) -> AgentProc {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("amc-sync"));
        cmd.args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env_remove("AMC_SYNC_CONFIG")
            .env("HOME", data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match drop_dir {
            Some(d) => {
                cmd.arg("--drop-dir").arg(d);
            }
            None => {
                cmd.arg("--no-drop-folder");
            }
        }
        let mut agent = AgentProc {
            child: cmd.spawn().expect("start amc-sync run"),
            url: String::new(),
            write_key: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(data.join("agent.json")) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if let (Some(url), Some(pid)) = (v["listenUrl"].as_str(), v["pid"].as_u64())
                    && pid == u64::from(agent.child.id())
                {
                    agent.url = url.to_string();
                    agent.write_key = v["writeKey"].as_str().unwrap_or_default().to_string();
                    return agent;
                }
            }
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        // SIGTERM: a clean shutdown.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

fn status(data: &Path) -> serde_json::Value {
    let out = Command::new(assert_cmd::cargo::cargo_bin("amc-sync"))
        .args(["status", "--json", "--data-dir"])
        .arg(data)
        .env_remove("AMC_SYNC_CONFIG")
        .env("HOME", data)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn require_clients() -> bool {
    std::env::var("AMC_SYNC_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

fn python_client_available() -> bool {
    Command::new("python3")
        .args(["-c", "import segment.analytics"])
        .status()
        .is_ok_and(|s| s.success())
}

fn node_client_available() -> bool {
    clients_dir()
        .join("node_modules/@segment/analytics-node")
        .is_dir()
        && Command::new("node")
            .arg("--version")
            .status()
            .is_ok_and(|s| s.success())
}

/// Every file under `dir` (db, WAL, logs, reports), read as bytes.
fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

fn assert_no_canary(dir: &Path, canary: &str) {
    let mut files = Vec::new();
    all_files(dir, &mut files);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("amc-sync.db")),
        "no db in {}",
        dir.display()
    );
    for (p, bytes) in files {
        for needle in [
            canary.to_string(),
            canary.to_lowercase(),
            canary.to_uppercase(),
        ] {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "canary PII found in {}", p.display());
        }
    }
}

#[test]
fn official_python_client_delivers_engage_traffic_and_canary_never_stored() {
    if !python_client_available() {
        assert!(
            !require_clients(),
            "segment-analytics-python is not installed"
        );
        eprintln!("SKIPPED: pip install segment-analytics-python");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = AgentProc::start(dir.path(), None);
    let out = Command::new("python3")
        .arg(clients_dir().join("send_python.py"))
        .args([
            &agent.url,
            &agent.write_key,
            "py_audience",
            "40",
            CANARY_EMAIL,
        ])
        .output()
        .expect("run python client");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status(dir.path());
    assert_eq!(s["pending"]["py_audience"], 40, "{s}");
    assert_eq!(
        s["pending"]["py_audience_id"], 40,
        "identify audiences: {s}"
    );
    assert_eq!(s["deadLettersTotal"], 0, "{s}");
    agent.stop();
    assert_no_canary(dir.path(), CANARY_EMAIL);
    assert_no_canary(dir.path(), CANARY_PHONE);
    assert_no_canary(dir.path(), CANARY_PHONE_DIGITS);
}

#[test]
fn official_node_client_delivers_enter_and_exit() {
    if !node_client_available() {
        assert!(
            !require_clients(),
            "@segment/analytics-node is not installed (npm ci --prefix tests/clients)"
        );
        eprintln!("SKIPPED: npm ci --prefix tests/clients");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = AgentProc::start(dir.path(), None);
    let out = Command::new("node")
        .arg(clients_dir().join("send_node.mjs"))
        .args([&agent.url, &agent.write_key, "node_audience", "30"])
        .current_dir(clients_dir())
        .output()
        .expect("run node client");
    assert!(
        out.status.success(),
        "node client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = status(dir.path());
    // 30 users entered, 15 of them exited before any upload: still 30 pending
    // changes (15 CREATE, 15 DELETE), nothing dead-lettered.
    assert_eq!(s["pending"]["node_audience"], 30, "{s}");
    assert_eq!(s["deadLettersTotal"], 0, "{s}");
    agent.stop();
}

#[test]
fn sigkill_mid_file_then_restart_commits_every_row_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).expect("drop dir");
    // 60,000 distinct users, written beside the folder then renamed in (complete file).
    let n = 60_000u64;
    let tmp = dir.path().join("big.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create"));
        for i in 0..n {
            writeln!(
                f,
                "{{\"type\":\"track\",\"event\":\"Audience Entered\",\"userId\":\"u{i}\",\"messageId\":\"m{i}\",\"properties\":{{\"big_list\":true,\"email\":\"user{i}@example.com\"}},\"context\":{{\"personas\":{{\"computation_key\":\"big_list\",\"audience_settings\":{{\"advertiserId\":\"1\",\"countryCode\":\"US\"}}}}}}}}"
            )
            .expect("write");
        }
    }
    let agent = AgentProc::start(&data, Some(&drop_dir));
    std::fs::rename(&tmp, drop_dir.join("big.ndjson")).expect("drop file");
    // Kill once some rows are committed but (very likely) not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = status(&data)["pendingTotal"].as_u64().unwrap_or(0);
        if pending > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill();
    let after_kill = status(&data)["pendingTotal"].as_u64().unwrap_or(0);
    let agent = AgentProc::start(&data, Some(&drop_dir));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !drop_dir.join("processed/big.ndjson").exists() {
        assert!(
            Instant::now() < deadline,
            "file was not finished after restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = status(&data);
    agent.stop();
    assert_eq!(
        s["pendingTotal"], n,
        "every row committed (killed at {after_kill}): {s}"
    );
    assert_eq!(s["deadLettersTotal"], 0, "{s}");
    // Exactly once: the file's committed row count equals its line count.
    let conn = rusqlite::Connection::open(data.join("amc-sync.db")).expect("db");
    let rows_ok: i64 = conn
        .query_row("SELECT rows_ok FROM files", [], |r| r.get(0))
        .expect("files row");
    assert_eq!(
        rows_ok,
        i64::try_from(n).expect("n"),
        "killed at {after_kill}"
    );
}
