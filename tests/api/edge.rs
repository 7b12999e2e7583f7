//! The edge of the service: the Authorization header's grammar, connection limits, and discovery
//! under an issuer with a path.

use reqwest::StatusCode;

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
