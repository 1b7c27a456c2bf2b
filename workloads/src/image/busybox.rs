//! The host's static busybox (Debian package `busybox-static`), to be copied
//! into an initramfs with its applet links.

use std::path::{Path, PathBuf};

use crate::image::cache::{self, CacheError};
use crate::image::elf::{Elf, ElfError};
use crate::image::initramfs::{InitramfsBuilder, InitramfsError};
use crate::image::tools::{self, Tool, ToolError};

/// Where `busybox-static` installs busybox.
pub const DEFAULT_PATH: &str = "/bin/busybox";
/// The Debian package with a static busybox.
pub const PACKAGE: &str = "busybox-static";
/// Applets `/init` and the guest programs rely on.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "insmod", "poweroff", "reboot", "sync", "base64", "cat", "echo",
    "printf", "setsid", "cttyhack", "test", "sleep", "stty", "mkswap", "swapon",
];

/// Errors finding busybox.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// Not there.
    #[error("{0} not found: install the Debian package `busybox-static` (apt-get install busybox-static)")]
    Missing(PathBuf),
    /// Dynamically linked (package `busybox`, not `busybox-static`): useless in an initramfs.
    #[error("{0} is dynamically linked; the guest needs a static busybox: install the Debian package `busybox-static`")]
    NotStatic(PathBuf),
    /// Not an executable we understand.
    #[error("{path} is not an ELF executable")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfError,
    },
    /// Running it failed.
    #[error("running {path}")]
    Run {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// An applet we need is not compiled in.
    #[error("{path} lacks the applet(s) {missing:?} that /init needs")]
    MissingApplets {
        /// The file.
        path: PathBuf,
        /// Missing applets.
        missing: Vec<String>,
    },
    /// Hashing failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A static busybox found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busybox {
    /// The binary.
    pub path: PathBuf,
    /// Its version banner (`v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)`).
    pub version: String,
    /// SHA-256 of the binary.
    pub sha256: String,
    /// Applet paths relative to `/` (`bin/sh`, `sbin/insmod`, ...).
    pub applets: Vec<String>,
}

/// Parse the version out of busybox's banner line (`BusyBox v1.35.0 (...) multi-call binary.`).
pub fn parse_version(banner: &str) -> Option<String> {
    let line = banner.lines().find(|l| l.starts_with("BusyBox "))?;
    let rest = line.strip_prefix("BusyBox ")?;
    let end = rest.find(" multi-call").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Find and check busybox at `path` (default [`DEFAULT_PATH`]).
pub fn find(path: Option<&Path>) -> Result<Busybox, BusyboxError> {
    let path = path.unwrap_or(Path::new(DEFAULT_PATH)).to_path_buf();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BusyboxError::Missing(path))
        }
        Err(e) => return Err(CacheError::io("reading", &path)(e).into()),
    };
    let elf = Elf::parse(&data).map_err(|source| BusyboxError::NotElf {
        path: path.clone(),
        source,
    })?;
    if elf
        .has_interpreter()
        .map_err(|source| BusyboxError::NotElf {
            path: path.clone(),
            source,
        })?
    {
        return Err(BusyboxError::NotStatic(path));
    }
    let tool = Tool {
        program: "busybox",
        package: PACKAGE,
    };
    let run = |arg: &str| {
        let mut cmd = std::process::Command::new(&path);
        cmd.arg(arg);
        tools::run_command(tool, cmd, None, None).map_err(|source| BusyboxError::Run {
            path: path.clone(),
            source,
        })
    };
    let list = String::from_utf8_lossy(&run("--list-full")?).into_owned();
    let applets: Vec<String> = list
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let names: std::collections::BTreeSet<&str> = applets
        .iter()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect();
    let missing: Vec<String> = REQUIRED_APPLETS
        .iter()
        .filter(|a| !names.contains(*a))
        .map(|a| a.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(BusyboxError::MissingApplets { path, missing });
    }
    let banner = String::from_utf8_lossy(&run("--help")?).into_owned();
    let version = parse_version(&banner).unwrap_or_else(|| "unknown".into());
    Ok(Busybox {
        sha256: cache::sha256_hex(&data),
        path,
        version,
        applets,
    })
}

impl Busybox {
    /// Put the binary at `/bin/busybox` and a symlink for every applet.
    pub fn install(&self, b: &mut InitramfsBuilder) -> Result<(), InitramfsError> {
        b.add_file_from("bin/busybox", 0o755, &self.path)?;
        for applet in &self.applets {
            if applet == "bin/busybox" || b.contains(applet) {
                continue;
            }
            b.add_symlink(applet, "/bin/busybox")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_banner() {
        let b = "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.\nBusyBox is copyrighted";
        assert_eq!(
            parse_version(b).as_deref(),
            Some("v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)")
        );
        assert_eq!(parse_version("nope"), None);
    }

    #[test]
    fn missing_and_dynamic_binaries_name_the_package() {
        let err = find(Some(Path::new("/nonexistent/busybox"))).unwrap_err();
        assert!(err.to_string().contains("busybox-static"), "{err}");
        // /bin/sh on Debian is a dynamically linked dash.
        if let Err(e @ BusyboxError::NotStatic(_)) = find(Some(Path::new("/bin/sh"))) {
            assert!(e.to_string().contains("busybox-static"));
        }
    }

    #[test]
    fn host_busybox_if_installed() {
        match find(None) {
            Ok(b) => {
                assert!(b.applets.iter().any(|a| a == "bin/sh"));
                assert!(b.version.starts_with('v'), "{}", b.version);
                let mut ib = InitramfsBuilder::new();
                b.install(&mut ib).unwrap();
                assert!(ib.contains("sbin/insmod") && ib.contains("bin/busybox"));
            }
            Err(BusyboxError::Missing(_)) => {
                base::tier::skip(base::tier::Tier::Tool, "busybox-static is not installed")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
