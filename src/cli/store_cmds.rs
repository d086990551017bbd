//! `amc-sync status`, `dead-letters list`, `audiences list|create`: read and
//! manage the local store.

use std::process::ExitCode;

use amc_sync::agent::audiences::{self, AudienceInput};
use amc_sync::agent::credentials;
use amc_sync::agent::state::{AgentState, DB_FILE};
use amc_sync::store::{DeadLetterFilter, Store, Target};
use amc_sync::sync::engine::{AuthState, SYNC_STATE_FILE, SyncStatus};
use serde_json::json;

use super::common::{Common, Failure, finish, open_store, open_store_for_read};

/// `amc-sync status`
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Shows the write key, listen address, queue and dead letters.
pub fn status(args: StatusArgs) -> ExitCode {
    finish(status_inner(&args))
}

fn status_inner(args: &StatusArgs) -> Result<(), Failure> {
    let (cfg, cfg_source) = args.common.load_config()?;
    let data_dir = args.common.data_dir_no_create()?;
    let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
    // Read-only: a mistyped --data-dir must not create a new data dir and key.
    let state = match AgentState::load(&data_dir) {
        Ok(s) => s,
        Err(e) => return Err(Failure::runtime(e.to_string())),
    };
    let Some(state) = state else {
        if args.json {
            println!(
                "{}",
                json!({"dataDir": data_dir.display().to_string(), "initialized": false,
                       "agentRunning": false, "pending": {}, "pendingTotal": 0,
                       "deadLetters": {}, "deadLettersTotal": 0})
            );
        } else {
            println!(
                "no AMC Sync data in {} yet: start the agent there with `amc-sync run` \
                 (it creates the write key), or check --data-dir / AMC_SYNC_DATA_DIR",
                data_dir.display()
            );
            let conn = credentials::Connection::load(&data_dir).unwrap_or_default();
            let region = conn.active_region(cfg.region);
            if let Some(store) = conn.secret_store {
                println!(
                    "amazon:      region {}, logged in to {}   secrets: {}",
                    region.as_str(),
                    conn.regions
                        .keys()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    store.as_str()
                );
            }
        }
        return Ok(());
    };
    let opened = open_store_for_read(&data_dir)?;
    let (pending, dead, audiences, agent_pid) = match &opened {
        Some((store, pid)) => (
            store.pending_counts().map_err(rt)?,
            store.dead_letter_counts().map_err(rt)?,
            store.audiences().map_err(rt)?,
            *pid,
        ),
        None => Default::default(),
    };
    let (uploads, jobs) = match &opened {
        Some((store, _)) => (
            store.upload_counts().map_err(rt)?,
            store.recent_jobs(10).map_err(rt)?,
        ),
        None => Default::default(),
    };
    let sync: Option<SyncStatus> = std::fs::read(data_dir.join(SYNC_STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // connection.json only (no keychain access for a status line).
    let conn = credentials::Connection::load(&data_dir).unwrap_or_default();
    let region = conn.active_region(cfg.region);
    let env_creds = credentials::from_env().is_some();
    let has_credentials = env_creds || conn.regions.contains_key(&region);
    let secret_store = if env_creds {
        Some("environment")
    } else {
        conn.secret_store
            .map(amc_sync::secrets::SecretBackend::as_str)
    };
    // A running agent's engine knows best (its credentials may have come
    // from the environment it was started with, or from `amc-sync demo`).
    let auth = match (&sync, has_credentials) {
        (Some(s), _) if agent_pid.is_some() => s.auth,
        (_, false) => AuthState::NoCredentials,
        _ => AuthState::Ok,
    };
    let listen = match (&state.listen_url, agent_pid) {
        (Some(url), Some(_)) => url.clone(),
        _ => format!("http://{}", cfg.listen),
    };
    if args.json {
        let v = json!({
            "dataDir": data_dir.display().to_string(),
            "initialized": true,
            "database": data_dir.join(DB_FILE).display().to_string(),
            "config": cfg_source.map(|p| p.display().to_string()),
            "agentRunning": agent_pid.is_some(),
            "agentPid": agent_pid.filter(|p| *p != 0),
            "writeKey": state.write_key,
            "listen": listen,
            "region": region.as_str(),
            "secretStore": secret_store,
            "secretStoreWarning": conn.secret_store_warning,
            "profiles": conn.regions.get(&region).map(|l| l.profiles.clone()).unwrap_or_default(),
            "profile": cfg.profile.as_str(),
            "pending": pending,
            "pendingTotal": pending.values().sum::<u64>(),
            "deadLetters": dead,
            "deadLettersTotal": dead.values().sum::<u64>(),
            "auth": auth,
            "lastUploadMs": sync.as_ref().and_then(|s| s.last_upload_ms),
            "nextUploadMs": if agent_pid.is_some() { sync.as_ref().and_then(|s| s.next_upload_ms) } else { None },
            "lastError": sync.as_ref().and_then(|s| s.last_error.clone()),
            "audiences": audiences.iter().map(|a| {
                let u = uploads.get(&a.key).cloned().unwrap_or_default();
                let s = sync.as_ref().and_then(|s| s.audiences.get(&a.key));
                json!({
                    "key": a.key, "audienceId": a.audience_id, "countryCode": a.country_code,
                    "pending": pending.get(&a.key).copied().unwrap_or(0),
                    "uploaded": u.uploaded, "failed": u.failed, "openJobs": u.open_jobs,
                    "lastError": s.and_then(|s| s.last_error.clone()),
                    "backoffUntilMs": s.and_then(|s| s.backoff_until_ms),
                })
            }).collect::<Vec<_>>(),
            "jobs": jobs,
        });
        println!("{v}");
        return Ok(());
    }
    println!("AMC Sync — data dir {}", data_dir.display());
    match agent_pid {
        Some(p) if p != 0 => println!("agent:       running (pid {p})"),
        Some(_) => println!("agent:       running"),
        None => println!("agent:       not running (start it with `amc-sync run`)"),
    }
    println!("listen:      {listen}  (Segment host for SDKs)");
    println!("write key:   {}", state.write_key);
    println!(
        "region:      {}   profile: {}",
        region.as_str(),
        cfg.profile
    );
    let auth_text = match auth {
        AuthState::Ok => "ok",
        AuthState::NeedsLogin => {
            "NEEDS LOGIN — uploads paused, the queue keeps growing (run `amc-sync login`)"
        }
        AuthState::NoCredentials => {
            "not logged in to Amazon Ads in this region — uploads wait (run `amc-sync login`)"
        }
    };
    println!("amazon:      {auth_text}");
    if let Some(store) = secret_store {
        let profiles = conn.regions.get(&region).map_or(0, |l| l.profiles.len());
        println!(
            "secrets:     {store}{}   profiles: {profiles}",
            if store == "file" {
                " (credentials.json in the data dir: no OS keychain was available)"
            } else {
                ""
            }
        );
        #[cfg(unix)]
        if store == "file" {
            use std::os::unix::fs::PermissionsExt;
            let file = data_dir.join(amc_sync::secrets::SECRETS_FILE);
            if let Ok(m) = std::fs::metadata(&file)
                && m.permissions().mode() & 0o077 != 0
            {
                println!(
                    "             WARNING: {} is readable by other users (mode {:o}): run `chmod 600` on it",
                    file.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
    }
    if let Some(s) = &sync {
        let when = |ms: Option<i64>| {
            ms.map_or("—".to_string(), |t| {
                let ago = (now_ms() - t) / 1000;
                if ago >= 0 {
                    format!("{ago} s ago")
                } else {
                    format!("in {} s", -ago)
                }
            })
        };
        println!(
            "uploads:     last {}, next {}",
            when(s.last_upload_ms),
            if agent_pid.is_some() {
                when(s.next_upload_ms)
            } else {
                "when the agent runs".into()
            }
        );
    }
    println!(
        "queue:       {} pending change(s)",
        pending.values().sum::<u64>()
    );
    for a in &audiences {
        let u = uploads.get(&a.key).cloned().unwrap_or_default();
        println!(
            "  {:<32} {:>9} pending {:>9} uploaded {:>6} failed   audienceId {}",
            a.key,
            pending.get(&a.key).copied().unwrap_or(0),
            u.uploaded,
            u.failed,
            a.audience_id
                .as_deref()
                .unwrap_or("(created on first upload)")
        );
        if let Some(e) = sync
            .as_ref()
            .and_then(|s| s.audiences.get(&a.key))
            .and_then(|x| x.last_error.as_deref())
        {
            println!("      last error: {e}");
        }
    }
    let open = jobs
        .iter()
        .filter(|j| {
            !matches!(
                j.state.as_str(),
                "SUCCEEDED" | "PARTIALLYSUCCEEDED" | "FAILED" | "COMPLETED"
            )
        })
        .count();
    if open > 0 {
        println!("jobs:        {open} upload job(s) running at Amazon");
    }
    let total_dead: u64 = dead.values().sum();
    println!("dead letters: {total_dead}");
    for (reason, n) in &dead {
        println!("  {reason:<32} {n:>10}");
    }
    if total_dead > 0 {
        println!("  (details: amc-sync dead-letters list)");
    }
    Ok(())
}

fn rt(e: impl std::fmt::Display) -> Failure {
    Failure::runtime(e.to_string())
}

/// `amc-sync dead-letters …`
#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters (newest last): reason code, source, message, hashed payload.
    List {
        #[command(flatten)]
        common: Common,
        /// Only this reason code (e.g. consent_required).
        #[arg(long)]
        reason: Option<String>,
        /// At most this many entries (1–100,000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters with a complete hashed payload (refused at upload) back in the
    /// queue. Input errors (bad events) keep no data and must be sent again by the source.
    Retry {
        #[command(flatten)]
        common: Common,
        /// Only this reason code (e.g. amazon_rejected_record).
        #[arg(long)]
        reason: Option<String>,
        /// Only these dead-letter ids (as shown by `dead-letters list`).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a dead-letters subcommand.
pub fn dead_letters(cmd: DeadLettersCommand) -> ExitCode {
    let (common, reason, limit, json) = match cmd {
        DeadLettersCommand::List {
            common,
            reason,
            limit,
            json,
        } => (common, reason, limit, json),
        DeadLettersCommand::Retry {
            common,
            reason,
            ids,
            json,
        } => return finish(retry(&common, reason, ids, json)),
    };
    finish((|| {
        let data_dir = common.data_dir_no_create()?;
        let Some((store, _)) = open_store_for_read(&data_dir)? else {
            if json {
                println!("[]");
            } else {
                println!("no dead letters (no database yet)");
            }
            return Ok(());
        };
        let filter = DeadLetterFilter {
            reason: reason.clone(),
            limit,
            ..Default::default()
        };
        let list = store.dead_letters(&filter).map_err(rt)?;
        if json {
            println!("{}", serde_json::to_string(&list).map_err(rt)?);
            return Ok(());
        }
        if list.is_empty() {
            match &reason {
                Some(r) => {
                    let known = store.dead_letter_counts().map_err(rt)?;
                    let names: Vec<&str> = known.keys().map(String::as_str).collect();
                    println!(
                        "no dead letters with reason {r:?} (reasons present: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    );
                }
                None => println!("no dead letters"),
            }
        }
        for d in &list {
            let p = d.payload.as_ref();
            println!(
                "#{:<6} {:<28} {:<6} {}{}{}",
                d.id,
                d.reason,
                d.source.as_str(),
                d.message,
                p.and_then(|p| p.line)
                    .map_or(String::new(), |l| format!("  (line {l})")),
                p.and_then(|p| p.external_user_id.as_deref())
                    .map_or(String::new(), |u| format!("  externalUserId {u}")),
            );
        }
        Ok(())
    })())
}

/// `amc-sync audiences …`
#[derive(Debug, clap::Subcommand)]
pub enum AudiencesCommand {
    /// List local audiences and their Amazon audienceIds.
    List {
        #[command(flatten)]
        common: Common,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a local audience; it is created at Amazon on its first upload.
    Create(CreateArgs),
    /// Point a local audience at another Amazon audienceId, or forget it (`--clear`)
    /// so the next upload creates the audience at Amazon again (fixes 404 "Audience
    /// not found" after a region/account change). Stop the agent first.
    SetId {
        #[command(flatten)]
        common: Common,
        /// Local audience key.
        #[arg(long)]
        key: String,
        /// The Amazon audienceId (digits).
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        audience_id: Option<String>,
        /// Forget the Amazon audienceId.
        #[arg(long)]
        clear: bool,
    },
}

/// `amc-sync audiences create`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["advertiser_id", "connection_id"])))]
pub struct CreateArgs {
    #[command(flatten)]
    common: Common,
    /// Local key: the Segment computation_key or the CSV file's audience name.
    #[arg(long)]
    key: String,
    /// Amazon DSP advertiser id (digits).
    #[arg(long)]
    advertiser_id: Option<String>,
    /// AMC connection id.
    #[arg(long)]
    connection_id: Option<String>,
    /// ISO 3166-1 alpha-2 country of the members.
    #[arg(long)]
    country: String,
    /// Description (≤ 1,000 characters).
    #[arg(long)]
    description: String,
    /// Amazon `externalAudienceId` (default: the key).
    #[arg(long)]
    external_audience_id: Option<String>,
    /// Membership TTL in seconds (0–34,300,800).
    #[arg(long)]
    ttl: Option<u32>,
    /// Audience fee, CPM in cents (needs --currency).
    #[arg(long, requires = "currency")]
    cpm_cents: Option<u32>,
    /// Fee currency (AED AUD CAD CNY EUR GBP INR JPY MXN SAR SEK TRY USD).
    #[arg(long, requires = "cpm_cents")]
    currency: Option<String>,
    /// Print the created audience as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs an audiences subcommand.
pub fn audiences(cmd: AudiencesCommand) -> ExitCode {
    match cmd {
        AudiencesCommand::List { common, json } => finish((|| {
            let data_dir = common.data_dir_no_create()?;
            let list = match open_store_for_read(&data_dir)? {
                Some((s, _)) => s.audiences().map_err(rt)?,
                None => Vec::new(),
            };
            if json {
                println!("{}", serde_json::to_string(&list).map_err(rt)?);
                return Ok(());
            }
            if list.is_empty() {
                println!(
                    "no audiences yet (they are created from the config, from Segment audience_settings, or with `amc-sync audiences create`)"
                );
            }
            for a in &list {
                let target = match &a.target {
                    Target::AdvertiserId(id) => format!("advertiserId {id}"),
                    Target::ConnectionId(c) => format!("connectionId {c}"),
                };
                println!(
                    "{:<32} {:<3} {:<36} audienceId {}",
                    a.key,
                    a.country_code,
                    target,
                    a.audience_id.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        })()),
        AudiencesCommand::Create(args) => finish(create(args)),
        AudiencesCommand::SetId {
            common,
            key,
            audience_id,
            clear,
        } => finish((|| {
            let data_dir = common.data_dir_no_create()?;
            let mut store = open_store(&data_dir)?;
            let result = match (&audience_id, clear) {
                (Some(id), _) => store.set_amazon_audience_id(&key, id),
                (None, _) => store.clear_amazon_audience_id(&key),
            };
            result.map_err(|e| Failure::usage(e.to_string()))?;
            match audience_id {
                Some(id) => println!("audience {key:?} now uploads to Amazon audienceId {id}"),
                None => println!(
                    "audience {key:?} has no Amazon audienceId now; the next upload creates it at Amazon"
                ),
            }
            Ok(())
        })()),
    }
}

fn create(a: CreateArgs) -> Result<(), Failure> {
    // The same rules as `POST /api/audiences` (amc_sync::agent::audiences).
    let input = AudienceInput {
        key: a.key,
        country_code: a.country,
        description: Some(a.description),
        advertiser_id: a.advertiser_id,
        connection_id: a.connection_id,
        external_audience_id: a.external_audience_id,
        ttl_secs: a.ttl.map(u64::from),
        cpm_cents: a.cpm_cents.map(u64::from),
        currency: a.currency,
    };
    let new = audiences::validate(input).map_err(|e| {
        let flag = match e.field {
            "countryCode" => "--country",
            "advertiserId" => "--advertiser-id",
            "connectionId" => "--connection-id",
            "externalAudienceId" => "--external-audience-id",
            "ttlSecs" => "--ttl",
            "cpmCents" => "--cpm-cents",
            "currency" => "--currency",
            "description" => "--description",
            _ => "--key",
        };
        Failure::usage(format!("{flag}: {}", e.message))
    })?;
    let data_dir = a.common.data_dir()?;
    let mut store: Store = open_store(&data_dir)?;
    let created = store
        .create_audience(&new)
        .map_err(|e| Failure::usage(format!("cannot create audience: {e}")))?;
    if a.json {
        println!("{}", serde_json::to_string(&created).map_err(rt)?);
    } else {
        println!(
            "created local audience {:?} ({}); it is created at Amazon on its first upload",
            created.key, created.country_code
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn retry(
    common: &Common,
    reason: Option<String>,
    ids: Vec<i64>,
    json: bool,
) -> Result<(), Failure> {
    let data_dir = common.data_dir_no_create()?;
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(Failure::usage(format!(
            "no database in {}",
            data_dir.display()
        )));
    }
    let ids_opt = (!ids.is_empty()).then_some(ids);
    let out: serde_json::Value = if Store::lock_holder(&db).is_some() {
        let state = AgentState::load(&data_dir)
            .map_err(|e| Failure::runtime(e.to_string()))?
            .ok_or_else(|| Failure::runtime("the running agent left no agent.json"))?;
        let url = state
            .listen_url
            .ok_or_else(|| Failure::runtime("the running agent has not published its address"))?;
        let body = json!({"reason": reason, "ids": ids_opt});
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/dead-letters/retry"))
                .bearer_auth(&state.admin_token)
                .json(&body)
                .send()
                .await?;
            r.error_for_status()?.json::<serde_json::Value>().await
        })
        .map_err(|e| Failure::runtime(format!("the agent refused the retry: {e}")))?
    } else {
        let mut store = open_store(&data_dir)?;
        let filter = DeadLetterFilter {
            reason,
            ..Default::default()
        };
        let o = store
            .retry_dead_letters(&filter, ids_opt.as_deref())
            .map_err(rt)?;
        serde_json::to_value(o).map_err(rt)?
    };
    if json {
        println!("{out}");
    } else {
        println!(
            "re-queued {} dead letter(s); {} cannot be retried (input errors keep no data: fix and resend them at the source){}",
            out["requeued"],
            out["notRetryable"],
            if out["stale"].as_u64().unwrap_or(0) > 0 {
                format!(
                    "; {} were older than the user's current state",
                    out["stale"]
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
