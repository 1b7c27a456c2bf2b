//! `--ktrace`: KVM's kernel trace events (`kvm:kvm_exit`, `kvm:kvm_page_fault`,
//! `kvmmmu:*`, …) recorded during a run, for merging into the run's trace.
//!
//! [`Ktrace::start`] finds tracefs (mounting it at `/sys/kernel/tracing` if
//! nothing is mounted there), creates a private instance
//! (`instances/swaplab-<pid>`) so the host's own tracing settings are not
//! touched, sets its clock to `mono` (CLOCK_MONOTONIC, the clock of Rust's
//! [`Instant`] on Linux: [`monotonic_ns`] converts), bounds its ring buffer,
//! limits it to this thread and the threads it creates from then on
//! (`set_event_pid` with `event-fork`, so other VMs on the host stay out) and
//! enables the events that exist. A reader thread drains `trace_pipe` while
//! the run goes on, keeping at most [`KtraceConfig::max_events`] events
//! (in whole time windows spread over the run when there are more).
//! [`Ktrace::stop`] returns them; dropping a [`Ktrace`] (also while
//! unwinding from a panic) removes the instance and unmounts tracefs if it
//! mounted it, so the host is left as it was found.
//!
//! Timestamps come from the text format, which has microsecond resolution.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base::Stop;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

/// Where tracefs lives.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where it shows through debugfs on older systems.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The time windows kept whole when there are too many events, ns.
pub const WINDOW_NS: u64 = 10_000_000;

/// The events `--ktrace` asks for (`system:event`, or `system:*`).
pub const DEFAULT_EVENTS: &[&str] = &[
    "kvm:kvm_exit",
    "kvm:kvm_entry",
    "kvm:kvm_page_fault",
    "kvm:kvm_userspace_exit",
    "kvmmmu:*",
    // KVM's async page faults: a vCPU told its page is not present (a
    // kernel worker faults it in meanwhile), then told it is ready.
    "kvm:kvm_async_pf_not_present",
    "kvm:kvm_async_pf_ready",
];

/// The latencies of KVM's async page faults in `c`, ns: from
/// `kvm_async_pf_not_present` to the `kvm_async_pf_ready` of the same token
/// (both on the vCPU's thread; the worker's fault is in between). Under the
/// kernel host swapper they time the swap-ins the vCPUs' own major faults
/// only count. A pair cut by the capture's thinning is left out.
pub fn async_pf_latencies(c: &KtraceCapture) -> Vec<u64> {
    fn token(detail: &str) -> Option<&str> {
        let mut words = detail.split_whitespace();
        words.find(|w| *w == "token")?;
        words.next()
    }
    let mut open: BTreeMap<(i32, &str), u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in &c.events {
        let Some(t) = token(&e.detail) else {
            continue;
        };
        match c.name(e) {
            "kvm_async_pf_not_present" => {
                open.insert((e.tid, t), e.mono_ns);
            }
            "kvm_async_pf_ready" => {
                if let Some(start) = open.remove(&(e.tid, t)) {
                    out.push(e.mono_ns.saturating_sub(start));
                }
            }
            _ => {}
        }
    }
    out
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum KtraceError {
    /// No tracefs could be found or mounted; the run goes on without.
    #[error("kernel tracing unavailable: {0}")]
    Unavailable(String),
    /// None of the requested events exists in this kernel.
    #[error("kernel tracing: none of the events {0} exists in this kernel")]
    NoEvents(String),
    /// A tracefs file could not be used.
    #[error("kernel tracing: {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtraceConfig {
    /// Events as `system:event` or `system:*`; those that do not exist are
    /// skipped (and listed in [`KtraceCapture::missing`]).
    pub events: Vec<String>,
    /// Ring buffer per CPU, KiB (the reader drains it while the run goes on).
    pub buffer_kb: u32,
    /// Events kept in memory. Beyond it, whole [`WINDOW_NS`] windows are
    /// kept evenly spread over the run: every second window, then every
    /// fourth, … (a window keeps its exit/entry pairs together); the rest
    /// are counted in [`KtraceCapture::dropped`].
    pub max_events: usize,
    /// Where tracefs is (or is to be mounted).
    pub tracefs: PathBuf,
    /// Whether to mount tracefs at `tracefs` when it is not mounted.
    pub mount: bool,
    /// A tracefs filter expression set on each single event enabled (not on
    /// `system:*`): only the events it matches are recorded.
    pub filter: Option<String>,
}

impl Default for KtraceConfig {
    fn default() -> Self {
        Self {
            events: DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect(),
            buffer_kb: 8192,
            max_events: 300_000,
            tracefs: PathBuf::from(TRACEFS),
            mount: true,
            filter: None,
        }
    }
}

/// One kernel trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KEvent {
    /// CLOCK_MONOTONIC, ns (microsecond resolution).
    pub mono_ns: u64,
    /// The thread it happened on.
    pub tid: i32,
    /// The CPU.
    pub cpu: u32,
    /// Index into [`KtraceCapture::names`].
    pub name: u16,
    /// The event's own text (`reason EPT_VIOLATION rip 0x…`).
    pub detail: Box<str>,
}

