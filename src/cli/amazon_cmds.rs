//! `amc-sync login --from-env`, `logout`, `flush`, `sandbox`: the commands
//! that talk to Amazon (or to the sandbox Amazon API).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use amc_sync::agent::credentials;
use amc_sync::agent::state::AgentState;
use amc_sync::amazon::{AmazonClient, ClientOptions};
use amc_sync::config::{Config, Region};
use amc_sync::sandbox::{self, SandboxOptions};
use amc_sync::store::{Store, Writer};
use amc_sync::sync::engine::{SyncEngine, SyncOptions};

use super::common::{Common, Failure, finish, open_store};

/// Where the Amazon Ads API is: overrides of the config.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Amazon Ads region (NA, EU, FE); overrides the config.
    #[arg(long, value_name = "REGION")]
    region: Option<Region>,
    /// Amazon Ads API base URL (e.g. the sandbox's); the LWA token URL then
    /// defaults to `<URL>/auth/o2/token`.
    #[arg(long, value_name = "URL")]
    api_base_url: Option<String>,
    /// LWA token URL (overrides the region's and the `--api-base-url` default).
    #[arg(long, value_name = "URL")]
    token_url: Option<String>,
}

impl ApiArgs {
    /// The `--region` given, if any.
    pub fn region(&self) -> Option<Region> {
        self.region
    }

    /// Applies the overrides to `cfg`.
    pub fn apply(&self, cfg: &mut Config) -> Result<(), Failure> {
        if let Some(r) = self.region {
            cfg.region = r;
        }
        for (flag, value, slot) in [
            ("--api-base-url", &self.api_base_url, &mut cfg.api_base_url),
            ("--token-url", &self.token_url, &mut cfg.token_url),
        ] {
            if let Some(u) = value {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(Failure::usage(format!(
                        "{flag} must be an http:// or https:// URL"
                    )));
                }
                *slot = Some(u.trim_end_matches('/').to_string());
            }
        }
        Ok(())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))
}

/// `amc-sync flush`
#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    api: ApiArgs,
    /// Wait until the upload jobs reach a terminal state.
    #[arg(long)]
    wait: bool,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `flush`: through the running agent's admin API, or in-process when
/// no agent runs on the data dir.
pub fn flush(args: FlushArgs) -> ExitCode {
    finish(flush_inner(args))
}

