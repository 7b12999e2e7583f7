//! The route template a request path falls under, for metric labels.
//!
//! The edge runs outside the router, where axum's `MatchedPath` is not known. Handing it out from
//! a layer inside the router cost more than the rest of the edge: `Router::layer` boxes every
//! route again, so each request paid a second boxed-service clone, a second `Oneshot` and an
//! extensions map on the response (about 2,300 of the JWKS route's 20,700 instructions). The edge
//! matches the path against the same templates itself instead, with the router's own matcher
//! (`matchit`), which costs a few hundred instructions and allocates nothing.

use std::sync::Arc;

/// Label of requests whose path matches no route (one label, so clients cannot grow the metrics).
pub const UNMATCHED: &str = "unmatched";

/// Route templates (`/v1/keys/{id}`) matched by path.
#[derive(Clone, Default)]
pub struct RouteTable(Arc<Table>);

#[derive(Default)]
struct Table {
    matcher: matchit::Router<usize>,
    templates: Vec<Box<str>>,
}

/// Which template a path matched (an index into its table), or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route(Option<usize>);

impl Route {
    /// Whether the path matched a template.
    pub fn matched(self) -> bool {
        self.0.is_some()
    }
}

impl RouteTable {
    /// A table of `templates`, in axum's syntax. A template that conflicts with one already added
    /// (the same route twice) is skipped: the first one labels both.
    pub fn new<I, T>(templates: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut table = Table::default();
        for template in templates {
            let template = template.as_ref();
            // A conflict can only be a duplicate or a template the router itself would refuse.
            if table.matcher.insert(template, table.templates.len()).is_ok() {
                table.templates.push(template.into());
            }
        }
        Self(Arc::new(table))
    }

    /// The route `path` falls under.
    pub fn find(&self, path: &str) -> Route {
        Route(self.0.matcher.at(path).ok().map(|m| *m.value))
    }

    /// The template of `route`, or [`UNMATCHED`].
    pub fn template(&self, route: Route) -> &str {
        route.0.and_then(|i| self.0.templates.get(i)).map_or(UNMATCHED, |t| &**t)
    }
}

/// Serves an issuer with a path under that path: `/tenant/oauth/token` is routed as
/// `/oauth/token` when the issuer is `https://id.example.com/tenant`, so the endpoint URLs the
/// metadata names (the issuer followed by the endpoint's path) answer when the service is reached
/// directly, and the plain paths still answer behind a proxy that strips the prefix. `prefix` has
/// a leading slash and no trailing one; a path that merely starts with the same letters
/// (`/tenantx`) is left alone. The edge strips only paths that match no route as they are, so an
/// issuer path like `/v1` cannot hide the routes under `/v1`.
pub fn strip_prefix(uri: &mut axum::http::Uri, prefix: &str) {
    let Some(rest) = uri.path().strip_prefix(prefix) else { return };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = axum::http::uri::PathAndQuery::try_from(path_and_query).ok();
    if let Ok(stripped) = axum::http::Uri::from_parts(parts) {
        *uri = stripped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_path_is_stripped_only_as_a_whole_segment() {
        for (before, after) in [
            ("/tenant/oauth/token", "/oauth/token"),
            ("/tenant/v1/keys?limit=5", "/v1/keys?limit=5"),
            ("/tenant", "/"),
            ("/tenantx/oauth/token", "/tenantx/oauth/token"),
            ("/oauth/token", "/oauth/token"),
            ("http://h:1/tenant/healthz", "http://h:1/healthz"),
        ] {
            let mut uri: axum::http::Uri = before.parse().expect("uri");
            strip_prefix(&mut uri, "/tenant");
            assert_eq!(uri.to_string(), after, "{before}");
        }
    }

    impl RouteTable {
        fn label(&self, path: &str) -> &str {
            self.template(self.find(path))
        }
    }

    #[test]
    fn paths_are_labelled_with_their_template_and_strangers_share_one_label() {
        let table =
            RouteTable::new(["/v1/keys", "/v1/keys/{id}", "/v1/keys/{id}/revoke", "/v1/keys/verify", "/docs/{*rest}"]);
        assert_eq!(table.label("/v1/keys"), "/v1/keys");
        assert_eq!(table.label("/v1/keys/0b6b5a2e"), "/v1/keys/{id}");
        assert_eq!(table.label("/v1/keys/0b6b5a2e/revoke"), "/v1/keys/{id}/revoke");
        // A literal segment wins over a parameter, as in the router.
        assert_eq!(table.label("/v1/keys/verify"), "/v1/keys/verify");
        assert_eq!(table.label("/docs/swagger-ui.css"), "/docs/{*rest}");
        assert_eq!(table.label("/v1/keys/a/b/c"), UNMATCHED);
        assert_eq!(table.label("/nowhere"), UNMATCHED);
        assert_eq!(RouteTable::default().label("/v1/keys"), UNMATCHED);
    }

    #[test]
    fn a_duplicate_template_is_harmless() {
        let table = RouteTable::new(["/healthz", "/healthz"]);
        assert_eq!(table.label("/healthz"), "/healthz");
    }
}