/// What a recording holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KtraceCapture {
    /// Event names (`kvm_exit`), indexed by [`KEvent::name`].
    pub names: Vec<String>,
    /// The events in time order.
    pub events: Vec<KEvent>,
    /// Thread names (`comm`) by tid, as the kernel recorded them.
    pub comms: BTreeMap<i32, String>,
    /// The events enabled (`system:event` or `system:*`).
    pub enabled: Vec<String>,
    /// Requested events this kernel does not have.
    pub missing: Vec<String>,
    /// Events not kept (see [`KtraceConfig::max_events`]).
    pub dropped: u64,
    /// Events are kept from one of every this many [`WINDOW_NS`] windows
    /// (1 until more than [`KtraceConfig::max_events`] arrived).
    pub window_stride: u64,
    /// Events the kernel lost (ring buffer overruns, `[LOST n EVENTS]`).
    pub lost: u64,
    /// Lines that did not parse.
    pub unparsed: u64,
    /// Doubling the stride no longer frees room.
    saturated: bool,
}

impl KtraceCapture {
    /// Index of `name` in [`Self::names`], added if new.
    fn intern(&mut self, name: &str) -> u16 {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i as u16;
        }
        self.names.push(name.to_string());
        (self.names.len() - 1) as u16
    }

    /// The name of `e`.
    pub fn name(&self, e: &KEvent) -> &str {
        self.names
            .get(usize::from(e.name))
            .map_or("?", String::as_str)
    }

    /// Whether an event at `ts_ns` is kept: its window must be one of every
    /// `window_stride`; when storage is full the stride doubles, also for
    /// the events already kept (those removed count as dropped). Events
    /// arrive in time order, so once doubling frees nothing (everything kept
    /// is in one window) the rest are dropped.
    fn make_room(&mut self, ts_ns: u64, max_events: usize) -> bool {
        let kept = |stride: u64, ts: u64| (ts / WINDOW_NS) % stride == 0;
        self.window_stride = self.window_stride.max(1);
        if self.events.len() >= max_events && !self.saturated {
            self.window_stride = self.window_stride.saturating_mul(2);
            let (before, s) = (self.events.len(), self.window_stride);
            self.events.retain(|e| kept(s, e.mono_ns));
            self.dropped += (before - self.events.len()) as u64;
            self.saturated = self.events.len() == before;
        }
        self.events.len() < max_events && kept(self.window_stride, ts_ns)
    }

    /// Keeps `tid`'s thread name. The kernel prints `<...>` for a thread
    /// missing from its small cache of names (which fills lazily, after a
    /// context switch); then the name comes from this process's own task
    /// list while the thread lives (events are limited to this process's
    /// threads), else from a later event that carries it.
    fn note_comm(&mut self, tid: i32, comm: &str) {
        const UNKNOWN: &str = "<...>";
        if self.comms.get(&tid).is_some_and(|c| c != UNKNOWN) {
            return;
        }
        let name = if comm == UNKNOWN {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_else(|_| UNKNOWN.to_string())
        } else {
            comm.to_string()
        };
        self.comms.insert(tid, name);
    }

    /// Adds one line of `trace_pipe` text.
    pub fn add_line(&mut self, line: &str, max_events: usize) {
        match parse_line(line) {
            Some(Line::Event(p)) => {
                if !self.make_room(p.ts_ns, max_events) {
                    self.dropped += 1;
                    return;
                }
                let name = self.intern(p.event);
                self.note_comm(p.tid, p.comm);
                self.events.push(KEvent {
                    mono_ns: p.ts_ns,
                    tid: p.tid,
                    cpu: p.cpu,
                    name,
                    detail: p.detail.into(),
                });
            }
            Some(Line::Lost(n)) => self.lost += n,
            None if line.trim().is_empty() || line.starts_with('#') => {}
            None => self.unparsed += 1,
        }
    }
}

