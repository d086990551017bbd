//! Configuration (DESIGN.md 4.10): a TOML file in the OS config dir,
//! overridable with `--config` or `AMC_SYNC_CONFIG`; the data dir with
//! `AMC_SYNC_DATA_DIR`. Validated at start; every error names the line and
//! column it comes from. The file never holds secrets (LWA client secret and
//! refresh token are stored by `amc-sync login` outside this file): a secret-looking key is rejected.
//!
//! ```toml
//! region = "NA"                    # NA | EU | FE
//! listen = "127.0.0.1:8787"        # Segment-compatible HTTP intake + admin API
//! profile = "amazon"               # normalization profile: amazon | segment
//! drop_dir = "/srv/amc-sync/drop"  # optional; default under the data dir
//!
//! [schedule]
//! upload_interval_secs = 900       # upload every 15 minutes…
//! batch_size = 10000               # …and whenever an audience has this many records
//!
//! [[audiences]]
//! key = "high_value_customers"     # Segment computation_key / CSV audience
//! advertiser_id = 1234567890123456789  # or connection_id = "amc…"
//! country_code = "US"
//! description = "High value customers from the CRM"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::mapping::{MAX_MAPPINGS, Mapping, MappingSet};
use crate::pii::Profile;

/// Name of the environment variable that points at the config file.
pub const ENV_CONFIG: &str = "AMC_SYNC_CONFIG";
/// Name of the environment variable that overrides the data dir.
pub const ENV_DATA_DIR: &str = "AMC_SYNC_DATA_DIR";
/// Default listen address: loopback only (DESIGN.md 4.1).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Amazon Ads API region.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
pub enum Region {
    /// North America: `advertising-api.amazon.com`, LWA at `api.amazon.com`.
    #[default]
    NA,
    /// Europe: `advertising-api-eu.amazon.com`, LWA at `api.amazon.co.uk`.
    EU,
    /// Far East: `advertising-api-fe.amazon.com`, LWA at `api.amazon.co.jp`.
    FE,
}

impl Region {
    /// Amazon Ads API base URL for the region (Amazon Ads API "API endpoints").
    pub fn api_base_url(self) -> &'static str {
        match self {
            Region::NA => "https://advertising-api.amazon.com",
            Region::EU => "https://advertising-api-eu.amazon.com",
            Region::FE => "https://advertising-api-fe.amazon.com",
        }
    }

    /// Login with Amazon token endpoint for the region.
    pub fn token_url(self) -> &'static str {
        match self {
            Region::NA => "https://api.amazon.com/auth/o2/token",
            Region::EU => "https://api.amazon.co.uk/auth/o2/token",
            Region::FE => "https://api.amazon.co.jp/auth/o2/token",
        }
    }

    /// Login with Amazon authorization page for the region.
    pub fn authorize_url(self) -> &'static str {
        match self {
            Region::NA => "https://www.amazon.com/ap/oa",
            Region::EU => "https://eu.account.amazon.com/ap/oa",
            Region::FE => "https://apac.account.amazon.com/ap/oa",
        }
    }

    /// `"NA"`, `"EU"` or `"FE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::NA => "NA",
            Region::EU => "EU",
            Region::FE => "FE",
        }
    }
}

impl std::str::FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NA" => Ok(Region::NA),
            "EU" => Ok(Region::EU),
            "FE" => Ok(Region::FE),
            other => Err(format!("unknown region {other:?} (expected NA, EU or FE)")),
        }
    }
}

/// Upload schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Seconds between scheduled uploads (default 900 = 15 minutes; 10–86,400).
    pub upload_interval_secs: u64,
    /// Records per upload request (1–10,000; default 10,000, Amazon's maximum).
    pub batch_size: u32,
    /// Byte cap of one request body (default 4,000,000 bytes).
    pub max_body_bytes: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            upload_interval_secs: 900,
            batch_size: 10_000,
            max_body_bytes: 4_000_000,
        }
    }
}

/// An Amazon advertiser or audience id: digits that may exceed 2^53, written
/// in TOML as an integer or a string; kept as the digit string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitsId(pub String);

