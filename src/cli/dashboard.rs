//! `amc-sync dashboard`: opens the running agent's dashboard in the browser
//! at `http://127.0.0.1:PORT/#token=<admin token>` (the token travels in the
//! URL fragment, which browsers never send to a server; the page keeps it in
//! `sessionStorage` and removes it from the address bar).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use amc_sync::agent::state::AgentState;

use super::common::{Common, Failure, finish};

/// `amc-sync dashboard`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    /// Do not open a browser; print the URL instead.
    #[arg(long)]
    no_browser: bool,
    /// Print the URL (it holds the admin token: do not share it).
    #[arg(long)]
    print_url: bool,
}

/// Opens (or prints) the dashboard URL of the agent running on the data dir.
pub fn run(args: Args) -> ExitCode {
    finish(run_inner(&args))
}

/// The dashboard URL for an agent listening at `listen_url`
/// (`http://ADDR:PORT`): loopback of the same IP family, the admin token in
/// the fragment.
fn dashboard_url(listen_url: &str, token: &str) -> Result<String, Failure> {
    let addr: SocketAddr = listen_url
        .strip_prefix("http://")
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .ok_or_else(|| {
            Failure::runtime(format!(
                "agent.json names an unexpected address {listen_url:?}"
            ))
        })?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) if ip.is_loopback() || ip.is_unspecified() => "[::1]".to_string(),
        other => {
            return Err(Failure::usage(format!(
                "the agent listens on {other}, not on loopback; the dashboard is served to \
                 127.0.0.1 / localhost only (listen on 127.0.0.1 or 0.0.0.0)"
            )));
        }
    };
    Ok(format!("http://{host}:{}/#token={token}", addr.port()))
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    let data_dir = args.common.data_dir_no_create()?;
    let state = AgentState::load(&data_dir)
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| {
            Failure::usage(format!(
                "no AMC Sync agent has run on {} yet: start it with `amc-sync run`",
                data_dir.display()
            ))
        })?;
    let listen = state.listen_url.as_deref().ok_or_else(|| {
        Failure::usage(format!(
            "the agent is not running on {}: start it with `amc-sync run`",
            data_dir.display()
        ))
    })?;
    let url = dashboard_url(listen, &state.admin_token)?;
    // A crashed agent leaves its address behind: make sure one answers.
    let base = url.split("/#").next().unwrap_or(&url).to_string();
    let alive = agent_answers(&format!("{base}/healthz"));
    if !alive {
        return Err(Failure::runtime(format!(
            "no agent answers at {base} (it may have stopped): start it with `amc-sync run`"
        )));
    }
    // A Linux box without a graphical session has no browser to open: print the URL.
    #[cfg(all(unix, not(target_os = "macos")))]
    let headless =
        std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none();
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    let headless = false;
    if args.print_url || args.no_browser || headless {
        println!("{url}");
    }
    if headless && !args.no_browser {
        eprintln!(
            "no graphical session here: open the URL above in a browser on this machine, or forward \
             the port (ssh -L {port}:127.0.0.1:{port} …) — it holds the admin token, do not share it",
            port = base.rsplit(':').next().unwrap_or("8787")
        );
        return Ok(());
    }
    if !args.no_browser {
        webbrowser::open(&url).map_err(|e| {
            Failure::runtime(format!(
                "cannot open a browser ({e}); run `amc-sync dashboard --print-url --no-browser` \
                 and open the URL yourself"
            ))
        })?;
        if !args.print_url {
            println!("opened the AMC Sync dashboard in your browser ({base})");
        }
    }
    Ok(())
}

/// True when `GET url` answers 2xx within 3 seconds.
fn agent_answers(url: &str) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
        else {
            return false;
        };
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_uses_loopback_and_puts_the_token_in_the_fragment() {
        let t = "ab".repeat(32);
        assert_eq!(
            dashboard_url("http://127.0.0.1:8787", &t).unwrap(),
            format!("http://127.0.0.1:8787/#token={t}")
        );
        assert_eq!(
            dashboard_url("http://0.0.0.0:9000", &t).unwrap(),
            format!("http://127.0.0.1:9000/#token={t}")
        );
        assert_eq!(
            dashboard_url("http://[::1]:9000", &t).unwrap(),
            format!("http://[::1]:9000/#token={t}")
        );
        assert_eq!(
            dashboard_url("http://192.168.1.5:9000", &t)
                .unwrap_err()
                .code,
            2
        );
        assert!(dashboard_url("nonsense", &t).is_err());
    }
}