/// A parsed event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedEvent<'a> {
    /// Thread name.
    pub comm: &'a str,
    /// Thread id.
    pub tid: i32,
    /// CPU.
    pub cpu: u32,
    /// Timestamp, ns.
    pub ts_ns: u64,
    /// Event name.
    pub event: &'a str,
    /// The rest of the line.
    pub detail: &'a str,
}

/// One line of `trace_pipe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// An event.
    Event(ParsedEvent<'a>),
    /// `CPU:n [LOST k EVENTS]`.
    Lost(u64),
}

/// `secs.frac` → ns.
fn parse_ts(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.')?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10u64.pow(9 - frac.len() as u32);
    let secs: u64 = secs.parse().ok()?;
    let frac: u64 = frac.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac * scale)
}

/// Parses one line of the text trace format:
/// `  comm-tid  [cpu] flags  secs.usecs: event: detail`, with or without the
/// flags column and a `(tgid)` column.
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(rest) = line.trim_start().strip_prefix("CPU:") {
        let n = rest.split_once("[LOST ")?.1.split_whitespace().next()?;
        return Some(Line::Lost(n.parse().ok()?));
    }
    // The CPU column: the first " [digits]" (a comm may hold brackets, but
    // not this pattern followed by a timestamp).
    let mut search = 0;
    let (head, cpu, after) = loop {
        let i = search + line[search..].find(" [")?;
        let rest = &line[i + 2..];
        let close = rest.find(']')?;
        let digits = &rest[..close];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            break (&line[..i], digits.parse::<u32>().ok()?, &rest[close + 1..]);
        }
        search = i + 2;
    };
    // `comm-tid`, maybe followed by `(tgid)`.
    let mut head = head.trim();
    if head.ends_with(')') {
        head = head[..head.rfind('(')?].trim_end();
    }
    let (comm, tid) = head.rsplit_once('-')?;
    let tid: i32 = tid.trim().parse().ok()?;
    // Tokens after the CPU: [flags] `secs.usecs:` `event:` detail.
    let mut rest = after.trim_start();
    let ts_ns = loop {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = &rest[..end];
        rest = rest[end..].trim_start();
        if let Some(ts) = tok.strip_suffix(':').and_then(parse_ts) {
            break ts;
        }
        if tok.is_empty() {
            return None;
        }
    };
    let end = rest
        .find(": ")
        .map_or_else(|| rest.strip_suffix(':').map(str::len), Some)?;
    let event = &rest[..end];
    if event.is_empty() || event.contains(char::is_whitespace) {
        return None;
    }
    let detail = rest[end + 1..].trim();
    Some(Line::Event(ParsedEvent {
        comm: comm.trim(),
        tid,
        cpu,
        ts_ns,
        event,
        detail,
    }))
}

