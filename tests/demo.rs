//! Issue 5: `amc-sync demo` as the real binary, and the README's commands run
//! exactly as written (the cheap ones; the others are exercised by the
//! agent, upload and CLI tests and by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("amc-sync")
}

/// The binary with a private HOME and no AMC Sync environment.
fn amc(home: &Path) -> Command {
    let mut c = Command::new(bin());
    isolate(&mut c, home);
    c
}

fn isolate(c: &mut Command, home: &Path) {
    for k in [
        "AMC_SYNC_CONFIG",
        "AMC_SYNC_DATA_DIR",
        "AMC_SYNC_CLIENT_ID",
        "AMC_SYNC_CLIENT_SECRET",
        "AMC_SYNC_REFRESH_TOKEN",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "RUST_LOG",
    ] {
        c.env_remove(k);
    }
    c.env("HOME", home);
}

/// A shell running `script` with `amc-sync` first on the PATH.
fn sh(home: &Path, script: &str) -> Command {
    let dir = bin().parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let mut c = Command::new("sh");
    isolate(&mut c, home);
    c.env("PATH", path).args(["-e", "-c", script]);
    c
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The README's fenced code blocks: (info string, body).
fn code_blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in md.lines() {
        let t = line.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => cur = Some((info.trim().to_string(), String::new())),
            }
            continue;
        }
        if let Some((_, body)) = cur.as_mut() {
            // Blocks inside list items are indented.
            body.push_str(line.strip_prefix("  ").unwrap_or(line));
            body.push('\n');
        }
    }
    out
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn demo_json_uploads_every_audience_dead_letters_the_bad_input_and_stores_no_raw_pii() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("demo-data");
    let out = amc(home.path())
        .args(["demo", "--json", "--timeout", "120", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run demo");
    let v = json_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}: {v:#}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["ok"], true, "{v:#}");
    for c in v["checks"].as_array().expect("checks") {
        assert_eq!(c["ok"], true, "{c}");
    }
    // Received through the real endpoints.
    assert!(v["received"]["httpMessages"].as_u64().unwrap() >= 20, "{v}");
    assert!(v["received"]["csvRows"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(
        v["received"]["total"].as_u64(),
        Some(
            v["received"]["httpMessages"].as_u64().unwrap()
                + v["received"]["csvRows"].as_u64().unwrap()
        )
    );
    // Two emails of one user and an enter-then-exit were coalesced.
    assert_eq!(v["coalesced"], 2, "{v}");
    assert_eq!(
        v["hashed"].as_u64().unwrap(),
        v["queued"].as_u64().unwrap() + 2
    );
    assert_eq!(v["pendingAfter"], 0);
    // The deliberate dead letters, by reason and where they arose.
    let by_source = &v["deadLettersBySource"];
    for reason in [
        "consent_required",
        "invalid_external_user_id",
        "no_identifiers",
        "membership_contradiction",
    ] {
        assert!(
            by_source["http"][reason].as_u64() >= Some(1),
            "{reason}: {v}"
        );
    }
    assert!(by_source["file"]["invalid_external_user_id"].as_u64() >= Some(1));
    assert!(by_source["upload"]["amazon_invalid_record"].as_u64() >= Some(1));
    // Uploaded per audience: US track, DE identify (with consent), the CSV's.
    let auds = v["audiences"].as_array().expect("audiences");
    let keys: Vec<&str> = auds.iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "crm_loyalty_members",
            "demo_de_newsletter",
            "demo_us_high_value"
        ]
    );
    let mut at_sandbox = 0;
    for a in auds {
        assert!(a["uploaded"].as_u64().unwrap() > 0, "{a}");
        assert!(a["sandboxReceived"].as_u64().unwrap() > 0, "{a}");
        let id = a["amazonAudienceId"].as_str().expect("audienceId");
        assert!(
            id.len() >= 19 && id.bytes().all(|b| b.is_ascii_digit()),
            "{id}"
        );
        at_sandbox += a["sandboxReceived"].as_u64().unwrap();
    }
    assert_eq!(v["sandboxReceivedTotal"].as_u64(), Some(at_sandbox));
    assert!(v["hashedIdentifiersUploaded"].as_u64().unwrap() > at_sandbox);
    // Every job terminal; the invalid_* user makes one PARTIALLYSUCCEEDED.
    let states = v["jobStates"].as_object().expect("jobStates");
    assert!(states.contains_key("PARTIALLYSUCCEEDED"), "{v}");
    for s in states.keys() {
        assert!(
            ["SUCCEEDED", "PARTIALLYSUCCEEDED", "COMPLETED"].contains(&s.as_str()),
            "{s}"
        );
    }
    // Privacy: nothing found, and the search covered real bytes.
    let p = &v["privacy"];
    assert_eq!(p["found"], 0, "{p}");
    assert!(p["rawValues"].as_u64().unwrap() >= 100, "{p}");
    assert!(p["files"].as_u64().unwrap() >= 4, "{p}");
    assert!(p["bytes"].as_u64().unwrap() > 10_000, "{p}");
    assert!(p["requestBodies"].as_u64().unwrap() >= 3, "{p}");

    // The data dir was kept (--data-dir): `status` reads it as the README says.
    assert_eq!(v["dataDirKept"], true);
    let st = amc(home.path())
        .args(["status", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("status");
    assert!(st.status.success());
    let st = json_of(&st);
    assert_eq!(st["pendingTotal"], 0, "{st}");
    assert_eq!(st["agentRunning"], false);
    assert!(st["deadLetters"]["consent_required"].as_u64() >= Some(1));
    // The CSV (raw PII) did not linger in the drop folder.
    assert!(!data.join("drop").join("crm_loyalty_members.csv").exists());
    let processed = std::fs::read_dir(data.join("drop").join("processed"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(processed, 0, "files left in drop/processed");
}

#[test]
fn demo_without_data_dir_removes_its_temporary_dir() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = amc(home.path())
        .args(["demo", "--json"])
        .env("TMPDIR", home.path())
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["dataDirKept"], false);
    let dir = PathBuf::from(v["dataDir"].as_str().expect("dataDir"));
    assert!(dir.starts_with(home.path()), "{}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn demo_text_summary_has_the_privacy_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = amc(home.path())
        .args(["demo"])
        .env("TMPDIR", home.path())
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("privacy check:"))
        .expect("privacy line");
    assert!(line.contains("privacy check: 0 of "), "{line}");
    assert!(line.contains(" raw PII values found in "), "{line}");
    assert!(text.contains("every check passed"), "{text}");
    assert!(text.contains("amazon_invalid_record"), "{text}");
}

#[test]
fn demo_refuses_a_non_empty_data_dir_and_explains_itself() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("busy");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("amc-sync.db"), b"x").unwrap();
    let out = amc(home.path())
        .args(["demo", "--data-dir"])
        .arg(&data)
        .output()
        .expect("demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("new or empty"));
    assert_eq!(std::fs::read(data.join("amc-sync.db")).unwrap(), b"x");

    let help = amc(home.path()).args(["demo", "--help"]).output().unwrap();
    assert!(help.status.success());
    let h = String::from_utf8_lossy(&help.stdout);
    for word in [
        "sandbox",
        "privacy check",
        "--keep-running",
        "--json",
        "consent",
    ] {
        assert!(h.contains(word), "{word} missing from demo --help:\n{h}");
    }
}

/// Every `amc-sync …` line of the README's normalize block runs as written;
/// `# → X` comments are checked against the output.
#[test]
fn readme_normalize_examples_run_as_written() {
    let home = tempfile::tempdir().expect("tempdir");
    let blocks = code_blocks(&readme());
    let block = blocks
        .iter()
        .find(|(info, b)| info == "sh" && b.contains("amc-sync normalize"))
        .expect("normalize block");
    let mut ran = 0;
    for line in block.1.lines().filter(|l| l.contains("amc-sync normalize")) {
        let out = sh(home.path(), line).output().expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((_, expected)) = line.split_once("# → ") {
            let expected = expected.trim();
            assert!(
                stdout.contains(expected),
                "{line}: expected {expected:?} in\n{stdout}"
            );
        }
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} normalize examples");
}

/// The README's TOML example, saved where the README says the config lives,
/// passes `amc-sync config check` exactly as written.
#[test]
fn readme_config_example_passes_config_check() {
    let home = tempfile::tempdir().expect("tempdir");
    let blocks = code_blocks(&readme());
    let toml = &blocks
        .iter()
        .find(|(info, _)| info == "toml")
        .expect("toml block")
        .1;
    let dir = home.path().join(".config").join("amc-sync");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), toml).unwrap();
    let out = sh(home.path(), "amc-sync config check").output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sh(home.path(), "amc-sync config check --json")
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["audiences"][0], "high_value_customers");
}

