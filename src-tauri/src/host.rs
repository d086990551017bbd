//! Runs the core agent in-process, the way `amc-sync run` does
//! (`src/cli/run.rs`): config + data dir, credentials, `Agent::open`, bind the
//! listener, `agent.serve(listener, shutdown)` on a tokio runtime on a
//! background thread. When another agent already holds the data dir, the tray
//! attaches to it instead (its address and admin token are in `agent.json`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use amc_sync::agent::runtime::{Agent, AgentError, RunOptions};
use amc_sync::agent::state::AgentState;
use amc_sync::amazon::Credentials;
use amc_sync::config::{self, Config};

/// Command-line options of the tray app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--data-dir DIR` (else `$AMC_SYNC_DATA_DIR`, else the OS data dir).
    pub data_dir: Option<PathBuf>,
    /// `--config FILE` (else `$AMC_SYNC_CONFIG`, else the OS config file).
    pub config: Option<PathBuf>,
    /// `--hidden`: start in the tray without opening the window (used by
    /// "Start at login").
    pub hidden: bool,
}

impl Options {
    /// Parses the arguments after the program name. Unknown arguments are
    /// ignored (WebDriver and desktop launchers may add their own).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Options {
        let mut o = Options::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            match name.as_str() {
                "--data-dir" => o.data_dir = inline.or_else(|| it.next()).map(PathBuf::from),
                "--config" => o.config = inline.or_else(|| it.next()).map(PathBuf::from),
                "--hidden" => o.hidden = true,
                _ => {}
            }
        }
        o
    }
}

/// The data dir in force (created if missing), like the CLI's `Common::data_dir`.
///
/// # Errors
/// No data dir can be determined or created.
pub fn data_dir(opts: &Options) -> Result<PathBuf, String> {
    let dir = config::data_dir(opts.data_dir.as_deref())
        .ok_or("no data directory: pass --data-dir or set AMC_SYNC_DATA_DIR")?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Loads the Login with Amazon credentials the agent starts with (the
/// environment first, then the data dir's secret store). The one place that
/// knows how credentials are loaded: re-point it when that changes.
///
/// # Errors
/// An unreadable connection file or a failing secret store (the message
/// never contains a secret).
pub fn load_credentials(data_dir: &Path, cfg: &Config) -> Result<Option<Credentials>, String> {
    amc_sync::agent::credentials::load(data_dir, cfg.region)
        .map(|loaded| loaded.map(|l| l.credentials))
        .map_err(|e| e.to_string())
}

/// Where the agent serves, once started.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The admin bearer token (from the agent or `agent.json`).
    pub token: String,
    /// The drop folder, when the agent watches one.
    pub drop_dir: Option<PathBuf>,
}

/// The agent the tray talks to.
#[derive(Debug)]
pub enum Hosted {
    /// Running in this process; stopped by [`InProcess::stop`].
    InProcess(InProcess),
    /// Another process (`amc-sync run`, or a tray on another desktop session)
    /// holds the data dir; the tray only talks to it.
    Attached {
        /// Its address and token.
        endpoint: Endpoint,
        /// Its pid, when recorded.
        pid: Option<u32>,
    },
}

impl Hosted {
    /// The agent's address and token.
    pub fn endpoint(&self) -> &Endpoint {
        match self {
            Hosted::InProcess(p) => &p.endpoint,
            Hosted::Attached { endpoint, .. } => endpoint,
        }
    }
}

/// The in-process agent: its thread and its stop signal.
#[derive(Debug)]
pub struct InProcess {
    /// Address and token.
    pub endpoint: Endpoint,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<Result<(), String>>>>,
}

impl InProcess {
    /// Asks the agent to stop (its `serve` shutdown future resolves); returns
    /// false when it was already asked or has stopped.
    pub fn stop(&self) -> bool {
        let tx = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        tx.is_some_and(|tx| tx.send(()).is_ok())
    }

    /// Takes the agent thread's handle (once), to wait for it to finish.
    pub fn take_thread(&self) -> Option<JoinHandle<Result<(), String>>> {
        self.thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What the agent thread reports once it listens (or why it could not start).
enum Started {
    Ready(Endpoint),
    Locked,
    Failed(String),
}

/// The loopback URL clients use for a listen address (an unspecified
/// address is reached through loopback).
pub fn loopback_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("http://[::1]:{}", a.port()),
        a => format!("http://{a}"),
    }
}

/// Loads config, data dir and credentials and starts the agent on a
/// background thread; attaches to a running agent when the data dir is taken.
///
/// Returns the agent and warnings to show (e.g. unreadable credentials).
///
/// # Errors
/// A config error, or an agent that could not start (message for the user).
pub fn start(opts: &Options, data_dir: &Path) -> Result<(Hosted, Vec<String>), String> {
    let (cfg, _) = Config::load(opts.config.as_deref()).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    let credentials = match load_credentials(data_dir, &cfg) {
        Ok(c) => c,
        Err(e) => {
            // The agent still queues everything; uploads wait for a login.
            tracing::warn!(error = %e, "cannot load the Amazon credentials");
            warnings.push(format!("cannot load the Amazon credentials: {e}"));
            None
        }
    };
    let listen = cfg.listen;
    let mut run = RunOptions::new(cfg, data_dir.to_path_buf());
    run.credentials = credentials;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Started>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("amc-sync-agent".into())
        .spawn(move || run_agent(run, listen, &ready_tx, stop_rx))
        .map_err(|e| format!("cannot start the agent thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Started::Ready(endpoint)) => Ok((
            Hosted::InProcess(InProcess {
                endpoint,
                stop: Mutex::new(Some(stop_tx)),
                thread: Mutex::new(Some(thread)),
            }),
            warnings,
        )),
        Ok(Started::Locked) => {
            let _ = thread.join();
            attach(data_dir).map(|h| (h, warnings))
        }
        Ok(Started::Failed(msg)) => {
            let _ = thread.join();
            Err(msg)
        }
        Err(_) => {
            // The thread ended without reporting: it panicked.
            let msg = match thread.join() {
                Ok(Err(m)) => m,
                _ => "the agent stopped unexpectedly".to_string(),
            };
            Err(msg)
        }
    }
}

