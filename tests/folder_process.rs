//! `ingest::folder::process_file` / `process_drop_file` on real files, a real
//! SQLite file and the real pipeline: every format, rejected-row reports,
//! crash/resume without loss or duplicates, and the drop-folder lifecycle.

use std::path::{Path, PathBuf};

use amc_sync::agent::pipeline::Pipeline;
use amc_sync::config::Config;
use amc_sync::ingest::file::FileReader;
use amc_sync::ingest::folder::{
    self, DropOutcome, FileStatus, FolderOptions, ProcessOptions, process_drop_file, process_file,
};
use amc_sync::model::Action;
use amc_sync::store::{DeadLetterFilter, FileState, Store, Writer};

const CONFIG: &str = r#"
[[audiences]]
key = "high_value_customers"
advertiser_id = 585806696618602999
country_code = "US"

[[audiences]]
key = "vip_customers"
advertiser_id = 585806696618602999
country_code = "US"

[[audiences]]
key = "vip"
advertiser_id = 585806696618602999
country_code = "US"
"#;

struct Env {
    dir: tempfile::TempDir,
    writer: Writer,
    pipeline: Pipeline,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("amc-sync.db")).expect("open store");
        let writer = Writer::spawn(store).expect("writer");
        let cfg = Config::from_toml_str(CONFIG, "test.toml").expect("config");
        let pipeline = Pipeline::new(&cfg, writer.handle()).expect("pipeline");
        Env {
            dir,
            writer,
            pipeline,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write input");
        p
    }

    fn opts(&self) -> ProcessOptions {
        ProcessOptions::new(self.path("rejected"))
    }

    fn pending(&self, key: &'static str) -> u64 {
        self.writer
            .handle()
            .call(|s| s.pending_counts())
            .expect("counts")
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn actions(&self, key: &'static str) -> Vec<Action> {
        self.writer
            .handle()
            .call(move |s| s.pending_batch(key, 100_000, 0))
            .expect("pending")
            .into_iter()
            .map(|r| r.action)
            .collect()
    }

    fn dead_letters(&self) -> u64 {
        self.writer
            .handle()
            .call(|s| s.dead_letter_counts())
            .expect("dead letters")
            .values()
            .sum()
    }
}

fn no_progress(_: u64, _: u64) {}

fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} not found", dir.display());
        None
    }
}

fn count_items(p: &Path) -> u64 {
    FileReader::open(p, 0).expect("open").count() as u64
}

