//! The one layer every request passes on its way in and out: request id, panic catching, timeout,
//! body limit, error normalisation, tracing span and request metrics.
//!
//! It is written as one service rather than a stack of tower-http layers because measured on the
//! JWKS route (wrk, 64 connections), the stack of six layers plus the boxed service around it cost
//! about as much user time per request as hyper and the handler together: every layer added a
//! future to poll, the box a clone and an allocation per request. Here each request costs one
//! allocation for the future and one for its id.

use std::{
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, HttpBody},
    extract::Request,
    http::{header, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use futures::FutureExt;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::routes::RouteTable;
use crate::http::{oauth_error::OAuthError, problem::ApiError};

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest body of a leak report (`POST /v1/keys/leaks`), an exception to [`BODY_LIMIT`]:
/// scanners send up to a thousand findings at once.
pub const LEAK_BODY_LIMIT: usize = 1024 * 1024;

/// Largest body of a key import (`POST /v1/admin/keys/import`): up to a thousand keys.
pub const IMPORT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The body limit of a path.
fn body_limit(path: &str) -> usize {
    match path {
        "/v1/keys/leaks" => LEAK_BODY_LIMIT,
        "/v1/admin/keys/import" => IMPORT_BODY_LIMIT,
        _ => BODY_LIMIT,
    }
}

pub use super::request_id::{current_request_id, REQUEST_ID};
use super::request_id::{RequestIds, CURRENT_REQUEST_ID};

/// The edge around an inner service (the router).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    ids: RequestIds,
    timeout: Duration,
    body_timeout: Duration,
    routes: RouteTable,
    /// The issuer's path, when it has one (see [`super::routes::strip_prefix`]).
    prefix: Option<Arc<str>>,
}

impl<S> Edge<S> {
    /// Wraps `inner`; a request still running after `timeout` is answered 503 with `Retry-After`
    /// (the service was slow, not the client: 408 would blame the client, and neither load
    /// balancers nor OAuth clients retry it). `routes` are the
    /// inner router's templates, the label of each request's metrics.
    pub fn new(inner: S, timeout: Duration, routes: RouteTable) -> Self {
        Self { inner, ids: RequestIds::new(), timeout, body_timeout: timeout, routes, prefix: None }
    }

    /// A request body must have arrived whole within `body_timeout` of the request's start, or the
    /// answer is 408 and the connection closes (see [`super::deadline`]). Default: `timeout`.
    pub fn with_body_timeout(mut self, body_timeout: Duration) -> Self {
        self.body_timeout = body_timeout;
        self
    }

