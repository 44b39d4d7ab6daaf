//! A link's data path: two one-way byte pipes in one region of shared
//! memory that main and the child both map.
//!
//! A message costs the writer a copy in and one store, and the reader one
//! store and a copy out: no system call while the reader is awake. A
//! reader with nothing to read sleeps on a futex word in the region, and a
//! writer wakes it only if it sleeps; a writer facing a full pipe sleeps
//! the same way until the reader frees room. An ipc-channel socket from
//! main beside the region tells the child when main is gone ([`watch`]);
//! main learns of a child's end from its exit, and closes the region.
//!
//! Neither side trusts the other's half: every position read from the
//! region is checked against the pipe's size, every message length against
//! the reader's limit, and bytes are copied out before anything parses
//! them, so a child that scribbles on the region is cut off, never
//! followed.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use yuki_channel::sync;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::futex;
use crate::sealed::{self, Mapping};

/// The bytes each pipe holds (Miri, which checks every byte copied, gets
/// small pipes that wrap as often for a fraction of the bytes).
pub(crate) const CAPACITY: usize = if cfg!(miri) { 4 << 10 } else { 256 << 10 };

/// Messages longer than this are split at frame boundaries, so that a
/// reader never needs to hold more than this plus one frame at once.
pub(crate) const MAX_MESSAGE: usize = 4 * CAPACITY;

/// Keeps each side's words on cache lines of their own.
const LINE: usize = 128;
const PIPE_HEADER: usize = 2 * LINE;
const PIPE_LEN: usize = PIPE_HEADER + CAPACITY;

/// The region: a line with the closed flag, then the two pipes.
pub(crate) const REGION_LEN: usize = LINE + 2 * PIPE_LEN;

const CLOSED: usize = 0;
/// In a pipe's header: the writer's line, then the reader's.
const WRITE_POS: usize = 0;
const WRITER_SLEEPS: usize = 8;
const READ_POS: usize = LINE;
const READER_SLEEPS: usize = LINE + 8;

/// How long a sleeper waits before looking again on its own: only a
/// wake-up lost to a peer scribbling on the sleep words makes this matter,
/// as writers and a closing side wake every sleeper that said it sleeps.
const NAP: Duration = Duration::from_millis(500);

/// Which way a pipe carries bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Way {
    /// Child to main.
    Up = 0,
    /// Main to child.
    Down = 1,
}

/// Why a pipe cannot carry on: a link's error, whichever its kind.
pub(crate) use crate::link::LinkError as PipeError;

/// The shared region of one link, mapped in this process.
pub(crate) struct Region {
    /// Keeps `base` valid.
    _memory: Memory,
    base: *mut u8,
    /// This process closed the link: the flag in the region tells the other
    /// side, which could clear it; this one it cannot.
    closed_here: AtomicBool,
    /// Why this side cut the link, if the other side broke the pipe's rules.
    broken: Mutex<Option<String>>,
}

/// What holds a region's bytes (held only to be dropped with the region).
#[allow(dead_code)]
enum Memory {
    /// A sealed memory file shared with the other process, kept mapped
    /// while the region lives (with the file, when this side holds it).
    Shared(Mapping, Option<OwnedFd>),
    /// This process's own, for tests run under Miri, which cannot map a
    /// shared memory file.
    #[cfg(miri)]
    Heap(Vec<u64>),
}

