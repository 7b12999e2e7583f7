//! `tessera admin …`: operating a running Tessera over its HTTP API with a client credential, for
//! people (tables) and scripts (`--json`, exit codes from [`client::AdminError`]).
//!
//! Part of the binary, not the library: it only speaks HTTP, so it needs nothing of the service's
//! internals and works against any Tessera it can reach.

pub mod client;
mod keys_import;
pub mod secrets;
pub mod table;
pub mod webhooks;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use client::{AdminError, Session, Target};

/// How to reach Tessera, and how to print.
#[derive(Args)]
pub struct Connection {
    /// Base URL of a running Tessera
    #[arg(long, env = "TESSERA_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A client with grant client_credentials and scope admin
    #[arg(long, env = "TESSERA_CLIENT_ID", default_value = "admin")]
    client_id: String,
    /// Print JSON (the API's own answer) instead of a table
    #[arg(long, global = true)]
    json: bool,
}

/// What to operate on.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// API keys of every owner.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Signing keys.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCommand),
    /// Anomalies across every key.
    #[command(subcommand)]
    Anomalies(AnomaliesCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Webhook endpoints.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

/// `tessera admin keys …`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Every key, oldest first (filters combine).
    List {
        /// Only this owner's keys (a user or client id)
        #[arg(long)]
        owner: Option<String>,
        /// Only the keys of the user with this username
        #[arg(long)]
        username: Option<String>,
        /// live or test
        #[arg(long)]
        environment: Option<String>,
        /// active, rotating, expired or revoked
        #[arg(long)]
        status: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One key.
    Show {
        /// Key id
        id: String,
    },
    /// Revoke a key everywhere.
    Revoke {
        /// Key id
        id: String,
        /// Why (kept in the audit log and the revocation event)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Import keys from another system by hash: one JSON entry per line, in batches of 1000.
    Import {
        /// JSON Lines file of `{"hash", "owner", "name", "scopes", "environment", ...}`
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Issue a successor; the old key keeps working for the grace period.
    Rotate {
        /// Key id
        id: String,
        /// Seconds the old key keeps working (default one day)
        #[arg(long)]
        grace: Option<u64>,
    },
}

/// A client to register: the flags `tessera admin clients create` and the offline
/// `tessera clients create` share.
#[derive(Args)]
pub struct NewClientArgs {
    /// Display name
    #[arg(long)]
    pub name: String,
    /// Space-separated scopes
    #[arg(long, default_value = "")]
    pub scopes: String,
    /// Allowed grant (repeatable): client_credentials, password, refresh_token
    #[arg(long = "grant", required = true)]
    pub grants: Vec<String>,
    /// Chosen client id (default: a UUID v7)
    #[arg(long)]
    pub client_id: Option<String>,
    /// Default audience
    #[arg(long)]
    pub audience: Option<String>,
    /// A public client (no secret)
    #[arg(long)]
    pub public: bool,
}

impl NewClientArgs {
    /// The scopes as a list, with a note on stderr for any Tessera itself does not use.
    pub fn scope_list(&self) -> Vec<String> {
        let scopes: Vec<String> = self.scopes.split_whitespace().map(str::to_owned).collect();
        crate::warn_about_unknown_scopes(&scopes);
        scopes
    }
}

/// `tessera admin clients …`
#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Every client.
    List,
    /// Register a client; its secret is printed once.
    Create(NewClientArgs),
    /// Disable a client and revoke its tokens and refresh tokens.
    Disable {
        /// Client id
        client_id: String,
    },
    /// Give a confidential client a new secret (printed once); the old one stops working.
    RotateSecret {
        /// Client id
        client_id: String,
    },
}

/// `tessera admin users …`
#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from TESSERA_NEW_USER_PASSWORD, never from a flag.
    Create {
        /// Username
        #[arg(long)]
        username: String,
        /// Space-separated scopes
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// Find a user by username.
    Find {
        /// Username
        username: String,
    },
    /// Delete a user, revoking their refresh tokens and API keys.
    Delete {
        /// User id
        id: String,
    },
}

/// `tessera admin signing-keys …`
#[derive(Subcommand)]
pub enum SigningKeysCommand {
    /// Every signing key of access tokens (or, with --id-token, of ID tokens) and its state.
    List {
        /// The RS256 keys that sign OpenID Connect ID tokens instead
        #[arg(long)]
        id_token: bool,
    },
    /// Activate the published next key.
    Rotate {
        /// Even if the next key was published less than the JWKS max-age ago
        #[arg(long)]
        force: bool,
    },
    /// Revoke a signing key (of access tokens or of ID tokens): every token it signed stops verifying.
    Revoke {
        /// Key id (kid)
        kid: String,
    },
}

/// `tessera admin anomalies …`
#[derive(Subcommand)]
pub enum AnomaliesCommand {
    /// Anomalies, oldest first.
    List {
        /// Only those detected at or after this RFC 3339 time
        #[arg(long)]
        since: Option<String>,
    },
}

/// `tessera admin audit …`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// The latest audit entries (of the last 24 hours unless --since says otherwise), oldest first.
    Tail {
        /// Look back to this RFC 3339 time (default: 24 hours ago)
        #[arg(long)]
        since: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs one admin command; the text to print on success.
pub async fn run(conn: Connection, command: AdminCommand) -> Result<String, AdminError> {
    let client_secret = std::env::var("TESSERA_CLIENT_SECRET").map_err(|_| {
        AdminError::Usage("TESSERA_CLIENT_SECRET is not set: export the secret of an admin client".into())
    })?;
    let url = conn.url.trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(&url).is_err() {
        return Err(AdminError::Usage(format!("TESSERA_URL: {url:?} is not an http(s) URL")));
    }
    let target = Target { url, client_id: conn.client_id, client_secret };
    let session = Session::open(&target).await?;
    let (value, columns) = dispatch(&session, command).await?;
    Ok(if conn.json {
        format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default())
    } else {
        match columns {
            Some(cols) => table::render(&value, cols),
            None => table::record(&value),
        }
    })
}

const KEY_COLUMNS: &[&str] =
    &["id", "start", "name", "owner", "environment", "expires_at", "revoked_at", "last_used_at"];

/// Calls the API; the answer and, for lists, the table's columns.
async fn dispatch(s: &Session, command: AdminCommand) -> Result<(Value, Option<&'static [&'static str]>), AdminError> {
    use AdminCommand as A;
    Ok(match command {
        A::Keys(KeysCommand::List { owner, username, environment, status, limit }) => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [("owner", owner), ("username", username), ("environment", environment), ("status", status)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let qs = serde_urlencoded::to_string(&query).unwrap_or_default();
            (s.call(Method::GET, &format!("/v1/admin/keys?{qs}"), None).await?, Some(KEY_COLUMNS))
        }
        A::Keys(KeysCommand::Import { file }) => (keys_import::run(s, &file).await?, None),
        A::Keys(KeysCommand::Show { id }) => {
            (s.call(Method::GET, &format!("/v1/keys/{}", seg(&id)), None).await?, None)
        }
        A::Keys(KeysCommand::Revoke { id, reason }) => {
            let body = reason.map_or_else(|| json!({}), |r| json!({"reason": r}));
            (s.call(Method::POST, &format!("/v1/keys/{}/revoke", seg(&id)), Some(&body)).await?, None)
        }
        A::Keys(KeysCommand::Rotate { id, grace }) => {
            let body = grace.map_or_else(|| json!({}), |g| json!({"grace_period": g}));
            (s.call(Method::POST, &format!("/v1/keys/{}/rotate", seg(&id)), Some(&body)).await?, None)
        }
        A::Clients(ClientsCommand::List) => (
            s.call(Method::GET, "/v1/admin/clients", None).await?,
            Some(&["client_id", "name", "grant_types", "scopes", "public", "disabled_at"]),
        ),
        A::Clients(ClientsCommand::Create(c)) => {
            let mut body =
                json!({"name": c.name, "scopes": c.scope_list(), "grant_types": c.grants, "public": c.public});
            if let Some(id) = &c.client_id {
                body["client_id"] = json!(id);
            }
            if let Some(aud) = &c.audience {
                body["audience"] = json!(aud);
            }
            (s.call(Method::POST, "/v1/admin/clients", Some(&body)).await?, None)
        }
        A::Clients(ClientsCommand::Disable { client_id }) => {
            s.call(Method::DELETE, &format!("/v1/admin/clients/{}", seg(&client_id)), None).await?;
            (s.call(Method::GET, &format!("/v1/admin/clients/{}", seg(&client_id)), None).await?, None)
        }
        A::Clients(ClientsCommand::RotateSecret { client_id }) => {
            (s.call(Method::POST, &format!("/v1/admin/clients/{}/secret", seg(&client_id)), None).await?, None)
        }
        A::Users(UsersCommand::Create { username, scopes }) => {
            let password = std::env::var("TESSERA_NEW_USER_PASSWORD").map_err(|_| {
                AdminError::Usage(
                    "TESSERA_NEW_USER_PASSWORD is not set: the new user's password comes from there".into(),
                )
            })?;
            let body = json!({"username": username, "password": password, "scopes": words(&scopes)});
            (s.call(Method::POST, "/v1/admin/users", Some(&body)).await?, None)
        }
        A::Users(UsersCommand::Find { username }) => {
            let qs = serde_urlencoded::to_string([("username", username.as_str())]).unwrap_or_default();
            let found = s.call(Method::GET, &format!("/v1/admin/users?{qs}"), None).await?;
            match found.as_array().and_then(|a| a.first()) {
                Some(user) => (user.clone(), None),
                None => return Err(AdminError::NotFound(format!("no user is called {username:?}"))),
            }
        }
        A::Users(UsersCommand::Delete { id }) => {
            s.call(Method::DELETE, &format!("/v1/admin/users/{}", seg(&id)), None).await?;
            (json!({"id": id, "deleted": true}), None)
        }
        A::SigningKeys(SigningKeysCommand::List { id_token }) => {
            let path = if id_token { "/v1/admin/signing-keys?signs=id_token" } else { "/v1/admin/signing-keys" };
            signing_list(s.call(Method::GET, path, None).await?)
        }
        A::SigningKeys(SigningKeysCommand::Rotate { force }) => {
            let path = if force { "/v1/admin/signing-keys/rotate?force=true" } else { "/v1/admin/signing-keys/rotate" };
            signing_list(s.call(Method::POST, path, None).await?)
        }
        A::SigningKeys(SigningKeysCommand::Revoke { kid }) => {
            signing_list(s.call(Method::POST, &format!("/v1/admin/signing-keys/{}/revoke", seg(&kid)), None).await?)
        }
        A::Anomalies(AnomaliesCommand::List { since }) => {
            let qs = since.map(|t| serde_urlencoded::to_string([("since", t)]).unwrap_or_default()).unwrap_or_default();
            (
                s.call(Method::GET, &format!("/v1/admin/anomalies?{qs}"), None).await?,
                Some(&["id", "kind", "key_id", "client_id", "detected_at"]),
            )
        }
        A::Audit(AuditCommand::Tail { since, limit }) => {
            (audit_tail(s, since, limit).await?, Some(&["at", "actor", "action", "target_type", "target_id", "ip"]))
        }
        A::Webhooks(command) => webhooks::dispatch(s, command).await?,
    })
}

/// The latest `limit` audit entries at or after `since` (default: the last 24 hours), oldest first.
/// The API lists oldest first, so this pages to the end with its cursor and keeps the tail.
async fn audit_tail(s: &Session, since: Option<String>, limit: u32) -> Result<Value, AdminError> {
    let since = match since {
        Some(t) => t,
        None => (time::OffsetDateTime::now_utc() - time::Duration::DAY)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| AdminError::Usage(format!("cannot format the time: {e}")))?,
    };
    let keep = limit.max(1) as usize;
    let mut tail: std::collections::VecDeque<Value> = std::collections::VecDeque::with_capacity(keep);
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned()), ("since", since.clone())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let qs = serde_urlencoded::to_string(&query).unwrap_or_default();
        let page = s.call(Method::GET, &format!("/v1/admin/audit?{qs}"), None).await?;
        let entries = page.as_array().cloned().unwrap_or_default();
        let full = entries.len() == 1000;
        after = entries.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
        for e in entries {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(e);
        }
        if !full || after.is_none() {
            break;
        }
    }
    Ok(Value::Array(tail.into()))
}

fn signing_list(v: Value) -> (Value, Option<&'static [&'static str]>) {
    (v, Some(&["kid", "signs", "alg", "state", "created_at", "activated_at", "retired_at"]))
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// One path segment, percent-encoded (ids come from the command line).
fn seg(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').replace('+', "%20")
}
