//! The swaplab cache directory: where it is, locking, atomic publication of
//! built directories, and content hashes.
//!
//! Layout (under [`default_cache_dir`]):
//!
//! ```text
//! downloads/<package>_<version>_amd64.deb     the Debian kernel packages
//! kernels/<package>_<version>/                 unpacked kernels (see image::kernel)
//! apt/<suite>/                                 private apt setup for a suite (see image::apt)
//! images/<key>/                                one guest image per input hash (see image)
//! sandbox/l1-<key>.cpio                        the nested sandbox's L1 initramfs
//! ```
//!
//! Each of `kernels/` and `images/` has a `.lock` file; a builder holds the lock
//! while it builds in a `.tmp-*` directory next to the final one and renames it
//! into place, so readers never see a half-built directory and an interrupted
//! build leaves only a `.tmp-*` that the next builder removes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Errors from cache handling.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No `SWAPLAB_CACHE`, `XDG_CACHE_HOME` or `HOME`.
    #[error("cannot find a cache directory: set SWAPLAB_CACHE (or XDG_CACHE_HOME or HOME)")]
    NoCacheDir,
    /// A filesystem operation failed.
    #[error("{what} {path}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Taking the lock failed.
    #[error("locking {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
}

impl CacheError {
    /// Build an [`CacheError::Io`] closure for `map_err`.
    pub fn io<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
        move |source| CacheError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The cache directory from the environment: `$SWAPLAB_CACHE`, else
/// `$XDG_CACHE_HOME/swaplab`, else `$HOME/.cache/swaplab`. Empty values are ignored.
pub fn default_cache_dir() -> Result<PathBuf, CacheError> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`default_cache_dir`] with the environment given as a function (for tests).
pub fn cache_dir_from(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, CacheError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = get("SWAPLAB_CACHE") {
        return Ok(p);
    }
    if let Some(p) = get("XDG_CACHE_HOME") {
        return Ok(p.join("swaplab"));
    }
    if let Some(p) = get("HOME") {
        return Ok(p.join(".cache").join("swaplab"));
    }
    Err(CacheError::NoCacheDir)
}

/// An exclusive lock on a cache subdirectory, released on drop.
#[derive(Debug)]
pub struct CacheLock {
    _flock: nix::fcntl::Flock<File>,
}

/// Create `dir` if needed and take its `.lock` (blocking while another builder holds it).
pub fn lock(dir: &Path) -> Result<CacheLock, CacheError> {
    std::fs::create_dir_all(dir).map_err(CacheError::io("creating", dir))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(CacheError::io("opening", &path))?;
    let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, source)| CacheError::Lock { path, source })?;
    Ok(CacheLock { _flock: flock })
}

/// Remove leftover `.tmp-*` directories in `dir` (from interrupted builds).
/// Call only while holding `dir`'s lock. Failures are logged, not returned.
pub fn clean_stale(dir: &Path) -> Result<(), CacheError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let path = entry.path();
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            // A killed builder's orphaned helper (dpkg-deb, xz) may still be
            // writing there; builders use fresh names, so this is only litter.
            if let Err(e) = result {
                tracing::warn!("cannot remove stale {}: {e}", path.display());
            }
        }
    }
    Ok(())
}

/// A directory being built; removed on drop unless [`Staging::publish`]ed.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    published: bool,
}