// SAFETY: the region is only reached through raw pointers, and only with
// atomic accesses: positions and sleep words, and the data area as whole
// aligned 8-byte words. A peer that breaks the protocol can race those
// accesses, which then carry garbage but are never undefined behaviour and
// touch nothing outside the region: no reference into the data area is
// ever made, and what is copied out is checked before use.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Region {
    /// A new, zeroed region in a sealed memory file (main makes it), and
    /// the file, to hand to the child.
    pub(crate) fn create() -> Result<(Arc<Region>, OwnedFd), String> {
        let file = sealed::create(REGION_LEN)?;
        let mapping = Mapping::new(file.as_fd(), REGION_LEN)?;
        Ok((Region::shared(mapping, None), file))
    }

    /// Maps the region in `file` (the child's side), keeping the file;
    /// refuses a file of the wrong size or without the seals that fix it.
    pub(crate) fn open(file: OwnedFd) -> Result<Arc<Region>, String> {
        // A process the child starts must not inherit the file.
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        let mapping = Mapping::new(file.as_fd(), REGION_LEN)?;
        Ok(Region::shared(mapping, Some(file)))
    }

    fn shared(mapping: Mapping, file: Option<OwnedFd>) -> Arc<Region> {
        Arc::new(Region {
            base: mapping.base(),
            _memory: Memory::Shared(mapping, file),
            closed_here: AtomicBool::new(false),
            broken: Mutex::new(None),
        })
    }

    /// A region in this process's own memory.
    #[cfg(miri)]
    pub(crate) fn local() -> Arc<Region> {
        // A Vec, not a Box: moving it keeps `base` valid under Miri's
        // aliasing rules.
        let mut words = vec![0u64; REGION_LEN / 8];
        let base = words.as_mut_ptr().cast::<u8>();
        Arc::new(Region {
            _memory: Memory::Heap(words),
            base,
            closed_here: AtomicBool::new(false),
            broken: Mutex::new(None),
        })
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at % 8 == 0 && at + 8 <= REGION_LEN);
        // SAFETY: in bounds and aligned (the mapping is page-aligned), and
        // only ever accessed atomically by either process.
        unsafe { &*self.base.add(at).cast::<AtomicU64>() }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at % 4 == 0 && at + 4 <= REGION_LEN);
        // SAFETY: as in `u64_at`.
        unsafe { &*self.base.add(at).cast::<AtomicU32>() }
    }

    /// Whether either side closed the link.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed_here.load(Ordering::Acquire) || self.u32_at(CLOSED).load(Ordering::Acquire) != 0
    }

    /// Closes the link both ways and wakes every sleeper on either side:
    /// readers get what was written before, then [`PipeError::Closed`];
    /// writers fail at once. Called by a side that closes its link, and by
    /// the child's thread that sees main's socket close.
    pub(crate) fn close(&self) {
        self.closed_here.store(true, Ordering::SeqCst);
        self.u32_at(CLOSED).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        for way in [Way::Up, Way::Down] {
            let pipe = Pipe::at(way);
            for word in [WRITER_SLEEPS, READER_SLEEPS] {
                // Whatever the words say (the peer may have changed them):
                // a close is rare, and every sleeper must see it.
                let word = self.u32_at(pipe + word);
                word.store(0, Ordering::SeqCst);
                futex::wake(word);
            }
        }
    }

    /// Closes the link because the other side broke the pipe's rules: every
    /// end in this process then reports `why`.
    fn break_off(&self, why: String) -> PipeError {
        sync::lock(&self.broken).get_or_insert_with(|| why.clone());
        self.close();
        PipeError::Corrupt(why)
    }

    /// What an end of this closed link reports: why this side cut it, if
    /// the other side broke the rules, else that it is closed.
    pub(crate) fn closed(&self) -> PipeError {
        match sync::lock(&self.broken).clone() {
            Some(why) => PipeError::Corrupt(why),
            None => PipeError::Closed,
        }
    }

    /// The writing end of the pipe going `way`. One per pipe and process.
    pub(crate) fn writer(self: &Arc<Region>, way: Way) -> Writer {
        Writer {
            pipe: Pipe::new(self, way),
            pos: 0,
        }
    }

    /// The reading end of the pipe going `way`, refusing messages over
    /// `limit` bytes. One per pipe and process.
    pub(crate) fn reader(self: &Arc<Region>, way: Way, limit: usize) -> Reader {
        Reader {
            pipe: Pipe::new(self, way),
            pos: 0,
            seen: 0,
            limit,
            partial: None,
        }
    }
}

/// Wakes whoever sleeps on `word`, if anyone said so: the swap makes a
/// sleeper that has not yet gone to sleep return at once instead.
fn rouse(word: &AtomicU32) {
    if word.load(Ordering::Relaxed) != 0 && word.swap(0, Ordering::SeqCst) != 0 {
        futex::wake(word);
    }
}

/// Sleeps on `word` unless `ready` (checked after saying so, so that a
/// writer that acts in between either sees the word or is seen).
fn sleep_unless(word: &AtomicU32, ready: impl FnOnce() -> bool) {
    sleep_unless_for(word, NAP, ready);
}

