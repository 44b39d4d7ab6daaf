//! A table keyed by pattern, searched by topic: a trie over segments, so a
//! publish visits only the patterns that can match instead of all of them.

use std::collections::HashMap;

use crate::pattern::{Pattern, Segment};

/// Values of type `V` stored under patterns.
#[derive(Debug)]
pub(crate) struct PatternTable<V> {
    root: Node<V>,
}

#[derive(Debug)]
struct Node<V> {
    /// The value of the pattern that ends at this node.
    here: Option<V>,
    /// The value of the pattern that ends with `>` after this node.
    rest: Option<V>,
    literal: HashMap<Box<str>, Node<V>>,
    one: Option<Box<Node<V>>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            here: None,
            rest: None,
            literal: HashMap::new(),
            one: None,
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.here.is_none() && self.rest.is_none() && self.literal.is_empty() && self.one.is_none()
    }
}

impl<V> Default for PatternTable<V> {
    fn default() -> Self {
        PatternTable {
            root: Node::default(),
        }
    }
}

impl<V> PatternTable<V> {
    /// The value stored under `pattern`, created with `V::default()` if absent.
    pub(crate) fn entry(&mut self, pattern: &Pattern) -> &mut V
    where
        V: Default,
    {
        let mut node = &mut self.root;
        for segment in pattern.segments() {
            match segment {
                Segment::Literal(lit) => node = node.literal.entry(lit.into()).or_default(),
                Segment::One => node = node.one.get_or_insert_with(Box::default),
                Segment::Rest => return node.rest.get_or_insert_with(V::default),
            }
        }
        node.here.get_or_insert_with(V::default)
    }

    /// The value stored under `pattern`, if any.
    pub(crate) fn get(&self, pattern: &Pattern) -> Option<&V> {
        let mut node = &self.root;
        for segment in pattern.segments() {
            match segment {
                Segment::Literal(lit) => node = node.literal.get(lit)?,
                Segment::One => node = node.one.as_deref()?,
                Segment::Rest => return node.rest.as_ref(),
            }
        }
        node.here.as_ref()
    }

    /// Applies `f` to the value under `pattern`, if any; when `f` returns
    /// true the value is removed, and emptied branches are pruned.
    pub(crate) fn update(&mut self, pattern: &Pattern, f: impl FnOnce(&mut V) -> bool) {
        let segments: Vec<_> = pattern.segments().collect();
        update_in(&mut self.root, &segments, f);
    }

    /// Calls `f` with every value whose pattern matches `topic` (a valid topic).
    pub(crate) fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a V)) {
        visit(&self.root, Some(topic), &mut f);
    }

    /// Calls `f` with every stored value.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&V)) {
        fn all<V>(node: &Node<V>, f: &mut impl FnMut(&V)) {
            node.here.iter().chain(node.rest.iter()).for_each(&mut *f);
            node.literal.values().for_each(|n| all(n, f));
            if let Some(n) = &node.one {
                all(n, f);
            }
        }
        all(&self.root, &mut f);
    }

    /// Whether no pattern is stored.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

fn update_in<V>(node: &mut Node<V>, segments: &[Segment<'_>], f: impl FnOnce(&mut V) -> bool) {
    let Some((first, rest)) = segments.split_first() else {
        if let Some(v) = node.here.as_mut() {
            if f(v) {
                node.here = None;
            }
        }
        return;
    };
    match first {
        Segment::Rest => {
            if let Some(v) = node.rest.as_mut() {
                if f(v) {
                    node.rest = None;
                }
            }
        }
        Segment::One => {
            if let Some(child) = node.one.as_mut() {
                update_in(child, rest, f);
                if child.is_empty() {
                    node.one = None;
                }
            }
        }
        Segment::Literal(lit) => {
            if let Some(child) = node.literal.get_mut(*lit) {
                update_in(child, rest, f);
                if child.is_empty() {
                    node.literal.remove(*lit);
                }
            }
        }
    }
}

/// `topic` is what remains of the topic, `None` once every segment matched.
fn visit<'a, V>(node: &'a Node<V>, topic: Option<&str>, f: &mut impl FnMut(&'a V)) {
    let Some(topic) = topic else {
        if let Some(v) = &node.here {
            f(v);
        }
        return;
    };
    let (first, rest) = match topic.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (topic, None),
    };
    if let Some(v) = &node.rest {
        f(v);
    }
    if let Some(child) = node.literal.get(first) {
        visit(child, rest, f);
    }
    if let Some(child) = &node.one {
        visit(child, rest, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The obvious matcher, written independently of `Pattern::matches`.
    fn reference(pattern: &str, topic: &str) -> bool {
        fn go(p: &[&str], t: &[&str]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(&">"), Some(_)) => p.len() == 1,
                (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
                (Some(a), Some(b)) => a == b && go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        let p: Vec<_> = pattern.split('.').collect();
        let t: Vec<_> = topic.split('.').collect();
        go(&p, &t)
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..5)
            .prop_map(|s| s.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut s, rest)| {
                if rest {
                    s.push(">");
                }
                s.join(".")
            })
    }

    proptest! {
        #[test]
        fn table_and_pattern_agree_with_the_reference(
            patterns in proptest::collection::vec(pattern(), 0..12),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            topics in proptest::collection::vec(topic(), 1..12),
        ) {
            let mut table = PatternTable::<Vec<String>>::default();
            let mut live: Vec<String> = patterns.clone();
            for p in &patterns {
                table.entry(&Pattern::new(p).unwrap()).push(p.clone());
            }
            for i in removed {
                if live.is_empty() { break; }
                let p = live.remove(i.index(live.len()));
                table.update(&Pattern::new(&p).unwrap(), |v| {
                    let at = v.iter().position(|x| *x == p).unwrap();
                    v.remove(at);
                    v.is_empty()
                });
            }
            for t in &topics {
                let mut got = Vec::new();
                table.for_each_match(t, |v| got.extend(v.iter().cloned()));
                got.sort();
                let mut want: Vec<_> = live.iter().filter(|p| reference(p, t)).cloned().collect();
                want.sort();
                prop_assert_eq!(&got, &want, "topic {}", t);
                for p in &patterns {
                    prop_assert_eq!(Pattern::new(p).unwrap().matches(t), reference(p, t), "{} vs {}", p, t);
                }
            }
            let distinct: BTreeSet<_> = live.iter().collect();
            for p in distinct {
                table.update(&Pattern::new(p).unwrap(), |_| true);
            }
            prop_assert!(table.is_empty());
        }
    }
}