impl<'de> Deserialize<'de> for DigitsId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DigitsId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a positive whole number (write ids above 9223372036854775807 as a quoted string)")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<DigitsId, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<DigitsId, E> {
                if n < 0 {
                    return Err(E::custom("must be a positive whole number"));
                }
                self.visit_str(&n.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DigitsId, E> {
                let s = s.trim();
                if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom("must be 1–39 digits"));
                }
                if s.bytes().all(|b| b == b'0') {
                    return Err(E::custom("must not be 0"));
                }
                Ok(DigitsId(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A local audience (DESIGN.md 4.6 `POST /amc/audiences/metadata` fields).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceConfig {
    /// Local key: the Segment `computation_key` or the CSV file's audience.
    pub key: String,
    /// Audience name at Amazon (10–128 characters); defaults to the key, padded.
    #[serde(default)]
    pub name: Option<String>,
    /// DSP advertiser id (target resource), digits.
    #[serde(default)]
    pub advertiser_id: Option<DigitsId>,
    /// AMC connection id (target resource), instead of `advertiser_id`.
    #[serde(default)]
    pub connection_id: Option<String>,
    /// ISO 3166-1 alpha-2 country of the audience's members (default for records).
    pub country_code: String,
    /// Description (≤ 1,000 characters).
    #[serde(default)]
    pub description: String,
    /// `metadata.externalAudienceId`; defaults to the key.
    #[serde(default)]
    pub external_audience_id: Option<String>,
    /// Membership time-to-live in seconds (0–34,300,800).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Audience fee, CPM in cents.
    #[serde(default)]
    pub cpm_cents: Option<u64>,
    /// Fee currency (AED AUD CAD CNY EUR GBP INR JPY MXN SAR SEK TRY USD).
    #[serde(default)]
    pub currency: Option<String>,
}

/// Currencies Amazon accepts for `audienceFees` (AMC Audiences API).
pub const CURRENCIES: &[&str] = &[
    "AED", "AUD", "CAD", "CNY", "EUR", "GBP", "INR", "JPY", "MXN", "SAR", "SEK", "TRY", "USD",
];

/// Largest `ttl` Amazon accepts, in seconds (AMC Audiences API).
pub const MAX_TTL_SECS: u64 = 34_300_800;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    region: Option<Spanned<String>>,
    #[serde(default)]
    api_base_url: Option<Spanned<String>>,
    #[serde(default)]
    token_url: Option<Spanned<String>>,
    #[serde(default)]
    authorize_url: Option<Spanned<String>>,
    #[serde(default)]
    redirect_uri: Option<Spanned<String>>,
    #[serde(default)]
    scope: Option<Spanned<String>>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    allow_non_loopback: bool,
    #[serde(default)]
    profile: Option<Spanned<String>>,
    #[serde(default)]
    drop_dir: Option<PathBuf>,
    #[serde(default)]
    delete_processed_files: bool,
    #[serde(default)]
    schedule: Option<Spanned<Schedule>>,
    #[serde(default)]
    audiences: Vec<Spanned<AudienceConfig>>,
    #[serde(default)]
    mappings: Vec<Spanned<Mapping>>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Amazon Ads region (default NA).
    pub region: Region,
    /// Overrides the region's API host (sandbox, proxies).
    pub api_base_url: Option<String>,
    /// Overrides the LWA token URL (default: `<api_base_url>/auth/o2/token`
    /// when `api_base_url` is set, else the region's).
    pub token_url: Option<String>,
    /// Overrides the LWA authorization page (default: `<api_base_url>/ap/oa`
    /// when `api_base_url` is set, else the region's).
    pub authorize_url: Option<String>,
    /// The LWA redirect URI: an Allowed Return URL registered in the LWA
    /// security profile, on a loopback host (default
    /// `http://127.0.0.1:<listen port>/api/login/callback`).
    pub redirect_uri: Option<String>,
    /// LWA scope (default `advertising::campaign_management`).
    pub scope: Option<String>,
    /// LWA client id (public; the secret is stored by `amc-sync login`).
    pub client_id: Option<String>,
    /// Address of the HTTP intake and admin API (default 127.0.0.1:8787).
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address (explicit opt-in, DESIGN.md 4.1).
    pub allow_non_loopback: bool,
    /// Normalization profile (default amazon).
    pub profile: Profile,
    /// Watched drop folder; default `<data dir>/drop`.
    pub drop_dir: Option<PathBuf>,
    /// Delete source files after commit instead of moving them to `processed/`.
    pub delete_processed_files: bool,
    /// Upload schedule.
    pub schedule: Schedule,
    /// Configured audiences.
    pub audiences: Vec<AudienceConfig>,
    /// The mappings (`[[mappings]]`, at most 50); the Segment destination's
    /// defaults (track and identify audiences) when the file has none.
    pub mappings: MappingSet,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: Region::NA,
            api_base_url: None,
            token_url: None,
            authorize_url: None,
            redirect_uri: None,
            scope: None,
            client_id: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            allow_non_loopback: false,
            profile: Profile::Amazon,
            drop_dir: None,
            delete_processed_files: false,
            schedule: Schedule::default(),
            audiences: Vec::new(),
            mappings: MappingSet::default(),
        }
    }
}

