//! The sandbox validates raw requests as strictly as Amazon.

use amc_sync::amazon::{AUDIENCES_MEDIA_TYPE, AmazonClient, ClientOptions};
use amc_sync::sandbox::{self, Sandbox, SandboxOptions};
use base64::Engine as _;
use sha2::Digest;

const HEX: &str = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3";

struct Raw {
    http: reqwest::Client,
    base: String,
    token: String,
    client_id: String,
}

async fn raw(sb: &Sandbox) -> Raw {
    let c = AmazonClient::new(
        &ClientOptions::for_base_url(&sb.base_url()),
        sb.credentials(),
    )
    .unwrap();
    let token = c
        .tokens()
        .access_token()
        .await
        .unwrap()
        .expose()
        .to_string();
    Raw {
        http: reqwest::Client::new(),
        base: sb.base_url(),
        token,
        client_id: sb.client_id().to_string(),
    }
}

impl Raw {
    async fn post(&self, path: &str, ct: &str, body: String) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Amazon-Advertising-API-ClientId", &self.client_id)
            .header("Content-Type", ct)
            .header("Accept", AUDIENCES_MEDIA_TYPE)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    async fn create_audience(&self) -> String {
        let (s, v) = self
            .post(
                "/amc/audiences/metadata",
                AUDIENCES_MEDIA_TYPE,
                r#"{"name":"Sandbox audience","description":"d","targetResource":{"advertiserId":18446744073709551615},"countryCode":"US","metadata":{"externalAudienceId":"x1"}}"#.into(),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["audienceId"].as_u64().unwrap().to_string()
    }
}

fn records_body(aud: &str, quoted: bool, records: &str) -> String {
    if quoted {
        format!(r#"{{"audienceId":"{aud}","records":[{records}]}}"#)
    } else {
        format!(r#"{{"audienceId":{aud},"records":[{records}]}}"#)
    }
}

fn one_record(ext: &str, hash: &str) -> String {
    format!(r#"{{"externalUserId":"{ext}","action":"CREATE","hashedPII":[{{"email":"{hash}"}}]}}"#)
}

#[tokio::test]
async fn quoted_audience_id_gets_400() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let r = raw(&sb).await;
    let aud = r.create_audience().await;
    assert!(aud.parse::<u64>().unwrap() > 1 << 63);
    let (s, v) = r
        .post(
            "/amc/audiences/records",
            AUDIENCES_MEDIA_TYPE,
            records_body(&aud, true, &one_record("u1", HEX)),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("bare JSON integer"),
        "{v}"
    );
    let (s, v) = r
        .post(
            "/amc/audiences/records",
            AUDIENCES_MEDIA_TYPE,
            records_body(&aud, false, &one_record("u1", HEX)),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(v["jobRequestId"].is_string());
    // A quoted advertiserId is refused too.
    let (s, _) = r
        .post(
            "/amc/audiences/metadata",
            AUDIENCES_MEDIA_TYPE,
            r#"{"name":"Sandbox audience","description":"d","targetResource":{"advertiserId":"42"},"countryCode":"US","metadata":{"externalAudienceId":"x"}}"#.into(),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn records_are_validated_strictly() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let r = raw(&sb).await;
    let aud = r.create_audience().await;
    let post = |body: String| r.post("/amc/audiences/records", AUDIENCES_MEDIA_TYPE, body);
    // Wrong media type → 415.
    let (s, _) = r
        .post(
            "/amc/audiences/records",
            "application/json",
            records_body(&aud, false, &one_record("u1", HEX)),
        )
        .await;
    assert_eq!(s, 415);
    let cases = [
        (records_body(&aud, false, ""), "between 1 and 10000"),
        (
            records_body(&aud, false, &one_record("bad id", HEX)),
            "externalUserId",
        ),
        (
            records_body(&aud, false, &one_record(&"x".repeat(129), HEX)),
            "externalUserId",
        ),
        (
            records_body(&aud, false, &one_record("u1", &HEX.to_uppercase())),
            "64 lowercase hex",
        ),
        (
            records_body(&aud, false, &one_record("u1", &HEX[..63])),
            "64 lowercase hex",
        ),
        (
            records_body(&aud, false, &one_record("u1", "raw@example.com")),
            "64 lowercase hex",
        ),
        (
            records_body(
                &aud,
                false,
                r#"{"externalUserId":"u1","action":"ADD","hashedPII":[{"email":"x"}]}"#,
            ),
            "action",
        ),
        (
            records_body(
                &aud,
                false,
                r#"{"externalUserId":"u1","action":"CREATE","hashedPII":[]}"#,
            ),
            "hashedPII",
        ),
        (
            records_body(
                &aud,
                false,
                &format!(
                    r#"{{"externalUserId":"u1","action":"CREATE","hashedPII":[{{"mail":"{HEX}"}}]}}"#
                ),
            ),
            "unknown field",
        ),
        (
            records_body(
                &aud,
                false,
                &format!(
                    r#"{{"externalUserId":"u1","action":"CREATE","hashedPII":[{{"email":"{HEX}"}}],"userConsent":{{"geo":{{"countryCode":"DE"}},"consent":{{"amzn":{{"amznAdStorage":"YES"}}}}}}}}"#
                ),
            ),
            "GRANTED or DENIED",
        ),
    ];
    for (body, needle) in cases {
        let (s, v) = post(body.clone()).await;
        assert_eq!(s, 400, "{body} → {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    // 10,001 records → 400; 10,000 → 202.
    let rec = one_record("u1", HEX);
    let many = |n: usize| vec![rec.as_str(); n].join(",");
    let (s, _) = post(records_body(&aud, false, &many(10_001))).await;
    assert_eq!(s, 400);
    let (s, _) = post(records_body(&aud, false, &many(10_000))).await;
    assert_eq!(s, 202);
    assert_eq!(sb.received_count(), 10_000);
}

#[tokio::test]
async fn audience_metadata_is_validated() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let r = raw(&sb).await;
    let body = |name: &str, target: &str, meta: &str| {
        format!(
            r#"{{"name":"{name}","description":"d","targetResource":{target},"countryCode":"US","metadata":{meta}}}"#
        )
    };
    let ok_target = r#"{"connectionId":"c1"}"#;
    let ok_meta = r#"{"externalAudienceId":"e"}"#;
    for (b, needle) in [
        (body("too short", ok_target, ok_meta), "name"),
        (body(&"n".repeat(129), ok_target, ok_meta), "name"),
        (body("long enough", "{}", ok_meta), "targetResource"),
        (
            body(
                "long enough",
                r#"{"connectionId":"c","advertiserId":1}"#,
                ok_meta,
            ),
            "targetResource",
        ),
        (
            body(
                "long enough",
                ok_target,
                r#"{"externalAudienceId":"e","ttl":34300801}"#,
            ),
            "ttl",
        ),
        (
            body(
                "long enough",
                ok_target,
                r#"{"externalAudienceId":"e","audienceFees":[{"currency":"CHF","cpmCents":1}]}"#,
            ),
            "currency",
        ),
    ] {
        let (s, v) = r
            .post("/amc/audiences/metadata", AUDIENCES_MEDIA_TYPE, b)
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let (s, v) = r
        .post(
            "/amc/audiences/metadata",
            AUDIENCES_MEDIA_TYPE,
            body(
                "long enough",
                ok_target,
                r#"{"externalAudienceId":"e","ttl":0,"audienceFees":[{"currency":"SEK","cpmCents":0}]}"#,
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn auth_headers_are_required() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let r = raw(&sb).await;
    let url = format!("{}/v2/profiles", r.base);
    let status =
        |rb: reqwest::RequestBuilder| async move { rb.send().await.unwrap().status().as_u16() };
    assert_eq!(
        status(
            r.http
                .get(&url)
                .header("Amazon-Advertising-API-ClientId", &r.client_id)
        )
        .await,
        401
    );
    assert_eq!(
        status(
            r.http
                .get(&url)
                .bearer_auth("Atza|forged")
                .header("Amazon-Advertising-API-ClientId", &r.client_id)
        )
        .await,
        401
    );
    assert_eq!(status(r.http.get(&url).bearer_auth(&r.token)).await, 400);
    assert_eq!(
        status(
            r.http
                .get(&url)
                .bearer_auth(&r.token)
                .header("Amazon-Advertising-API-ClientId", "someone-else")
        )
        .await,
        401
    );
    assert_eq!(
        status(
            r.http
                .get(&url)
                .bearer_auth(&r.token)
                .header("Amazon-Advertising-API-ClientId", &r.client_id)
        )
        .await,
        200
    );
    // Wrong Accept on an audiences call → 406.
    assert_eq!(
        status(
            r.http
                .get(format!("{}/amc/audiences/metadata/1", r.base))
                .bearer_auth(&r.token)
                .header("Amazon-Advertising-API-ClientId", &r.client_id)
                .header("Accept", "application/json")
        )
        .await,
        406
    );
}

#[tokio::test]
async fn token_endpoint_rules() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let http = reqwest::Client::new();
    let form = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
        sb.refresh_token().replace('|', "%7C"),
        sb.client_id(),
        sb.client_secret()
    );
    let post = |auth: bool, ct: &'static str| {
        let mut rb = http
            .post(sb.token_url())
            .header("Content-Type", ct)
            .body(form.clone());
        if auth {
            rb = rb.header("Authorization", "Bearer x");
        }
        async move {
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, v) = post(false, "application/x-www-form-urlencoded").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(v["access_token"].as_str().unwrap().starts_with("Atza|"));
    let (s, v) = post(true, "application/x-www-form-urlencoded").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, v) = post(false, "application/json").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn authorization_code_grant_with_pkce() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "x".repeat(50);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:5555/callback";
    let enc = |v: &str| v.replace(':', "%3A").replace('/', "%2F");
    let url = format!(
        "{}?client_id={}&scope={}&response_type=code&redirect_uri={}&state=st4te&code_challenge={challenge}&code_challenge_method=S256",
        sb.authorize_url(),
        sb.client_id(),
        enc("advertising::campaign_management"),
        enc(redirect),
    );
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with("http://127.0.0.1:5555/callback?code="),
        "{loc}"
    );
    assert!(loc.ends_with("&state=st4te"), "{loc}");
    let code = loc
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    let grant = |verifier: String| {
        http.post(sb.token_url())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=authorization_code&code={code}&redirect_uri={}&client_id={}&client_secret={}&code_verifier={verifier}",
                redirect.replace(':', "%3A").replace('/', "%2F"),
                sb.client_id(),
                sb.client_secret()
            ))
            .send()
    };
    let r = grant(verifier.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    // Each consent yields its own refresh token (revocable alone), which refreshes.
    let issued = v["refresh_token"].as_str().unwrap().to_string();
    assert!(
        issued.starts_with("Atzr|") && issued != sb.refresh_token(),
        "{issued}"
    );
    let r = http
        .post(sb.token_url())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
            issued.replace('|', "%7C"),
            sb.client_id(),
            sb.client_secret()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Single use.
    let r = grant(verifier).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(sb.stats().code_grants, 1);
}

#[tokio::test]
async fn control_endpoints_and_startup_line() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{}/__sandbox/faults", sb.base_url()))
        .body(r#"{"rate_limit":2,"retry_after":"5"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rate_limit"], 2);
    assert_eq!(sb.faults().rate_limit, 2);
    assert_eq!(sb.faults().retry_after.as_deref(), Some("5"));
    let r = http
        .post(format!("{}/__sandbox/faults", sb.base_url()))
        .body(r#"{"no_such_fault":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    sb.update_faults(|f| f.rate_limit = 0);
    let r = raw(&sb).await;
    let aud = r.create_audience().await;
    let (s, _) = r
        .post(
            "/amc/audiences/records",
            AUDIENCES_MEDIA_TYPE,
            records_body(&aud, false, &one_record("u1", HEX)),
        )
        .await;
    assert_eq!(s, 202);
    let text = http
        .get(format!("{}/__sandbox/received", sb.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[&aud][0]["externalUserId"], "u1");
    assert_eq!(v[&aud][0]["hashedPII"][0]["email"], HEX);

    let line = sandbox::startup_line(&sb);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "base_url",
            "token_url",
            "authorize_url",
            "client_id",
            "client_secret",
            "refresh_token"
        ]
    );
    assert_eq!(v["token_url"], format!("{}/auth/o2/token", sb.base_url()));
    assert!(!line.contains('\n'));
    sb.shutdown().await;
}
