//! Amazon Ads API client: Login with Amazon (LWA) tokens and the AMC Audiences
//! ("Advertiser audiences") API — DESIGN.md 4.6.
//!
//! References (cited per rule in the doc comments below):
//! * **[AUD]** Amazon Ads API, "Advertiser audiences" OpenAPI (`amcaudiences`
//!   v1), <https://advertising.amazon.com/API/docs/en-us/amc-audiences> — the
//!   `/amc/audiences/metadata` and `/amc/audiences/records` operations, their
//!   media type `application/vnd.amcaudiences.v1+json`, field limits and job
//!   states.
//! * **[HDR]** Amazon Ads API "Getting started / Headers":
//!   <https://advertising.amazon.com/API/docs/en-us/guides/get-started/headers>
//!   — `Authorization: Bearer`, `Amazon-Advertising-API-ClientId`.
//! * **[EP]** "API endpoints" (regional hosts):
//!   <https://advertising.amazon.com/API/docs/en-us/info/api-overview#api-endpoints>.
//! * **[LWA]** "Create an authorization grant" / "Retrieve access and refresh
//!   tokens": <https://advertising.amazon.com/API/docs/en-us/guides/get-started/retrieve-access-token>
//!   and <https://developer.amazon.com/docs/login-with-amazon/authorization-code-grant.html>
//!   — form-encoded `POST /auth/o2/token`, `expires_in` (3,600 s), `invalid_grant`.
//! * **[ERR]** Amazon Ads API "Rate limiting" (429 + `Retry-After`) and error
//!   responses (`{code, message}` / `{code, details}`):
//!   <https://advertising.amazon.com/API/docs/en-us/concepts/rate-limiting>.
//! * **[PROF]** Profiles API `GET /v2/profiles`:
//!   <https://advertising.amazon.com/API/docs/en-us/reference/2/profiles>.
//!
//! Layout: [`Secret`] (redacted credentials), [`Digits`] (ids > 2^53 as bare
//! JSON digits), [`ApiError`] (classification), [`TokenManager`] (LWA refresh,
//! cache, single flight), [`AmazonClient`] (the endpoints), and
//! [`encode_records_body`] with its exact size estimator for the planner.

mod client;
mod digits;
mod encode;
mod error;
pub(crate) mod form;
pub mod lwa;
mod secret;
mod token;
mod types;

pub use client::{AUDIENCES_MEDIA_TYPE, AmazonClient, ClientOptions};
pub use digits::Digits;
pub use encode::{
    BODY_CLOSE, MAX_RECORDS_PER_REQUEST, Record, body_encoded_len, body_overhead_len,
    encode_records_body, encode_records_body_into, record_encoded_len,
};
pub use error::{ApiError, parse_retry_after};
pub use secret::{Credentials, Secret};
pub use token::{DEFAULT_REFRESH_MARGIN, TokenManager, TokenResponse};
pub use types::{
    AccountInfo, Audience, AudienceFee, AudienceMetadata, AudienceRequest, CURRENCIES,
    CreatedAudience, InvalidRecord, JobState, JobStatus, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS,
    MAX_TTL_SECS, MIN_NAME_CHARS, Profile, TargetResource,
};