/// [`sleep_unless`] for at most `nap`.
fn sleep_unless_for(word: &AtomicU32, nap: Duration, ready: impl FnOnce() -> bool) {
    word.store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if !ready() {
        futex::wait(word, 1, nap);
    }
    word.store(0, Ordering::Relaxed);
}

/// One pipe of a region.
struct Pipe {
    region: Arc<Region>,
    /// Where its header starts in the region.
    at: usize,
}

impl Pipe {
    fn at(way: Way) -> usize {
        LINE + way as usize * PIPE_LEN
    }

    fn new(region: &Arc<Region>, way: Way) -> Pipe {
        Pipe {
            region: region.clone(),
            at: Pipe::at(way),
        }
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        self.region.u32_at(self.at + at)
    }

    fn pos(&self, at: usize) -> &AtomicU64 {
        self.region.u64_at(self.at + at)
    }

    /// The `i`th 8-byte word of the data area. The data is only ever
    /// reached through these words, with atomic accesses of this one size:
    /// a peer writing the same bytes at the same moment (which the protocol
    /// forbids, but a hostile child may do) then makes the copy carry
    /// garbage, never undefined behaviour.
    fn word_at(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < CAPACITY / 8);
        self.region.u64_at(self.at + PIPE_HEADER + 8 * i)
    }

    /// Copies `src` into the pipe at stream position `pos`.
    ///
    /// # Safety
    /// `src.len() <= CAPACITY`, and the range is the writer's (free).
    unsafe fn copy_in(&self, pos: u64, src: &[u8]) {
        let mut at = (pos % CAPACITY as u64) as usize;
        let mut done = 0;
        while done < src.len() {
            let left = src.len() - done;
            let skew = at % 8;
            if skew == 0 && left >= 8 {
                // Whole words, up to the end of `src` or of the ring.
                let words = (left / 8).min((CAPACITY - at) / 8);
                for k in 0..words {
                    // SAFETY: `done + 8 * k + 8 <= src.len()`.
                    let w = unsafe {
                        src.as_ptr()
                            .add(done + 8 * k)
                            .cast::<u64>()
                            .read_unaligned()
                    };
                    self.word_at(at / 8 + k).store(w, Ordering::Relaxed);
                }
                done += 8 * words;
                at = (at + 8 * words) % CAPACITY;
                continue;
            }
            // Part of a word: the writer's own bytes around it are stored
            // back as they were (the reader never writes data).
            let n = (8 - skew).min(left);
            let word = self.word_at(at / 8);
            let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
            bytes[skew..skew + n].copy_from_slice(&src[done..done + n]);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
            done += n;
            at = (at + n) % CAPACITY;
        }
    }

    /// Copies `len` bytes from stream position `pos` to `dst`.
    ///
    /// # Safety
    /// `len <= CAPACITY`, `dst` is valid for `len` bytes, and the range is
    /// the reader's (written and published).
    unsafe fn copy_out(&self, pos: u64, dst: *mut u8, len: usize) {
        let mut at = (pos % CAPACITY as u64) as usize;
        let mut done = 0;
        while done < len {
            let left = len - done;
            let skew = at % 8;
            if skew == 0 && left >= 8 {
                let words = (left / 8).min((CAPACITY - at) / 8);
                for k in 0..words {
                    let w = self.word_at(at / 8 + k).load(Ordering::Relaxed);
                    // SAFETY: `done + 8 * k + 8 <= len`, within `dst`.
                    unsafe { dst.add(done + 8 * k).cast::<u64>().write_unaligned(w) };
                }
                done += 8 * words;
                at = (at + 8 * words) % CAPACITY;
                continue;
            }
            let n = (8 - skew).min(left);
            let bytes = self.word_at(at / 8).load(Ordering::Relaxed).to_ne_bytes();
            // SAFETY: `done + n <= len`, within `dst`.
            unsafe { std::ptr::copy_nonoverlapping(bytes[skew..].as_ptr(), dst.add(done), n) };
            done += n;
            at = (at + n) % CAPACITY;
        }
    }
}

/// The writing end of a pipe.
pub(crate) struct Writer {
    pipe: Pipe,
    /// Bytes written so far (this side's copy is the truth).
    pos: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("pos", &self.pos).finish()
    }
}

