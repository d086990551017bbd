//! `amc-sync config check`, run as the real binary.

use assert_cmd::Command;

fn check(toml: &str) -> assert_cmd::assert::Assert {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    Command::cargo_bin("amc-sync")
        .expect("binary")
        .env_remove("AMC_SYNC_CONFIG")
        .args(["config", "check", "--json", "--config"])
        .arg(&path)
        .assert()
}

#[test]
fn valid_config_prints_a_summary() {
    let out = check("region = \"FE\"\n[[audiences]]\nkey = \"vip\"\nconnection_id = \"c1\"\ncountry_code = \"JP\"\n")
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["region"], "FE");
    assert_eq!(v["apiBaseUrl"], "https://advertising-api-fe.amazon.com");
    assert_eq!(v["audiences"][0], "vip");
}

#[test]
fn invalid_config_exits_2_with_line_and_column() {
    let out = check("region = \"NA\"\n\nschedule = 3\n").code(2);
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["line"], 3);
}

#[test]
fn secrets_in_the_file_are_refused_without_echoing_them() {
    let out = check("refresh_token = \"Atzr|canary-token\"\n").code(2);
    let s = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(s.contains("amc-sync login"), "{s}");
    assert!(!s.contains("canary-token"), "{s}");
}
