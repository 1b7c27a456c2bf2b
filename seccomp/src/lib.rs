//! Seccomp filters for the VMM's threads, one allow-list per thread class.
//!
//! Every long-lived thread the VMM, the host swapper, the balloon and the
//! sandbox relay spawn calls [`apply`] with its [`ThreadClass`] as the first
//! thing it does. From then on a syscall outside the class's allow-list does not
//! run: the kernel sends `SIGSYS` (`SECCOMP_RET_TRAP`), and the handler
//! installed here writes one line naming the thread and the syscall to stderr and
//! ends the process with [`EXIT_STATUS`] (128 + `SIGSYS`).
//!
//! Filters are on unless [`set_enabled`]`(false)` was called first (the
//! `--no-seccomp` flag of every `swaplab` command that runs a VMM). They are
//! built with rust-vmm's `seccompiler` at thread start (a few hundred
//! instructions, microseconds) and installed for the calling thread only; a
//! thread spawned by a filtered thread inherits its filter, so the vCPU class
//! allows what the device threads it starts (virtio-blk, balloon) need.
//!
//! Rules are by syscall number only, with no argument checks: the kernel's
//! seccomp action cache (Linux 5.11+) then allows every listed syscall
//! without running the filter, so the hot calls (`ioctl` for `KVM_RUN` and
//! `UFFDIO_COPY`, `futex`, `read` on the userfaultfd) cost nothing extra.
//!
//! The lists are generous on purpose: memory, futexes, time, reading and
//! writing already open descriptors, what a Rust panic needs to print a message
//! and a backtrace. What they leave out is what no VMM thread needs once
//! running: starting programs (`execve`, `fork`), other processes (`ptrace`,
//! `kill`, `process_vm_*`), mounts, namespaces, module loading, new sockets
//! outside the control socket and the relay, and the like.
//!
//! For tests, `SWAPLAB_SECCOMP_PROBE=<class>` (a [`ThreadClass::name`]) makes
//! every thread of that class call `getpgid(2)`, which no class allows, right
//! after its filter is installed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

mod syscalls;

/// The process's exit status after a forbidden syscall: 128 + `SIGSYS`.
pub const EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// The environment variable naming the thread class that makes one forbidden
/// syscall after its filter is installed (a test hook).
pub const PROBE_ENV: &str = "SWAPLAB_SECCOMP_PROBE";

/// The syscall the probe hook makes: allowed to no class.
pub const PROBE_SYSCALL: i64 = libc::SYS_getpgid;

/// A kind of VMM thread, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadClass {
    /// A vCPU thread (`vcpuN`): `KVM_RUN`, port and MMIO exits, device
    /// activation (which spawns the device threads below).
    Vcpu,
    /// The virtio-blk worker (`vmm-blk`): requests against the disk image.
    BlkWorker,
    /// The virtio-balloon worker (`balloon`): queues, page release, statistics.
    Balloon,
    /// The control socket server (`api-server`).
    ControlSocket,
    /// A userfaultfd fault handler of the host swapper (`swapper-fault-N`).
    SwapperHandler,
    /// The host swapper's evictor (`swapper-evict`).
    SwapperEvictor,
    /// A fault handler or the evictor of a host swapper whose store is
    /// remote (Redis): the same, plus sockets to reach the store.
    SwapperRemote,
    /// The sandbox's socket relay (`swaplab-forward`, `swaplab-bridge-connect`).
    SandboxRelay,
}

impl ThreadClass {
    /// Every class.
    pub const ALL: [ThreadClass; 8] = [
        ThreadClass::Vcpu,
        ThreadClass::BlkWorker,
        ThreadClass::Balloon,
        ThreadClass::ControlSocket,
        ThreadClass::SwapperHandler,
        ThreadClass::SwapperEvictor,
        ThreadClass::SwapperRemote,
        ThreadClass::SandboxRelay,
    ];

