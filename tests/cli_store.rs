//! `amc-sync status`, `audiences`, `dead-letters` on a real data dir.

use assert_cmd::Command;

fn amc(data: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("amc-sync").expect("binary");
    c.env_remove("AMC_SYNC_CONFIG")
        .env("AMC_SYNC_DATA_DIR", data)
        .env("HOME", data); // no user config file is read
    c
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("json output")
}

#[test]
fn status_on_a_fresh_data_dir_creates_nothing() {
    // Regression: a mistyped --data-dir used to create a new data dir and write key.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("typo");
    let v = json(amc(&data).args(["status", "--json"]));
    assert_eq!(v["initialized"], false);
    assert_eq!(v["agentRunning"], false);
    assert!(!data.exists(), "status must not create the data dir");
}

#[test]
fn status_reads_beside_the_lock_without_taking_it() {
    // Regression: `status` took the agent's exclusive lock, so an agent
    // starting during a status loop failed with "another agent is running".
    let dir = tempfile::tempdir().expect("tempdir");
    amc(dir.path())
        .args([
            "audiences",
            "create",
            "--key",
            "k",
            "--advertiser-id",
            "1",
            "--country",
            "US",
            "--description",
            "d",
        ])
        .assert()
        .success();
    std::fs::write(
        dir.path().join("agent.json"),
        r#"{"writeKey":"abc","adminToken":"def"}"#,
    )
    .expect("state");
    // Hold the lock like a running agent would.
    let store = amc_sync::store::Store::open(dir.path().join("amc-sync.db")).expect("lock");
    let v = json(amc(dir.path()).args(["status", "--json"]));
    assert_eq!(v["agentRunning"], true);
    assert_eq!(v["writeKey"], "abc");
    assert_eq!(v["pending"]["k"], 0);
    drop(store);
    let v = json(amc(dir.path()).args(["status", "--json"]));
    assert_eq!(v["agentRunning"], false);
}

#[test]
fn audiences_create_then_list_keeps_big_advertiser_ids_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    amc(dir.path())
        .args([
            "audiences",
            "create",
            "--key",
            "vip",
            "--advertiser-id",
            "123456789012345678901",
            "--country",
            "de",
            "--description",
            "VIP customers",
            "--ttl",
            "86400",
        ])
        .assert()
        .success();
    let list = json(amc(dir.path()).args(["audiences", "list", "--json"]));
    assert_eq!(list[0]["key"], "vip");
    assert_eq!(list[0]["country_code"], "DE");
    assert_eq!(list[0]["target"]["advertiser_id"], "123456789012345678901");
    // Same key again: a clear usage error.
    amc(dir.path())
        .args([
            "audiences",
            "create",
            "--key",
            "vip",
            "--connection-id",
            "c",
            "--country",
            "US",
            "--description",
            "x",
        ])
        .assert()
        .code(2);
}

#[test]
fn audiences_create_validates_before_touching_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [
        vec!["--advertiser-id", "12x", "--country", "US"],
        vec!["--advertiser-id", "1", "--country", "XX"],
        vec![
            "--advertiser-id",
            "1",
            "--country",
            "US",
            "--cpm-cents",
            "5",
            "--currency",
            "BTC",
        ],
        vec![
            "--advertiser-id",
            "1",
            "--country",
            "US",
            "--ttl",
            "34300801",
        ],
    ] {
        let mut args = vec!["audiences", "create", "--key", "k", "--description", "d"];
        args.extend(bad);
        amc(dir.path()).args(&args).assert().code(2);
    }
}

#[test]
fn dead_letters_list_on_an_empty_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = json(amc(dir.path()).args(["dead-letters", "list", "--json"]));
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn audiences_set_id_repoints_or_forgets_the_amazon_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    amc(dir.path())
        .args([
            "audiences",
            "create",
            "--key",
            "k",
            "--advertiser-id",
            "1",
            "--country",
            "US",
            "--description",
            "d",
        ])
        .assert()
        .success();
    amc(dir.path())
        .args([
            "audiences",
            "set-id",
            "--key",
            "k",
            "--audience-id",
            "9007199254740993",
        ])
        .assert()
        .success();
    let list = json(amc(dir.path()).args(["audiences", "list", "--json"]));
    assert_eq!(list[0]["audience_id"], "9007199254740993");
    amc(dir.path())
        .args(["audiences", "set-id", "--key", "k", "--clear"])
        .assert()
        .success();
    let list = json(amc(dir.path()).args(["audiences", "list", "--json"]));
    assert!(list[0]["audience_id"].is_null());
    amc(dir.path())
        .args(["audiences", "set-id", "--key", "nope", "--clear"])
        .assert()
        .code(2);
}