impl Writer {
    /// The region this pipe lives in.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.pipe.region
    }

    /// Sends `message` (a run of whole frames, or any bytes up to
    /// [`MAX_MESSAGE`]), waiting for room while the pipe is full. A longer
    /// run is sent as several messages, split between frames.
    pub(crate) fn send(&mut self, message: &[u8]) -> Result<(), PipeError> {
        if message.is_empty() {
            return self.send_one(message);
        }
        let mut rest = message;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(split_point(rest));
            self.send_one(now)?;
            rest = later;
        }
        Ok(())
    }

    fn send_one(&mut self, message: &[u8]) -> Result<(), PipeError> {
        let len = u32::try_from(message.len())
            .map_err(|_| PipeError::Corrupt(format!("a frame of {} bytes", message.len())))?;
        self.put(&len.to_le_bytes())?;
        self.put(message)?;
        self.publish();
        Ok(())
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), PipeError> {
        while !bytes.is_empty() {
            let free = self.free()?;
            if free == 0 {
                // Let the reader at what is there, then wait for room.
                self.publish();
                sleep_unless(self.pipe.word(WRITER_SLEEPS), || {
                    !matches!(self.free(), Ok(0))
                });
                continue;
            }
            let n = free.min(bytes.len());
            // SAFETY: `n` bytes are free from `pos` on.
            unsafe { self.pipe.copy_in(self.pos, &bytes[..n]) };
            self.pos += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Room left, from the reader's published position.
    fn free(&self) -> Result<usize, PipeError> {
        let region = &self.pipe.region;
        if region.is_closed() {
            return Err(region.closed());
        }
        let read = self.pipe.pos(READ_POS).load(Ordering::Acquire);
        let used = self.pos.wrapping_sub(read);
        if used > CAPACITY as u64 {
            return Err(region.break_off(format!(
                "the reader claims position {read}, but {} bytes were written",
                self.pos
            )));
        }
        Ok(CAPACITY - used as usize)
    }

    /// Publishes a position past anything a reader may accept (for
    /// fault-injection tests).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn scribble(&mut self) {
        self.pos = self.pos.wrapping_add(2 * CAPACITY as u64 + 1);
        self.publish();
    }

    fn publish(&self) {
        self.pipe.pos(WRITE_POS).store(self.pos, Ordering::Release);
        fence(Ordering::SeqCst);
        rouse(self.pipe.word(READER_SLEEPS));
    }
}

/// How many leading bytes of `bytes` go in one message: all of them up to
/// [`MAX_MESSAGE`], else whole frames up to it (at least one).
fn split_point(bytes: &[u8]) -> usize {
    crate::link::split_point(bytes, MAX_MESSAGE)
}

/// The reading end of a pipe.
pub(crate) struct Reader {
    pipe: Pipe,
    /// Bytes read so far (this side's copy is the truth).
    pos: u64,
    /// The writer's position when last looked at.
    seen: u64,
    limit: usize,
    /// A message longer than what was there: its length and what came.
    partial: Option<(usize, Vec<u8>)>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("pos", &self.pos).finish()
    }
}

