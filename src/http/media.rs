//! `Accept` headers read as media ranges with their quality and
//! parameters, for every place that negotiates a response format (metrics
//! exposition, the GraphiQL page, the streaming transports).

/// One media range of an `Accept` header with its parameters (names
/// lower-cased, quoted values unquoted), `q` apart.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub media: String,
    pub q: f32,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Each media range of `accept` with its parameters. Commas inside quoted
/// parameter values do not split ranges (RFC 9110 section 5.6.6).
pub fn parse(accept: &str) -> Vec<MediaRange> {
    split_outside_quotes(accept, ',')
        .into_iter()
        .filter(|r| !r.trim().is_empty())
        .map(|range| {
            let mut parts = split_outside_quotes(range, ';').into_iter().map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0;
            let mut params = Vec::new();
            for p in parts {
                let Some((name, value)) = p.split_once('=') else {
                    continue;
                };
                let name = name.trim().to_ascii_lowercase();
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_owned();
                if name == "q" {
                    q = value.parse().unwrap_or(1.0);
                } else {
                    params.push((name, value));
                }
            }
            MediaRange { media, q, params }
        })
        .collect()
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The highest quality `accept` gives any of `media`, 0 when none is listed.
pub fn quality(accept: &str, media: &[&str]) -> f32 {
    parse(accept)
        .into_iter()
        .filter(|r| media.contains(&r.media.as_str()))
        .map(|r| r.q)
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_qualities() {
        let accept = "text/html, application/json;q=0.5 ,*/*; q=0.1";
        assert_eq!(quality(accept, &["text/html"]), 1.0);
        assert_eq!(quality(accept, &["application/json"]), 0.5);
        assert_eq!(quality(accept, &["*/*", "text/plain"]), 0.1);
        assert_eq!(quality(accept, &["image/png"]), 0.0);
        assert_eq!(quality("TEXT/HTML;q=oops", &["text/html"]), 1.0);
    }

    #[test]
    fn reads_parameters_quoted_or_not() {
        let r = parse(
            r#"multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json;q=0.9"#,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].media, "multipart/mixed");
        assert_eq!(r[0].param("boundary"), Some("graphql"));
        assert_eq!(r[0].param("subscriptionspec"), Some("1.0"));
        assert_eq!(r[1].q, 0.9);
        let r = parse("multipart/mixed; subscriptionSpec=1.0 ; q=0.5");
        assert_eq!(r[0].param("subscriptionspec"), Some("1.0"));
        assert_eq!(r[0].q, 0.5);
        // A quoted comma does not start a new range.
        let r = parse(r#"a/b;x="1,2", c/d"#);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].param("x"), Some("1,2"));
        assert!(parse("").is_empty());
    }
}
