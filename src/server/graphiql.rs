//! GraphiQL on `GET {graphql_path}` for browsers, as graphql-yoga serves
//! it: one static page, rendered once at start, that loads the GraphiQL
//! bundle from `server.graphiql.assets_url` and talks to subcar itself —
//! queries and mutations over HTTP, subscriptions over graphql-ws on the
//! same path; with `?transport=sse`, every operation over GraphQL over SSE.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, header};

use crate::http::body::{self, Body};

/// The versions the page loads; pinned so that a CDN cannot change what
/// runs in an operator's browser.
const GRAPHIQL: &str = "graphiql@3.8.3";
const REACT: &str = "react@18.3.1";
const REACT_DOM: &str = "react-dom@18.3.1";
const GRAPHQL_WS: &str = "graphql-ws@5.16.2";
const GRAPHQL_SSE: &str = "graphql-sse@2.6.1";

/// The rendered page.
#[derive(Debug, Clone)]
pub struct Graphiql {
    page: Bytes,
}

impl Graphiql {
    /// `assets_url` was checked at config load (an http(s) URL without
    /// quotes or angle brackets), so it goes into attributes as it is.
    pub fn new(assets_url: &str) -> Self {
        let base = assets_url.trim_end_matches('/');
        let page = PAGE
            .replace("{graphiql}", &format!("{base}/{GRAPHIQL}"))
            .replace("{react}", &format!("{base}/{REACT}"))
            .replace("{react_dom}", &format!("{base}/{REACT_DOM}"))
            .replace("{graphql_ws}", &format!("{base}/{GRAPHQL_WS}"))
            .replace("{graphql_sse}", &format!("{base}/{GRAPHQL_SSE}"));
        Self {
            page: Bytes::from(page),
        }
    }

    /// Whether a request is a browser asking for a page: a `GET` that
    /// prefers HTML to JSON (`Accept: text/html,…`), as navigation sends.
    pub fn wants_page(method: &Method, headers: &HeaderMap) -> bool {
        if method != Method::GET {
            return false;
        }
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let html = crate::http::media::quality(accept, &["text/html"]);
        let json = crate::http::media::quality(
            accept,
            &["application/json", "application/graphql-response+json"],
        );
        html > 0.0 && html > json
    }

    pub fn response(&self) -> Response<Body> {
        let mut res = Response::new(body::full(self.page.clone()));
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // The page may not be framed by another site (clickjacking).
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        res
    }
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>subcar · GraphiQL</title>
<link rel="stylesheet" href="{graphiql}/graphiql.min.css">
<style>html, body, #graphiql { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{react}/umd/react.production.min.js"></script>
<script src="{react_dom}/umd/react-dom.production.min.js"></script>
<script src="{graphql_ws}/umd/graphql-ws.min.js"></script>
<script src="{graphql_sse}/umd/graphql-sse.min.js"></script>
<script src="{graphiql}/graphiql.min.js"></script>
<script>
  // subcar itself: HTTP for queries and mutations, graphql-ws on the same path for subscriptions.
  const url = new URL(location.pathname, location.href);
  const ws = new URL(url);
  ws.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const params = new URLSearchParams(location.search);
  // ?transport=sse: everything over GraphQL over SSE (subcar answers
  // queries and mutations on a stream too).
  const sse = params.get('transport') === 'sse' && graphqlSse.createClient({ url: url.href });
  const fetcher = sse
    ? (request) => sse.iterate(request)
    : GraphiQL.createFetcher({
        url: url.href,
        wsClient: graphqlWs.createClient({ url: ws.href, lazy: true }),
      });
  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: params.get('query') || '# Queries and mutations go to the API; subscriptions run over graphql-ws on this same URL.\n{\n  __typename\n}\n',
    shouldPersistHeaders: false,
  }));
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn browsers_get_the_page_and_clients_do_not() {
        let navigation = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(Graphiql::wants_page(&Method::GET, &accept(navigation)));
        assert!(!Graphiql::wants_page(&Method::POST, &accept(navigation)));
        assert!(!Graphiql::wants_page(
            &Method::GET,
            &accept("application/json")
        ));
        assert!(!Graphiql::wants_page(&Method::GET, &accept("*/*")));
        assert!(!Graphiql::wants_page(
            &Method::GET,
            &accept("application/json, text/html;q=0.5")
        ));
        assert!(!Graphiql::wants_page(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn the_page_loads_pinned_assets_from_the_base_url() {
        let page = Graphiql::new("http://127.0.0.1:9/assets/").page;
        let page = std::str::from_utf8(&page).unwrap();
        assert!(page.contains(r#"src="http://127.0.0.1:9/assets/graphiql@3.8.3/graphiql.min.js""#));
        assert!(
            page.contains(r#"href="http://127.0.0.1:9/assets/graphiql@3.8.3/graphiql.min.css""#)
        );
        for placeholder in [
            "{graphiql}",
            "{react}",
            "{react_dom}",
            "{graphql_ws}",
            "{graphql_sse}",
        ] {
            assert!(
                !page.contains(placeholder),
                "{placeholder} left in the page"
            );
        }
    }
}
