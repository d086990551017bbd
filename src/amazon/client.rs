//! The AMC Audiences API client ([AUD], [HDR], [PROF]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::encode::{MAX_RECORDS_PER_REQUEST, encode_records_body};
use super::error::amazon_message;
use super::secret::scrub;
use super::{
    ApiError, Audience, AudienceRequest, CreatedAudience, Credentials, Digits, JobStatus, Profile,
    Record, Secret, TokenManager,
};
use crate::config::{Config, Region};

/// [AUD]: the AMC Audiences API's versioned media type, sent as both
/// `Content-Type` and `Accept` on every `/amc/audiences/…` call.
pub const AUDIENCES_MEDIA_TYPE: &str = "application/vnd.amcaudiences.v1+json";

/// [HDR]: the header carrying the LWA client id on every Ads API call.
const CLIENT_ID_HEADER: &str = "Amazon-Advertising-API-ClientId";

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Ads API base URL ([EP]: `https://advertising-api.amazon.com` (NA),
    /// `…-eu…` (EU), `…-fe…` (FE)), or an override (sandbox, proxy).
    pub api_base_url: String,
    /// LWA token endpoint ([LWA]: `https://api.amazon.com/auth/o2/token` (NA),
    /// `api.amazon.co.uk` (EU), `api.amazon.co.jp` (FE)).
    pub token_url: String,
    /// Whole-request timeout (a timeout is [`ApiError::Retryable`]).
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Refresh the access token this long before it expires.
    pub refresh_margin: Duration,
    /// The region these hosts serve (audience ids belong to one region).
    pub region: Region,
}

impl ClientOptions {
    /// The region's production hosts.
    pub fn for_region(region: Region) -> ClientOptions {
        ClientOptions {
            api_base_url: region.api_base_url().to_string(),
            token_url: region.token_url().to_string(),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(15),
            refresh_margin: super::DEFAULT_REFRESH_MARGIN,
            region,
        }
    }

    /// From the configuration: `Config::effective_api_base_url` and
    /// `Config::effective_token_url` (so one sandbox URL serves everything).
    pub fn from_config(cfg: &Config) -> ClientOptions {
        ClientOptions {
            api_base_url: cfg.effective_api_base_url().to_string(),
            token_url: cfg.effective_token_url(),
            ..ClientOptions::for_region(cfg.region)
        }
    }

    /// Everything at `base_url` (the sandbox: API and `<base>/auth/o2/token`).
    pub fn for_base_url(base_url: &str) -> ClientOptions {
        let base = base_url.trim_end_matches('/');
        ClientOptions {
            api_base_url: base.to_string(),
            token_url: format!("{base}/auth/o2/token"),
            ..ClientOptions::for_region(Region::NA)
        }
    }
}

/// AMC Audiences API client. Cheap to clone; share one per connection.
#[derive(Debug, Clone)]
pub struct AmazonClient {
    http: reqwest::Client,
    base: Arc<str>,
    tokens: Arc<TokenManager>,
    region: Region,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobAccepted {
    job_request_id: String,
}

impl AmazonClient {
    /// A client with its own HTTP connection pool (rustls, HTTP/2 when the
    /// server offers it, gzip responses) and token manager.
    ///
    /// # Errors
    /// [`ApiError::Permanent`] if the TLS stack cannot be initialised.
    pub fn new(opts: &ClientOptions, credentials: Credentials) -> Result<AmazonClient, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .user_agent(concat!("amc-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Permanent {
                status: 0,
                message: format!("HTTP client: {e}"),
            })?;
        let tokens = TokenManager::new(http.clone(), opts.token_url.clone(), credentials)
            .with_refresh_margin(opts.refresh_margin);
        Ok(
            AmazonClient::with_parts(http, &opts.api_base_url, Arc::new(tokens))
                .with_region(opts.region),
        )
    }

    /// A client from existing parts (share a token manager between clients).
    pub fn with_parts(
        http: reqwest::Client,
        api_base_url: &str,
        tokens: Arc<TokenManager>,
    ) -> Self {
        AmazonClient {
            http,
            base: Arc::from(api_base_url.trim_end_matches('/')),
            tokens,
            region: Region::NA,
        }
    }

    /// Sets the region this client's hosts serve (default NA).
    pub fn with_region(mut self, region: Region) -> Self {
        self.region = region;
        self
    }

    /// The region this client's hosts serve: an `audienceId` created through
    /// it exists in this region only.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The token manager (auth state, refresh count).
    pub fn tokens(&self) -> &Arc<TokenManager> {
        &self.tokens
    }

    /// The API base URL in use.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /amc/audiences/metadata` → 201 `{audienceId, externalAudienceId}` [AUD].
    /// The request is checked with [`AudienceRequest::validate`] first;
    /// `targetResource.advertiserId` goes out as bare digits.
    ///
    /// # Errors
    /// [`ApiError::InvalidRequest`] for a request failing validation (not
    /// sent) or a 400; otherwise as classified.
    pub async fn create_audience(
        &self,
        req: &AudienceRequest,
    ) -> Result<CreatedAudience, ApiError> {
        req.validate()
            .map_err(|message| ApiError::InvalidRequest { message })?;
        let body = serde_json::to_vec(req).expect("audience request serializes");
        self.call_json(
            Method::POST,
            "/amc/audiences/metadata",
            true,
            Some(body.into()),
        )
        .await
    }

