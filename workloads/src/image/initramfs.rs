//! Building an initramfs on top of [`CpioWriter`]: parent directories are
//! created on demand, duplicate paths are refused, and the standard device
//! nodes a kernel needs before devtmpfs is mounted are added.
//!
//! ```
//! use workloads::image::initramfs::InitramfsBuilder;
//! let mut b = InitramfsBuilder::new();
//! b.add_base_layout().unwrap();
//! b.add_file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
//! b.add_symlink("usr/bin/env", "/bin/busybox").unwrap();
//! let cpio = b.finish().unwrap();
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use crate::image::cpio::{normalize_name, CpioError, CpioWriter};
use crate::image::tools::{self, ToolError};

/// Errors from building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A cpio error (bad name, too large).
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The same path added twice.
    #[error("initramfs path {0:?} added twice")]
    Duplicate(String),
    /// Reading a source file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Compressing failed.
    #[error("compressing the initramfs")]
    Compress(#[source] ToolError),
}

/// Compression of the finished archive (the Debian kernel accepts all of these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain cpio: the fastest to unpack, which matters under emulation.
    #[default]
    None,
    /// zstd (host `zstd` tool).
    Zstd,
    /// gzip (host `gzip` tool).
    Gzip,
}

impl Compression {
    /// Compress a finished archive.
    pub fn apply(self, cpio: Vec<u8>) -> Result<Vec<u8>, InitramfsError> {
        let run = |tool, args: &[&str]| {
            tools::run(tool, args, Some(&cpio), None).map_err(InitramfsError::Compress)
        };
        match self {
            Compression::None => Ok(cpio),
            Compression::Zstd => run(tools::ZSTD, &["-c", "-q", "-19", "-T0"]),
            Compression::Gzip => run(tools::GZIP, &["-c", "-n", "-9"]),
        }
    }

    /// Name as used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "unknown initramfs compression {other:?} (expected none, zstd or gzip)"
            )),
        }
    }
}

/// An initramfs under construction (in memory).
#[derive(Debug)]
pub struct InitramfsBuilder {
    writer: CpioWriter<Vec<u8>>,
    dirs: BTreeSet<String>,
    paths: BTreeSet<String>,
}

