//! Which address a request comes from, for rate limiting only (it is never stored or logged):
//! the peer's, unless the peer is a trusted reverse proxy, in which case the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy. Likewise the scheme and host the browser
//! used: `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are believed only from a trusted
//! proxy; from anyone else they are the client's own words.

use actix_web::HttpRequest;
use std::net::IpAddr;

/// Whether the peer is one of the trusted reverse proxies.
fn from_trusted_proxy(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> bool {
    req.peer_addr().is_some_and(|peer| trusted_proxies.iter().any(|net| net.contains(&peer.ip())))
}

/// The scheme and host (`https`, `licenses.example.com`) the browser used: the proxy's headers
/// when a trusted proxy forwarded the request, else the connection's own (TLS or not) and its
/// `Host`.
pub fn scheme_and_host(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> (String, String) {
    if from_trusted_proxy(req, trusted_proxies) {
        let info = req.connection_info();
        return (info.scheme().to_owned(), info.host().to_owned());
    }
    let scheme = if req.app_config().secure() { "https" } else { "http" };
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| req.app_config().host().to_owned());
    (scheme.to_owned(), host)
}

/// The client's address as far as this server can believe it.
pub fn client_address(req: &HttpRequest, trusted_proxies: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    // Each proxy appends the address it heard from, so the list is read from the right: the
    // first address that is not a trusted proxy is the client. Anything to its left was
    // written by the client itself and proves nothing.
    let mut hops = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    hops.reverse();
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted(&ip) => continue,
            Ok(ip) => return Some(ip),
            // A garbled entry: the proxy before it cannot be trusted to have written it.
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}
