//! Header rewriting between client and upstream: hop-by-hop headers dropped
//! (RFC 9110 §7.6.1), `X-Forwarded-*`, `Forwarded` and `X-Real-IP` set by
//! subcar (SPEC "Forwarded headers"). [`on_behalf_of`] is the one builder of
//! the headers of a call made for a client (queries over a socket, upstream
//! authentication); the proxy applies [`for_upstream`] to the request itself.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The headers that say where a request came from: set by subcar, taken from
/// a client only when it is a trusted proxy.
pub const FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
];

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

/// What subcar knows about the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientConnection {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// Prepares a client's request headers for the upstream in place: hop-by-hop
/// headers dropped, forwarding headers set ([`set_forwarded`]), `Host`
/// removed (the upstream's authority comes from its URL; the client's Host
/// travels in `X-Forwarded-Host`).
pub fn for_upstream(headers: &mut HeaderMap, client: ClientConnection, trusted: &[IpNet]) {
    remove_hop_by_hop(headers);
    set_forwarded(headers, client, trusted);
    headers.remove(header::HOST);
}

/// The headers of a call subcar makes to the upstream on behalf of the
/// client whose request (a WebSocket upgrade, a stream) carried `request`:
/// its end-to-end headers (credentials, `Origin` for the upstream's CSRF
/// checks, custom headers) without the handshake's own, with forwarding
/// headers set by subcar.
pub fn on_behalf_of(request: &HeaderMap, client: ClientConnection, trusted: &[IpNet]) -> HeaderMap {
    let mut headers = request.clone();
    for_upstream(&mut headers, client, trusted);
    headers.remove(header::CONTENT_LENGTH);
    let handshake: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("sec-websocket-"))
        .cloned()
        .collect();
    for k in handshake {
        headers.remove(k);
    }
    headers
}

/// Whether `peer` is one of `trusted`.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(peer))
}

/// Sets `X-Forwarded-For/-Proto/-Host`, `Forwarded` and `X-Real-IP` for a
/// request from `client`. Headers a trusted proxy already set are extended
/// (or kept); from anyone else they are replaced, so a client cannot forge
/// its address, scheme or host.
pub fn set_forwarded(headers: &mut HeaderMap, client: ClientConnection, trusted: &[IpNet]) {
    let peer = client.remote.ip();
    let from_trusted = is_trusted(peer, trusted);
    let proto = if client.tls { "https" } else { "http" };
    let real_ip = client_ip(headers, client, trusted);
    if !(from_trusted && headers.contains_key(&X_REAL_IP)) {
        set(headers, &X_REAL_IP, &format_ip(real_ip));
    }
    let hop = forwarded_element(peer, proto, headers.get(header::HOST));
    let forwarded = match from_trusted
        .then(|| joined(headers, &header::FORWARDED))
        .flatten()
    {
        Some(prior) => format!("{prior}, {hop}"),
        None => hop,
    };
    set(headers, &header::FORWARDED, &forwarded);

    let prior_for = from_trusted
        .then(|| joined(headers, &X_FORWARDED_FOR))
        .flatten();
    let for_value = match prior_for {
        Some(prior) => format!("{prior}, {}", format_ip(peer)),
        None => format_ip(peer),
    };
    set(headers, &X_FORWARDED_FOR, &for_value);

    if !(from_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        set(headers, &X_FORWARDED_PROTO, proto);
    }
    if !(from_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// The client's address for rate limits: the peer, or for a peer in
/// `trusted` the rightmost `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries left of it could be forged by the client).
pub fn client_ip(headers: &HeaderMap, client: ClientConnection, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = client.remote.ip();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut last = peer;
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        last = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    last
}

/// One `Forwarded` element (RFC 7239) for this hop.
fn forwarded_element(peer: IpAddr, proto: &str, host: Option<&HeaderValue>) -> String {
    let ip = format_ip(peer);
    let node = if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        let host: String = host.chars().filter(|c| *c != '"' && *c != '\\').collect();
        element.push_str(&format!(";host=\"{host}\""));
    }
    element
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

fn format_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> ClientConnection {
        ClientConnection {
            remote: SocketAddr::new(ip.parse().unwrap(), 5555),
            tls: false,
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn untrusted_forwarded_for_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        set_forwarded(&mut h, client("192.0.2.1"), &[]);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
    }

    #[test]
    fn client_ip_is_the_first_untrusted_hop_from_the_right() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.2.2.2"),
        );
        assert_eq!(
            client_ip(&h, client("10.1.1.1"), &trusted).to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_ip(&h, client("192.0.2.1"), &trusted).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), client("10.1.1.1"), &trusted).to_string(),
            "10.1.1.1"
        );
    }

    #[test]
    fn untrusted_forwarded_and_real_ip_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        set_forwarded(&mut h, client("192.0.2.1"), &[]);
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.1;proto=http;host=\"api.example.com\""
        );
        assert_eq!(h["x-real-ip"], "192.0.2.1");
        set_forwarded(&mut h, client("::1"), &[]);
        assert!(
            h["forwarded"]
                .to_str()
                .unwrap()
                .starts_with("for=\"[::1]\"")
        );
    }

    #[test]
    fn on_behalf_of_keeps_credentials_and_origin_and_sets_forwarding() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("cookie", "session=s"),
            ("origin", "https://app.example.com"),
            ("host", "api.example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("sec-websocket-key", "k"),
            ("upgrade", "websocket"),
            ("content-length", "0"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = on_behalf_of(&h, client("192.0.2.1"), &[]);
        assert_eq!(out["authorization"], "Bearer t");
        assert_eq!(out["cookie"], "session=s");
        assert_eq!(out["origin"], "https://app.example.com");
        assert_eq!(out["x-forwarded-for"], "192.0.2.1");
        assert_eq!(out["x-forwarded-host"], "api.example.com");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-real-ip"], "192.0.2.1");
        for gone in ["host", "sec-websocket-key", "upgrade", "content-length"] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn trusted_forwarded_for_is_extended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(&mut h, client("10.1.1.1"), &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.1.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
