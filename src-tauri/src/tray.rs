//! The tray icon, its menu, the 2-second status poll and the menu actions.
//! Every action is a call to the agent's admin API ([`AdminClient`]); the
//! tray holds no logic of its own beyond choosing the icon.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Wry};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_opener::OpenerExt as _;

use crate::admin::{AdminClient, ApiError};
use crate::host::Hosted;
use crate::status::{AgentStatus, TrayState, attention_reason, tooltip};
use crate::window;

/// How often the tray polls `GET /api/status`.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long an action's message stays in the menu's status line and tooltip.
pub const NOTICE_FOR: Duration = Duration::from_secs(20);
/// Amazon Ads regions offered in the Region submenu.
pub const REGIONS: [&str; 3] = ["NA", "EU", "FE"];

/// State shared by the tray, the window and the agent watcher.
#[derive(Debug)]
pub struct Shared {
    /// The agent (in-process or attached); `None` when it could not start.
    pub hosted: Option<Hosted>,
    /// Its admin API; `None` when it could not start.
    pub admin: Option<AdminClient>,
    /// Why the agent could not start, shown instead of the dashboard.
    pub startup_error: Option<String>,
    /// Quit was chosen: windows may close, the app exits once the agent stopped.
    pub quitting: AtomicBool,
    /// The in-process agent has stopped (or there is none).
    pub agent_done: AtomicBool,
    /// The tray icon exists (else closing the window quits).
    pub tray_ok: AtomicBool,
    last: Mutex<Option<AgentStatus>>,
    notice: Mutex<Option<(Instant, String)>>,
}

impl Shared {
    /// Shared state for a started agent, or for one that failed to start.
    pub fn new(hosted: Result<Hosted, String>, warnings: Vec<String>) -> Result<Shared, String> {
        let (hosted, startup_error) = match hosted {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e)),
        };
        let admin = match &hosted {
            Some(h) => Some(AdminClient::new(
                &h.endpoint().base_url,
                &h.endpoint().token,
            )?),
            None => None,
        };
        let agent_done = !matches!(hosted, Some(Hosted::InProcess(_)));
        let s = Shared {
            hosted,
            admin,
            startup_error,
            quitting: AtomicBool::new(false),
            agent_done: AtomicBool::new(agent_done),
            tray_ok: AtomicBool::new(false),
            last: Mutex::new(None),
            notice: Mutex::new(None),
        };
        if let Some(Hosted::Attached { pid, .. }) = &s.hosted {
            s.notify(format!(
                "Using the agent already running on this data dir{}; Quit leaves it running",
                pid.map_or(String::new(), |p| format!(" (pid {p})"))
            ));
        }
        if let Some(w) = warnings.into_iter().next() {
            s.notify(w);
        }
        Ok(s)
    }

    /// Shows `msg` in the status line and tooltip for [`NOTICE_FOR`].
    pub fn notify(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!(notice = %msg, "tray");
        *self.notice.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), msg));
    }

    fn current_notice(&self) -> Option<String> {
        let mut n = self.notice.lock().unwrap_or_else(PoisonError::into_inner);
        match &*n {
            Some((at, msg)) if at.elapsed() < NOTICE_FOR => Some(msg.clone()),
            Some(_) => {
                *n = None;
                None
            }
            None => None,
        }
    }

    fn last_status(&self) -> Option<AgentStatus> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The menu items whose labels or checks follow the agent's state.
