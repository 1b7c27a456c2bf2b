//! A vCPU blocked in a userfaultfd fault (nobody serves the fault) is still stopped by
//! `VmHandle::stop`: the kick signal interrupts the fault and `KVM_RUN` returns.
//!
//! This is what lets a swapper stop a VM on a fatal backing-store error.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress};
use vmm::{
    create_guest_memory, BusAction, BusDevice, DeviceError, FlatGuest, GuestMemoryExt, RegionSpec,
    VcpuEnd, Vm, VmConfig,
};

// <linux/userfaultfd.h>
const UFFD_API: u64 = 0xaa;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// A userfaultfd with `[start, start + len)` registered for missing faults.
fn register_missing(start: usize, len: usize) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes a uffdio_api that lives on this frame.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut reg = UffdioRegister {
        start: start as u64,
        len: len as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes a uffdio_register on this frame; the range
    // is a live anonymous mapping owned by the test's guest memory.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Wait (poll, bounded) for one page-fault event and return its address.
fn wait_for_fault(fd: &OwnedFd) -> u64 {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 20_000) };
    assert_eq!(n, 1, "no userfault within 20 s");
    let mut msg = [0u8; 32];
    // SAFETY: reads one uffd_msg (32 bytes) into a buffer of that size.
    let r = unsafe { libc::read(fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
    assert_eq!(r, 32);
    assert_eq!(msg[0], UFFD_EVENT_PAGEFAULT);
    u64::from_ne_bytes(msg[16..24].try_into().unwrap())
}

struct Bell;
impl BusDevice for Bell {
    fn write(&mut self, _: u64, _: &[u8]) -> Result<BusAction, DeviceError> {
        Ok(BusAction::Continue)
    }
}

#[test]
fn stop_interrupts_a_vcpu_blocked_in_a_userfault() {
    if !std::path::Path::new("/dev/kvm").exists() {
        base::tier::skip(base::tier::Tier::Kvm, "/dev/kvm is absent on this host");
        return;
    }
    const RAM: u64 = 4 << 20;
    const TEST: u64 = 1 << 32;
    const TEST_LEN: u64 = 2 << 20;
    let mem =
        create_guest_memory(&[RegionSpec::new(0, RAM), RegionSpec::new(TEST, TEST_LEN)]).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(rax, TEST + 0x5000).unwrap();
    a.mov(qword_ptr(rax), rax).unwrap(); // blocks: nobody serves the fault
    a.mov(rax, 0xd000_0000u64).unwrap();
    a.mov(qword_ptr(rax), rax).unwrap();
    a.ud2().unwrap();
    mem.write_slice(&a.assemble(0x10_0000).unwrap(), GuestAddress(0x10_0000))
        .unwrap();
    let test_ram = mem.host_region_of(TEST).unwrap();
    let uffd = match register_missing(test_ram.host_addr, test_ram.len) {
        Ok(fd) => fd,
        Err(e) => {
            base::tier::skip(
                base::tier::Tier::Userfaultfd,
                &format!("userfaultfd unavailable: {e}"),
            );
            return;
        }
    };
    let mut vm = Vm::new(
        mem.clone(),
        VmConfig {
            vcpus: 1,
            on_vcpu_start: None,
        },
    )
    .unwrap();
    vm.register_mmio(0xd000_0000, 8, "bell", Arc::new(Mutex::new(Bell)))
        .unwrap();
    let g = FlatGuest {
        tables_addr: 0x1000,
        tables_size: 0xf_f000,
        map: vec![(0, RAM), (0xd000_0000, 4096), (TEST, TEST_LEN)],
        entry: 0x10_0000,
        stack_top: 0x20_0000,
        args: vec![],
    };
    vmm::flat::setup(&mem, vm.vcpu(0).unwrap(), &g).unwrap();
    let running = vm.start().unwrap();
    let handle = running.handle();

    let addr = wait_for_fault(&uffd);
    assert_eq!(addr & !0xfff, test_ram.host_addr as u64 + 0x5000);
    handle.stop();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(running.wait()).unwrap());
    let report = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the stopped vCPU did not leave the blocked fault")
        .unwrap();
    assert_eq!(report.vcpus[0].end, VcpuEnd::Stopped);
    assert_eq!(report.exits.get(vmm::ExitReason::MmioWrite).count, 0);
    drop(uffd);
}