    /// Routes `/<prefix>/x` as `/x` (an issuer with a path; `""` for none).
    pub fn with_path_prefix(mut self, prefix: &str) -> Self {
        self.prefix = (!prefix.is_empty()).then(|| Arc::from(prefix));
        self
    }
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the inner service's, awaited per request through `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = tokio::time::Instant::now();
        let mut route = self.routes.find(req.uri().path());
        if let Some(prefix) = self.prefix.as_deref().filter(|_| !route.matched()) {
            super::routes::strip_prefix(req.uri_mut(), prefix);
            route = self.routes.find(req.uri().path());
        }
        let id = self.ids.assign(&req);
        let method = method_label(req.method());
        let routes = self.routes.clone();
        let oauth = req.uri().path().starts_with("/oauth/");
        // DEBUG: nothing is built or formatted per request unless asked for. The path only: never
        // headers, query strings or bodies, which may carry secrets.
        let span = tracing::debug_span!(
            "request",
            method,
            path = %req.uri().path(),
            request_id = ?id,
            status = tracing::field::Empty
        );
        let limit = body_limit(req.uri().path());
        let too_large = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64);
        let inner = self.inner.clone();
        let timeout = self.timeout;
        let body_deadline = started + self.body_timeout;
        let scoped_id = id.clone();
        let work = async move {
            let mut body_late = None;
            let res = if too_large {
                StatusCode::PAYLOAD_TOO_LARGE.into_response()
            } else {
                if !req.body().is_end_stream() {
                    let late = Arc::new(AtomicBool::new(false));
                    let flag = Arc::clone(&late);
                    req = req.map(|b| {
                        let timed = super::deadline::DeadlineBody::new(b, body_deadline, flag);
                        Body::new(http_body_util::Limited::new(timed, limit))
                    });
                    body_late = Some(late);
                }
                let mut handled = std::pin::pin!(AssertUnwindSafe(inner.oneshot(req)).catch_unwind());
                // Most requests (JWKS, cached verifications, health) finish on their first poll;
                // the timer is armed only for those that wait, with the deadline counted from the
                // request's start. A timer per request was a visible share of the JWKS profile.
                let outcome = match futures::poll!(handled.as_mut()) {
                    Poll::Ready(done) => Ok(done),
                    Poll::Pending => tokio::time::timeout_at(started + timeout, handled).await,
                };
                match outcome {
                    Ok(Ok(Ok(res))) => res,
                    Ok(Ok(Err(never))) => match never {},
                    Ok(Err(_panic)) => {
                        // The payload is not logged: it may hold request data. A bare 500 is put
                        // into the surface's format below.
                        tracing::error!("handler panicked");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                    Err(_elapsed) => {
                        let mut res = StatusCode::SERVICE_UNAVAILABLE.into_response();
                        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        res
                    }
                }
            };
            // A late body is 408 whatever the handler made of the error it read, and the
            // connection closes: the rest of that body may still be on its way.
            let late = body_late.is_some_and(|l| l.load(Ordering::Relaxed));
            let res = if late { StatusCode::REQUEST_TIMEOUT.into_response() } else { res };
            let mut res = finish(res, oauth, method, routes.template(route), id, started);
            if late {
                res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(res)
        };
        CURRENT_REQUEST_ID.scope(scoped_id, work).instrument(span).boxed()
    }
}

/// Error normalisation, request id, metrics and the DEBUG response event.
fn finish(
    res: Response,
    oauth: bool,
    method: &'static str,
    route: &str,
    id: HeaderValue,
    started: tokio::time::Instant,
) -> Response {
    let mut res = normalize_errors(oauth, res);
    res.headers_mut().insert(REQUEST_ID, id);
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    crate::metrics::http_request(method, route, status, elapsed);
    tracing::Span::current().record("status", status);
    tracing::debug!(status, latency_us = elapsed.as_micros() as u64, "response");
    res
}

/// The method as a metric label: the standard ones by name, anything a client invents as `OTHER`,
/// so requests cannot create label sets without bound.
fn method_label(method: &Method) -> &'static str {
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
/// late body 408, timeout 503, ...) into problem+json, or into RFC 6749 JSON under `/oauth`,
/// keeping the `Allow` and `Retry-After` headers the layer set. The browser pages' own HTML errors
/// (the sign-in page's) are meant for a person and are left as they are.
fn normalize_errors(oauth: bool, res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.starts_with("application/json")
                || ct.starts_with("application/problem+json")
                || ct.starts_with("text/html")
        })
        .unwrap_or(false);
    if is_json {
        return res;
    }
    let kept: Vec<_> = [header::ALLOW, header::RETRY_AFTER]
        .into_iter()
        .filter_map(|name| res.headers().get(&name).cloned().map(|v| (name, v)))
        .collect();
    let mut fixed = if oauth {
        OAuthError::from_status(status).into_response_with_status(status)
    } else {
        ApiError::from_status(status).into_response()
    };
    for (name, value) in kept {
        fixed.headers_mut().insert(name, value);
    }
    fixed
}

#[cfg(test)]
mod tests {
    use axum::{body::Bytes, routing::get, Router};

    use super::*;
    use crate::http::request_id::{MAX_CLIENT_REQUEST_ID, PREFIX_LEN};

    async fn boom() -> StatusCode {
        panic!("boom")
    }

