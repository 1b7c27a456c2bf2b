//! The kernel behaviours the swapper design relies on, checked on this host.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use swapper::pagemap::Pagemap;
use swapper::uffd::*;

const PAGE: usize = 4096;

fn map(pages: usize) -> usize {
    // SAFETY: anonymous private mapping, no existing memory affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: advice on the mapping just created.
    unsafe { libc::madvise(p, pages * PAGE, libc::MADV_NOHUGEPAGE) };
    p as usize
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[test]
fn zeropage_move_wp_poison_remove() {
    let guest = map(16);
    let staging = map(16);
    let g = Uffd::create(
        FEATURE_PAGEFAULT_FLAG_WP
            | FEATURE_EVENT_REMOVE
            | FEATURE_THREAD_ID
            | FEATURE_POISON
            | FEATURE_MOVE,
    )
    .unwrap();
    let s = Uffd::create(FEATURE_MOVE | FEATURE_SIGBUS).unwrap();
    g.register(guest, 16 * PAGE, true).unwrap();
    s.register(staging, 16 * PAGE, false).unwrap();
    let pm = Pagemap::open().unwrap();
    let mut buf = EventBuffer::new(8);
    let mut evs = Vec::new();

    // 1. Zero page: reading and writing it never produces an event.
    // SAFETY: registered raw memory.
    unsafe { g.zeropage(guest, 4 * PAGE, true).unwrap() };
    assert_eq!(pm.count_real(guest, guest + 16 * PAGE).unwrap(), 0);
    // SAFETY: page 1 is mapped (zero page); the write is a kernel CoW.
    unsafe { *((guest + PAGE) as *mut u64) = 0xabcd };
    g.read_events(&mut buf, &mut evs).unwrap();
    assert!(evs.is_empty());
    assert_eq!(pm.count_real(guest, guest + 16 * PAGE).unwrap(), 1);

    // 2. MOVE guest -> staging (different uffd), real page and zero pfn, with holes.
    // SAFETY: both raw test mappings.
    let moved = unsafe { s.move_pages(staging, guest, 6 * PAGE, false, true).unwrap() };
    assert_eq!(moved, 6 * PAGE);
    // SAFETY: staging page 1 now holds the moved page.
    assert_eq!(unsafe { *((staging + PAGE) as *const u64) }, 0xabcd);
    assert_eq!(pm.count_real(guest, guest + 16 * PAGE).unwrap(), 0);
    // Back again (staging -> guest).
    // SAFETY: raw test mappings.
    unsafe {
        g.move_pages(guest + PAGE, staging + PAGE, PAGE, true, false)
            .unwrap()
    };
    // SAFETY: mapped again.
    assert_eq!(unsafe { *((guest + PAGE) as *const u64) }, 0xabcd);

    // 3. COPY with WP: a write from another thread is a WP fault with its tid.
    let src = vec![7u8; PAGE];
    // SAFETY: page 8 unpopulated registered memory.
    unsafe {
        g.copy(guest + 8 * PAGE, src.as_ptr(), PAGE, true, true)
            .unwrap()
    };
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let addr = guest + 8 * PAGE;
    let t = std::thread::spawn(move || {
        let tid = gettid();
        // SAFETY: page 8 is mapped; the write blocks until unprotected.
        unsafe { *(addr as *mut u8) = 9 };
        d2.store(true, Ordering::SeqCst);
        tid
    });
    let ev = loop {
        evs.clear();
        g.read_events(&mut buf, &mut evs).unwrap();
        if let Some(e) = evs.first() {
            break *e;
        }
        std::thread::yield_now();
    };
    assert!(!done.load(Ordering::SeqCst));
    g.write_protect(addr, PAGE, false, true).unwrap();
    let tid = t.join().unwrap();
    assert_eq!(
        ev,
        UffdEvent::Fault {
            addr,
            write: true,
            wp: true,
            tid
        }
    );

    // 4. POISON: a kernel access (process_vm_readv) fails with EFAULT.
    // SAFETY: page 10 unpopulated registered memory.
    unsafe { g.poison(guest + 10 * PAGE, PAGE, true).unwrap() };
    let mut out = [0u8; 8];
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: (guest + 10 * PAGE) as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: valid iovecs for this process.
    let r = unsafe { libc::process_vm_readv(std::process::id() as i32, &local, 1, &remote, 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFAULT)
    );

    // 5. MADV_DONTNEED on the guest range: a REMOVE event, madvise waits for it.
    let t = std::thread::spawn(move || {
        // SAFETY: raw test mapping.
        unsafe {
            libc::madvise(
                (guest + 12 * PAGE) as *mut libc::c_void,
                2 * PAGE,
                libc::MADV_DONTNEED,
            )
        }
    });
    let ev = loop {
        evs.clear();
        g.read_events(&mut buf, &mut evs).unwrap();
        if let Some(e) = evs.first() {
            break *e;
        }
        std::thread::yield_now();
    };
    assert_eq!(t.join().unwrap(), 0);
    assert_eq!(
        ev,
        UffdEvent::Remove {
            start: guest + 12 * PAGE,
            end: guest + 14 * PAGE
        }
    );
    // DONTNEED on staging (no EVENT_REMOVE there) does not block.
    // SAFETY: raw test mapping.
    let r = unsafe { libc::madvise(staging as *mut libc::c_void, 16 * PAGE, libc::MADV_DONTNEED) };
    assert_eq!(r, 0);
}
