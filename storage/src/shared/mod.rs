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
//! head is marked dead (inside its key's open stripe), so that neither a
//! reader holding an old bucket nor main's store holding an old [`Slot`]
//! (an entry's offset, which lets a set write in place without hashing or
//! probing) takes it for the key's entry. Clearing (or
//! emptying the table) makes the generation odd, forgets every block and
//! lays out a new empty index.
//!
//! # Writers
//!
//! Main's writes go through one mutex inside [`Table`]: callers need no
//! lock of their own, and may hold theirs (the store's shard locks) while
//! they call, as the table never calls back. A [`Slot`] spares a set of a
//! known key the hash and the probe, not the mutex.
//!
//! A set's cache misses on the index and the entry need not wait for the
//! mutex: `Table::hash_ahead` hashes the key and, with no lock, loads the
//! index's place and the key's first bucket (Relaxed, as a reader would)
//! and prefetches the entry it names and the key's stripe word;
//! `Table::set_hashed` then sets with that hash under the mutex as usual.
//! What the unlocked loads found is used for nothing but prefetches
//! (hints, which read nothing the program sees and never fault): the set
//! itself probes again under the mutex, so a stale hint costs a miss,
//! never a wrong write. The store calls it before its own map's work,
//! which the misses then overlap.
//!
//! # Completeness
//!
//! A key whose value the region cannot hold (no block, no room for a
//! larger index) is taken out of the index and listed in main; while the
//! list is not empty the header's "incomplete" flag makes every miss
//! answer [`Lookup::AskMain`], so a reader never answers absent for a key
//! that has a value.

mod alloc;
mod hash;
mod layout;
mod table;
mod view;
mod words;

#[cfg(test)]
mod tests;

pub(crate) use table::{Batch, Table};
// The store does not keep slots beside its entries (yet): only the tests
// write through them.
#[cfg(test)]
pub(crate) use table::Slot;
pub(crate) use view::{Lookup, View};
