//! A read-only view of an ELF64 little-endian file, on top of the `object`
//! crate's ELF reader: just enough to check a vmlinux (type, entry, PVH note),
//! tell a static executable from a dynamic one, and read a kernel module's
//! `.modinfo` section.
//!
//! `object` does the parsing and the bounds checks; this module keeps the small
//! owned view the image builder works with ([`ProgramHeader`], [`SectionHeader`],
//! [`Note`]) and turns `object`'s errors into [`ElfError`]s that name the part of
//! the file that was bad.

use object::elf::FileHeader64;
use object::read::elf::{FileHeader as _, NoteIterator, ProgramHeader as _, SectionHeader as _};
use object::LittleEndian;

/// `PT_INTERP`: the program needs a dynamic loader.
pub const PT_INTERP: u32 = object::elf::PT_INTERP;
/// `PT_NOTE`: a segment of notes.
pub const PT_NOTE: u32 = object::elf::PT_NOTE;
/// `SHT_NOTE`: a section of notes.
pub const SHT_NOTE: u32 = object::elf::SHT_NOTE;
/// `ET_EXEC`.
pub const ET_EXEC: u16 = object::elf::ET_EXEC;
/// `ET_DYN` (shared objects and position-independent executables).
pub const ET_DYN: u16 = object::elf::ET_DYN;
/// `ET_REL` (relocatable objects such as kernel modules).
pub const ET_REL: u16 = object::elf::ET_REL;
/// `EM_X86_64`.
pub const EM_X86_64: u16 = object::elf::EM_X86_64;
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// The only layout read here.
type Header = FileHeader64<LittleEndian>;
const LE: LittleEndian = LittleEndian;