/// A configuration error with its position in the file. Displays as
/// `file:line:column: message`, or `file: message` when not tied to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>`) the error is in.
    pub origin: String,
    /// 1-based line (0 when the error is not tied to a position).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Keys that would hold secrets: refused, with a pointer to `amc-sync login`.
const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "refresh_token",
    "access_token",
    "password",
    "secret",
];

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, column)
}

impl Config {
    /// Parses and validates TOML text. `origin` names the source in errors.
    ///
    /// # Errors
    /// [`ConfigError`] with line and column for syntax errors, unknown keys,
    /// wrong types, secrets in the file and invalid values.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
            ConfigError {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        // Secrets first, so their values never reach a parser error message.
        if let Ok(table) = text.parse::<toml::Table>() {
            for key in SECRET_KEYS {
                if table.contains_key(*key) {
                    let pos = text.find(key).map(|p| p..p);
                    return Err(err(
                        pos,
                        format!(
                            "`{key}` must not be in the config file: `amc-sync login` stores secrets outside it, in a 0600 credentials file"
                        ),
                    ));
                }
            }
        }
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;
        let mut cfg = Config::default();
        if let Some(r) = raw.region {
            cfg.region = r.get_ref().parse().map_err(|m| err(Some(r.span()), m))?;
        }
        for (slot, value) in [
            (&mut cfg.api_base_url, raw.api_base_url),
            (&mut cfg.token_url, raw.token_url),
            (&mut cfg.authorize_url, raw.authorize_url),
        ] {
            if let Some(v) = value {
                let s = v.get_ref().trim_end_matches('/');
                if !(s.starts_with("http://") || s.starts_with("https://")) {
                    return Err(err(
                        Some(v.span()),
                        "must be an http:// or https:// URL".into(),
                    ));
                }
                *slot = Some(s.to_string());
            }
        }
        if let Some(r) = raw.redirect_uri {
            validate_redirect_uri(r.get_ref()).map_err(|m| err(Some(r.span()), m))?;
            cfg.redirect_uri = Some(r.get_ref().clone());
        }
        if let Some(sc) = raw.scope {
            let v = sc.get_ref().trim();
            if v.is_empty() || v.chars().any(char::is_control) {
                return Err(err(
                    Some(sc.span()),
                    "scope must be a non-empty LWA scope, e.g. advertising::campaign_management"
                        .into(),
                ));
            }
            cfg.scope = Some(v.to_string());
        }
        cfg.client_id = raw.client_id;
        cfg.allow_non_loopback = raw.allow_non_loopback;
        if let Some(l) = raw.listen {
            let addr: SocketAddr = l.get_ref().parse().map_err(|_| {
                err(
                    Some(l.span()),
                    format!(
                        "{:?} is not an IP:port address (e.g. 127.0.0.1:8787)",
                        l.get_ref()
                    ),
                )
            })?;
            if !addr.ip().is_loopback() && !cfg.allow_non_loopback {
                return Err(err(
                    Some(l.span()),
                    "a non-loopback listen address exposes the intake to the network; set allow_non_loopback = true to confirm".into(),
                ));
            }
            cfg.listen = addr;
        }
        if let Some(p) = raw.profile {
            cfg.profile = p
                .get_ref()
                .parse()
                .map_err(|e: crate::pii::PiiError| err(Some(p.span()), e.to_string()))?;
        }
        cfg.drop_dir = raw.drop_dir;
        cfg.delete_processed_files = raw.delete_processed_files;
        if let Some(s) = raw.schedule {
            let span = s.span();
            let s = s.into_inner();
            if !(10..=86_400).contains(&s.upload_interval_secs) {
                return Err(err(
                    Some(span),
                    "schedule.upload_interval_secs must be 10–86,400 seconds".into(),
                ));
            }
            if !(1..=10_000).contains(&s.batch_size) {
                return Err(err(
                    Some(span),
                    "schedule.batch_size must be 1–10,000 records (Amazon's per-request limit)"
                        .into(),
                ));
            }
            if s.max_body_bytes < 64 * 1024 {
                return Err(err(
                    Some(span),
                    "schedule.max_body_bytes must be at least 65,536 bytes".into(),
                ));
            }
            cfg.schedule = s;
        }
        let mut keys = std::collections::HashSet::new();
        for a in raw.audiences {
            let span = a.span();
            let a = a.into_inner();
            validate_audience(&a).map_err(|m| err(Some(span.clone()), m))?;
            if !keys.insert(a.key.clone()) {
                return Err(err(
                    Some(span),
                    format!("audience key {:?} is defined twice", a.key),
                ));
            }
            cfg.audiences.push(a);
        }
        if !raw.mappings.is_empty() {
            let span = raw.mappings.get(MAX_MAPPINGS).map(|m| m.span());
            let list = raw.mappings.into_iter().map(Spanned::into_inner).collect();
            cfg.mappings = MappingSet::new(list).map_err(|e| err(span, e.to_string()))?;
        }
        Ok(cfg)
    }

