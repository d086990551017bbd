//! The running agent (`amc-sync run`): one store (locked per data dir), the
//! Segment-compatible HTTP intake and the watched drop folder, sharing one
//! [`Pipeline`]. Uploading to Amazon joins with the sync issue.
//!
//! Start-up order: data dir → state (write key) → store lock (a second agent
//! on the same data dir gets [`AgentError::Locked`]) → writer thread →
//! pipeline → listener → drop folder. Shutdown reverses it: stop accepting,
//! finish in-flight requests (each is acknowledged only after its commit),
//! stop the folder after its current chunk, then close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::agent::admin::{self, AdminState, AgentInfo};
use crate::agent::credentials;
use crate::agent::login::{self, LoginManager};
use crate::agent::pipeline::Pipeline;
use crate::agent::settings::Settings;
use crate::agent::state::{AgentState, DB_FILE, StateError};
use crate::amazon::{AmazonClient, ClientOptions, Credentials};
use crate::config::Config;
use crate::ingest::folder::{self, FolderError, FolderOptions};
use crate::ingest::http::{self, HttpState, WriteKey};
use crate::store::{Store, StoreError, Writer};
use crate::sync::engine::{
    ClientLoader, SYNC_STATE_FILE, SyncEngine, SyncHandle, SyncOptions, UploadTrigger,
};

/// What `amc-sync run` and the tests configure.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The validated configuration.
    pub config: Config,
    /// The data dir (created if missing).
    pub data_dir: PathBuf,
    /// Overrides the drop folder (`--drop-dir`).
    pub drop_dir: Option<PathBuf>,
    /// Overrides the write key (`--write-key`); it is saved as the data dir's key.
    pub write_key: Option<String>,
    /// Watch the drop folder (default true).
    pub watch_folder: bool,
    /// Overrides the drop folder's settle time (tests use short ones).
    pub folder_settle: Option<std::time::Duration>,
    /// Login with Amazon credentials; `None`: uploads wait (`no_credentials`).
    pub credentials: Option<Credentials>,
    /// Upload schedule and limits (default: from the config).
    pub sync: Option<SyncOptions>,
}

impl RunOptions {
    /// Options with defaults for `config` and `data_dir`.
    pub fn new(config: Config, data_dir: PathBuf) -> RunOptions {
        RunOptions {
            config,
            data_dir,
            drop_dir: None,
            write_key: None,
            watch_folder: true,
            folder_settle: None,
            credentials: None,
            sync: None,
        }
    }
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent holds this data dir.
    #[error("another AMC Sync agent{} is running on {}", .pid.map_or(String::new(), |p| format!(" (pid {p})")), .data_dir.display())]
    Locked {
        /// Its process id, when known.
        pid: Option<u32>,
        /// The data dir.
        data_dir: PathBuf,
    },
    /// The store failed.
    #[error("database: {0}")]
    Store(StoreError),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The drop folder could not be set up.
    #[error("drop folder: {0}")]
    Folder(#[from] FolderError),
    /// A file-system or network error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An invalid option.
    #[error("{0}")]
    Invalid(String),
}

impl AgentError {
    /// True for errors the user fixes by changing how the agent is started
    /// (CLI exit code 2); others are runtime failures (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, AgentError::Locked { .. } | AgentError::Invalid(_))
    }
}

/// Longest wait for a client's request headers (slowloris guard): 10 s.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Open connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// After a shutdown signal, in-flight requests get this long to finish
/// (each is acknowledged only after its commit), then connections are dropped.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Restricts a directory to its owner (the queue holds hashed PII).
fn make_private(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict the data dir to its owner");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Serves `router` over HTTP/1.1 with a header-read timeout, a connection
/// cap and a bounded graceful shutdown (axum's `serve` has neither timeouts
/// nor a shutdown deadline, so a slow client could hold the agent forever).
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(max = MAX_CONNECTIONS, "too many open connections; closing a new one");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let mut router = router.clone();
                        async move {
                            tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let stopping = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = stopping => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "shutdown grace period over; dropping open connections"
        );
        conns.abort_all();
    }
    Ok(())
}

/// How long `messageId`s are remembered for deduplication (client retries
/// arrive within minutes; Segment retries for up to a day): 7 days.
pub const DEDUP_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Forgets `messageId`s older than [`DEDUP_WINDOW_MS`], hourly.
async fn prune_seen_messages(writer: crate::store::WriterHandle) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let w = writer.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            w.call(move |s| s.prune_seen_messages(now - DEDUP_WINDOW_MS))
        })
        .await;
        match pruned {
            Ok(Ok(n)) if n > 0 => tracing::info!(pruned = n, "forgot old messageIds"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning messageIds"),
            _ => {}
        }
    }
}

