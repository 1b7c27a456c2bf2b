//! A stalled run's last resort: `Swapper::release_waiters` describes where
//! the swapper is stuck and lets go of every fault it holds, so the threads
//! waiting on them end (their evicted pages read as zeros afterwards).

mod common;

use common::*;
use std::sync::mpsc;
use std::time::Duration;
use swapper::*;

const PAGES: usize = 2048;

#[test]
fn release_frees_a_thread_whose_fault_waits_on_a_hung_store() {
    if !uffd_available() {
        return;
    }
    let map = Mapping::new(PAGES);
    let inj = FaultInjector::new();
    let sw = start_faulty(&map, &inj, StoreKind::Memory);
    let base = map.addr;
    vcpus(&sw, 1, move |_| {
        for p in 0..PAGES {
            fill(base + p * PAGE_SIZE, p, 7);
        }
    });
    quiesce(&sw);
    assert!(sw.status().pages.evicted > 1000);

    // The store hangs: the first fault on an evicted page waits for ever.
    inj.hold_reads();
    let (tx, rx) = mpsc::channel();
    let reg = sw.registry();
    let reader = std::thread::spawn(move || {
        reg.register_current(ThreadKind::Vcpu(0));
        let lost = (0..PAGES)
            .filter(|&p| check(base + p * PAGE_SIZE, p, 7) != 0)
            .count();
        tx.send(lost).unwrap();
    });
    assert!(
        inj.wait_held_reads(1, Duration::from_secs(60)),
        "no fault reached the store"
    );
    assert!(
        rx.try_recv().is_err(),
        "the reader ended while its fault was held"
    );

    let diagnosis = sw.release_waiters();
    eprintln!("{diagnosis}");
    let lost = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the reader still waits on its fault after the release");
    reader.join().unwrap();
    // The handler reading the store holds that page's lock, and says so.
    assert!(
        diagnosis.contains("page locks held now: 1 (0x"),
        "{diagnosis}"
    );
    assert!(diagnosis.contains("fault events read"), "{diagnosis}");
    // Unregistered, not served: the pages still evicted read as zeros.
    assert!(lost > 1000, "{lost} pages lost");
    let st = sw.status();
    assert!(st.released, "{st:?}");
    // A second call only describes.
    assert!(sw.release_waiters().contains("fault events read"));

    // The store comes back: the handler finishes, and the swapper shuts down.
    inj.release_reads();
    let end = shutdown(sw);
    assert!(end.released);
}
