//! The Amazon client against the in-process sandbox, over real loopback HTTP.

use std::time::{Duration, Instant, SystemTime};

use amc_sync::amazon::{
    AmazonClient, ApiError, AudienceFee, AudienceMetadata, AudienceRequest, ClientOptions,
    Credentials, Digits, JobState, Record, Secret, TargetResource, encode_records_body,
};
use amc_sync::model::{Action, AmznConsent, Consent, ConsentValue, Geo, HashedPii, UserConsent};
use amc_sync::sandbox::{self, Faults, Sandbox, SandboxOptions};

fn client(sb: &Sandbox) -> AmazonClient {
    AmazonClient::new(
        &ClientOptions::for_base_url(&sb.base_url()),
        sb.credentials(),
    )
    .unwrap()
}

fn audience_request(advertiser: &str) -> AudienceRequest {
    AudienceRequest {
        name: "High value customers".into(),
        description: "From the CRM".into(),
        target_resource: TargetResource::AdvertiserId(Digits::parse(advertiser).unwrap()),
        country_code: "US".into(),
        metadata: AudienceMetadata {
            external_audience_id: "high_value".into(),
            ttl: Some(34_300_800),
            audience_fees: Some(vec![AudienceFee {
                currency: "USD".into(),
                cpm_cents: 150,
            }]),
        },
    }
}

fn rec(i: usize) -> Record {
    Record {
        external_user_id: format!("user_{i}"),
        country_code: Some("US".into()),
        action: if i.is_multiple_of(3) {
            Action::Delete
        } else {
            Action::Create
        },
        hashed_pii: vec![HashedPii {
            email: Some(format!("{:064x}", i + 1)),
            phone: Some(format!("{:064x}", i + 1_000_000)),
            firstname: Some(format!("{:064x}", i + 2_000_000)),
            lastname: Some(format!("{:064x}", i + 3_000_000)),
            postal: Some(format!("{:064x}", i + 4_000_000)),
            ..Default::default()
        }],
        user_consent: None,
    }
}

fn eu_rec(i: usize) -> Record {
    Record {
        country_code: Some("DE".into()),
        user_consent: Some(UserConsent {
            geo: Geo {
                country_code: "DE".into(),
                ip_address: Some("192.0.2.7".into()),
            },
            consent: Some(Consent {
                amzn: Some(AmznConsent {
                    amzn_ad_storage: Some(ConsentValue::Granted),
                    amzn_user_data: Some(ConsentValue::Granted),
                }),
                tcf: None,
                gpp: None,
            }),
        }),
        ..rec(i)
    }
}

#[tokio::test]
async fn profiles_are_listed_and_the_token_is_cached() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    for _ in 0..3 {
        let profiles = c.list_profiles().await.unwrap();
        assert_eq!(profiles.len(), 2);
        // > 2^53: exact digits.
        assert_eq!(profiles[0].profile_id.as_str(), "9007199254740993");
        assert_eq!(profiles[1].profile_id.as_str(), "3074457345618258602");
        assert_eq!(
            profiles[0].account_info.marketplace_string_id,
            "ATVPDKIKX0DER"
        );
    }
    assert_eq!(sb.stats().token_refreshes, 1);
    assert_eq!(c.tokens().refresh_count(), 1);
}