#[test]
fn sample_files_of_every_format_are_committed_in_chunks_and_only_once() {
    let Some(dir) = samples() else { return };
    let env = Env::new();
    let mut opts = env.opts();
    opts.chunk_items = 500;
    for name in [
        "engage-track.ndjson",
        "engage-identify.ndjson",
        "batch.json",
        "high_value_customers.csv",
        "high_value_customers.remove.csv",
    ] {
        let path = dir.join(name);
        let before = std::fs::metadata(&path).expect("sample").modified().ok();
        let last = std::cell::Cell::new(0u64);
        let r = process_file(&env.pipeline, &path, &opts, &|done, total| {
            assert!(done >= last.get() && done <= total, "{done}/{total}");
            last.set(done);
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let s = &r.summary;
        assert_eq!(r.status, FileStatus::Done, "{name}");
        assert_eq!(s.received, count_items(&path), "{name}");
        assert_eq!(s.dead_lettered(), 0, "{name}: {:?}", s.dead_letters);
        assert_eq!(
            s.queued + s.stale + s.duplicates + s.ignored,
            s.received,
            "{name}: {s:?}"
        );
        assert!(s.queued > 0, "{name}");
        assert_eq!(last.get(), r.size, "{name}: progress reaches the end");
        assert_eq!(r.rows_ok, s.received);
        assert!(r.rejected_file.is_none());
        if name.ends_with(".json") {
            assert_eq!(r.chunks, 1, "a JSON document commits as one unit");
        } else if s.received > 500 {
            assert!(r.chunks > 1, "{name}: {} chunks", r.chunks);
        }
        // Read in place: the file is not touched.
        assert_eq!(std::fs::metadata(&path).unwrap().modified().ok(), before);
        // The checkpoint says done: a second call reads nothing.
        let again = process_file(&env.pipeline, &path, &opts, &no_progress).expect("again");
        assert_eq!(again.status, FileStatus::AlreadyDone, "{name}");
        assert_eq!(again.summary.received, 0);
        assert_eq!(again.rows_ok, r.rows_ok);
    }
    // The remove list turned some of the CRM adds into DELETEs.
    let actions = env.actions("high_value_customers");
    assert!(actions.contains(&Action::Create));
    assert!(actions.contains(&Action::Delete));
}

#[test]
fn csv_with_bom_crlf_quotes_and_remove_file_name() {
    let env = Env::new();
    let p = env.write(
        "vip.remove.csv",
        "\u{feff}External User ID,Email,First Name,Address,Zip\r\n\
         u1,a1@example.com,\"Smith, \"\"Jo\"\"\",\"1 Main St\r\nApt 2\",94105\r\n\
         u2,\"a2@example.com\",Ann,2 Oak Ave,10001\r\n\
         \r\n\
         u3,a3@example.com,Bo,3 Elm Rd,60601\r\n"
            .as_bytes(),
    );
    let r = process_file(&env.pipeline, &p, &env.opts(), &no_progress).expect("process");
    assert_eq!(r.summary.received, 3, "{:?}", r.summary);
    assert_eq!(r.summary.queued, 3, "{:?}", r.summary.rejections);
    assert_eq!(env.pending("vip"), 3);
    assert_eq!(env.actions("vip"), vec![Action::Delete; 3]);
}

#[test]
fn json_array_and_batch_object_files() {
    let env = Env::new();
    let msg = |u: &str| {
        serde_json::json!({"type": "track", "event": "Audience Entered", "userId": u,
            "properties": {"vip": true, "email": format!("{u}@example.com")},
            "context": {"personas": {"computation_key": "vip"}}})
    };
    let array = serde_json::to_vec(&vec![msg("a1"), msg("a2"), msg("a3")]).unwrap();
    let p = env.write("list.json", &array);
    let mut opts = env.opts();
    opts.chunk_items = 1;
    let r = process_file(&env.pipeline, &p, &opts, &no_progress).expect("array");
    assert_eq!((r.summary.received, r.summary.queued, r.chunks), (3, 3, 1));
    let batch = serde_json::json!({"batch": [msg("b1"), msg("b2")], "context": {"ip": "10.0.0.1"}});
    let p = env.write("batch.json", batch.to_string().as_bytes());
    let r = process_file(&env.pipeline, &p, &opts, &no_progress).expect("batch");
    assert_eq!((r.summary.received, r.summary.queued), (2, 2));
    let p = env.write("empty.json", b"[]");
    let r = process_file(&env.pipeline, &p, &opts, &no_progress).expect("empty");
    assert_eq!((r.status, r.summary.received), (FileStatus::Done, 0));
    assert_eq!(env.pending("vip"), 5);
}

#[test]
fn rejected_rows_are_reported_by_line_and_reason_without_raw_values() {
    let env = Env::new();
    let good = |u: &str, email: &str| {
        serde_json::json!({"type": "track", "event": "Audience Entered", "userId": u,
            "properties": {"vip": true, "email": email},
            "context": {"personas": {"computation_key": "vip"}}})
        .to_string()
    };
    let lines = [
        good("u1", "canary-good-4711@example.com"),
        "{\"userId\": canary-broken-4711}".to_string(),
        good("canary bad id 4711", "canary-bad-4711@example.com"),
        "[\"canary-array-4711\"]".to_string(),
        String::new(),
        good("u2", "x@example.com"),
    ];
    let p = env.write("mixed.ndjson", lines.join("\n").as_bytes());
    let r = process_file(&env.pipeline, &p, &env.opts(), &no_progress).expect("process");
    assert_eq!(r.summary.received, 5);
    assert_eq!(r.summary.queued, 2);
    assert_eq!((r.rows_ok, r.rows_rejected), (2, 3));
    let report = r.rejected_file.expect("report written");
    assert_eq!(report, env.path("rejected/mixed.ndjson.errors.ndjson"));
    let text = std::fs::read_to_string(&report).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let got: Vec<(u64, &str)> = rows
        .iter()
        .map(|v| (v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "invalid_json"),
            (3, "invalid_external_user_id"),
            (4, "not_an_object")
        ]
    );
    for v in &rows {
        assert!(!v["message"].as_str().unwrap().is_empty());
        assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    }
    assert!(!text.contains("canary"), "{text}");
    // No canary in the database either (WAL included).
    drop(env.pipeline);
    let store = env.writer.shutdown().expect("shutdown");
    drop(store);
    for f in ["amc-sync.db", "amc-sync.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.dir.path().join(f)) {
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains("canary"), "canary in {f}");
        }
    }
}

