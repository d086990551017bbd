//! The watched drop folder (`ingest::folder::spawn`): real `notify` events,
//! a real SQLite file and the real pipeline. Settle interval 200 ms.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amc_sync::agent::pipeline::Pipeline;
use amc_sync::config::Config;
use amc_sync::ingest::folder::{self, FolderOptions};
use amc_sync::store::{Store, Writer};

const CONFIG: &str = r#"
[[audiences]]
key = "vip"
advertiser_id = 585806696618602999
country_code = "US"
"#;

struct Env {
    _dir: tempfile::TempDir,
    drop: PathBuf,
    writer: Writer,
    pipeline: Arc<Pipeline>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("amc-sync.db")).expect("store");
    let writer = Writer::spawn(store).expect("writer");
    let cfg = Config::from_toml_str(CONFIG, "t.toml").expect("config");
    let pipeline = Arc::new(Pipeline::new(&cfg, writer.handle()).expect("pipeline"));
    let drop = dir.path().join("drop");
    Env {
        _dir: dir,
        drop,
        writer,
        pipeline,
    }
}

fn opts(dir: &Path) -> FolderOptions {
    let mut o = FolderOptions::new(dir);
    o.settle = Duration::from_millis(200);
    o.retry_initial = Duration::from_millis(100);
    o
}

fn csv(users: std::ops::Range<usize>) -> String {
    let mut s = String::from("user_id,email\n");
    for i in users {
        s.push_str(&format!("u{i},u{i}@example.com\n"));
    }
    s
}

fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn pending(env: &Env) -> u64 {
    env.writer
        .handle()
        .call(|s| s.pending_counts())
        .expect("counts")
        .get("vip")
        .copied()
        .unwrap_or(0)
}

