//! The two exposition formats of `/metrics`: OpenMetrics 1.0 for scrapers
//! that ask for it, and the Prometheus text format 0.0.4 for every other
//! one (curl, older Prometheus servers, most agents).
//!
//! prometheus-client writes OpenMetrics only; the text format is derived
//! from it line by line, which keeps one registry and one encoder.

/// What a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// Picks the format from an `Accept` header: OpenMetrics when it is
    /// acceptable and preferred at least as much as plain text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Text;
        };
        let open = crate::http::media::quality(accept, &["application/openmetrics-text"]);
        let text = crate::http::media::quality(accept, &["text/plain", "text/*", "*/*"]);
        if open > 0.0 && open >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Rewrites an OpenMetrics exposition into the Prometheus text format:
/// counter families are named with their `_total` samples, `# UNIT` and
/// `# EOF` go, and HELP loses the quote escaping that 0.0.4 does not have.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE; it is held until the type says its name.
    let mut help: Option<(&str, String)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                "info" => (format!("{name}_info"), "gauge"),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            if let Some((name, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus_and_curl() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Text
        );
    }

    #[test]
    fn counters_take_their_sample_names() {
        let om = "# HELP subcar_requests Requests by \\\"status\\\".\n# TYPE subcar_requests counter\nsubcar_requests_total{status=\"200\"} 1\n# HELP subcar_latency_seconds Latency.\n# TYPE subcar_latency_seconds histogram\n# UNIT subcar_latency_seconds seconds\nsubcar_latency_seconds_sum 0.0\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP subcar_requests_total Requests by \"status\".\n# TYPE subcar_requests_total counter\nsubcar_requests_total{status=\"200\"} 1\n# HELP subcar_latency_seconds Latency.\n# TYPE subcar_latency_seconds histogram\nsubcar_latency_seconds_sum 0.0\n"
        );
    }
}
