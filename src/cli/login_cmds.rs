//! `amc-sync login`, `logout`, `region`: connect to Amazon Ads (Login with
//! Amazon, DESIGN.md 4.6/4.7). When an agent runs on the data dir these go
//! through its admin API (so the agent switches at once); otherwise they act
//! on the data dir directly, and `login` listens on the redirect URI itself.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use amc_sync::agent::credentials::{
    self, ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_REFRESH_TOKEN, NewLogin, ProfileSummary,
};
use amc_sync::agent::login::{Completed, LoginError, LoginManager, StartRequest, callback_page};
use amc_sync::agent::state::{AgentState, DB_FILE};
use amc_sync::amazon::{AmazonClient, ClientOptions, Secret};
use amc_sync::config::{Config, Region, validate_redirect_uri};
use amc_sync::secrets::SecretChoice;
use amc_sync::store::Store;

use super::amazon_cmds::ApiArgs;
use super::common::{Common, Failure, finish};

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))
}

/// The running agent's admin API (`url`, admin token), when an agent holds
/// the data dir.
fn running_agent(data_dir: &Path) -> Result<Option<(String, String)>, Failure> {
    if Store::lock_holder(data_dir.join(DB_FILE)).is_none() {
        return Ok(None);
    }
    let state = AgentState::load(data_dir)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| Failure::runtime("an agent holds the data dir but left no agent.json"))?;
    let url = state
        .listen_url
        .ok_or_else(|| Failure::runtime("the running agent has not published its address yet"))?;
    Ok(Some((url, state.admin_token)))
}

/// Calls the agent's admin API; a non-2xx answer becomes a Failure with the
/// agent's message.
async fn call_agent(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Failure::runtime(format!("cannot reach the agent: {e}")))?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(Failure::runtime(value["message"].as_str().map_or_else(
            || format!("the agent answered {status}"),
            str::to_string,
        )));
    }
    Ok(value)
}

/// `amc-sync login`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
One-time set-up: in your Login with Amazon security profile (developer.amazon.com → Login
with Amazon → your profile → Web Settings), add this Allowed Return URL:
    http://127.0.0.1:8787/api/login/callback
(or the `redirect_uri` of your config; the port must be free or be the agent's).

`amc-sync login` opens the Amazon sign-in page in your browser (or prints its address with
--no-browser, e.g. over SSH: open it on any machine, then the redirect must reach this host's
loopback port — use `ssh -L 8787:127.0.0.1:8787`). After you allow access, AMC Sync exchanges
the code (with state and PKCE), lists your advertising profiles in that region, and stores the
client secret and refresh token in the OS keychain (or, without one, in a 0600 file in the data
dir, with a warning). Nothing secret is printed. The client secret is read from
AMC_SYNC_CLIENT_SECRET, else the stored one, else asked for.

Non-interactive: export AMC_SYNC_CLIENT_ID, AMC_SYNC_CLIENT_SECRET and AMC_SYNC_REFRESH_TOKEN,
then `amc-sync login --from-env`.")]
pub struct LoginArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    api: ApiArgs,
    /// LWA client id (default: the stored one, else the config's `client_id`).
    #[arg(long, value_name = "ID", env = ENV_CLIENT_ID, hide_env_values = true)]
    client_id: Option<String>,
    /// Print the sign-in address instead of opening a browser.
    #[arg(long)]
    no_browser: bool,
    /// LWA scope (default: the config's, else advertising::campaign_management).
    #[arg(long)]
    scope: Option<String>,
    /// Longest wait for the browser, seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    timeout: u64,
    /// Import the credentials from AMC_SYNC_CLIENT_ID / _CLIENT_SECRET / _REFRESH_TOKEN.
    #[arg(long)]
    from_env: bool,
    /// With --from-env: save without checking them against Amazon.
    #[arg(long, requires = "from_env")]
    no_verify: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `login`.
pub fn login(args: LoginArgs) -> ExitCode {
    finish(login_inner(args))
}

fn print_completed(c: &Completed, json: bool) -> Result<(), Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string(c).map_err(|e| Failure::runtime(e.to_string()))?
        );
        return Ok(());
    }
    print_login(c.region, &c.profiles);
    match (&c.secret_store, &c.secret_store_warning) {
        (_, Some(w)) => eprintln!("warning: {w}"),
        (Some(amc_sync::secrets::SecretBackend::Keychain), None) => {
            println!("secrets stored in the OS keychain");
        }
        (Some(_), None) => println!(
            "secrets stored in the data dir's credentials.json (mode 0600; AMC_SYNC_SECRET_STORE=file)"
        ),
        (None, None) => {}
    }
    Ok(())
}