fn stop(tx: &tokio::sync::watch::Sender<bool>, handle: std::thread::JoinHandle<()>) {
    let t = Instant::now();
    tx.send(true).expect("send shutdown");
    handle.join().expect("watcher thread");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn watcher_processes_old_and_new_files_ignores_partial_names_and_fails_bad_ones() {
    let env = env();
    std::fs::create_dir_all(&env.drop).unwrap();
    // Left from before the start: picked up by the start-up scan.
    std::fs::write(env.drop.join("vip.csv"), csv(0..5)).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let h = folder::spawn(Arc::clone(&env.pipeline), opts(&env.drop), rx).expect("spawn");
    for sub in ["processed", "rejected", "failed"] {
        assert!(env.drop.join(sub).is_dir(), "{sub}/ created");
    }
    let processed = env.drop.join("processed");
    wait_for("the leftover file", Duration::from_secs(10), || {
        processed.join("vip.csv").exists()
    });
    assert_eq!(pending(&env), 5);

    // Dropped after the start, under a temporary name first.
    let part = env.drop.join("late.vip.csv.part");
    std::fs::write(&part, csv(5..8)).unwrap();
    std::fs::write(env.drop.join(".hidden.csv"), csv(100..101)).unwrap();
    std::fs::write(env.drop.join("notes.txt"), "not data").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(part.exists(), "a .part file is never read");
    assert_eq!(pending(&env), 5);
    std::fs::rename(&part, env.drop.join("late.csv")).unwrap();
    wait_for("the renamed file", Duration::from_secs(10), || {
        processed.join("late.csv").exists()
    });
    assert!(!env.drop.join("late.csv").exists());
    // late.csv's audience comes from its name: "late" is unknown → dead letters.
    // Use an audience_key column for the next one instead.
    std::fs::write(
        env.drop.join("more.csv"),
        "user_id,email,audience_key\nu9,u9@example.com,vip\nbad id,x@example.com,vip\n",
    )
    .unwrap();
    wait_for("more.csv", Duration::from_secs(10), || {
        processed.join("more.csv").exists()
    });
    assert_eq!(pending(&env), 6);
    let report = env.drop.join("rejected/more.csv.errors.ndjson");
    let text = std::fs::read_to_string(&report).expect("rejected report");
    assert!(text.contains("\"line\":3"), "{text}");
    assert!(text.contains("invalid_external_user_id"), "{text}");

    // Unparseable: failed/ with its error report.
    std::fs::write(env.drop.join("broken.json"), "{\"batch\": [").unwrap();
    wait_for("broken.json in failed/", Duration::from_secs(10), || {
        env.drop.join("failed/broken.json.error.json").exists()
            && env.drop.join("failed/broken.json").exists()
    });
    // Ignored names stay untouched.
    assert!(env.drop.join(".hidden.csv").exists());
    assert!(env.drop.join("notes.txt").exists());
    stop(&tx, h);
}

#[test]
fn watcher_waits_for_a_growing_file_to_settle() {
    let env = env();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut o = opts(&env.drop);
    o.settle = Duration::from_millis(300);
    let h = folder::spawn(Arc::clone(&env.pipeline), o, rx).expect("spawn");
    let path = env.drop.join("vip.csv");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"user_id,email\n").unwrap();
        // Append a row every 50 ms for about a second: never still for 300 ms.
        for i in 0..20 {
            writeln!(f, "u{i},u{i}@example.com").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    wait_for("the finished file", Duration::from_secs(10), || {
        env.drop.join("processed/vip.csv").exists()
    });
    assert_eq!(pending(&env), 20, "read only once complete");
    stop(&tx, h);
}

#[test]
fn watcher_leaves_files_in_place_while_the_store_fails() {
    let env = env();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let Env {
        _dir,
        drop,
        writer,
        pipeline,
    } = env;
    writer.shutdown().expect("shutdown");
    let h = folder::spawn(pipeline, opts(&drop), rx).expect("spawn");
    std::fs::write(drop.join("vip.csv"), csv(0..3)).unwrap();
    std::thread::sleep(Duration::from_millis(1_200));
    assert!(drop.join("vip.csv").exists());
    assert!(!drop.join("processed/vip.csv").exists());
    assert!(!drop.join("failed/vip.csv").exists());
    stop(&tx, h);
}

#[test]
fn dropping_the_shutdown_sender_stops_the_watcher() {
    let env = env();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let h = folder::spawn(Arc::clone(&env.pipeline), opts(&env.drop), rx).expect("spawn");
    drop(tx);
    let t = Instant::now();
    h.join().expect("join");
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Actions of the pending `vip` changes.
fn pending_actions(env: &Env) -> Vec<amc_sync::model::Action> {
    env.writer
        .handle()
        .call(|s| s.pending_batch("vip", 100_000, 0))
        .expect("batch")
        .into_iter()
        .map(|r| r.action)
        .collect()
}

#[test]
fn redropped_and_renamed_copies_of_a_file_are_each_read() {
    // Regression: the fingerprint ignored the file name and a `done` file was
    // skipped, so `vip.remove.csv` (a copy with the same mtime and content as
    // `vip.csv`) silently queued nothing.
    let env = env();
    let o = opts(&env.drop);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = folder::spawn(env.pipeline.clone(), o, rx).expect("spawn");
    let original = env.drop.parent().expect("parent").join("list.csv");
    std::fs::write(&original, csv(0..20)).expect("write");
    let copy_in = |name: &str| {
        let tmp = env.drop.join(format!(".{name}.tmp"));
        std::fs::copy(&original, &tmp).expect("copy");
        let mtime = std::fs::metadata(&original)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
            .expect("keep mtime");
        std::fs::rename(&tmp, env.drop.join(name)).expect("rename");
    };
    copy_in("vip.csv");
    wait_for("vip.csv processed", Duration::from_secs(20), || {
        env.drop.join("processed/vip.csv").exists()
    });
    assert_eq!(pending(&env), 20);
    copy_in("vip.remove.csv");
    wait_for("vip.remove.csv processed", Duration::from_secs(20), || {
        env.drop.join("processed/vip.remove.csv").exists()
    });
    let actions = pending_actions(&env);
    assert_eq!(actions.len(), 20);
    assert!(
        actions
            .iter()
            .all(|a| *a == amc_sync::model::Action::Delete),
        "{actions:?}"
    );
    // The same file dropped again (identical name, content and mtime) is read again.
    copy_in("vip.csv");
    wait_for(
        "vip.csv re-dropped and processed",
        Duration::from_secs(20),
        || !env.drop.join("vip.csv").exists(),
    );
    let actions = pending_actions(&env);
    assert!(
        actions
            .iter()
            .all(|a| *a == amc_sync::model::Action::Create),
        "{actions:?}"
    );
    stop(&tx, handle);
}

#[test]
fn a_file_that_grows_after_a_pause_loses_no_rows() {
    // Regression: a producer pausing longer than the settle time, then writing
    // on through its open handle, had the rest of its rows lost: the file was
    // moved to processed/ half-read and never looked at again.
    let env = env();
    let o = opts(&env.drop);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = folder::spawn(env.pipeline.clone(), o, rx).expect("spawn");
    let path = env.drop.join("vip.csv");
    let all = csv(0..400);
    let cut = all[..all.len() / 2].rfind('\n').map_or(0, |i| i + 1);
    use std::io::Write;
    let mut producer = std::fs::File::create(&path).expect("create");
    producer
        .write_all(&all.as_bytes()[..cut])
        .expect("first half");
    producer.flush().expect("flush");
    // The first half is read and the file moved while the producer pauses.
    wait_for("first half processed", Duration::from_secs(20), || {
        env.drop.join("processed/vip.csv").exists()
    });
    assert!(pending(&env) < 400);
    producer
        .write_all(&all.as_bytes()[cut..])
        .expect("second half");
    producer.flush().expect("flush");
    drop(producer);
    wait_for("late rows committed", Duration::from_secs(30), || {
        pending(&env) == 400
    });
    stop(&tx, handle);
}
