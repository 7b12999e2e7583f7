//! RFC 7662 introspection: `{"active": false}` and nothing else for anything not currently valid.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::Error,
    tokens::{refresh, Tokens},
};

/// The introspection answer.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(example = json!({
    "active": true,
    "scope": "keys:read keys:write",
    "client_id": "01a19bc6-9448-7a57-9b38-8164a6fddbf4",
    "sub": "01a1f805-f370-74f8-996d-a763b7a969b1",
    "exp": 1795513200,
    "iat": 1795512600,
    "jti": "01a20ce4-05c0-7b12-88bd-b86ccf33cc01",
    "aud": "https://api.example.com",
    "iss": "https://id.example.com",
    "token_type": "Bearer"
}))]
pub struct Introspection {
    /// Whether the token is currently valid.
    pub active: bool,
    /// Scopes, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    #[schema(value_type = Option<crate::clients::AudienceParam>)]
    pub aud: Option<Value>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

const INACTIVE: Introspection = Introspection {
    active: false,
    scope: None,
    client_id: None,
    sub: None,
    exp: None,
    iat: None,
    jti: None,
    aud: None,
    iss: None,
    token_type: None,
};

type RefreshRow = (
    Vec<String>,
    OffsetDateTime,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    OffsetDateTime,
    String,
    Uuid,
    bool,
    bool,
    Uuid,
    i32,
);

impl Tokens {
    /// Introspects an access token (from memory) or a refresh token (one indexed query).
    pub async fn introspect(&self, token: &str) -> Result<Introspection, Error> {
        if refresh::is_well_formed(token) {
            let hash = self.hash_of(token);
            let mut row: Option<RefreshRow> = None;
            for h in &hash {
                row = sqlx::query_as(
            "SELECT t.scopes, t.issued_at, t.expires_at, t.spent_at, f.revoked_at, f.absolute_expires_at, f.client_id, f.user_id,
                    EXISTS (SELECT 1 FROM clients c WHERE c.client_id = f.client_id AND c.disabled_at IS NULL),
                    EXISTS (SELECT 1 FROM users u WHERE u.id = f.user_id AND u.deleted_at IS NULL),
                    f.id, t.generation
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = $1",
        )
        .bind(h)
        .fetch_optional(&self.db)
        .await?;
                if row.is_some() {
                    break;
                }
            }
            let now = self.clock.now();
            return Ok(match row {
                Some((scopes, iat, idle, None, None, absolute, client_id, user_id, true, true, family, generation))
                    if idle > now && absolute > now =>
                {
                    Introspection {
                        active: true,
                        scope: Some(scopes.join(" ")),
                        client_id: Some(client_id),
                        sub: Some(user_id.to_string()),
                        exp: Some(idle.min(absolute).unix_timestamp()),
                        iat: Some(iat.unix_timestamp()),
                        // Not secret, and stable for this token: its family (the `sid` of its access
                        // tokens) and its place in the rotation chain.
                        jti: Some(format!("{family}.{generation}")),
                        // A refresh token is only ever presented to this issuer's token endpoint.
                        aud: Some(Value::String(self.config.issuer.clone())),
                        iss: Some(self.config.issuer.clone()),
                        token_type: Some("refresh_token".into()),
                    }
                }
                _ => INACTIVE,
            });
        }
        let Ok(claims) = self.validate_access_token(token) else {
            return Ok(INACTIVE);
        };
        let claims = std::sync::Arc::unwrap_or_clone(claims);
        Ok(Introspection {
            active: true,
            scope: Some(claims.scope),
            client_id: Some(claims.client_id),
            sub: Some(claims.sub),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            jti: Some(claims.jti),
            aud: serde_json::to_value(&claims.aud).ok(),
            iss: Some(claims.iss),
            token_type: Some("Bearer".into()),
        })
    }
}
