//! The guest programs (`swaplab-guest`), built from this workspace as static
//! executables (glibc static-pie), or taken prebuilt from a given path.
//!
//! They are the crate [`PACKAGE`] (`workloads/guest`, std and libc only), built on
//! its own, so the binary's bytes, and with them the image key, which hashes them,
//! change only when that crate (or libc, or the toolchain) does: editing the rest
//! of the workloads library, or any other workspace member, leaves the key alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::image::cache::{self, CacheError};
use crate::image::elf::{Elf, ElfError};
use crate::image::tools::Tool;

/// The cargo package of the guest programs.
pub const PACKAGE: &str = "swaplab-guest";
/// Its directory, relative to the workspace.
pub const PACKAGE_DIR: &str = "workloads/guest";
/// The guest programs put into the image's `/usr/bin` (binaries of [`PACKAGE`]).
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

/// The cargo command that builds [`PROGRAMS`] statically from `workspace` into
/// `workspace/target/guest` (its own target directory, so it never waits on the
/// host build's lock and the host build's flags never mix with the static ones).
/// Only [`PACKAGE`] is built, so no other workspace member is compiled into it.
pub fn cargo_command(workspace: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| CARGO.program.into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--quiet")
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(workspace.join("target").join("guest"))
        .args(["-p", PACKAGE]);
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
    cmd
}

/// Build [`PROGRAMS`] with [`cargo_command`] and check them. cargo's own output
/// goes to stderr; an up-to-date build takes well under a second.
pub fn build(workspace: &Path) -> Result<Vec<GuestProgram>, GuestBinError> {
    if !workspace.join("Cargo.toml").is_file()
        || !workspace.join(PACKAGE_DIR).join("Cargo.toml").is_file()
    {
        return Err(GuestBinError::NoWorkspace(workspace.to_path_buf()));
    }
    let mut cmd = cargo_command(workspace);
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
        assert!(ws.join(PACKAGE_DIR).join("Cargo.toml").is_file());
    }

    #[test]
    fn builds_only_the_guest_package() {
        let ws = workspace_dir();
        let cmd = cargo_command(&ws);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-p"), [PACKAGE], "{args:?}");
        assert_eq!(after("--bin"), PROGRAMS, "{args:?}");
        assert_eq!(after("--target"), [TARGET]);
        let flags = cmd
            .get_envs()
            .find(|(k, _)| *k == "CARGO_ENCODED_RUSTFLAGS")
            .and_then(|(_, v)| v);
        assert_eq!(
            flags.map(|v| v.to_string_lossy().into_owned()).as_deref(),
            Some("-C\u{1f}target-feature=+crt-static")
        );
    }

    /// The image key hashes the guest binary's bytes; they stay put across
    /// unrelated edits only while the package is built alone from its own
    /// sources, with nothing from the workspace (or crates.io past libc) in it.
    #[test]
    fn guest_package_is_self_contained() {
        let dir = workspace_dir().join(PACKAGE_DIR);
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some(PACKAGE));
        let deps: Vec<&str> = manifest["dependencies"]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(deps, ["libc"], "the guest crate uses std and libc only");
        for table in ["build-dependencies", "target", "features"] {
            assert!(
                !manifest.contains_key(table),
                "[{table}] in the guest crate"
            );
        }
        assert!(!dir.join("build.rs").exists());
        // The default binary target (src/main.rs) is the one program.
        assert_eq!(PROGRAMS, [PACKAGE]);
        assert!(dir.join("src").join("main.rs").is_file());
        let mut dirs = vec![dir.join("src")];
        let mut sources = Vec::new();
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    sources.push(path);
                }
            }
        }
        assert!(sources.len() > 10, "{sources:?}");
        for path in sources {
            let text = std::fs::read_to_string(&path).unwrap();
            for pulls_in_other_files in ["#[path", "include!", "include_str!", "include_bytes!"] {
                assert!(
                    !text.contains(pulls_in_other_files),
                    "{} uses {pulls_in_other_files}",
                    path.display()
                );
            }
        }
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