/// Errors from parsing an ELF file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// Not 64-bit little-endian, or not ELF version 1.
    #[error("unsupported ELF class/encoding/version (need ELF64 little-endian, version 1)")]
    Unsupported,
    /// A header, table or note is out of bounds or malformed.
    #[error("truncated or corrupt ELF: {0} out of bounds")]
    OutOfBounds(&'static str),
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `p_type`.
    pub kind: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_align`.
    pub align: u64,
}

/// One section header (with its name resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// Name from the section-name string table.
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_offset`.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_addralign`.
    pub align: u64,
}

/// One ELF note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// Owner name without its terminating NUL (e.g. `b"Xen"`).
    pub name: &'a [u8],
    /// `n_type`.
    pub kind: u32,
    /// Descriptor bytes.
    pub desc: &'a [u8],
}

/// A parsed view over the bytes of an ELF64 little-endian file.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    data: &'a [u8],
    header: &'a Header,
    /// `e_type`.
    pub kind: u16,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
}

/// The notes in one note segment or section. Alignments other than 8 are
/// read as 4, as binutils does.
fn parse_notes(b: &[u8], align: u64) -> Result<Vec<Note<'_>>, ElfError> {
    let align = if align == 8 { 8 } else { 4 };
    let notes =
        NoteIterator::<Header>::new(LE, align, b).map_err(|_| ElfError::OutOfBounds("note"))?;
    notes
        .map(|n| {
            let n = n.map_err(|_| ElfError::OutOfBounds("note"))?;
            Ok(Note {
                name: n.name(),
                kind: n.n_type(LE),
                desc: n.desc(),
            })
        })
        .collect()
}

impl<'a> Elf<'a> {
    /// Parse the ELF header of `data` (at any alignment).
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if !data.starts_with(&object::elf::ELFMAG) {
            return Err(ElfError::BadMagic);
        }
        if data.len() < std::mem::size_of::<Header>() {
            return Err(ElfError::OutOfBounds("ELF header"));
        }
        // With the magic and the length checked, what object can reject is
        // the class, the version or (for big-endian files) the encoding.
        let header = Header::parse(data)
            .ok()
            .filter(|h| h.endian().is_ok())
            .ok_or(ElfError::Unsupported)?;
        Ok(Elf {
            data,
            header,
            kind: header.e_type(LE),
            machine: header.e_machine(LE),
            entry: header.e_entry(LE),
        })
    }

    fn raw_program_headers(
        &self,
    ) -> Result<&'a [object::elf::ProgramHeader64<LittleEndian>], ElfError> {
        self.header
            .program_headers(LE, self.data)
            .map_err(|_| ElfError::OutOfBounds("program headers"))
    }

    fn sections(&self) -> Result<object::read::elf::SectionTable<'a, Header>, ElfError> {
        self.header
            .sections(LE, self.data)
            .map_err(|_| ElfError::OutOfBounds("section headers"))
    }

    /// All program headers.
    pub fn program_headers(&self) -> Result<Vec<ProgramHeader>, ElfError> {
        Ok(self
            .raw_program_headers()?
            .iter()
            .map(|p| ProgramHeader {
                kind: p.p_type(LE),
                offset: p.p_offset(LE),
                paddr: p.p_paddr(LE),
                filesz: p.p_filesz(LE),
                align: p.p_align(LE),
            })
            .collect())
    }

    /// All section headers, with names (empty when a name cannot be read).
    pub fn section_headers(&self) -> Result<Vec<SectionHeader>, ElfError> {
        let table = self.sections()?;
        Ok(table
            .iter()
            .map(|s| SectionHeader {
                name: table
                    .section_name(LE, s)
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default(),
                kind: s.sh_type(LE),
                offset: s.sh_offset(LE),
                size: s.sh_size(LE),
                align: s.sh_addralign(LE),
            })
            .collect())
    }

    /// The contents of the first section called `name`, if any (empty for a
    /// section that takes no room in the file, such as `.bss`).
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        let table = self.sections()?;
        match table.section_by_name(LE, name.as_bytes()) {
            Some((_, s)) => s
                .data(LE, self.data)
                .map(Some)
                .map_err(|_| ElfError::OutOfBounds("section")),
            None => Ok(None),
        }
    }

    /// All notes: from `PT_NOTE` segments, or from `SHT_NOTE` sections when the
    /// file has no program headers (relocatable objects).
    pub fn notes(&self) -> Result<Vec<Note<'a>>, ElfError> {
        let mut notes = Vec::new();
        let phdrs = self.raw_program_headers()?;
        if !phdrs.is_empty() {
            for p in phdrs.iter().filter(|p| p.p_type(LE) == PT_NOTE) {
                let b = p
                    .data(LE, self.data)
                    .map_err(|_| ElfError::OutOfBounds("note segment"))?;
                notes.extend(parse_notes(b, p.p_align(LE))?);
            }
        } else {
            for s in self
                .sections()?
                .iter()
                .filter(|s| s.sh_type(LE) == SHT_NOTE)
            {
                let b = s
                    .data(LE, self.data)
                    .map_err(|_| ElfError::OutOfBounds("note section"))?;
                notes.extend(parse_notes(b, s.sh_addralign(LE))?);
            }
        }
        Ok(notes)
    }

    /// The PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY` in a "Xen" note), if present.
    pub fn pvh_entry(&self) -> Result<Option<u64>, ElfError> {
        for n in self.notes()? {
            if n.name == b"Xen" && n.kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let v = match *n.desc {
                    [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
                    _ => return Err(ElfError::OutOfBounds("PVH note descriptor")),
                };
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether the program needs a dynamic loader (has `PT_INTERP`).
    ///
    /// A static-pie executable is `ET_DYN` without `PT_INTERP`.
    pub fn has_interpreter(&self) -> Result<bool, ElfError> {
        Ok(self
            .raw_program_headers()?
            .iter()
            .any(|p| p.p_type(LE) == PT_INTERP))
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Build small synthetic ELF files for tests.

    /// A section to put in a synthetic ELF: name, type, contents.
    pub struct Sec<'a>(pub &'a str, pub u32, pub &'a [u8]);

    /// Encode one 4-aligned note.
    pub fn note(name: &str, kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        v.extend((n.len() as u32).to_le_bytes());
        v.extend((desc.len() as u32).to_le_bytes());
        v.extend(kind.to_le_bytes());
        v.extend(&n);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// An ELF64 LE file with the given type, optional PT_NOTE/PT_INTERP segments and sections.
    pub fn build(
        kind: u16,
        entry: u64,
        notes: Option<&[u8]>,
        interp: bool,
        secs: &[Sec<'_>],
    ) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&kind.to_le_bytes());
        out[18..20].copy_from_slice(&super::EM_X86_64.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        // Payloads first, then tables.
        let mut phdrs: Vec<(u32, u64, u64)> = Vec::new();
        if let Some(n) = notes {
            phdrs.push((super::PT_NOTE, out.len() as u64, n.len() as u64));
            out.extend(n);
        }
        if interp {
            let s = b"/lib64/ld-linux-x86-64.so.2\0";
            phdrs.push((super::PT_INTERP, out.len() as u64, s.len() as u64));
            out.extend(s);
        }
        let mut shstr = vec![0u8];
        let mut shdrs: Vec<(u32, u32, u64, u64)> = vec![(0, 0, 0, 0)];
        for s in secs {
            let name_off = shstr.len() as u32;
            shstr.extend(s.0.as_bytes());
            shstr.push(0);
            shdrs.push((name_off, s.1, out.len() as u64, s.2.len() as u64));
            out.extend(s.2);
        }
        let shstr_name = shstr.len() as u32;
        shstr.extend(b".shstrtab\0");
        shdrs.push((shstr_name, 3, out.len() as u64, shstr.len() as u64));
        out.extend(&shstr);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let phoff = out.len() as u64;
        for (t, off, sz) in &phdrs {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[32..40].copy_from_slice(&sz.to_le_bytes());
            p[48..56].copy_from_slice(&4u64.to_le_bytes());
            out.extend(p);
        }
        let shoff = out.len() as u64;
        for (name, t, off, sz) in &shdrs {
            let mut s = vec![0u8; 64];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&t.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&sz.to_le_bytes());
            s[48..56].copy_from_slice(&1u64.to_le_bytes());
            out.extend(s);
        }
        out[32..40].copy_from_slice(&(if phdrs.is_empty() { 0 } else { phoff }).to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&(shdrs.len() as u16).to_le_bytes());
        out[62..64].copy_from_slice(&((shdrs.len() - 1) as u16).to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{build, note, Sec};
    use super::*;

    #[test]
    fn rejects_non_elf() {
        assert_eq!(Elf::parse(b"MZ\x90\0").unwrap_err(), ElfError::BadMagic);
        assert_eq!(
            Elf::parse(b"\x7fELF").unwrap_err(),
            ElfError::OutOfBounds("ELF header")
        );
        let mut e = build(ET_EXEC, 0, None, false, &[]);
        e[4] = 1; // ELF32
        assert_eq!(Elf::parse(&e).unwrap_err(), ElfError::Unsupported);
    }

    #[test]
    fn finds_pvh_note_among_others() {
        let mut notes = note(
            "GNU",
            3,
            &[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            ],
        );
        notes.extend(note("Xen", 6, b"linux\0"));
        notes.extend(note(
            "Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0100_0f00u32.to_le_bytes(),
        ));
        let e = build(ET_EXEC, 0xffff_ffff_8100_0000, Some(&notes), false, &[]);
        let elf = Elf::parse(&e).unwrap();
        assert_eq!(elf.kind, ET_EXEC);
        assert_eq!(elf.machine, EM_X86_64);
        assert_eq!(elf.entry, 0xffff_ffff_8100_0000);
        assert_eq!(elf.notes().unwrap().len(), 3);
        assert_eq!(elf.pvh_entry().unwrap(), Some(0x0100_0f00));
        assert!(!elf.has_interpreter().unwrap());
    }

    #[test]
    fn eight_byte_pvh_descriptor_and_absent_note() {
        let notes = note(
            "Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x1234_5678u64.to_le_bytes(),
        );
        let e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        assert_eq!(
            Elf::parse(&e).unwrap().pvh_entry().unwrap(),
            Some(0x1234_5678)
        );
        let notes = note("GNU", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        let e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        assert_eq!(Elf::parse(&e).unwrap().pvh_entry().unwrap(), None);
    }

    #[test]
    fn truncated_note_is_an_error() {
        let mut notes = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        notes[4] = 200; // descsz beyond the segment
        let e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        assert_eq!(
            Elf::parse(&e).unwrap().pvh_entry().unwrap_err(),
            ElfError::OutOfBounds("note")
        );
    }

    #[test]
    fn interpreter_detection() {
        let e = build(ET_DYN, 0, None, true, &[]);
        assert!(Elf::parse(&e).unwrap().has_interpreter().unwrap());
        let e = build(ET_DYN, 0, Some(&note("GNU", 1, &[0; 4])), false, &[]);
        assert!(!Elf::parse(&e).unwrap().has_interpreter().unwrap());
    }

    #[test]
    fn reads_sections_by_name() {
        let modinfo = b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0";
        let e = build(
            ET_REL,
            0,
            None,
            false,
            &[Sec(".text", 1, b"\x90\x90"), Sec(".modinfo", 1, modinfo)],
        );
        let elf = Elf::parse(&e).unwrap();
        assert_eq!(elf.section(".modinfo").unwrap(), Some(&modinfo[..]));
        assert_eq!(elf.section(".nope").unwrap(), None);
        let names: Vec<String> = elf
            .section_headers()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["", ".text", ".modinfo", ".shstrtab"]);
    }

    /// Where the (only) program header's `p_align` and `p_filesz` are in `build`'s output.
    fn phdr_field(e: &[u8], field: usize) -> std::ops::Range<usize> {
        let phoff = u64::from_le_bytes(e[32..40].try_into().unwrap()) as usize;
        phoff + field..phoff + field + 8
    }

    #[test]
    fn wrong_version_is_unsupported() {
        let mut e = build(ET_EXEC, 0, None, false, &[]);
        e[6] = 2; // EI_VERSION
        assert_eq!(Elf::parse(&e).unwrap_err(), ElfError::Unsupported);
        let mut e = build(ET_EXEC, 0, None, false, &[]);
        e[5] = 2; // big-endian
        assert_eq!(Elf::parse(&e).unwrap_err(), ElfError::Unsupported);
    }

    #[test]
    fn parses_at_any_alignment() {
        let notes = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &9u32.to_le_bytes());
        let e = build(ET_EXEC, 5, Some(&notes), true, &[Sec(".x", 1, b"abc")]);
        let mut shifted = vec![0u8];
        shifted.extend(&e);
        let elf = Elf::parse(&shifted[1..]).unwrap();
        assert_eq!(elf.entry, 5);
        assert_eq!(elf.pvh_entry().unwrap(), Some(9));
        assert!(elf.has_interpreter().unwrap());
        assert_eq!(elf.section(".x").unwrap(), Some(&b"abc"[..]));
    }

    #[test]
    fn odd_note_alignment_reads_as_four() {
        let notes = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &3u32.to_le_bytes());
        let mut e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        let align = phdr_field(&e, 48);
        e[align].copy_from_slice(&16u64.to_le_bytes());
        assert_eq!(Elf::parse(&e).unwrap().pvh_entry().unwrap(), Some(3));
    }

    #[test]
    fn corrupt_tables_are_errors() {
        // A note segment reaching past the end of the file.
        let notes = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        let mut e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        let filesz = phdr_field(&e, 32);
        e[filesz].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(
            Elf::parse(&e).unwrap().notes().unwrap_err(),
            ElfError::OutOfBounds("note segment")
        );
        // Bytes after the last note too few for a note header.
        let mut notes = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
        notes.extend([0; 4]);
        let e = build(ET_EXEC, 0, Some(&notes), false, &[]);
        assert_eq!(
            Elf::parse(&e).unwrap().pvh_entry().unwrap_err(),
            ElfError::OutOfBounds("note")
        );
        // Program headers of the wrong size, or past the end of the file.
        let mut e = build(ET_DYN, 0, None, true, &[]);
        e[54..56].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            Elf::parse(&e).unwrap().has_interpreter().unwrap_err(),
            ElfError::OutOfBounds("program headers")
        );
        let mut e = build(ET_DYN, 0, None, true, &[]);
        e[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(
            Elf::parse(&e).unwrap().program_headers().unwrap_err(),
            ElfError::OutOfBounds("program headers")
        );
        // Section headers past the end of the file.
        let mut e = build(ET_REL, 0, None, false, &[Sec(".modinfo", 1, b"x\0")]);
        e[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(
            Elf::parse(&e).unwrap().section(".modinfo").unwrap_err(),
            ElfError::OutOfBounds("section headers")
        );
    }

    #[test]
    fn bss_like_sections_are_empty() {
        // SHT_NOBITS (8) takes no room in the file, whatever its size says.
        let mut e = build(ET_REL, 0, None, false, &[Sec(".bss", 8, b"")]);
        let shoff = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
        let size = shoff + 64 + 32; // section 1's sh_size
        e[size..size + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let elf = Elf::parse(&e).unwrap();
        assert_eq!(elf.section(".bss").unwrap(), Some(&[][..]));
        assert_eq!(elf.section_headers().unwrap()[1].size, 1 << 40);
    }

    #[test]
    fn section_notes_when_no_program_headers() {
        let n = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &7u32.to_le_bytes());
        let e = build(ET_REL, 0, None, false, &[Sec(".note.Xen", SHT_NOTE, &n)]);
        assert_eq!(Elf::parse(&e).unwrap().pvh_entry().unwrap(), Some(7));
    }
}