    fn app() -> Edge<Router> {
        let router = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(60)).await }))
            .route("/panic", get(boom))
            .route(
                "/waits",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    "done"
                }),
            )
            .route("/oauth/panic", get(boom))
            .route("/oauth/slow", get(|| async { tokio::time::sleep(Duration::from_secs(60)).await }))
            .route("/echo", axum::routing::post(|body: Bytes| async move { body.len().to_string() }))
            .route("/id", get(|id: crate::http::extract::RequestId| async move { id.0.unwrap_or_default() }));
        let routes = RouteTable::new(["/slow", "/panic", "/waits", "/oauth/panic", "/oauth/slow", "/echo", "/id"]);
        Edge::new(router, Duration::from_millis(200), routes)
    }

    async fn run(req: axum::http::Request<Body>) -> Response {
        match app().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }

    async fn send(req: axum::http::Request<Body>) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let res = run(req).await;
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn get_req(path: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_timeout_is_503_with_retry_after() {
        // Found by scripts/chaos: during a Postgres restart, requests waiting for a connection
        // past TESSERA_REQUEST_TIMEOUT were answered 408, which blames the client and is not
        // retried; the contract (and docs/configuration.md) say 503.
        let (status, headers, body) = send(get_req("/slow")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "UNAVAILABLE");
        assert!(headers.contains_key(REQUEST_ID));
        let (status, headers, body) = send(get_req("/oauth/slow")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["error"], "temporarily_unavailable");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_less_than_the_timeout_is_answered() {
        let res = run(get_req("/waits")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
        assert_eq!(&body[..], b"done");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_500_in_the_surface_format() {
        let (status, headers, body) = send(get_req("/panic")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(body["code"], "INTERNAL");
        let (status, _, body) = send(get_req("/oauth/panic")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "server_error");
    }

    #[tokio::test]
    async fn a_chunked_body_past_the_limit_is_413_without_content_length() {
        let chunks = (0..80).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024])));
        let req =
            axum::http::Request::post("/echo").body(Body::from_stream(futures::stream::iter(chunks))).expect("request");
        let (status, _, body) = send(req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["status"], 413);
        // Under the limit, the body arrives whole.
        let req = axum::http::Request::post("/echo").body(Body::from(vec![b'x'; 1000])).expect("request");
        let res = run(req).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
        let mut req = get_req("/nowhere");
        req.headers_mut().insert(REQUEST_ID, HeaderValue::from_static("trace-42"));
        let (status, headers, _) = send(req).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[REQUEST_ID], "trace-42");

        let long = "a".repeat(MAX_CLIENT_REQUEST_ID + 1);
        let mut req = get_req("/nowhere");
        req.headers_mut().insert(REQUEST_ID, HeaderValue::from_str(&long).expect("header"));
        let (_, headers, _) = send(req).await;
        assert_ne!(headers[REQUEST_ID], long.as_str());
        assert!(!headers[REQUEST_ID].is_empty());

        let mut req = get_req("/nowhere");
        req.headers_mut().insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let (_, headers, _) = send(req).await;
        assert_ne!(headers[REQUEST_ID], "has space");

        // Generated ids: the process prefix, '-', the counter in hex.
        let ids = RequestIds::new();
        for (n, hex) in
            [(1u64, "1"), (0xf, "f"), (0x10, "10"), (0xdead_beef, "deadbeef"), (u64::MAX, "ffffffffffffffff")]
        {
            ids.next.store(n, Ordering::Relaxed);
            let id = ids.assign(&get_req("/"));
            let (prefix, counter) = id.to_str().expect("ascii").split_once('-').expect("dash");
            assert_eq!(prefix.len(), PREFIX_LEN);
            assert!(prefix.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(counter, hex);
        }
        // They differ from request to request.
        let (_, a, _) = send(get_req("/nowhere")).await;
        let (_, b, _) = send(get_req("/nowhere")).await;
        assert_ne!(a[REQUEST_ID], b[REQUEST_ID]);
    }

    #[tokio::test]
    async fn handlers_see_the_id_the_response_carries() {
        let res = run(get_req("/id")).await;
        let sent = res.headers()[REQUEST_ID].to_str().expect("ascii").to_owned();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
        assert!(!sent.is_empty());
        assert_eq!(std::str::from_utf8(&body).expect("utf-8"), sent);

        let mut req = get_req("/id");
        req.headers_mut().insert(REQUEST_ID, HeaderValue::from_static("trace-42"));
        let body = axum::body::to_bytes(run(req).await.into_body(), usize::MAX).await.expect("body");
        assert_eq!(&body[..], b"trace-42");
        // Outside a request there is none.
        assert_eq!(current_request_id(), None);
    }
}
