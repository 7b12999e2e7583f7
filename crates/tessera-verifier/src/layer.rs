//! The `tower::Layer` that authenticates requests, and the axum extractors that hand handlers the
//! verified principal ([`Authenticated`]) or refuse without a scope ([`Scoped`]). Refusals are
//! RFC 6750 §3 responses: a status, a `WWW-Authenticate: Bearer …` challenge and a small JSON body.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use http::{header, request::Parts, HeaderValue, Request};

use crate::{Principal, Rejection, Verifier};

/// Authenticates every request that carries `Authorization: Bearer …` (access token or API key)
/// and puts the [`Principal`] in its extensions. A request with a credential that fails is
/// answered here (401/400/503, with its challenge); one without a credential goes on, so that
/// public routes can share the layer — [`Authenticated`] refuses it where a principal is needed.
///
/// ```no_run
/// # async fn demo(verifier: tessera_verifier::Verifier) {
/// use axum::{routing::get, Router};
/// use tessera_verifier::{Authenticated, VerifierLayer};
/// let app: Router = Router::new()
///     .route("/me", get(|who: Authenticated| async move { who.subject.clone() }))
///     .layer(VerifierLayer::new(verifier));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct VerifierLayer {
    verifier: Verifier,
}

impl VerifierLayer {
    /// A layer checking credentials with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        VerifierService { inner, verifier: self.verifier.clone() }
    }
}

/// The end user's address, which a service may put in a request's extensions (from its proxy
/// headers or socket) before [`VerifierLayer`], so that API keys are checked against their allowed
/// address ranges and Tessera counts the right source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

/// The service [`VerifierLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct VerifierService<S> {
    inner: S,
    verifier: Verifier,
}

/// What the layer leaves in a request's extensions.
#[derive(Clone)]
struct AuthContext {
    principal: Option<Arc<Principal>>,
    realm: Arc<str>,
}

impl<S, B> tower::Service<Request<B>> for VerifierService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was made ready is the one called (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let realm: Arc<str> = Arc::from(verifier.realm());
            let principal = match req.headers().get(header::AUTHORIZATION) {
                None => None,
                Some(value) => {
                    // The end user's address for an API key's allowed ranges, when the service
                    // put one in the request (`ClientIp`).
                    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
                    match verifier.authenticate(Some(value.as_bytes()), ip).await {
                        Ok(p) => Some(p),
                        // Another scheme is no bearer credential: as if absent.
                        Err(Rejection::Missing) => None,
                        Err(rejection) => return Ok(Refusal { rejection, realm }.into_response()),
                    }
                }
            };
            req.extensions_mut().insert(AuthContext { principal, realm });
            inner.call(req).await
        })
    }
}

/// A refused request: the [`Rejection`] and the realm of its challenge. Handlers may return it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub rejection: Rejection,
    realm: Arc<str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.rejection.status();
        let body = serde_json::json!({
            "error": self.rejection.error_code().unwrap_or(match status.as_u16() {
                429 => "rate_limited",
                503 => "temporarily_unavailable",
                _ => "unauthorized",
            }),
            "error_description": match &self.rejection {
                // The precise reason stays in the server's logs (RFC 6750 §5.2: say little).
                Rejection::Invalid(_) => "the credential is invalid".to_owned(),
                other => other.to_string(),
            },
        });
        let mut res = (status, axum::Json(body)).into_response();
        if let Some(challenge) = self.rejection.www_authenticate(&self.realm) {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if status == http::StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// The verified caller. Extracting it refuses the request (401 with a `Bearer` challenge) when
/// [`VerifierLayer`] found no credential on it.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Principal>);

impl std::ops::Deref for Authenticated {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl Authenticated {
    /// Refuses (403 `insufficient_scope`, naming `scope`) unless the principal has `scope`.
    ///
    /// # Errors
    /// A [`Refusal`] carrying [`Rejection::InsufficientScope`].
    pub fn require(&self, scope: &str, realm: &str) -> Result<(), Refusal> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(Refusal { rejection: Rejection::InsufficientScope(scope.to_owned()), realm: Arc::from(realm) })
        }
    }
}

fn context(parts: &Parts) -> Result<(Arc<Principal>, Arc<str>), Refusal> {
    match parts.extensions.get::<AuthContext>() {
        Some(AuthContext { principal: Some(p), realm }) => Ok((Arc::clone(p), Arc::clone(realm))),
        Some(AuthContext { principal: None, realm }) => {
            Err(Refusal { rejection: Rejection::Missing, realm: Arc::clone(realm) })
        }
        // The layer is not in front of this route: a setup mistake, refused rather than let through.
        None => Err(Refusal { rejection: Rejection::Missing, realm: Arc::from("tessera") }),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refusal> {
        context(parts).map(|(p, _)| Self(p))
    }
}

/// A scope a route requires, named by a type so it can be checked by an extractor:
/// `struct HelloRead; impl RequiredScope for HelloRead { const SCOPE: &'static str = "hello:read"; }`.
pub trait RequiredScope: Send + Sync + 'static {
    /// The scope.
    const SCOPE: &'static str;
}

/// The verified caller, who has scope `S::SCOPE`: extracting it refuses the request with 401
/// without credentials and 403 `insufficient_scope` without the scope (RFC 6750 §3.1).
#[derive(Debug, Clone)]
pub struct Scoped<S: RequiredScope>(pub Arc<Principal>, PhantomData<S>);

impl<S: RequiredScope> std::ops::Deref for Scoped<S> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<St: Send + Sync, S: RequiredScope> FromRequestParts<St> for Scoped<S> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Refusal> {
        let (principal, realm) = context(parts)?;
        if principal.has_scope(S::SCOPE) {
            Ok(Self(principal, PhantomData))
        } else {
            Err(Refusal { rejection: Rejection::InsufficientScope(S::SCOPE.to_owned()), realm })
        }
    }
}