impl Default for InitramfsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl InitramfsBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        InitramfsBuilder {
            writer: CpioWriter::new(Vec::new()),
            dirs: BTreeSet::new(),
            paths: BTreeSet::new(),
        }
    }

    fn parents(&mut self, name: &str) -> Result<(), InitramfsError> {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains(&prefix) {
                if self.paths.contains(&prefix) {
                    return Err(InitramfsError::Duplicate(prefix));
                }
                self.writer.dir(&prefix, 0o755)?;
                self.dirs.insert(prefix.clone());
                self.paths.insert(prefix.clone());
            }
        }
        Ok(())
    }

    fn claim(&mut self, name: &str) -> Result<String, InitramfsError> {
        let name = normalize_name(name)?;
        self.parents(&name)?;
        if !self.paths.insert(name.clone()) {
            return Err(InitramfsError::Duplicate(name));
        }
        Ok(name)
    }

    /// Whether `name` is already in the archive.
    pub fn contains(&self, name: &str) -> bool {
        normalize_name(name).is_ok_and(|n| self.paths.contains(&n))
    }

    /// Add a directory (and its parents); adding an existing directory is a no-op.
    pub fn add_dir(&mut self, name: &str, mode: u32) -> Result<(), InitramfsError> {
        let n = normalize_name(name)?;
        if self.dirs.contains(&n) {
            return Ok(());
        }
        let n = self.claim(&n)?;
        self.writer.dir(&n, mode)?;
        self.dirs.insert(n);
        Ok(())
    }

    /// Add a file with the given contents.
    pub fn add_file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), InitramfsError> {
        let n = self.claim(name)?;
        self.writer.file(&n, mode, data)?;
        Ok(())
    }

    /// Add a copy of a host file.
    pub fn add_file_from(
        &mut self,
        name: &str,
        mode: u32,
        src: &Path,
    ) -> Result<(), InitramfsError> {
        let data = std::fs::read(src).map_err(|source| InitramfsError::Read {
            path: src.to_path_buf(),
            source,
        })?;
        self.add_file(name, mode, &data)
    }

    /// Add a symbolic link.
    pub fn add_symlink(&mut self, name: &str, target: &str) -> Result<(), InitramfsError> {
        let n = self.claim(name)?;
        self.writer.symlink(&n, target)?;
        Ok(())
    }

    /// Add a character device node.
    pub fn add_char_device(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), InitramfsError> {
        let n = self.claim(name)?;
        self.writer.char_device(&n, mode, major, minor)?;
        Ok(())
    }

    /// The usual top-level directories, and `/dev/console` and `/dev/null`
    /// (the kernel opens `/dev/console` for init before anything is mounted).
    pub fn add_base_layout(&mut self) -> Result<(), InitramfsError> {
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run",
            "root", "lib",
        ] {
            self.add_dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
        }
        self.add_char_device("dev/console", 0o600, 5, 1)?;
        self.add_char_device("dev/null", 0o666, 1, 3)?;
        Ok(())
    }

    /// Finish the archive (uncompressed).
    pub fn finish(self) -> Result<Vec<u8>, InitramfsError> {
        Ok(self.writer.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::cpio::{read_entries, EntryKind};

    #[test]
    fn parents_are_created_once_in_order() {
        let mut b = InitramfsBuilder::new();
        b.add_file("lib/modules/6.1/kernel/a.ko", 0o644, b"a")
            .unwrap();
        b.add_file("lib/modules/6.1/kernel/b.ko", 0o644, b"b")
            .unwrap();
        b.add_dir("lib/modules", 0o755).unwrap(); // exists: no-op
        let e = read_entries(&b.finish().unwrap()).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko",
                "lib/modules/6.1/kernel/b.ko"
            ]
        );
        assert_eq!(e[0].kind(), EntryKind::Dir);
    }

    #[test]
    fn duplicates_are_refused() {
        let mut b = InitramfsBuilder::new();
        b.add_file("init", 0o755, b"x").unwrap();
        assert!(matches!(
            b.add_file("/init", 0o755, b"y"),
            Err(InitramfsError::Duplicate(_))
        ));
        assert!(matches!(
            b.add_symlink("init", "x"),
            Err(InitramfsError::Duplicate(_))
        ));
        // A file cannot become a directory.
        assert!(matches!(
            b.add_file("init/x", 0o644, b""),
            Err(InitramfsError::Duplicate(_))
        ));
        assert!(b.contains("/init"));
    }

    #[test]
    fn base_layout_has_console() {
        let mut b = InitramfsBuilder::new();
        b.add_base_layout().unwrap();
        let e = read_entries(&b.finish().unwrap()).unwrap();
        let console = e.iter().find(|e| e.name == "dev/console").unwrap();
        assert_eq!(console.kind(), EntryKind::CharDevice);
        assert_eq!(console.rdev, (5, 1));
        assert!(e
            .iter()
            .any(|e| e.name == "tmp" && e.mode & 0o7777 == 0o1777));
    }

    #[test]
    fn compression_round_trips_with_host_tools() {
        let mut b = InitramfsBuilder::new();
        b.add_file("f", 0o644, &[42u8; 10000]).unwrap();
        let plain = b.finish().unwrap();
        assert_eq!(Compression::None.apply(plain.clone()).unwrap(), plain);
        for (c, codec) in [
            (Compression::Zstd, crate::image::bzimage::Codec::Zstd),
            (Compression::Gzip, crate::image::bzimage::Codec::Gzip),
        ] {
            match c.apply(plain.clone()) {
                Ok(z) => {
                    assert_eq!(crate::image::bzimage::Codec::detect(&z), Some(codec));
                    assert_eq!(codec.decompress(&z).unwrap(), plain);
                }
                Err(InitramfsError::Compress(ToolError::Missing { .. })) => base::tier::skip(
                    base::tier::Tier::Tool,
                    &format!("the {c:?} compressor is not installed"),
                ),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!("zstd".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("lzma".parse::<Compression>().is_err());
    }
}