/// CLOCK_MONOTONIC now, ns.
fn clock_monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC always exists; a zero reading would only skew the offset.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// `t` on CLOCK_MONOTONIC, ns (Rust's [`Instant`] is CLOCK_MONOTONIC on
/// Linux): an `Instant` read between two clock readings, the narrowest of a
/// few tries, gives the offset to within half that bracket.
pub fn monotonic_ns(t: Instant) -> u64 {
    let mut best: Option<(u64, Instant, u64)> = None;
    for _ in 0..8 {
        let (a, now, b) = (clock_monotonic_ns(), Instant::now(), clock_monotonic_ns());
        if best.is_none_or(|(x, _, y)| b - a < y - x) {
            best = Some((a, now, b));
        }
        if b - a < 2_000 {
            break;
        }
    }
    let (a, now, b) = best.unwrap_or_else(|| unreachable!("at least one try"));
    let mono = a + (b - a) / 2;
    match now.checked_duration_since(t) {
        Some(ago) => mono.saturating_sub(ago.as_nanos() as u64),
        None => mono + t.duration_since(now).as_nanos() as u64,
    }
}

/// Whether a filesystem of type `fstype` is mounted at `path`.
pub fn mounted(path: &Path, fstype: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| {
        let mut f = l.split(' ');
        let point = f.nth(4);
        let ty = l.split_once(" - ").and_then(|(_, r)| r.split(' ').next());
        point.is_some_and(|p| p.as_bytes() == want) && ty == Some(fstype)
    })
}

/// tracefs, mounted by us: unmounted when dropped.
struct MountGuard(PathBuf);

impl MountGuard {
    fn mount(path: &Path) -> Result<Self, String> {
        nix::mount::mount(
            Some("nodev"),
            path,
            Some("tracefs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "tracefs is not mounted and mounting it at {} failed: {}",
                path.display(),
                std::io::Error::from(e)
            )
        })?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if umount2(&self.0, MntFlags::empty()).is_err() {
            // Busy (a file still open somewhere): detach it now, it goes when closed.
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KtraceError {
    let path = path.to_path_buf();
    move |source| KtraceError::Io { what, path, source }
}

fn write_file(path: &Path, value: &str) -> Result<(), KtraceError> {
    std::fs::write(path, value).map_err(io_err("writing", path))
}

/// How often the reader drains the kernel's buffer.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Drains `trace_pipe` (non-blocking) into a capture until stopped, then
/// once more to the end.
fn reader(
    mut pipe: std::fs::File,
    stop: Arc<Stop>,
    max_events: usize,
    tracing_on: PathBuf,
) -> KtraceCapture {
    let mut cap = KtraceCapture::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut partial: Vec<u8> = Vec::new();
    let mut stopping = false;
    loop {
        match pipe.read(&mut buf) {
            Ok(n) if n > 0 => {
                partial.extend_from_slice(&buf[..n]);
                let end = partial
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                for line in String::from_utf8_lossy(&partial[..end]).lines() {
                    cap.add_line(line, max_events);
                }
                partial.drain(..end);
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        // Empty for now.
        if stopping {
            break;
        }
        if stop.wait_timeout(DRAIN_EVERY) {
            // Stop recording, then read what is left.
            let _ = std::fs::write(&tracing_on, "0");
            stopping = true;
        }
    }
    if !partial.is_empty() {
        cap.add_line(&String::from_utf8_lossy(&partial), max_events);
    }
    cap
}

/// A recording in progress; see the module docs.
pub struct Ktrace {
    instance: PathBuf,
    enabled: Vec<String>,
    missing: Vec<String>,
    stop: Arc<Stop>,
    reader: Option<JoinHandle<KtraceCapture>>,
    // Dropped after the instance is removed (field order does not matter:
    // `Drop for Ktrace` removes the instance first).
    mount: Option<MountGuard>,
}

/// The tracing root under `cfg`, mounting tracefs when allowed.
fn tracing_root(cfg: &KtraceConfig) -> Result<(PathBuf, Option<MountGuard>), KtraceError> {
    let has_instances = |p: &Path| p.join("instances").is_dir();
    if has_instances(&cfg.tracefs) {
        return Ok((cfg.tracefs.clone(), None));
    }
    if cfg.tracefs == Path::new(TRACEFS) && has_instances(Path::new(DEBUGFS_TRACING)) {
        return Ok((PathBuf::from(DEBUGFS_TRACING), None));
    }
    if !cfg.mount {
        return Err(KtraceError::Unavailable(format!(
            "no tracefs at {}",
            cfg.tracefs.display()
        )));
    }
    if !cfg.tracefs.is_dir() {
        return Err(KtraceError::Unavailable(format!(
            "{} does not exist (kernel without tracefs?)",
            cfg.tracefs.display()
        )));
    }
    let guard = MountGuard::mount(&cfg.tracefs).map_err(KtraceError::Unavailable)?;
    if !has_instances(&cfg.tracefs) {
        return Err(KtraceError::Unavailable(format!(
            "tracefs at {} has no instances directory",
            cfg.tracefs.display()
        )));
    }
    Ok((cfg.tracefs.clone(), Some(guard)))
}

/// The pid in an instance name `swaplab-<pid>` or `swaplab-<pid>-<n>`.
pub fn instance_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("swaplab-")?;
    let pid = rest.split_once('-').map_or(rest, |(p, _)| p);
    pid.parse().ok()
}

/// Removes instances left by swaplab processes that no longer exist (killed
/// while recording, before their cleanup ran).
pub fn remove_stale_instances(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root.join("instances")) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = instance_owner(&name.to_string_lossy()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = e.path();
        let _ = std::fs::write(path.join("tracing_on"), "0");
        let _ = std::fs::write(path.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&path);
    }
}

/// Creates `instances/swaplab-<pid>` (or `-2`, `-3`, … if taken).
fn make_instance(root: &Path) -> Result<PathBuf, KtraceError> {
    remove_stale_instances(root);
    let base = format!("swaplab-{}", std::process::id());
    for n in 1..=64 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = root.join("instances").join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("creating the tracing instance", &dir)(e)),
        }
    }
    Err(KtraceError::Unavailable(format!(
        "no free tracing instance name {base}-N under {}",
        root.join("instances").display()
    )))
}

