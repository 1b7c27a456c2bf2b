//! A small AML (ACPI Machine Language) encoder: the subset a DSDT needs to describe
//! fixed devices — scopes, devices, named objects, integers, strings, packages and
//! resource templates (ACPI 6.5, chapter 20 and section 6.4).
//!
//! Every function returns the encoded bytes of one term, so terms nest by passing
//! the children's bytes to the parent.

/// Errors building AML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmlError {
    /// A name segment is empty, longer than 4 characters, or has characters AML forbids.
    #[error("invalid AML name {0:?}")]
    BadName(String),
    /// A package or buffer is larger than AML's package length can express.
    #[error("AML object of {0} bytes is too large")]
    TooLarge(usize),
    /// A package has more than 255 elements.
    #[error("AML package with {0} elements (at most 255)")]
    TooManyElements(usize),
}

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

/// Encode a `PkgLength` for a body of `body_len` bytes (the length counts itself).
pub fn pkg_length(body_len: usize) -> Result<Vec<u8>, AmlError> {
    if body_len + 1 < 0x40 {
        return Ok(vec![(body_len + 1) as u8]);
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut v = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            for i in 0..extra {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return Ok(v);
        }
    }
    Err(AmlError::TooLarge(body_len))
}

fn name_seg(seg: &str) -> Result<[u8; 4], AmlError> {
    let b = seg.as_bytes();
    let ok_lead = |c: u8| c.is_ascii_uppercase() || c == b'_';
    let ok = |c: u8| ok_lead(c) || c.is_ascii_digit();
    if b.is_empty() || b.len() > 4 || !ok_lead(b[0]) || !b.iter().all(|&c| ok(c)) {
        return Err(AmlError::BadName(seg.to_string()));
    }
    let mut out = [b'_'; 4];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// Encode a name string: `\` for the root, then segments separated by `.`
/// (e.g. `\_SB_`, `_HID`, `_SB_.VR00`). Short segments are padded with `_`.
pub fn name_string(path: &str) -> Result<Vec<u8>, AmlError> {
    let (root, rest) = match path.strip_prefix('\\') {
        Some(r) => (true, r),
        None => (false, path),
    };
    let segs: Vec<[u8; 4]> = rest.split('.').map(name_seg).collect::<Result<_, _>>()?;
    let mut v = Vec::with_capacity(2 + 4 * segs.len());
    if root {
        v.push(ROOT_CHAR);
    }
    match segs.len() {
        1 => {}
        2 => v.push(DUAL_NAME_PREFIX),
        n if n <= 255 => {
            v.push(MULTI_NAME_PREFIX);
            v.push(n as u8);
        }
        _ => return Err(AmlError::BadName(path.to_string())),
    }
    for s in segs {
        v.extend_from_slice(&s);
    }
    Ok(v)
}

/// An integer constant, in the shortest encoding.
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        v if v <= 0xff => vec![BYTE_PREFIX, v as u8],
        v if v <= 0xffff => {
            let mut out = vec![WORD_PREFIX];
            out.extend_from_slice(&(v as u16).to_le_bytes());
            out
        }
        v if v <= 0xffff_ffff => {
            let mut out = vec![DWORD_PREFIX];
            out.extend_from_slice(&(v as u32).to_le_bytes());
            out
        }
        v => {
            let mut out = vec![QWORD_PREFIX];
            out.extend_from_slice(&v.to_le_bytes());
            out
        }
    }
}

/// A string constant (ASCII, no NUL).
pub fn string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    v.push(STRING_PREFIX);
    v.extend(s.bytes().filter(|&b| b != 0 && b.is_ascii()));
    v.push(0);
    v
}

/// `Name(path, value)`.
pub fn name(path: &str, value: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut v = vec![NAME_OP];
    v.extend(name_string(path)?);
    v.extend_from_slice(value);
    Ok(v)
}

fn with_pkg(prefix: &[u8], body: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut v = prefix.to_vec();
    v.extend(pkg_length(body.len())?);
    v.extend_from_slice(body);
    Ok(v)
}

