//! The guest programs (`swaplab-guest`), built from this workspace as static
//! executables (glibc static-pie), or taken prebuilt from a given path.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::image::cache::{self, CacheError};
use crate::image::elf::{Elf, ElfError};
use crate::image::tools::Tool;

/// The guest programs put into the image's `/usr/bin`.
pub const PROGRAMS: &[&str] = &["swaplab-guest"];
/// Environment variable naming a prebuilt `swaplab-guest` (skips the cargo build).
pub const ENV_GUEST_BIN: &str = "SWAPLAB_GUEST_BIN";
/// The only Rust target installed here; static via `+crt-static`.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

const CARGO: Tool = Tool {
    program: "cargo",
    package: "cargo (or rustup from https://rustup.rs)",
};

/// Errors building or finding the guest programs.
#[derive(Debug, thiserror::Error)]
pub enum GuestBinError {
    /// The source workspace is not where it was at compile time.
    #[error("the swaplab workspace is not at {0} (needed to build the guest programs): pass --guest-bin or set SWAPLAB_GUEST_BIN to a prebuilt static swaplab-guest")]
    NoWorkspace(PathBuf),
    /// cargo is not installed.
    #[error("`cargo` not found: install Rust (rustup, or the Debian package `cargo`)")]
    NoCargo,
    /// cargo failed.
    #[error("building the static guest programs failed ({status}); cargo's messages are above. Command: {command}")]
    Build {
        /// Exit status.
        status: String,
        /// The command line.
        command: String,
    },
    /// Running cargo failed.
    #[error("running cargo")]
    Spawn(#[source] std::io::Error),
    /// The program is missing.
    #[error("guest program {0} does not exist")]
    Missing(PathBuf),
    /// Not an ELF file.
    #[error("guest program {path} is not an ELF executable")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfError,
    },
    /// Needs a dynamic loader the initramfs does not have.
    #[error("guest program {0} is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\"")]
    NotStatic(PathBuf),
    /// Reading/hashing failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// One guest program, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProgram {
    /// Name (also the file name in `/usr/bin`).
    pub name: String,
    /// Host path of the binary.
    pub path: PathBuf,
    /// SHA-256 of the binary.
    pub sha256: String,
}

/// The workspace this crate was compiled from.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where [`build`] puts program `name` for `workspace`.
pub fn built_path(workspace: &Path, name: &str) -> PathBuf {
    workspace
        .join("target")
        .join("guest")
        .join(TARGET)
        .join("release")
        .join(name)
}

/// Check that `path` is a static ELF executable and hash it.
pub fn check_static(name: &str, path: &Path) -> Result<GuestProgram, GuestBinError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GuestBinError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(CacheError::io("reading", path)(e).into()),
    };
    let not_elf = |source| GuestBinError::NotElf {
        path: path.to_path_buf(),
        source,
    };
    let elf = Elf::parse(&data).map_err(not_elf)?;
    if elf.has_interpreter().map_err(not_elf)? {
        return Err(GuestBinError::NotStatic(path.to_path_buf()));
    }
    Ok(GuestProgram {
        name: name.to_string(),
        path: path.to_path_buf(),
        sha256: cache::sha256_hex(&data),
    })
}

/// Build [`PROGRAMS`] statically from `workspace` into `workspace/target/guest`
/// (its own target directory, so it never waits on the host build's lock and
/// the host build's flags never mix with the static ones). cargo's own output
/// goes to stderr; an up-to-date build takes well under a second.
pub fn build(workspace: &Path) -> Result<Vec<GuestProgram>, GuestBinError> {
    if !workspace.join("Cargo.toml").is_file() || !workspace.join("workloads").is_dir() {
        return Err(GuestBinError::NoWorkspace(workspace.to_path_buf()));
    }
    let target_dir = workspace.join("target").join("guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| CARGO.program.into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--quiet")
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["-p", "workloads"]);
    for p in PROGRAMS {
        cmd.args(["--bin", p]);
    }
    // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS and any build.rustflags.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-C\u{1f}target-feature=+crt-static",
    )
    .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let rendered = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            GuestBinError::NoCargo
        } else {
            GuestBinError::Spawn(e)
        }
    })?;
    if !status.success() {
        return Err(GuestBinError::Build {
            status: status.to_string(),
            command: rendered,
        });
    }
    PROGRAMS
        .iter()
        .map(|p| check_static(p, &built_path(workspace, p)))
        .collect()
}

/// The guest programs: the prebuilt `swaplab-guest` at `explicit` or
/// `$SWAPLAB_GUEST_BIN` if given, else built from [`workspace_dir`].
pub fn ensure(explicit: Option<&Path>) -> Result<Vec<GuestProgram>, GuestBinError> {
    let env = std::env::var_os(ENV_GUEST_BIN)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match explicit.map(Path::to_path_buf).or(env) {
        Some(path) => Ok(vec![check_static(PROGRAMS[0], &path)?]),
        None => build(&workspace_dir()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_dir_is_this_workspace() {
        let ws = workspace_dir();
        assert!(
            ws.join("workloads").join("Cargo.toml").is_file(),
            "{}",
            ws.display()
        );
    }

    #[test]
    fn missing_workspace_is_explained() {
        let err = build(Path::new("/nonexistent/ws")).unwrap_err();
        assert!(matches!(err, GuestBinError::NoWorkspace(_)));
        assert!(err.to_string().contains("SWAPLAB_GUEST_BIN"));
    }

    #[test]
    fn static_check() {
        assert!(matches!(
            check_static("x", Path::new("/nonexistent/x")),
            Err(GuestBinError::Missing(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("script");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            check_static("x", &f),
            Err(GuestBinError::NotElf { .. })
        ));
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        assert!(matches!(
            check_static("x", &me),
            Err(GuestBinError::NotStatic(_))
        ));
    }
}