    /// Loads the config: `explicit` path, else `$AMC_SYNC_CONFIG`, else the OS
    /// config file ([`default_config_file`]); a missing default file gives the
    /// defaults (a first run needs no config). Returns the file used, if any.
    ///
    /// # Errors
    /// An unreadable explicit file, or any validation error.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let env = std::env::var_os(ENV_CONFIG).map(PathBuf::from);
        let (path, required) = match (explicit, env) {
            (Some(p), _) => (Some(p.to_path_buf()), true),
            (None, Some(p)) => (Some(p), true),
            (None, None) => (default_config_file(), false),
        };
        let Some(path) = path else {
            return Ok((Config::default(), None));
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((
                Config::from_toml_str(&text, &path.display().to_string())?,
                Some(path),
            )),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Config::default(), None))
            }
            Err(e) => Err(ConfigError {
                origin: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read the config file: {e}"),
            }),
        }
    }

    /// The API base URL in force (override, else the region's host).
    pub fn effective_api_base_url(&self) -> &str {
        self.api_base_url
            .as_deref()
            .unwrap_or_else(|| self.region.api_base_url())
    }

    /// The LWA token URL in force: the override; else `<api_base_url>/auth/o2/token`
    /// when the API base URL is overridden (one sandbox URL serves everything);
    /// else the region's.
    pub fn effective_token_url(&self) -> String {
        match (&self.token_url, &self.api_base_url) {
            (Some(t), _) => t.clone(),
            (None, Some(base)) => format!("{base}/auth/o2/token"),
            (None, None) => self.region.token_url().to_string(),
        }
    }

    /// The LWA authorization page in force: the override; else
    /// `<api_base_url>/ap/oa` when the API base URL is overridden (the
    /// sandbox); else the region's.
    pub fn effective_authorize_url(&self) -> String {
        match (&self.authorize_url, &self.api_base_url) {
            (Some(a), _) => a.clone(),
            (None, Some(base)) => format!("{base}/ap/oa"),
            (None, None) => self.region.authorize_url().to_string(),
        }
    }

    /// The LWA redirect URI in force: the configured one, else
    /// `http://127.0.0.1:<listen port>/api/login/callback` (the agent's own
    /// listener; `amc-sync login` listens there itself when no agent runs).
    pub fn effective_redirect_uri(&self) -> String {
        self.redirect_uri.clone().unwrap_or_else(|| {
            format!("http://127.0.0.1:{}/api/login/callback", self.listen.port())
        })
    }

    /// The LWA scope in force (default `advertising::campaign_management`).
    pub fn effective_scope(&self) -> &str {
        self.scope
            .as_deref()
            .unwrap_or(crate::amazon::lwa::DEFAULT_SCOPE)
    }
}

