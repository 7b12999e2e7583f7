//! The `tessera` command: serve, migrate, clients (offline), admin (over HTTP), openapi.

mod cli;

use std::{collections::HashMap, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tessera::{audit::Actor, clients, config::Config, db, Application};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Token and API-key identity service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The database of the offline commands (`migrate`, `clients`).
#[derive(Args)]
struct DbSettings {
    /// Postgres URL (DATABASE_URL is read when TESSERA_DATABASE_URL is unset)
    #[arg(long, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DbSettings {
    fn config(&self) -> Result<Config, tessera::config::ConfigError> {
        let flag = self.database_url.clone();
        Config::from_lookup(|name| match name {
            "TESSERA_DATABASE_URL" if flag.is_some() => flag.clone(),
            _ => std::env::var(name).ok(),
        })
    }
}

/// Options of `serve` that mirror `TESSERA_*` variables (a flag wins over its variable).
#[derive(Args)]
struct Settings {
    /// Postgres URL (DATABASE_URL is read when TESSERA_DATABASE_URL is unset)
    #[arg(long, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Redis URL; unset = single-instance mode
    #[arg(long, env = "TESSERA_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Listen address
    #[arg(long, env = "TESSERA_BIND")]
    bind: Option<String>,
    /// Issuer URL
    #[arg(long, env = "TESSERA_ISSUER")]
    issuer: Option<String>,
    /// Access-token lifetime in seconds
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL")]
    access_token_ttl: Option<String>,
    /// Signing algorithm for new keys: ES256, EdDSA, RS256
    #[arg(long, env = "TESSERA_SIGNING_ALG")]
    signing_alg: Option<String>,
    /// Log format: text or json
    #[arg(long, env = "TESSERA_LOG_FORMAT")]
    log_format: Option<String>,
}

impl Settings {
    fn lookup(&self) -> HashMap<&'static str, String> {
        let mut m = HashMap::new();
        let mut put = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k, v.clone());
            }
        };
        put("TESSERA_DATABASE_URL", &self.database_url);
        put("TESSERA_REDIS_URL", &self.redis_url);
        put("TESSERA_BIND", &self.bind);
        put("TESSERA_ISSUER", &self.issuer);
        put("TESSERA_ACCESS_TOKEN_TTL", &self.access_token_ttl);
        put("TESSERA_SIGNING_ALG", &self.signing_alg);
        put("TESSERA_LOG_FORMAT", &self.log_format);
        m
    }

    fn config(&self) -> Result<Config, tessera::config::ConfigError> {
        let flags = self.lookup();
        Config::from_lookup(|name| flags.get(name).cloned().or_else(|| std::env::var(name).ok()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        #[command(flatten)]
        settings: Settings,
    },
    /// Create the database if needed and apply migrations, then exit.
    Migrate {
        #[command(flatten)]
        db: DbSettings,
    },
    /// Manage OAuth clients offline (straight against the database).
    Clients {
        #[command(flatten)]
        db: DbSettings,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Replace the master key or the HMAC secret: report what depends on each key, re-seal
    /// (straight against the database, with this process's TESSERA_MASTER_KEY[_PREVIOUS] and
    /// TESSERA_HMAC_SECRET[_PREVIOUS]).
    Secrets {
        #[command(flatten)]
        db: DbSettings,
        #[command(subcommand)]
        command: cli::secrets::SecretsCommand,
    },
    /// Operate a running Tessera over HTTP (TESSERA_URL, TESSERA_CLIENT_ID, TESSERA_CLIENT_SECRET).
    Admin {
        #[command(flatten)]
        conn: cli::Connection,
        #[command(subcommand)]
        command: cli::AdminCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Register a client and print it as JSON, with its secret (shown once).
    Create(cli::NewClientArgs),
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tessera: {msg}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        return print_out(&tessera::http::openapi::document_json());
    }
    let config = match &cli.command {
        Command::Serve { settings } => settings.config(),
        Command::Migrate { db } | Command::Clients { db, .. } | Command::Secrets { db, .. } => db.config(),
        Command::Admin { .. } | Command::Openapi => {
            return match cli.command {
                Command::Admin { conn, command } => match cli::run(conn, command).await {
                    Ok(out) => print_out(&out),
                    Err(e) => {
                        eprintln!("tessera admin: {e}");
                        e.exit_code()
                    }
                },
                _ => ExitCode::SUCCESS,
            };
        }
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let _telemetry = tessera::telemetry::init(config.log_format, config.otlp_endpoint.as_deref());
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate { .. } => match migrate(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Clients { command: ClientsCommand::Create(c), .. } => {
            let scopes = c.scope_list();
            let new = clients::NewClient {
                client_id: c.client_id,
                name: c.name,
                grant_types: c.grants,
                scopes,
                audience: c.audience.map(clients::AudienceParam::One),
                public: c.public,
                access_token_ttl: None,
                refresh_token_ttl: None,
                key_scopes: None,
                redirect_uris: None,
                post_logout_redirect_uris: None,
            };
            let actor = Actor { id: "cli".into(), ip: None, request_id: None };
            let created = async {
                // The secret is stored keyed by the master key, as the service will check it.
                let keys = tessera::app::derived_keys(&config).map_err(|e| e.to_string())?;
                let pool = db::connect(&config).await.map_err(|e| e.to_string())?;
                db::migrate(&pool).await.map_err(|e| e.to_string())?;
                clients::create(&pool, keys.client_secret.current(), new, time::OffsetDateTime::now_utc(), &actor)
                    .await
                    .map_err(|e| e.to_string())
            };
            match created.await {
                Ok(c) => print_out(&format!("{}\n", serde_json::to_string_pretty(&c).unwrap_or_default())),
                Err(e) => fail(e),
            }
        }
        Command::Secrets { command, .. } => match cli::secrets::run(&config, command).await {
            Ok(out) => print_out(&out),
            Err(e) => fail(e),
        },
        Command::Admin { .. } | Command::Openapi => ExitCode::SUCCESS,
    }
}

/// Writes to stdout; a reader that went away early (`| head`) is not an error.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Scopes Tessera's own API understands; a client may carry others (for resource services), but an
/// operator typing `--scopes root` probably meant `admin`, so the command says so.
const OWN_SCOPES: &[&str] = &["admin", "introspect", "revocations:read", "keys:read", "keys:write", "keys:verify"];

fn warn_about_unknown_scopes(scopes: &[String]) {
    for s in scopes.iter().filter(|s| !OWN_SCOPES.contains(&s.as_str())) {
        eprintln!(
            "tessera: note: scope {s:?} means nothing to Tessera itself (its own: {}); resource services may give it a meaning",
            OWN_SCOPES.join(", ")
        );
    }
}

async fn migrate(config: &Config) -> Result<(), db::DbError> {
    let pool = db::connect(config).await?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(config: Config) -> ExitCode {
    let bind = config.bind;
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => return fail(e),
    };
    tracing::info!(%bind, port = app.port(), "tessera listening");
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Pins glibc's mmap threshold at 1 MiB. Argon2id allocates 19 MiB per hash or verify; by default
/// glibc raises its threshold after the first such buffer is freed, so every later buffer is carved
/// from a blocking thread's arena and kept: measured here, RSS grew ~19 MiB per login, to ~1 GB under
/// the benchmark. Pinned, each buffer is mmapped and returned to the kernel when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one call into C, below
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called once, first thing in main, with a
    // valid parameter and value. A zero return (refused) leaves glibc's defaults, which still work.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    if ok == 0 {
        eprintln!("warning: mallopt(M_MMAP_THRESHOLD) refused; memory use may grow with Argon2 load");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
