//! Scratch directories named after the process that owns them
//! (`swaplab-run-<pid>-XXXXXX`), so that what a killed process leaves behind
//! (SIGKILL runs no destructor) is swept by the next process that makes one
//! of the same kind: an entry whose pid no longer exists is removed.
//!
//! A pid that was reused meanwhile keeps its entry until that process is
//! gone too: sweeping is conservative, never removing a live process's files.

use std::io;
use std::path::{Path, PathBuf};

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in `name` after `prefix` (`<prefix><pid>...`), if any.
pub fn pid_in_name(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Removes the directories in `dir` named `<prefix><pid>-…` whose process is
/// gone; returns what it removed. Errors are skipped: a sweep is best effort.
pub fn sweep(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| pid_in_name(n, prefix)) else {
            continue;
        };
        // Never follow a link someone else put there.
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if pid_alive(pid) || !is_dir {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// A new private (0700) directory `<prefix><pid>-XXXXXX` in `base`, removed
/// when dropped, after sweeping `base` of those of dead processes.
pub fn dir_in(base: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    sweep(base, prefix);
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

/// [`dir_in`] the system's temporary directory (`$TMPDIR`, else `/tmp`).
pub fn dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    dir_in(&std::env::temp_dir(), prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_pids() {
        assert_eq!(pid_in_name("swaplab-123-4", "swaplab-"), Some(123));
        assert_eq!(
            pid_in_name("swaplab-swapfile-77-0.swap", "swaplab-swapfile-"),
            Some(77)
        );
        assert_eq!(pid_in_name("other-1", "swaplab-"), None);
        assert_eq!(pid_in_name("swaplab-x", "swaplab-"), None);
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn dead_processes_dirs_are_swept_live_ones_and_files_kept() {
        let base = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        let dead = base.path().join("swaplab-t-4999999-abc");
        let mine = base
            .path()
            .join(format!("swaplab-t-{}-abc", std::process::id()));
        let file = base.path().join("swaplab-t-4999998-file");
        let other = base.path().join("swaplab-u-4999999-abc");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("inside"), b"x").unwrap();
        std::fs::write(&file, b"x").unwrap();
        let made = dir_in(base.path(), "swaplab-t-").unwrap();
        assert!(!dead.exists(), "the dead process's directory stays");
        assert!(mine.exists() && file.exists() && other.exists());
        let name = made
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(pid_in_name(&name, "swaplab-t-"), Some(std::process::id()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(made.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = made.path().to_path_buf();
        drop(made);
        assert!(!path.exists());
    }
}
