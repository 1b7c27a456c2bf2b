//! Parsing an x86 bzImage's setup header and extracting the uncompressed ELF
//! `vmlinux` from its payload (`Documentation/arch/x86/boot.rst`).
//!
//! The protected-mode part starts at `(setup_sects + 1) * 512`; since boot
//! protocol 2.08 the header's `payload_offset`/`payload_length` locate the
//! compressed kernel inside it. The kernel build appends the uncompressed size
//! as 4 little-endian bytes after the compressed stream (gzip's own trailer ends
//! with the same value), which lets us check the result.

use crate::image::elf::{Elf, ElfError, EM_X86_64};
use crate::image::tools::{self, Tool, ToolError};

const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const KERNEL_VERSION: usize = 0x20e;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
const INIT_SIZE: usize = 0x260;

/// Errors from reading a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    /// Too short or missing the `HdrS` / `0xAA55` signatures.
    #[error("not a bzImage: {0}")]
    NotBzImage(&'static str),
    /// Boot protocol older than 2.08 has no payload fields.
    #[error("boot protocol {major}.{minor:02} is too old (need 2.08 or later for payload_offset)")]
    TooOld {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The payload lies outside the file.
    #[error("payload (offset {offset}, length {length}) lies outside the {file_len}-byte bzImage")]
    PayloadOutOfBounds {
        /// File offset of the payload.
        offset: usize,
        /// Its length.
        length: usize,
        /// File length.
        file_len: usize,
    },
    /// A compression we do not know or cannot decompress.
    #[error("unsupported kernel compression (payload starts with {0})")]
    UnknownCodec(String),
    /// Running the decompressor failed.
    #[error("decompressing the {codec} kernel payload")]
    Decompress {
        /// The codec.
        codec: Codec,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// The decompressed size is not what the trailer says.
    #[error("decompressed payload is {got} bytes but the bzImage says {expected}")]
    SizeMismatch {
        /// From the 4-byte trailer.
        expected: u32,
        /// What we got.
        got: usize,
    },
    /// The payload is not an x86-64 ELF.
    #[error("decompressed payload is not an x86-64 ELF vmlinux")]
    NotElf(#[source] ElfError),
    /// Valid ELF but for another machine.
    #[error("decompressed vmlinux is for ELF machine {0}, not x86-64")]
    WrongMachine(u16),
}

/// Compression of a bzImage payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// legacy lzma (`5d 00 00`).
    Lzma,
    /// xz (`fd 37 7a 58 5a 00`) — Debian's choice for 6.1 (`CONFIG_KERNEL_XZ`).
    Xz,
    /// lzo (`89 4c 5a 4f`), as written by lzop.
    Lzo,
    /// lz4 legacy frame (`02 21 4c 18`).
    Lz4,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Lzma => "lzma",
            Codec::Xz => "xz",
            Codec::Lzo => "lzo",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        };
        f.write_str(s)
    }
}

impl Codec {
    /// Recognize a compressed stream by its magic bytes.
    pub fn detect(data: &[u8]) -> Option<Codec> {
        let table: [(&[u8], Codec); 7] = [
            (b"\x1f\x8b", Codec::Gzip),
            (b"BZh", Codec::Bzip2),
            (b"\x5d\x00\x00", Codec::Lzma),
            (b"\xfd7zXZ\x00", Codec::Xz),
            (b"\x89LZO", Codec::Lzo),
            (b"\x02\x21\x4c\x18", Codec::Lz4),
            (b"\x28\xb5\x2f\xfd", Codec::Zstd),
        ];
        table
            .iter()
            .find(|(m, _)| data.starts_with(m))
            .map(|&(_, c)| c)
    }