pub struct TrayMenu {
    tray: Option<TrayIcon<Wry>>,
    status_line: MenuItem<Wry>,
    pause: MenuItem<Wry>,
    auth: MenuItem<Wry>,
    regions: Vec<(&'static str, CheckMenuItem<Wry>)>,
    autostart: CheckMenuItem<Wry>,
    shown: Mutex<Shown>,
}

/// What is currently displayed (to update only what changed).
#[derive(Debug, Default)]
struct Shown {
    state: Option<TrayState>,
    status_line: String,
    tooltip: String,
    pause: String,
    auth: String,
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Builds the tray icon and its menu. The tray is optional: without a
/// StatusNotifier host (e.g. a bare X server) the app keeps its window.
///
/// # Errors
/// A menu item could not be created.
pub fn build(app: &AppHandle, shared: &Shared) -> tauri::Result<TrayMenu> {
    let running = shared.admin.is_some();
    let status_line =
        MenuItem::with_id(app, "status", "AMC Sync — starting…", false, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Open dashboard", true, None::<&str>)?;
    let flush = MenuItem::with_id(app, "flush", "Upload now", running, None::<&str>)?;
    let pause = MenuItem::with_id(app, "pause", "Pause uploads", running, None::<&str>)?;
    let drop = MenuItem::with_id(app, "drop", "Open drop folder", running, None::<&str>)?;
    let mut regions = Vec::new();
    for r in REGIONS {
        regions.push((
            r,
            CheckMenuItem::with_id(app, format!("region-{r}"), r, running, false, None::<&str>)?,
        ));
    }
    let region_refs: Vec<&dyn tauri::menu::IsMenuItem<Wry>> = regions
        .iter()
        .map(|(_, i)| i as &dyn tauri::menu::IsMenuItem<Wry>)
        .collect();
    let region_menu = Submenu::with_id_and_items(app, "region", "Region", running, &region_refs)?;
    let auth = MenuItem::with_id(app, "auth", "Log in…", running, None::<&str>)?;
    let autostart_on = app.autolaunch().is_enabled().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the start-at-login setting");
        false
    });
    let autostart = CheckMenuItem::with_id(
        app,
        "autostart",
        "Start at login",
        true,
        autostart_on,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit AMC Sync", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &status_line,
            &PredefinedMenuItem::separator(app)?,
            &open,
            &flush,
            &pause,
            &drop,
            &region_menu,
            &auth,
            &PredefinedMenuItem::separator(app)?,
            &autostart,
            &PredefinedMenuItem::separator(app)?,
            &quit,
        ],
    )?;
    let initial = if shared.startup_error.is_some() {
        TrayState::Attention
    } else {
        TrayState::Working
    };
    let icon = Image::from_bytes(initial.icon_png())?;
    let tray = TrayIconBuilder::with_id("amc-sync")
        .icon(icon)
        .tooltip("AMC Sync — starting…")
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(on_menu_event)
        .on_tray_icon_event(|tray: &TrayIcon<Wry>, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                window::show_dashboard(tray.app_handle());
            }
        })
        .build(app);
    let tray = match tray {
        Ok(t) => {
            shared.tray_ok.store(true, Ordering::Release);
            Some(t)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no tray icon (no StatusNotifier host?); the window stays available");
            None
        }
    };
    Ok(TrayMenu {
        tray,
        status_line,
        pause,
        auth,
        regions,
        autostart,
        shown: Mutex::new(Shown::default()),
    })
}

/// Polls the agent every [`POLL_INTERVAL`] and updates icon, tooltip and menu.
pub fn spawn_poller(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        loop {
            refresh(&app).await;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    });
}

/// Fetches the status once and updates the tray.
pub async fn refresh(app: &AppHandle) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    if shared.quitting.load(Ordering::Acquire) {
        return;
    }
    let (status, error) = match &shared.admin {
        Some(admin) => match admin.status().await {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.message)),
        },
        None => (None, shared.startup_error.clone()),
    };
    *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = status.clone();
    let menu = app.state::<TrayMenu>();
    apply(&menu, &shared, status.as_ref(), error.as_deref());
}

