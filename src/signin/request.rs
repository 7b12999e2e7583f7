//! An authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OIDC Core §3.1.2.1) checked in the
//! order RFC 6749 §4.1.2.1 needs: first the client and its redirect URI — an error there is shown
//! to the person and never redirected to — then everything else, whose errors go back to the
//! client's redirect URI with `state` and `iss`.

use url::{Host, Url};

use crate::{clients::Client, scopes, tokens::code::is_pkce_string};

/// The parameters as the browser sent them (query string or the sign-in form's hidden fields).
#[derive(Debug, Default, Clone)]
pub struct AuthorizeParams {
    /// `response_type`: `code`.
    pub response_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `redirect_uri`: required, and registered for the client.
    pub redirect_uri: Option<String>,
    /// `scope`, space-separated.
    pub scope: Option<String>,
    /// `state`, returned untouched.
    pub state: Option<String>,
    /// `code_challenge` (RFC 7636): required.
    pub code_challenge: Option<String>,
    /// `code_challenge_method`: `S256` only.
    pub code_challenge_method: Option<String>,
    /// OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect `prompt`: `none`, `login` (others are accepted and have no effect).
    pub prompt: Option<String>,
    /// OpenID Connect `max_age`, seconds since the password was entered.
    pub max_age: Option<String>,
    /// Names of the parameters above that were sent more than once (RFC 6749 §3.1 forbids it).
    pub repeated: Vec<String>,
    /// Whether an OpenID `request` object was sent (not supported).
    pub request_object: bool,
    /// Whether an OpenID `request_uri` was sent (not supported).
    pub request_uri: bool,
}

/// An authorization error sent back to the client (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The `error` code.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal { error, description: description.into() }
}

/// A request whose client and redirect URI are known good.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The client.
    pub client: Client,
    /// Where to send the browser back, exactly as the request named it.
    pub redirect_uri: String,
    /// `state`, when sent.
    pub state: Option<String>,
}

/// A fully valid request.
#[derive(Debug, Clone)]
pub struct Valid {
    /// Scopes asked for (default: every scope of the client), before the user's are applied.
    pub scopes: Vec<String>,
    /// The PKCE challenge.
    pub code_challenge: String,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `prompt=none`: never show the page.
    pub prompt_none: bool,
    /// `prompt=login`: ask for the password even with a session.
    pub prompt_login: bool,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
}

/// Most characters of `state` and `nonce` (they travel in URLs).
const MAX_OPAQUE: usize = 1024;