fn print_login(region: Region, profiles: &[ProfileSummary]) {
    println!(
        "Logged in to Amazon Ads ({}): {} advertising profile(s)",
        region.as_str(),
        profiles.len()
    );
    for p in profiles {
        println!(
            "  profile {}  {}  {}  {}",
            p.profile_id, p.country_code, p.currency_code, p.name
        );
    }
}

/// The client secret: the environment, else the stored one (`None`: let the
/// login reuse it), else asked for on the terminal (hidden) or read from stdin.
fn client_secret(data_dir: &Path, client_id: Option<&str>) -> Result<Option<Secret>, Failure> {
    if let Some(s) = std::env::var(ENV_CLIENT_SECRET)
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        return Ok(Some(Secret::new(s.trim())));
    }
    if let Ok(Some((id, _))) = credentials::stored_client(data_dir)
        && client_id.is_none_or(|c| c == id)
    {
        return Ok(None);
    }
    let secret = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("LWA client secret (input hidden): ")
            .map_err(|e| Failure::runtime(format!("cannot read the client secret: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::runtime(format!("cannot read the client secret: {e}")))?;
        line
    };
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err(Failure::usage(format!(
            "no client secret: set {ENV_CLIENT_SECRET} or type it when asked"
        )));
    }
    Ok(Some(Secret::new(secret)))
}

fn show_authorize_url(url: &str, no_browser: bool) {
    let opened = !no_browser && webbrowser::open(url).is_ok();
    if opened {
        eprintln!("Opened the Amazon sign-in page in your browser. If nothing appeared, open:");
    } else {
        eprintln!("Open this address in a browser and allow access:");
    }
    eprintln!("  {url}");
    eprintln!("Waiting for Amazon to redirect back… (Ctrl+C to cancel)");
}

fn login_inner(args: LoginArgs) -> Result<(), Failure> {
    let (mut cfg, _) = args.common.load_config()?;
    args.api.apply(&mut cfg)?;
    let data_dir = args.common.data_dir()?;
    if args.from_env {
        return login_from_env(&args, &cfg, &data_dir);
    }
    let region = args.api.region();
    let secret = client_secret(&data_dir, args.client_id.as_deref())?;
    if let Some((url, token)) = running_agent(&data_dir)? {
        return login_via_agent(&args, region, secret, &url, &token);
    }
    // No agent: listen on the redirect URI ourselves.
    let redirect = cfg.effective_redirect_uri();
    let (addr, path) = validate_redirect_uri(&redirect).map_err(Failure::usage)?;
    let choice = SecretChoice::from_env().map_err(|e| Failure::usage(e.to_string()))?;
    let manager = Arc::new(
        LoginManager::new(data_dir.clone(), cfg, choice)
            .map_err(|e| Failure::runtime(e.to_string()))?,
    );
    let started = manager
        .start(StartRequest {
            region,
            client_id: args.client_id.clone(),
            client_secret: secret,
            scope: args.scope.clone(),
        })
        .map_err(|e| Failure::usage(e.to_string()))?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::runtime(format!(
                "cannot listen on {addr} for the login redirect ({redirect}): {e}; \
                 stop what uses that port, or start the agent and log in through it"
            ))
        })?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Completed, String>>(1);
        let m = manager.clone();
        let app = axum::Router::new().route(
            &path,
            axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                let m = m.clone();
                let tx = tx.clone();
                async move {
                    let r = m.complete(q.as_deref().unwrap_or("")).await;
                    let page = callback_page(&r);
                    let ok = r.is_ok();
                    // A stray request (an old tab, another page) is not our
                    // login's answer: keep waiting for the real one.
                    let stray = matches!(
                        r,
                        Err(LoginError::StateMismatch | LoginError::MissingCode)
                    );
                    if !stray {
                        let _ = tx.send(r.map_err(|e| e.to_string())).await;
                    }
                    (
                        if ok {
                            axum::http::StatusCode::OK
                        } else {
                            axum::http::StatusCode::BAD_REQUEST
                        },
                        [
                            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                            (axum::http::header::CACHE_CONTROL, "no-store"),
                        ],
                        page,
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        show_authorize_url(&started.authorize_url, args.no_browser);
        let outcome = tokio::select! {
            r = rx.recv() => r.unwrap_or_else(|| Err("the login listener stopped".into())),
            () = tokio::time::sleep(Duration::from_secs(args.timeout)) => {
                Err(format!("no answer from the browser within {} s; run `amc-sync login` again", args.timeout))
            }
            _ = tokio::signal::ctrl_c() => Err("login cancelled".into()),
        };
        // Let the browser receive its page before the listener goes away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.abort();
        outcome.map_err(Failure::runtime)
    })?;
    print_completed(&result, args.json)
}

