//! Page checksums (crc32) and zero-page detection.

use thiserror::Error;

/// A page failed its checksum on swap-in.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, serde::Serialize)]
#[error("checksum mismatch: stored {expected:#010x}, read back {actual:#010x}")]
pub struct ChecksumMismatch {
    /// crc32 recorded when the page was written.
    pub expected: u32,
    /// crc32 of what the store returned.
    pub actual: u32,
}

/// crc32 (IEEE) of a page.
pub fn page_crc(page: &[u8]) -> u32 {
    crc32fast::hash(page)
}

/// Checks `page` against the recorded checksum.
pub fn verify(expected: u32, page: &[u8]) -> Result<(), ChecksumMismatch> {
    let actual = page_crc(page);
    if actual == expected {
        Ok(())
    } else {
        Err(ChecksumMismatch { expected, actual })
    }
}

/// Whether every byte of `page` is zero.
pub fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets
        // the aligned middle part of the byte slice.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_single_bit_flip() {
        let mut page: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
        let crc = page_crc(&page);
        assert!(verify(crc, &page).is_ok());
        page[1234] ^= 0x01;
        let err = verify(crc, &page).unwrap_err();
        assert_eq!(err.expected, crc);
        assert_ne!(err.actual, crc);
    }

    #[test]
    fn zero_detection() {
        let mut page = vec![0u8; 4096];
        assert!(is_zero(&page));
        assert!(is_zero(&page[1..4000]));
        page[4095] = 1;
        assert!(!is_zero(&page));
        page[4095] = 0;
        page[0] = 1;
        assert!(!is_zero(&page));
        assert!(!is_zero(&page[..1]));
    }
}
