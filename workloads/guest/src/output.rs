//! Where results go, and stopping cleanly on a signal.
//!
//! Results go to the result channel when `--out PATH` is given or `SWAPLAB_CHANNEL`
//! names a path (`/init` sets it to `/dev/ttyS1` with `swaplab.channel=1`), else to
//! stdout (`--out -` forces stdout). A tty is put in raw mode (no `\n` → `\r\n`, no
//! echo, no flow control, modem lines ignored) and every line is one `write`, so lines
//! of programs writing at the same time do not interleave. Paths under `/dev/` are
//! never created: a missing channel device is an error, not a new file.
//!
//! `SIGTERM` and `SIGINT` set a flag ([`stop_requested`]) that the long-running
//! programs check between steps, so a `kill` ends them after a complete line, with
//! their summary.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::GuestError;

/// The environment variable naming the result channel.
pub const CHANNEL_ENV: &str = "SWAPLAB_CHANNEL";

/// Set by the signal handler. Process-wide by nature: signals are.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Make `SIGTERM` and `SIGINT` request a clean stop (without `SA_RESTART`, so a
/// sleep ends at once).
pub fn install_stop_handler() {
    // SAFETY: a zeroed sigaction is a valid value: no flags, an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_stop_signal as *const () as usize;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `sa` is a valid sigaction whose handler only stores to an atomic,
        // which is async-signal-safe; the old action is not asked for.
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleep until `CLOCK_MONOTONIC` reaches `deadline_ns`; false if a stop was
/// requested before or during the sleep.
pub fn sleep_until(deadline_ns: u64) -> bool {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        if stop_requested() {
            return false;
        }
        // SAFETY: `ts` is a valid timespec; no remainder is asked for (absolute time).
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return !stop_requested();
        }
    }
}

/// Put the tty on `file` in raw mode.
pub fn make_raw(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: a zeroed termios is a valid buffer for tcgetattr to fill.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the lifetime of `file`; `t` is a valid termios.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `t` is a termios filled by tcgetattr.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag |= libc::CLOCAL;
    t.c_cflag &= !libc::CRTSCTS;
    t.c_iflag &= !(libc::IXON | libc::IXOFF);
    // SAFETY: as above; TCSANOW applies the settings at once.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Open the result channel at `path` for appending lines (raw mode if it is a tty).
pub fn open_channel(path: &str) -> Result<File, GuestError> {
    let err = |what: &str| GuestError::io(format!("{what} result channel {path}"));
    let device = path.starts_with("/dev/");
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(!device)
        // Non-blocking open: never wait for a modem's carrier.
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(err("opening"))?;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open; isatty only inspects it.
    if unsafe { libc::isatty(fd) } == 1 {
        make_raw(&file).map_err(err("setting raw mode on"))?;
    }
    // Blocking writes from here on: a full tty buffer waits, it does not drop a line.
    // SAFETY: `fd` is open; F_GETFL only reads its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags >= 0 {
        // SAFETY: as above; F_SETFL only changes its status flags.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    }
    Ok(file)
}

/// The channel path from `--out` or the environment (`None` or `-`: stdout).
pub fn channel_path(out_flag: Option<String>, env: Option<String>) -> Option<String> {
    out_flag
        .or(env.filter(|e| !e.is_empty()))
        .filter(|p| p != "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn channel_choice() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(channel_path(None, None), None);
        assert_eq!(channel_path(None, s("")), None);
        assert_eq!(channel_path(None, s("/dev/ttyS1")), s("/dev/ttyS1"));
        assert_eq!(channel_path(s("-"), s("/dev/ttyS1")), None);
        assert_eq!(channel_path(s("/tmp/x"), s("/dev/ttyS1")), s("/tmp/x"));
    }

    #[test]
    fn files_are_appended_devices_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chan");
        let ps = p.to_str().unwrap();
        open_channel(ps).unwrap().write_all(b"a\n").unwrap();
        open_channel(ps).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        assert!(matches!(
            open_channel("/dev/swaplab-no-such-channel"),
            Err(GuestError::Io { .. })
        ));
        assert!(!std::path::Path::new("/dev/swaplab-no-such-channel").exists());
    }

    #[test]
    fn sleeping_until_a_past_deadline_returns_at_once() {
        assert!(sleep_until(0));
    }
}
