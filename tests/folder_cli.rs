//! `amc-sync ingest`, run as the real binary against a temporary data dir.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

const CONFIG: &str = r#"
[[audiences]]
key = "high_value_customers"
advertiser_id = 585806696618602999
country_code = "US"
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.toml"), CONFIG).expect("config");
        Env { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("amc-sync").expect("binary");
        c.env_remove("AMC_SYNC_CONFIG")
            .env_remove("AMC_SYNC_DATA_DIR")
            .arg("ingest")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(self.dir.path().join("config.toml"));
        c
    }
}

fn sample(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/samples")
        .join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} not found", p.display());
        None
    }
}

fn snapshot(p: &Path) -> (Vec<u8>, Option<std::time::SystemTime>) {
    (
        std::fs::read(p).expect("read"),
        std::fs::metadata(p).expect("stat").modified().ok(),
    )
}

#[test]
fn ingest_json_summary_for_a_sample_csv_and_the_file_is_untouched() {
    let Some(csv) = sample("high_value_customers.csv") else {
        return;
    };
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() as u64 - 1;
    let env = Env::new();
    let before = snapshot(&csv);
    let out = env
        .cmd()
        .arg("--json")
        .arg("--keep-files")
        .arg(&csv)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["ok"], true, "{v}");
    let f = &v["files"][0];
    assert_eq!(f["status"], "done", "{v}");
    assert_eq!(f["format"], "csv");
    assert_eq!(f["received"], rows);
    assert_eq!(f["queued"], rows);
    assert_eq!(f["duplicates"], 0);
    assert_eq!(f["deadLetters"], serde_json::json!({}));
    assert!(f["rejectedFile"].is_null());
    assert_eq!(snapshot(&csv), before, "ingest never touches its inputs");
    assert!(
        out.get_output().stderr.is_empty(),
        "no progress bar off a terminal"
    );
    assert!(env.data_dir().join("amc-sync.db").exists());

    // Again: already ingested, nothing read, still exit 0.
    let out = env.cmd().arg("--json").arg(&csv).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["files"][0]["status"], "already_done", "{v}");
    assert_eq!(v["files"][0]["received"], 0);
    assert_eq!(snapshot(&csv), before);
}

#[test]
fn ingest_text_summary_lists_dead_letters_and_the_rejected_lines_file() {
    let env = Env::new();
    let input = env.dir.path().join("high_value_customers.csv");
    std::fs::write(
        &input,
        "user_id,email\nu1,a@example.com\ncanary bad id,canary@example.com\nu3,\n",
    )
    .unwrap();
    let out = env.cmd().arg(&input).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("3 received, 1 queued"), "{stdout}");
    assert!(stdout.contains("invalid_external_user_id 1"), "{stdout}");
    let report = env
        .data_dir()
        .join("rejected/high_value_customers.csv.errors.ndjson");
    assert!(stdout.contains(&report.display().to_string()), "{stdout}");
    let text = std::fs::read_to_string(&report).expect("report");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains("canary"), "{text}");
    assert!(!stdout.contains("canary"), "{stdout}");
    assert!(input.exists());
}

#[test]
fn ingest_usage_errors_exit_2() {
    let env = Env::new();
    let missing = env.dir.path().join("nope.csv");
    let out = env.cmd().arg(&missing).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("no such file"), "{err}");
    let txt = env.dir.path().join("list.txt");
    std::fs::write(&txt, "x").unwrap();
    let out = env.cmd().arg(&txt).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("unsupported file type"), "{err}");
    // No FILE at all.
    env.cmd().assert().code(2);
}

#[test]
fn ingest_unparseable_file_exits_1_and_goes_on_with_the_others() {
    let env = Env::new();
    let bad = env.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"batch\": [").unwrap();
    let good = env.dir.path().join("high_value_customers.csv");
    std::fs::write(&good, "user_id,email\nu1,a@example.com\n").unwrap();
    let out = env
        .cmd()
        .arg("--json")
        .arg(&bad)
        .arg(&good)
        .assert()
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["status"], "error");
    assert_eq!(v["files"][0]["error"]["code"], "json_syntax");
    assert_eq!(v["files"][1]["status"], "done");
    assert!(
        bad.exists(),
        "ingest never moves files, not even failed ones"
    );
}

#[test]
fn ingest_refuses_a_data_dir_held_by_a_running_agent() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let _held = amc_sync::store::Store::open(env.data_dir().join("amc-sync.db")).expect("store");
    let input = env.dir.path().join("high_value_customers.csv");
    std::fs::write(&input, "user_id,email\nu1,a@example.com\n").unwrap();
    let out = env.cmd().arg(&input).assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}