impl Staging {
    /// Create `parent/.tmp-<name>-<pid>`.
    pub fn new(parent: &Path, name: &str) -> Result<Self, CacheError> {
        let path = parent.join(format!(".tmp-{name}-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(CacheError::io("removing", &path))?;
        }
        std::fs::create_dir_all(&path).map_err(CacheError::io("creating", &path))?;
        Ok(Staging {
            path,
            published: false,
        })
    }

    /// The directory to build in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rename the staging directory to `dest`, replacing an existing `dest`.
    pub fn publish(mut self, dest: &Path) -> Result<(), CacheError> {
        if dest.exists() {
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let old = dest.with_file_name(format!(".tmp-old-{name}-{}", std::process::id()));
            std::fs::rename(dest, &old).map_err(CacheError::io("moving aside", dest))?;
            std::fs::rename(&self.path, dest).map_err(CacheError::io("publishing", dest))?;
            std::fs::remove_dir_all(&old).map_err(CacheError::io("removing", &old))?;
        } else {
            std::fs::rename(&self.path, dest).map_err(CacheError::io("publishing", dest))?;
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One cached build: the entry `area/key` (`area` holds all entries of its
/// kind) with its `marker` file (a manifest).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The directory of all entries of this kind.
    pub area: &'a Path,
    /// The entry's name in it (a key of its inputs).
    pub key: &'a str,
    /// The file that marks it complete and in use (its mtime drives [`prune`]).
    pub marker: &'a str,
    /// How many entries of this kind the area keeps.
    pub keep: usize,
    /// Build even when the entry is there.
    pub force: bool,
}

/// The cache's one way to find or build an entry: `load` it if it is there
/// (marking it used); else, under the area's lock, `load` again (another
/// process may have built it meanwhile), sweep what interrupted builds left,
/// `build` into a staging directory that is renamed into place only when
/// complete, keep the `keep` most recently used entries, and `load` the new
/// one. Returns it and whether it was built.
pub fn find_or_build<T, E: From<CacheError>>(
    entry: Entry<'_>,
    load: impl Fn(&Path) -> Result<T, E>,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(T, bool), E> {
    let dir = entry.area.join(entry.key);
    if !entry.force {
        if let Ok(found) = load(&dir) {
            touch(&dir.join(entry.marker));
            return Ok((found, false));
        }
    }
    let _lock = lock(entry.area)?;
    if !entry.force {
        if let Ok(found) = load(&dir) {
            return Ok((found, false)); // built by someone else while we waited
        }
    }
    clean_stale(entry.area)?;
    let staging = Staging::new(entry.area, entry.key)?;
    build(staging.path())?;
    staging.publish(&dir)?;
    for old in prune(entry.area, entry.marker, entry.keep, &dir)? {
        tracing::info!("removed old cache entry {}", old.display());
    }
    Ok((load(&dir)?, true))
}

/// Mark `file` as just used (its mtime drives [`prune`]); errors are ignored.
pub fn touch(file: &Path) {
    if let Ok(f) = std::fs::OpenOptions::new().append(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Keep the `keep` most recently used subdirectories of `parent` (by the mtime
/// of their `marker` file), never removing `protect`; delete the rest.
/// Hidden entries (locks, staging) are left alone. Returns what was removed.
pub fn prune(
    parent: &Path,
    marker: &str,
    keep: usize,
    protect: &Path,
) -> Result<Vec<PathBuf>, CacheError> {
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(parent)
        .map_err(CacheError::io("listing", parent))?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let t = std::fs::metadata(p.join(marker))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let protected = dirs.iter().any(|(_, p)| p == protect);
    let others = keep.saturating_sub(usize::from(protected));
    let mut removed = Vec::new();
    for (_, p) in dirs.into_iter().filter(|(_, p)| p != protect).skip(others) {
        std::fs::remove_dir_all(&p).map_err(CacheError::io("removing old", &p))?;
        removed.push(p);
    }
    Ok(removed)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, CacheError> {
    let mut file = File::open(path).map_err(CacheError::io("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(CacheError::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Make `text` safe as one path component (Debian versions hold `:` and `~`).
pub fn path_component(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Hard-link `src` to `dst`, or copy when linking is not possible.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<(), CacheError> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dst).map_err(CacheError::io("copying to", dst))?;
    Ok(())
}

/// Write `data` to `path` via a temporary file and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, data).map_err(CacheError::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(CacheError::io("renaming to", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [
            ("SWAPLAB_CACHE", "/s"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&all)).unwrap(), PathBuf::from("/s"));
        assert_eq!(
            cache_dir_from(env(&all[1..])).unwrap(),
            PathBuf::from("/x/swaplab")
        );
        assert_eq!(
            cache_dir_from(env(&all[2..])).unwrap(),
            PathBuf::from("/h/.cache/swaplab")
        );
        let empty = [("SWAPLAB_CACHE", ""), ("HOME", "/h")];
        assert_eq!(
            cache_dir_from(env(&empty)).unwrap(),
            PathBuf::from("/h/.cache/swaplab")
        );
        assert!(matches!(
            cache_dir_from(env(&[])),
            Err(CacheError::NoCacheDir)
        ));
    }

    #[test]
    fn staging_is_removed_unless_published() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::new(dir.path(), "x").unwrap();
        let p = s.path().to_path_buf();
        std::fs::write(p.join("f"), b"1").unwrap();
        drop(s);
        assert!(!p.exists());

        let s = Staging::new(dir.path(), "x").unwrap();
        std::fs::write(s.path().join("f"), b"2").unwrap();
        let dest = dir.path().join("final");
        s.publish(&dest).unwrap();
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"2");

        // Publishing again replaces the old directory entirely.
        let s = Staging::new(dir.path(), "x").unwrap();
        std::fs::write(s.path().join("g"), b"3").unwrap();
        s.publish(&dest).unwrap();
        assert!(!dest.join("f").exists());
        assert_eq!(std::fs::read(dest.join("g")).unwrap(), b"3");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, [OsString::from("final")]);
    }

    #[test]
    fn stale_temp_dirs_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".tmp-image-123")).unwrap();
        std::fs::create_dir(dir.path().join("keep")).unwrap();
        clean_stale(dir.path()).unwrap();
        assert!(!dir.path().join(".tmp-image-123").exists());
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn hashes_and_names() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f).unwrap(), sha256_hex(b"abc"));
        assert_eq!(
            path_component("1:1.35.0-4+deb12u1~b1/x"),
            "1_1.35.0-4+deb12u1_b1_x"
        );
    }

    #[test]
    fn prune_keeps_the_most_recent_and_the_protected() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let f = std::fs::File::create(d.join("m")).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        std::fs::create_dir(dir.path().join(".tmp-x")).unwrap();
        // Keep 2: the protected "a" (oldest) plus the newest other, "d".
        let removed = prune(dir.path(), "m", 2, &dir.path().join("a")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-x", "a", "d"]);
        assert_eq!(removed.len(), 2);
        // Touching makes an entry the most recent.
        touch(&dir.path().join("a").join("m"));
        prune(dir.path(), "m", 1, &dir.path().join("zzz")).unwrap();
        assert!(dir.path().join("a").exists() && !dir.path().join("d").exists());
    }

    #[test]
    fn lock_can_be_retaken_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let l = lock(dir.path()).unwrap();
        drop(l);
        let _l = lock(dir.path()).unwrap();
        assert!(dir.path().join(".lock").exists());
    }
}
