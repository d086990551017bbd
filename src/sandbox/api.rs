//! Sandbox routes: LWA, profiles, AMC Audiences metadata/records/jobs, and
//! the `/__sandbox/…` control endpoints.

// The checks return the ready-made error `Response` for an early return from
// the handler; boxing it would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use sha2::Digest;

use super::{AuthCode, Faults, Job, ReceivedRecord, Shared, random_hex};
use crate::amazon::{
    AUDIENCES_MEDIA_TYPE, CURRENCIES, Digits, InvalidRecord, JobState, MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS, MAX_RECORDS_PER_REQUEST, MAX_TTL_SECS, MIN_NAME_CHARS, Record, form,
};
use crate::model::{Action, AmznConsent, Consent, ConsentValue, Geo, HashedPii, UserConsent};

type Sh = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.max_body_bytes;
    Router::new()
        .route("/auth/o2/token", post(token))
        .route("/ap/oa", get(authorize))
        .route("/ap/oa/consent", post(consent))
        .route("/v2/profiles", get(profiles))
        .route("/amc/audiences/metadata", post(create_audience))
        .route(
            "/amc/audiences/metadata/{audience_id}",
            get(get_audience).put(update_audience),
        )
        .route("/amc/audiences/records", post(upload_records))
        .route("/amc/audiences/records/{job_request_id}", get(job_status))
        .route("/__sandbox/received", get(received))
        .route("/__sandbox/faults", get(get_faults).post(set_faults))
        .route("/__sandbox/stats", get(stats))
        .route("/__sandbox/revoke", post(revoke))
        .route("/__sandbox/settings", get(get_settings).post(set_settings))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// An Ads-API-style error body `{"code": …, "message": …}`.
pub(crate) fn error_response(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn audiences_json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, AUDIENCES_MEDIA_TYPE)], body).into_response()
}

fn bad_request(shared: &Shared, message: impl AsRef<str>) -> Response {
    shared.lock().stats.bad_requests += 1;
    error_response(400, "BAD_REQUEST", message.as_ref())
}

fn lwa_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---------------------------------------------------------------- LWA

fn issue_access_token(shared: &Shared) -> (String, u64) {
    let token = format!("Atza|sandbox-{}", random_hex(32));
    let ttl = shared.token_ttl;
    let mut st = shared.lock();
    let now = Instant::now();
    st.access_tokens.retain(|_, exp| *exp > now);
    st.access_tokens.insert(token.clone(), now + ttl);
    (token, ttl.as_secs().max(1))
}

/// `POST /auth/o2/token` ([LWA]): form-encoded; no `Authorization` header;
/// `refresh_token` and `authorization_code` grants.
async fn token(State(sh): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        return lwa_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request must not carry an Authorization header",
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return lwa_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let params: HashMap<String, String> = form::decode(&body).into_iter().collect();
    let p = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if p("client_id") != sh.client_id || p("client_secret") != sh.client_secret {
        return lwa_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    match p("grant_type") {
        "refresh_token" => {
            {
                let mut st = sh.lock();
                if st.faults.invalid_grant > 0 {
                    if st.faults.invalid_grant != u32::MAX {
                        st.faults.invalid_grant -= 1;
                    }
                    return lwa_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "The request has an invalid grant parameter : refresh_token",
                    );
                }
            }
            if !sh.lock().refresh_tokens.contains(p("refresh_token")) {
                return lwa_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The request has an invalid grant parameter : refresh_token",
                );
            }
            let (token, ttl) = issue_access_token(&sh);
            sh.lock().stats.token_refreshes += 1;
            token_response(&token, p("refresh_token"), ttl)
        }
        "authorization_code" => {
            let code = {
                let mut st = sh.lock();
                st.codes.remove(p("code")) // single use
            };
            let Some(code) = code else {
                return lwa_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The authorization code is invalid or was already used",
                );
            };
            if Instant::now() > code.expires || code.redirect_uri != p("redirect_uri") {
                return lwa_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The authorization code expired or the redirect_uri does not match",
                );
            }
            if let Some(challenge) = &code.code_challenge {
                let digest = sha2::Sha256::digest(p("code_verifier").as_bytes());
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
                if &computed != challenge {
                    return lwa_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "code_verifier does not match the code_challenge",
                    );
                }
            }
            let (token, ttl) = issue_access_token(&sh);
            // Each consent yields its own refresh token (revocable alone).
            let refresh = format!("Atzr|sandbox-{}", random_hex(24));
            {
                let mut st = sh.lock();
                st.stats.code_grants += 1;
                st.refresh_tokens.insert(refresh.clone());
            }
            token_response(&token, &refresh, ttl)
        }
        "" => lwa_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
        _ => lwa_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only refresh_token and authorization_code are supported",
        ),
    }
}

