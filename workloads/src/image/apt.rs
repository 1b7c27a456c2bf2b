//! Asking apt about packages and downloading them, either with the host's own
//! apt configuration ([`Apt::Host`]) or with a private one for a single suite
//! of a Debian archive ([`Apt::Private`]), kept under the swaplab cache.
//!
//! The private configuration lets swaplab fetch a package from a suite the
//! host does not list (the nested sandbox's L1 kernel comes from
//! `bookworm-backports`) without touching the host's apt state: every apt
//! call gets `-o` options that point the sources list, package lists, apt's
//! cache, the dpkg status file and the pinning preferences into
//! `<cache>/apt/<suite>/`:
//!
//! ```text
//! apt/<suite>/sources.list   one `deb [signed-by=KEYRING] URI SUITE COMPONENTS` line
//! apt/<suite>/status         empty: nothing is "installed" as far as this apt knows
//! apt/<suite>/lists/         package lists (`apt-get update` writes them here)
//! apt/<suite>/cache/         apt's binary caches
//! apt/<suite>/.lock          held while updating
//! ```
//!
//! Private lists are fetched when missing ([`Apt::ensure_lists`]) and
//! refreshed only on request ([`Apt::update`]); otherwise nothing here uses
//! the network except `apt-get download`. This works as an ordinary user too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::image::cache::{self, CacheError};
use crate::image::tools::{self, ToolError};

/// Debian's main archive.
pub const DEBIAN_ARCHIVE: &str = "http://deb.debian.org/debian";
/// The keyring that signs Debian's archive (package `debian-archive-keyring`).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where the host's apt keeps its package lists.
pub const HOST_LISTS: &str = "/var/lib/apt/lists";

/// Errors from apt.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// Cache directory trouble.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// apt-get or apt-cache failed or is missing.
    #[error("{what}")]
    Tool {
        /// What we were doing.
        what: String,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// apt knows no such package.
    #[error("apt has no candidate for {package}{}", no_candidate_hint(.suite))]
    NoCandidate {
        /// The package.
        package: String,
        /// The private suite asked (`None`: the host's apt).
        suite: Option<String>,
    },
    /// The suite's keyring is not there.
    #[error("{0} not found: install the Debian package debian-archive-keyring")]
    NoKeyring(PathBuf),
}

fn no_candidate_hint(suite: &Option<String>) -> String {
    match suite {
        None => " (run `apt-get update`?)".into(),
        Some(s) => format!(" in {s}"),
    }
}

/// One suite of a Debian archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSuite {
    /// Archive URI (`http://deb.debian.org/debian`).
    pub uri: String,
    /// Suite (`bookworm-backports`).
    pub suite: String,
    /// Components, space-separated (`main`).
    pub components: String,
    /// The keyring that signs the suite's `InRelease`.
    pub keyring: PathBuf,
}

impl AptSuite {
    /// `suite` of Debian's main archive, component `main`.
    pub fn debian(suite: &str) -> Self {
        AptSuite {
            uri: DEBIAN_ARCHIVE.into(),
            suite: suite.into(),
            components: "main".into(),
            keyring: DEBIAN_KEYRING.into(),
        }
    }

    /// The `sources.list` line.
    pub fn sources_line(&self) -> String {
        format!(
            "deb [signed-by={}] {} {} {}\n",
            self.keyring.display(),
            self.uri,
            self.suite,
            self.components
        )
    }

    /// A name for the suite that is safe as a path component.
    pub fn id(&self) -> String {
        cache::path_component(&self.suite)
    }
}

/// How apt is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apt {
    /// With the host's configuration and lists, as they are (never updated here).
    Host,
    /// With a private configuration for one suite, in `dir`.
    Private {
        /// `<cache>/apt/<suite>`.
        dir: PathBuf,
        /// The suite.
        suite: AptSuite,
    },
}

impl Apt {
    /// The private apt for `suite` under `cache`.
    pub fn private(cache: &Path, suite: AptSuite) -> Self {
        Apt::Private {
            dir: cache.join("apt").join(suite.id()),
            suite,
        }
    }

    /// The `-o` options that make apt use the private configuration (none for the host).
    pub fn options(&self) -> Vec<OsString> {
        let Apt::Private { dir, .. } = self else {
            return Vec::new();
        };
        let set = |key: &str, value: &Path| {
            let mut o = OsString::from(format!("{key}="));
            o.push(value);
            ["-o".into(), o]
        };
        let null = Path::new("/dev/null");
        [
            set("Dir::Etc::SourceList", &dir.join("sources.list")),
            set("Dir::Etc::SourceParts", null),
            set("Dir::Etc::Preferences", null),
            set("Dir::Etc::PreferencesParts", null),
            set("Dir::State::Lists", &dir.join("lists")),
            set("Dir::State::status", &dir.join("status")),
            set("Dir::Cache", &dir.join("cache")),
            ["-o".into(), "Acquire::Languages=none".into()],
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The package lists directory.
    pub fn lists_dir(&self) -> PathBuf {
        match self {
            Apt::Host => PathBuf::from(HOST_LISTS),
            Apt::Private { dir, .. } => dir.join("lists"),
        }
    }

    /// Whether any package list is there.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.lists_dir()).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// A fingerprint of the package lists (names, sizes, mtimes): when it is
    /// unchanged, so is what apt resolves a package to.
    pub fn lists_stamp(&self) -> Option<String> {
        let mut entries: Vec<String> = std::fs::read_dir(self.lists_dir())
            .ok()?
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let mtime = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                Some(format!(
                    "{} {} {}",
                    e.file_name().to_string_lossy(),
                    m.len(),
                    mtime.as_nanos()
                ))
            })
            .collect();
        entries.sort();
        Some(cache::sha256_hex(entries.join("\n").as_bytes()))
    }