fn flush_inner(args: FlushArgs) -> Result<(), Failure> {
    let data_dir = args.common.data_dir()?;
    let db = data_dir.join(amc_sync::agent::state::DB_FILE);
    let running = Store::lock_holder(&db).is_some();
    if running {
        let state = AgentState::load(&data_dir)
            .map_err(|e| Failure::runtime(e.to_string()))?
            .ok_or_else(|| {
                Failure::runtime("an agent holds the data dir but left no agent.json")
            })?;
        let url = state.listen_url.ok_or_else(|| {
            Failure::runtime("the running agent has not published its address yet")
        })?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout + 10))
            .build()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let resp = runtime()?.block_on(async {
            let r = client
                .post(format!(
                    "{url}/api/flush?wait={}&timeout={}",
                    args.wait, args.timeout
                ))
                .bearer_auth(&state.admin_token)
                .send()
                .await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) =
            resp.map_err(|e| Failure::runtime(format!("cannot reach the agent at {url}: {e}")))?;
        if !status.is_success() {
            return Err(Failure::runtime(format!(
                "the agent answered {status}: {body}"
            )));
        }
        report_flush(args.json, &body);
        if let Some(auth) = body["status"]["auth"].as_str()
            && auth != "ok"
        {
            return Err(Failure::runtime(format!(
                "uploads cannot run ({auth}): run `amc-sync login`"
            )));
        }
        return flush_verdict(args.wait, &body);
    }
    // No agent: upload in-process.
    let (mut cfg, _) = args.common.load_config()?;
    args.api.apply(&mut cfg)?;
    let Some(loaded) =
        credentials::load(&data_dir, cfg.region).map_err(|e| Failure::runtime(e.to_string()))?
    else {
        // Exit 1, as with a running agent: a state to fix, not a wrong command line.
        return Err(Failure::runtime(
            "not logged in to Amazon Ads in this region: run `amc-sync login` first",
        ));
    };
    cfg.region = loaded.region;
    let creds = loaded.credentials;
    let store = open_store(&data_dir)?;
    let writer = Writer::spawn(store).map_err(|e| Failure::runtime(e.to_string()))?;
    let client = AmazonClient::new(&ClientOptions::from_config(&cfg), creds)
        .map_err(|e| Failure::runtime(format!("Amazon client: {e}")))?;
    let engine = SyncEngine::new(
        Some(client),
        writer.handle(),
        SyncOptions::from_config(&cfg),
        None,
        Some(data_dir.join(amc_sync::sync::engine::SYNC_STATE_FILE)),
    );
    let timeout = Duration::from_secs(args.timeout);
    let (report, open) = runtime()?.block_on(async {
        let report = engine.upload_round().await;
        let mut open = 0;
        if args.wait {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut every = Duration::from_millis(200);
            loop {
                open = engine.poll_jobs().await;
                if open == 0 || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(every).await;
                every = (every * 2).min(Duration::from_secs(10));
            }
        }
        (report, open)
    });
    let status = engine.handle().status();
    let pending: u64 = writer
        .handle()
        .call(|s| s.pending_counts())
        .map(|c| c.values().sum())
        .unwrap_or(0);
    let body = serde_json::json!({
        "flushed": open == 0 && pending == 0,
        "round": report,
        "pending": pending,
        "openJobs": open,
        "status": status,
    });
    drop(engine);
    let _ = writer.shutdown();
    report_flush(args.json, &body);
    if args.wait && status.auth == amc_sync::sync::engine::AuthState::Ok {
        flush_verdict(true, &body)?;
    }
    if status.auth != amc_sync::sync::engine::AuthState::Ok {
        return Err(Failure::runtime(format!(
            "uploads are paused: {}",
            status.last_error.unwrap_or_else(|| "log in again".into())
        )));
    }
    Ok(())
}

/// With `--wait`, exit 1 unless everything queued was delivered (the
/// reasons were printed by [`report_flush`]).
fn flush_verdict(wait: bool, body: &serde_json::Value) -> Result<(), Failure> {
    if !wait || body["flushed"] == true {
        return Ok(());
    }
    let pending = body["pending"].as_u64().unwrap_or(0);
    let open = body["openJobs"].as_u64().unwrap_or(0);
    Err(Failure::runtime(format!(
        "not everything was delivered: {pending} change(s) still queued, {open} upload job(s) still running (see `amc-sync status`)"
    )))
}

fn report_flush(json: bool, body: &serde_json::Value) {
    if json {
        println!("{body}");
        return;
    }
    let st = &body["status"];
    if let Some(r) = body.get("round") {
        println!(
            "uploaded {} record(s) in {} request(s); {} dead-lettered",
            r["uploaded"], r["requests"], r["deadLettered"]
        );
    }
    if body["flushed"] == true {
        println!("done: everything queued was delivered and every upload job finished");
    } else if body
        .get("openJobs")
        .is_some_and(|v| v.as_u64().unwrap_or(0) > 0)
    {
        println!("{} upload job(s) still running", body["openJobs"]);
    } else {
        println!("upload round requested");
    }
    if let Some(auds) = st.get("audiences").and_then(|v| v.as_object()) {
        for (key, a) in auds {
            if let Some(e) = a.get("lastError").and_then(|v| v.as_str()) {
                println!("  {key}: {e}");
            }
        }
    }
    match st.get("auth").and_then(|v| v.as_str()) {
        Some("needs_login") => println!("uploads paused: log in again (`amc-sync login`)"),
        Some("no_credentials") => {
            println!("no Amazon credentials: run `amc-sync login`")
        }
        _ => {}
    }
}