/// `Scope(path) { children }`.
pub fn scope(path: &str, children: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let mut body = name_string(path)?;
    children.iter().for_each(|c| body.extend_from_slice(c));
    with_pkg(&[SCOPE_OP], &body)
}

/// `Device(path) { children }`.
pub fn device(path: &str, children: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let mut body = name_string(path)?;
    children.iter().for_each(|c| body.extend_from_slice(c));
    with_pkg(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Package() { elements }`.
pub fn package(elements: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let n = u8::try_from(elements.len()).map_err(|_| AmlError::TooManyElements(elements.len()))?;
    let mut body = vec![n];
    elements.iter().for_each(|e| body.extend_from_slice(e));
    with_pkg(&[PACKAGE_OP], &body)
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    with_pkg(&[BUFFER_OP], &body)
}

/// `ResourceTemplate() { descriptors }`: a buffer of resource descriptors closed by an
/// end tag (checksum 0, meaning "not computed", which the specification allows).
pub fn resource_template(descriptors: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let mut bytes: Vec<u8> = descriptors.concat();
    bytes.extend_from_slice(&[0x79, 0x00]);
    buffer(&bytes)
}

/// `Memory32Fixed(ReadWrite|ReadOnly, base, length)`.
pub fn memory32_fixed(read_write: bool, base: u32, length: u32) -> Vec<u8> {
    let mut v = vec![0x86, 0x09, 0x00, u8::from(read_write)];
    v.extend_from_slice(&base.to_le_bytes());
    v.extend_from_slice(&length.to_le_bytes());
    v
}

/// `IO(Decode16, min, max, alignment, length)`.
pub fn io(min: u16, max: u16, alignment: u8, length: u8) -> Vec<u8> {
    let mut v = vec![0x47, 0x01];
    v.extend_from_slice(&min.to_le_bytes());
    v.extend_from_slice(&max.to_le_bytes());
    v.push(alignment);
    v.push(length);
    v
}

/// `IRQNoFlags() { irq }`: an ISA interrupt (edge-triggered, active high).
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    let mask = 1u16 << (irq & 15);
    vec![0x22, mask as u8, (mask >> 8) as u8]
}

/// `EisaId("PNP0501")`: a compressed EISA ID as an integer, or `None` if `id` is not
/// three capital letters and four hex digits.
pub fn eisa_id(id: &str) -> Option<Vec<u8>> {
    let b = id.as_bytes();
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let product = u16::from_str_radix(&id[3..], 16).ok()?;
    let vendor = b[..3]
        .iter()
        .fold(0u16, |v, &c| (v << 5) | u16::from(c - 0x40));
    let bytes = [
        (vendor >> 8) as u8,
        vendor as u8,
        (product >> 8) as u8,
        product as u8,
    ];
    Some(integer(u64::from(u32::from_le_bytes(bytes))))
}

/// How an interrupt line signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered, active high.
    EdgeHigh,
    /// Level-triggered, active high.
    LevelHigh,
}

/// `Interrupt(ResourceConsumer, trigger, Exclusive) { gsi }` (extended interrupt descriptor).
pub fn interrupt(trigger: Trigger, gsi: u32) -> Vec<u8> {
    // Flags: bit 0 consumer, bit 1 edge, bit 2 active low, bit 3 shared.
    let flags = match trigger {
        Trigger::EdgeHigh => 0b0011,
        Trigger::LevelHigh => 0b0001,
    };
    let mut v = vec![0x89, 0x06, 0x00, flags, 0x01];
    v.extend_from_slice(&gsi.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lengths() {
        assert_eq!(pkg_length(0).unwrap(), vec![1]);
        assert_eq!(pkg_length(62).unwrap(), vec![63]);
        // 63 + 2 bytes of length = 65 = 0x41: low nibble 1, then 0x04.
        assert_eq!(pkg_length(63).unwrap(), vec![0x41, 0x04]);
        assert_eq!(pkg_length(4093).unwrap(), vec![0x4f, 0xff]);
        // 4094 + 3 = 4097 = 0x1001.
        assert_eq!(pkg_length(4094).unwrap(), vec![0x81, 0x00, 0x01]);
        assert!(pkg_length(1 << 28).is_err());
    }

    #[test]
    fn names_and_integers() {
        assert_eq!(name_string("\\_SB_").unwrap(), b"\\_SB_".to_vec());
        assert_eq!(name_string("_S5").unwrap(), b"_S5_".to_vec());
        let mut dual = vec![DUAL_NAME_PREFIX];
        dual.extend_from_slice(b"_SB_VR00");
        assert_eq!(name_string("_SB_.VR00").unwrap(), dual);
        for bad in ["", "toolong", "1ABC", "ab", "A.B.", "\\"] {
            assert!(name_string(bad).is_err(), "{bad}");
        }
        assert_eq!(integer(0), vec![0]);
        assert_eq!(integer(1), vec![1]);
        assert_eq!(integer(5), vec![0x0a, 5]);
        assert_eq!(integer(0x1234), vec![0x0b, 0x34, 0x12]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32)[0], 0x0e);
        assert_eq!(string("LNRO0005"), b"\x0dLNRO0005\0".to_vec());
    }

    #[test]
    fn device_with_resources_matches_hand_assembly() {
        // Device(VR00) { Name(_HID, "LNRO0005") Name(_CRS, ResourceTemplate() {
        //   Memory32Fixed(ReadWrite, 0xd0000000, 0x1000) Interrupt(..., Edge, ...) {5} }) }
        let crs = resource_template(&[
            memory32_fixed(true, 0xd000_0000, 0x1000),
            interrupt(Trigger::EdgeHigh, 5),
        ])
        .unwrap();
        // 12 + 9 + 2 = 23 descriptor bytes; buffer body = size prefix (2) + 23 = 25.
        assert_eq!(&crs[..4], &[BUFFER_OP, 26, BYTE_PREFIX, 23]);
        assert_eq!(&crs[4..8], &[0x86, 0x09, 0x00, 0x01]);
        assert_eq!(&crs[16..21], &[0x89, 0x06, 0x00, 0x03, 0x01]);
        assert_eq!(&crs[21..25], &5u32.to_le_bytes());
        assert_eq!(&crs[25..], &[0x79, 0x00]);
        let hid = name("_HID", &string("LNRO0005")).unwrap();
        let crs_name = name("_CRS", &crs).unwrap();
        let dev = device("VR00", &[hid.clone(), crs_name.clone()]).unwrap();
        let body_len = 4 + hid.len() + crs_name.len();
        assert_eq!(&dev[..2], &[EXT_OP_PREFIX, DEVICE_OP]);
        assert_eq!(dev[2] as usize, body_len + 1);
        assert_eq!(&dev[3..7], b"VR00");
        assert_eq!(dev.len(), 3 + body_len);
    }

    #[test]
    fn eisa_ids_and_isa_irqs() {
        assert_eq!(eisa_id("PNP0501"), Some(integer(0x0105_d041)));
        assert_eq!(eisa_id("PNP0C09"), Some(integer(0x090c_d041)));
        assert_eq!(eisa_id("pnp0501"), None);
        assert_eq!(eisa_id("PNP05G1"), None);
        assert_eq!(irq_no_flags(4), vec![0x22, 0x10, 0x00]);
        assert_eq!(irq_no_flags(12), vec![0x22, 0x00, 0x10]);
    }

    #[test]
    fn packages() {
        let p = package(&[integer(5), integer(0)]).unwrap();
        assert_eq!(p, vec![PACKAGE_OP, 5, 2, BYTE_PREFIX, 5, ZERO_OP]);
        let many: Vec<Vec<u8>> = (0..256).map(|_| integer(0)).collect();
        assert_eq!(package(&many), Err(AmlError::TooManyElements(256)));
    }
}
