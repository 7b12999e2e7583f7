//! The OpenAPI 3.1 document (generated from the routes, so it cannot drift) and the offline docs page.

use axum::Router;
use serde::Serialize;
use utoipa::{
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
    Modify, OpenApi, ToSchema,
};
use utoipa_swagger_ui::SwaggerUi;

use crate::http::state::AppState;

/// RFC 9457 problem details, the error body of every `/v1` endpoint.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "invalid request body: unknown field `nme`",
    "code": "INVALID_REQUEST"
}))]
pub struct Problem {
    /// Problem type URI (`about:blank`).
    #[schema(example = "about:blank")]
    pub r#type: String,
    /// Short summary (the HTTP reason phrase).
    #[schema(example = "Bad Request")]
    pub title: String,
    /// HTTP status.
    #[schema(example = 400)]
    pub status: u16,
    /// What exactly is wrong.
    #[schema(example = "invalid request body: unknown field `nme`")]
    pub detail: String,
    /// Stable machine-readable code.
    #[schema(example = "INVALID_REQUEST")]
    pub code: String,
}

/// RFC 6749 §5.2 error, the error body of every `/oauth` endpoint.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_grant", "error_description": "invalid username or password"}))]
pub struct OAuthErrorBody {
    /// Error code.
    #[schema(example = "invalid_grant")]
    pub error: String,
    /// Human-readable description.
    pub error_description: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Token and API-key identity service: OAuth access and refresh tokens, JWKS, API keys, revocation fan-out.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(Problem, OAuthErrorBody)),
    tags(
        (name = "oauth", description = "OAuth 2.0 token, revocation and introspection endpoints"),
        (name = "discovery", description = "RFC 8414 metadata, OpenID Connect discovery and the JWKS"),
        (name = "sign-in", description = "Tessera's sign-in page (authorization code with PKCE), UserInfo and logout"),
        (name = "admin", description = "Clients, users, signing keys, audit and anomalies"),
        (name = "keys", description = "API keys"),
        (name = "revocations", description = "Revocation event catch-up"),
        (name = "webhooks", description = "Signed notices of what happens to keys, and leak reports"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token issued by this service's /oauth/token"))
                    .build(),
            ),
        );
        components.add_security_scheme("client_basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// The document's fixed parts, before the routes add their paths.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Final touches after the routes were merged.
pub fn finish(mut spec: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    spec.info.version = env!("CARGO_PKG_VERSION").to_owned();
    spec
}

/// The complete document as served and committed (`openapi/openapi.json`).
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, spec) = super::api_router().split_for_parts();
    finish(spec)
}

/// Pretty JSON of the document, with a trailing newline.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// Where the Swagger UI is served.
const DOCS_PATH: &str = "/docs";
/// Where the document itself is served.
const SPEC_PATH: &str = "/openapi.json";

/// The templates [`docs_routes`] serves, for metric labels: the document, and the Swagger UI's
/// own routes (its redirect, its page and its assets under the same prefix).
pub fn docs_templates() -> [String; 4] {
    [SPEC_PATH.to_owned(), DOCS_PATH.to_owned(), format!("{DOCS_PATH}/"), format!("{DOCS_PATH}/{{*rest}}")]
}

/// `/openapi.json` and the offline Swagger UI at `/docs` (assets vendored in the crate).
pub fn docs_routes(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    // The reference is an HTML page like the sign-in page: the same policy and framing refusal.
    Router::from(SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, spec))
        .layer(axum::middleware::from_fn(super::browser::security_headers))
}
