//! A table main writes and children read in shared memory: a child's get
//! without a message to main.
//!
//! Main lays the table out in a region of fixed size that it maps
//! read-write and children map read-only ([`Table`] and [`View`]). The
//! region is never resized or unmapped while a reader has it, so a read
//! never faults; everything else is checked.
//!
//! # Layout
//!
//! All of it is 8-byte words (`layout.rs`):
//! - a header line written once before any reader: magic, layout version,
//!   region size, hash seed, clock origin, stripe count;
//! - a line main changes on restructuring: the generation word, the
//!   published index (offset, log2 of its buckets), the "incomplete" flag;
//! - the stripes: one sequence word each, the key's hash picks one;
//! - the heap: blocks in size classes (`alloc.rs`), holding entries (head
//!   word: key length, class, value length; deadline; key; value, each
//!   zero-padded to words) and the index, an open-addressing table of
//!   one-word buckets (16 bits of hash as a tag, the entry's offset)
//!   probed linearly from the hash's low bits.
//!
//! # Reading and its memory orderings
//!
//! A reader loads the generation and its key's stripe (Acquire), gives up
//! for now if either is odd, walks the index and the entry with Relaxed
//! loads (buckets with Acquire), then an Acquire fence, then loads both
//! again: the answer stands only if neither changed. Main, for its part:
//! - makes a stripe odd (Relaxed store, then a Release fence) before it
//!   changes anything a reader of that stripe may read in place (an entry
//!   rewritten in place, a bucket of the stripe's keys), and even again
//!   (Release store) when done; a batch keeps every stripe it touched odd
//!   until its end;
//! - bumps the generation by two (Release store, then a Release fence)
//!   before handing out freed memory again; to publish a new index (its
//!   place in the header) or rewrite memory in use (clearing), it makes
//!   the generation odd first and even after, as for a stripe.
//!
//! If a reader loaded any word stored after such a fence, its own Acquire
//! fence synchronizes with main's, so its second loads see the odd stripe
//! or the new generation, and it retries: whatever it copied came from a
//! change it overlapped. If it loaded none, every word it read predates
//! the changes that began after its first loads, and the ones before were
//! complete (their even store was Release, its first load Acquire): the
//! entry it copied was whole and current at that moment. Buckets are
//! stored with Release after their entry is written, and loaded with
//! Acquire, so a bucket of another key met while probing never leads to an
//! entry older than the bucket. Changes to other keys' buckets never make
//! a key unfindable (a bucket becomes empty only in a new index), so only
//! the key's own stripe and the generation need checking.
//!
//! A set or remove returns after its even store (Release); a reader in
//! another process that learnt of the return (through main's reply, which
//! synchronizes) loads that value or a later one. A batch's stripes turn
//! even only after all its changes: a reader that saw one change saw one
//! stripe's final even store, and with it every odd store of the batch, so
//! its next read of a key the batch touched sees the change or an odd
//! stripe (and retries). Reads never store: a reader killed mid-read
//! leaves nothing behind.
//!
//! Everything read is checked before use: offsets and lengths against the
//! region, an entry's length against its class, probes against the index
//! size, values longer than the reader's buffer re-read only once the read
//! proved valid. A read that keeps failing, or that proves valid but does
//! not make sense, answers [`Lookup::AskMain`], never a wrong value.
//!
//! # Reclamation
//!
//! The region never shrinks; blocks are reused. A freed entry or index is
//! retired, not reused at once: it becomes free only when main recycles,
//! after a generation bump (see above), so a reader still copying from it
//! retries. Recycling waits until a megabyte is retired or a block is
//! wanted, so readers see a bump once per many frees. A retired entry's
//! head is marked dead (inside its key's open stripe), so that a reader
//! holding an old bucket does not take it for the key's entry. Clearing (or
//! emptying the table) makes the generation odd, forgets every block and
//! lays out a new empty index.
//!
//! # Writers
//!
//! Changes to the index or the heap's layout go through one mutex inside
//! [`Table`] (`Table::insert`, `remove_hashed`, `batch`, `clear`), which
//! callers may call while they hold locks of their own (the store's shard
//! locks), as the table never calls back. The exceptions are a held
//! entry's new value or deadline (`Table::rewrite`, `set_deadline_at`),
//! written in place by the key's own writer (see below).
//!
//! # The entries main holds
//!
//! The table is main's own copy of what it holds, not a second one: for
//! each key the table holds, main's map keeps the entry's offset (32 bits,
//! in words), reads the value from the entry and writes it there. So a set
//! writes one line, the entry, found through a map of four bytes a key
//! that stays in the processor's cache, where a second copy cost a line
//! of main's own map plus the entry and its index bucket. Main trusts
//! these entries: only it can write the region (children's mappings are
//! read-only and the file is sealed against new writable ones).
//!
//! The commonest write, a new value for a key whose block it fits, takes
//! no mutex: `Table::rewrite`, given the entry main holds, writes it inside
//! its stripe's odd count. That needs the caller to be the only writer of
//! the key's stripe for the call's length, since a stripe's count is
//! bumped by a plain load and store; main's store hashes its keys with the
//! table's hash and makes each shard a set of whole stripes, so the
//! shard's lock it holds for every write is that guarantee. The offset
//! main holds stays the key's entry: a live entry is never moved or
//! reused, and only a write of the key itself (which needs the stripe)
//! moves or retires it, and hands main the new offset. Clearing, which
//! forgets every block, happens with every shard locked and main's map
//! emptied first; the writer also starts its heap afresh when the last
//! key is removed, when no shard holds an offset either. The writers behind the mutex meanwhile read the
//! entry's head and key (to probe or rebuild an index), which a rewrite
//! leaves as they were but for the value's length.
//!
//! Main reads a held entry's key and value as borrowed bytes, with the
//! key's shard locked: nothing stores to them meanwhile (a write of the
//! key needs the shard locked for writing), and a live entry's key never
//! changes at all.
//!
//! # Completeness
//!
//! A key whose value the region cannot hold (no block, no room for a
//! larger index) is taken out of the index and listed in main; while the
//! list is not empty the header's "incomplete" flag makes every miss
//! answer [`Lookup::AskMain`], so a reader never answers absent for a key
//! that has a value. Main keeps such a key in its own map until a later
//! write of it finds room in the region again.

mod alloc;
mod hash;
mod layout;
mod table;
mod view;
mod words;

#[cfg(test)]
pub(crate) mod tests;

pub(crate) use hash::hash;
pub(crate) use layout::STRIPE_SHIFT;
pub(crate) use table::{Batch, Table, at_of, word_of};
pub(crate) use view::{Lookup, View};
