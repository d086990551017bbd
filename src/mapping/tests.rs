//! Unit tests of `mapping` (run with `cargo test --lib mapping`).

use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::pii::sha256_hex;

const NOW: i64 = 1_800_000_000_000;
const CANARY: &str = "canary.zz9plural@example.com";

fn ctx() -> MapContext<'static> {
    MapContext::new(Profile::Amazon, NOW)
}

fn map(msg: &Value) -> Outcome {
    MappingSet::default().map(msg, &ctx())
}

fn mapped(msg: &Value) -> Mapped {
    match map(msg) {
        Outcome::Mapped { mapped, .. } => *mapped,
        other => panic!("expected Mapped, got {other:?}"),
    }
}

fn rejected(msg: &Value) -> MappingError {
    match map(msg) {
        Outcome::Rejected { error, .. } => error,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// A minimal Engage track event (US, one email).
fn track(event: &str, flag: Value) -> Value {
    json!({
        "type": "track",
        "event": event,
        "userId": "u123",
        "messageId": "m-1",
        "timestamp": "2026-11-01T00:00:00Z",
        "properties": {"audience_key": "vip", "vip": flag},
        "context": {
            "traits": {"email": "Someone@Example.com"},
            "personas": {"computation_key": "vip", "computation_class": "audience"}
        }
    })
}

fn identify(traits: Value) -> Value {
    json!({
        "type": "identify",
        "userId": "u456",
        "messageId": "m-2",
        "timestamp": "2026-11-01T00:00:00+00:00",
        "traits": traits,
        "context": {"personas": {"computation_key": "vip", "computation_class": "audience"}}
    })
}

fn read_sample(name: &str) -> Option<Vec<Value>> {
    let path = Path::new("/work/shared/samples").join(name);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: sample {} not found", path.display());
        return None;
    };
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1))
            })
            .collect(),
    )
}

// --- samples ---------------------------------------------------------------

#[test]
fn samples_engage_track_every_line_maps() {
    let Some(lines) = read_sample("engage-track.ndjson") else {
        return;
    };
    let set = MappingSet::default();
    let (mut creates, mut deletes, mut eea) = (0, 0, 0);
    for (i, msg) in lines.iter().enumerate() {
        let out = set.map(msg, &ctx());
        let Outcome::Mapped { mapped, mapping } = out else {
            panic!("line {}: {out:?}", i + 1);
        };
        assert_eq!(mapping, 0, "track events use the first default mapping");
        let c = &mapped.change;
        let key = msg["properties"]["audience_key"].as_str().unwrap();
        assert_eq!(c.audience_key, key);
        assert_eq!(mapped.audience.key, key);
        assert_eq!(c.external_user_id, msg["userId"].as_str().unwrap());
        let want = match msg["event"].as_str() {
            Some("Audience Entered") => Action::Create,
            _ => Action::Delete,
        };
        assert_eq!(c.action, want, "line {}", i + 1);
        assert_eq!(
            msg["properties"][key].as_bool(),
            Some(want == Action::Create)
        );
        match c.action {
            Action::Create => creates += 1,
            Action::Delete => deletes += 1,
        }
        let personas = &msg["context"]["personas"];
        assert_eq!(
            mapped.audience.external_audience_id.as_deref(),
            personas["external_audience_id"].as_str()
        );
        assert_eq!(
            mapped
                .audience
                .settings
                .as_ref()
                .and_then(|s| s.get("countryCode")),
            Some(&personas["audience_settings"]["countryCode"])
        );
        assert_eq!(
            c.country_code,
            personas["audience_settings"]["countryCode"]
                .as_str()
                .unwrap()
        );
        assert_eq!(
            c.hashed_pii.email.as_deref(),
            Some(
                sha256_hex(
                    &msg["context"]["traits"]["email"]
                        .as_str()
                        .unwrap()
                        .to_lowercase()
                )
                .as_str()
            )
        );
        if c.country_code == "US" {
            assert!(c.hashed_pii.firstname.is_some() && c.hashed_pii.lastname.is_some());
        }
        assert_eq!(
            Some(c.event_time_ms),
            time::parse_timestamp_ms(msg["timestamp"].as_str().unwrap())
        );
        if Country::parse(&c.country_code).unwrap().requires_consent() {
            eea += 1;
            let consent = c.user_consent.as_ref().expect("EEA records carry consent");
            assert_eq!(consent.geo.country_code, c.country_code);
            assert!(consent.consent.as_ref().unwrap().amzn.is_some());
        } else {
            assert!(c.user_consent.is_none(), "line {}", i + 1);
        }
    }
    assert_eq!(creates + deletes, lines.len());
    assert!(
        creates > 0 && deletes > 0 && eea > 0,
        "{creates} {deletes} {eea}"
    );
}

