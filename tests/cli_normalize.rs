//! `amc-sync normalize`, run as the real binary.

use assert_cmd::Command;

fn amc() -> Command {
    Command::cargo_bin("amc-sync").expect("binary built")
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn prints_normalized_value_and_sha256() {
    let s = stdout(amc().args([
        "normalize",
        "--field",
        "email",
        "--country",
        "US",
        " John.Doe@Example.COM ",
    ]));
    assert!(s.contains("normalized: john.doe@example.com"), "{s}");
    assert!(
        s.contains("sha256:     836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f"),
        "{s}"
    );
}

#[test]
fn segment_profile_and_amazon_hashedpii_key() {
    let s = stdout(amc().args([
        "normalize",
        "--field",
        "postal",
        "--country",
        "US",
        "--profile",
        "segment",
        "--json",
        "94105-1234",
    ]));
    let v: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert_eq!(v["normalized"], "941051234");
    assert_eq!(v["field"], "postal");
    assert_eq!(v["profile"], "segment");
}

#[test]
fn says_why_a_field_is_omitted() {
    let s = stdout(amc().args([
        "normalize",
        "--field",
        "phone",
        "--country",
        "US",
        "+1 415 555",
    ]));
    assert!(s.starts_with("omitted:"), "{s}");
    assert!(s.contains("invalid_value"), "{s}");
}

#[test]
fn ndjson_adds_normalized_and_sha256_and_null_when_omitted() {
    let input = concat!(
        "{\"country\":\"GB\",\"field\":\"phone\",\"raw\":\"020 7946 0958\",\"id\":7}\n",
        "\n",
        "{\"country\":\"JP\",\"field\":\"last_name\",\"raw\":\"山田\"}\n",
        "{\"country\":\"US\",\"field\":\"zip\",\"raw\":\"94105-1234\"}\n",
    );
    let out = amc()
        .args(["normalize", "--ndjson"])
        .write_stdin(input)
        .assert()
        .success();
    let s = String::from_utf8(out.get_output().stdout.clone()).expect("utf-8");
    let lines: Vec<serde_json::Value> = s
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["normalized"], "442079460958");
    assert_eq!(lines[0]["id"], 7, "other members are kept");
    assert_eq!(
        lines[0]["sha256"],
        "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"
    );
    assert_eq!(lines[1]["normalized"], "");
    assert!(lines[1]["sha256"].is_null());
    assert_eq!(lines[2]["normalized"], "94105");
}

#[test]
fn unknown_field_country_or_profile_exit_2_with_a_clear_message() {
    for args in [
        ["normalize", "--field", "ssn", "--country", "US", "x"],
        ["normalize", "--field", "email", "--country", "XX", "x"],
        ["normalize", "--field", "email", "--profile", "google", "x"],
    ] {
        let out = amc().args(args).assert().code(2);
        let err = String::from_utf8(out.get_output().stderr.clone()).expect("utf-8");
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn bad_ndjson_line_exits_2_naming_the_line_not_its_content() {
    let input = "{\"country\":\"US\",\"field\":\"email\",\"raw\":\"a@b.co\"}\n{\"raw\":\"canary-secret@example.com\"\n";
    let out = amc()
        .args(["normalize", "--ndjson"])
        .write_stdin(input)
        .assert()
        .code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).expect("utf-8");
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("canary-secret"), "{err}");
}

#[test]
fn help_lists_examples() {
    let s = stdout(amc().args(["normalize", "--help"]));
    assert!(s.contains("Examples:"), "{s}");
    assert!(s.contains("--ndjson"), "{s}");
}

// Regression tests for the first new-user review of `normalize`.

#[test]
fn ndjson_write_error_exits_1_not_0() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full");
        return;
    };
    let line = "{\"country\":\"US\",\"field\":\"email\",\"raw\":\"a@b.co\"}\n".repeat(5000);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("amc-sync"))
        .args(["normalize", "--ndjson"])
        .stdin(std::process::Stdio::piped())
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(line.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn text_mode_write_error_does_not_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full");
        return;
    };
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("amc-sync"))
        .args(["normalize", "--field", "email", "a@b.co"])
        .stdout(full)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn unquoted_value_is_not_echoed_in_usage_errors() {
    let out = amc()
        .args(["normalize", "--field", "last_name", "Canary", "Secretname"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!err.contains("Secretname"), "{err}");
    assert!(err.contains("quote"), "{err}");
}

#[test]
fn ndjson_bad_field_is_reported_without_its_value_and_other_lines_go_on() {
    let input = "{\"field\":\"canary@secret.example\",\"raw\":\"x\"}\n{\"field\":\"zip\",\"raw\":\"94105\"}\n";
    let out = amc()
        .args(["normalize", "--ndjson"])
        .write_stdin(input)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("canary"), "{err}");
    let s = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(s.contains("\"normalized\":\"94105\""), "{s}");
}

#[test]
fn ndjson_accepts_bom_numbers_null_and_default_country() {
    let input = "\u{feff}{\"field\":\"zip\",\"country\":\"US\",\"raw\":94105}\n{\"field\":\"email\",\"raw\":null}\n{\"field\":\"phone\",\"raw\":\"020 7946 0958\"}\n";
    let out = amc()
        .args(["normalize", "--ndjson", "--country", "GB"])
        .write_stdin(input)
        .assert()
        .success();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["normalized"], "94105");
    assert!(lines[1]["sha256"].is_null());
    assert_eq!(lines[1]["omitted"], "empty_input");
    assert_eq!(
        lines[2]["normalized"], "442079460958",
        "--country is the default"
    );
}

#[test]
fn value_dash_reads_from_stdin() {
    let s = stdout(
        amc()
            .args(["normalize", "--field", "email", "-"])
            .write_stdin("Jane@X.com\n"),
    );
    assert!(s.contains("normalized: jane@x.com"), "{s}");
}