/// Updates icon, tooltip and labels from a status (or the error that
/// prevented reading it).
fn apply(menu: &TrayMenu, shared: &Shared, status: Option<&AgentStatus>, error: Option<&str>) {
    let state = TrayState::of(status);
    let notice = shared.current_notice();
    let mut tip = tooltip(state, status);
    let line = if let Some(n) = &notice {
        n.clone()
    } else if let Some(e) = error {
        format!("Agent unavailable: {e}")
    } else if state == TrayState::Attention {
        let reason = attention_reason(status).unwrap_or_default();
        format!("Needs attention: {reason}")
    } else {
        format!(
            "{} — {} queued",
            capitalize(state.label()),
            status.map_or(0, AgentStatus::queued)
        )
    };
    if let Some(n) = &notice {
        tip = format!("{tip}\n{n}");
    }
    let line = truncate(&line, 90);
    let paused = status.is_some_and(|s| s.paused);
    let pause_label = if paused {
        "Resume uploads"
    } else {
        "Pause uploads"
    };
    let logged_in = status.is_some_and(AgentStatus::logged_in);
    let auth_label = if logged_in { "Log out" } else { "Log in…" };
    let region = status.and_then(|s| s.region.clone());

    let mut shown = menu.shown.lock().unwrap_or_else(PoisonError::into_inner);
    let warn = |what: &str, r: tauri::Result<()>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "updating the tray {what}");
        }
    };
    if let Some(tray) = &menu.tray {
        if shown.state != Some(state) {
            match Image::from_bytes(state.icon_png()) {
                Ok(img) => warn("icon", tray.set_icon(Some(img))),
                Err(e) => tracing::warn!(error = %e, "decoding the tray icon"),
            }
            shown.state = Some(state);
        }
        if shown.tooltip != tip {
            warn("tooltip", tray.set_tooltip(Some(&tip)));
            shown.tooltip = tip;
        }
    } else {
        shown.state = Some(state);
    }
    if shown.status_line != line {
        warn("status line", menu.status_line.set_text(&line));
        shown.status_line = line;
    }
    if shown.pause != pause_label {
        warn("pause item", menu.pause.set_text(pause_label));
        shown.pause = pause_label.to_string();
    }
    if shown.auth != auth_label {
        warn("login item", menu.auth.set_text(auth_label));
        shown.auth = auth_label.to_string();
    }
    // Check items toggle themselves on click: re-assert every poll.
    for (r, item) in &menu.regions {
        let want = region.as_deref() == Some(*r);
        if item.is_checked().ok() != Some(want) {
            warn("region item", item.set_checked(want));
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Dispatches a menu click.
fn on_menu_event(app: &AppHandle, event: MenuEvent) {
    let id = event.id().as_ref().to_string();
    match id.as_str() {
        "open" => window::show_dashboard(app),
        "quit" => quit(app),
        "autostart" => toggle_autostart(app),
        "flush" | "pause" | "drop" | "auth" => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                run_action(&app, &id).await;
                refresh(&app).await;
            });
        }
        other => {
            if let Some(region) = other.strip_prefix("region-") {
                let app = app.clone();
                let region = region.to_string();
                tauri::async_runtime::spawn(async move {
                    set_region(&app, &region).await;
                    refresh(&app).await;
                });
            }
        }
    }
}

fn admin_of(shared: &Shared) -> Result<AdminClient, String> {
    shared.admin.clone().ok_or_else(|| {
        shared
            .startup_error
            .clone()
            .unwrap_or_else(|| "the agent is not running".into())
    })
}

/// Runs one admin action and reports its outcome in the status line.
async fn run_action(app: &AppHandle, id: &str) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    let admin = match admin_of(&shared) {
        Ok(a) => a,
        Err(e) => {
            shared.notify(e);
            return;
        }
    };
    let last = shared.last_status();
    let outcome: Result<String, String> = match id {
        "flush" => admin
            .post("/api/flush", None)
            .await
            .map(|_| "Upload started".to_string())
            .map_err(|e| action_error("Upload now", &e)),
        "pause" => {
            let paused = last.as_ref().is_some_and(|s| s.paused);
            let (path, done, what) = if paused {
                ("/api/resume", "Uploads resumed", "Resume")
            } else {
                ("/api/pause", "Uploads paused", "Pause")
            };
            admin
                .post(path, None)
                .await
                .map(|_| done.to_string())
                .map_err(|e| action_error(what, &e))
        }
        "drop" => open_drop_folder(app, &shared, last.as_ref()),
        "auth" => {
            if last.as_ref().is_some_and(AgentStatus::logged_in) {
                admin
                    .post("/api/logout", None)
                    .await
                    .map(|v| {
                        if v["environmentCredentials"].as_bool() == Some(true) {
                            "Stored login removed, but AMC_SYNC_* credentials in the environment still apply"
                                .to_string()
                        } else {
                            "Logged out of Amazon (the queue is kept)".to_string()
                        }
                    })
                    .map_err(|e| action_error("Log out", &e))
            } else {
                login(app, &admin).await
            }
        }
        _ => return,
    };
    match outcome {
        Ok(m) | Err(m) => shared.notify(m),
    }
}

fn action_error(what: &str, e: &ApiError) -> String {
    format!("{what} failed: {}", e.message)
}

/// `POST /api/login/start`, then opens Amazon's authorize page in the
/// browser. When the agent needs more (the first login asks for the client
/// id and secret), the dashboard's Connection view takes over.
async fn login(app: &AppHandle, admin: &AdminClient) -> Result<String, String> {
    match admin.post("/api/login/start", Some(json!({}))).await {
        Ok(v) => {
            let Some(url) = v.get("authorizeUrl").and_then(|u| u.as_str()) else {
                return Err("Log in failed: the agent returned no authorize URL".into());
            };
            app.opener()
                .open_url(url, None::<&str>)
                .map(|()| "Finish the login in your browser".to_string())
                .map_err(|e| format!("Log in: cannot open the browser: {e}"))
        }
        Err(e) => {
            window::show_dashboard(app);
            Err(format!(
                "Log in from the dashboard's Connection view ({})",
                e.message
            ))
        }
    }
}