/// Checks an LWA redirect URI: `http://` on a loopback host (`127.0.0.1`,
/// `[::1]`, `localhost`) with an explicit port and a path — the loopback
/// redirect of RFC 8252 §7.3 that `amc-sync login` can listen on.
///
/// # Errors
/// What is wrong, as a message.
pub fn validate_redirect_uri(uri: &str) -> Result<(SocketAddr, String), String> {
    let rest = uri.strip_prefix("http://").ok_or_else(|| {
        format!("redirect_uri {uri:?} must start with http:// (a loopback address)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, p) = r
            .split_once("]:")
            .ok_or_else(|| format!("redirect_uri {uri:?} needs a port"))?;
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| format!("redirect_uri {uri:?} needs an explicit port, e.g. http://127.0.0.1:8787/api/login/callback"))?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("redirect_uri {uri:?}: invalid port"))?;
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        h => h.parse().map_err(|_| {
            format!("redirect_uri {uri:?} must use a loopback host (127.0.0.1, [::1] or localhost)")
        })?,
    };
    if !ip.is_loopback() || port == 0 {
        return Err(format!(
            "redirect_uri {uri:?} must use a loopback host and a non-zero port"
        ));
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "redirect_uri {uri:?} must not have a query or fragment"
        ));
    }
    Ok((SocketAddr::new(ip, port), path.to_string()))
}

/// The config's audience rules: the same as `amc-sync audiences create` and
/// `POST /api/audiences` ([`crate::agent::audiences::validate`], one place),
/// plus the config-only `name` (10–128 characters).
fn validate_audience(a: &AudienceConfig) -> Result<(), String> {
    if let Some(n) = &a.name {
        let len = n.chars().count();
        if !(10..=128).contains(&len) {
            return Err(format!(
                "audience {:?}: name must be 10–128 characters",
                a.key
            ));
        }
    }
    let input = crate::agent::audiences::AudienceInput {
        key: a.key.clone(),
        country_code: a.country_code.clone(),
        description: Some(a.description.clone()),
        advertiser_id: a.advertiser_id.as_ref().map(|d| d.0.clone()),
        connection_id: a.connection_id.clone(),
        external_audience_id: a.external_audience_id.clone(),
        ttl_secs: a.ttl_secs,
        cpm_cents: a.cpm_cents,
        currency: a.currency.clone(),
    };
    crate::agent::audiences::validate(input)
        .map(|_| ())
        .map_err(|e| {
            // The config spells fields in snake_case.
            let mut field = String::new();
            for ch in e.field.chars() {
                if ch.is_ascii_uppercase() {
                    field.push('_');
                    field.push(ch.to_ascii_lowercase());
                } else {
                    field.push(ch);
                }
            }
            let mut message = e.message.clone();
            for (api, cfg) in [
                ("advertiserId", "advertiser_id"),
                ("connectionId", "connection_id"),
                ("cpmCents", "cpm_cents"),
                ("ttlSecs", "ttl_secs"),
                ("countryCode", "country_code"),
                ("externalAudienceId", "external_audience_id"),
            ] {
                message = message.replace(api, cfg);
            }
            format!("audience {:?}: {field}: {message}", a.key)
        })
}

/// Per-OS locations from `directories` (qualifier `com`, organization
/// `AMC Sync`, application `amc-sync`).
pub fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("com", "AMC Sync", "amc-sync")
}

/// The default config file: `<OS config dir>/config.toml`
/// (Linux `~/.config/amc-sync/config.toml`).
pub fn default_config_file() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("config.toml"))
}