/// Whether `requested` names `registered`: exactly, or — for an http loopback IP literal — on any
/// port (RFC 8252 §7.3). The request is first held to the rules registration applies (no spaces or
/// control characters, which the WHATWG parser would quietly drop; no fragment, no user
/// information) and compared in the normalised form registration stores.
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    let Ok(normalised) = crate::clients::redirects::validate("redirect_uri", &[requested.to_owned()]) else {
        return false;
    };
    let Some(Ok(req)) = normalised.first().map(|u| Url::parse(u)) else {
        return false;
    };
    if req.as_str() == registered {
        return true;
    }
    let loopback_ip = matches!(req.host(), Some(Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(req.host(), Some(Host::Ipv6(ip)) if ip.is_loopback());
    if req.scheme() != "http" || !loopback_ip {
        return false;
    }
    let Ok(mut reg) = Url::parse(registered) else {
        return false;
    };
    let mut req = req;
    if reg.set_port(None).is_err() || req.set_port(None).is_err() {
        return false;
    }
    reg == req
}

/// Checks that the redirect URI is registered for `client` (an enabled client allowed the
/// authorization-code grant is checked later, with a redirect). `Err` is the text of the error page.
pub fn check_redirect(client: Option<Client>, params: &AuthorizeParams) -> Result<Checked, String> {
    if params.repeated.iter().any(|p| p == "client_id" || p == "redirect_uri") {
        return Err("The application sent its name or return address more than once.".into());
    }
    let Some(client) = client.filter(|c| c.disabled_at.is_none()) else {
        return Err("The application that sent you here is not known to this service.".into());
    };
    let Some(redirect_uri) = params.redirect_uri.clone() else {
        return Err("The application did not say where to send you back (redirect_uri is missing).".into());
    };
    if redirect_uri.len() > 2000 || !client.redirect_uris.iter().any(|r| redirect_matches(r, &redirect_uri)) {
        return Err("The address the application asked to send you back to is not registered for it.".into());
    }
    Ok(Checked { client, redirect_uri, state: params.state.clone().filter(|s| s.len() <= MAX_OPAQUE) })
}

/// Checks everything else about the request.
pub fn check_rest(checked: &Checked, params: &AuthorizeParams) -> Result<Valid, Refusal> {
    if let Some(p) = params.repeated.first() {
        return Err(refuse("invalid_request", format!("{p} was sent more than once")));
    }
    if params.request_object {
        return Err(refuse("request_not_supported", "request objects are not supported"));
    }
    if params.request_uri {
        return Err(refuse("request_uri_not_supported", "request_uri is not supported"));
    }
    if params.state.as_ref().is_some_and(|s| s.len() > MAX_OPAQUE) {
        return Err(refuse("invalid_request", "state is longer than 1024 characters"));
    }
    match params.response_type.as_deref() {
        Some("code") => {}
        None => return Err(refuse("invalid_request", "response_type is required")),
        Some(_) => return Err(refuse("unsupported_response_type", "only response_type=code is supported")),
    }
    if !checked.client.allows_grant("authorization_code") {
        return Err(refuse("unauthorized_client", "this client may not use the authorization code grant"));
    }
    let Some(code_challenge) = params.code_challenge.clone() else {
        return Err(refuse("invalid_request", "code_challenge is required (PKCE with S256, RFC 7636)"));
    };
    if params.code_challenge_method.as_deref() != Some("S256") {
        return Err(refuse("invalid_request", "code_challenge_method must be S256"));
    }
    if !is_pkce_string(&code_challenge) || code_challenge.len() != 43 {
        return Err(refuse("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier"));
    }
    let scopes = match params.scope.as_deref().map(scopes::parse_param) {
        None => checked.client.scopes.clone(),
        Some(None) => return Err(refuse("invalid_scope", "malformed scope")),
        Some(Some(s)) if s.is_empty() => checked.client.scopes.clone(),
        Some(Some(s)) => {
            if !scopes::is_subset(&s, &checked.client.scopes) {
                return Err(refuse("invalid_scope", "the requested scope exceeds what this client may ask for"));
            }
            s
        }
    };
    // The nonce is stored with the code until it is exchanged: text Postgres can hold.
    if params.nonce.as_ref().is_some_and(|n| n.len() > MAX_OPAQUE || n.chars().any(char::is_control)) {
        return Err(refuse("invalid_request", "nonce must be at most 1024 characters, without control characters"));
    }
    let prompts: Vec<&str> = params.prompt.as_deref().unwrap_or("").split_ascii_whitespace().collect();
    let prompt_none = prompts.contains(&"none");
    if prompt_none && prompts.len() > 1 {
        return Err(refuse("invalid_request", "prompt=none cannot be combined with other values"));
    }
    if let Some(p) = prompts.iter().find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account")) {
        return Err(refuse("invalid_request", format!("prompt {p:?} is not supported")));
    }
    let max_age = match params.max_age.as_deref() {
        None | Some("") => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return Err(refuse("invalid_request", "max_age must be a whole number of seconds")),
        },
    };
    Ok(Valid {
        scopes,
        code_challenge,
        nonce: params.nonce.clone(),
        prompt_none,
        prompt_login: prompts.contains(&"login"),
        max_age,
    })
}

/// `redirect_uri` with `pairs` added to its query (and `iss`, RFC 9207).
pub fn redirect_to(redirect_uri: &str, pairs: &[(&str, &str)], issuer: &str) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
                q.append_pair("iss", issuer);
            }
            url.into()
        }
        // Only registered (hence parseable) URIs get here.
        Err(_) => redirect_uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ip_redirects_match_on_any_port_and_nothing_else_is_loose() {
        assert!(redirect_matches("https://app.example.com/cb", "https://app.example.com/cb"));
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com/cb/"));
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com:444/cb"));
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com/cb?x=1"));
        assert!(redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"));
        assert!(redirect_matches("http://127.0.0.1:8400/cb", "http://127.0.0.1:9/cb"));
        assert!(redirect_matches("http://[::1]:8400/cb", "http://[::1]:1234/cb"));
        assert!(!redirect_matches("http://127.0.0.1:8400/cb", "http://127.0.0.1:9/other"));
        assert!(!redirect_matches("http://localhost:8400/cb", "http://localhost:9/cb"));
        assert!(!redirect_matches("http://127.0.0.1:8400/cb", "https://127.0.0.1:8400/cb"));
        // What the WHATWG parser would quietly clean up is not the registered URI.
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com/c\tb"));
        assert!(!redirect_matches("https://app.example.com/cb", " https://app.example.com/cb"));
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com/cb#x"));
        assert!(!redirect_matches("https://app.example.com/cb", "https://u@app.example.com/cb"));
        // Normalisation registration applied too is fine: the same URI.
        assert!(redirect_matches("https://app.example.com/", "https://APP.example.com"));
    }

    #[test]
    fn errors_go_back_with_state_and_iss() {
        let url = redirect_to(
            "https://app.example.com/cb?x=1",
            &[("error", "login_required"), ("state", "a b")],
            "https://id",
        );
        assert_eq!(url, "https://app.example.com/cb?x=1&error=login_required&state=a+b&iss=https%3A%2F%2Fid");
    }
}
