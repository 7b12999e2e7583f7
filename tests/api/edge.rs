//! The edge of the service: the Authorization header's grammar, connection limits, and discovery
//! under an issuer with a path.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

#[tokio::test]
async fn a_malformed_bearer_header_is_400_invalid_request_and_another_scheme_is_401() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let get = |value: String| app.http.get(app.url("/v1/admin/clients")).header("authorization", value).send();

    // RFC 6750 §3.1: a request that names the scheme but is malformed is invalid_request, 400.
    for value in [format!("Bearer {admin} extra"), "Bearer a b".into(), "Bearer".into(), format!("Bearer\t{admin}")] {
        let res = get(value.clone()).await.unwrap();
        let www = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(www.as_deref(), Some("Bearer realm=\"tessera\", error=\"invalid_request\""), "{value}");
        assert_problem(res, 400, "INVALID_REQUEST").await;
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = get(format!("{scheme} {admin}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
    // Another scheme carries no bearer token: 401 with the plain challenge.
    let res = get("Basic xyz".into()).await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"tessera\"");
    assert_problem(res, 401, "UNAUTHORIZED").await;
    // A well-formed token that does not verify stays 401 invalid_token.
    let res = get("Bearer abc.def.ghi".into()).await.unwrap();
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert_problem(res, 401, "UNAUTHORIZED").await;
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent;
/// fails if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(limit, read_all).await.is_err() {
        panic!("the connection was still open after {limit:?}");
    }
    got
}

