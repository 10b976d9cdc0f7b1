//! Value formatting shared by validation, coercion and projection, written
//! to match graphql-js byte for byte: `print` of literals, `inspect` of
//! JSON values in error messages, and JavaScript's number-to-string rules
//! (so a payload's `1.0` serialises as `1`, as `JSON.stringify` does).
//!
//! Nothing here is a spec rule: the spec fixes neither error messages nor
//! number layout. It is here so that subcar's answers and errors are the
//! bytes a graphql-js server would send.

use std::fmt::Write;

use graphql_parser::query::Value as AstValue;
use serde_json::Value;

/// graphql-js `print()` of a value literal.
pub(crate) fn print_ast_value(v: &AstValue<'_, String>) -> String {
    let mut s = String::new();
    write_ast_value(&mut s, v);
    s
}

fn write_ast_value(s: &mut String, v: &AstValue<'_, String>) {
    match v {
        AstValue::Variable(n) => {
            let _ = write!(s, "${n}");
        }
        AstValue::Int(n) => {
            let _ = write!(s, "{}", n.as_i64().unwrap_or_default());
        }
        AstValue::Float(f) => s.push_str(&js_number(*f)),
        AstValue::String(v) => write_json_string(s, v),
        AstValue::Boolean(b) => {
            let _ = write!(s, "{b}");
        }
        AstValue::Null => s.push_str("null"),
        AstValue::Enum(e) => s.push_str(e),
        AstValue::List(items) => {
            s.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_ast_value(s, item);
            }
            s.push(']');
        }
        AstValue::Object(fields) => {
            s.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{k}: ");
                write_ast_value(s, item);
            }
            s.push('}');
        }
    }
}

fn write_json_string(s: &mut String, v: &str) {
    s.push_str(&serde_json::to_string(v).unwrap_or_default());
}

/// JavaScript's `Number.prototype.toString()` for a finite double.
pub(crate) fn js_number(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Shortest round-trip digits and exponent, then JavaScript's layout
    // (ECMA-262 `Number::toString`): up to 21 integer digits written out,
    // down to 1e-6 as a plain decimal, exponent form beyond either.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1;
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e >= 0 { "+" } else { "-" }, e.abs());
    }
    out
}

/// The number as JavaScript would print it. A `u64` past `i64` goes
/// through a double, as it would in JavaScript, and may lose digits.
pub(crate) fn js_number_of(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return js_number(u as f64);
    }
    js_number(n.as_f64().unwrap_or_default())
}

/// graphql-js `inspect()` of a JSON value, used in error messages. Its
/// bounds are graphql-js's: nesting past depth 2 is shown as `[Array]` or
/// `[Object]`, and a list shows its first 10 items; they also keep a
/// message short whatever value the client sent.
pub(crate) fn inspect(v: &Value) -> String {
    let mut s = String::new();
    inspect_into(&mut s, v, 0);
    s
}

fn inspect_into(s: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(s, "{b}");
        }
        Value::Number(n) => s.push_str(&js_number_of(n)),
        Value::String(v) => write_json_string(s, v),
        Value::Array(items) => {
            if items.is_empty() {
                s.push_str("[]");
            } else if depth >= 2 {
                s.push_str("[Array]");
            } else {
                s.push('[');
                for (i, item) in items.iter().take(10).enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    inspect_into(s, item, depth + 1);
                }
                if items.len() > 10 {
                    let rest = items.len() - 10;
                    let _ = write!(
                        s,
                        ", ... {rest} more item{}",
                        if rest > 1 { "s" } else { "" }
                    );
                }
                s.push(']');
            }
        }
        Value::Object(map) => {
            if map.is_empty() {
                s.push_str("{}");
            } else if depth >= 2 {
                s.push_str("[Object]");
            } else {
                s.push_str("{ ");
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{k}: ");
                    inspect_into(s, item, depth + 1);
                }
                s.push_str(" }");
            }
        }
    }
}

/// Writes a JSON value as `JSON.stringify` would (integral doubles without
/// a fraction).
pub(crate) fn write_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A double is written as JavaScript would (`1.0` as `1`, below 1e21). An
/// integer that serde_json read as one is written exactly as it came, where
/// JavaScript would round one past 2^53: the digits received are kept.
pub(crate) fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if n.is_f64() {
        let f = n.as_f64().unwrap_or_default();
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
            let _ = write!(VecWriter(out), "{}", f as i128);
            return;
        }
        out.extend_from_slice(js_number(f).as_bytes());
    } else {
        let _ = write!(VecWriter(out), "{n}");
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is what JSON.stringify produces for valid UTF-8.
    let _ = serde_json::to_writer(&mut *out, s);
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// graphql-js `didYouMean` suffix (at most 5 suggestions).
pub(crate) fn did_you_mean(sub: Option<&str>, suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = suggestions
        .iter()
        .take(5)
        .map(|s| format!("\"{s}\""))
        .collect();
    let mut msg = String::from(" Did you mean ");
    if let Some(sub) = sub {
        msg.push_str(sub);
        msg.push(' ');
    }
    match quoted.len() {
        1 => msg.push_str(&quoted[0]),
        2 => {
            let _ = write!(msg, "{} or {}", quoted[0], quoted[1]);
        }
        n => {
            msg.push_str(&quoted[..n - 1].join(", "));
            let _ = write!(msg, ", or {}", quoted[n - 1]);
        }
    }
    msg.push('?');
    msg
}

/// graphql-js `suggestionList`: options close to `input`, best first. An
/// option is close when its edit distance is at most 40% of the input's
/// length, plus one; ties sort in natural order (digit runs as numbers).
pub(crate) fn suggestion_list<'a>(
    input: &str,
    options: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let threshold = (input.len() as f64 * 0.4).floor() as usize + 1;
    let mut found: Vec<(usize, &str)> = Vec::new();
    for opt in options {
        let d = lexical_distance(input, opt);
        if d <= threshold {
            found.push((d, opt));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| natural_cmp(a.1, b.1)));
    found.into_iter().map(|(_, s)| s.to_owned()).collect()
}

fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    // graphql-js `naturalCompare`: digit runs compare as numbers.
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na: u128 = std::str::from_utf8(&a[si..i])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let nb: u128 = std::str::from_utf8(&b[sj..j])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match na.cmp(&nb) {
                std::cmp::Ordering::Equal => {}
                o => return o,
            }
        } else {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                o => return o,
            }
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// Damerau-Levenshtein distance over lower-cased input, as graphql-js.
/// A difference in case alone counts 1, not 0: the least a different name
/// can score, without being taken for the same name.
fn lexical_distance(a: &str, b: &str) -> usize {
    if a == b {
        return 0;
    }
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    if a == b {
        return 1;
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(js_number(1.0), "1");
        assert_eq!(js_number(1.5), "1.5");
        assert_eq!(js_number(1e21), "1e+21");
        assert_eq!(js_number(1e-7), "1e-7");
        assert_eq!(js_number(0.000001), "0.000001");
        assert_eq!(js_number(-123.25), "-123.25");
        assert_eq!(js_number(3000000000.0), "3000000000");
    }

    #[test]
    fn inspect_matches_graphql_js() {
        let v = serde_json::json!({"a": [1, "x"], "b": {"c": {"d": 1}}});
        assert_eq!(inspect(&v), "{ a: [1, \"x\"], b: { c: [Object] } }");
    }
}