/// An opened agent, ready to [`Agent::serve`].
pub struct Agent {
    data_dir: PathBuf,
    state: AgentState,
    writer: Writer,
    pipeline: Arc<Pipeline>,
    folder: Option<FolderOptions>,
    engine: SyncEngine,
    /// What the admin API reports (`listen` is set by [`Agent::serve`]).
    info: AgentInfo,
    /// The configuration (LWA URLs, redirect URI, scope for logins).
    config: Config,
    /// Where new LWA secrets go (`AMC_SYNC_SECRET_STORE`).
    secret_choice: crate::secrets::SecretChoice,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Opens the data dir: state, store (locked), writer, pipeline.
    ///
    /// # Errors
    /// [`AgentError::Locked`] when another agent runs on the data dir; store,
    /// state or I/O errors.
    pub fn open(opts: RunOptions) -> Result<Agent, AgentError> {
        let data_dir = opts.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::Io {
            context: format!("cannot create data dir {}", data_dir.display()),
            source,
        })?;
        make_private(&data_dir);
        let mut state = AgentState::load_or_create(&data_dir)?;
        if let Some(key) = opts.write_key.as_deref() {
            if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control()) {
                return Err(AgentError::Invalid(
                    "--write-key must be 1–256 printable characters".into(),
                ));
            }
            state.write_key = key.to_string();
        }
        // Dashboard settings (settings.json) override the config file.
        let settings = Settings::load(&data_dir).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let mut opts = opts;
        if let Some(p) = settings.profile {
            opts.config.profile = p;
        }
        if let Some(d) = &settings.drop_dir {
            opts.config.drop_dir = Some(d.clone());
        }
        if let Some(i) = settings.schedule_interval_secs {
            opts.config.schedule.upload_interval_secs = i;
        }
        let store = Store::open(data_dir.join(DB_FILE)).map_err(|e| match e {
            StoreError::Locked { pid, .. } => AgentError::Locked {
                pid,
                data_dir: data_dir.clone(),
            },
            other => AgentError::Store(other),
        })?;
        let writer = Writer::spawn(store).map_err(AgentError::Store)?;
        let pipeline =
            Arc::new(Pipeline::new(&opts.config, writer.handle()).map_err(AgentError::Store)?);
        let folder = opts.watch_folder.then(|| {
            let mut f = FolderOptions::from_config(&opts.config, &data_dir);
            if let Some(d) = &opts.drop_dir {
                f.dir.clone_from(d);
            }
            if let Some(s) = opts.folder_settle {
                f.settle = s;
            }
            f
        });
        if let Some(f) = &folder {
            // Fail before anything is announced when the folder is unusable.
            std::fs::create_dir_all(&f.dir).map_err(|e| {
                AgentError::Invalid(format!(
                    "cannot create the drop folder {}: {e}",
                    f.dir.display()
                ))
            })?;
        }
        // The active region: the connection's (login / region switch), else the config's.
        let default_region = opts.config.region;
        let active_region = credentials::Connection::load(&data_dir)
            .map(|c| c.active_region(default_region))
            .unwrap_or(default_region);
        let config = opts.config.clone();
        let client_for = move |region: crate::config::Region, c: Credentials| {
            let mut cfg = config.clone();
            cfg.region = region;
            AmazonClient::new(&ClientOptions::from_config(&cfg), c)
        };
        let initial = match opts.credentials {
            Some(c) => Some((c, active_region)),
            None => match credentials::load(&data_dir, default_region) {
                Ok(l) => l.map(|l| (l.credentials, l.region)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the Amazon credentials; uploads wait for a login");
                    None
                }
            },
        };
        let initial_fp = initial
            .as_ref()
            .map(|(c, r)| credentials::fingerprint(c, *r));
        let client = match initial {
            Some((c, region)) => Some(
                client_for(region, c)
                    .map_err(|e| AgentError::Invalid(format!("Amazon client: {e}")))?,
            ),
            None => None,
        };
        // `amc-sync login`, logout or a region switch while the agent runs:
        // picked up without a restart.
        let loader_dir = data_dir.clone();
        let loader: ClientLoader = Arc::new(move || {
            let l = credentials::load(&loader_dir, default_region).ok()??;
            let fp = credentials::fingerprint(&l.credentials, l.region);
            client_for(l.region, l.credentials)
                .ok()
                .map(|client| (fp, client))
        });
        let sync_opts = opts
            .sync
            .unwrap_or_else(|| SyncOptions::from_config(&opts.config));
        let trigger = UploadTrigger::new(sync_opts.batch_size as u64);
        pipeline.set_upload_trigger(trigger.clone());
        let engine = SyncEngine::new(
            client,
            writer.handle(),
            sync_opts,
            Some(trigger),
            Some(data_dir.join(SYNC_STATE_FILE)),
        )
        .with_client_loader(loader, initial_fp);
        if settings.paused {
            engine.handle().set_paused(true);
        }
        let info = AgentInfo {
            region: opts.config.region,
            listen: format!("http://{}", opts.config.listen),
            drop_dir: folder.as_ref().map(|f| f.dir.clone()),
            batch_size: opts.config.schedule.batch_size,
            profile: opts.config.profile,
        };
        let secret_choice = crate::secrets::SecretChoice::from_env()
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        Ok(Agent {
            data_dir,
            state,
            writer,
            pipeline,
            folder,
            engine,
            info,
            config: opts.config,
            secret_choice,
        })
    }

    /// The Segment write key clients must send.
    pub fn write_key(&self) -> &str {
        &self.state.write_key
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The watched drop folder, when enabled.
    pub fn drop_dir(&self) -> Option<&Path> {
        self.folder.as_ref().map(|f| f.dir.as_path())
    }

    /// The sync engine's handle (flush, status).
    pub fn sync(&self) -> SyncHandle {
        self.engine.handle()
    }

    /// The admin API token.
    pub fn admin_token(&self) -> &str {
        &self.state.admin_token
    }

    /// The shared intake pipeline.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline.clone()
    }

    /// Serves until `shutdown` completes, then stops cleanly. Records the
    /// listen address and pid in `agent.json` while running.
    ///
    /// # Errors
    /// Folder set-up, state file, or server errors.
    pub async fn serve(
        mut self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let addr: SocketAddr = listener.local_addr().map_err(|source| AgentError::Io {
            context: "cannot read the listen address".into(),
            source,
        })?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let folder_thread = match self.folder.clone() {
            Some(f) => Some(folder::spawn(self.pipeline.clone(), f, stop_rx.clone())?),
            None => None,
        };
        self.state.listen_url = Some(format!("http://{addr}"));
        self.state.pid = Some(std::process::id());
        self.state.save(&self.data_dir)?;
        tracing::info!(listen = %addr, "intake listening");
        let pruner = tokio::spawn(prune_seen_messages(self.writer.handle()));
        let sync = self.engine.handle();
        // Shared with the admin API, which can rotate it.
        let write_key = WriteKey::new(&self.state.write_key);
        self.info.listen = format!("http://{addr}");
        // Logins redirect to this listener unless the config names another URI.
        let mut login_cfg = self.config.clone();
        if let Some(uri) = &login_cfg.redirect_uri
            && let Ok((redirect, _)) = crate::config::validate_redirect_uri(uri)
            && redirect.port() != addr.port()
        {
            tracing::warn!(redirect_uri = %uri, listen = %addr,
                "redirect_uri does not point at this agent: logins started here (tray, dashboard) \
                 will not come back; register and configure http://127.0.0.1:{}/api/login/callback", addr.port());
        }
        if login_cfg.redirect_uri.is_none() {
            login_cfg.redirect_uri = Some(format!(
                "http://127.0.0.1:{}/api/login/callback",
                addr.port()
            ));
        }
        let reload = sync.clone();
        let login_manager = LoginManager::new(self.data_dir.clone(), login_cfg, self.secret_choice)
            .map_err(|e| AgentError::Invalid(format!("login: {e}")))?
            .with_listen_port(addr.port())
            .on_change(Arc::new(move || reload.reload_credentials()));
        let token: Arc<str> = Arc::from(self.state.admin_token.as_str());
        #[allow(clippy::result_large_err)] // the refusal is the ready response
        let login_routes = login::LoginRoutes {
            manager: Arc::new(login_manager),
            sync: sync.clone(),
            guard: Arc::new(move |h| {
                admin::authorized(&token, h).map_err(axum::response::IntoResponse::into_response)
            }),
            host_guard: Arc::new(|h| {
                admin::check_loopback(h).map_err(axum::response::IntoResponse::into_response)
            }),
        };
        let router = http::router(HttpState {
            pipeline: self.pipeline.clone(),
            write_key: write_key.clone(),
        })
        .merge(login::router(login_routes))
        .merge(admin::router(AdminState::new(
            &self.state.admin_token,
            sync.clone(),
            self.writer.handle(),
            write_key.clone(),
            self.pipeline.clone(),
            self.data_dir.clone(),
            self.info.clone(),
        )));
        let engine_task = tokio::spawn(self.engine.run(stop_rx.clone()));
        let served = serve_http(listener, router, shutdown).await;
        tracing::info!("shutting down");
        pruner.abort();
        let _ = stop_tx.send(true);
        let _ = engine_task.await;
        if let Some(t) = folder_thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.state.listen_url = None;
        self.state.pid = None;
        // Keep a key rotated through the admin API.
        self.state.write_key = write_key.get().to_string();
        let saved = self.state.save(&self.data_dir);
        drop(self.pipeline);
        if let Err(e) = self.writer.shutdown() {
            tracing::warn!(error = %e, "closing the database");
        }
        served.map_err(|source| AgentError::Io {
            context: "HTTP server".into(),
            source,
        })?;
        saved?;
        Ok(())
    }
}
