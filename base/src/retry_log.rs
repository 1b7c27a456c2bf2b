//! The retry log: `scripts/test.sh` sets `SWAPLAB_RETRY_LOG` to a file and
//! lists every line in it at the end of a test run. Whoever retries something
//! after a known residue of the nested sandbox's emulation (a test run once
//! more, a matrix resumed in a fresh L1, a run made again after a guest triple
//! fault) appends a line there, since cargo shows a passing test's output to
//! no one: a retry is counted, never hidden.

use std::io::Write;
use std::path::Path;

/// The variable naming the log.
pub const ENV: &str = "SWAPLAB_RETRY_LOG";

/// Appends `who<TAB>what` (tabs and newlines in either become spaces) to the
/// file [`ENV`] names; nothing when it is unset or empty. The file must
/// exist (the test script creates it): a log that vanished is an error.
pub fn note(who: &str, what: &str) -> std::io::Result<()> {
    match std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        Some(path) => note_to(Path::new(&path), who, what),
        None => Ok(()),
    }
}

/// [`note`] to the log at `path`.
pub fn note_to(path: &Path, who: &str, what: &str) -> std::io::Result<()> {
    let clean = |t: &str| t.replace(['\n', '\t'], " ");
    let line = format!("{}\t{}\n", clean(who), clean(what));
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_one_line_appended() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("retries");
        std::fs::write(&log, "").unwrap();
        note_to(&log, "a test", "once\tmore\nafter it").unwrap();
        note_to(&log, "swaplab run", "resumed").unwrap();
        assert!(note_to(&dir.path().join("gone"), "x", "y").is_err());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "a test\tonce more after it\nswaplab run\tresumed\n"
        );
    }
}