/// Enables `spec` (`sys:event` or `sys:*`) in `instance`, with `filter` on a
/// single event; false if absent.
fn enable(instance: &Path, spec: &str, filter: Option<&str>) -> Result<bool, KtraceError> {
    let Some((sys, event)) = spec.split_once(':') else {
        return Ok(false);
    };
    let valid = |s: &str| !s.is_empty() && !s.contains(['/', '.']);
    if !valid(sys) || !(event == "*" || valid(event)) {
        return Ok(false);
    }
    let dir = instance.join("events").join(sys);
    let dir = if event == "*" { dir } else { dir.join(event) };
    let file = dir.join("enable");
    if !file.exists() {
        return Ok(false);
    }
    if let Some(filter) = filter.filter(|_| event != "*") {
        write_file(&dir.join("filter"), filter)?;
    }
    write_file(&file, "1")?;
    Ok(true)
}

/// The filter on `kvm:kvm_exit` that keeps only a guest's shutdown: the
/// triple-fault exit (`SVM_EXIT_SHUTDOWN`, 0x7f, on AMD; exit reason 2 on
/// Intel).
pub const SHUTDOWN_FILTER: &str =
    "(isa == 2 && exit_reason == 127) || (isa == 1 && exit_reason == 2)";

/// What KVM's trace saw of a guest's triple fault: on AMD, KVM reinitialises
/// the vCPU on the shutdown exit, so the registers the VMM reads back are
/// the reset state; the `kvm_exit` event was recorded before that, with the
/// guest's RIP. Records only shutdown exits ([`SHUTDOWN_FILTER`]) of this
/// process's threads, so it costs nothing while the guest runs.
pub struct ShutdownWatch(Ktrace);

