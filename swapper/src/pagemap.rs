//! `PAGEMAP_SCAN` (Linux 6.7+): ask the kernel which pages of a range match a
//! set of page-table categories, in one ioctl per range.
//!
//! The swapper uses it to learn which zero-map pool pages the guest has
//! written (present and no longer the zero pfn), and to read the initial
//! state of a mapping at registration.

use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsRawFd;
use thiserror::Error;

/// Page is present.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Page is swapped out by the kernel.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Page maps the shared zero pfn.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Page is part of a huge mapping.
pub const PAGE_IS_HUGE: u64 = 1 << 6;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// One matching run of pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRegion {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Categories of the run (masked by the return mask).
    pub categories: u64,
}

nix::ioctl_readwrite!(ioctl_pagemap_scan, b'f', 16, PmScanArg);

/// Errors of this module.
#[derive(Debug, Error)]
pub enum PagemapError {
    /// `/proc/self/pagemap` could not be opened.
    #[error("cannot open /proc/self/pagemap: {0}")]
    Open(std::io::Error),
    /// The ioctl failed (ENOTTY: kernel older than 6.7).
    #[error("PAGEMAP_SCAN [{start:#x}, {end:#x}) failed: {errno}")]
    Scan {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// The error.
        errno: Errno,
    },
}

/// A query: pages match when `(categories ^ inverted) & mask == mask` and
/// (if `anyof` is non-zero) `categories & anyof != 0`.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    /// Categories that must all be set (after inversion).
    pub mask: u64,
    /// Categories to invert before matching.
    pub inverted: u64,
    /// Categories of which at least one must be set.
    pub anyof: u64,
    /// Categories to report.
    pub report: u64,
}

impl Query {
    /// Present pages that are not the zero pfn: pages holding real memory.
    pub const REAL: Query = Query {
        mask: PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
        inverted: PAGE_IS_PFNZERO,
        anyof: 0,
        report: PAGE_IS_PRESENT,
    };
    /// Every populated page, reporting presence, zero-pfn and swap state.
    pub const POPULATED: Query = Query {
        mask: 0,
        inverted: 0,
        anyof: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        report: PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_SWAPPED | PAGE_IS_HUGE,
    };
}

/// A handle on this process's pagemap.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
}

impl Pagemap {
    /// Opens `/proc/self/pagemap`.
    pub fn open() -> Result<Self, PagemapError> {
        File::open("/proc/self/pagemap")
            .map(|file| Self { file })
            .map_err(PagemapError::Open)
    }

    /// Runs `query` over `[start, end)` and appends matching runs to `out`
    /// (adjacent runs with equal categories are merged by the kernel).
    pub fn scan(
        &self,
        start: usize,
        end: usize,
        query: Query,
        out: &mut Vec<PageRegion>,
    ) -> Result<(), PagemapError> {
        let mut buf = vec![PageRegion::default(); 512];
        let mut cur = start as u64;
        while cur < end as u64 {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: cur,
                end: end as u64,
                vec: buf.as_mut_ptr() as u64,
                vec_len: buf.len() as u64,
                category_inverted: query.inverted,
                category_mask: query.mask,
                category_anyof_mask: query.anyof,
                return_mask: query.report,
                ..Default::default()
            };
            // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points to
            // `vec_len` writable page_region entries that outlive the call;
            // the scan only reads page tables.
            let r = unsafe { ioctl_pagemap_scan(self.file.as_raw_fd(), &mut arg) };
            let n = r.map_err(|errno| PagemapError::Scan { start, end, errno })? as usize;
            out.extend_from_slice(&buf[..n]);
            if arg.walk_end <= cur {
                break;
            }
            cur = arg.walk_end;
        }
        Ok(())
    }

    /// Number of pages in `[start, end)` holding real memory (present, not
    /// the zero pfn).
    pub fn count_real(&self, start: usize, end: usize) -> Result<u64, PagemapError> {
        let mut v = Vec::new();
        self.scan(start, end, Query::REAL, &mut v)?;
        Ok(v.iter().map(|r| (r.end - r.start) / 4096).sum())
    }
}
