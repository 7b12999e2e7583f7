//! The `tessera` command: serve, migrate, clients, openapi.

use std::{collections::HashMap, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tessera::{audit::Actor, clients, config::Config, db, Application};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Token and API-key identity service")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Options that mirror `TESSERA_*` variables (a flag wins over its variable).
#[derive(Args)]
struct Settings {
    /// Postgres URL [env: TESSERA_DATABASE_URL, DATABASE_URL]
    #[arg(long, global = true, env = "TESSERA_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Redis URL; unset = single-instance mode
    #[arg(long, global = true, env = "TESSERA_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Listen address
    #[arg(long, global = true, env = "TESSERA_BIND")]
    bind: Option<String>,
    /// Issuer URL
    #[arg(long, global = true, env = "TESSERA_ISSUER")]
    issuer: Option<String>,
    /// Access-token lifetime in seconds
    #[arg(long, global = true, env = "TESSERA_ACCESS_TOKEN_TTL")]
    access_token_ttl: Option<String>,
    /// Signing algorithm for new keys: ES256, EdDSA, RS256
    #[arg(long, global = true, env = "TESSERA_SIGNING_ALG")]
    signing_alg: Option<String>,
    /// Log format: text or json
    #[arg(long, global = true, env = "TESSERA_LOG_FORMAT")]
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
    Serve,
    /// Create the database if needed and apply migrations, then exit.
    Migrate,
    /// Manage OAuth clients offline (straight against the database).
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Register a client and print it as JSON, with its secret (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Allowed grant (repeatable): client_credentials, password, refresh_token.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Chosen client id (default: a UUID v7).
        #[arg(long)]
        client_id: Option<String>,
        /// Default audience.
        #[arg(long)]
        audience: Option<String>,
        /// A public client (no secret).
        #[arg(long)]
        public: bool,
    },
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
        print!("{}", tessera::http::openapi::document_json());
        return ExitCode::SUCCESS;
    }
    let config = match cli.settings.config() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tessera::telemetry::init(config.log_format);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => match migrate(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Clients { command: ClientsCommand::Create { name, scopes, grants, client_id, audience, public } } => {
            let new = clients::NewClient {
                client_id,
                name,
                grant_types: grants,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                audience: audience.map(clients::AudienceParam::One),
                public,
                access_token_ttl: None,
                refresh_token_ttl: None,
                key_scopes: None,
                redirect_uris: None,
                post_logout_redirect_uris: None,
            };
            let actor = Actor { id: "cli".into(), ip: None, request_id: None };
            let created = async {
                let pool = db::connect(&config).await.map_err(|e| e.to_string())?;
                db::migrate(&pool).await.map_err(|e| e.to_string())?;
                clients::create(&pool, new, time::OffsetDateTime::now_utc(), &actor).await.map_err(|e| e.to_string())
            };
            match created.await {
                Ok(c) => {
                    println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Openapi => ExitCode::SUCCESS,
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