#[test]
fn samples_engage_track_known_line_hashes() {
    let Some(lines) = read_sample("engage-track.ndjson") else {
        return;
    };
    // Line 1: uus0000000, Lori Davis, stacie60@example.org, Thomasville 40934, US.
    let m = mapped(&lines[0]);
    let h = &m.change.hashed_pii;
    assert_eq!(m.change.external_user_id, "uus0000000");
    assert_eq!(m.change.action, Action::Create);
    assert_eq!(m.change.audience_key, "order_completed_last_30days");
    assert_eq!(m.change.country_code, "US");
    assert_eq!(m.change.event_time_ms, 1_793_491_200_000);
    assert_eq!(h.email, Some(sha256_hex("stacie60@example.org")));
    assert_eq!(h.firstname, Some(sha256_hex("lori")));
    assert_eq!(h.lastname, Some(sha256_hex("davis")));
    assert_eq!(h.city, Some(sha256_hex("thomasville")));
    assert_eq!(h.postal, Some(sha256_hex("40934")));
    assert_eq!(
        h.state,
        pii::normalize(Profile::Amazon, pii::Field::State, Country::US, "Oregon").into_sha256()
    );
    assert_eq!(
        m.audience.external_audience_id.as_deref(),
        Some("379909525712777677")
    );
    // Line 2: a German exit with Amazon Consent Signal.
    let m = mapped(&lines[1]);
    assert_eq!(m.change.external_user_id, "ude0000000");
    assert_eq!(m.change.action, Action::Delete);
    assert_eq!(m.change.country_code, "DE");
    assert_eq!(
        m.change.hashed_pii.email,
        Some(sha256_hex("edwardsalz@example.net"))
    );
    assert_eq!(m.change.hashed_pii.firstname, Some(sha256_hex("felicia")));
    assert_eq!(
        serde_json::to_value(&m.change.user_consent).unwrap(),
        json!({"geo": {"countryCode": "DE"},
               "consent": {"amzn": {"amznAdStorage": "GRANTED", "amznUserData": "GRANTED"}}})
    );
}

#[test]
fn samples_engage_identify_every_line_maps() {
    let Some(lines) = read_sample("engage-identify.ndjson") else {
        return;
    };
    let lookup = |key: &str| (key == "vip_customers").then_some(Country::US);
    let c = ctx().with_audience_country(&lookup);
    let set = MappingSet::default();
    let (mut creates, mut deletes) = (0, 0);
    for (i, msg) in lines.iter().enumerate() {
        let out = set.map(msg, &c);
        let Outcome::Mapped { mapped, mapping } = out else {
            panic!("line {}: {out:?}", i + 1);
        };
        assert_eq!(mapping, 1, "identify events use the second default mapping");
        let ch = &mapped.change;
        assert_eq!(ch.audience_key, "vip_customers");
        assert_eq!(ch.country_code, "US", "from the caller's audience lookup");
        assert_eq!(ch.external_user_id, msg["userId"].as_str().unwrap());
        let flag = msg["traits"]["vip_customers"].as_bool().unwrap();
        assert_eq!(
            ch.action,
            if flag { Action::Create } else { Action::Delete }
        );
        if flag {
            creates += 1
        } else {
            deletes += 1
        }
        assert_eq!(
            ch.hashed_pii.email,
            Some(sha256_hex(
                &msg["traits"]["email"].as_str().unwrap().to_lowercase()
            ))
        );
        assert!(mapped.audience.external_audience_id.is_none());
        assert!(mapped.audience.settings.is_none());
    }
    assert!(creates > 0 && deletes > 0);
    // Known line 1: uus0900000, Tonya Cobb, flag false.
    let m = match set.map(&lines[0], &c) {
        Outcome::Mapped { mapped, .. } => mapped,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.change.action, Action::Delete);
    assert_eq!(
        m.change.hashed_pii.email,
        Some(sha256_hex("stephanie60@example.com"))
    );
    assert_eq!(m.change.hashed_pii.firstname, Some(sha256_hex("tonya")));
    assert_eq!(m.change.hashed_pii.lastname, Some(sha256_hex("cobb")));
    assert_eq!(m.change.event_time_ms, 1_793_491_200_000);
    // Without any country default the record is UNKNOWN (still valid).
    assert_eq!(mapped(&lines[0]).change.country_code, "UNKNOWN");
}

