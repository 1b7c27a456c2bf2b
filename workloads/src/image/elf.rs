//! A minimal, read-only ELF64 little-endian parser: just enough to check a
//! vmlinux (type, entry, PVH note), tell a static executable from a dynamic
//! one, and read a kernel module's `.modinfo` section.

/// `PT_INTERP`: the program needs a dynamic loader.
pub const PT_INTERP: u32 = 3;
/// `PT_NOTE`: a segment of notes.
pub const PT_NOTE: u32 = 4;
/// `SHT_NOTE`: a section of notes.
pub const SHT_NOTE: u32 = 7;
/// `ET_EXEC`.
pub const ET_EXEC: u16 = 2;
/// `ET_DYN` (shared objects and position-independent executables).
pub const ET_DYN: u16 = 3;
/// `ET_REL` (relocatable objects such as kernel modules).
pub const ET_REL: u16 = 1;
/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Errors from parsing an ELF file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// Not 64-bit little-endian.
    #[error("unsupported ELF class/encoding (need ELF64 little-endian)")]
    Unsupported,
    /// A header or table points outside the file.
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
    /// `e_type`.
    pub kind: u16,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
    shoff: u64,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

fn slice<'a>(data: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::OutOfBounds(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::OutOfBounds(what))?;
    let end = start.checked_add(len).ok_or(ElfError::OutOfBounds(what))?;
    data.get(start..end).ok_or(ElfError::OutOfBounds(what))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn align_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// Parse the notes in one note segment or section. `align` is 4 or 8.
fn parse_notes(mut b: &[u8], align: usize) -> Result<Vec<Note<'_>>, ElfError> {
    let mut notes = Vec::new();
    while b.len() >= 12 {
        let namesz = u32_at(b, 0) as usize;
        let descsz = u32_at(b, 4) as usize;
        let kind = u32_at(b, 8);
        let name_off = 12;
        let desc_off = align_up(name_off + namesz, align);
        let next = align_up(desc_off + descsz, align);
        if desc_off + descsz > b.len() {
            return Err(ElfError::OutOfBounds("note"));
        }
        let mut name = &b[name_off..name_off + namesz];
        if let Some((&0, rest)) = name.split_last() {
            name = rest;
        }
        notes.push(Note {
            name,
            kind,
            desc: &b[desc_off..desc_off + descsz],
        });
        b = &b[next.min(b.len())..];
    }
    Ok(notes)
}

impl<'a> Elf<'a> {
    /// Parse the ELF header of `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if data.len() < 64 {
            return Err(ElfError::OutOfBounds("ELF header"));
        }
        if data[4] != 2 || data[5] != 1 {
            return Err(ElfError::Unsupported);
        }
        Ok(Elf {
            data,
            kind: u16_at(data, 16),
            machine: u16_at(data, 18),
            entry: u64_at(data, 24),
            phoff: u64_at(data, 32),
            shoff: u64_at(data, 40),
            phentsize: u16_at(data, 54),
            phnum: u16_at(data, 56),
            shentsize: u16_at(data, 58),
            shnum: u16_at(data, 60),
            shstrndx: u16_at(data, 62),
        })
    }

    /// All program headers.
    pub fn program_headers(&self) -> Result<Vec<ProgramHeader>, ElfError> {
        if self.phnum == 0 {
            return Ok(Vec::new());
        }
        if self.phentsize < 56 {
            return Err(ElfError::OutOfBounds("program header size"));
        }
        let size = u64::from(self.phentsize);
        let table = slice(
            self.data,
            self.phoff,
            size * u64::from(self.phnum),
            "program headers",
        )?;
        Ok(table
            .chunks_exact(usize::from(self.phentsize))
            .map(|p| ProgramHeader {
                kind: u32_at(p, 0),
                offset: u64_at(p, 8),
                paddr: u64_at(p, 24),
                filesz: u64_at(p, 32),
                align: u64_at(p, 48),
            })
            .collect())
    }

    /// All section headers, with names.
    pub fn section_headers(&self) -> Result<Vec<SectionHeader>, ElfError> {
        if self.shnum == 0 {
            return Ok(Vec::new());
        }
        if self.shentsize < 64 {
            return Err(ElfError::OutOfBounds("section header size"));
        }
        let size = u64::from(self.shentsize);
        let table = slice(
            self.data,
            self.shoff,
            size * u64::from(self.shnum),
            "section headers",
        )?;
        let raw: Vec<(u32, u32, u64, u64, u64)> = table
            .chunks_exact(usize::from(self.shentsize))
            .map(|s| {
                (
                    u32_at(s, 0),
                    u32_at(s, 4),
                    u64_at(s, 24),
                    u64_at(s, 32),
                    u64_at(s, 48),
                )
            })
            .collect();
        let strtab = match raw.get(usize::from(self.shstrndx)) {
            Some(&(_, _, off, len, _)) => slice(self.data, off, len, "section name table")?,
            None => &[][..],
        };
        Ok(raw
            .into_iter()
            .map(|(name_off, kind, offset, size, align)| {
                let name = strtab
                    .get(name_off as usize..)
                    .and_then(|s| s.split(|&c| c == 0).next())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default();
                SectionHeader {
                    name,
                    kind,
                    offset,
                    size,
                    align,
                }
            })
            .collect())
    }

    /// The contents of the first section called `name`, if any.
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        for s in self.section_headers()? {
            if s.name == name {
                return slice(self.data, s.offset, s.size, "section").map(Some);
            }
        }
        Ok(None)
    }

    /// All notes: from `PT_NOTE` segments, or from `SHT_NOTE` sections when the
    /// file has no program headers (relocatable objects).
    pub fn notes(&self) -> Result<Vec<Note<'a>>, ElfError> {
        let mut notes = Vec::new();
        let phdrs = self.program_headers()?;
        if !phdrs.is_empty() {
            for p in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
                let b = slice(self.data, p.offset, p.filesz, "note segment")?;
                notes.extend(parse_notes(b, if p.align == 8 { 8 } else { 4 })?);
            }
        } else {
            for s in self
                .section_headers()?
                .iter()
                .filter(|s| s.kind == SHT_NOTE)
            {
                let b = slice(self.data, s.offset, s.size, "note section")?;
                notes.extend(parse_notes(b, if s.align == 8 { 8 } else { 4 })?);
            }
        }
        Ok(notes)
    }

    /// The PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY` in a "Xen" note), if present.
    pub fn pvh_entry(&self) -> Result<Option<u64>, ElfError> {
        for n in self.notes()? {
            if n.name == b"Xen" && n.kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let v = match n.desc.len() {
                    4 => u64::from(u32_at(n.desc, 0)),
                    8 => u64_at(n.desc, 0),
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
        Ok(self.program_headers()?.iter().any(|p| p.kind == PT_INTERP))
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

    #[test]
    fn section_notes_when_no_program_headers() {
        let n = note("Xen", XEN_ELFNOTE_PHYS32_ENTRY, &7u32.to_le_bytes());
        let e = build(ET_REL, 0, None, false, &[Sec(".note.Xen", SHT_NOTE, &n)]);
        assert_eq!(Elf::parse(&e).unwrap().pvh_entry().unwrap(), Some(7));
    }
}