fn login_via_agent(
    args: &LoginArgs,
    region: Option<Region>,
    secret: Option<Secret>,
    url: &str,
    token: &str,
) -> Result<(), Failure> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    runtime()?.block_on(async {
        let mut body = serde_json::Map::new();
        if let Some(r) = region {
            body.insert("region".into(), r.as_str().into());
        }
        if let Some(c) = &args.client_id {
            body.insert("clientId".into(), c.clone().into());
        }
        if let Some(s) = &secret {
            body.insert("clientSecret".into(), s.expose().into());
        }
        if let Some(s) = &args.scope {
            body.insert("scope".into(), s.clone().into());
        }
        let started = call_agent(
            &http,
            reqwest::Method::POST,
            &format!("{url}/api/login/start"),
            token,
            Some(serde_json::Value::Object(body)),
        )
        .await?;
        let (Some(auth_url), Some(state)) =
            (started["authorizeUrl"].as_str(), started["state"].as_str())
        else {
            return Err(Failure::runtime("the agent did not start a login"));
        };
        if let Some(r) = started["redirectUri"].as_str() {
            eprintln!("Amazon will send the browser back to {r} (the running agent).");
        }
        show_authorize_url(auth_url, args.no_browser);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        let mut q = reqwest::Url::parse(&format!("{url}/api/login/status"))
            .map_err(|e| Failure::runtime(e.to_string()))?;
        q.query_pairs_mut().append_pair("state", state);
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::signal::ctrl_c() => return Err(Failure::runtime("login cancelled")),
            }
            let s = call_agent(&http, reqwest::Method::GET, q.as_str(), token, None).await?;
            match s["state"].as_str() {
                Some("ok") => {
                    let c: Completed = serde_json::from_value(s.clone())
                        .map_err(|e| Failure::runtime(format!("unexpected answer: {e}")))?;
                    return print_completed(&c, args.json);
                }
                Some("error") => {
                    return Err(Failure::runtime(
                        s["message"].as_str().unwrap_or("login failed").to_string(),
                    ));
                }
                Some("pending") => {}
                _ => return Err(Failure::runtime("the agent forgot the login (restarted?)")),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::runtime(format!(
                    "no answer from the browser within {} s; run `amc-sync login` again",
                    args.timeout
                )));
            }
        }
    })
}

fn login_from_env(args: &LoginArgs, cfg: &Config, data_dir: &Path) -> Result<(), Failure> {
    let Some(creds) = credentials::from_env() else {
        return Err(Failure::usage(format!(
            "set {ENV_CLIENT_ID}, {ENV_CLIENT_SECRET} and {ENV_REFRESH_TOKEN} (all three) for --from-env"
        )));
    };
    let region = args.api.region().unwrap_or_else(|| {
        credentials::Connection::load(data_dir)
            .map(|c| c.active_region(cfg.region))
            .unwrap_or(cfg.region)
    });
    let mut cfg = cfg.clone();
    cfg.region = region;
    let profiles: Vec<ProfileSummary> = if args.no_verify {
        Vec::new()
    } else {
        let client = AmazonClient::new(&ClientOptions::from_config(&cfg), creds.clone())
            .map_err(|e| Failure::runtime(format!("Amazon client: {e}")))?;
        runtime()?
            .block_on(client.list_profiles())
            .map_err(|e| Failure::runtime(format!("the credentials were not accepted: {e}")))?
            .iter()
            .map(ProfileSummary::from)
            .collect()
    };
    let choice = SecretChoice::from_env().map_err(|e| Failure::usage(e.to_string()))?;
    let conn = credentials::save_login(
        data_dir,
        &NewLogin {
            region,
            credentials: &creds,
            scope: cfg.effective_scope(),
            profiles: profiles.clone(),
        },
        choice,
    )
    .map_err(|e| Failure::runtime(e.to_string()))?;
    let completed = Completed {
        region,
        profiles,
        secret_store: conn.secret_store,
        secret_store_warning: conn.secret_store_warning,
    };
    if args.no_verify && !args.json {
        // Not checked against Amazon: do not claim a login.
        println!(
            "credentials saved for {} without checking them (--no-verify)",
            region.as_str()
        );
    } else {
        print_completed(&completed, args.json)?;
    }
    if !args.json {
        if matches!(running_agent(data_dir), Ok(Some(_))) {
            println!("the running agent uses the new login at once");
        } else {
            println!("start the agent with `amc-sync run` to upload");
        }
    }
    notify_agent(data_dir);
    Ok(())
}

