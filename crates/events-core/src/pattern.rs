//! Dot-separated event-type patterns.
//!
//! A pattern is a list of segments separated by `.`. A literal segment
//! matches itself; `*` matches exactly one segment; `**` matches zero or
//! more segments. So `order.*` matches `order.created` but not `order` or
//! `order.line.added`; `webhook.**` matches `webhook`, `webhook.github` and
//! `webhook.github.push`; `**` matches everything.

use crate::error::{ApiError, ErrorCode};
use crate::limits::{MAX_PATTERN_LEN, MAX_PATTERN_SEGMENTS};

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches this exact text.
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Any,
}

/// A parsed, validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses and validates a pattern.
    pub fn parse(source: &str) -> Result<Self, ApiError> {
        let bad =
            |why: &str| Err(ApiError::new(ErrorCode::InvalidPattern, format!("invalid pattern {source:?}: {why}")));
        if source.is_empty() || source.len() > MAX_PATTERN_LEN {
            return bad("must be 1-256 characters");
        }
        let mut segments = Vec::new();
        for part in source.split('.') {
            let seg = match part {
                "" => return bad("empty segment"),
                "*" => Segment::One,
                "**" => {
                    if segments.last() == Some(&Segment::Any) {
                        return bad("'**.**' is redundant");
                    }
                    Segment::Any
                }
                lit if lit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {
                    Segment::Literal(lit.to_string())
                }
                _ => return bad("segments are '*', '**' or letters, digits, '_' and '-'"),
            };
            segments.push(seg);
        }
        if segments.len() > MAX_PATTERN_SEGMENTS {
            return bad("too many segments");
        }
        Ok(Pattern { source: source.to_string(), segments })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The literal segments before the first wildcard, joined by `.`
    /// (empty for a pattern starting with a wildcard).
    pub fn literal_prefix(&self) -> String {
        let lits: Vec<&str> = self
            .segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        lits.join(".")
    }

    /// Whether the event type `ty` matches this pattern.
    pub fn matches(&self, ty: &str) -> bool {
        let parts: Vec<&str> = ty.split('.').collect();
        // reachable[j]: the first i pattern segments can match the first j parts.
        let n = parts.len();
        let mut reachable = vec![false; n + 1];
        reachable[0] = true;
        for seg in &self.segments {
            let mut next = vec![false; n + 1];
            match seg {
                Segment::Any => {
                    let mut any = false;
                    for j in 0..=n {
                        any |= reachable[j];
                        next[j] = any;
                    }
                }
                Segment::One => next[1..=n].copy_from_slice(&reachable[..n]),
                Segment::Literal(lit) => {
                    for j in 0..n {
                        next[j + 1] = reachable[j] && parts[j] == lit;
                    }
                }
            }
            reachable = next;
        }
        reachable[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn matching() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.updated"));
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order"));
        assert!(!m("order.*", "order.line.added"));
        assert!(m("webhook.**", "webhook"));
        assert!(m("webhook.**", "webhook.github.push"));
        assert!(m("**", "anything.at.all"));
        assert!(m("*.created", "user.created"));
        assert!(!m("*.created", "a.user.created"));
        assert!(m("**.created", "a.user.created"));
        assert!(m("a.**.z", "a.z"));
        assert!(m("a.**.z", "a.b.c.z"));
        assert!(!m("a.**.z", "a.b.c"));
    }

    #[test]
    fn validation() {
        for bad in ["", "a..b", "a.**.**", "a b", "a.b$", &"a.".repeat(20)] {
            assert_eq!(Pattern::parse(bad).unwrap_err().code, ErrorCode::InvalidPattern, "{bad}");
        }
        assert_eq!(Pattern::parse("order.*.x").unwrap().literal_prefix(), "order");
    }
}
