//! The worker thread's life: started at activation with the start hook, kept across
//! resets (same TID), serving a re-activated queue, refused activations, and a
//! device that is dropped while active.

use std::sync::mpsc;

use super::*;

#[test]
fn one_worker_thread_across_resets_named_and_announced_once() {
    let (tx, rx) = mpsc::channel();
    let mut rig = Rig::with(Opts {
        on_start: Some(Box::new(move |tid| tx.send(tid).unwrap())),
        ..Opts::default()
    });
    let tid = rx.recv_timeout(WAIT).expect("start hook not called");
    assert_eq!(rig.handle.worker_tid(), Some(tid));
    assert_ne!(tid, nix::unistd::gettid().as_raw());
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
    assert_eq!(comm.trim(), "vmm-blk");
    rig.assert_alive();

    // Reset, then queue a request while the device is inactive.
    rig.blk.reset();
    rig.blk.reset(); // idempotent
    let head = rig.push(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    rig.header(
        HDR,
        virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_T_IN,
        7,
    );
    rig.set_byte(STATUS, 0xee);
    rig.kick();
    // Re-activate where the driver left off: the pending request is served then.
    let done = rig.used_idx();
    rig.activate(rig.blk.features(), false, done).unwrap();
    rig.wait();
    assert_eq!(rig.last_used(), (u32::from(head), 513));
    assert_eq!(rig.byte(STATUS), S_OK);
    assert_eq!(rig.bytes(BUF, 512), rig.image[7 * 512..8 * 512]);
    // Same thread, hook not called again.
    assert_eq!(rig.handle.worker_tid(), Some(tid));
    assert!(rx.try_recv().is_err());
    assert!(rig.handle.drain_trace().iter().all(|r| r.tid == tid));
}

#[test]
fn activation_needs_queue_zero() {
    let mut rig = Rig::new();
    rig.blk.reset();
    let err = rig
        .blk
        .activate(Activation {
            mem: rig.mem.clone(),
            features: VIRTIO_F_VERSION_1,
            queues: Vec::new(),
            interrupt: VirtioInterrupt::new(rig.line.clone()),
        })
        .unwrap_err();
    assert!(matches!(err, ActivateError::BadQueues(_)), "{err}");
    // The device is still usable by a proper activation.
    let done = rig.used_idx();
    rig.activate(rig.blk.features(), false, done).unwrap();
    rig.assert_alive();
}

#[test]
fn dropping_an_active_device_stops_its_worker() {
    let mut rig = Rig::new();
    rig.assert_alive();
    let handle = rig.handle.clone();
    // Queue work without kicking, then drop the device: drop joins the worker (the
    // test would hang otherwise) and the handle stays readable.
    rig.push(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    drop(rig);
    // (The worker may or may not have picked up the unkicked chain before the drop.)
    assert!(handle.counters().reads >= 1);
    assert!(handle.worker_tid().is_some());
}

#[test]
fn config_errors_are_reported() {
    let missing = BlkConfig::new("/nonexistent/swaplab-disk.img");
    let e = Blk::new(missing).unwrap_err();
    assert!(matches!(e, BlkError::Open { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/swaplab-disk.img"));
    let f = tempfile::NamedTempFile::new().unwrap();
    let mut cfg = BlkConfig::new(f.path());
    cfg.id = "x".repeat(21);
    assert!(matches!(
        Blk::new(cfg).unwrap_err(),
        BlkError::IdTooLong { len: 21, .. }
    ));
    // An empty image is a disk of capacity 0: every data request is out of range.
    let blk = Blk::new(BlkConfig::new(f.path())).unwrap();
    assert_eq!(blk.capacity(), 0);
}

/// With `SWAPLAB_SECCOMP_PROBE=blk` the virtio-blk worker thread makes a syscall its seccomp filter
/// forbids right after installing it: the process ends with status 159 and one
/// line naming the thread and the syscall.
#[test]
fn seccomp_probe_stops_the_process_naming_the_thread() {
    seccomp::assert_probe_stops(
        "virtio::blk::tests::lifecycle::one_worker_thread_across_resets_named_and_announced_once",
        seccomp::ThreadClass::BlkWorker,
        "vmm-blk",
    );
}
