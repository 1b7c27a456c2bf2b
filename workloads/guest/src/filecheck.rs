//! `swaplab-guest filecheck`: write a file of known per-page patterns, then read
//! it back and rewrite parts of it, round after round, through the page cache and
//! with `O_DIRECT`, verifying every byte each time.
//!
//! This is the guest half of the host's check of dropping guest page-cache pages
//! that mirror disk blocks and re-reading them from the disk image later: a page
//! served from a disk block that changed after the page was read comes back with an
//! older generation (or another page's contents, or zeros) and is caught.
//!
//! Every 4 KiB page of the file starts with a 16-byte header (page index as a
//! little-endian u64, generation as a little-endian u32, the magic `SLfc`) followed by
//! the pseudo-random stream of `(seed, page, generation)` ([`PageStream`], as
//! `integrity` uses), so a bad page is reported with what its header claims it is.
//!
//! The file is written with generation 0, `fsync`ed and dropped from the page cache
//! (`posix_fadvise(DONTNEED)`, and `1` into `/proc/sys/vm/drop_caches` when that is
//! writable). Round `r` then (a) verifies every page with buffered reads (which fill
//! the page cache from the disk), (b) rewrites a random fraction (`--rewrite`) of the
//! pages with generation `r`, a share of them (`--direct-share`) with `O_DIRECT`
//! writes and the rest with buffered ones, and `fsync`s, (c) verifies every page
//! again, with `O_DIRECT` reads in odd rounds and buffered reads in even ones, and
//! (d) in even rounds drops the file from the page cache again, so the next round's
//! buffered reads come from the disk. `--direct-share 0` uses no `O_DIRECT` at all
//! (for filesystems that refuse it; otherwise refusing it is an error).
//!
//! A bad page is reported (index, offset of its first wrong byte, expected
//! generation, what it holds) and rewritten, so each error is reported once.
//! `--rounds 0` runs until `SIGTERM`/`SIGINT`, which ends the run (after the first
//! round) with its summary. The file is left in place. Exit status 1 if any page was
//! ever wrong.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::args::Flags;
use super::clock::Rate;
use super::error::GuestError;
use super::integrity::{PageStream, MAX_BAD_REPORTED};
use super::json::{emit, line, Value};
use super::output;
use super::rng::SplitMix64;
use super::touch::PAGE;

/// Where `1` is written to drop the kernel's clean page cache.
pub const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";
/// Bytes of the header at the start of each page.
pub const HEADER: usize = 16;
const MAGIC: [u8; 4] = *b"SLfc";
/// Alignment of `O_DIRECT` buffers (covers 512-byte and 4 KiB logical blocks).
const ALIGN: usize = 4096;
/// Pages read (and checked for a stop request) at a time.
const CHUNK_PAGES: usize = 64;
/// Pages considered for rewriting between looks at the stop flag.
const STOP_CHECK_PAGES: usize = 256;
/// Largest file, MiB.
pub const MAX_MB: u64 = 4096;
/// Most rounds (0: until stopped).
pub const MAX_ROUNDS: u64 = 1_000_000;

/// Arguments of `filecheck`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheckArgs {
    /// The file to create (truncated if it exists).
    pub path: String,
    /// Its size in MiB.
    pub mb: u64,
    /// Rounds (0: until stopped).
    pub rounds: u64,
    /// Fraction of pages rewritten each round.
    pub rewrite: f64,
    /// Share of the rewrites done with `O_DIRECT` (0: no `O_DIRECT` at all).
    pub direct_share: f64,
    /// Seed of the patterns and of the choice of pages.
    pub seed: u64,
}