/// A file where every 10th row has an invalid external id, without
/// messageIds (so dedup cannot hide a double commit).
fn resumable_file(env: &Env, csv: bool, rows: usize) -> PathBuf {
    let mut text = String::new();
    if csv {
        text.push_str("\u{feff}external_user_id,email,audience_key\r\n");
    }
    for i in 0..rows {
        let user = if i % 10 == 9 {
            format!("bad id {i}")
        } else {
            format!("u{i}")
        };
        if csv {
            text.push_str(&format!("{user},u{i}@example.com,vip\r\n"));
        } else {
            text.push_str(
                &serde_json::json!({"type": "track", "event": "Audience Entered",
                    "userId": user, "properties": {"vip": true, "email": format!("u{i}@example.com")},
                    "context": {"personas": {"computation_key": "vip"}}})
                .to_string(),
            );
            text.push('\n');
        }
    }
    env.write(if csv { "big.csv" } else { "big.ndjson" }, text.as_bytes())
}

fn resume_without_loss_or_duplicates(csv: bool) {
    let env = Env::new();
    let rows = 1_000;
    let p = resumable_file(&env, csv, rows);
    let mut opts = env.opts();
    opts.chunk_items = 64;
    // "Crash" after 3 chunks, then after 2 more, then finish.
    opts.max_chunks = Some(3);
    let first = process_file(&env.pipeline, &p, &opts, &no_progress).expect("first");
    assert_eq!(first.status, FileStatus::Interrupted);
    assert_eq!(first.summary.received, 192);
    let fp = first.fingerprint.clone();
    let cp = env
        .writer
        .handle()
        .call(move |s| s.file_checkpoint(&fp))
        .expect("checkpoint")
        .expect("exists");
    assert_eq!(cp.state, FileState::Reading);
    assert_eq!(cp.byte_offset, first.byte_offset);
    assert_eq!(cp.rows_ok + cp.rows_rejected, 192);
    assert!(first.rejected_file.is_none(), "report only when done");

    opts.max_chunks = Some(2);
    let second = process_file(&env.pipeline, &p, &opts, &no_progress).expect("second");
    assert_eq!(second.status, FileStatus::Interrupted);
    assert_eq!(second.resumed_from, first.byte_offset);
    assert_eq!(second.summary.received, 128);

    opts.max_chunks = None;
    let last = process_file(&env.pipeline, &p, &opts, &no_progress).expect("last");
    assert_eq!(last.status, FileStatus::Done);
    assert_eq!(last.resumed_from, second.byte_offset);
    let received = first.summary.received + second.summary.received + last.summary.received;
    assert_eq!(received, rows as u64, "every row read exactly once");
    let queued = first.summary.queued + second.summary.queued + last.summary.queued;
    assert_eq!(queued, 900);
    assert_eq!(
        first.summary.coalesced + second.summary.coalesced + last.summary.coalesced,
        0,
        "no row committed twice"
    );
    assert_eq!((last.rows_ok, last.rows_rejected), (900, 100));
    assert_eq!(env.pending("vip"), 900);
    assert_eq!(env.dead_letters(), 100, "dead letters exactly once");
    let with_lines = env
        .writer
        .handle()
        .call(|s| {
            s.dead_letters(&DeadLetterFilter {
                limit: 1_000,
                ..Default::default()
            })
        })
        .expect("dead letters");
    assert_eq!(with_lines.len(), 100);
    // The report gathers the rejections of all three runs, each line once.
    let report = std::fs::read_to_string(last.rejected_file.expect("report")).unwrap();
    let mut lines: Vec<u64> = report
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let n = lines.len();
    lines.dedup();
    assert_eq!((n, lines.len()), (100, 100));
    let header = u64::from(csv);
    let expected: Vec<u64> = (0..rows as u64)
        .filter(|i| i % 10 == 9)
        .map(|i| i + 1 + header)
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn interrupted_ndjson_resumes_without_loss_or_duplicates() {
    resume_without_loss_or_duplicates(false);
}

#[test]
fn interrupted_csv_resumes_without_loss_or_duplicates() {
    resume_without_loss_or_duplicates(true);
}

#[test]
fn stop_check_interrupts_between_chunks() {
    let env = Env::new();
    let p = resumable_file(&env, false, 300);
    let mut opts = env.opts();
    opts.chunk_items = 100;
    opts.should_stop = Some(std::sync::Arc::new(|| true));
    let r = process_file(&env.pipeline, &p, &opts, &no_progress).expect("process");
    assert_eq!((r.status, r.chunks), (FileStatus::Interrupted, 1));
    opts.should_stop = None;
    let r = process_file(&env.pipeline, &p, &opts, &no_progress).expect("resume");
    assert_eq!((r.status, r.summary.received), (FileStatus::Done, 200));
}

fn drop_opts(env: &Env) -> FolderOptions {
    let mut o = FolderOptions::new(env.path("drop"));
    o.chunk_items = 100;
    o
}

#[test]
fn drop_file_moves_to_processed_with_timestamp_on_collision_or_is_deleted() {
    let env = Env::new();
    let opts = drop_opts(&env);
    std::fs::create_dir_all(&opts.dir).unwrap();
    let write = |content: &str| {
        let p = opts.dir.join("vip.csv");
        std::fs::write(&p, content).unwrap();
        p
    };
    let p = write("user_id,email\nu1,a@example.com\n");
    let DropOutcome::Processed { moved_to, report } =
        process_drop_file(&env.pipeline, &p, &opts, None).expect("first")
    else {
        panic!("not processed")
    };
    assert_eq!(report.summary.queued, 1);
    assert_eq!(moved_to, Some(opts.dir.join("processed/vip.csv")));
    assert!(!p.exists());
    let p = write("user_id,email\nu2,b@example.com\n");
    let DropOutcome::Processed { moved_to, .. } =
        process_drop_file(&env.pipeline, &p, &opts, None).expect("second")
    else {
        panic!("not processed")
    };
    let name = moved_to
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("vip.") && name.ends_with("Z.csv"),
        "{name}"
    );
    assert_eq!(
        std::fs::read_to_string(opts.dir.join("processed/vip.csv")).unwrap(),
        "user_id,email\nu1,a@example.com\n",
        "the earlier file is not overwritten"
    );
    let mut del = opts.clone();
    del.delete_processed = true;
    let p = write("user_id,email\nu3,c@example.com\n");
    let DropOutcome::Processed { moved_to, .. } =
        process_drop_file(&env.pipeline, &p, &del, None).expect("third")
    else {
        panic!("not processed")
    };
    assert_eq!(moved_to, None);
    assert!(!p.exists());
    assert_eq!(env.pending("vip"), 3);
}

