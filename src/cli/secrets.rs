//! `tessera secrets …`: the offline half of replacing the master key or the HMAC secret. It reads
//! the database directly with this process's keys (the same variables the service reads), so it
//! runs wherever an instance's configuration is, with no admin credential.

use clap::Subcommand;
use tessera::{config::Config, db, rekey};

/// What to do.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Count, per kind (API keys, refresh tokens, client secrets, signing keys), what depends on the
    /// current, the previous or a retired key. Exit status 0; "previous in use" says whether the
    /// previous secret is still needed.
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Re-seal every signing key and webhook secret sealed under TESSERA_MASTER_KEY_PREVIOUS under TESSERA_MASTER_KEY,
    /// printing progress. Run once every instance runs with both keys.
    Reseal,
}

/// Runs `cmd`; the text to print, or why it failed.
pub async fn run(config: &Config, cmd: SecretsCommand) -> Result<String, String> {
    let keys = tessera::app::derived_keys(config).map_err(|e| e.to_string())?;
    let pool = db::connect(config).await.map_err(|e| e.to_string())?;
    db::migrate(&pool).await.map_err(|e| e.to_string())?;
    match cmd {
        SecretsCommand::Status { json } => {
            let report =
                rekey::report(&pool, &keys, time::OffsetDateTime::now_utc()).await.map_err(|e| e.to_string())?;
            if json {
                return serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(|e| e.to_string());
            }
            let mut out = format!("{:<16} {:<11} {:<17} {:>10}\n", "WHAT", "KEY", "KEY ID", "COUNT");
            for c in &report.counts {
                out += &format!(
                    "{:<16} {:<11} {:<17} {:>10}\n",
                    c.what,
                    c.version,
                    c.key_id.as_deref().unwrap_or("-"),
                    c.count
                );
            }
            out += if report.previous_in_use {
                "previous in use: yes — keep the previous secret configured\n"
            } else {
                "previous in use: no — the previous secret may be removed\n"
            };
            Ok(out)
        }
        SecretsCommand::Reseal => {
            if !keys.sealer.has_previous() {
                return Err("TESSERA_MASTER_KEY_PREVIOUS is not set: there is nothing to re-seal from".into());
            }
            let done = rekey::reseal(&pool, &keys, |p| {
                eprintln!(
                    "{}: {} of {} seen, {} re-sealed, {} already current, {} unreadable",
                    p.what,
                    p.resealed + p.already_current + p.unreadable,
                    p.total,
                    p.resealed,
                    p.already_current,
                    p.unreadable
                );
            })
            .await
            .map_err(|e| e.to_string())?;
            let unreadable: u64 = done.iter().map(|d| d.unreadable).sum();
            if unreadable > 0 {
                return Err(format!(
                    "{unreadable} sealed item(s) open under neither master key: they were sealed under another one"
                ));
            }
            Ok(done
                .iter()
                .map(|d| {
                    format!(
                        "{}: {} re-sealed, {} already under the current master key\n",
                        d.what, d.resealed, d.already_current
                    )
                })
                .collect())
        }
    }
}