impl FileCheckArgs {
    /// Parse `--path FILE --mb N [--rounds R] [--rewrite F] [--direct-share D] [--seed X]`.
    pub fn parse(args: &[String]) -> Result<Self, GuestError> {
        let f = Flags::parse(
            "filecheck",
            args,
            &[
                "--path",
                "--mb",
                "--rounds",
                "--rewrite",
                "--direct-share",
                "--seed",
            ],
        )?;
        let path = match f.get("--path") {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => return Err(GuestError::Usage("filecheck needs --path FILE".into())),
        };
        Ok(Self {
            path,
            mb: f
                .u64_in("--mb", 1, MAX_MB)?
                .ok_or_else(|| GuestError::Usage("filecheck needs --mb N".into()))?,
            rounds: f.u64_in("--rounds", 0, MAX_ROUNDS)?.unwrap_or(4),
            rewrite: f.f64_in("--rewrite", 0.0, 1.0)?.unwrap_or(0.25),
            direct_share: f.f64_in("--direct-share", 0.0, 1.0)?.unwrap_or(0.5),
            seed: f.u64_in("--seed", 0, u64::MAX)?.unwrap_or(1),
        })
    }
}

/// Fill `page` (one page) with the header and stream of `(seed, index, generation)`.
pub fn fill_page(page: &mut [u8], seed: u64, index: u64, generation: u32) {
    page[..HEADER].copy_from_slice(&header(index, generation));
    let mut s = PageStream::new(seed, index, u64::from(generation));
    for w in page[HEADER..].chunks_exact_mut(8) {
        w.copy_from_slice(&s.next_word().to_le_bytes());
    }
}

fn header(index: u64, generation: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&index.to_le_bytes());
    h[8..12].copy_from_slice(&generation.to_le_bytes());
    h[12..].copy_from_slice(&MAGIC);
    h
}

/// The offset of the first byte of `page` that differs from what [`fill_page`] writes
/// for `(seed, index, generation)`, or `None` if it all matches.
pub fn first_wrong_byte(page: &[u8], seed: u64, index: u64, generation: u32) -> Option<usize> {
    let h = header(index, generation);
    if let Some(i) = page[..HEADER].iter().zip(&h).position(|(a, b)| a != b) {
        return Some(i);
    }
    let mut s = PageStream::new(seed, index, u64::from(generation));
    for (i, w) in page[HEADER..].chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let diff = u64::from_le_bytes(b) ^ s.next_word();
        if diff != 0 {
            return Some(HEADER + i * 8 + (diff.trailing_zeros() / 8) as usize);
        }
    }
    None
}

/// What a page holds, going by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A header of this program: page `index`, generation `generation` (the rest of
    /// the page may still be wrong).
    Page {
        /// The page index it claims.
        index: u64,
        /// The generation it claims.
        generation: u32,
    },
    /// Nothing but zero bytes.
    Zeros,
    /// Something else.
    Unknown,
}

impl Found {
    /// What `page` holds.
    pub fn of(page: &[u8]) -> Self {
        if page.iter().all(|&b| b == 0) {
            return Self::Zeros;
        }
        if page.len() < HEADER || page[12..HEADER] != MAGIC {
            return Self::Unknown;
        }
        let mut index = [0u8; 8];
        index.copy_from_slice(&page[..8]);
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&page[8..12]);
        Self::Page {
            index: u64::from_le_bytes(index),
            generation: u32::from_le_bytes(generation),
        }
    }
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Page { index, generation } => write!(f, "page {index} gen {generation}"),
            Self::Zeros => f.write_str("zeros"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// A zeroed buffer whose start is `ALIGN`-aligned, as `O_DIRECT` needs (over-allocated
/// and sliced: no `unsafe`, and the `Vec` is never resized, so it never moves).
#[derive(Debug)]
struct AlignedBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let v = vec![0u8; len + ALIGN];
        let off = (ALIGN - v.as_ptr() as usize % ALIGN) % ALIGN;
        Self { v, off, len }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// Where a test hook runs in a round (see [`run_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before the round's first (buffered) verification.
    BeforeRound,
    /// After the round's rewrites (and their `fsync`), before its second verification.
    AfterRewrite,
}

/// One verification pass of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// (a): buffered, before the rewrites.
    Pre,
    /// (c): buffered, after them.
    PostBuffered,
    /// (c): `O_DIRECT`, after them.
    PostDirect,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Self::Pre => "pre_buffered",
            Self::PostBuffered => "post_buffered",
            Self::PostDirect => "post_direct",
        }
    }

    fn read(self) -> &'static str {
        match self {
            Self::PostDirect => "direct",
            Self::Pre | Self::PostBuffered => "buffered",
        }
    }
}

