//! Reading one variable: set or not, parsed and range-checked, with errors that name it. Every
//! `TESSERA_*` setting of a kind (seconds, counts, switches, Postgres URLs) goes through the same
//! reader, so each kind is parsed one way and explains itself in the same words.

use std::time::Duration;

use ipnet::IpNet;

use super::ConfigError;

/// The variables, read through a lookup (the process environment, or a map in tests).
pub(super) struct Vars<F> {
    get: F,
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub(super) fn new(get: F) -> Self {
        Self { get }
    }

    /// The value of `name`; `None` when unset or blank (a blank value means "the default", as an
    /// empty line in an env file usually does).
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.get)(name).filter(|v| !v.trim().is_empty())
    }

    /// A whole number of seconds in `min..=max` (`default` when unset).
    pub(super) fn secs(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(Duration::from_secs(default));
        };
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, format!("expected a whole number of seconds, got {v:?}")))?;
        if n < min || n > max {
            return Err(ConfigError::new(name, format!("must be between {min} and {max} seconds, got {n}")));
        }
        Ok(Duration::from_secs(n))
    }

    /// A whole number in `min..=max` (`default` when unset).
    pub(super) fn num(&self, name: &'static str, default: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        let n: u32 =
            v.trim().parse().map_err(|_| ConfigError::new(name, format!("expected a whole number, got {v:?}")))?;
        if n < min || n > max {
            return Err(ConfigError::new(name, format!("must be between {min} and {max}, got {n}")));
        }
        Ok(n)
    }

    /// A switch: `true`, `on` or `1`; `false`, `off` or `0` (`default` when unset).
    pub(super) fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("true" | "on" | "1") => Ok(true),
            Some("false" | "off" | "0") => Ok(false),
            Some(other) => Err(ConfigError::new(name, format!("expected true or false, got {other:?}"))),
        }
    }
}

/// Checks that `url`, read from `name`, is a Postgres URL.
pub(super) fn postgres_url(name: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(ConfigError::new(name, "must be a postgres:// or postgresql:// URL"))
    }
}

/// `TESSERA_ISSUER` (default `http://127.0.0.1:8080`): an http(s) URL without query or fragment,
/// and without a trailing slash. A path is routed as given (RFC 8414 §3.1 metadata, endpoints
/// under it), so it must be plain segments.
pub(super) fn issuer(raw: Option<String>) -> Result<String, ConfigError> {
    let issuer = raw.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let issuer = issuer.trim().trim_end_matches('/').to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        || issuer.contains(['?', '#', ' '])
        || issuer.len() <= "http://".len()
    {
        return Err(ConfigError::new("TESSERA_ISSUER", "must be an http(s) URL without query or fragment"));
    }
    let issuer_path = crate::net::issuer_path(&issuer);
    let plain = |seg: &str| {
        !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@%".contains(&b))
    };
    if !issuer_path.is_empty() && !issuer_path[1..].split('/').all(plain) {
        return Err(ConfigError::new(
            "TESSERA_ISSUER",
            "its path must be non-empty segments of letters, digits and -._~!$&'()+,;=:@%",
        ));
    }
    Ok(issuer)
}

/// Parses a comma- or space-separated list of CIDRs (a bare address is a /32 or /128).
/// IPv4-mapped IPv6 ranges (prefix ≥ 96) become their IPv4 form; host bits set are refused.
pub(super) fn cidrs(list: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for entry in list.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
        let net: IpNet = match entry.parse() {
            Ok(n) => n,
            Err(_) => match entry.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(format!("{entry:?} is not a CIDR like 10.0.0.0/8 or an address")),
            },
        };
        if net.trunc() != net {
            return Err(format!("{entry:?} has host bits set (did you mean {}?)", net.trunc()));
        }
        out.push(crate::net::canonical_net(net));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> Vars<impl Fn(&str) -> Option<String>> {
        Vars::new(move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        let v = vars(&[("A", "  "), ("B", " 42 ")]);
        assert_eq!(v.get("A"), None);
        assert_eq!(v.secs("A", 7, 1, 100).unwrap(), Duration::from_secs(7));
        assert_eq!(v.secs("B", 7, 1, 100).unwrap(), Duration::from_secs(42));
        assert_eq!(v.num("B", 7, 1, 100).unwrap(), 42);
    }

    #[test]
    fn out_of_range_and_malformed_numbers_name_the_variable_and_the_bounds() {
        let v = vars(&[("LOW", "0"), ("HIGH", "101"), ("WORD", "ten"), ("NEG", "-1")]);
        let e = v.secs("LOW", 7, 1, 100).unwrap_err();
        assert_eq!((e.var, e.reason.as_str()), ("LOW", "must be between 1 and 100 seconds, got 0"));
        let e = v.num("HIGH", 7, 1, 100).unwrap_err();
        assert_eq!((e.var, e.reason.as_str()), ("HIGH", "must be between 1 and 100, got 101"));
        assert_eq!(v.secs("WORD", 7, 1, 100).unwrap_err().reason, "expected a whole number of seconds, got \"ten\"");
        assert_eq!(v.num("NEG", 7, 1, 100).unwrap_err().reason, "expected a whole number, got \"-1\"");
    }

    #[test]
    fn switches_take_the_usual_words_and_nothing_else() {
        let v = vars(&[("ON", "on"), ("ONE", "1"), ("OFF", "false"), ("ZERO", " 0 "), ("MAYBE", "maybe")]);
        assert!(v.flag("ON", false).unwrap() && v.flag("ONE", false).unwrap());
        assert!(!v.flag("OFF", true).unwrap() && !v.flag("ZERO", true).unwrap());
        assert!(v.flag("UNSET", true).unwrap() && !v.flag("UNSET", false).unwrap());
        let e = v.flag("MAYBE", true).unwrap_err();
        assert_eq!((e.var, e.reason.as_str()), ("MAYBE", "expected true or false, got \"maybe\""));
    }

    #[test]
    fn postgres_urls_are_told_from_others() {
        assert!(postgres_url("X", "postgres://h/db").is_ok());
        assert!(postgres_url("X", "postgresql://h/db").is_ok());
        assert_eq!(postgres_url("X", "mysql://h/db").unwrap_err().var, "X");
    }
}
