//! The source address of a request, for limits that count per source (see [`crate::net`]).

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};

use crate::http::state::AppState;

/// The peer address, or the last untrusted hop of `X-Forwarded-For` when the peer is one of
/// `TESSERA_TRUSTED_PROXIES`; always in canonical form.
#[derive(Debug, Clone, Copy)]
pub struct SourceIp(pub IpAddr);

impl FromRequestParts<AppState> for SourceIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let forwarded = parts.headers.get_all("x-forwarded-for").into_iter().filter_map(|v| v.to_str().ok());
        Ok(Self(crate::net::source_address(peer, forwarded, &state.config.trusted_proxies)))
    }
}