    /// The class's name (what [`PROBE_ENV`] takes).
    pub fn name(self) -> &'static str {
        match self {
            ThreadClass::Vcpu => "vcpu",
            ThreadClass::BlkWorker => "blk",
            ThreadClass::Balloon => "balloon",
            ThreadClass::ControlSocket => "api",
            ThreadClass::SwapperHandler => "swapper-fault",
            ThreadClass::SwapperEvictor => "swapper-evict",
            ThreadClass::SwapperRemote => "swapper-remote",
            ThreadClass::SandboxRelay => "relay",
        }
    }

    /// The class named `name`, if any.
    pub fn from_name(name: &str) -> Option<ThreadClass> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The syscalls this class may make (numbers, sorted, no duplicates).
    pub fn allowed(self) -> Vec<i64> {
        let mut v: Vec<i64> = BASE.to_vec();
        let extra: &[&[i64]] = match self {
            // Device activation runs on a vCPU and spawns the blk and balloon
            // workers, which inherit this filter: it holds what they need too.
            ThreadClass::Vcpu => &[IOCTL, SPAWN, EVENTS_CREATE, STORE, PROC],
            // With the false-read mitigation a whole page a disk read fills
            // goes to the swapper, which installs it (`UFFDIO_COPY`).
            ThreadClass::BlkWorker => &[IOCTL, STORE],
            ThreadClass::Balloon => &[IOCTL, STORE, TIMERS],
            ThreadClass::ControlSocket => &[IOCTL, SOCKET_IO, STORE, PROC],
            ThreadClass::SwapperHandler | ThreadClass::SwapperEvictor => &[IOCTL, STORE],
            // A remote store connects (and reconnects) on the thread that
            // needs it.
            ThreadClass::SwapperRemote => &[IOCTL, STORE, SOCKET_IO, SOCKET_NEW, RESOLVE],
            ThreadClass::SandboxRelay => &[IOCTL, SPAWN, EVENTS_CREATE, SOCKET_IO, SOCKET_NEW],
        };
        for e in extra {
            v.extend_from_slice(e);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl fmt::Display for ThreadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What every class may do: memory, futexes and scheduling, time, signals,
/// reading and writing open descriptors, waiting on them, and what a Rust
/// panic needs to print its message and a backtrace (the executable is
/// opened, stat'ed and mapped to read its debug information).
const BASE: &[i64] = &[
    // memory
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_mprotect,
    libc::SYS_mincore,
    // synchronisation, scheduling, thread end
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_getrandom,
    libc::SYS_getcpu,
    // the kernel-swap baseline's vCPU reads the process's major faults
    libc::SYS_getrusage,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // time
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    // identity and signals (a vCPU kick, abort, the alternate stack)
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // a sleep or a poll with a timeout that a signal without a handler
    // interrupted goes on through restart_syscall (the api fuzz target found
    // it: the control socket's poll)
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    // descriptors already open
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    // files by name and their metadata (a panic's backtrace, /proc)
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_getcwd,
];

/// `ioctl(2)`: `KVM_*` on a vCPU, `UFFDIO_*` in the swapper, in page release
/// and in the blk worker's page install, `FIONBIO` on sockets.
const IOCTL: &[i64] = &[libc::SYS_ioctl];

/// Spawning a thread, which then names itself and installs its own filter.
const SPAWN: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_seccomp,
];

/// Creating event and timer descriptors (device activation).
const EVENTS_CREATE: &[i64] = &[
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_pipe2,
];

/// Store and disk-image upkeep: flushing, punching holes, sizing.
const STORE: &[i64] = &[
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
];

/// Arming the balloon's statistics timer.
const TIMERS: &[i64] = &[libc::SYS_timerfd_settime, libc::SYS_timerfd_gettime];

/// Reading directories (`/proc/self/task` for a thread dump).
const PROC: &[i64] = &[libc::SYS_getdents64];

/// Serving connected sockets.
const SOCKET_IO: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];

/// Opening sockets (the relay connects and listens).
const SOCKET_NEW: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
];

/// Resolving a host name (glibc's resolver asks `uname` for this host's name):
/// a remote store reconnecting to `redis://NAME:PORT`.
const RESOLVE: &[i64] = &[libc::SYS_uname];

/// Why a filter could not be built or installed.
#[derive(Debug)]
pub struct Error {
    class: ThreadClass,
    source: seccompiler::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot install the seccomp filter of the {} thread class: {}",
            self.class, self.source
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns filters on or off for threads started from now on (on by default).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether threads started now get a filter.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// The BPF program of `class`: its allow-list, `SIGSYS` for anything else.
pub fn program(class: ThreadClass) -> Result<BpfProgram, Error> {
    let err = |source| Error { class, source };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = class
        .allowed()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| err(seccompiler::Error::Backend(e)))?;
    BpfProgram::try_from(filter).map_err(|e| err(seccompiler::Error::Backend(e)))
}

/// Installs `class`'s filter on the calling thread (nothing when filters are
/// off). Call it first thing in the thread's closure.
pub fn apply(class: ThreadClass) -> Result<(), Error> {
    if !enabled() {
        return Ok(());
    }
    let program = program(class)?;
    remember_thread_name();
    install_sigsys_handler();
    let probe = std::env::var(PROBE_ENV).is_ok_and(|v| v == class.name());
    seccompiler::apply_filter(&program).map_err(|source| Error { class, source })?;
    if probe {
        // getpgid(0) (`PROBE_SYSCALL`): the filter traps it before it runs.
        let _ = nix::unistd::getpgid(None);
    }
    Ok(())
}

/// [`apply`] for a thread that cannot hand an error back: on failure it says
/// so on stderr and ends the process with status 1 (a host whose kernel lacks
/// seccomp filters: `--no-seccomp` runs there).
pub fn enter(class: ThreadClass) {
    if let Err(e) = apply(class) {
        eprintln!("swaplab: seccomp: {e}; rerun with --no-seccomp to run without filters");
        std::process::exit(1);
    }
}

