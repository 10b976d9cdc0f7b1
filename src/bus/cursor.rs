//! Positions in a topic's history, as the backends number them and as
//! clients see them (an opaque string).

use std::fmt;
use std::str::FromStr;

/// Where an event sits in its topic's history. Cursors of one topic are
/// totally ordered in publish order. A Redis stream entry id `ms-seq` is
/// `(ms, seq)`; a JetStream stream sequence or a memory bus sequence `n` is
/// `(n, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    pub major: u64,
    pub minor: u64,
}

impl Cursor {
    pub const fn seq(n: u64) -> Self {
        Self { major: n, minor: 0 }
    }
}

/// A string that is not a cursor subcar handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a cursor")]
pub struct InvalidCursor(pub String);

/// `n` for sequences, `ms-seq` for Redis ids: what the backend itself prints.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{}", self.major)
        } else {
            write!(f, "{}-{}", self.major, self.minor)
        }
    }
}

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCursor(s.to_owned());
        let digits = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u64>().map_err(|_| bad())
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(Self {
                major: digits(a)?,
                minor: digits(b)?,
            }),
            None => Ok(Self::seq(digits(s)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders() {
        for s in ["0", "17", "1700000000000-3"] {
            assert_eq!(s.parse::<Cursor>().unwrap().to_string(), s);
        }
        // A Redis id with sequence 0 prints as its milliseconds alone and
        // still means the same entry.
        assert_eq!("5-0".parse::<Cursor>().unwrap(), Cursor::seq(5));
        assert!("5-1".parse::<Cursor>().unwrap() > Cursor::seq(5));
        assert!(Cursor::seq(6) > "5-9".parse().unwrap());
        for bad in [
            "",
            "-",
            "a",
            "1-",
            "-1",
            "1-2-3",
            "+1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