impl ShutdownWatch {
    /// Starts watching (on the thread that will create the vCPU threads);
    /// `None` when kernel tracing is unavailable (not root, no tracefs, no
    /// `kvm:kvm_exit`): the watch is a diagnosis, never a requirement.
    pub fn start() -> Option<Self> {
        let cfg = KtraceConfig {
            events: vec!["kvm:kvm_exit".into()],
            buffer_kb: 64,
            max_events: 64,
            filter: Some(SHUTDOWN_FILTER.into()),
            ..KtraceConfig::default()
        };
        Ktrace::start(&cfg).ok().map(Self)
    }

    /// Stops watching; the shutdown exits seen, as KVM printed them (`vcpu 0
    /// reason shutdown rip 0xffffffff81000000 info1 …`).
    pub fn finish(self) -> Vec<String> {
        let cap = self.0.stop();
        cap.events
            .iter()
            .map(|e| {
                e.detail
                    .split(" info1 ")
                    .next()
                    .unwrap_or(&e.detail)
                    .to_string()
            })
            .collect()
    }
}

/// This thread's id.
fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

impl Ktrace {
    /// Starts recording on this thread and the threads (and processes) it
    /// creates from now on.
    pub fn start(cfg: &KtraceConfig) -> Result<Self, KtraceError> {
        let (root, mount) = tracing_root(cfg)?;
        let instance = make_instance(&root)?;
        let mut k = Self {
            instance,
            enabled: Vec::new(),
            missing: Vec::new(),
            stop: Arc::default(),
            reader: None,
            mount,
        };
        // On any error below, dropping `k` removes the instance (and mount).
        let dir = k.instance.clone();
        let f = |name: &str| dir.join(name);
        write_file(&f("tracing_on"), "0")?;
        write_file(&f("trace_clock"), "mono")?;
        write_file(&f("buffer_size_kb"), &cfg.buffer_kb.max(64).to_string())?;
        write_file(
            &f("set_event_pid"),
            &format!("{} {}", std::process::id(), gettid()),
        )?;
        write_file(&f("options/event-fork"), "1")?;
        for spec in &cfg.events {
            if enable(&k.instance, spec, cfg.filter.as_deref())? {
                k.enabled.push(spec.clone());
            } else {
                k.missing.push(spec.clone());
            }
        }
        if k.enabled.is_empty() {
            return Err(KtraceError::NoEvents(cfg.events.join(", ")));
        }
        let pipe_path = f("trace_pipe");
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&pipe_path)
            .map_err(io_err("opening", &pipe_path))?;
        write_file(&f("tracing_on"), "1")?;
        let (stop, max, on) = (k.stop.clone(), cfg.max_events, f("tracing_on"));
        k.reader = Some(
            std::thread::Builder::new()
                .name("swaplab-ktrace".into())
                .spawn(move || reader(pipe, stop, max, on))
                .map_err(io_err("starting the reader thread for", &pipe_path))?,
        );
        Ok(k)
    }

    /// The tracing instance directory.
    pub fn instance(&self) -> &Path {
        &self.instance
    }

    /// Stops recording and returns the events; removes the instance and
    /// unmounts tracefs if [`Ktrace::start`] mounted it.
    pub fn stop(mut self) -> KtraceCapture {
        let mut cap = self.finish_reader();
        cap.lost += self.overruns();
        cap.enabled = std::mem::take(&mut self.enabled);
        cap.missing = std::mem::take(&mut self.missing);
        cap
        // `self` drops here: instance removed, tracefs unmounted.
    }

    fn finish_reader(&mut self) -> KtraceCapture {
        self.stop.stop();
        self.reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Events the kernel overwrote before the reader got to them.
    fn overruns(&self) -> u64 {
        let Ok(cpus) = std::fs::read_dir(self.instance.join("per_cpu")) else {
            return 0;
        };
        cpus.flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("stats")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.strip_prefix("overrun:"))
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl Drop for Ktrace {
    fn drop(&mut self) {
        drop(self.finish_reader());
        let _ = std::fs::write(self.instance.join("tracing_on"), "0");
        let _ = std::fs::write(self.instance.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&self.instance);
        // Then `mount` drops: tracefs unmounted if we mounted it.
        drop(self.mount.take());
    }
}

#[cfg(test)]
mod tests;