#[test]
fn samples_batch_json_items_map() {
    let path = Path::new("/work/shared/samples/batch.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let body: Value = serde_json::from_str(&text).unwrap();
    let items = body["batch"].as_array().unwrap();
    for (i, msg) in items.iter().enumerate() {
        let m = mapped(msg);
        assert_eq!(m.change.country_code, "GB", "item {i}");
        let consent = m
            .change
            .user_consent
            .as_ref()
            .unwrap()
            .consent
            .as_ref()
            .unwrap();
        assert!(consent.tcf.is_some(), "item {i}");
    }
}

// --- membership ----------------------------------------------------------

#[test]
fn membership_flags_strings_and_event_fallback() {
    let a = |m: &Value| mapped(m).change.action;
    assert_eq!(a(&track("Audience Entered", json!(true))), Action::Create);
    assert_eq!(a(&track("Audience Exited", json!(false))), Action::Delete);
    assert_eq!(a(&track("Audience Entered", json!("true"))), Action::Create);
    assert_eq!(
        a(&track("Audience Exited", json!(" FALSE "))),
        Action::Delete
    );
    // No flag: the event name decides.
    assert_eq!(a(&track("Audience Entered", Value::Null)), Action::Create);
    assert_eq!(a(&track("Audience Exited", Value::Null)), Action::Delete);
    let mut no_prop = track("Audience Exited", Value::Null);
    no_prop["properties"].as_object_mut().unwrap().remove("vip");
    assert_eq!(a(&no_prop), Action::Delete);
    // A custom trigger for a non-Engage event: the flag alone decides.
    let set = MappingSet::new(vec![Mapping {
        trigger: Trigger::parse(r#"event = "Journey Step""#).unwrap(),
        ..Mapping::default()
    }])
    .unwrap();
    let out = set.map(&track("Journey Step", json!("false")), &ctx());
    assert!(
        matches!(&out, Outcome::Mapped { mapped, .. } if mapped.change.action == Action::Delete),
        "{out:?}"
    );
    let out = set.map(&track("Journey Step", Value::Null), &ctx());
    assert_eq!(out.reason_code(), Some("no_membership_signal"));
}

#[test]
fn membership_contradiction_and_invalid_flags_are_rejected() {
    let e = rejected(&track("Audience Exited", json!(true)));
    assert_eq!(e.code(), "membership_contradiction");
    assert_eq!(
        e,
        MappingError::MembershipContradiction {
            location: FlagLocation::Properties,
            flag: Action::Create,
            event: Action::Delete
        }
    );
    assert_eq!(
        rejected(&track("Audience Entered", json!("false"))).code(),
        "membership_contradiction"
    );
    for bad in [json!("yes"), json!(1), json!({"x": 1}), json!([true])] {
        assert_eq!(
            rejected(&track("Audience Entered", bad)).code(),
            "invalid_membership_flag"
        );
    }
}

#[test]
fn membership_identify_traits_then_context_traits() {
    let m = mapped(&identify(json!({"vip": true, "email": "x@example.com"})));
    assert_eq!(m.change.action, Action::Create);
    assert_eq!(m.change.external_user_id, "u456");
    assert_eq!(m.change.hashed_pii.email, Some(sha256_hex("x@example.com")));
    // Flag in context.traits only.
    let mut msg = identify(json!({"email": "x@example.com"}));
    msg["context"]["traits"] = json!({"vip": "false"});
    assert_eq!(mapped(&msg).change.action, Action::Delete);
    // traits wins over context.traits.
    msg["traits"]["vip"] = json!(true);
    assert_eq!(mapped(&msg).change.action, Action::Create);
    // No flag anywhere: identify has no event name to fall back on.
    assert_eq!(
        rejected(&identify(json!({"email": "x@example.com"}))).code(),
        "no_membership_signal"
    );
    // camelCase and address-object traits are read by default.
    let m = mapped(&identify(json!({
        "vip": true, "firstName": "Ann", "lastName": "Lee",
        "address": {"street": "1 Main St", "city": "Springfield", "postal_code": "12345"}
    })));
    let h = &m.change.hashed_pii;
    assert_eq!(h.firstname, Some(sha256_hex("ann")));
    assert_eq!(h.lastname, Some(sha256_hex("lee")));
    assert_eq!(h.city, Some(sha256_hex("springfield")));
    assert!(h.address.is_some());
}

// --- audience --------------------------------------------------------------

#[test]
fn audience_key_sources_and_external_id() {
    let mut msg = track("Audience Entered", json!(true));
    msg["context"]["personas"]["external_audience_id"] = json!("12345678901234567890");
    msg["context"]["personas"]["audience_settings"] = json!({"countryCode": "US"});
    let m = mapped(&msg);
    assert_eq!(
        m.audience.external_audience_id.as_deref(),
        Some("12345678901234567890")
    );
    assert_eq!(
        m.audience.settings,
        json!({"countryCode": "US"}).as_object().cloned()
    );
    // Large integers survive without f64.
    msg["context"]["personas"]["external_audience_id"] = json!(18_446_744_073_709_551_615u64);
    assert_eq!(
        mapped(&msg).audience.external_audience_id.as_deref(),
        Some("18446744073709551615")
    );
    for bad in [json!(1.5), json!("12a"), json!(-3), json!(true)] {
        msg["context"]["personas"]["external_audience_id"] = bad;
        assert_eq!(rejected(&msg).code(), "invalid_external_audience_id");
    }
    // properties.audience_key when computation_key is absent.
    let mut msg = track("Audience Entered", json!(true));
    msg["context"]["personas"] = json!({});
    assert_eq!(mapped(&msg).change.audience_key, "vip");
    msg["properties"]
        .as_object_mut()
        .unwrap()
        .remove("audience_key");
    assert_eq!(rejected(&msg).code(), "missing_audience_key");
}

// --- identifiers, country, consent ---------------------------------------

#[test]
fn external_user_id_rules() {
    let mut msg = track("Audience Entered", json!(true));
    msg["userId"] = json!(12345);
    assert_eq!(mapped(&msg).change.external_user_id, "12345");
    for (v, code) in [
        (Value::Null, "missing_external_user_id"),
        (json!(""), "missing_external_user_id"),
        (json!("a b"), "invalid_external_user_id"),
        (json!(CANARY), "invalid_external_user_id"),
        (json!({"id": 1}), "invalid_external_user_id"),
        (json!("x".repeat(129)), "invalid_external_user_id"),
    ] {
        msg["userId"] = v;
        assert_eq!(rejected(&msg).code(), code);
    }
    msg.as_object_mut().unwrap().remove("userId");
    assert_eq!(rejected(&msg).code(), "missing_external_user_id");
}

#[test]
fn country_precedence_and_validation() {
    let lookup = |_: &str| Some(Country::parse("CA").unwrap_or(Country::US));
    let with_lookup = ctx()
        .with_audience_country(&lookup)
        .with_default_country(Country::US);
    let set = MappingSet::default();
    let country = |msg: &Value, c: &MapContext<'_>| match set.map(msg, c) {
        Outcome::Mapped { mapped, .. } => mapped.change.country_code,
        other => panic!("{other:?}"),
    };
    let mut msg = track("Audience Entered", json!(true));
    assert_eq!(country(&msg, &ctx()), "UNKNOWN");
    assert_eq!(
        country(&msg, &ctx().with_default_country(Country::US)),
        "US"
    );
    assert_eq!(country(&msg, &with_lookup), "CA");
    msg["context"]["personas"]["audience_settings"] = json!({"countryCode": "jp"});
    assert_eq!(country(&msg, &with_lookup), "JP");
    msg["properties"]["country_code"] = json!("MX");
    assert_eq!(country(&msg, &with_lookup), "MX");
    msg["properties"]["country_code"] = json!("Mexico");
    assert_eq!(
        set.map(&msg, &with_lookup).reason_code(),
        Some("invalid_country_code")
    );
    msg["properties"]["country_code"] = json!(52);
    assert_eq!(
        set.map(&msg, &with_lookup).reason_code(),
        Some("invalid_country_code")
    );
    msg["properties"]["country_code"] = json!("");
    assert_eq!(
        country(&msg, &with_lookup),
        "JP",
        "a blank value is skipped"
    );
}

#[test]
fn consent_eea_without_signal_is_rejected() {
    let mut msg = track("Audience Entered", json!(true));
    msg["properties"]["country_code"] = json!("DE");
    assert_eq!(rejected(&msg).code(), "consent_required");
    msg["properties"]["amznAdStorage"] = json!("GRANTED");
    assert_eq!(
        rejected(&msg).code(),
        "consent_required",
        "half a pair is no signal"
    );
    msg["properties"]["amznUserData"] = json!("maybe");
    assert_eq!(rejected(&msg).code(), "invalid_consent_value");
    msg["properties"]["amznUserData"] = json!(true);
    assert_eq!(rejected(&msg).code(), "invalid_consent_value");
    msg["properties"]["amznUserData"] = json!("denied");
    msg["context"]["ip"] = json!("192.0.2.7");
    let uc = mapped(&msg).change.user_consent.unwrap();
    assert_eq!(uc.geo.ip_address.as_deref(), Some("192.0.2.7"));
    // gpp alone is enough; GB and CH need consent too.
    let mut msg = track("Audience Entered", json!(true));
    msg["properties"]["country_code"] = json!("CH");
    assert_eq!(rejected(&msg).code(), "consent_required");
    msg["properties"]["gpp"] = json!("DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA");
    assert!(
        mapped(&msg)
            .change
            .user_consent
            .unwrap()
            .consent
            .unwrap()
            .gpp
            .is_some()
    );
    // Identify: consent read from traits.
    let mut msg = identify(json!({"vip": true, "email": "a@b.de", "country_code": "FR"}));
    assert_eq!(rejected(&msg).code(), "consent_required");
    msg["traits"]["tcf"] = json!("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA");
    assert_eq!(mapped(&msg).change.country_code, "FR");
}

#[test]
fn pii_values_numbers_objects_and_no_identifiers() {
    let mut msg = track("Audience Entered", json!(true));
    msg["context"]["traits"] = json!({});
    assert_eq!(rejected(&msg).code(), "no_identifiers");
    msg["properties"]["email"] = json!("not an email");
    assert_eq!(
        rejected(&msg).code(),
        "no_identifiers",
        "invalid email is omitted"
    );
    msg["properties"]["first_name"] = json!({"nested": "Ann"});
    msg["properties"]["last_name"] = json!(["Lee"]);
    msg["properties"]["city"] = json!(true);
    assert_eq!(rejected(&msg).code(), "no_identifiers");
    msg["properties"]["postal"] = json!(12345);
    let ctx_us = ctx().with_default_country(Country::US);
    let out = MappingSet::default().map(&msg, &ctx_us);
    let Outcome::Mapped { mapped: m, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        m.change.hashed_pii.postal,
        pii::normalize(Profile::Amazon, pii::Field::Postal, Country::US, "12345").into_sha256()
    );
    assert!(m.change.hashed_pii.postal.is_some());
    // Already-hashed values pass through.
    let h = sha256_hex("a@b.com");
    let mut msg = track("Audience Entered", json!(true));
    msg["context"]["traits"]["email"] = json!(h.to_uppercase());
    assert_eq!(mapped(&msg).change.hashed_pii.email, Some(h));
}

#[test]
fn segment_profile_is_used_for_hashing() {
    let mut msg = track("Audience Entered", json!(true));
    msg["properties"]["phone"] = json!("+1 (415) 555-0100");
    let seg = MapContext::new(Profile::Segment, NOW);
    let out = MappingSet::default().map(&msg, &seg);
    let Outcome::Mapped { mapped, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        mapped.change.hashed_pii.phone,
        Some(sha256_hex("14155550100"))
    );
}

// --- message types, triggers, time, ids ---------------------------------

#[test]
fn non_audience_and_unknown_types() {
    for t in ["page", "screen", "group", "alias"] {
        let out = map(&json!({"type": t, "userId": "u"}));
        assert_eq!(
            out,
            Outcome::Ignored(Ignored::NonAudienceType { message_type: t })
        );
        assert_eq!(out.reason_code(), Some("non_audience_type"));
    }
    assert_eq!(
        map(&json!({"type": "bogus"})).reason_code(),
        Some("unsupported_message_type")
    );
    assert_eq!(
        map(&json!({"userId": "u"})).reason_code(),
        Some("invalid_message")
    );
    assert_eq!(map(&json!([1, 2])).reason_code(), Some("invalid_message"));
    assert_eq!(map(&json!("str")).reason_code(), Some("invalid_message"));
    let out = map(&track("Order Completed", json!(true)));
    assert_eq!(out, Outcome::Ignored(Ignored::NoMatchingTrigger));
    assert_eq!(out.reason_code(), Some("no_matching_trigger"));
}

#[test]
fn first_matching_mapping_wins() {
    let custom: MappingSet = serde_json::from_value(json!([
        {"name": "work email", "trigger": "event = 'Audience Entered' and type = 'track'",
         "fields": {"email": {"@path": "$.properties.work_email"}},
         "batch_size": 6000, "enable_batching": false},
        {}
    ]))
    .unwrap();
    assert_eq!(custom.mappings().len(), 2);
    assert_eq!(custom.get(0).unwrap().batch_size.get(), 6000);
    assert!(!custom.get(0).unwrap().enable_batching);
    assert_eq!(custom.get(1).unwrap().batch_size.get(), 10_000);
    assert!(custom.get(1).unwrap().enable_batching);
    let mut msg = track("Audience Entered", json!(true));
    msg["properties"]["work_email"] = json!("w@corp.example");
    match custom.map(&msg, &ctx()) {
        Outcome::Mapped { mapped, mapping } => {
            assert_eq!(mapping, 0);
            assert_eq!(
                mapped.change.hashed_pii.email,
                Some(sha256_hex("w@corp.example"))
            );
        }
        other => panic!("{other:?}"),
    }
    match custom.map(&track("Audience Exited", json!(false)), &ctx()) {
        Outcome::Mapped { mapped, mapping } => {
            assert_eq!(mapping, 1);
            assert_eq!(
                mapped.change.hashed_pii.email,
                Some(sha256_hex("someone@example.com"))
            );
        }
        other => panic!("{other:?}"),
    }
    // A rejection reports which mapping matched.
    let out = custom.map(&track("Audience Exited", json!(true)), &ctx());
    assert!(
        matches!(
            out,
            Outcome::Rejected {
                mapping: Some(1),
                ..
            }
        ),
        "{out:?}"
    );
}

#[test]
fn mapping_config_validation() {
    let too_many: Vec<Mapping> = (0..=MAX_MAPPINGS).map(|_| Mapping::default()).collect();
    assert_eq!(
        MappingSet::new(too_many.clone()),
        Err(MappingConfigError::TooManyMappings { count: 51 })
    );
    assert!(MappingSet::new(too_many[..50].to_vec()).is_ok());
    assert_eq!(MappingSet::new(vec![]), Err(MappingConfigError::NoMappings));
    let err = serde_json::from_value::<MappingSet>(json!([])).unwrap_err();
    assert!(err.to_string().contains("at least one mapping"), "{err}");
    for bad in [0u64, 1_499, 10_001, u64::MAX] {
        assert!(BatchSize::new(bad).is_err(), "{bad}");
        let err = serde_json::from_value::<Mapping>(json!({"batch_size": bad})).unwrap_err();
        assert!(
            err.to_string().contains("batch_size must be between"),
            "{err}"
        );
    }
    assert_eq!(BatchSize::new(1_500).map(BatchSize::get), Ok(1_500));
    let err = serde_json::from_value::<Mapping>(json!({"trigger": "event = "})).unwrap_err();
    assert!(err.to_string().contains("column"), "{err}");
    let err = serde_json::from_value::<Mapping>(json!({"fields": {"email": {"@template": "x"}}}))
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported mapping directive"),
        "{err}"
    );
    assert!(serde_json::from_value::<Mapping>(json!({"fields": {"ssn": "x"}})).is_err());
    assert!(serde_json::from_value::<Mapping>(json!({"trigerr": "x"})).is_err());
    // Round trip of the defaults.
    let v = serde_json::to_value(MappingSet::default()).unwrap();
    let back: MappingSet = serde_json::from_value(v).unwrap();
    assert_eq!(back, MappingSet::default());
}