/// Asks a running agent to reload its credentials (best effort: it also
/// reloads by itself while uploads are blocked).
fn notify_agent(data_dir: &Path) {
    let Ok(Some((url, token))) = running_agent(data_dir) else {
        return;
    };
    let Ok(rt) = runtime() else { return };
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return;
    };
    // PUT the current region: the agent re-reads the connection.
    let region = credentials::Connection::load(data_dir)
        .ok()
        .and_then(|c| c.region);
    if let Some(r) = region {
        let _ = rt.block_on(call_agent(
            &http,
            reqwest::Method::PUT,
            &format!("{url}/api/region"),
            &token,
            Some(serde_json::json!({"region": r.as_str()})),
        ));
    }
}

/// `amc-sync logout`
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    common: Common,
}

/// Runs `logout`: removes the client secret and refresh tokens from the
/// keychain (and the fallback file); a running agent pauses uploads.
pub fn logout(args: LogoutArgs) -> ExitCode {
    finish((|| {
        let data_dir = args.common.data_dir_no_create()?;
        if !data_dir.exists() {
            println!("not logged in (no data in {})", data_dir.display());
            return Ok(());
        }
        let removed = if let Some((url, token)) = running_agent(&data_dir)? {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Failure::runtime(e.to_string()))?;
            let v = runtime()?.block_on(call_agent(
                &http,
                reqwest::Method::POST,
                &format!("{url}/api/logout"),
                &token,
                None,
            ))?;
            v["secretsRemoved"].as_u64().unwrap_or(0)
        } else {
            u64::from(
                credentials::logout(&data_dir)
                    .map_err(|e| Failure::runtime(e.to_string()))?
                    .secrets_removed,
            )
        };
        if removed > 0 {
            println!("logged out: {removed} stored secret(s) removed; queued changes are kept");
        } else {
            println!("not logged in: no stored secrets");
        }
        if credentials::from_env().is_some() {
            eprintln!(
                "note: {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}/{ENV_REFRESH_TOKEN} are set in this environment and still take effect"
            );
        }
        Ok(())
    })())
}

/// `amc-sync region`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without REGION: shows the active region. With one: switches to it. The Amazon Ads API host
and the Login with Amazon hosts follow the region; queued changes are kept. Each region
needs its own login (`amc-sync login --region EU`); audiences are created again in the new
region at the next upload (an Amazon audience exists in one region only).")]
pub struct RegionArgs {
    #[command(flatten)]
    common: Common,
    /// NA, EU or FE.
    region: Option<Region>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `region`.
pub fn region(args: RegionArgs) -> ExitCode {
    finish((|| {
        let (cfg, _) = args.common.load_config()?;
        let data_dir = args.common.data_dir()?;
        let conn = match args.region {
            None => credentials::Connection::load(&data_dir),
            Some(r) => {
                if let Some((url, token)) = running_agent(&data_dir)? {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .map_err(|e| Failure::runtime(e.to_string()))?;
                    runtime()?.block_on(call_agent(
                        &http,
                        reqwest::Method::PUT,
                        &format!("{url}/api/region"),
                        &token,
                        Some(serde_json::json!({"region": r.as_str()})),
                    ))?;
                    credentials::Connection::load(&data_dir)
                } else {
                    credentials::set_region(&data_dir, r)
                }
            }
        }
        .map_err(|e| Failure::runtime(e.to_string()))?;
        let active = conn.active_region(cfg.region);
        let logged_in = conn.regions.contains_key(&active) || credentials::from_env().is_some();
        if args.json {
            println!(
                "{}",
                serde_json::json!({"region": active.as_str(), "loggedIn": logged_in})
            );
        } else {
            let mut c = cfg.clone();
            c.region = active;
            println!(
                "region {} ({}){}",
                active.as_str(),
                c.effective_api_base_url(),
                if logged_in {
                    ""
                } else {
                    " — not logged in there yet: run `amc-sync login`"
                }
            );
        }
        let _ = std::io::stdout().flush();
        Ok(())
    })())
}
