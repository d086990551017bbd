//! `amc-sync run`: the agent (HTTP intake, drop folder, scheduled uploads).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use amc_sync::agent::runtime::{Agent, RunOptions};

use super::common::{Common, Failure, finish};
use super::logging::{self, LogFormat};

/// `amc-sync run`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Point Segment SDKs at the printed address (their `host` option) with the printed write key,
or drop NDJSON / JSON / CSV files into the drop folder. Stop with Ctrl+C (or SIGTERM):
requests in flight finish and are committed first.")]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Listen address of the Segment-compatible intake (overrides the config; default
    /// 127.0.0.1:8787; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Watched drop folder (overrides the config; default <data dir>/drop).
    #[arg(long, value_name = "DIR")]
    drop_dir: Option<PathBuf>,
    /// Do not watch a drop folder.
    #[arg(long, conflicts_with = "drop_dir")]
    no_drop_folder: bool,
    #[command(flatten)]
    api: super::amazon_cmds::ApiArgs,
    /// Segment write key clients must send (default: the data dir's generated key).
    #[arg(long, value_name = "KEY")]
    write_key: Option<String>,
    /// Log format on stderr and in the log files.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Runs the agent until Ctrl+C / SIGTERM.
pub fn run(args: Args) -> ExitCode {
    finish(run_inner(args))
}

fn run_inner(args: Args) -> Result<(), Failure> {
    let (mut cfg, _) = args.common.load_config()?;
    if let Some(l) = args.listen {
        if !l.ip().is_loopback() && !cfg.allow_non_loopback {
            return Err(Failure::usage(format!(
                "--listen {l}: a non-loopback address exposes the intake to the network; \
                 set allow_non_loopback = true in the config to confirm"
            )));
        }
        cfg.listen = l;
    }
    args.api.apply(&mut cfg)?;
    let data_dir = args.common.data_dir()?;
    let (_guard, warning) = logging::init(args.log_format, Some(&data_dir.join("logs")));
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if !cfg.listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.listen, "listening on a non-loopback address without TLS");
    }
    let listen = cfg.listen;
    if let Some(region) = args.api.region() {
        // `run --region EU` switches the active region (kept for the next start).
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| Failure::runtime(format!("{}: {e}", data_dir.display())))?;
        amc_sync::agent::credentials::set_region(&data_dir, region)
            .map_err(|e| Failure::runtime(e.to_string()))?;
    }
    // An unreadable connection must not keep the intake down: warn, queue,
    // and let `login` / `logout` repair it.
    let credentials = match amc_sync::agent::credentials::load(&data_dir, cfg.region) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Amazon login; uploads wait for `amc-sync login`");
            eprintln!("warning: {e}");
            None
        }
    };
    let uploads = match &credentials {
        Some(l) => format!(
            "to {} ({}) every {} s or when {} records are queued (credentials from the {})",
            if cfg.api_base_url.is_some() {
                cfg.effective_api_base_url()
            } else {
                l.region.api_base_url()
            },
            l.region.as_str(),
            cfg.schedule.upload_interval_secs,
            cfg.schedule.batch_size,
            l.source.as_str()
        ),
        None => "paused: not logged in to Amazon Ads in this region (run `amc-sync login`); the queue keeps everything".to_string(),
    };
    let mut opts = RunOptions::new(cfg, data_dir);
    opts.drop_dir = args.drop_dir;
    opts.write_key = args.write_key;
    opts.watch_folder = !args.no_drop_folder;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let agent = Agent::open(opts).map_err(|e| {
            if e.is_usage() {
                Failure::usage(e.to_string())
            } else {
                Failure::runtime(e.to_string())
            }
        })?;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            Failure::usage(format!("cannot listen on {listen}: {e} (use --listen to pick another address)"))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        // The banner must not kill the agent when stdout is closed.
        let mut banner = format!(
            "AMC Sync agent running (pid {})\n  intake:      http://{addr}   (Segment `host`; write key {})\n",
            std::process::id(),
            agent.write_key()
        );
        if let Some(d) = agent.drop_dir() {
            banner.push_str(&format!("  drop folder: {}\n", d.display()));
        }
        banner.push_str(&format!(
            "  data dir:    {}\n  uploads:     {uploads}\nPress Ctrl+C to stop.\n",
            agent.data_dir().display()
        ));
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        }
        agent
            .serve(listener, shutdown_signal())
            .await
            .map_err(|e| Failure::runtime(e.to_string()))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
