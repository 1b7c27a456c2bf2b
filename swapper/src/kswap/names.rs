//! The names this module gives what it creates (`swaplab-<pid>-<n>` cgroups,
//! `swaplab-swapfile-<pid>-<n>.swap` files, swap label `swaplab-<pid>`), and telling
//! a live run's from a crashed one's.

use std::path::Path;

/// Prefix of every name this module creates.
pub const PREFIX: &str = "swaplab-";

/// Whether process `pid` exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parses `swaplab-<pid>...` (after `prefix`) and returns the pid.
pub(crate) fn pid_in_name(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_pids() {
        assert_eq!(pid_in_name("swaplab-123-4", PREFIX), Some(123));
        assert_eq!(
            pid_in_name("swaplab-swapfile-77-0.swap", "swaplab-swapfile-"),
            Some(77)
        );
        assert_eq!(pid_in_name("other-1", PREFIX), None);
        assert_eq!(pid_in_name("swaplab-x", PREFIX), None);
        assert!(pid_alive(std::process::id()));
    }
}