#[test]
fn default_field_sources_are_all_directives() {
    let f = FieldSources::default();
    for s in [
        &f.external_user_id,
        &f.email,
        &f.phone,
        &f.first_name,
        &f.last_name,
        &f.address,
        &f.city,
        &f.state,
        &f.postal,
        &f.country,
        &f.ip,
        &f.amzn_ad_storage,
        &f.amzn_user_data,
        &f.tcf,
        &f.gpp,
    ] {
        assert!(!matches!(s, Source::Literal(_)), "{s:?}");
    }
    // email follows the Segment destination: context.traits, then properties, then traits.
    let m = json!({"context": {"traits": {"email": "c"}}, "properties": {"email": "p"}, "traits": {"email": "t"}});
    assert_eq!(f.email.resolve(&m), Some(&json!("c")));
    let m = json!({"properties": {"email": "p"}, "traits": {"email": "t"}});
    assert_eq!(f.email.resolve(&m), Some(&json!("p")));
    let m = json!({"traits": {"email": "t"}});
    assert_eq!(f.email.resolve(&m), Some(&json!("t")));
    // names: properties, then traits, then context.traits.
    let m = json!({"traits": {"first_name": "t"}, "context": {"traits": {"firstName": "c"}}});
    assert_eq!(f.first_name.resolve(&m), Some(&json!("t")));
    assert_eq!(
        f.postal.resolve(&json!({"properties": {"zip": "z"}})),
        Some(&json!("z"))
    );
    assert_eq!(
        f.ip.resolve(&json!({"context": {"ip": "1"}})),
        Some(&json!("1"))
    );
}