    /// The host tool that decompresses this codec, and its arguments (stdin to stdout).
    pub fn decompressor(self) -> (Tool, &'static [&'static str]) {
        match self {
            Codec::Gzip => (tools::GZIP, &["-dc"]),
            Codec::Bzip2 => (tools::BZIP2, &["-dc"]),
            Codec::Lzma => (tools::XZ, &["--format=lzma", "-dc"]),
            Codec::Xz => (tools::XZ, &["-dc"]),
            Codec::Lzo => (tools::LZOP, &["-dc"]),
            Codec::Lz4 => (tools::LZ4, &["-dc"]),
            Codec::Zstd => (tools::ZSTD, &["-dc"]),
        }
    }

    /// Decompress `data` with the host tool.
    pub fn decompress(self, data: &[u8]) -> Result<Vec<u8>, ToolError> {
        let (tool, args) = self.decompressor();
        tools::run(tool, args, Some(data), None)
    }
}

/// The fields of a bzImage setup header that we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupHeader {
    /// Number of 512-byte setup sectors (0 means 4).
    pub setup_sects: u8,
    /// Boot protocol version, e.g. `0x020f`.
    pub protocol: u16,
    /// The kernel's version string, when the header points at one.
    pub kernel_version: Option<String>,
    /// Offset of the payload from the start of the protected-mode code.
    pub payload_offset: u32,
    /// Payload length, including the 4-byte size trailer.
    pub payload_length: u32,
    /// Memory the kernel needs before it can relocate itself.
    pub init_size: u32,
}

impl SetupHeader {
    /// Parse the setup header of a bzImage file's bytes.
    pub fn parse(image: &[u8]) -> Result<Self, BzImageError> {
        if image.len() < 0x270 {
            return Err(BzImageError::NotBzImage(
                "file shorter than the setup header",
            ));
        }
        if image[BOOT_FLAG..BOOT_FLAG + 2] != [0x55, 0xaa] {
            return Err(BzImageError::NotBzImage("no 0xAA55 boot flag"));
        }
        if &image[HEADER_MAGIC..HEADER_MAGIC + 4] != b"HdrS" {
            return Err(BzImageError::NotBzImage("no HdrS signature"));
        }
        let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().expect("4 bytes"));
        let protocol = u16_at(VERSION);
        if protocol < 0x0208 {
            return Err(BzImageError::TooOld {
                major: (protocol >> 8) as u8,
                minor: (protocol & 0xff) as u8,
            });
        }
        let kv_ptr = u16_at(KERNEL_VERSION) as usize;
        let kernel_version = (kv_ptr != 0)
            .then(|| image.get(kv_ptr + 0x200..))
            .flatten()
            .and_then(|s| s.split(|&c| c == 0).next())
            .map(|s| {
                String::from_utf8_lossy(&s[..s.len().min(256)])
                    .trim()
                    .to_string()
            });
        Ok(SetupHeader {
            setup_sects: image[SETUP_SECTS],
            protocol,
            kernel_version,
            payload_offset: u32_at(PAYLOAD_OFFSET),
            payload_length: u32_at(PAYLOAD_LENGTH),
            init_size: u32_at(INIT_SIZE),
        })
    }

    /// File offset where the protected-mode kernel starts.
    pub fn protected_mode_offset(&self) -> usize {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        (usize::from(sects) + 1) * 512
    }

    /// The payload bytes within `image` (which must be the file this header came from).
    pub fn payload<'a>(&self, image: &'a [u8]) -> Result<&'a [u8], BzImageError> {
        let offset = self.protected_mode_offset() + self.payload_offset as usize;
        let length = self.payload_length as usize;
        image
            .get(offset..offset.saturating_add(length))
            .filter(|p| p.len() >= 4)
            .ok_or(BzImageError::PayloadOutOfBounds {
                offset,
                length,
                file_len: image.len(),
            })
    }
}

/// The result of [`extract_vmlinux`].
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The setup header.
    pub header: SetupHeader,
    /// The payload's compression.
    pub codec: Codec,
    /// The uncompressed ELF vmlinux.
    pub vmlinux: Vec<u8>,
    /// Its PVH entry point, if it has the note.
    pub pvh_entry: Option<u64>,
}