    /// `GET /amc/audiences/metadata/{audienceId}` [AUD].
    ///
    /// # Errors
    /// As classified ([`ApiError::Permanent`] 404 for an unknown audience).
    pub async fn get_audience(&self, audience_id: &Digits) -> Result<Audience, ApiError> {
        let path = format!("/amc/audiences/metadata/{audience_id}");
        self.call_json(Method::GET, &path, true, None).await
    }

    /// `PUT /amc/audiences/metadata/{audienceId}` with the full metadata [AUD].
    /// There is no audience DELETE in the API.
    ///
    /// # Errors
    /// As for [`Self::create_audience`].
    pub async fn update_audience(
        &self,
        audience_id: &Digits,
        req: &AudienceRequest,
    ) -> Result<(), ApiError> {
        req.validate()
            .map_err(|message| ApiError::InvalidRequest { message })?;
        let body = serde_json::to_vec(req).expect("audience request serializes");
        let path = format!("/amc/audiences/metadata/{audience_id}");
        self.call(Method::PUT, &path, true, Some(body.into()))
            .await
            .map(|_| ())
    }

    /// `POST /amc/audiences/records` → 202 `{jobRequestId}` [AUD]: 1–10,000
    /// records, encoded by [`encode_records_body`] (`audienceId` as bare digits).
    ///
    /// # Errors
    /// [`ApiError::InvalidRequest`] for 0 or > 10,000 records (not sent) or a
    /// 400; otherwise as classified.
    pub async fn upload_records(
        &self,
        audience_id: &Digits,
        records: &[Record],
    ) -> Result<String, ApiError> {
        if records.is_empty() || records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(ApiError::InvalidRequest {
                message: format!(
                    "a records upload carries 1–{MAX_RECORDS_PER_REQUEST} records (got {})",
                    records.len()
                ),
            });
        }
        self.upload_records_body(encode_records_body(audience_id, records))
            .await
    }

    /// `POST /amc/audiences/records` with a body already built by
    /// [`crate::amazon::encode_records_body`] (the planner encodes once and
    /// may resend the same bytes).
    ///
    /// # Errors
    /// As classified.
    pub async fn upload_records_body(&self, body: impl Into<Bytes>) -> Result<String, ApiError> {
        let accepted: JobAccepted = self
            .call_json(
                Method::POST,
                "/amc/audiences/records",
                true,
                Some(body.into()),
            )
            .await?;
        Ok(accepted.job_request_id)
    }

    /// `GET /amc/audiences/records/{jobRequestId}` → `{jobState, invalidRecords…}` [AUD].
    ///
    /// # Errors
    /// [`ApiError::InvalidRequest`] for a malformed job id (not sent);
    /// otherwise as classified.
    pub async fn job_status(&self, job_request_id: &str) -> Result<JobStatus, ApiError> {
        if job_request_id.is_empty()
            || job_request_id.len() > 200
            || !job_request_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ApiError::InvalidRequest {
                message: "malformed jobRequestId".into(),
            });
        }
        let path = format!("/amc/audiences/records/{job_request_id}");
        self.call_json(Method::GET, &path, true, None).await
    }

    /// `GET /v2/profiles` [PROF]: the advertiser profiles the user can access
    /// (also a cheap "are these credentials good" check).
    ///
    /// # Errors
    /// As classified.
    pub async fn list_profiles(&self) -> Result<Vec<Profile>, ApiError> {
        self.call_json(Method::GET, "/v2/profiles", false, None)
            .await
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        audiences_media: bool,
        body: Option<Bytes>,
    ) -> Result<T, ApiError> {
        let (status, bytes) = self.call(method, path, audiences_media, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Permanent {
            status: status.as_u16(),
            message: format!("unexpected response from {path}: {e}"),
        })
    }

    /// Sends one call with a valid token; on 401 forgets the token, refreshes
    /// once and resends (DESIGN.md 4.6: "401 → refresh the token once and
    /// retry"); a second 401 is [`ApiError::Unauthorized`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        audiences_media: bool,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.tokens.access_token().await?;
            let started = Instant::now();
            let resp = self
                .request(method.clone(), path, audiences_media, body.clone(), &token)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    let err = ApiError::from_transport(&e);
                    tracing::debug!(%method, path, error = %err, "amazon api call failed");
                    return Err(err);
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ApiError::from_transport(&e))?;
            tracing::debug!(
                %method,
                path,
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "amazon api call"
            );
            if status.is_success() {
                return Ok((status, bytes));
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 1 {
                self.tokens.invalidate(&token).await;
                continue;
            }
            let text = scrub(&String::from_utf8_lossy(&bytes), &[&token]);
            let err = ApiError::from_status(status, retry_after.as_deref(), &text);
            if let ApiError::Permanent { status, message } = err {
                // Keep 4xx messages short and recognisable.
                return Err(ApiError::Permanent {
                    status,
                    message: amazon_message(&message),
                });
            }
            return Err(err);
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        audiences_media: bool,
        body: Option<Bytes>,
        token: &Secret,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token.expose())
            .header(CLIENT_ID_HEADER, self.tokens.client_id());
        rb = if audiences_media {
            rb.header(header::ACCEPT, AUDIENCES_MEDIA_TYPE)
        } else {
            rb.header(header::ACCEPT, "application/json")
        };
        if let Some(b) = body {
            let ct = if audiences_media {
                AUDIENCES_MEDIA_TYPE
            } else {
                "application/json"
            };
            rb = rb.header(header::CONTENT_TYPE, ct).body(b);
        }
        rb
    }
}
