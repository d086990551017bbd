//! The dashboard window: the agent's own `ui/` at
//! `http://127.0.0.1:<port>/#token=<admin token>` (the same files a browser
//! gets). Closing it hides it; the agent keeps running in the tray.

use std::sync::Arc;

use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder};

use crate::tray::Shared;

/// The window's label.
pub const MAIN: &str = "main";

/// Shows (creating if needed), unminimizes and focuses the dashboard window.
/// Errors are logged: there is nothing else to show them in.
pub fn show_dashboard(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(MAIN) {
        let shown = w
            .show()
            .and_then(|()| w.unminimize())
            .and_then(|()| w.set_focus());
        if let Err(e) = shown {
            tracing::warn!(error = %e, "showing the dashboard window");
        }
        return;
    }
    if let Err(e) = create(app) {
        tracing::error!(error = %e, "cannot open the dashboard window");
        if let Some(shared) = app.try_state::<Arc<Shared>>() {
            shared.notify(format!("Cannot open the dashboard: {e}"));
        }
    }
}

/// Creates the window: the dashboard URL, or an error page when the agent
/// could not start.
///
/// # Errors
/// The URL or the webview could not be created.
pub fn create(app: &AppHandle) -> Result<(), String> {
    let shared = app
        .try_state::<Arc<Shared>>()
        .ok_or("the app is still starting")?
        .inner()
        .clone();
    let url = match (&shared.admin, &shared.startup_error) {
        (Some(admin), _) => admin.dashboard_url(),
        (None, err) => error_page(err.as_deref().unwrap_or("the agent is not running")),
    };
    let url = tauri::Url::parse(&url).map_err(|e| format!("dashboard URL: {e}"))?;
    WebviewWindowBuilder::new(app, MAIN, WebviewUrl::External(url))
        .title("AMC Sync")
        .inner_size(1120.0, 780.0)
        .min_inner_size(640.0, 480.0)
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A `data:` URL with a minimal page explaining why the agent is not running.
fn error_page(message: &str) -> String {
    let escaped: String = message
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>AMC Sync</title>\
         <body style=\"font-family:sans-serif;margin:2em\">\
         <h1>AMC Sync could not start</h1><p data-testid=\"startup-error\">{escaped}</p>\
         <p>Fix the problem above (see the logs in the data dir), then start AMC Sync again.</p>"
    );
    let mut out = String::from("data:text/html;charset=utf-8,");
    for b in html.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_page_is_a_percent_encoded_data_url() {
        let u = super::error_page("bad <config> & \"x\"");
        assert!(u.starts_with("data:text/html;charset=utf-8,"));
        assert!(u.contains("%26lt%3Bconfig%26gt%3B"));
        assert!(!u[29..].contains(' '));
        assert!(tauri::Url::parse(&u).is_ok());
    }
}
