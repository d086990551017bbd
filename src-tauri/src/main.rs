//! AMC Sync tray app: runs the AMC Sync agent in-process (the `amc-sync`
//! library, exactly as `amc-sync run` does), shows its state in the system
//! tray and its dashboard (the agent's own `ui/`, served over loopback) in a
//! window. Menu actions call the agent's admin API (docs/admin-api.md).
//!
//! Usage: `amc-sync-tray [--data-dir DIR] [--config FILE] [--hidden]`
//! (or `AMC_SYNC_DATA_DIR` / `AMC_SYNC_CONFIG`, like the CLI).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod admin;
mod host;
mod status;
mod tray;
mod window;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use tauri::{Manager, RunEvent, WindowEvent};

use crate::tray::{Shared, TrayMenu};

/// Logs to stderr and `<data dir>/logs/amc-sync-tray.<date>.log`.
fn init_logging(dir: Option<&Path>) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let appender = dir.and_then(|d| {
        tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("amc-sync-tray")
            .filename_suffix("log")
            .build(d.join("logs"))
            .ok()
    });
    match appender {
        Some(a) => {
            let (nb, guard) = tracing_appender::non_blocking(a);
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr.and(nb))
                .with_ansi(false)
                .try_init();
            Some(guard)
        }
        None => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .try_init();
            None
        }
    }
}

/// Starts (or attaches to) the agent and returns the state shared by the UI.
/// Runs inside Tauri's setup, after the single-instance check, so a second
/// launch never starts an agent of its own.
fn start_agent(opts: &host::Options, data_dir: &Result<PathBuf, String>) -> Result<Shared, String> {
    let (hosted, warnings) = match data_dir {
        Ok(dir) => match host::start(opts, dir) {
            Ok((h, w)) => (Ok(h), w),
            Err(e) => (Err(e), Vec::new()),
        },
        Err(e) => (Err(e.clone()), Vec::new()),
    };
    if let Err(e) = &hosted {
        tracing::error!(error = %e, "the agent could not start");
    }
    Shared::new(hosted, warnings)
}

/// Stops the in-process agent, if any, and waits for its thread.
fn stop_agent(shared: Option<&Arc<Shared>>) {
    if let Some(host::Hosted::InProcess(p)) = shared.and_then(|s| s.hosted.as_ref()) {
        p.stop();
        if let Some(t) = p.take_thread() {
            let _ = t.join();
        }
    }
}

fn main() -> ExitCode {
    let opts = host::Options::parse(std::env::args().skip(1));
    let data_dir = host::data_dir(&opts);
    let _log_guard = init_logging(data_dir.as_deref().ok());
    // Filled by setup; read after the event loop ends to stop the agent.
    let slot: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
    let setup_slot = slot.clone();
    let app = tauri::Builder::default()
        // First: a second launch only focuses this instance's window (and exits
        // before its setup, so it never starts a second agent).
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            window::show_dashboard(app);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--hidden"]),
        ))
        .plugin(tauri_plugin_opener::init())
        .setup(move |app| {
            let shared = Arc::new(start_agent(&opts, &data_dir)?);
            let _ = setup_slot.set(shared.clone());
            app.manage(shared.clone());
            let handle = app.handle().clone();
            let menu = tray::build(&handle, &shared)?;
            app.manage::<TrayMenu>(menu);
            tray::spawn_agent_watcher(&handle, &shared);
            if !opts.hidden || shared.startup_error.is_some() {
                window::show_dashboard(&handle);
            }
            tray::spawn_poller(handle);
            Ok(())
        })
        .on_window_event(|window, event| {
            if let WindowEvent::CloseRequested { api, .. } = event {
                let Some(shared) = window.app_handle().try_state::<Arc<Shared>>() else {
                    return;
                };
                let keep_in_tray = shared.tray_ok.load(std::sync::atomic::Ordering::Acquire)
                    && shared.admin.is_some()
                    && !tray::is_quitting(&shared);
                if keep_in_tray {
                    // The agent keeps running in the tray.
                    api.prevent_close();
                    if let Err(e) = window.hide() {
                        tracing::warn!(error = %e, "hiding the window");
                    }
                }
            }
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the user interface");
            eprintln!("error: cannot start the user interface: {e}");
            stop_agent(slot.get());
            return ExitCode::from(1);
        }
    };
    let exit_code = app.run_return(|app, event| {
        if let RunEvent::ExitRequested { code, api, .. } = event {
            let Some(shared) = app.try_state::<Arc<Shared>>() else {
                return;
            };
            if code.is_none() && shared.admin.is_some() && !tray::is_quitting(&shared) {
                // Last window closed: stay in the tray.
                api.prevent_exit();
            } else if tray::must_stop_agent_first(&shared) {
                // Stop the agent cleanly first; its watcher exits again.
                api.prevent_exit();
                tray::quit(app);
            }
        }
    });
    // Normally the agent has stopped already; make sure before returning.
    stop_agent(slot.get());
    ExitCode::from(u8::try_from(exit_code).unwrap_or(1))
}
