//! The committed fuzz corpora (`fuzz/corpus/<target>/`), as the crates that
//! hold fuzz target bodies replay them in `cargo test` and regenerate their
//! seeds: one place that knows where they are and how they are read.

use std::path::{Path, PathBuf};

/// Where the committed corpus of `target` lives.
pub fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `body` on every file of `target`'s committed corpus, in name order.
/// Panics (it is for tests) when the corpus cannot be read or is empty.
pub fn replay(target: &str, mut body: impl FnMut(&[u8])) {
    let dir = dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no corpus for {target} in {}",
        dir.display()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        body(&data);
    }
}

/// Writes `seeds` as `seed-NN` into `target`'s corpus; other files there
/// (crash reproducers) are kept.
pub fn write_seeds(target: &str, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    let dir = dir(target);
    std::fs::create_dir_all(&dir)?;
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpora_are_found_and_read_in_order() {
        let mut names = Vec::new();
        replay("scenario", |d| names.push(d.len()));
        assert!(!names.is_empty());
    }

    #[test]
    #[should_panic(expected = "corpus")]
    fn a_missing_corpus_is_no_silent_pass() {
        replay("no-such-target", |_| {});
    }
}