/// The first [`MAX_BAD_REPORTED`] bad pages of a round or a run.
#[derive(Debug, Default)]
struct BadList {
    indices: Vec<u64>,
    offsets: Vec<u64>,
    expected: Vec<u64>,
    found: Vec<String>,
    reads: Vec<String>,
}

impl BadList {
    fn push(&mut self, index: usize, offset: usize, expected: u32, found: Found, pass: Pass) {
        if self.indices.len() < MAX_BAD_REPORTED {
            self.indices.push(index as u64);
            self.offsets.push(offset as u64);
            self.expected.push(u64::from(expected));
            self.found.push(found.to_string());
            self.reads.push(pass.name().to_string());
        }
    }
}

/// Totals since the start.
#[derive(Debug, Default)]
struct Totals {
    verified: u64,
    rewritten_buffered: u64,
    rewritten_direct: u64,
    bad: u64,
    first: BadList,
}

/// One round's numbers.
#[derive(Debug)]
struct RoundStats {
    post: Pass,
    bad: u64,
    reported: BadList,
    rewritten_buffered: u64,
    rewritten_direct: u64,
    pre_ns: u64,
    rewrite_ns: u64,
    post_ns: u64,
    fadvised: bool,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> GuestError {
    GuestError::io(format!("filecheck: {what}"))
}

/// An error of `O_DIRECT` I/O: `EINVAL` says the filesystem (or the alignment) is
/// refused, so the message says how to do without.
fn direct_err(what: String) -> impl FnOnce(std::io::Error) -> GuestError {
    move |error| {
        let hint = if error.raw_os_error() == Some(libc::EINVAL) {
            " (O_DIRECT refused: the filesystem may not support it; --direct-share 0 uses none)"
        } else {
            ""
        };
        GuestError::Io {
            what: format!("filecheck: {what}{hint}"),
            error,
        }
    }
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` on all of `file`: drop its clean cached pages.
fn fadvise_dontneed(file: &File, path: &str) -> Result<(), GuestError> {
    // SAFETY: the descriptor is open for as long as `file` lives; posix_fadvise only
    // advises the kernel about the file's page cache and touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(GuestError::Io {
            what: format!("filecheck: posix_fadvise(DONTNEED) on {path}"),
            error: std::io::Error::from_raw_os_error(rc),
        });
    }
    Ok(())
}

/// Write `1` to `path` (the kernel's `drop_caches`); whether that worked.
fn drop_caches(path: &Path) -> bool {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"1"))
        .is_ok()
}

/// The file, its `O_DIRECT` twin, the generation of every page, and the totals.
struct Checker<'a> {
    args: &'a FileCheckArgs,
    file: File,
    direct: Option<File>,
    generations: Vec<u32>,
    buf: AlignedBuf,
    totals: Totals,
}

impl<'a> Checker<'a> {
    /// Step 1: create the file, fill it with generation 0, `fsync` it and drop it from
    /// the page cache (and the whole clean page cache through `drop_caches`, if
    /// given and writable). Returns the checker, the fill time and whether
    /// `drop_caches` worked.
    fn create(
        args: &'a FileCheckArgs,
        drop_caches_path: Option<&Path>,
    ) -> Result<(Self, u64, bool), GuestError> {
        let path = &args.path;
        let bytes = args.mb << 20;
        let pages = usize::try_from(bytes)
            .map_err(|_| GuestError::Usage("filecheck: --mb too large".into()))?
            / PAGE;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err(format!("creating {path}")))?;
        file.set_len(bytes)
            .map_err(io_err(format!("setting the size of {path}")))?;
        let mut c = Self {
            args,
            file,
            direct: None,
            generations: vec![0; pages],
            buf: AlignedBuf::new(CHUNK_PAGES * PAGE),
            totals: Totals::default(),
        };
        if args.direct_share > 0.0 {
            // Before the fill, so a filesystem that refuses O_DIRECT fails at once.
            let direct = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(direct_err(format!("opening {path} with O_DIRECT")))?;
            direct
                .read_exact_at(&mut c.buf.as_mut_slice()[..PAGE], 0)
                .map_err(direct_err(format!("O_DIRECT read of page 0 of {path}")))?;
            c.direct = Some(direct);
        }
        let fill = Rate::start();
        for start in (0..pages).step_by(CHUNK_PAGES) {
            let n = CHUNK_PAGES.min(pages - start);
            let chunk = &mut c.buf.as_mut_slice()[..n * PAGE];
            for (k, page) in chunk.chunks_exact_mut(PAGE).enumerate() {
                fill_page(page, args.seed, (start + k) as u64, 0);
            }
            c.file
                .write_all_at(chunk, (start * PAGE) as u64)
                .map_err(io_err(format!(
                    "writing pages {start}..{} of {path}",
                    start + n
                )))?;
        }
        c.sync()?;
        let (fill_ns, _) = fill.stop();
        fadvise_dontneed(&c.file, path)?;
        let dropped = drop_caches_path.is_some_and(drop_caches);
        Ok((c, fill_ns, dropped))
    }

    fn sync(&self) -> Result<(), GuestError> {
        let path = &self.args.path;
        self.file
            .sync_all()
            .map_err(io_err(format!("fsync of {path}")))
    }

    /// Verify every page (reading with `pass`'s kind of read), reporting and
    /// rewriting (with `round`'s generation) the bad ones. True if stopped early.
    fn verify(
        &mut self,
        round: u64,
        pass: Pass,
        may_stop: bool,
        st: &mut RoundStats,
    ) -> Result<bool, GuestError> {
        // Generations wrap after 2^32 rounds: still a consistent pattern.
        let generation = round as u32;
        let (seed, path) = (self.args.seed, &self.args.path);
        let pages = self.generations.len();
        let reader = match (pass, &self.direct) {
            (Pass::PostDirect, Some(d)) => d,
            _ => &self.file,
        };
        let mut repaired = 0u64;
        let mut stopped = false;
        for start in (0..pages).step_by(CHUNK_PAGES) {
            if may_stop && output::stop_requested() {
                stopped = true;
                break;
            }
            let n = CHUNK_PAGES.min(pages - start);
            let chunk = &mut self.buf.as_mut_slice()[..n * PAGE];
            let off = (start * PAGE) as u64;
            let what = format!(
                "{} read of pages {start}..{} of {path}",
                if pass == Pass::PostDirect {
                    "O_DIRECT"
                } else {
                    "buffered"
                },
                start + n
            );
            if pass == Pass::PostDirect {
                reader.read_exact_at(chunk, off).map_err(direct_err(what))?;
            } else {
                reader.read_exact_at(chunk, off).map_err(io_err(what))?;
            }
            for (k, page) in chunk.chunks_exact_mut(PAGE).enumerate() {
                let i = start + k;
                let expected = self.generations[i];
                let Some(wrong) = first_wrong_byte(page, seed, i as u64, expected) else {
                    continue;
                };
                let found = Found::of(page);
                st.bad += 1;
                st.reported.push(i, wrong, expected, found, pass);
                self.totals.bad += 1;
                self.totals.first.push(i, wrong, expected, found, pass);
                fill_page(page, seed, i as u64, generation);
                self.file
                    .write_all_at(page, (i * PAGE) as u64)
                    .map_err(io_err(format!("rewriting bad page {i} of {path}")))?;
                self.generations[i] = generation;
                repaired += 1;
            }
            self.totals.verified += n as u64;
        }
        if repaired > 0 {
            self.sync()?;
        }
        Ok(stopped)
    }

    /// Rewrite a random `--rewrite` fraction of the pages (but those already of this
    /// round) with `round`'s generation, a `--direct-share` of them with `O_DIRECT`,
    /// then `fsync`. True if stopped early.
    fn rewrite(
        &mut self,
        round: u64,
        may_stop: bool,
        st: &mut RoundStats,
    ) -> Result<bool, GuestError> {
        let generation = round as u32;
        let (seed, path) = (self.args.seed, &self.args.path);
        let mut rng =
            SplitMix64::new(seed.rotate_left(17) ^ round.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let page = &mut self.buf.as_mut_slice()[..PAGE];
        let mut stopped = false;
        for i in 0..self.generations.len() {
            if may_stop && i % STOP_CHECK_PAGES == 0 && output::stop_requested() {
                stopped = true;
                break;
            }
            // Both draws every page, so the choice of pages does not depend on D.
            let pick = rng.unit_f64() < self.args.rewrite;
            let direct = rng.unit_f64() < self.args.direct_share;
            if !pick || self.generations[i] == generation {
                continue;
            }
            fill_page(page, seed, i as u64, generation);
            let off = (i * PAGE) as u64;
            match (direct, &self.direct) {
                (true, Some(d)) => {
                    d.write_all_at(page, off)
                        .map_err(direct_err(format!("O_DIRECT write of page {i} of {path}")))?;
                    st.rewritten_direct += 1;
                    self.totals.rewritten_direct += 1;
                }
                _ => {
                    self.file
                        .write_all_at(page, off)
                        .map_err(io_err(format!("buffered write of page {i} of {path}")))?;
                    st.rewritten_buffered += 1;
                    self.totals.rewritten_buffered += 1;
                }
            }
            self.generations[i] = generation;
        }
        self.sync()?;
        Ok(stopped)
    }

    /// Round `round` (from 1): steps (a) to (d), calling `hook` at each [`Step`].
    /// The stats, and whether a stop request ended it early (never in round 1).
    fn round(
        &mut self,
        round: u64,
        hook: &mut dyn FnMut(u64, Step),
    ) -> Result<(RoundStats, bool), GuestError> {
        let may_stop = round > 1;
        let post = if self.direct.is_some() && round % 2 == 1 {
            Pass::PostDirect
        } else {
            Pass::PostBuffered
        };
        let mut st = RoundStats {
            post,
            bad: 0,
            reported: BadList::default(),
            rewritten_buffered: 0,
            rewritten_direct: 0,
            pre_ns: 0,
            rewrite_ns: 0,
            post_ns: 0,
            fadvised: false,
        };
        hook(round, Step::BeforeRound);
        let t = Rate::start();
        let stopped = self.verify(round, Pass::Pre, may_stop, &mut st)?;
        st.pre_ns = t.stop().0;
        if stopped {
            return Ok((st, true));
        }
        let t = Rate::start();
        let stopped = self.rewrite(round, may_stop, &mut st)?;
        st.rewrite_ns = t.stop().0;
        if stopped {
            return Ok((st, true));
        }
        hook(round, Step::AfterRewrite);
        let t = Rate::start();
        let stopped = self.verify(round, post, may_stop, &mut st)?;
        st.post_ns = t.stop().0;
        if stopped {
            return Ok((st, true));
        }
        if round % 2 == 0 {
            fadvise_dontneed(&self.file, &self.args.path)?;
            st.fadvised = true;
        }
        Ok((st, false))
    }
}

fn emit_round(
    out: &mut dyn Write,
    round: u64,
    st: &RoundStats,
    c: &Checker<'_>,
) -> Result<(), GuestError> {
    let (t, b) = (&c.totals, &st.reported);
    emit(
        out,
        &line(
            "filecheck_round",
            &[
                ("round", Value::U(round)),
                ("pages", Value::U(c.generations.len() as u64)),
                ("round_bad", Value::U(st.bad)),
                ("bad_indices", Value::A(&b.indices)),
                ("bad_offsets", Value::A(&b.offsets)),
                ("bad_expected_gens", Value::A(&b.expected)),
                ("bad_found", Value::L(&b.found)),
                ("bad_reads", Value::L(&b.reads)),
                ("rewritten_buffered", Value::U(st.rewritten_buffered)),
                ("rewritten_direct", Value::U(st.rewritten_direct)),
                ("post_read", Value::S(st.post.read())),
                ("fadvise_dontneed", Value::B(st.fadvised)),
                ("pre_ns", Value::U(st.pre_ns)),
                ("rewrite_ns", Value::U(st.rewrite_ns)),
                ("post_ns", Value::U(st.post_ns)),
                ("pages_verified", Value::U(t.verified)),
                ("pages_rewritten_buffered", Value::U(t.rewritten_buffered)),
                ("pages_rewritten_direct", Value::U(t.rewritten_direct)),
                ("bad_pages", Value::U(t.bad)),
                ("integrity_errors", Value::U(t.bad)),
            ],
        ),
    )
}

/// Create, verify, rewrite and report: a start line, one line per round, a summary.
pub fn run(args: &FileCheckArgs, out: &mut dyn Write) -> Result<(), GuestError> {
    run_with(args, out, Some(Path::new(DROP_CACHES)), &mut |_, _| {})
}

/// [`run`], writing `1` to `drop_caches_path` (if any) instead of [`DROP_CACHES`], and
/// calling `hook(round, step)` at each [`Step`] of each round (a test hook: it may
/// change the file behind the program's back to check that the round notices).
pub fn run_with(
    args: &FileCheckArgs,
    out: &mut dyn Write,
    drop_caches_path: Option<&Path>,
    hook: &mut dyn FnMut(u64, Step),
) -> Result<(), GuestError> {
    let total = Rate::start();
    let (mut c, fill_ns, dropped) = Checker::create(args, drop_caches_path)?;
    let pages = c.generations.len() as u64;
    emit(
        out,
        &line(
            "filecheck_start",
            &[
                ("path", Value::S(&args.path)),
                ("mb", Value::U(args.mb)),
                ("pages", Value::U(pages)),
                ("rounds", Value::U(args.rounds)),
                ("rewrite", Value::F(args.rewrite)),
                ("direct_share", Value::F(args.direct_share)),
                ("seed", Value::U(args.seed)),
                ("direct", Value::B(c.direct.is_some())),
                ("fill_ns", Value::U(fill_ns)),
                ("drop_caches", Value::B(dropped)),
            ],
        ),
    )?;
    let mut rounds = 0u64;
    let mut stopped = false;
    while args.rounds == 0 || rounds < args.rounds {
        // The first round always runs whole (as in `integrity`).
        if rounds > 0 && output::stop_requested() {
            stopped = true;
            break;
        }
        let (st, early) = c.round(rounds + 1, hook)?;
        if early {
            // A partial round gets no line; its counts are in the totals.
            stopped = true;
            break;
        }
        rounds += 1;
        emit_round(out, rounds, &st, &c)?;
    }
    let (total_ns, _) = total.stop();
    let (t, f) = (&c.totals, &c.totals.first);
    emit(
        out,
        &line(
            "filecheck_done",
            &[
                ("path", Value::S(&args.path)),
                ("mb", Value::U(args.mb)),
                ("pages", Value::U(pages)),
                ("rounds", Value::U(rounds)),
                ("pages_verified", Value::U(t.verified)),
                ("pages_rewritten_buffered", Value::U(t.rewritten_buffered)),
                ("pages_rewritten_direct", Value::U(t.rewritten_direct)),
                ("bad_pages", Value::U(t.bad)),
                ("integrity_errors", Value::U(t.bad)),
                ("first_bad_indices", Value::A(&f.indices)),
                ("first_bad_offsets", Value::A(&f.offsets)),
                ("first_bad_expected_gens", Value::A(&f.expected)),
                ("first_bad_found", Value::L(&f.found)),
                ("first_bad_reads", Value::L(&f.reads)),
                ("direct", Value::B(c.direct.is_some())),
                ("drop_caches", Value::B(dropped)),
                ("total_ns", Value::U(total_ns)),
                ("stopped", Value::B(stopped)),
            ],
        ),
    )?;
    if t.bad != 0 {
        return Err(GuestError::Integrity(format!(
            "file {}: {} of {} page reads found wrong contents (first bad pages {:?}, first wrong bytes at {:?}, found {:?})",
            args.path, t.bad, t.verified, f.indices, f.offsets, f.found
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
