//! Giving the terminal back: raw mode and the alternate screen are undone by a
//! guard's `Drop` (quit, errors), by a panic hook (panics, before the message
//! is printed so it lands on the normal screen), and the demo's loop turns
//! SIGINT/SIGTERM/SIGHUP into a normal quit ([`hostsys::signals`]),
//! so the guard runs for those too.
//!
//! Keys are read here from standard input (raw mode, one byte per key that
//! matters), not through crossterm's event reader, which spins on a terminal
//! that hung up (e.g. its tmux session was killed) instead of reporting it:
//! [`read_keys`] says `None` then, and the demo quits.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Once;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ratatui::crossterm::{cursor, execute, terminal};

/// Restores the terminal: leaves the alternate screen, shows the cursor,
/// disables raw mode. Harmless when they are not on.
pub fn restore() {
    let mut out = io::stdout();
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    let _ = out.flush();
}

static HOOK: Once = Once::new();

/// Raw mode and the alternate screen for as long as it lives.
pub struct TermGuard(());

impl TermGuard {
    /// Enters raw mode and the alternate screen (and installs the panic hook,
    /// once per process).
    pub fn enter() -> io::Result<TermGuard> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        let guard = TermGuard(());
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Waits up to `timeout` for input on standard input and returns the bytes
/// read (possibly none); `None` when the terminal hung up or input ended.
pub fn read_keys(timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let n = match poll(&mut p, timeout) {
        Ok(n) => n,
        Err(Errno::EINTR) => return Ok(Some(Vec::new())),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    if !p[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN))
    {
        // POLLHUP, POLLERR or POLLNVAL without data: the terminal is gone.
        return Ok(None);
    }
    // Straight from the descriptor, past std's buffer (which would keep keys
    // poll cannot see).
    let mut buf = [0u8; 64];
    match nix::unistd::read(fd, &mut buf) {
        Ok(0) => Ok(None),
        Ok(r) => Ok(Some(buf[..r].to_vec())),
        Err(Errno::EINTR | Errno::EAGAIN) => Ok(Some(Vec::new())),
        Err(_) => Ok(None),
    }
}

/// Ctrl-C in raw mode (no SIGINT is raised then).
pub const CTRL_C: u8 = 0x03;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_input_reads_as_gone() {
        // Standard input of a test is not necessarily a terminal; a pipe at
        // its end stands in for a hung-up terminal.
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe fills two fds.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        // SAFETY: dup/dup2/close on fds this test owns; stdin is restored below.
        let saved = unsafe { libc::dup(libc::STDIN_FILENO) };
        // SAFETY: as above.
        unsafe { libc::dup2(r, libc::STDIN_FILENO) };
        // SAFETY: writes one byte from a live buffer.
        unsafe { libc::write(w, b"q".as_ptr().cast(), 1) };
        let got = read_keys(Duration::from_secs(5)).unwrap();
        // SAFETY: closing the write end ends the input.
        unsafe { libc::close(w) };
        let gone = read_keys(Duration::from_secs(5)).unwrap();
        // SAFETY: restores the test's stdin from its copy.
        unsafe { libc::dup2(saved, libc::STDIN_FILENO) };
        // SAFETY: closes the copy, which this test owns.
        unsafe { libc::close(saved) };
        // SAFETY: closes the pipe's read end, which this test owns.
        unsafe { libc::close(r) };
        assert_eq!(got, Some(b"q".to_vec()));
        assert_eq!(gone, None);
    }
}
