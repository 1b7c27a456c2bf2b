//! A writer (and a small reader) for cpio "newc" archives, the format of a Linux
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701` and 13 eight-digit hex fields),
//! the NUL-terminated name padded to a multiple of 4 bytes (counting the header),
//! then the data padded to a multiple of 4. The archive ends with an entry named
//! `TRAILER!!!`. Timestamps and owners are written as 0, so the same entries
//! always give the same bytes.
//!
//! ```
//! use workloads::image::cpio::CpioWriter;
//! let mut w = CpioWriter::new(Vec::new());
//! w.dir("bin", 0o755).unwrap();
//! w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
//! w.symlink("bin/hi", "hello").unwrap();
//! let bytes = w.finish().unwrap();
//! assert_eq!(&bytes[..6], b"070701");
//! ```

use std::io::Write;

/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";
/// Header length in bytes.
pub const HEADER_LEN: usize = 110;
/// Name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// Errors from writing or reading a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// An entry name that a Linux initramfs cannot hold.
    #[error(
        "invalid cpio entry name {0:?} (must be relative, without `..`, NUL or empty components)"
    )]
    BadName(String),
    /// newc stores sizes in 32 bits.
    #[error("cpio entry {name:?} is {len} bytes; newc entries are limited to 4 GiB")]
    TooLarge {
        /// Entry name.
        name: String,
        /// Its size.
        len: u64,
    },
    /// Writing the archive failed.
    #[error("writing cpio archive")]
    Io(#[from] std::io::Error),
    /// A malformed archive (reader).
    #[error("corrupt cpio archive at byte {offset}: {what}")]
    Corrupt {
        /// Where.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// Normalize an entry name: strip leading `/` and `./`, reject `..`, NUL and empty parts.
pub fn normalize_name(name: &str) -> Result<String, CpioError> {
    let trimmed = name.trim_start_matches('/');
    let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
    let bad = || CpioError::BadName(name.to_string());
    if trimmed.is_empty() || trimmed.contains('\0') {
        return Err(bad());
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == ".." || part == "." {
            return Err(bad());
        }
    }
    Ok(trimmed.to_string())
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Writes a newc archive entry by entry. Call [`CpioWriter::finish`] at the end
/// to append the trailer; an unfinished archive is not valid.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Start an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), CpioError> {
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            name: name.to_string(),
            len: data.len() as u64,
        })?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            namesize as u32,
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + namesize + 3);
        header.extend_from_slice(MAGIC);
        for f in fields {
            write!(header, "{f:08X}")?;
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        header.resize(header.len() + pad4(header.len()), 0);
        self.out.write_all(&header)?;
        self.out.write_all(data)?;
        self.out.write_all(&[0u8; 3][..pad4(data.len())])?;
        self.written += (header.len() + data.len() + pad4(data.len())) as u64;
        Ok(())
    }

    /// Add a directory (`mode` holds the permission bits, e.g. `0o755`).
    pub fn dir(&mut self, name: &str, mode: u32) -> Result<(), CpioError> {
        let name = normalize_name(name)?;
        self.entry(&name, S_IFDIR | (mode & !S_IFMT), 2, (0, 0), &[])
    }

    /// Add a regular file with `data`.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let name = normalize_name(name)?;
        self.entry(&name, S_IFREG | (mode & !S_IFMT), 1, (0, 0), data)
    }

    /// Add a symbolic link `name` -> `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        let name = normalize_name(name)?;
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadName(target.to_string()));
        }
        self.entry(&name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Add a character device node (e.g. `dev/console`, 5, 1).
    pub fn char_device(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let name = normalize_name(name)?;
        self.entry(&name, S_IFCHR | (mode & !S_IFMT), 1, (major, minor), &[])
    }

    /// Append the trailer, flush, and return the underlying writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What kind of entry a [`CpioEntry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link (data is the target).
    Symlink,
    /// Character device.
    CharDevice,
    /// Anything else.
    Other,
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Entry name.
    pub name: String,
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// `(rdevmajor, rdevminor)`.
    pub rdev: (u32, u32),
    /// File data, or a symlink's target.
    pub data: Vec<u8>,
}

