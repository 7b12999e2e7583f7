//! The HTTP surface: one router built from per-surface modules, the layers every request passes,
//! and the last-resort formatter that keeps every error in the contract's formats.

pub mod admin;
pub mod extract;
pub mod keys;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod revocations;
pub mod wellknown;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{header, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    error::{ApiError, OAuthError},
    state::AppState,
};

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(ops::routes())
        .merge(wellknown::routes())
        .merge(oauth::routes())
        .merge(admin::routes())
        .merge(keys::routes())
        .merge(revocations::routes())
}

/// The application as one service: the router, wrapped once in the layers every request passes.
///
/// The layers sit outside the router (`ServiceBuilder` around it) rather than `Router::layer`, which
/// wraps every route in boxed copies of the whole stack that are cloned per request: measured with
/// wrk on the JWKS route, the stack cost more than the handler. Only `observe`, which needs the
/// matched route, runs inside.
pub fn service(state: AppState, request_timeout: Duration) -> AppService {
    let (routes, spec) = api_router().split_for_parts();
    let spec = openapi::finish(spec);
    let request_id = HeaderName::from_static("x-request-id");
    let router = routes
        .merge(openapi::docs_routes(spec))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .with_state(state)
        .layer(middleware::map_response(|matched: Option<MatchedPath>, mut res: Response| async move {
            // Hands the matched route out to `observe`, which runs outside the router.
            if let Some(m) = matched {
                res.extensions_mut().insert(m);
            }
            res
        }));
    let svc = ServiceBuilder::new()
        // Outermost first.
        .map_response(|res: axum::http::Response<_>| res.map(Body::new))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(SetRequestIdLayer::new(request_id.clone(), RequestIds::new()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            // DEBUG: no span is built or formatted per request unless asked for. The path only:
            // never headers, query strings or bodies, which may carry secrets.
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(ObserveLayer)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .map_response(|res: axum::http::Response<_>| res.map(Body::new))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(router);
    tower::util::BoxCloneSyncService::new(svc)
}

/// The whole application as a service (one box at the top, none per route).
pub type AppService = tower::util::BoxCloneSyncService<Request, Response, std::convert::Infallible>;

/// Request ids without a syscall per request: a random per-process prefix (so ids stay unique
/// across instances and restarts) and a counter.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self { prefix: crate::secrets::random_base62(12).into(), next: Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix)).ok().map(RequestId::new)
    }
}

/// Around the router and the limits: puts any error that is not already JSON (router 404/405,
/// body limit 413, timeout 408, ...) into the contract's formats, and counts the request by its
/// matched route (handed out in the response's extensions) and status.
#[derive(Clone, Copy)]
struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe(inner)
    }
}

#[derive(Clone)]
struct Observe<S>(S);

impl<S, B> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = axum::http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let oauth = req.uri().path().starts_with("/oauth/");
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut res = fut.await?.map(Body::new);
            let route = res.extensions_mut().remove::<MatchedPath>();
            let res = normalize_errors(oauth, res);
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            crate::metrics::http_request(method_label(&method), route, res.status().as_u16(), started.elapsed());
            Ok(res)
        })
    }
}

/// The method as a metric label: the standard ones by name, anything a client invents as `OTHER`,
/// so requests cannot create label sets without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Rewrites any error response that is not already JSON (router 404/405, body limit 413,
/// timeout 408, ...) into problem+json, or into RFC 6749 JSON under `/oauth`.
fn normalize_errors(oauth: bool, res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("application/json") || ct.starts_with("application/problem+json"))
        .unwrap_or(false);
    if is_json {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut fixed = if oauth {
        OAuthError::from_status(status).into_response_with_status(status)
    } else {
        ApiError::from_status(status).into_response()
    };
    if let Some(allow) = allow {
        fixed.headers_mut().insert(header::ALLOW, allow);
    }
    fixed
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` to every response of a router.
pub async fn no_store(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