impl Reader {
    /// The next message if one has fully arrived; never blocks.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Vec<u8>>, PipeError> {
        loop {
            let there = self.available()?;
            if let Some((len, buf)) = &mut self.partial {
                if there == 0 {
                    return Ok(None);
                }
                let n = there.min(*len - buf.len());
                // SAFETY: `n` published bytes, into spare capacity of `buf`
                // (its capacity is `len`).
                unsafe {
                    let got = buf.len();
                    self.pipe.copy_out(self.pos, buf.as_mut_ptr().add(got), n);
                    buf.set_len(got + n);
                }
                self.pos += n as u64;
                let done = buf.len() == *len;
                self.release();
                if done {
                    return Ok(self.partial.take().map(|(_, b)| b));
                }
                continue;
            }
            if there < 4 {
                return Ok(None);
            }
            let mut len = [0; 4];
            // SAFETY: 4 published bytes into a 4-byte array.
            unsafe { self.pipe.copy_out(self.pos, len.as_mut_ptr(), 4) };
            let len = u32::from_le_bytes(len) as usize;
            if len > self.limit {
                return Err(self.pipe.region.break_off(format!(
                    "a message of {len} bytes, over the limit of {}",
                    self.limit
                )));
            }
            self.pos += 4;
            let mut buf = Vec::with_capacity(len);
            if there - 4 >= len {
                // SAFETY: `len` published bytes into `buf`'s capacity.
                unsafe {
                    self.pipe.copy_out(self.pos, buf.as_mut_ptr(), len);
                    buf.set_len(len);
                }
                self.pos += len as u64;
                self.release();
                return Ok(Some(buf));
            }
            self.partial = Some((len, buf));
        }
    }

    /// The next message, sleeping until one comes; after a close, what
    /// was written before it, then [`Region::closed`]'s error.
    pub(crate) fn recv(&mut self) -> Result<Vec<u8>, PipeError> {
        loop {
            if let Some(m) = self.recv_until(None)? {
                return Ok(m);
            }
        }
    }

    /// [`recv`](Reader::recv) giving up at `deadline` (never if `None`)
    /// with `Ok(None)`.
    pub(crate) fn recv_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, PipeError> {
        loop {
            if let Some(m) = self.try_recv()? {
                return Ok(Some(m));
            }
            if self.pipe.region.is_closed() {
                return self
                    .try_recv()?
                    .map(Some)
                    .ok_or_else(|| self.pipe.region.closed());
            }
            let nap = match deadline {
                None => NAP,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(NAP),
                    _ => return Ok(None),
                },
            };
            let seen = self.seen;
            sleep_unless_for(self.pipe.word(READER_SLEEPS), nap, || {
                self.pipe.pos(WRITE_POS).load(Ordering::Relaxed) != seen
                    || self.pipe.region.is_closed()
            });
        }
    }

    /// Whether the link was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.pipe.region.is_closed()
    }

    /// What this end reports now that the link is closed.
    pub(crate) fn closed(&self) -> PipeError {
        self.pipe.region.closed()
    }

    /// Published bytes not yet read.
    fn available(&mut self) -> Result<usize, PipeError> {
        let written = self.pipe.pos(WRITE_POS).load(Ordering::Acquire);
        self.seen = written;
        let there = written.wrapping_sub(self.pos);
        if there > CAPACITY as u64 {
            return Err(self.pipe.region.break_off(format!(
                "the writer claims position {written}, but {} bytes were read",
                self.pos
            )));
        }
        Ok(there as usize)
    }

    fn release(&self) {
        self.pipe.pos(READ_POS).store(self.pos, Ordering::Release);
        fence(Ordering::SeqCst);
        rouse(self.pipe.word(WRITER_SLEEPS));
    }
}