#[test]
fn unparseable_files_go_to_failed_with_an_error_report() {
    let env = Env::new();
    let opts = drop_opts(&env);
    std::fs::create_dir_all(&opts.dir).unwrap();
    for (name, content, code) in [
        ("broken.json", "{\"batch\": [ canary-4711", "json_syntax"),
        (
            "noid.csv",
            "email,name\ncanary@example.com,x\n",
            "csv_missing_id_column",
        ),
    ] {
        let p = opts.dir.join(name);
        std::fs::write(&p, content).unwrap();
        let out = process_drop_file(&env.pipeline, &p, &opts, None).expect(name);
        let DropOutcome::Failed {
            code: got,
            moved_to,
            ..
        } = out
        else {
            panic!("{name}: {out:?}")
        };
        assert_eq!(got, code);
        assert_eq!(moved_to, opts.dir.join("failed").join(name));
        assert!(!p.exists());
        let report = std::fs::read_to_string(opts.dir.join(format!("failed/{name}.error.json")))
            .expect("error report");
        let v: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(v["code"], code);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!report.contains("canary"), "{report}");
    }
    assert_eq!(env.pending("vip"), 0);
}

#[test]
fn store_failure_leaves_the_file_in_place() {
    let env = Env::new();
    let opts = drop_opts(&env);
    std::fs::create_dir_all(&opts.dir).unwrap();
    let p = opts.dir.join("vip.csv");
    std::fs::write(&p, "user_id,email\nu1,a@example.com\n").unwrap();
    let Env {
        dir: _dir,
        writer,
        pipeline,
    } = env;
    writer.shutdown().expect("shutdown"); // every later commit fails
    let err = process_drop_file(&pipeline, &p, &opts, None).expect_err("must fail");
    assert!(err.is_retryable(), "{err}");
    assert!(p.exists(), "an uncommitted file is never moved");
    assert!(!opts.dir.join("failed/vip.csv").exists());
    assert!(!opts.dir.join("processed/vip.csv").exists());
}

#[test]
fn folder_options_follow_the_config() {
    let cfg = Config::from_toml_str("delete_processed_files = true\n", "t.toml").unwrap();
    let o = FolderOptions::from_config(&cfg, Path::new("/data"));
    assert_eq!(o.dir, Path::new("/data/drop"));
    assert!(o.delete_processed);
    assert_eq!(o.settle, folder::DEFAULT_SETTLE);
}
