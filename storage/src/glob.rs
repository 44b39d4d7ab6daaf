//! Glob patterns over keys, as Redis's `KEYS` reads them: `*` any run of
//! characters, `?` one character, `[abc]` one of a set (`[^abc]` none of
//! it, `[a-z]` a range), `\` makes the next character plain.
//!
//! Every backend matches with this code (Redis only narrows its `SCAN` to
//! the pattern's plain prefix), so a pattern selects the same keys
//! everywhere. It counts characters where Redis counts bytes, which is the
//! same for ASCII keys; a `[` never closed runs to the end of the pattern,
//! as in Redis.

/// A parsed pattern.
#[derive(Debug)]
pub(crate) struct Glob(Vec<char>);

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        Glob(pattern.chars().collect())
    }

    /// Whether `text` matches, in time proportional to the pattern's
    /// length times the text's: a failed `*` only moves on by one.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let p = &self.0;
        let (mut pi, mut ti) = (0, 0);
        // After the last `*`: where the pattern resumes, and the text
        // position that star has swallowed up to.
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = text[ti..].chars().next() {
            if pi < p.len() {
                if p[pi] == '*' {
                    pi += 1;
                    star = Some((pi, ti));
                    continue;
                }
                if let Some(next) = step(p, pi, c) {
                    pi = next;
                    ti += c.len_utf8();
                    continue;
                }
            }
            match star {
                Some((resume, swallowed)) => {
                    let skip = text[swallowed..].chars().next().map_or(1, char::len_utf8);
                    star = Some((resume, swallowed + skip));
                    pi = resume;
                    ti = swallowed + skip;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

/// The token at `p[i]` against `c`: the index after it if it matches.
fn step(p: &[char], i: usize, c: char) -> Option<usize> {
    match p[i] {
        '?' => Some(i + 1),
        '\\' if i + 1 < p.len() => (p[i + 1] == c).then_some(i + 2),
        '[' => class(p, i + 1, c),
        plain => (plain == c).then_some(i + 1),
    }
}

/// A `[...]` set whose body starts at `p[i]`, against `c`.
fn class(p: &[char], mut i: usize, c: char) -> Option<usize> {
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    loop {
        match p.get(i) {
            None => break,
            Some(']') => {
                i += 1;
                break;
            }
            Some('\\') if i + 1 < p.len() => {
                hit |= p[i + 1] == c;
                i += 2;
            }
            Some(&a) if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&b| b != ']') => {
                let b = p[i + 2];
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            Some(&a) => {
                hit |= a == c;
                i += 1;
            }
        }
    }
    (hit != negated).then_some(i)
}

/// The plain start of `pattern`, before its first special character: every
/// matching key starts with it, so a backend can narrow its search to it.
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).matches(t)
    }

    #[test]
    fn reads_patterns_as_redis_does() {
        assert!(m("user.*", "user.1") && m("user.*", "user.") && !m("user.*", "users"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo") && m("h?llo", "héllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo") && !m("h[a-b]llo", "hcllo"));
        assert!(m(r"a\*b", "a*b") && !m(r"a\*b", "axb"));
        assert!(m(r"a[\]]b", "a]b") && m(r"x\", r"x\"));
        assert!(m("a[bc", "ab") && !m("a[bc", "ad"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("", "") && !m("", "a") && m("*", ""));
        assert!(m("**ab", "aab") && m("*é", "aé"));
    }

    #[test]
    fn a_long_run_of_stars_does_not_backtrack_exponentially() {
        let text = "a".repeat(10_000);
        assert!(!m(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn the_literal_prefix_stops_at_the_first_special_character() {
        assert_eq!(literal_prefix("user.*"), "user.");
        assert_eq!(literal_prefix(r"a\*"), "a");
        assert_eq!(literal_prefix("plain"), "plain");
        assert_eq!(literal_prefix("[x]"), "");
    }
}
