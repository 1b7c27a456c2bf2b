//! Queries and hints on this process's memory that nix has no safe wrapper for.

use std::io;

/// The size of a page, in bytes.
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}

/// Pages of `[addr, addr + len)` resident in memory, per `mincore(2)`.
///
/// Any range may be asked about: `mincore` only reads this process's page
/// tables. An unaligned `addr` fails with `EINVAL`, a range that is not
/// wholly mapped with `ENOMEM`.
pub fn resident_pages(addr: usize, len: usize) -> io::Result<u64> {
    let mut vec = vec![0u8; len.div_ceil(page_size())];
    // SAFETY: mincore writes one byte per page of the range into `vec`, which
    // has that many bytes and outlives the call; it reads no memory of ours
    // and changes none (the range is only looked up in the page tables).
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as u64)
}

/// `madvise(MADV_COLD)` on `[addr, addr + len)`: marks the pages as the first
/// to reclaim under pressure.
///
/// Safe for any range: unlike `MADV_DONTNEED` or `MADV_FREE`, `MADV_COLD`
/// only moves pages between LRU lists and never changes what memory holds.
pub fn advise_cold(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_COLD changes only reclaim hints, never contents or
    // mappings, so no Rust reference to the range can observe it.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_COLD) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_pages_are_resident_and_cold_keeps_contents() {
        let ps = page_size();
        let mut buf = vec![0u8; 8 * ps];
        let start = (buf.as_ptr() as usize).next_multiple_of(ps);
        let off = start - buf.as_ptr() as usize;
        for b in buf[off..off + 4 * ps].iter_mut().step_by(ps) {
            *b = 7;
        }
        assert_eq!(resident_pages(start, 4 * ps).unwrap(), 4);
        advise_cold(start, 4 * ps).unwrap();
        assert!(buf[off..off + 4 * ps].iter().step_by(ps).all(|&b| b == 7));
        assert!(resident_pages(start + 1, ps).is_err(), "unaligned");
    }
}