fn token_response(access: &str, refresh: &str, ttl: u64) -> Response {
    let body = serde_json::json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": ttl,
    })
    .to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

/// `GET /ap/oa` ([LWA] authorization request): the pre-consented test user
/// approves at once — 302 to `redirect_uri?code=…&scope=…&state=…`. The
/// redirect must be a loopback `http://` URI; PKCE (`S256`) is honoured.
async fn authorize(State(sh): Sh, Query(q): Query<HashMap<String, String>>) -> Response {
    let req = match AuthorizeParams::check(&sh, &q) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if sh.lock().auto_approve {
        return req.approve(&sh);
    }
    consent_page(&req)
}

/// A checked `/ap/oa` request.
struct AuthorizeParams {
    client_id: String,
    redirect_uri: String,
    state: String,
    scope: String,
    code_challenge: Option<String>,
}

fn plain_error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response()
}

impl AuthorizeParams {
    /// [LWA] authorization request checks: known client, `response_type=code`,
    /// a registered (here: loopback, or listed) `redirect_uri`, PKCE method
    /// `S256` when a challenge is sent. Errors before the redirect URI is
    /// trusted are shown to the user, not redirected (RFC 6749 §4.1.2.1).
    fn check(sh: &Shared, q: &HashMap<String, String>) -> Result<AuthorizeParams, Response> {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != sh.client_id {
            return Err(plain_error("unknown client_id"));
        }
        let redirect = get("redirect_uri");
        let allowed = if sh.allowed_return_urls.is_empty() {
            ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                .iter()
                .any(|p| redirect.starts_with(p))
        } else {
            sh.allowed_return_urls.iter().any(|u| u == redirect)
        };
        if !allowed {
            return Err(plain_error(
                "redirect_uri is not an Allowed Return URL of this security profile",
            ));
        }
        if get("response_type") != "code" {
            return Err(plain_error("response_type must be code"));
        }
        let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
            ("", _) => None,
            (c, "S256") => Some(c.to_string()),
            _ => return Err(plain_error("code_challenge_method must be S256")),
        };
        Ok(AuthorizeParams {
            client_id: get("client_id").to_string(),
            redirect_uri: redirect.to_string(),
            state: get("state").to_string(),
            scope: if get("scope").is_empty() {
                "advertising::campaign_management".into()
            } else {
                get("scope").to_string()
            },
            code_challenge,
        })
    }

    fn redirect(&self, pairs: &[(&str, &str)]) -> Response {
        let sep = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{}", self.redirect_uri, form::encode(pairs));
        let mut resp = StatusCode::FOUND.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    }

    /// Issues a code (single use, [`SandboxOptions::code_ttl`]) and redirects.
    fn approve(&self, sh: &Shared) -> Response {
        let code = format!("ANsandbox{}", random_hex(16));
        {
            let mut st = sh.lock();
            let ttl = st.code_ttl;
            st.codes.insert(
                code.clone(),
                AuthCode {
                    redirect_uri: self.redirect_uri.clone(),
                    code_challenge: self.code_challenge.clone(),
                    expires: Instant::now() + ttl,
                },
            );
        }
        self.redirect(&[
            ("code", &code),
            ("scope", &self.scope),
            ("state", &self.state),
        ])
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The consent page (when auto-approve is off): Allow / Cancel.
fn consent_page(req: &AuthorizeParams) -> Response {
    let hidden = [
        ("client_id", req.client_id.as_str()),
        ("redirect_uri", req.redirect_uri.as_str()),
        ("state", req.state.as_str()),
        ("scope", req.scope.as_str()),
        ("response_type", "code"),
        (
            "code_challenge",
            req.code_challenge.as_deref().unwrap_or(""),
        ),
        (
            "code_challenge_method",
            if req.code_challenge.is_some() {
                "S256"
            } else {
                ""
            },
        ),
    ]
    .iter()
    .map(|(k, v)| {
        format!(
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            html_escape(v)
        )
    })
    .collect::<String>();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Amazon (sandbox) — sign in</title></head>\
         <body><h1>AMC Sync sandbox: Login with Amazon</h1>\
         <p>The application <code>{}</code> asks for <code>{}</code>.</p>\
         <form method=\"post\" action=\"/ap/oa/consent\">{hidden}\
         <button id=\"allow\" name=\"decision\" value=\"allow\">Allow</button> \
         <button id=\"deny\" name=\"decision\" value=\"deny\">Cancel</button></form></body></html>",
        html_escape(&req.client_id),
        html_escape(&req.scope)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `POST /ap/oa/consent` (the consent page's form): Allow issues a code;
/// Cancel redirects with `error=access_denied` ([LWA] "Authorization Response").
async fn consent(State(sh): Sh, body: Bytes) -> Response {
    let q: HashMap<String, String> = form::decode(&body).into_iter().collect();
    let req = match AuthorizeParams::check(&sh, &q) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if q.get("decision").map(String::as_str) == Some("allow") {
        req.approve(&sh)
    } else {
        req.redirect(&[
            ("error", "access_denied"),
            ("error_description", "The user denied the request"),
            ("state", &req.state),
        ])
    }
}

// ---------------------------------------------------------------- checks

/// [HDR]: a valid, unexpired bearer token and the matching
/// `Amazon-Advertising-API-ClientId`.
fn check_auth(sh: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = |msg: &str| {
        sh.lock().stats.unauthorized += 1;
        error_response(401, "UNAUTHORIZED", msg)
    };
    let client_id = headers
        .get("amazon-advertising-api-clientid")
        .and_then(|v| v.to_str().ok());
    match client_id {
        None => {
            return Err(bad_request(
                sh,
                "Missing header Amazon-Advertising-API-ClientId",
            ));
        }
        Some(c) if c != sh.client_id => {
            return Err(unauthorized("Invalid Amazon-Advertising-API-ClientId"));
        }
        Some(_) => {}
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(unauthorized("Missing bearer token"));
    };
    let mut st = sh.lock();
    let now = Instant::now();
    match st.access_tokens.get(token) {
        Some(exp) if *exp > now => {}
        _ => {
            drop(st);
            return Err(unauthorized("Access token is invalid or expired"));
        }
    }
    if st.faults.expire_tokens > 0 {
        if st.faults.expire_tokens != u32::MAX {
            st.faults.expire_tokens -= 1;
        }
        st.access_tokens.remove(token);
        drop(st);
        return Err(unauthorized("Access token has expired (sandbox fault)"));
    }
    Ok(())
}

/// [AUD]: `Accept` (when present) and, with a body, `Content-Type` must be
/// `application/vnd.amcaudiences.v1+json`.
fn check_media(headers: &HeaderMap, with_body: bool) -> Result<(), Response> {
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let ok = accept.split(',').any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t == AUDIENCES_MEDIA_TYPE || t == "*/*"
        });
        if !ok {
            return Err(error_response(
                406,
                "NOT_ACCEPTABLE",
                &format!("Accept must allow {AUDIENCES_MEDIA_TYPE}"),
            ));
        }
    }
    if with_body {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.split(';').next().unwrap_or("").trim() != AUDIENCES_MEDIA_TYPE {
            return Err(error_response(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                &format!("Content-Type must be {AUDIENCES_MEDIA_TYPE}"),
            ));
        }
    }
    Ok(())
}

