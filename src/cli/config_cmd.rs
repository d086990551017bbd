//! `amc-sync config check`: load and validate the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use amc_sync::config::{self, Config};

/// `amc-sync config …`
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and print a summary (exit 2 with file:line:column on error).
    Check {
        /// Config file (default: $AMC_SYNC_CONFIG, else the OS config dir's config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    let ConfigCommand::Check { config, json } = cmd;
    match Config::load(config.as_deref()) {
        Ok((cfg, source)) => {
            let source_text = source.as_ref().map_or_else(
                || {
                    format!(
                        "defaults (no file; would read {})",
                        config::default_config_file()
                            .map_or("<no config dir>".into(), |p| p.display().to_string())
                    )
                },
                |p| p.display().to_string(),
            );
            if json {
                let v = serde_json::json!({
                    "ok": true,
                    "source": source_text,
                    "region": cfg.region.as_str(),
                    "apiBaseUrl": cfg.effective_api_base_url(),
                    "tokenUrl": cfg.effective_token_url(),
                    "listen": cfg.listen.to_string(),
                    "profile": cfg.profile.as_str(),
                    "uploadIntervalSecs": cfg.schedule.upload_interval_secs,
                    "batchSize": cfg.schedule.batch_size,
                    "audiences": cfg.audiences.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
                    "mappings": cfg.mappings.mappings().len(),
                });
                println!("{v}");
            } else {
                println!("config OK: {source_text}");
                println!(
                    "  region {}  api {}  listen {}  profile {}",
                    cfg.region.as_str(),
                    cfg.effective_api_base_url(),
                    cfg.listen,
                    cfg.profile
                );
                println!(
                    "  upload every {} s or at {} records; {} audience(s); {} mapping(s)",
                    cfg.schedule.upload_interval_secs,
                    cfg.schedule.batch_size,
                    cfg.audiences.len(),
                    cfg.mappings.mappings().len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "file": e.origin, "line": e.line, "column": e.column, "message": e.message})
                );
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}