#[test]
fn event_time_fallbacks() {
    let mut msg = track("Audience Entered", json!(true));
    msg["timestamp"] = json!("not a time");
    msg["receivedAt"] = json!("2026-11-01T00:00:01.500Z");
    msg["sentAt"] = json!("2026-11-01T00:00:02Z");
    assert_eq!(mapped(&msg).change.event_time_ms, 1_793_491_201_500);
    msg.as_object_mut().unwrap().remove("receivedAt");
    assert_eq!(mapped(&msg).change.event_time_ms, 1_793_491_202_000);
    msg.as_object_mut().unwrap().remove("sentAt");
    assert_eq!(mapped(&msg).change.event_time_ms, NOW);
    assert_eq!(event_time_ms(&json!({"timestamp": 5}), 7), 7);
}

#[test]
fn message_id_helper() {
    assert_eq!(message_id(&json!({"messageId": "abc"})), Some("abc"));
    assert_eq!(message_id(&json!({"messageId": ""})), None);
    assert_eq!(message_id(&json!({"messageId": 5})), None);
    assert_eq!(message_id(&json!({})), None);
}

// --- privacy -------------------------------------------------------------

#[test]
fn canary_never_appears_in_errors_or_debug() {
    let local = CANARY.split('@').next().unwrap_or(CANARY);
    let base = || {
        let mut m = track("Audience Entered", json!(true));
        for k in [
            "email",
            "first_name",
            "last_name",
            "address",
            "city",
            "phone",
            "postal",
            "state",
        ] {
            m["properties"][k] = json!(CANARY);
        }
        m["context"]["traits"]["email"] = json!(CANARY);
        m["context"]["ip"] = json!(CANARY);
        m
    };
    let mut variants: Vec<Value> = Vec::new();
    variants.push(base()); // mapped
    let mut v = base();
    v["userId"] = json!(CANARY);
    variants.push(v);
    let mut v = base();
    v["properties"]["country_code"] = json!(CANARY);
    variants.push(v);
    let mut v = base();
    v["properties"]["country_code"] = json!("DE");
    variants.push(v.clone());
    v["properties"]["amznAdStorage"] = json!(CANARY);
    v["properties"]["amznUserData"] = json!(CANARY);
    variants.push(v);
    let mut v = base();
    v["properties"]["vip"] = json!(CANARY);
    variants.push(v);
    let mut v = base();
    v["event"] = json!("Audience Exited");
    variants.push(v);
    let mut v = base();
    v["context"]["personas"]["external_audience_id"] = json!(CANARY);
    variants.push(v);
    let mut v = base();
    v["context"]["personas"]["computation_key"] = json!(null);
    v["properties"]["audience_key"] = json!(null);
    variants.push(v);
    let mut v = base();
    v["type"] = json!(CANARY);
    variants.push(v);
    let mut codes = std::collections::BTreeSet::new();
    for (i, msg) in variants.iter().enumerate() {
        let out = map(msg);
        let dbg = format!("{out:?} {out:#?}");
        assert!(!dbg.contains(local), "variant {i}: {dbg}");
        if let Outcome::Rejected { error, .. } = &out {
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(local), "variant {i}: {shown}");
            codes.insert(error.code());
        } else {
            codes.insert("mapped");
        }
    }
    assert!(codes.len() >= 8, "exercise many paths: {codes:?}");
}

