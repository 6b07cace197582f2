//! Behind a reverse proxy: believe `X-Forwarded-For` and `X-Forwarded-Proto`
//! only from the proxies named with `--trusted-proxy`, so a client cannot
//! pick its own source address (and dodge per-address throttling).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::Extensions;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use latchkey_service::app::App;

use super::WebConfig;

/// Marks a request that reached us over https: served with TLS directly
/// (`secure_cookies`), or through a trusted proxy that says so.
#[derive(Clone, Copy, Debug)]
pub struct ForwardedHttps;

/// The client address: walk `X-Forwarded-For` from the right (the entries our
/// proxies appended) past trusted proxies; the first other address is the
/// client. Garbage stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

pub async fn forwarded(State(web): State<Arc<WebConfig>>, mut req: Request, next: Next) -> Response {
    if web.secure_cookies {
        req.extensions_mut().insert(ForwardedHttps);
    }
    let trusted = &web.trusted_proxies;
    if !trusted.is_empty() {
        if let Some(peer) = connect_addr(req.extensions()) {
            if trusted.iter().any(|n| n.contains(&peer.ip())) {
                let client = client_ip(peer.ip(), req.headers(), trusted);
                let https = req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https"));
                req.extensions_mut()
                    .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
                if https {
                    req.extensions_mut().insert(ForwardedHttps);
                }
            }
        }
    }
    next.run(req).await
}

/// Whether the browser reached us over https (directly or via a trusted proxy).
pub fn is_https(parts: &Parts, app: &App) -> bool {
    app.config.public_url.starts_with("https://") || parts.extensions.get::<ForwardedHttps>().is_some()
}

/// The TCP peer, as `ConnectInfo` would extract it (tests mock it).
fn connect_addr(ext: &Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| ext.get::<MockConnectInfo<SocketAddr>>().map(|m| m.0))
}

pub fn peer_ip(parts: &Parts) -> Option<String> {
    connect_addr(&parts.extensions).map(|a| a.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", v.parse().unwrap());
        m
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(proxy, &h("203.0.113.9"), &trusted).to_string(), "203.0.113.9");
        // A client-supplied entry left of the real one is ignored.
        assert_eq!(
            client_ip(proxy, &h("1.1.1.1, 203.0.113.9, 10.9.9.9"), &trusted).to_string(),
            "203.0.113.9"
        );
        assert_eq!(client_ip(stranger, &h("203.0.113.9"), &trusted), stranger);
        assert_eq!(client_ip(proxy, &h("not-an-ip"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