/// Waits for main's end of `alive` to close (it never sends; anything it
/// did send ends the link as well), then closes `region`, waking this
/// side's sleepers: how a child learns that main died without closing the
/// link itself. (Main learns of a child's death from its exit.)
pub(crate) fn watch(alive: &crate::link::ipc::Receiver, region: &Region) {
    let _ = alive.recv();
    region.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A frame as `codec::put_frame` writes it.
    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = (len as u32).to_le_bytes().to_vec();
        f.resize(4 + len, fill);
        f
    }

    /// The same region mapped twice, as main and a child map it.
    #[cfg(not(miri))]
    fn two_mappings() -> (Arc<Region>, Arc<Region>) {
        let (main, file) = Region::create().unwrap();
        let child = Region::open(file).unwrap();
        (child, main)
    }

    /// Miri cannot map shared memory: one heap region for both sides,
    /// which lets it check the protocol's ordering and its copies.
    #[cfg(miri)]
    fn two_mappings() -> (Arc<Region>, Arc<Region>) {
        let region = Region::local();
        (region.clone(), region)
    }

    /// Fewer messages under Miri, which runs far slower.
    const SCALE: usize = if cfg!(miri) { 10 } else { 1 };

    #[test]
    fn messages_arrive_whole_and_in_order_across_two_mappings() {
        let (child, main) = two_mappings();
        let mut tx = child.writer(Way::Up);
        let mut rx = main.reader(Way::Up, crate::link::message_limit(16 << 20));
        // Small ones, ones that wrap the pipe, ones longer than the pipe,
        // and a run of frames longer than a message.
        let mut sent: Vec<Vec<u8>> = (0..2000 / SCALE)
            .map(|i| vec![i as u8; i % (CAPACITY / 1000) + 1])
            .collect();
        sent.push(vec![7; CAPACITY * 3 + 5]);
        let frame_len = MAX_MESSAGE / 10;
        sent.push((0..40).flat_map(|i| frame(frame_len, i)).collect());
        let expected = sent.clone();
        let writer = thread::spawn(move || {
            for m in &sent {
                tx.send(m).unwrap();
            }
        });
        let mut got = Vec::new();
        let mut frames_run = Vec::new();
        while got.len() < expected.len() - 1 {
            got.push(rx.recv().unwrap());
        }
        // The run of frames comes as several messages of whole frames.
        let run = expected.last().unwrap();
        while frames_run.len() < run.len() {
            let part = rx.recv().unwrap();
            assert!(part.len() <= MAX_MESSAGE, "{} bytes", part.len());
            assert_eq!(
                yuki_channel::codec::Frames::new(&part).count(),
                part.len() / (4 + frame_len)
            );
            frames_run.extend_from_slice(&part);
        }
        writer.join().unwrap();
        assert_eq!(got, expected[..expected.len() - 1]);
        assert_eq!(&frames_run, run);
        assert_eq!(rx.try_recv(), Ok(None));
    }

    #[test]
    fn a_reader_gets_what_was_sent_before_a_close_then_closed() {
        let (child, main) = two_mappings();
        let mut tx = child.writer(Way::Down);
        let mut rx = main.reader(Way::Down, 1 << 20);
        tx.send(b"last words").unwrap();
        child.close();
        assert!(main.is_closed());
        assert_eq!(rx.recv().unwrap(), b"last words");
        assert_eq!(rx.recv(), Err(PipeError::Closed));
        assert_eq!(tx.send(b"more"), Err(PipeError::Closed));
    }

    #[test]
    fn a_close_wakes_a_sleeping_reader_and_a_writer_facing_a_full_pipe() {
        let (child, main) = two_mappings();
        let mut rx = main.reader(Way::Up, 1 << 20);
        let sleeper = thread::spawn(move || rx.recv());
        let mut tx = main.writer(Way::Down);
        let blocked = thread::spawn(move || tx.send(&vec![1; CAPACITY * 2]));
        // Each side wakes only through the close (bounded by the join's
        // own wait: neither returns before it).
        child.close();
        assert_eq!(sleeper.join().unwrap(), Err(PipeError::Closed));
        assert_eq!(blocked.join().unwrap(), Err(PipeError::Closed));
    }

    #[test]
    fn a_sleeping_reader_wakes_for_a_message() {
        let (child, main) = two_mappings();
        let mut rx = main.reader(Way::Up, 1 << 20);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = thread::spawn(move || {
            ready_tx.send(()).unwrap();
            rx.recv()
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        child.writer(Way::Up).send(b"wake up").unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), b"wake up");
    }

    #[test]
    fn positions_the_other_side_scribbled_on_are_refused() {
        let (child, main) = two_mappings();
        let mut rx = main.reader(Way::Up, 1 << 20);
        let at = Pipe::at(Way::Up);
        child
            .u64_at(at + WRITE_POS)
            .store(CAPACITY as u64 + 1, Ordering::SeqCst);
        assert!(matches!(rx.try_recv(), Err(PipeError::Corrupt(_))));
        assert!(matches!(rx.recv(), Err(PipeError::Corrupt(_))));

        let mut tx = main.writer(Way::Down);
        let at = Pipe::at(Way::Down);
        child.u64_at(at + READ_POS).store(5, Ordering::SeqCst);
        assert!(matches!(tx.send(b"x"), Err(PipeError::Corrupt(_))));
    }

    #[test]
    fn a_message_over_the_readers_limit_is_refused() {
        let (child, main) = two_mappings();
        child.writer(Way::Up).send(&[0; 100]).unwrap();
        let mut rx = main.reader(Way::Up, 99);
        let err = rx.try_recv().unwrap_err();
        assert!(
            matches!(&err, PipeError::Corrupt(why) if why.contains("100 bytes")),
            "{err:?}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps shared memory")]
    fn a_region_of_the_wrong_size_is_refused() {
        let err = Region::open(sealed::create(4096).unwrap()).unwrap_err();
        assert!(err.contains("4096"), "{err}");
    }

    #[test]
    fn runs_are_split_between_frames_and_only_past_the_limit() {
        assert_eq!(split_point(&[1; 10]), 10);
        let small = frame(MAX_MESSAGE / 2, 1);
        let run: Vec<u8> = [small.clone(), small.clone(), small.clone()].concat();
        assert_eq!(split_point(&run), small.len());
        let big = frame(MAX_MESSAGE + 10, 2);
        assert_eq!(
            split_point(&[big.clone(), small.clone()].concat()),
            big.len()
        );
        // Not frames: sent whole.
        let raw = vec![0xff; MAX_MESSAGE + 10];
        assert_eq!(split_point(&raw), raw.len());
    }

    #[test]
    #[cfg_attr(miri, ignore = "uses an ipc-channel socket")]
    fn mains_socket_closing_closes_the_link() {
        let (region, _) = Region::create().unwrap();
        let (tx, rx) = crate::link::ipc::channel().unwrap();
        let watcher = {
            let region = region.clone();
            thread::spawn(move || watch(&rx, &region))
        };
        drop(tx);
        watcher.join().unwrap();
        assert!(region.is_closed());
    }

    #[test]
    fn a_close_holds_here_whatever_the_other_side_writes_after_it() {
        let (child, main) = two_mappings();
        let mut rx = main.reader(Way::Up, 1 << 20);
        let mut tx = main.writer(Way::Down);
        main.close();
        // The child reopens the link and says nobody sleeps.
        child.u32_at(CLOSED).store(0, Ordering::SeqCst);
        for way in [Way::Up, Way::Down] {
            for word in [WRITER_SLEEPS, READER_SLEEPS] {
                child
                    .u32_at(Pipe::at(way) + word)
                    .store(0, Ordering::SeqCst);
            }
        }
        assert!(main.is_closed());
        assert_eq!(rx.recv(), Err(PipeError::Closed));
        assert_eq!(tx.send(b"x"), Err(PipeError::Closed));
    }

    /// A peer writing the data area while this side copies out of it (or
    /// into it) makes garbage, which the checks refuse, but no data race:
    /// under Miri, a plain copy here is reported as undefined behaviour.
    #[test]
    fn a_peer_writing_the_data_while_it_is_copied_is_no_data_race() {
        let (child, main) = two_mappings();
        let mut tx = main.writer(Way::Up);
        let mut rx = main.reader(Way::Up, 1 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let scribbler = {
            let (child, stop) = (child.clone(), stop.clone());
            thread::spawn(move || {
                let data = Pipe::at(Way::Up) + PIPE_HEADER;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A process outside this program stores whole words.
                    child
                        .u64_at(data + 8 * (i % 64))
                        .store(i as u64 * 0x0101_0101, Ordering::Relaxed);
                    i += 1;
                    thread::yield_now();
                }
            })
        };
        for n in 0..20u8 {
            if tx.send(&[n; 100]).is_err() {
                break;
            }
            match rx.try_recv() {
                Ok(_) => {}
                Err(PipeError::Corrupt(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        scribbler.join().unwrap();
    }

    #[test]
    fn a_receive_with_a_deadline_gives_up_then_gets_what_comes_later() {
        let (region, _) = two_mappings();
        let (mut tx, mut rx) = (region.writer(Way::Up), region.reader(Way::Up, 1 << 20));
        let start = std::time::Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert_eq!(rx.recv_until(Some(deadline)), Ok(None));
        assert!(
            std::time::Instant::now() >= deadline,
            "not before its deadline"
        );
        tx.send(b"late").unwrap();
        let later = Some(std::time::Instant::now() + Duration::from_secs(10));
        assert_eq!(rx.recv_until(later).unwrap().as_deref(), Some(&b"late"[..]));
        region.close();
        assert!(
            rx.recv_until(later).is_err(),
            "a close is an error, not a time-out"
        );
    }

    #[test]
    fn an_empty_message_arrives_as_one() {
        let (child, main) = two_mappings();
        let mut tx = child.writer(Way::Up);
        tx.send(b"").unwrap();
        tx.send(b"after").unwrap();
        let mut rx = main.reader(Way::Up, 1 << 20);
        assert_eq!(rx.recv().unwrap(), b"");
        assert_eq!(rx.recv().unwrap(), b"after");
    }
}