/// The agent thread: a tokio runtime running `Agent::serve` until the tray
/// asks it to stop, or SIGINT/SIGTERM.
fn run_agent(
    run: RunOptions,
    listen: SocketAddr,
    ready: &std::sync::mpsc::Sender<Started>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("amc-sync-rt")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("cannot start the runtime: {e}");
            let _ = ready.send(Started::Failed(msg.clone()));
            return Err(msg);
        }
    };
    runtime.block_on(async move {
        let agent = match Agent::open(run) {
            Ok(a) => a,
            Err(AgentError::Locked { .. }) => {
                let _ = ready.send(Started::Locked);
                return Ok(());
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = ready.send(Started::Failed(msg.clone()));
                return Err(msg);
            }
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!(
                    "cannot listen on {listen}: {e} (set `listen` in the config to another address)"
                );
                let _ = ready.send(Started::Failed(msg.clone()));
                return Err(msg);
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("cannot read the listen address: {e}");
                let _ = ready.send(Started::Failed(msg.clone()));
                return Err(msg);
            }
        };
        tracing::info!(listen = %addr, data_dir = %agent.data_dir().display(), "agent started in the tray app");
        let _ = ready.send(Started::Ready(Endpoint {
            base_url: loopback_url(addr),
            token: agent.admin_token().to_string(),
            drop_dir: agent.drop_dir().map(Path::to_path_buf),
        }));
        let served = agent.serve(listener, shutdown_signal(stop)).await;
        tracing::info!("agent stopped");
        served.map_err(|e| e.to_string())
    })
}

/// Resolves when the tray asks the agent to stop (Quit), or on Ctrl+C / SIGTERM.
async fn shutdown_signal(stop: tokio::sync::oneshot::Receiver<()>) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = stop => {},
        () = ctrl_c => tracing::info!("interrupted"),
        () = term => tracing::info!("terminated"),
    }
}

/// Attaches to the agent that holds `data_dir` (address and token from its
/// `agent.json`).
fn attach(data_dir: &Path) -> Result<Hosted, String> {
    let state = AgentState::load(data_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("another process holds {}", data_dir.display()))?;
    let url = state.listen_url.clone().ok_or_else(|| {
        format!(
            "another AMC Sync process holds {} but is not serving (a running `ingest`?); try again later",
            data_dir.display()
        )
    })?;
    let base_url = url
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| url.strip_prefix("http://")?.parse::<SocketAddr>().ok())
        .map_or(url, loopback_url);
    tracing::info!(agent = %base_url, pid = ?state.pid, "another agent holds the data dir; attaching to it");
    Ok(Hosted::Attached {
        endpoint: Endpoint {
            base_url,
            token: state.admin_token.clone(),
            drop_dir: None,
        },
        pid: state.pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Options {
        Options::parse(a.iter().map(|s| (*s).to_string()))
    }

    #[test]
    fn parses_options_and_ignores_unknown_ones() {
        let o = parse(&[
            "--data-dir",
            "/d",
            "--automation",
            "--config=/c.toml",
            "--hidden",
        ]);
        assert_eq!(o.data_dir.as_deref(), Some(Path::new("/d")));
        assert_eq!(o.config.as_deref(), Some(Path::new("/c.toml")));
        assert!(o.hidden);
        assert_eq!(parse(&[]), Options::default());
    }

    #[test]
    fn loopback_urls() {
        assert_eq!(
            loopback_url("0.0.0.0:8787".parse().expect("addr")),
            "http://127.0.0.1:8787"
        );
        assert_eq!(
            loopback_url("127.0.0.1:9".parse().expect("addr")),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            loopback_url("[::]:9".parse().expect("addr")),
            "http://[::1]:9"
        );
    }
}
