//! Where credentials come from: the `Authorization` header (`Bearer <token>`
//! or a bare token) or the configured cookie. Credentials of
//! `connection_init.payload` are merged into the headers by the session
//! before this runs, so one reader serves sockets and the proxy path alike.

use http::{HeaderMap, HeaderValue, header};

/// The credentials a request carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The token from `Authorization` or the cookie.
    pub token: Option<String>,
    /// The headers that carry credentials, as received: what upstream
    /// authentication forwards.
    pub authorization: Option<HeaderValue>,
    pub cookie: Option<HeaderValue>,
}

impl Credentials {
    pub fn from_headers(headers: &HeaderMap, cookie_name: Option<&str>) -> Self {
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        let cookie = headers.get(header::COOKIE).cloned();
        let token = authorization
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .or_else(|| cookie_name.and_then(|name| cookie_value(headers, name)));
        Self {
            token,
            authorization,
            cookie,
        }
    }
}

/// `Bearer <token>` (scheme case-insensitive) or a bare token.
fn bearer(value: &str) -> Option<String> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_bare_and_cookie_tokens() {
        let t = |h: &[(&str, &str)], c| Credentials::from_headers(&headers(h), c).token;
        assert_eq!(
            t(&[("authorization", "Bearer abc")], None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            t(&[("authorization", "bearer  abc ")], None).as_deref(),
            Some("abc")
        );
        assert_eq!(t(&[("authorization", "abc")], None).as_deref(), Some("abc"));
        assert_eq!(t(&[("authorization", "Basic abc")], None), None);
        let cookies = [("cookie", "a=1; session=tok; b=2")];
        assert_eq!(t(&cookies, Some("session")).as_deref(), Some("tok"));
        assert_eq!(t(&cookies, None), None);
        assert_eq!(t(&cookies, Some("other")), None);
        // The header wins over the cookie.
        let both = [("authorization", "Bearer h"), ("cookie", "session=c")];
        assert_eq!(t(&both, Some("session")).as_deref(), Some("h"));
    }
}
