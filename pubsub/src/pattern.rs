//! Topics and the patterns that select them, like NATS subjects.
//!
//! A topic is one or more non-empty segments joined by `.`
//! (`chat.room1.text`); a segment holds no whitespace, no control character
//! and neither `*` nor `>`. A pattern is a topic whose segments may also be
//! `*`, which matches exactly one segment, or, as its last segment only,
//! `>`, which matches one or more trailing segments.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Checks that `topic` is a valid topic (see the module doc).
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    if plain_ascii_topic(topic.as_bytes()) {
        return Ok(());
    }
    check_topic_fully(topic)
}

/// The check of any topic, with the reason it fails.
fn check_topic_fully(topic: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    if topic.is_empty() {
        return fail("it is empty");
    }
    for segment in topic.split('.') {
        if let Err(reason) = check_segment(segment) {
            return fail(reason);
        }
    }
    Ok(())
}

/// Whether `topic` is a valid topic of ASCII words: one pass over the
/// bytes for the common case (publishers check every topic they send);
/// `false` sends the caller to the full check, which also says why.
fn plain_ascii_topic(topic: &[u8]) -> bool {
    let mut after_dot = true;
    for &b in topic {
        let fine = match b {
            b'.' => !after_dot,
            b'*' | b'>' | 0..=b' ' | 0x7f.. => false,
            _ => true,
        };
        if !fine {
            return false;
        }
        after_dot = b == b'.';
    }
    !after_dot
}

fn check_segment(segment: &str) -> Result<(), &'static str> {
    // Most topics are ASCII words: one pass over the bytes decides.
    if segment.is_ascii() {
        if segment.is_empty() {
            return Err("it has an empty segment (a leading, trailing or doubled `.`)");
        }
        for b in segment.bytes() {
            if b == b'*' || b == b'>' {
                return Err("a wildcard `*` or `>` is not allowed in a topic or inside a segment");
            }
            if b.is_ascii_whitespace() || b.is_ascii_control() || b == b' ' {
                return Err("it contains whitespace or a control character");
            }
        }
        return Ok(());
    }
    if segment.is_empty() {
        return Err("it has an empty segment (a leading, trailing or doubled `.`)");
    }
    if segment.contains(['*', '>']) {
        return Err("a wildcard `*` or `>` is not allowed in a topic or inside a segment");
    }
    if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or a control character");
    }
    Ok(())
}

/// One segment of a parsed pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// Matches this exact segment.
    Literal(&'a str),
    /// `*`: matches any one segment.
    One,
    /// `>`: matches one or more trailing segments.
    Rest,
}

/// A validated subscription pattern.
///
/// ```
/// use yuki_pubsub::Pattern;
///
/// let p = Pattern::new("chat.*.text").unwrap();
/// assert!(p.matches("chat.room1.text"));
/// assert!(!p.matches("chat.room1.image"));
/// assert!(Pattern::new("chat.>").unwrap().matches("chat.room1.text"));
/// assert!(Pattern::new("chat..x").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern(Arc<str>);

impl Pattern {
    /// Parses and validates `pattern`.
    pub fn new(pattern: &str) -> Result<Pattern> {
        let fail = |reason| {
            Err(Error::InvalidPattern {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        if pattern.is_empty() {
            return fail("it is empty");
        }
        let count = pattern.split('.').count();
        for (i, segment) in pattern.split('.').enumerate() {
            match segment {
                "*" => {}
                ">" if i + 1 == count => {}
                ">" => return fail("`>` may only be the last segment"),
                other => {
                    if let Err(reason) = check_segment(other) {
                        return fail(reason);
                    }
                }
            }
        }
        Ok(Pattern(pattern.into()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.0.split('.').map(|s| match s {
            "*" => Segment::One,
            ">" => Segment::Rest,
            literal => Segment::Literal(literal),
        })
    }

    /// Whether `topic` (assumed valid) is selected by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic = topic.split('.');
        for segment in self.segments() {
            match segment {
                Segment::Rest => return topic.next().is_some(),
                Segment::One => {
                    if topic.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if topic.next() != Some(lit) {
                        return false;
                    }
                }
            }
        }
        topic.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn valid_and_invalid_topics() {
        for ok in ["a", "chat.room1", "a.b.c.d", "ünï.côdé", "a-b_c.1"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a.\n", "x*y",
        ] {
            let err = check_topic(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidTopic { .. }), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_quick_topic_check_agrees_with_the_full_one(
            topic in proptest::collection::vec(
                proptest::sample::select(vec!['a', 'Z', '0', '-', '.', '*', '>', ' ', '\t', '\x7f', 'é']),
                0..8,
            ).prop_map(|c| c.into_iter().collect::<String>())
        ) {
            let quick = plain_ascii_topic(topic.as_bytes());
            let full = check_topic_fully(&topic).is_ok();
            // The quick check never passes a bad topic, and decides every ASCII one.
            proptest::prop_assert!(!quick || full, "{:?}", topic);
            if topic.is_ascii() {
                proptest::prop_assert_eq!(quick, full, "{:?}", topic);
            }
            proptest::prop_assert_eq!(check_topic(&topic).is_ok(), full);
        }
    }

    #[test]
    fn valid_and_invalid_patterns() {
        for ok in ["a", "*", ">", "a.*", "a.>", "*.*.>", "a.*.c"] {
            assert_eq!(Pattern::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a..b", ">.a", "a.>.b", "a*", "a.b>", "a. b", "."] {
            let err = Pattern::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPattern { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("a pattern is"), "{err}");
        }
    }

    #[test]
    fn matching_examples() {
        let m = |p: &str, t: &str| Pattern::new(p).unwrap().matches(t);
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b", "a"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "x"));
        assert!(m(">", "x.y.z"));
        assert!(m("*.b.>", "a.b.c"));
        assert!(!m("*.b.>", "a.c.c"));
        assert_eq!(
            format!("{:?}", Pattern::new("a.*").unwrap()),
            "Pattern(\"a.*\")"
        );
        assert_eq!(Pattern::new("a.*").unwrap().to_string(), "a.*");
    }
}
