//! Client redirect URIs (`redirect_uris`, `post_logout_redirect_uris`): absolute, without a
//! fragment (RFC 6749 §3.1.2), https unless the host is loopback (RFC 8252 §7.3, native apps), no
//! user information. Stored in the WHATWG-normalised form, so later exact-match comparisons
//! (RFC 9700 §4.1.1) compare like with like.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::{Error, Result};

/// Most URIs in one list.
pub const MAX_URIS: usize = 20;
/// Longest URI, in bytes.
pub const MAX_URI_LEN: usize = 2000;

/// Validates and normalises a list of redirect URIs, de-duplicated in order; the error names
/// `field` and the offending entry (400 `INVALID_REDIRECT_URI`).
pub fn validate(field: &str, uris: &[String]) -> Result<Vec<String>> {
    if uris.len() > MAX_URIS {
        return Err(Error::InvalidRedirectUri(format!(
            "{field}: at most {MAX_URIS} URIs are allowed, got {}",
            uris.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(uris.len());
    for raw in uris {
        let uri = one(raw).map_err(|why| {
            let shown: String = raw.chars().take(100).collect();
            Error::InvalidRedirectUri(format!("{field}: {shown:?} {why}"))
        })?;
        if !out.contains(&uri) {
            out.push(uri);
        }
    }
    Ok(out)
}

fn one(raw: &str) -> Result<String, &'static str> {
    if raw.len() > MAX_URI_LEN {
        return Err("is longer than 2000 bytes");
    }
    // The WHATWG parser quietly strips tabs, newlines and surrounding spaces; a stored URI must be
    // what was asked for.
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters");
    }
    let url = Url::parse(raw).map_err(|_| "is not an absolute URI")?;
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user information");
    }
    if url.host().is_none() {
        return Err("must have a host");
    }
    let loopback = is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("must use https (http only to a loopback host)"),
        _ => return Err("must be an https URI (http only to a loopback host)"),
    }
    Ok(url.into())
}

/// Whether `url`'s host is `localhost` or a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        None => false,
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        validate("redirect_uris", &[s.to_owned()]).unwrap().remove(0)
    }

    fn refused(s: &str) {
        let err = validate("redirect_uris", &[s.to_owned()]).unwrap_err();
        assert!(matches!(err, Error::InvalidRedirectUri(ref d) if d.starts_with("redirect_uris:")), "{s}: {err:?}");
    }

    #[test]
    fn https_anywhere_and_http_only_to_loopback() {
        assert_eq!(ok("https://app.example.com/cb?x=1"), "https://app.example.com/cb?x=1");
        assert_eq!(ok("HTTPS://App.Example.COM"), "https://app.example.com/");
        assert_eq!(ok("http://127.0.0.1:8400/cb"), "http://127.0.0.1:8400/cb");
        assert_eq!(ok("http://[::1]/cb"), "http://[::1]/cb");
        assert_eq!(ok("http://localhost:3000/cb"), "http://localhost:3000/cb");
        refused("http://app.example.com/cb");
        refused("http://127.0.0.1.example.com/cb");
    }

    #[test]
    fn relative_fragments_credentials_and_other_schemes_are_refused() {
        for s in [
            "/cb",
            "app.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://app.example.com/cb#",
            "https://user:pw@app.example.com/cb",
            "javascript:alert(1)",
            "ftp://app.example.com/",
            "https://app.example.com/ cb",
            "https://app.example.com/\tcb",
            "",
        ] {
            refused(s);
        }
        refused(&format!("https://app.example.com/{}", "a".repeat(MAX_URI_LEN)));
        let many: Vec<String> = (0..=MAX_URIS).map(|i| format!("https://a.example/{i}")).collect();
        assert!(validate("post_logout_redirect_uris", &many).is_err());
        let twice = vec!["https://a.example/".to_owned(), "https://A.example/".to_owned()];
        assert_eq!(validate("redirect_uris", &twice).unwrap(), vec!["https://a.example/".to_owned()]);
    }
}