    /// A short description for messages (`the host's apt`, `bookworm-backports`).
    pub fn describe(&self) -> String {
        match self {
            Apt::Host => "the host's apt".into(),
            Apt::Private { suite, .. } => format!("{} ({})", suite.suite, suite.uri),
        }
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Vec<OsString> {
        let mut all = self.options();
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        all
    }

    /// Fetch the private package lists (`apt-get update`). For the host's apt
    /// this does nothing and returns false: swaplab never changes the host's
    /// apt state.
    pub fn update(&self) -> Result<bool, AptError> {
        let Apt::Private { dir, suite } = self else {
            return Ok(false);
        };
        if !suite.keyring.is_file() {
            return Err(AptError::NoKeyring(suite.keyring.clone()));
        }
        let _lock = cache::lock(dir)?;
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(CacheError::io("creating", &d))?;
        }
        cache::write_atomic(&dir.join("sources.list"), suite.sources_line().as_bytes())?;
        cache::write_atomic(&dir.join("status"), b"")?;
        tools::run(tools::APT_GET, &self.command(&["-q", "update"]), None, None).map_err(
            |source| AptError::Tool {
                what: format!("updating the package lists of {}", self.describe()),
                source,
            },
        )?;
        Ok(true)
    }

    /// [`Apt::update`] when there are no lists yet. Returns whether it updated.
    pub fn ensure_lists(&self) -> Result<bool, AptError> {
        if self.has_lists() {
            return Ok(false);
        }
        self.update()
    }

    /// `apt-cache show --no-all-versions PACKAGE`: the candidate's control stanza.
    pub fn show(&self, package: &str) -> Result<String, AptError> {
        let args = self.command(&["show", "--no-all-versions", package]);
        let no_candidate = || AptError::NoCandidate {
            package: package.to_string(),
            suite: match self {
                Apt::Host => None,
                Apt::Private { .. } => Some(self.describe()),
            },
        };
        let out = match tools::run_text(tools::APT_CACHE, &args) {
            Ok(out) => out,
            // apt-cache's answer when its lists do not know the package.
            Err(ToolError::Failed { stderr, .. }) if stderr.contains("No packages found") => {
                return Err(no_candidate());
            }
            Err(source) => {
                return Err(AptError::Tool {
                    what: format!("asking {} about {package}", self.describe()),
                    source,
                })
            }
        };
        if out.is_empty() {
            return Err(no_candidate());
        }
        Ok(out)
    }

    /// `apt-get download SPEC` into `dir`.
    pub fn download(&self, spec: &str, dir: &Path) -> Result<(), AptError> {
        tools::run(
            tools::APT_GET,
            &self.command(&["download", "-q", spec]),
            None,
            Some(dir),
        )
        .map_err(|source| AptError::Tool {
            what: format!("downloading {spec} with {}", self.describe()),
            source,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_options_point_everything_into_the_cache() {
        let apt = Apt::private(Path::new("/c"), AptSuite::debian("bookworm-backports"));
        let opts: Vec<String> = apt
            .options()
            .into_iter()
            .map(|o| o.into_string().unwrap())
            .collect();
        assert!(opts.chunks(2).all(|p| p[0] == "-o"));
        for want in [
            "Dir::Etc::SourceList=/c/apt/bookworm-backports/sources.list",
            "Dir::Etc::SourceParts=/dev/null",
            "Dir::State::Lists=/c/apt/bookworm-backports/lists",
            "Dir::State::status=/c/apt/bookworm-backports/status",
            "Dir::Cache=/c/apt/bookworm-backports/cache",
        ] {
            assert!(opts.iter().any(|o| o == want), "{want} missing: {opts:?}");
        }
        assert!(Apt::Host.options().is_empty());
        assert_eq!(Apt::Host.lists_dir(), Path::new(HOST_LISTS));
    }

    #[test]
    fn sources_line_is_signed() {
        assert_eq!(
            AptSuite::debian("bookworm-backports").sources_line(),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian bookworm-backports main\n"
        );
    }

    #[test]
    fn lists_are_detected_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let apt = Apt::private(dir.path(), AptSuite::debian("x"));
        assert!(!apt.has_lists());
        assert!(apt.lists_stamp().is_none());
        let lists = apt.lists_dir();
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("lock"), b"").unwrap();
        assert!(!apt.has_lists(), "a lock is not a list");
        let before = apt.lists_stamp().unwrap();
        std::fs::write(lists.join("d_dists_x_main_binary-amd64_Packages"), b"P").unwrap();
        assert!(apt.has_lists());
        assert_ne!(apt.lists_stamp().unwrap(), before);
    }

    #[test]
    fn host_apt_is_never_updated() {
        assert!(!Apt::Host.update().unwrap());
    }

    #[test]
    fn missing_keyring_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut suite = AptSuite::debian("x");
        suite.keyring = dir.path().join("no-such.gpg");
        let err = Apt::private(dir.path(), suite).update().unwrap_err();
        assert!(err.to_string().contains("debian-archive-keyring"), "{err}");
    }
}
