//! Source addresses: which address a request comes from, for limits that count per source.
//!
//! The source is the TCP peer, unless the peer is a trusted proxy (`TESSERA_TRUSTED_PROXIES`):
//! then it is the last hop of `X-Forwarded-For` that is not itself a trusted proxy. Hops to the
//! left of that one were written by the caller and prove nothing, so they are never believed.
//! Addresses are compared in canonical form: an IPv4-mapped IPv6 address is its IPv4 address.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// A range in canonical form: an IPv4-mapped IPv6 range (`::ffff:a.b.c.d/n`, n ≥ 96) becomes the
/// IPv4 range it stands for; anything else is returned as it is.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|p| p.contains(&ip))
}

/// The source address of a request from `peer` carrying the given `X-Forwarded-For` header values
/// (in the order they appeared). With no trusted proxies configured the header is ignored.
pub fn source_address<'a>(peer: IpAddr, forwarded_for: impl IntoIterator<Item = &'a str>, proxies: &[IpNet]) -> IpAddr {
    let mut source = peer.to_canonical();
    if !trusted(source, proxies) {
        return source;
    }
    let hops: Vec<&str> = forwarded_for.into_iter().flat_map(|v| v.split(',')).map(str::trim).collect();
    // Right to left: each hop was appended by the (trusted) hop after it.
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                source = ip.to_canonical();
                if !trusted(source, proxies) {
                    return source;
                }
            }
            // Garbage written by the caller (or a port, which proxies do not send): the trusted
            // hop that passed it on is the last address known to be true.
            Err(_) => return source,
        }
    }
    source
}

/// The path of an issuer URL: `""` for `https://id.example.com`, `"/tenant"` for
/// `https://id.example.com/tenant` (the configuration drops a trailing slash).
pub fn issuer_path(issuer: &str) -> &str {
    let authority_and_path = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    authority_and_path.find('/').map_or("", |i| &authority_and_path[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(source_address(ip("203.0.113.9"), ["198.51.100.1"], &proxies), ip("203.0.113.9"));
        assert_eq!(source_address(ip("10.0.0.2"), ["198.51.100.1"], &[]), ip("10.0.0.2"));
    }

    #[test]
    fn the_last_untrusted_hop_is_the_source_and_spoofed_hops_to_its_left_are_not() {
        let proxies = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The caller wrote 1.1.1.1; 198.51.100.7 is who connected to our first proxy.
        let xff = ["1.1.1.1, 198.51.100.7", "192.168.3.4"];
        assert_eq!(source_address(ip("10.1.2.3"), xff, &proxies), ip("198.51.100.7"));
        // All hops trusted: the leftmost one is as far as the chain goes.
        assert_eq!(source_address(ip("10.1.2.3"), ["192.168.1.1, 10.9.9.9"], &proxies), ip("192.168.1.1"));
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(source_address(ip("10.1.2.3"), [], &proxies), ip("10.1.2.3"));
        // Garbage stops the walk at the trusted hop that passed it on.
        assert_eq!(source_address(ip("10.1.2.3"), ["nonsense, 10.0.0.9"], &proxies), ip("10.0.0.9"));
    }

    #[test]
    fn ipv4_mapped_addresses_and_ranges_are_their_ipv4_form() {
        let proxies = vec![canonical_net("::ffff:10.0.0.0/104".parse().unwrap())];
        assert_eq!(proxies[0].to_string(), "10.0.0.0/8");
        assert_eq!(source_address(ip("::ffff:10.0.0.1"), ["::ffff:203.0.113.5"], &proxies), ip("203.0.113.5"));
        assert_eq!(source_address(ip("::ffff:127.0.0.3"), [], &[]), ip("127.0.0.3"));
    }
}