// --- robustness ----------------------------------------------------------

mod prop {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::{MappingSet, Trigger, time};
    use super::ctx;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("track"),
                Just("identify"),
                Just("page"),
                Just("Audience Entered"),
                Just("Audience Exited"),
                Just("true"),
                Just("false"),
                Just("vip"),
                Just("DE"),
                Just("US"),
                Just("GRANTED"),
                Just("a@b.com"),
                Just("2026-11-01T00:00:00Z"),
            ]
            .prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let keys = prop_oneof![
            Just("type"),
            Just("event"),
            Just("userId"),
            Just("properties"),
            Just("traits"),
            Just("context"),
            Just("personas"),
            Just("computation_key"),
            Just("audience_key"),
            Just("vip"),
            Just("email"),
            Just("country_code"),
            Just("timestamp"),
            Just("external_audience_id"),
            Just("audience_settings"),
            Just("amznAdStorage"),
            Just("amznUserData"),
            Just("phone"),
            Just("address"),
        ];
        leaf().prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(keys.clone().prop_map(String::from), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn map_never_panics_and_always_has_a_code(msg in value()) {
            let out = MappingSet::default().map(&msg, &ctx());
            let mapped = matches!(out, super::Outcome::Mapped { .. });
            prop_assert!(mapped || out.reason_code().is_some());
        }

        #[test]
        fn trigger_parser_and_time_never_panic(s in "\\PC{0,40}") {
            let _ = Trigger::parse(&s);
            let _ = time::parse_timestamp_ms(&s);
        }

        #[test]
        fn trigger_parser_never_panics_on_fql_like_text(
            s in "[()= !'\"a-z\\\\ ]{0,30}"
        ) {
            if let Err(e) = Trigger::parse(&s) {
                prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1);
            }
        }
    }
}
