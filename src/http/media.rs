//! `Accept` headers read as media ranges with their quality, for every
//! place that negotiates a response format (metrics exposition, the
//! GraphiQL page, and the streaming transports to come).

/// Each media range of `accept`, lower-cased, with its `q` (1 when absent
/// or unreadable as a number).
pub fn ranges(accept: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    accept.split(',').map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        (media, q)
    })
}

/// The highest quality `accept` gives any of `media`, 0 when none is listed.
pub fn quality(accept: &str, media: &[&str]) -> f32 {
    ranges(accept)
        .filter(|(m, _)| media.contains(&m.as_str()))
        .map(|(_, q)| q)
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
}