#[tokio::test]
async fn audience_metadata_create_get_update_with_big_ids() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    let req = audience_request("18446744073709551615");
    let created = c.create_audience(&req).await.unwrap();
    // The sandbox issues ids above 2^63; they come back digit-exact.
    assert_eq!(created.audience_id.as_str(), "9223372036854775907");
    assert_eq!(created.external_audience_id, "high_value");
    // The advertiserId reached the sandbox as a bare number, exact.
    let stored = sb.audiences();
    let a = &stored["9223372036854775907"];
    assert_eq!(
        a["targetResource"]["advertiserId"].as_u64(),
        Some(u64::MAX),
        "{a}"
    );
    assert_eq!(a["metadata"]["audienceFees"][0]["cpmCents"], 150);

    let got = c.get_audience(&created.audience_id).await.unwrap();
    assert_eq!(got.audience_id, created.audience_id);
    assert_eq!(got.name, "High value customers");
    assert_eq!(
        got.target_resource,
        Some(TargetResource::AdvertiserId(
            Digits::parse("18446744073709551615").unwrap()
        ))
    );

    let mut upd = req.clone();
    upd.description = "Updated".into();
    upd.target_resource = TargetResource::ConnectionId("amc-connection-1".into());
    c.update_audience(&created.audience_id, &upd).await.unwrap();
    let got = c.get_audience(&created.audience_id).await.unwrap();
    assert_eq!(got.description, "Updated");
    assert_eq!(
        got.target_resource,
        Some(TargetResource::ConnectionId("amc-connection-1".into()))
    );

    // A second audience gets the next id; 2^53 + 1 advertiser stays exact.
    let created2 = c
        .create_audience(&audience_request("9007199254740993"))
        .await
        .unwrap();
    assert_eq!(created2.audience_id.as_str(), "9223372036854775908");
    assert_eq!(
        sb.audiences()["9223372036854775908"]["targetResource"]["advertiserId"].as_u64(),
        Some(9_007_199_254_740_993)
    );

    // Unknown audience → 404 → Permanent.
    let err = c
        .get_audience(&Digits::parse("123").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Permanent { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_side_validation_refuses_bad_audiences_without_sending() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    let mut r = audience_request("1");
    r.name = "short".into();
    assert!(matches!(
        c.create_audience(&r).await,
        Err(ApiError::InvalidRequest { .. })
    ));
    let mut r = audience_request("1");
    r.metadata.ttl = Some(34_300_801);
    assert!(c.create_audience(&r).await.is_err());
    let mut r = audience_request("1");
    r.metadata.audience_fees = Some(vec![AudienceFee {
        currency: "CHF".into(),
        cpm_cents: 1,
    }]);
    assert!(c.create_audience(&r).await.is_err());
    assert_eq!(sb.stats().api_requests, 0);
}

#[tokio::test]
async fn records_round_trip_with_bare_digit_audience_id_and_job_polling() {
    let sb = sandbox::start(SandboxOptions {
        keep_raw_bodies: true,
        job_pending_polls: 2,
        ..Default::default()
    })
    .await;
    let c = client(&sb);
    let aud = c
        .create_audience(&audience_request("9007199254740993"))
        .await
        .unwrap()
        .audience_id;
    let records = vec![rec(1), rec(2), eu_rec(3)];
    let job = c.upload_records(&aud, &records).await.unwrap();

    let raw = sb.raw_bodies();
    assert_eq!(raw.len(), 1);
    let text = std::str::from_utf8(&raw[0]).unwrap();
    assert!(
        text.starts_with("{\"audienceId\":9223372036854775907,\"records\":["),
        "{}",
        &text[..60]
    );

    let received = sb.received();
    let got: Vec<Record> = received[aud.as_str()]
        .iter()
        .map(|r| {
            assert_eq!(r.job_request_id, job);
            r.record.clone()
        })
        .collect();
    assert_eq!(got, records);

    for expected in [JobState::Pending, JobState::Pending, JobState::Succeeded] {
        let st = c.job_status(&job).await.unwrap();
        assert_eq!(st.job_state, expected);
        assert!(st.invalid_records.is_empty());
    }
    assert!(JobState::Succeeded.is_terminal() && !JobState::Pending.is_terminal());
}

#[tokio::test]
async fn invalid_users_end_partially_succeeded_and_failed_jobs_keep_nothing() {
    let sb = sandbox::start(SandboxOptions {
        job_pending_polls: 0,
        ..Default::default()
    })
    .await;
    let c = client(&sb);
    let aud = c
        .create_audience(&audience_request("42"))
        .await
        .unwrap()
        .audience_id;
    let mut bad = rec(2);
    bad.external_user_id = "invalid_2".into();
    let job = c.upload_records(&aud, &[rec(1), bad]).await.unwrap();
    let st = c.job_status(&job).await.unwrap();
    assert_eq!(st.job_state, JobState::PartiallySucceeded);
    assert_eq!(st.invalid_records.len(), 1);
    assert_eq!(st.invalid_records[0].external_id, "invalid_2");
    assert_eq!(sb.received()[aud.as_str()].len(), 1);

    sb.update_faults(|f| f.fail_jobs = 1);
    let job = c.upload_records(&aud, &[rec(5)]).await.unwrap();
    assert_eq!(
        c.job_status(&job).await.unwrap().job_state,
        JobState::Failed
    );
    assert_eq!(sb.received()[aud.as_str()].len(), 1);
}

#[tokio::test]
async fn invalid_records_get_400_with_amazons_message() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    let aud = c
        .create_audience(&audience_request("42"))
        .await
        .unwrap()
        .audience_id;
    let mut r = rec(1);
    r.hashed_pii[0].email = Some("A".repeat(64)); // uppercase: not a digest
    let err = c.upload_records(&aud, &[rec(0), r]).await.unwrap_err();
    match &err {
        ApiError::InvalidRequest { message } => {
            assert!(message.contains("records[1]"), "{message}");
            assert!(message.contains("64 lowercase hex"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut r = rec(1);
    r.external_user_id = "has space".into();
    assert!(matches!(
        c.upload_records(&aud, &[r]).await,
        Err(ApiError::InvalidRequest { .. })
    ));
    // 0 and 10,001 records are refused before sending.
    assert!(matches!(
        c.upload_records(&aud, &[]).await,
        Err(ApiError::InvalidRequest { .. })
    ));
    let many: Vec<Record> = (0..10_001).map(rec).collect();
    assert!(matches!(
        c.upload_records(&aud, &many).await,
        Err(ApiError::InvalidRequest { .. })
    ));
    // Unknown audience → 404.
    let err = c
        .upload_records(&Digits::parse("77").unwrap(), &[rec(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApiError::Permanent { status: 404, .. }),
        "{err:?}"
    );
    assert!(sb.received().is_empty());
}

#[tokio::test]
async fn ten_thousand_record_body_is_valid_and_accepted() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    let aud = c
        .create_audience(&audience_request("42"))
        .await
        .unwrap()
        .audience_id;
    let records: Vec<Record> = (0..10_000usize)
        .map(|i| {
            if i.is_multiple_of(4) {
                eu_rec(i)
            } else {
                rec(i)
            }
        })
        .collect();
    let t = Instant::now();
    let body = encode_records_body(&aud, &records);
    let took = t.elapsed();
    eprintln!(
        "encoded 10,000 records: {} bytes in {:?} (debug build)",
        body.len(),
        took
    );
    assert_eq!(
        body.len(),
        amc_sync::amazon::body_encoded_len(&aud, &records)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 10_000);
    let job = c.upload_records_body(body).await.unwrap();
    assert!(!job.is_empty());
    assert_eq!(sb.received_count(), 10_000);
    assert_eq!(sb.received()[aud.as_str()][9_999].record, records[9_999]);
}

#[tokio::test]
async fn token_expiry_causes_exactly_one_refresh() {
    let sb = sandbox::start(SandboxOptions {
        token_ttl: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let c = client(&sb);
    c.list_profiles().await.unwrap();
    c.list_profiles().await.unwrap();
    assert_eq!(sb.stats().token_refreshes, 1);
    // The 60 s margin is clamped to half the 2 s lifetime: refresh after 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.list_profiles().await.unwrap();
    c.list_profiles().await.unwrap();
    assert_eq!(sb.stats().token_refreshes, 2);
    assert_eq!(sb.stats().unauthorized, 0);
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let c = c.clone();
        set.spawn(async move { c.list_profiles().await.map(|p| p.len()) });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 2);
    }
    assert_eq!(sb.stats().token_refreshes, 1);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_then_reports_unauthorized() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    c.list_profiles().await.unwrap();
    sb.update_faults(|f| f.expire_tokens = 1);
    c.list_profiles().await.unwrap();
    assert_eq!(sb.stats().token_refreshes, 2);
    sb.update_faults(|f| f.expire_tokens = 2);
    let err = c.list_profiles().await.unwrap_err();
    assert!(matches!(err, ApiError::Unauthorized { .. }), "{err:?}");
    assert_eq!(sb.stats().token_refreshes, 3);
    // Recovered afterwards.
    c.list_profiles().await.unwrap();
}

#[tokio::test]
async fn rate_limits_carry_retry_after_seconds_or_date() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    sb.set_faults(Faults {
        rate_limit: 1,
        retry_after: Some("7".into()),
        ..Default::default()
    });
    let err = c.list_profiles().await.unwrap_err();
    assert_eq!(
        err,
        ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(err.is_retryable());
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    sb.set_faults(Faults {
        rate_limit: 1,
        retry_after: Some(date),
        ..Default::default()
    });
    let d = c.list_profiles().await.unwrap_err().retry_after().unwrap();
    assert!(
        d > Duration::from_secs(27) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    sb.set_faults(Faults {
        rate_limit: 1,
        ..Default::default()
    });
    assert_eq!(
        c.list_profiles().await.unwrap_err(),
        ApiError::RateLimited { retry_after: None }
    );
    c.list_profiles().await.unwrap();
}

#[tokio::test]
async fn server_errors_resets_and_timeouts_are_retryable() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let mut opts = ClientOptions::for_base_url(&sb.base_url());
    opts.timeout = Duration::from_millis(500);
    let c = AmazonClient::new(&opts, sb.credentials()).unwrap();
    let aud = c
        .create_audience(&audience_request("42"))
        .await
        .unwrap()
        .audience_id;

    sb.update_faults(|f| f.server_error = 1);
    let err = c.upload_records(&aud, &[rec(1)]).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Retryable(ref m) if m.contains("503")),
        "{err:?}"
    );

    sb.update_faults(|f| {
        f.server_error = 1;
        f.server_error_status = 500;
    });
    assert!(matches!(
        c.job_status("x-1").await,
        Err(ApiError::Retryable(_))
    ));

    sb.update_faults(|f| f.reset = 1);
    let err = c.upload_records(&aud, &[rec(1)]).await.unwrap_err();
    assert!(matches!(err, ApiError::Retryable(_)), "{err:?}");
    eprintln!("reset: {err}");

    sb.update_faults(|f| {
        f.delay = 1;
        f.delay_ms = 2_000;
    });
    let err = c.list_profiles().await.unwrap_err();
    assert!(
        matches!(err, ApiError::Retryable(ref m) if m.contains("timeout")),
        "{err:?}"
    );

    // Nothing from the faulted uploads was kept; a clean retry lands.
    assert!(sb.received().is_empty());
    c.upload_records(&aud, &[rec(1)]).await.unwrap();
    assert_eq!(sb.received_count(), 1);
}

#[tokio::test]
async fn invalid_grant_means_needs_login() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let c = client(&sb);
    sb.update_faults(|f| f.invalid_grant = 1);
    let err = c.list_profiles().await.unwrap_err();
    assert!(matches!(err, ApiError::NeedsLogin { .. }), "{err:?}");
    assert_eq!(err.code(), "needs_login");
    c.list_profiles().await.unwrap();

    let mut creds = sb.credentials();
    creds.refresh_token = Secret::new("Atzr|revoked");
    let c2 = AmazonClient::new(&ClientOptions::for_base_url(&sb.base_url()), creds).unwrap();
    assert!(matches!(
        c2.list_profiles().await,
        Err(ApiError::NeedsLogin { .. })
    ));
}

#[tokio::test]
async fn canary_secrets_never_appear_in_debug_or_errors() {
    const CANARY_SECRET: &str = "CANARY-client-secret-6f1e";
    const CANARY_REFRESH: &str = "Atzr|CANARY-refresh-93ab";
    let sb = sandbox::start(SandboxOptions {
        client_secret: Some(CANARY_SECRET.into()),
        refresh_token: Some(CANARY_REFRESH.into()),
        ..Default::default()
    })
    .await;
    let mut texts = Vec::new();
    let good = client(&sb);
    let token = good.tokens().access_token().await.unwrap();
    texts.push(format!("{good:?} {good:#?} {:?}", sb.credentials()));
    texts.push(format!("{token:?}"));
    // Wrong secret → invalid_client; wrong refresh token → invalid_grant.
    for creds in [
        Credentials {
            client_secret: Secret::new("CANARY-wrong-secret-1111"),
            ..sb.credentials()
        },
        Credentials {
            refresh_token: Secret::new("Atzr|CANARY-wrong-refresh-2222"),
            ..sb.credentials()
        },
    ] {
        let c = AmazonClient::new(&ClientOptions::for_base_url(&sb.base_url()), creds).unwrap();
        let err = c.list_profiles().await.unwrap_err();
        texts.push(format!("{err} {err:?} {c:?}"));
    }
    // A rejected access token (401 twice).
    sb.update_faults(|f| f.expire_tokens = 2);
    let err = good.list_profiles().await.unwrap_err();
    texts.push(format!("{err} {err:?} {good:?}"));
    // Transport errors.
    sb.update_faults(|f| f.reset = 1);
    let err = good.list_profiles().await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    for t in &texts {
        assert!(!t.contains("CANARY"), "secret leaked: {t}");
        assert!(!t.contains(token.expose()), "access token leaked: {t}");
    }
}

#[tokio::test]
async fn region_options_and_config_use_the_right_hosts() {
    use amc_sync::config::{Config, Region};
    let o = ClientOptions::for_region(Region::EU);
    assert_eq!(o.api_base_url, "https://advertising-api-eu.amazon.com");
    assert_eq!(o.token_url, "https://api.amazon.co.uk/auth/o2/token");
    let cfg = Config {
        api_base_url: Some("http://127.0.0.1:9".into()),
        ..Config::default()
    };
    let o = ClientOptions::from_config(&cfg);
    assert_eq!(o.api_base_url, "http://127.0.0.1:9");
    assert_eq!(o.token_url, "http://127.0.0.1:9/auth/o2/token");
    // A refused connection is retryable.
    let c = AmazonClient::new(
        &o,
        Credentials {
            client_id: "x".into(),
            client_secret: Secret::new("y"),
            refresh_token: Secret::new("z"),
        },
    )
    .unwrap();
    assert!(matches!(
        c.list_profiles().await,
        Err(ApiError::Retryable(_))
    ));
}