/// `amc-sync status` on a fresh machine (no data dir yet) works and creates nothing.
#[test]
fn readme_status_on_a_fresh_machine() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sh(home.path(), "amc-sync status").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("amc-sync run"));
    assert!(!home.path().join(".local").exists());
}

/// Every `amc-sync <command>` the README mentions exists (`--help` succeeds).
#[test]
fn readme_mentions_only_real_commands() {
    let home = tempfile::tempdir().expect("tempdir");
    let md = readme();
    let mut seen = std::collections::BTreeSet::new();
    for (i, _) in md.match_indices("amc-sync ") {
        let rest = &md[i + "amc-sync ".len()..];
        let words: Vec<&str> = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .take(2)
            .collect();
        let Some(cmd) = words
            .first()
            .filter(|w| !w.is_empty() && !w.starts_with('-'))
        else {
            continue;
        };
        let sub = match *cmd {
            "dead-letters" | "audiences" | "config" => format!("{cmd} {}", words[1]),
            // Prose ("amc-sync demo runs …", "amc-sync agent") is not a command.
            c if c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-') => c.to_string(),
            _ => continue,
        };
        seen.insert(sub);
    }
    let known = [
        "run",
        "demo",
        "ingest",
        "status",
        "flush",
        "dashboard",
        "dead-letters list",
        "dead-letters retry",
        "audiences list",
        "audiences create",
        "audiences set-id",
        "login",
        "logout",
        "region",
        "sandbox",
        "normalize",
        "config check",
    ];
    for s in &seen {
        assert!(
            known.contains(&s.as_str()),
            "README mentions `amc-sync {s}`"
        );
    }
    for s in known {
        assert!(seen.contains(s), "README does not document `amc-sync {s}`");
        let mut c = amc(home.path());
        c.args(s.split(' ')).arg("--help");
        let out = c.output().unwrap();
        assert!(out.status.success(), "amc-sync {s} --help");
    }
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The README's curl block, run as written against a running agent.
#[test]
fn readme_curl_example_queues_the_event() {
    if !have("curl") || !have("python3") {
        eprintln!("SKIPPED readme_curl_example_queues_the_event: needs curl and python3");
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join(".local/share/amc-sync");
    let mut c = amc(home.path());
    c.args(["run", "--listen", "127.0.0.1:0", "--no-drop-folder"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().expect("start agent");
    let pid = u64::from(child.id());
    let _agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = std::fs::read_to_string(data.join("agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if v["pid"].as_u64() == Some(pid) && v["listenUrl"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let blocks = code_blocks(&readme());
    let script = &blocks
        .iter()
        .find(|(info, b)| info == "sh" && b.contains("curl -sS -u"))
        .expect("curl block")
        .1;
    let out = sh(home.path(), script).output().expect("sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("{\"success\":true}"), "{stdout}");
    assert!(stdout.contains("1 pending change"), "{stdout}");
    let st = amc(home.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let st = json_of(&st);
    assert_eq!(st["pending"]["vip"], 1, "{st}");
}
