//! `tessera admin webhooks …`: list, create and delete webhook endpoints.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::{client::Session, seg, words, AdminError};

/// `tessera admin webhooks …`
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Every endpoint, oldest first (never a secret).
    List,
    /// A new endpoint receiving every event of the chosen types; its secret is printed this once.
    Create {
        /// Destination, an http(s) URL
        url: String,
        /// Event types, space-separated (e.g. "api_key.revoked api_key.leaked")
        #[arg(long)]
        events: String,
        /// Free text
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an endpoint and what it still had to receive.
    Delete {
        /// Endpoint id
        id: String,
    },
}

/// Calls the API for one webhooks command: the answer and, for a list, the table's columns.
pub(super) async fn dispatch(
    s: &Session,
    command: WebhooksCommand,
) -> Result<(Value, Option<&'static [&'static str]>), AdminError> {
    Ok(match command {
        WebhooksCommand::List => (
            s.call(Method::GET, "/v1/webhooks", None).await?,
            Some(&["id", "url", "events", "enabled", "owner", "created_at"]),
        ),
        WebhooksCommand::Create { url, events, description } => {
            let mut body = json!({"url": url, "events": words(&events)});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            (s.call(Method::POST, "/v1/webhooks", Some(&body)).await?, None)
        }
        WebhooksCommand::Delete { id } => {
            s.call(Method::DELETE, &format!("/v1/webhooks/{}", seg(&id)), None).await?;
            (json!({"id": id, "deleted": true}), None)
        }
    })
}
