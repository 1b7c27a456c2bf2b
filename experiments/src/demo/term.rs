//! Giving the terminal back: raw mode and the alternate screen are undone by a
//! guard's `Drop` (quit, errors), by a panic hook (panics, before the message
//! is printed so it lands on the normal screen), and the demo's loop turns
//! SIGINT/SIGTERM/SIGHUP into a normal quit ([`crate::probe_run::signals`]),
//! so the guard runs for those too.

use std::io::{self, Write};
use std::sync::Once;

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