/// Reads one response head (up to the blank line) within `limit`; `None` if none came.
async fn response_head(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_head).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr.trim_start_matches("http://")).await.unwrap()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: tessera\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_half_a_request_line_is_closed_after_the_header_timeout() {
    let app = TestAppBuilder::new().set("TESSERA_HEADER_TIMEOUT", "1").spawn().await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /healthz HT").await.unwrap();
    let started = Instant::now();
    let sent = closed_within(&mut half, Duration::from_secs(5)).await;
    assert!(sent.is_empty(), "nothing is answered: {:?}", String::from_utf8_lossy(&sent));
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());
    // So is one that sends nothing at all (it could hold a descriptor just the same).
    let mut silent = connect(&app).await;
    closed_within(&mut silent, Duration::from_secs(5)).await;
    // A request sent whole is answered.
    let mut whole = connect(&app).await;
    whole.write_all(HEALTHZ).await.unwrap();
    let head = response_head(&mut whole, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed_after_the_idle_timeout() {
    let app = TestAppBuilder::new().set("TESSERA_IDLE_TIMEOUT", "1").set("TESSERA_HEADER_TIMEOUT", "30").spawn().await;
    let mut conn = connect(&app).await;
    conn.write_all(HEALTHZ).await.unwrap();
    let head = response_head(&mut conn, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Well before the 30 s header timeout: it is the idle timeout that closes it.
    closed_within(&mut conn, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_with_408_after_the_body_timeout() {
    let app = TestAppBuilder::new().set("TESSERA_BODY_TIMEOUT", "1").spawn().await;
    let mut conn = connect(&app).await;
    conn.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: tessera\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    // The request timeout (30 s) is far off: only the body timeout can end this in time.
    let sent = String::from_utf8_lossy(&closed_within(&mut conn, Duration::from_secs(10)).await).into_owned();
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.to_ascii_lowercase().contains("connection: close"), "{sent}");
    // The service is fine afterwards.
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_waits_until_one_closes() {
    let app = TestAppBuilder::new().set("TESSERA_MAX_CONNECTIONS", "2").spawn().await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for conn in [&mut first, &mut second] {
        conn.write_all(HEALTHZ).await.unwrap();
        let head = response_head(conn, Duration::from_secs(5)).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // The third is connected by the kernel (backlog) but not served while both are open.
    let mut third = connect(&app).await;
    third.write_all(HEALTHZ).await.unwrap();
    assert_eq!(response_head(&mut third, Duration::from_millis(700)).await, None, "served past the cap");
    // One closes: the third is served.
    drop(first);
    let head = response_head(&mut third, Duration::from_secs(5)).await.expect("served once a slot freed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // And the service keeps serving afterwards.
    drop((second, third));
    for _ in 0..5 {
        let res = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

/// Every member is present with something to say: no empty string, no empty list.
fn assert_no_empty_member(m: &serde_json::Value) {
    for (k, v) in m.as_object().unwrap() {
        match v {
            serde_json::Value::String(s) => assert!(!s.is_empty(), "{k} is empty"),
            serde_json::Value::Array(a) => {
                assert!(!a.is_empty(), "{k} is []");
                assert!(a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())), "{k}: {a:?}");
            }
            serde_json::Value::Bool(_) => {}
            other => panic!("{k} is {other}"),
        }
    }
    // RFC 8414 §2: issuer and response_types_supported are REQUIRED; token_endpoint too unless
    // only the implicit grant is supported.
    for k in ["issuer", "response_types_supported", "token_endpoint", "grant_types_supported"] {
        assert!(m.get(k).is_some(), "{k} missing: {m}");
    }
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_its_metadata_at_the_rfc_8414_location_with_urls_under_it() {
    let issuer = "http://127.0.0.1:8080/tenant";
    let app = TestAppBuilder::new().set("TESSERA_ISSUER", issuer).spawn().await;
    let res = app.http.get(app.url("/.well-known/oauth-authorization-server/tenant")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let m: serde_json::Value = res.json().await.unwrap();
    assert_eq!(m["issuer"], issuer);
    for (member, path) in [
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("service_documentation", "/docs"),
    ] {
        assert_eq!(m[member], format!("{issuer}{path}"), "{member}");
    }
    assert_no_empty_member(&m);
    // The root location belongs to an issuer without a path: not this one (RFC 8414 §3.3 would
    // have a client reject the document there anyway).
    let res = app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap();
    assert_problem(res, 404, "NOT_FOUND").await;
    let res = app.http.get(app.url("/.well-known/oauth-authorization-server/other")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // The URLs it names answer (reached directly, with the issuer's path).
    let under = |path: &str| app.url(&format!("/tenant{path}"));
    let res = app
        .http
        .post(under("/oauth/token"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token: serde_json::Value = res.json().await.unwrap();
    let (_, claims) = crate::signing::parts(token["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], issuer);
    let res = app.http.get(under("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.http.get(under("/v1/admin/clients")).bearer_auth(token["access_token"].as_str().unwrap()).send();
    assert_eq!(res.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_issuer_without_a_path_serves_metadata_at_the_root_with_no_empty_member() {
    let app = spawn_app().await;
    let m: serde_json::Value =
        app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["issuer"], "http://127.0.0.1:8080");
    assert_no_empty_member(&m);
    // The authorization endpoint serves the code flow only: never the implicit grant.
    assert_eq!(m["authorization_endpoint"], "http://127.0.0.1:8080/oauth/authorize");
    let grants = m["grant_types_supported"].as_array().unwrap();
    assert!(grants.iter().any(|g| g == "authorization_code"), "{grants:?}");
    assert!(!grants.iter().any(|g| g == "implicit"), "{grants:?}");
}

#[tokio::test]
async fn an_issuer_path_that_is_also_a_route_prefix_hides_no_route() {
    let issuer = "http://127.0.0.1:8080/v1";
    let app = TestAppBuilder::new().set("TESSERA_ISSUER", issuer).spawn().await;
    let admin = app.admin_token().await;
    // /v1/admin/clients is a route as it stands: it is not taken for /admin/clients under the issuer.
    assert_eq!(app.get_auth("/v1/admin/clients", &admin).await.status(), StatusCode::OK);
    // Under the issuer's path it answers too, as do the OAuth endpoints.
    assert_eq!(app.get_auth("/v1/v1/admin/clients", &admin).await.status(), StatusCode::OK);
    let res = app
        .http
        .post(app.url("/v1/oauth/token"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let m: serde_json::Value =
        app.http.get(app.url("/.well-known/oauth-authorization-server/v1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
}