fn guard(sh: &Shared, headers: &HeaderMap, with_body: bool) -> Result<(), Response> {
    check_auth(sh, headers)?;
    check_media(headers, with_body)
}

fn path_id(sh: &Shared, raw: &str) -> Result<Digits, Response> {
    Digits::parse(raw).ok_or_else(|| bad_request(sh, "audienceId must be a number"))
}

// ---------------------------------------------------------------- profiles

/// `GET /v2/profiles` ([PROF]).
async fn profiles(State(sh): Sh, headers: HeaderMap) -> Response {
    if let Err(r) = check_auth(&sh, &headers) {
        return r;
    }
    let body = r#"[{"profileId":9007199254740993,"countryCode":"US","currencyCode":"USD","dailyBudget":999999999.0,"timezone":"America/Los_Angeles","accountInfo":{"marketplaceStringId":"ATVPDKIKX0DER","id":"ENTITYSANDBOX1","type":"agency","name":"AMC Sync Sandbox","validPaymentMethod":true}},{"profileId":3074457345618258602,"countryCode":"DE","currencyCode":"EUR","timezone":"Europe/Paris","accountInfo":{"marketplaceStringId":"A1PA6795UKMFR9","id":"ENTITYSANDBOX2","type":"agency","name":"AMC Sync Sandbox EU","validPaymentMethod":true}}]"#;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------- metadata

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireAudience {
    name: String,
    #[serde(default)]
    description: Option<String>,
    target_resource: WireTarget,
    country_code: String,
    metadata: WireMetadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireTarget {
    #[serde(default)]
    advertiser_id: Option<WireId>,
    #[serde(default)]
    connection_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireMetadata {
    external_audience_id: String,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    audience_fees: Option<Vec<WireFee>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireFee {
    currency: String,
    cpm_cents: u64,
}

fn valid_country(cc: &str) -> bool {
    (cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase())) || cc == "UNKNOWN"
}

/// Validates an audience body per [AUD]; returns the JSON to store (without
/// `audienceId`, which [`render_audience`] prepends as bare digits).
fn validate_audience(body: &[u8]) -> Result<serde_json::Value, String> {
    let a: WireAudience =
        serde_json::from_slice(body).map_err(|e| format!("Invalid request body: {e}"))?;
    let n = a.name.chars().count();
    if !(MIN_NAME_CHARS..=MAX_NAME_CHARS).contains(&n) {
        return Err(format!(
            "name must be between {MIN_NAME_CHARS} and {MAX_NAME_CHARS} characters"
        ));
    }
    let description = a.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    let target = match (
        a.target_resource.advertiser_id,
        a.target_resource.connection_id,
    ) {
        (Some(WireId(adv)), None) => serde_json::json!({ "advertiserId": adv }),
        (None, Some(c)) if !c.is_empty() => serde_json::json!({ "connectionId": c }),
        _ => {
            return Err(
                "targetResource must have exactly one of advertiserId (number) or connectionId"
                    .into(),
            );
        }
    };
    if a.country_code.len() != 2 || !valid_country(&a.country_code) {
        return Err("countryCode must be an ISO 3166-1 alpha-2 code".into());
    }
    if a.metadata.external_audience_id.is_empty() {
        return Err("metadata.externalAudienceId is required".into());
    }
    if let Some(ttl) = a.metadata.ttl
        && ttl > MAX_TTL_SECS
    {
        return Err(format!("metadata.ttl must be between 0 and {MAX_TTL_SECS}"));
    }
    let mut fees = Vec::new();
    for f in a.metadata.audience_fees.iter().flatten() {
        if !CURRENCIES.contains(&f.currency.as_str()) {
            return Err(format!("unsupported currency {:?}", f.currency));
        }
        fees.push(serde_json::json!({ "currency": f.currency, "cpmCents": f.cpm_cents }));
    }
    let mut metadata = serde_json::json!({ "externalAudienceId": a.metadata.external_audience_id });
    if let Some(ttl) = a.metadata.ttl {
        metadata["ttl"] = ttl.into();
    }
    if a.metadata.audience_fees.is_some() {
        metadata["audienceFees"] = fees.into();
    }
    Ok(serde_json::json!({
        "name": a.name,
        "description": description,
        "targetResource": target,
        "countryCode": a.country_code,
        "metadata": metadata,
    }))
}

/// `POST /amc/audiences/metadata` → 201 `{audienceId, externalAudienceId}` [AUD].
async fn create_audience(State(sh): Sh, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = guard(&sh, &headers, true) {
        return r;
    }
    let stored = match validate_audience(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(&sh, m),
    };
    let external = stored["metadata"]["externalAudienceId"].clone();
    let mut st = sh.lock();
    let id = Digits::from(st.next_audience_id);
    st.next_audience_id += 1;
    st.audiences.insert(id.to_string(), stored);
    st.stats.audiences_created += 1;
    drop(st);
    // audienceId as bare digits (> 2^63), as Amazon writes it.
    let body = format!("{{\"audienceId\":{id},\"externalAudienceId\":{external}}}");
    audiences_json(StatusCode::CREATED, body)
}

/// `{"audienceId":<digits>,…stored fields}`.
fn render_audience(id: &str, stored: &serde_json::Value) -> String {
    let rest = stored.to_string();
    match rest.strip_prefix('{') {
        Some("}") | None => format!("{{\"audienceId\":{id}}}"),
        Some(tail) => format!("{{\"audienceId\":{id},{tail}"),
    }
}

/// `GET /amc/audiences/metadata/{audienceId}` [AUD].
async fn get_audience(State(sh): Sh, headers: HeaderMap, Path(raw): Path<String>) -> Response {
    if let Err(r) = guard(&sh, &headers, false) {
        return r;
    }
    let id = match path_id(&sh, &raw) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match sh.lock().audiences.get(id.as_str()) {
        Some(a) => audiences_json(StatusCode::OK, render_audience(id.as_str(), a)),
        None => error_response(404, "NOT_FOUND", "Audience not found"),
    }
}

/// `PUT /amc/audiences/metadata/{audienceId}` [AUD].
async fn update_audience(
    State(sh): Sh,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = guard(&sh, &headers, true) {
        return r;
    }
    let id = match path_id(&sh, &raw) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if !sh.lock().audiences.contains_key(id.as_str()) {
        return error_response(404, "NOT_FOUND", "Audience not found");
    }
    let stored = match validate_audience(&body) {
        Ok(v) => v,
        Err(m) => return bad_request(&sh, m),
    };
    let text = render_audience(id.as_str(), &stored);
    sh.lock().audiences.insert(id.to_string(), stored);
    audiences_json(StatusCode::OK, text)
}

// ---------------------------------------------------------------- records

/// A numeric id as Amazon requires it: a bare JSON integer (the sandbox's
/// ids fit in `u64`). A string, fraction or negative number is refused with
/// a message saying so.
struct WireId(u64);

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WireId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WireId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bare JSON integer id")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WireId, E> {
                Ok(WireId(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<WireId, E> {
                Err(E::custom("ids must be positive integers"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<WireId, E> {
                Err(E::custom(
                    "ids must be integers (no fraction, at most 2^64 - 1)",
                ))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<WireId, E> {
                Err(E::custom(
                    "ids must be a bare JSON number, not a string (expected a bare JSON integer id)",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireRecords {
    audience_id: WireId,
    records: Vec<WireRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireRecord {
    external_user_id: String,
    #[serde(default)]
    country_code: Option<String>,
    action: String,
    #[serde(rename = "hashedPII")]
    hashed_pii: Vec<WirePii>,
    #[serde(default)]
    user_consent: Option<WireConsent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePii {
    firstname: Option<String>,
    lastname: Option<String>,
    address: Option<String>,
    postal: Option<String>,
    phone: Option<String>,
    city: Option<String>,
    state: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConsent {
    geo: WireGeo,
    #[serde(default)]
    consent: Option<WireConsentInner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireGeo {
    country_code: String,
    #[serde(default)]
    ip_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConsentInner {
    #[serde(default)]
    amzn: Option<WireAmzn>,
    #[serde(default)]
    tcf: Option<String>,
    #[serde(default)]
    gpp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireAmzn {
    #[serde(default)]
    amzn_ad_storage: Option<String>,
    #[serde(default)]
    amzn_user_data: Option<String>,
}

fn valid_external_user_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn consent_value(s: &str) -> Option<ConsentValue> {
    match s {
        "GRANTED" => Some(ConsentValue::Granted),
        "DENIED" => Some(ConsentValue::Denied),
        _ => None,
    }
}

/// Validates one record per [AUD]; the error names the record index.
fn validate_record(i: usize, w: WireRecord) -> Result<Record, String> {
    let at = |m: &str| format!("records[{i}]: {m}");
    if !valid_external_user_id(&w.external_user_id) {
        return Err(at("externalUserId must match ^[0-9a-zA-Z_-]{1,128}$"));
    }
    if let Some(cc) = &w.country_code
        && !valid_country(cc)
    {
        return Err(at("countryCode must be an ISO 3166-1 alpha-2 code"));
    }
    let action = match w.action.as_str() {
        "CREATE" => Action::Create,
        "DELETE" => Action::Delete,
        _ => return Err(at("action must be CREATE or DELETE")),
    };
    if w.hashed_pii.is_empty() || w.hashed_pii.len() > 100 {
        return Err(at("hashedPII must have 1 to 100 entries"));
    }
    let mut pii = Vec::with_capacity(w.hashed_pii.len());
    for p in w.hashed_pii {
        let h = HashedPii {
            firstname: p.firstname,
            lastname: p.lastname,
            address: p.address,
            postal: p.postal,
            phone: p.phone,
            city: p.city,
            state: p.state,
            email: p.email,
        };
        if h.is_empty() {
            return Err(at("hashedPII entries must not be empty"));
        }
        for v in [
            &h.firstname,
            &h.lastname,
            &h.address,
            &h.postal,
            &h.phone,
            &h.city,
            &h.state,
            &h.email,
        ]
        .into_iter()
        .flatten()
        {
            if !valid_digest(v) {
                return Err(at(
                    "hashedPII values must be SHA-256 digests (64 lowercase hex characters)",
                ));
            }
        }
        pii.push(h);
    }
    let user_consent = match w.user_consent {
        None => None,
        Some(c) => {
            if !valid_country(&c.geo.country_code) {
                return Err(at(
                    "userConsent.geo.countryCode must be an ISO 3166-1 alpha-2 code",
                ));
            }
            let consent = match c.consent {
                None => None,
                Some(inner) => {
                    let amzn = match inner.amzn {
                        None => None,
                        Some(a) => {
                            let conv = |v: Option<String>| -> Result<Option<ConsentValue>, String> {
                                match v {
                                    None => Ok(None),
                                    Some(s) => consent_value(&s).map(Some).ok_or_else(|| {
                                        at("userConsent.consent.amzn values must be GRANTED or DENIED")
                                    }),
                                }
                            };
                            Some(AmznConsent {
                                amzn_ad_storage: conv(a.amzn_ad_storage)?,
                                amzn_user_data: conv(a.amzn_user_data)?,
                            })
                        }
                    };
                    Some(Consent {
                        amzn,
                        tcf: inner.tcf,
                        gpp: inner.gpp,
                    })
                }
            };
            Some(UserConsent {
                geo: Geo {
                    country_code: c.geo.country_code,
                    ip_address: c.geo.ip_address,
                },
                consent,
            })
        }
    };
    Ok(Record {
        external_user_id: w.external_user_id,
        country_code: w.country_code,
        action,
        hashed_pii: pii,
        user_consent,
    })
}

fn job_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `POST /amc/audiences/records` → 202 `{jobRequestId}` [AUD]. The time
/// spent here is counted in [`super::SandboxStats::records_handler_micros`].
async fn upload_records(State(sh): Sh, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let response = upload_records_now(&sh, &headers, body);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut st = sh.lock();
    st.stats.records_handler_micros = st.stats.records_handler_micros.saturating_add(micros);
    drop(st);
    response
}

fn upload_records_now(sh: &Shared, headers: &HeaderMap, body: Bytes) -> Response {
    if let Err(r) = guard(sh, headers, true) {
        return r;
    }
    let wire: WireRecords = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return bad_request(sh, format!("Invalid request body: {e}")),
    };
    if wire.records.is_empty() || wire.records.len() > MAX_RECORDS_PER_REQUEST {
        return bad_request(
            sh,
            format!("records must contain between 1 and {MAX_RECORDS_PER_REQUEST} items"),
        );
    }
    let mut records = Vec::with_capacity(wire.records.len());
    for (i, w) in wire.records.into_iter().enumerate() {
        match validate_record(i, w) {
            Ok(r) => records.push(r),
            Err(m) => return bad_request(sh, m),
        }
    }
    if let Some(i) = records.iter().position(|r| {
        sh.reject_user
            .as_ref()
            .is_some_and(|re| re.is_match(&r.external_user_id))
    }) {
        return bad_request(
            sh,
            format!(
                "records[{i}] is invalid: the sandbox rejects this externalUserId (reject pattern)"
            ),
        );
    }
    let audience_id = wire.audience_id.0.to_string();
    let job_request_id = job_id();
    let mut st = sh.lock();
    if !st.audiences.contains_key(&audience_id) {
        drop(st);
        return error_response(404, "NOT_FOUND", "Audience not found");
    }
    let fail = st.faults.fail_jobs > 0;
    if fail && st.faults.fail_jobs != u32::MAX {
        st.faults.fail_jobs -= 1;
    }
    let total = records.len();
    let mut invalid = Vec::new();
    let mut accepted = Vec::with_capacity(if fail { 0 } else { total });
    if !fail {
        for r in records {
            if sh
                .invalid_user
                .as_ref()
                .is_some_and(|re| re.is_match(&r.external_user_id))
            {
                invalid.push(InvalidRecord {
                    external_id: r.external_user_id,
                    error: "INVALID_RECORD: rejected by the sandbox's invalid-user pattern".into(),
                });
            } else {
                accepted.push(ReceivedRecord {
                    job_request_id: job_request_id.clone(),
                    record: r,
                });
            }
        }
    }
    let final_state = if fail {
        JobState::Failed
    } else if invalid.is_empty() {
        JobState::Succeeded
    } else {
        JobState::PartiallySucceeded
    };
    st.stats.uploads_accepted += 1;
    st.stats.records_accepted += accepted.len() as u64;
    st.received
        .entry(audience_id.clone())
        .or_default()
        .extend(accepted);
    if sh.keep_raw_bodies {
        st.raw_bodies.push(body);
    }
    st.jobs.insert(
        job_request_id.clone(),
        Job {
            audience_id,
            polls_left: sh.job_pending_polls,
            final_state,
            invalid,
            records: total,
        },
    );
    drop(st);
    audiences_json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "jobRequestId": job_request_id }).to_string(),
    )
}

/// `GET /amc/audiences/records/{jobRequestId}` [AUD].
async fn job_status(State(sh): Sh, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = guard(&sh, &headers, false) {
        return r;
    }
    let mut st = sh.lock();
    let Some(job) = st.jobs.get_mut(&id) else {
        drop(st);
        return error_response(404, "NOT_FOUND", "Job not found");
    };
    let state = if job.polls_left > 0 {
        job.polls_left -= 1;
        JobState::Pending
    } else {
        job.final_state
    };
    let invalid = if state.is_terminal() {
        serde_json::to_value(&job.invalid).unwrap_or_default()
    } else {
        serde_json::Value::Array(Vec::new())
    };
    // audienceId is written as bare digits, as Amazon does.
    let body = format!(
        "{{\"jobRequestId\":{},\"audienceId\":{},\"jobState\":\"{}\",\"totalRecords\":{},\"invalidRecords\":{}}}",
        serde_json::Value::String(id.clone()),
        job.audience_id,
        state.as_str(),
        job.records,
        invalid
    );
    drop(st);
    audiences_json(StatusCode::OK, body)
}

// ---------------------------------------------------------------- control

async fn received(State(sh): Sh) -> Response {
    let body = serde_json::to_string(&sh.lock().received).unwrap_or_else(|_| "{}".into());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn stats(State(sh): Sh) -> Response {
    axum::Json(sh.lock().stats.clone()).into_response()
}

async fn get_faults(State(sh): Sh) -> Response {
    axum::Json(sh.lock().faults.clone()).into_response()
}

/// `POST /__sandbox/faults`: the given fields replace the current ones.
async fn set_faults(State(sh): Sh, body: Bytes) -> Response {
    let patch: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error_response(400, "BAD_REQUEST", &format!("faults: {e}")),
    };
    let mut st = sh.lock();
    let mut current = match serde_json::to_value(&st.faults) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in patch {
        current.insert(k, v);
    }
    match serde_json::from_value::<Faults>(serde_json::Value::Object(current)) {
        Ok(f) => {
            st.faults = f.clone();
            axum::Json(f).into_response()
        }
        Err(e) => error_response(400, "BAD_REQUEST", &format!("faults: {e}")),
    }
}

/// `POST /__sandbox/revoke` `{"refreshToken": "…"}` revokes one refresh
/// token, `{}` every one (as a user removing the app's access): the next
/// refresh answers `invalid_grant`. → `{"revoked": n}`.
async fn revoke(State(sh): Sh, body: Bytes) -> Response {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Req {
        #[serde(default)]
        refresh_token: Option<String>,
    }
    let req: Req = if body.is_empty() {
        Req::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error_response(400, "BAD_REQUEST", &format!("revoke: {e}")),
        }
    };
    let mut st = sh.lock();
    let revoked = match req.refresh_token {
        Some(t) => usize::from(st.refresh_tokens.remove(&t)),
        None => {
            let n = st.refresh_tokens.len();
            st.refresh_tokens.clear();
            n
        }
    };
    // Access tokens minted from them die too.
    st.access_tokens.clear();
    axum::Json(serde_json::json!({ "revoked": revoked })).into_response()
}

#[derive(serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SandboxSettings {
    auto_approve: bool,
    code_ttl_secs: f64,
}

/// A partial update of [`SandboxSettings`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettingsPatch {
    #[serde(default)]
    auto_approve: Option<bool>,
    #[serde(default)]
    code_ttl_secs: Option<f64>,
}

async fn get_settings(State(sh): Sh) -> Response {
    let st = sh.lock();
    axum::Json(SandboxSettings {
        auto_approve: st.auto_approve,
        code_ttl_secs: st.code_ttl.as_secs_f64(),
    })
    .into_response()
}

/// `POST /__sandbox/settings` `{"autoApprove": bool, "codeTtlSecs": n}`.
async fn set_settings(State(sh): Sh, body: Bytes) -> Response {
    let p: SettingsPatch = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error_response(400, "BAD_REQUEST", &format!("settings: {e}")),
    };
    if let Some(t) = p.code_ttl_secs
        && !(t.is_finite() && (0.0..=3600.0).contains(&t))
    {
        return error_response(400, "BAD_REQUEST", "codeTtlSecs must be 0–3600");
    }
    let mut st = sh.lock();
    if let Some(a) = p.auto_approve {
        st.auto_approve = a;
    }
    if let Some(t) = p.code_ttl_secs {
        st.code_ttl = Duration::from_secs_f64(t);
    }
    axum::Json(SandboxSettings {
        auto_approve: st.auto_approve,
        code_ttl_secs: st.code_ttl.as_secs_f64(),
    })
    .into_response()
}