async fn set_region(app: &AppHandle, region: &str) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    let msg = match admin_of(&shared) {
        Ok(admin) => match admin.put("/api/region", json!({ "region": region })).await {
            Ok(v) => {
                let state = v.get("state").and_then(|s| s.as_str()).unwrap_or("");
                if state == "needs_login" {
                    format!("Region {region}: log in to Amazon for this region")
                } else {
                    format!("Region set to {region}")
                }
            }
            Err(e) => action_error("Region change", &e),
        },
        Err(e) => e,
    };
    shared.notify(msg);
}

fn open_drop_folder(
    app: &AppHandle,
    shared: &Shared,
    last: Option<&AgentStatus>,
) -> Result<String, String> {
    let dir = last
        .and_then(|s| s.drop_dir.clone())
        .map(std::path::PathBuf::from)
        .or_else(|| shared.hosted.as_ref()?.endpoint().drop_dir.clone())
        .ok_or("the agent watches no drop folder")?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the drop folder {}: {e}", dir.display()))?;
    app.opener()
        .open_path(dir.display().to_string(), None::<&str>)
        .map(|()| format!("Opened {}", dir.display()))
        .map_err(|e| format!("cannot open {}: {e}", dir.display()))
}

fn toggle_autostart(app: &AppHandle) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    let menu = app.state::<TrayMenu>();
    let manager = app.autolaunch();
    let was = manager.is_enabled().unwrap_or(false);
    let result = if was {
        manager.disable()
    } else {
        manager.enable()
    };
    let now = manager.is_enabled().unwrap_or(!was && result.is_ok());
    if let Err(e) = menu.autostart.set_checked(now) {
        tracing::warn!(error = %e, "updating the start-at-login item");
    }
    match result {
        Ok(()) if now => shared.notify("AMC Sync will start at login"),
        Ok(()) => shared.notify("AMC Sync will not start at login"),
        Err(e) => shared.notify(format!("Start at login: {e}")),
    }
}

/// Quit: stops the in-process agent (its `serve` shutdown future resolves);
/// the agent watcher exits the app once it has stopped. An attached agent
/// keeps running.
pub fn quit(app: &AppHandle) {
    let shared = app.state::<Arc<Shared>>().inner().clone();
    shared.quitting.store(true, Ordering::Release);
    if let Some(tray) = &app.state::<TrayMenu>().tray {
        let _ = tray.set_tooltip(Some("AMC Sync — stopping…"));
    }
    if let Some(w) = app.get_webview_window(window::MAIN) {
        let _ = w.hide();
    }
    let stopping = match &shared.hosted {
        Some(Hosted::InProcess(p)) if !shared.agent_done.load(Ordering::Acquire) => p.stop(),
        _ => false,
    };
    if stopping {
        tracing::info!("quit: stopping the agent");
    } else {
        app.exit(0);
    }
}

/// Waits for the in-process agent's thread on a separate thread and exits
/// the app when it ends (after Quit, SIGINT/SIGTERM, or a failure).
pub fn spawn_agent_watcher(app: &AppHandle, shared: &Shared) {
    let Some(Hosted::InProcess(p)) = &shared.hosted else {
        return;
    };
    let Some(thread) = p.take_thread() else {
        return;
    };
    let app = app.clone();
    let spawned = std::thread::Builder::new()
        .name("amc-sync-agent-watch".into())
        .spawn(move || {
            let code = match thread.join() {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the agent stopped with an error");
                    1
                }
                Err(_) => {
                    tracing::error!("the agent thread panicked");
                    1
                }
            };
            let shared = app.state::<Arc<Shared>>().inner().clone();
            shared.agent_done.store(true, Ordering::Release);
            shared.quitting.store(true, Ordering::Release);
            app.exit(code);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the agent thread");
    }
}

/// Used by the run loop: true when an exit request must wait for the agent.
pub fn must_stop_agent_first(shared: &Shared) -> bool {
    matches!(shared.hosted, Some(Hosted::InProcess(_)))
        && !shared.agent_done.load(Ordering::Acquire)
}

/// True once Quit was chosen (windows may then close for real).
pub fn is_quitting(shared: &Shared) -> bool {
    shared.quitting.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("äöüßx", 4), "äöü…");
        assert_eq!(capitalize("up to date"), "Up to date");
    }
}