/// For tests: runs test `test` of the calling test binary again, alone, in a
/// child process whose `class` threads make the probe's forbidden syscall, and
/// asserts that the child ended with status [`EXIT_STATUS`] and left
/// [`probe_message`] for a thread named `thread` on stderr. In that child
/// ([`PROBE_ENV`] set) it returns at once, so the test calling it passes there.
///
/// # Panics
/// When the child cannot be run or did not stop as described (a test's
/// failure), with the child's stderr.
#[track_caller]
pub fn assert_probe_stops(test: &str, class: ThreadClass, thread: &str) {
    if std::env::var_os(PROBE_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(PROBE_ENV, class.name())
        .output()
        .expect("rerunning the test with the seccomp probe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_STATUS), "{test}: {err}");
    assert!(err.contains(&probe_message(thread)), "{test}: {err}");
}

/// The start of the line a thread named `thread` leaves when the probe trips.
pub fn probe_message(thread: &str) -> String {
    format!(
        "swaplab: seccomp: thread {thread} made a forbidden syscall {} ({PROBE_SYSCALL})",
        syscall_name(PROBE_SYSCALL)
    )
}

/// Longest thread name kept for the message (Linux's own limit is 15 bytes).
const NAME_MAX: usize = 32;

std::thread_local! {
    // Constant-initialised and without a destructor: a plain `#[thread_local]`
    // static underneath, which a signal handler may read.
    static THREAD_NAME: std::cell::Cell<([u8; NAME_MAX], usize)> =
        const { std::cell::Cell::new(([0; NAME_MAX], 0)) };
}

fn remember_thread_name() {
    let current = std::thread::current();
    let name = current.name().unwrap_or("unnamed").as_bytes();
    let mut buf = [0u8; NAME_MAX];
    let n = name.len().min(NAME_MAX);
    buf[..n].copy_from_slice(&name[..n]);
    THREAD_NAME.with(|c| c.set((buf, n)));
}

static HANDLER: Once = Once::new();

fn install_sigsys_handler() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    HANDLER.call_once(|| {
        let act = SigAction::new(
            SigHandler::SigAction(on_sigsys),
            SaFlags::SA_SIGINFO,
            SigSet::empty(),
        );
        // SAFETY: `on_sigsys` is async-signal-safe (a thread-local read, stack
        // buffers, `write` and `_exit`), and nothing else in the process
        // handles SIGSYS.
        if let Err(e) = unsafe { sigaction(Signal::SIGSYS, &act) } {
            // Without the handler SIGSYS still ends the process (its default
            // action), only without the message.
            eprintln!("swaplab: seccomp: cannot install the SIGSYS handler: {e}");
        }
    });
}

/// The head of `siginfo_t` for `SIGSYS` on x86_64 (`_sigsys` in the kernel's
/// union, after three ints and padding).
#[repr(C)]
#[allow(dead_code)] // only `syscall` is read; the rest gives it its offset
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// A fixed buffer the handler assembles its one line in (no allocation).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The message for `nr` made by thread `name`.
fn message(name: &[u8], nr: i64) -> Line {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(b"swaplab: seccomp: thread ");
    line.push(name);
    line.push(b" made a forbidden syscall ");
    line.push(syscall_name(nr).as_bytes());
    line.push(b" (");
    if nr < 0 {
        line.push(b"-");
    }
    line.push_number(nr.unsigned_abs());
    line.push(b"); rerun with --no-seccomp to run without filters\n");
    line
}

/// The name of x86_64 syscall `nr` ("unknown" for numbers the table lacks).
pub fn syscall_name(nr: i64) -> &'static str {
    usize::try_from(nr)
        .ok()
        .and_then(|i| syscalls::SYSCALL_NAMES.get(i))
        .filter(|n| !n.is_empty())
        .copied()
        .unwrap_or("unknown")
}

/// The `SIGSYS` handler: one `write(2)` to stderr, then `_exit`. Only
/// async-signal-safe work: a thread-local read, stack buffers, two syscalls
/// every filter allows.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo for SIGSYS with
        // SA_SIGINFO, whose head has `SigsysInfo`'s layout on x86_64.
        i64::from(unsafe { (*info.cast::<SigsysInfo>()).syscall })
    };
    let (name, len) = THREAD_NAME.with(|c| c.get());
    let line = message(&name[..len], nr);
    // SAFETY: fd 2 (stderr) stays open for the life of the process; it is
    // borrowed only for this one write.
    let stderr = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let _ = nix::unistd::write(stderr, &line.buf[..line.len]);
    // SAFETY: ends the process without running anything else (no atexit,
    // no destructors), which is what a handler may do. (nix has no `_exit`.)
    unsafe { libc::_exit(EXIT_STATUS) }
}

#[cfg(test)]
mod syscalls_check;

#[cfg(test)]
mod tests;