impl CpioEntry {
    /// The entry's type.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File,
            S_IFLNK => EntryKind::Symlink,
            S_IFCHR => EntryKind::CharDevice,
            _ => EntryKind::Other,
        }
    }
}

/// Read all entries of an uncompressed newc archive, up to (not including) the
/// trailer. Used by tests and by `swaplab image` to check what it built.
pub fn read_entries(data: &[u8]) -> Result<Vec<CpioEntry>, CpioError> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let corrupt = |what| CpioError::Corrupt { offset: pos, what };
        let header = data
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| corrupt("truncated header"))?;
        if &header[..6] != MAGIC {
            return Err(corrupt("bad magic (not newc, or compressed)"));
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let s = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| corrupt("non-ASCII header field"))?;
            u32::from_str_radix(s, 16).map_err(|_| corrupt("non-hex header field"))
        };
        let mode = field(1)?;
        let filesize = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        if namesize == 0 {
            return Err(corrupt("empty name"));
        }
        let name_start = pos + HEADER_LEN;
        let name_bytes = data
            .get(name_start..name_start + namesize)
            .ok_or_else(|| corrupt("truncated name"))?;
        if name_bytes[namesize - 1] != 0 {
            return Err(corrupt("name not NUL-terminated"));
        }
        let name = String::from_utf8_lossy(&name_bytes[..namesize - 1]).into_owned();
        let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
        let body = data
            .get(data_start..data_start + filesize)
            .ok_or_else(|| corrupt("truncated data"))?;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            rdev,
            data: body.to_vec(),
        });
        pos = data_start + filesize + pad4(filesize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_field(bytes: &[u8], entry_off: usize, i: usize) -> u32 {
        let s = std::str::from_utf8(&bytes[entry_off + 6 + 8 * i..entry_off + 14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn header_layout_of_one_file() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/init", 0o755, b"abcde").unwrap();
        let out = w.finish().unwrap();
        // Header: magic + 13 fields of 8 uppercase hex digits.
        assert_eq!(&out[..6], b"070701");
        let header = std::str::from_utf8(&out[6..HEADER_LEN]).unwrap();
        assert!(
            header
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
            "{header}"
        );
        assert_eq!(hex_field(&out, 0, 0), 1, "inode");
        assert_eq!(hex_field(&out, 0, 1), 0o100755, "mode");
        assert_eq!(hex_field(&out, 0, 4), 1, "nlink");
        assert_eq!(hex_field(&out, 0, 5), 0, "mtime");
        assert_eq!(hex_field(&out, 0, 6), 5, "filesize");
        assert_eq!(hex_field(&out, 0, 11), 5, "namesize counts the NUL");
        // Name "init\0" at 110..115, padded so data starts 4-aligned at 116.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(out[115], 0);
        assert_eq!(&out[116..121], b"abcde");
        // Data padded to 124, where the trailer starts.
        assert_eq!(&out[121..124], &[0, 0, 0]);
        assert_eq!(&out[124..130], b"070701");
    }

    #[test]
    fn every_entry_and_the_end_are_four_byte_aligned() {
        let mut w = CpioWriter::new(Vec::new());
        for (i, name) in ["a", "ab", "abc", "abcd", "abcde"].iter().enumerate() {
            w.file(name, 0o644, &vec![7u8; i]).unwrap();
        }
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let mut starts = Vec::new();
        let mut i = 0;
        while let Some(p) = out[i..].windows(6).position(|w| w == MAGIC) {
            starts.push(i + p);
            i += p + 6;
        }
        assert_eq!(starts.len(), 6);
        assert!(starts.iter().all(|s| s % 4 == 0), "{starts:?}");
    }

    #[test]
    fn trailer_is_last_and_empty() {
        let out = CpioWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(out.len(), 124); // 110 + "TRAILER!!!\0" (11) + 3 padding
        assert_eq!(hex_field(&out, 0, 1), 0, "trailer mode");
        assert_eq!(hex_field(&out, 0, 6), 0, "trailer size");
        assert_eq!(hex_field(&out, 0, 11), 11);
        assert_eq!(&out[110..121], b"TRAILER!!!\0");
        assert!(read_entries(&out).unwrap().is_empty());
    }

    #[test]
    fn round_trip_all_kinds() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.dir("bin", 0o755).unwrap();
        w.file("bin/busybox", 0o755, &[1, 2, 3]).unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let written = w.bytes_written();
        let out = w.finish().unwrap();
        assert_eq!(written + 124, out.len() as u64);
        let e = read_entries(&out).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "bin", "bin/busybox", "bin/sh"]
        );
        assert_eq!(e[0].kind(), EntryKind::Dir);
        assert_eq!(e[1].kind(), EntryKind::CharDevice);
        assert_eq!(e[1].rdev, (5, 1));
        assert_eq!(e[1].mode & 0o777, 0o600);
        assert_eq!(e[3].kind(), EntryKind::File);
        assert_eq!(e[3].data, [1, 2, 3]);
        assert_eq!(e[4].kind(), EntryKind::Symlink);
        assert_eq!(e[4].data, b"busybox");
    }

    #[test]
    fn inode_numbers_are_distinct() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"").unwrap();
        w.file("b", 0o644, b"").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(hex_field(&out, 0, 0), 1);
        assert_eq!(hex_field(&out, 112, 0), 2); // 110 + "a\0" = 112, already aligned
    }

    #[test]
    fn same_entries_same_bytes() {
        let build = || {
            let mut w = CpioWriter::new(Vec::new());
            w.file("x", 0o644, b"data").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn names_are_normalized_or_rejected() {
        assert_eq!(normalize_name("/bin/sh").unwrap(), "bin/sh");
        assert_eq!(normalize_name("./init").unwrap(), "init");
        for bad in ["", "/", "a//b", "../etc", "a/../b", "a/./b", "a\0b", "a/"] {
            assert!(
                matches!(normalize_name(bad), Err(CpioError::BadName(_))),
                "{bad:?}"
            );
        }
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("../x", 0o644, b"").is_err());
        assert!(w.symlink("x", "").is_err());
    }

    #[test]
    fn reader_rejects_garbage_and_truncation() {
        assert!(matches!(
            read_entries(b"\x28\xb5\x2f\xfd"),
            Err(CpioError::Corrupt { .. })
        ));
        let mut w = CpioWriter::new(Vec::new());
        w.file("f", 0o644, b"0123456789").unwrap();
        let out = w.finish().unwrap();
        assert!(matches!(
            read_entries(&out[..out.len() - 20]),
            Err(CpioError::Corrupt { .. })
        ));
        assert!(matches!(
            read_entries(&out[..118]),
            Err(CpioError::Corrupt {
                what: "truncated data",
                ..
            })
        ));
    }

    #[test]
    fn system_cpio_can_list_our_archive() {
        // The system tool is an independent reader; skip quietly if it is absent.
        let mut w = CpioWriter::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/motd", 0o644, b"hello\n").unwrap();
        w.symlink("motd", "etc/motd").unwrap();
        let out = w.finish().unwrap();
        let tool = crate::image::tools::Tool {
            program: "cpio",
            package: "cpio",
        };
        match crate::image::tools::run(tool, &["-t", "--quiet"], Some(&out), None) {
            Ok(list) => assert_eq!(String::from_utf8_lossy(&list), "etc\netc/motd\nmotd\n"),
            Err(crate::image::tools::ToolError::Missing { .. }) => {
                base::tier::skip(base::tier::Tier::Tool, "cpio is not installed")
            }
            Err(e) => panic!("cpio rejected our archive: {e}"),
        }
    }
}
