//! Where webhooks may go. Only `http` and `https`; and, unless private destinations are allowed
//! (`TESSERA_WEBHOOK_ALLOW_PRIVATE`), never an address in a private, loopback, link-local, CGNAT,
//! unique-local, multicast or otherwise special range — checked when an endpoint is saved and
//! again for every address a delivery would connect to ([`GuardedResolver`] filters what DNS
//! answers, so a name that later resolves inside the network is refused at delivery time).
//!
//! The URL is parsed the WHATWG way (as browsers and HTTP clients do), which turns odd spellings
//! of an address (`http://2130706433/`, `http://0x7f.1/`, `http://127.1/`) into the address they
//! mean before it is judged; IPv4-mapped, NAT64 and 6to4 IPv6 forms are judged by the IPv4
//! address they carry.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::{Error, Result};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Whether `ip` is a destination the public internet could hold: false for private, loopback,
/// link-local, CGNAT, unique-local, multicast, documentation, benchmark and reserved ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                  // "this network"
        || a == 10                            // RFC 1918
        || a == 127                           // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT, RFC 6598
        || (a == 169 && b == 254)             // link-local (cloud metadata lives here)
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 168)             // RFC 1918
        || (a == 192 && b == 0 && c == 0)     // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)     // TEST-NET-1
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100)  // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)   // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]      // IPv4-compatible (deprecated) ::a.b.c.d
        || (s[0] & 0xfe00) == 0xfc00          // unique-local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80          // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0          // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00          // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] == 0x0100) // discard-only 100::/64
}

/// Parses and checks a destination URL: `http` or `https`, with a host, at most
/// [`MAX_URL_LEN`] bytes, no credentials; an address written in the URL must be public unless
/// `allow_private`.
///
/// # Errors
/// [`Error::Invalid`] naming `url`.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url> {
    if raw.len() > MAX_URL_LEN {
        return Err(Error::invalid(format!("url: at most {MAX_URL_LEN} characters")));
    }
    let url = Url::parse(raw).map_err(|_| Error::invalid("url: not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid("url: must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid("url: must not carry credentials"));
    }
    match url.host() {
        None => return Err(Error::invalid("url: must name a host")),
        Some(Host::Ipv4(ip)) => refuse_private(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => refuse_private(IpAddr::V6(ip), allow_private)?,
        Some(Host::Domain(d)) => {
            if !allow_private && (d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"))
            {
                return Err(private_refused());
            }
        }
    }
    Ok(url)
}

fn private_refused() -> Error {
    Error::invalid(
        "url: the destination is in a private, loopback, link-local or otherwise internal range \
         (set TESSERA_WEBHOOK_ALLOW_PRIVATE=true to allow it)",
    )
}

fn refuse_private(ip: IpAddr, allow_private: bool) -> Result<()> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(private_refused())
    }
}

/// Resolves the URL's host (at creation) and refuses it when any address it resolves to is
/// internal. A name that does not resolve now (or within 3 s) is accepted: the delivery-time
/// check still holds.
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<()> {
    if allow_private {
        return Ok(());
    }
    let (Some(Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Ok(());
    };
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(3), tokio::net::lookup_host((host, port)));
    if let Ok(Ok(addrs)) = lookup.await {
        for a in addrs {
            refuse_private(a.ip(), false)?;
        }
    }
    Ok(())
}

/// A DNS resolver for the delivery client that drops every internal address from an answer, so
/// the address actually connected to is always one [`is_public`] accepts (unless private
/// destinations are allowed). A name with nothing left fails to resolve.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Private destinations allowed (`TESSERA_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.filter(|a| allow || is_public(a.ip())).collect();
            if found.is_empty() {
                return Err("the name resolves to no address webhooks may reach".into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The delivery client: no redirects followed, no proxies from the environment, 10 s per attempt,
/// every resolved address checked.
///
/// # Errors
/// [`Error::Internal`] when the TLS stack cannot be set up.
pub fn client(allow_private: bool) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent("Tessera-Webhooks/1")
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()
        .map_err(|e| Error::Internal(format!("webhook client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_destinations_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
            assert!(check_url(url, true).is_ok(), "{url} allowed when private is");
        }
    }

    #[tokio::test]
    async fn the_delivery_resolver_drops_internal_answers() {
        use std::str::FromStr;
        let name = || Name::from_str("localhost").expect("name");
        assert!(GuardedResolver { allow_private: false }.resolve(name()).await.is_err());
        let found: Vec<SocketAddr> =
            GuardedResolver { allow_private: true }.resolve(name()).await.expect("resolves").collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()) && !found.is_empty());
    }

    #[test]
    fn only_http_and_https_are_accepted() {
        for url in ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)", "/x"] {
            assert!(check_url(url, true).is_err(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/tessera", false).is_ok());
        assert!(check_url("http://93.184.216.34:8080/x", false).is_ok());
        assert!(check_url("https://user:pw@example.com/", true).is_err());
    }
}