/// `amc-sync sandbox`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints one JSON line {base_url, token_url, authorize_url, client_id, client_secret,
refresh_token}, then serves until Ctrl+C. Point the agent at it:
  AMC_SYNC_CLIENT_ID=… AMC_SYNC_CLIENT_SECRET=… AMC_SYNC_REFRESH_TOKEN=… \\
    amc-sync run --api-base-url <base_url>
GET <base_url>/__sandbox/received lists every accepted record; POST /__sandbox/faults
injects faults at run time (e.g. {\"rate_limit\":3,\"retry_after\":\"2\"}).
Login with Amazon: GET /ap/oa approves at once (or shows Allow / Cancel with
--manual-consent) and redirects to a loopback redirect_uri; POST /__sandbox/revoke {}
revokes every refresh token (the next refresh answers invalid_grant); POST
/__sandbox/settings {\"autoApprove\":false} or {\"codeTtlSecs\":0} changes the login at run time.")]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8788")]
    listen: SocketAddr,
    /// Access-token lifetime, seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: u64,
    /// Status polls a job answers PENDING before finishing.
    #[arg(long, default_value_t = 1)]
    job_pending_polls: u32,
    /// Answer the next N API requests with 429 (Retry-After: --retry-after).
    #[arg(long, default_value_t = 0)]
    fault_rate_limit: u32,
    /// Retry-After seconds sent with injected 429s.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Answer the next N API requests with 503.
    #[arg(long, default_value_t = 0)]
    fault_server_error: u32,
    /// Reset the connection of the next N API requests.
    #[arg(long, default_value_t = 0)]
    fault_reset: u32,
    /// Answer the next N refresh-token grants with invalid_grant.
    #[arg(long, default_value_t = 0)]
    fault_invalid_grant: u32,
    /// Fixed LWA client id (default: random per start). With the two below, a
    /// restarted sandbox keeps accepting an agent's stored credentials.
    #[arg(long)]
    client_id: Option<String>,
    /// Fixed LWA client secret (default: random per start).
    #[arg(long)]
    client_secret: Option<String>,
    /// Fixed refresh token of the test user (default: random per start).
    #[arg(long)]
    refresh_token: Option<String>,
    /// Show a consent page (Allow / Cancel) at /ap/oa instead of approving at once.
    #[arg(long)]
    manual_consent: bool,
    /// Lifetime of authorization codes, seconds (Amazon: 300).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    code_ttl: u64,
}

/// Runs the sandbox Amazon API until Ctrl+C.
pub fn sandbox(args: SandboxArgs) -> ExitCode {
    finish((|| {
        let rt = runtime()?;
        rt.block_on(async {
            let mut opts = SandboxOptions {
                listen: args.listen,
                token_ttl: Duration::from_secs(args.token_ttl.max(1)),
                job_pending_polls: args.job_pending_polls,
                client_id: args.client_id.clone(),
                client_secret: args.client_secret.clone(),
                refresh_token: args.refresh_token.clone(),
                auto_approve: !args.manual_consent,
                code_ttl: Duration::from_secs(args.code_ttl),
                ..SandboxOptions::default()
            };
            opts.faults.rate_limit = args.fault_rate_limit;
            opts.faults.retry_after = args.retry_after.map(|s| s.to_string());
            opts.faults.server_error = args.fault_server_error;
            opts.faults.reset = args.fault_reset;
            opts.faults.invalid_grant = args.fault_invalid_grant;
            let sb = sandbox::try_start(opts).await.map_err(|e| {
                Failure::usage(format!("cannot start the sandbox on {}: {e}", args.listen))
            })?;
            sandbox::print_startup_line(&sb);
            let _ = tokio::signal::ctrl_c().await;
            sb.shutdown().await;
            Ok(())
        })
    })())
}