/// Extract and check the ELF vmlinux inside a bzImage.
pub fn extract_vmlinux(image: &[u8]) -> Result<Extracted, BzImageError> {
    let header = SetupHeader::parse(image)?;
    let payload = header.payload(image)?;
    let codec = Codec::detect(payload).ok_or_else(|| {
        let head: Vec<String> = payload.iter().take(6).map(|b| format!("{b:02x}")).collect();
        BzImageError::UnknownCodec(head.join(" "))
    })?;
    let (stream, trailer) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    // gzip's own trailer is the size; the others have it appended after the stream.
    let stream = if codec == Codec::Gzip {
        payload
    } else {
        stream
    };
    let vmlinux = codec
        .decompress(stream)
        .map_err(|source| BzImageError::Decompress { codec, source })?;
    if vmlinux.len() as u64 % (1 << 32) != u64::from(expected) {
        return Err(BzImageError::SizeMismatch {
            expected,
            got: vmlinux.len(),
        });
    }
    let elf = Elf::parse(&vmlinux).map_err(BzImageError::NotElf)?;
    if elf.machine != EM_X86_64 {
        return Err(BzImageError::WrongMachine(elf.machine));
    }
    let pvh_entry = elf.pvh_entry().map_err(BzImageError::NotElf)?;
    Ok(Extracted {
        header,
        codec,
        vmlinux,
        pvh_entry,
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A fake bzImage: 1 setup sector + header, then `payload` at `payload_offset` 0x40.
    pub fn fake_bzimage(payload: &[u8], protocol: u16) -> Vec<u8> {
        let setup_sects = 1u8;
        let pm = (usize::from(setup_sects) + 1) * 512;
        let mut img = vec![0u8; pm + 0x40];
        img[super::SETUP_SECTS] = setup_sects;
        img[super::BOOT_FLAG..super::BOOT_FLAG + 2].copy_from_slice(&[0x55, 0xaa]);
        img[super::HEADER_MAGIC..super::HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        img[super::VERSION..super::VERSION + 2].copy_from_slice(&protocol.to_le_bytes());
        // Version string at 0x300 (pointer is relative to 0x200).
        img[super::KERNEL_VERSION..super::KERNEL_VERSION + 2]
            .copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x300 + 15].copy_from_slice(b"6.1.0-test #1\0\0");
        img[super::PAYLOAD_OFFSET..super::PAYLOAD_OFFSET + 4]
            .copy_from_slice(&0x40u32.to_le_bytes());
        img[super::PAYLOAD_LENGTH..super::PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailing junk");
        img
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::fake_bzimage;
    use super::*;
    use crate::image::elf::testutil::{build, note};
    use crate::image::elf::{ET_EXEC, XEN_ELFNOTE_PHYS32_ENTRY};

    #[test]
    fn parses_header_fields() {
        let img = fake_bzimage(b"\xfd7zXZ\x00rest1234", 0x020f);
        let h = SetupHeader::parse(&img).unwrap();
        assert_eq!(h.protocol, 0x020f);
        assert_eq!(h.protected_mode_offset(), 1024);
        assert_eq!(h.payload_offset, 0x40);
        assert_eq!(h.payload_length, 14);
        assert_eq!(h.kernel_version.as_deref(), Some("6.1.0-test #1"));
        let p = h.payload(&img).unwrap();
        assert_eq!(Codec::detect(p), Some(Codec::Xz));
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let h = SetupHeader {
            setup_sects: 0,
            protocol: 0x20f,
            kernel_version: None,
            payload_offset: 0,
            payload_length: 0,
            init_size: 0,
        };
        assert_eq!(h.protected_mode_offset(), 5 * 512);
    }

    #[test]
    fn rejects_non_bzimages() {
        assert!(matches!(
            SetupHeader::parse(&[0u8; 100]),
            Err(BzImageError::NotBzImage(_))
        ));
        let mut img = fake_bzimage(b"xxxx", 0x020f);
        img[HEADER_MAGIC] = b'X';
        assert!(matches!(
            SetupHeader::parse(&img),
            Err(BzImageError::NotBzImage(_))
        ));
        let img = fake_bzimage(b"xxxx", 0x0206);
        assert!(matches!(
            SetupHeader::parse(&img),
            Err(BzImageError::TooOld { major: 2, minor: 6 })
        ));
    }

    #[test]
    fn payload_out_of_bounds() {
        let mut img = fake_bzimage(b"\x1f\x8b1234", 0x020f);
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        let h = SetupHeader::parse(&img).unwrap();
        assert!(matches!(
            h.payload(&img),
            Err(BzImageError::PayloadOutOfBounds { .. })
        ));
    }

    #[test]
    fn detects_codecs() {
        assert_eq!(Codec::detect(b"\x28\xb5\x2f\xfd\x00"), Some(Codec::Zstd));
        assert_eq!(Codec::detect(b"\x1f\x8b\x08"), Some(Codec::Gzip));
        assert_eq!(Codec::detect(b"\x02\x21\x4c\x18"), Some(Codec::Lz4));
        assert_eq!(Codec::detect(b"\x7fELF"), None);
        let img = fake_bzimage(b"\x7fELFxxxx", 0x020f);
        assert!(matches!(
            extract_vmlinux(&img),
            Err(BzImageError::UnknownCodec(_))
        ));
    }

    /// Compress with the host tool, append the size trailer the kernel build appends.
    fn kernel_style_payload(codec: Codec, elf: &[u8]) -> Option<Vec<u8>> {
        let (tool, args): (_, &[&str]) = match codec {
            Codec::Xz => (crate::image::tools::XZ, &["-c", "--check=crc32"]),
            Codec::Zstd => (crate::image::tools::ZSTD, &["-c", "-q"]),
            _ => unreachable!(),
        };
        match crate::image::tools::run(tool, args, Some(elf), None) {
            Ok(mut c) => {
                c.extend_from_slice(&(elf.len() as u32).to_le_bytes());
                Some(c)
            }
            Err(ToolError::Missing { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn extracts_vmlinux_with_pvh_note_xz_and_zstd() {
        let notes = note(
            "Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0100_0f00u32.to_le_bytes(),
        );
        let elf = build(ET_EXEC, 0xffff_ffff_8100_0000, Some(&notes), false, &[]);
        for codec in [Codec::Xz, Codec::Zstd] {
            let Some(payload) = kernel_style_payload(codec, &elf) else {
                base::tier::skip(
                    base::tier::Tier::Tool,
                    &format!("the {codec} compressor is not installed"),
                );
                continue;
            };
            let img = fake_bzimage(&payload, 0x020f);
            let x = extract_vmlinux(&img).unwrap();
            assert_eq!(x.codec, codec);
            assert_eq!(x.vmlinux, elf);
            assert_eq!(x.pvh_entry, Some(0x0100_0f00));
        }
    }

    #[test]
    fn wrong_size_trailer_is_detected() {
        let elf = build(ET_EXEC, 0, None, false, &[]);
        let Some(mut payload) = kernel_style_payload(Codec::Xz, &elf) else {
            return;
        };
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&12345u32.to_le_bytes());
        let img = fake_bzimage(&payload, 0x020f);
        assert!(matches!(
            extract_vmlinux(&img),
            Err(BzImageError::SizeMismatch {
                expected: 12345,
                ..
            })
        ));
    }

    #[test]
    fn corrupt_stream_names_the_codec() {
        let img = fake_bzimage(b"\xfd7zXZ\x00garbagegarbage\x10\x00\x00\x00", 0x020f);
        match extract_vmlinux(&img) {
            Err(
                e @ BzImageError::Decompress {
                    codec: Codec::Xz, ..
                },
            ) => assert!(e.to_string().contains("xz")),
            other => panic!("{other:?}"),
        }
    }
}
