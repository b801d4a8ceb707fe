//! Which address a request comes from, for rate limiting only (it is never stored or logged):
//! the peer's, unless the peer is a trusted reverse proxy, in which case the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy.

use actix_web::HttpRequest;
use std::net::IpAddr;

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