/// The data dir in force: `explicit`, else `$AMC_SYNC_DATA_DIR`, else the OS
/// data dir (Linux `~/.local/share/amc-sync`).
pub fn data_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_DATA_DIR).map(PathBuf::from))
        .or_else(|| project_dirs().map(|d| d.data_dir().to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(t, "test.toml")
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.effective_api_base_url(),
            "https://advertising-api.amazon.com"
        );
        assert_eq!(
            c.effective_token_url(),
            "https://api.amazon.com/auth/o2/token"
        );
    }

    #[test]
    fn full_example_parses_and_keeps_big_ids_exact() {
        let c = parse(
            r#"
region = "eu"
api_base_url = "http://127.0.0.1:9000/"
profile = "segment"
[schedule]
upload_interval_secs = 60
batch_size = 5000
[[audiences]]
key = "high_value_customers"
advertiser_id = 9223372036854775807
country_code = "DE"
cpm_cents = 150
currency = "EUR"
[[audiences]]
key = "churn_risk"
connection_id = "amzn1.conn.123"
country_code = "US"
"#,
        )
        .unwrap();
        assert_eq!(c.region, Region::EU);
        assert_eq!(c.profile, Profile::Segment);
        assert_eq!(
            c.effective_token_url(),
            "http://127.0.0.1:9000/auth/o2/token"
        );
        assert_eq!(c.schedule.batch_size, 5000);
        assert_eq!(
            c.audiences[0].advertiser_id,
            Some(DigitsId("9223372036854775807".into()))
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("region = \"NA\"\nbatch = 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        let e = parse("\n\nregion = \"XX\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("test.toml:3:"), "{e}");
        let e = parse("[[audiences]]\nkey = \"a\"\ncountry_code = \"US\"\n").unwrap_err();
        assert!(e.message.contains("advertiser_id"), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn secrets_are_refused_without_echoing_them() {
        let e = parse("client_secret = \"amzn1.oa2-cs.v1.canary\"\n").unwrap_err();
        assert!(e.message.contains("amc-sync login"), "{e}");
        assert!(!e.to_string().contains("canary"), "{e}");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn non_loopback_listen_needs_explicit_opt_in() {
        assert!(parse("listen = \"0.0.0.0:8787\"").is_err());
        let c = parse("listen = \"0.0.0.0:8787\"\nallow_non_loopback = true").unwrap();
        assert!(!c.listen.ip().is_loopback());
    }

    #[test]
    fn mappings_are_validated_with_their_line() {
        let c = parse("[[mappings]]\ntrigger = 'event = \"Joined\"'\n").unwrap();
        assert_eq!(c.mappings.mappings().len(), 1);
        let e = parse("region = \"NA\"\n[[mappings]]\ntrigger = 'event = '\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse("[[mappings]]\nbatch_size = 10\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for t in [
            "[schedule]\nbatch_size = 10001",
            "[schedule]\nupload_interval_secs = 1",
            "[[audiences]]\nkey = \"a\"\nadvertiser_id = \"12x\"\ncountry_code = \"US\"",
            "[[audiences]]\nkey = \"a\"\nadvertiser_id = 1\ncountry_code = \"USA\"",
            "[[audiences]]\nkey = \"a\"\nadvertiser_id = 1\ncountry_code = \"US\"\nttl_secs = 34300801",
            "[[audiences]]\nkey = \"a\"\nadvertiser_id = 1\ncountry_code = \"US\"\ncpm_cents = 1\ncurrency = \"BTC\"",
            "[[audiences]]\nkey = \"a\"\nadvertiser_id = 1\nconnection_id = \"c\"\ncountry_code = \"US\"",
            "api_base_url = \"ftp://x\"",
            "profile = \"google\"",
        ] {
            assert!(parse(t).is_err(), "accepted: {t}");
        }
    }

    #[test]
    fn config_audiences_follow_the_same_rules_as_the_cli_and_api() {
        let base = "[[audiences]]\nkey = \"vip\"\ncountry_code = \"US\"\n";
        let err = |extra: &str| {
            Config::from_toml_str(&format!("{base}{extra}"), "c.toml")
                .unwrap_err()
                .message
        };
        let both = err("advertiser_id = 1\nconnection_id = \"c\"\n");
        assert!(
            both.contains(
                "audience \"vip\": connection_id: give advertiser_id or connection_id, not both"
            ),
            "{both}"
        );
        assert!(err("advertiser_id = 1\ncurrency = \"USD\"\n").contains("cpm_cents"));
        assert!(err("connection_id = \"c\"\nname = \"short\"\n").contains("name must be 10"));
        assert!(Config::from_toml_str(&format!("{base}advertiser_id = 12\n"), "c.toml").is_ok());
    }
}
