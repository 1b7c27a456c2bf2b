//! KVM tests: run tiny flat CPL-3 guests on this host's /dev/kvm.
//!
//! They skip (with a printed reason) only when /dev/kvm does not exist.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress};
use vmm::{
    create_guest_memory, BusAction, BusDevice, DeviceError, ExitReason, FlatGuest, GuestMemoryExt,
    RegionSpec, VcpuEnd, VcpuError, Vm, VmConfig, VmError,
};

const RAM: u64 = 4 << 20;
const TABLES: u64 = 0x1000;
const CODE: u64 = 0x10_0000;
const STACK_TOP: u64 = 0x20_0000;
const DATA: u64 = 0x30_0000;
const DOORBELL: u64 = 0xd000_0000;

fn have_kvm() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    base::tier::skip(base::tier::Tier::Kvm, "/dev/kvm is absent on this host");
    false
}

/// Records doorbell writes; value 0 means "stop the VM", 0xbad means "fail".
struct Doorbell {
    writes: Vec<u64>,
    notify: Option<mpsc::Sender<u64>>,
}

impl BusDevice for Doorbell {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        assert_eq!(offset, 0);
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(b);
        self.writes.push(v);
        if let Some(n) = &self.notify {
            let _ = n.send(v);
        }
        match v {
            0 => Ok(BusAction::Stop),
            0xbad => Err("guest sent 0xbad".into()),
            _ => Ok(BusAction::Continue),
        }
    }
}

struct Guest {
    vm: Vm,
    doorbell: Arc<Mutex<Doorbell>>,
}

fn build(
    config: VmConfig,
    notify: Option<mpsc::Sender<u64>>,
    program: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Guest {
    let mem = create_guest_memory(&[RegionSpec::new(0, RAM)]).unwrap();
    let mut a = CodeAssembler::new(64).unwrap();
    program(&mut a).unwrap();
    let code = a.assemble(CODE).unwrap();
    mem.write_slice(&code, GuestAddress(CODE)).unwrap();
    let mut vm = Vm::new(mem, config).unwrap();
    let doorbell = Arc::new(Mutex::new(Doorbell {
        writes: vec![],
        notify,
    }));
    vm.register_mmio(DOORBELL, 8, "doorbell", doorbell.clone())
        .unwrap();
    let g = FlatGuest {
        tables_addr: TABLES,
        tables_size: CODE - TABLES,
        map: vec![(0, RAM), (DOORBELL, 0x1000)],
        entry: CODE,
        stack_top: STACK_TOP,
        args: vec![DATA, 7],
    };
    for i in 0..vm.vcpu_count() {
        vmm::flat::setup(vm.memory(), vm.vcpu(i).unwrap(), &g).unwrap();
    }
    Guest { vm, doorbell }
}

fn one_vcpu() -> VmConfig {
    VmConfig {
        vcpus: 1,
        on_vcpu_start: None,
    }
}

/// Ring the doorbell with `value`.
fn ring(a: &mut CodeAssembler, value: u64) -> Result<(), IcedError> {
    a.mov(rax, DOORBELL)?;
    a.mov(rbx, value)?;
    a.mov(qword_ptr(rax), rbx)
}

#[test]
fn runs_at_cpl3_reads_tsc_and_rings_the_doorbell() {
    if !have_kvm() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let config = VmConfig {
        vcpus: 1,
        on_vcpu_start: Some(Arc::new(move |i, tid| tx.send((i, tid)).unwrap())),
    };
    let g = build(config, None, |a| {
        // RDI = DATA, RSI = 7 (register arguments).
        a.mov(qword_ptr(rdi), rsi)?;
        // CS.RPL = CPL.
        a.mov(rax, cs)?;
        a.mov(qword_ptr(rdi + 8), rax)?;
        a.lfence()?;
        a.rdtsc()?;
        a.shl(rdx, 32)?;
        a.or(rax, rdx)?;
        a.mov(qword_ptr(rdi + 16), rax)?;
        a.push(rsi)?; // the stack works
        a.pop(rcx)?;
        a.mov(qword_ptr(rdi + 24), rcx)?;
        for v in [1u64, 2, 3] {
            ring(a, v)?;
        }
        ring(a, 0)?;
        a.ud2()
    });
    let mem = g.vm.memory().clone();
    let report = g.vm.start().unwrap().wait().unwrap();
    assert_eq!(g.doorbell.lock().unwrap().writes, vec![1, 2, 3, 0]);
    assert_eq!(mem.read_obj::<u64>(GuestAddress(DATA)).unwrap(), 7);
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(DATA + 8)).unwrap() & 3,
        3,
        "CPL 3"
    );
    assert_ne!(
        mem.read_obj::<u64>(GuestAddress(DATA + 16)).unwrap(),
        0,
        "TSC"
    );
    assert_eq!(mem.read_obj::<u64>(GuestAddress(DATA + 24)).unwrap(), 7);
    assert_eq!(report.exits.get(ExitReason::MmioWrite).count, 4);
    assert_eq!(report.vcpus[0].end, VcpuEnd::Stopped);
    let (index, tid) = rx.recv().unwrap();
    assert_eq!(index, 0);
    assert_eq!(tid, report.vcpus[0].tid);
    assert_ne!(
        tid,
        std::process::id() as i32,
        "vCPU runs on its own thread"
    );
    let stats = &report.kvm_stats;
    if stats.available {
        assert_eq!(stats.vcpus.len(), 1);
        assert!(stats.vcpu_sum("exits").unwrap() >= 4, "{stats:?}");
    } else {
        eprintln!(
            "KVM binary stats unavailable: {:?}",
            stats.unavailable_reason
        );
    }
}

fn expect_triple_fault(program: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> u64 {
    let g = build(one_vcpu(), None, program);
    match g.vm.start().unwrap().wait() {
        Err(VmError::Vcpu(VcpuError::TripleFault {
            vcpu: 0,
            rip,
            state,
        })) => {
            assert!(state.contains("cr3 "), "{state}");
            rip
        }
        other => panic!("expected a triple fault, got {other:?}"),
    }
}

#[test]
fn guest_exceptions_end_as_triple_fault_errors() {
    if !have_kvm() {
        return;
    }
    // #UD
    expect_triple_fault(|a| a.ud2());
    // #PF: an address the page tables do not map.
    expect_triple_fault(|a| {
        a.mov(rax, 0x4000_0000u64)?;
        a.mov(qword_ptr(rax), rax)
    });
    // #GP: port I/O at CPL 3 with IOPL 0 (why the probe uses an MMIO doorbell).
    expect_triple_fault(|a| {
        a.mov(dx, 0x3f8u32)?;
        a.out(dx, al)
    });
    // #GP: a privileged instruction.
    expect_triple_fault(|a| a.hlt());
    let err = build(one_vcpu(), None, |a| a.ud2())
        .vm
        .start()
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("triple fault"), "{err}");
}

#[test]
fn device_errors_stop_the_vm_with_the_cause() {
    if !have_kvm() {
        return;
    }
    let g = build(one_vcpu(), None, |a| {
        ring(a, 0xbad)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    let err = g.vm.start().unwrap().wait().unwrap_err();
    let chain: Vec<String> =
        std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
    assert!(chain.iter().any(|m| m.contains("doorbell")), "{chain:?}");
    assert!(chain.iter().any(|m| m.contains("0xbad")), "{chain:?}");
}

/// A guest spinning forever at CPL 3 is stopped from another thread.
#[test]
fn stop_kicks_a_spinning_vcpu() {
    if !have_kvm() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let g = build(one_vcpu(), Some(tx), |a| {
        ring(a, 1)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.inc(qword_ptr(rdi))?; // RDI = DATA: a counter the host can watch
        a.jmp(l)
    });
    let mem = g.vm.memory().clone();
    let running = g.vm.start().unwrap();
    let handle = running.handle();
    assert_eq!(rx.recv().unwrap(), 1, "guest is running");
    // Wait until the guest is back in its loop, so the stop must interrupt guest code.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mem.read_obj::<u64>(GuestAddress(DATA)).unwrap() == 0 {
        assert!(std::time::Instant::now() < deadline, "guest never looped");
        std::hint::spin_loop();
    }
    assert!(!handle.is_stopping());
    handle.stop();
    let report = running.wait().unwrap();
    assert_eq!(report.vcpus[0].end, VcpuEnd::Stopped);
    assert!(report.exits.get(ExitReason::Intr).count >= 1);
}

#[test]
fn abort_fails_the_run_with_the_reason() {
    if !have_kvm() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let g = build(one_vcpu(), Some(tx), |a| {
        ring(a, 1)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    let running = g.vm.start().unwrap();
    rx.recv().unwrap();
    running.handle().abort("backing store failed");
    match running.wait() {
        Err(VmError::Aborted(r)) => assert_eq!(r, "backing store failed"),
        other => panic!("expected abort, got {other:?}"),
    }
}

/// Two VMs with two vCPUs each, in one process, at the same time.
#[test]
fn several_vms_and_vcpus_run_concurrently() {
    if !have_kvm() {
        return;
    }
    let tids = Arc::new(Mutex::new(Vec::new()));
    let mut running = Vec::new();
    for _ in 0..2 {
        let t = tids.clone();
        let config = VmConfig {
            vcpus: 2,
            on_vcpu_start: Some(Arc::new(move |i, tid| t.lock().unwrap().push((i, tid)))),
        };
        let g = build(config, None, |a| {
            ring(a, 5)?;
            ring(a, 0)?;
            a.ud2()
        });
        running.push((g.vm.start().unwrap(), g.doorbell));
    }
    for (vm, doorbell) in running {
        let report = vm.wait().unwrap();
        assert_eq!(report.vcpus.len(), 2);
        let writes = &doorbell.lock().unwrap().writes;
        // Each vCPU rang 5 once; a vCPU may be stopped before its second ring.
        assert!(
            writes.iter().filter(|&&w| w == 5).count() >= 1,
            "{writes:?}"
        );
        assert!(writes.contains(&0), "{writes:?}");
    }
    let mut tids = tids.lock().unwrap().clone();
    assert_eq!(tids.len(), 4);
    tids.sort_unstable_by_key(|&(_, t)| t);
    tids.dedup_by_key(|&mut (_, t)| t);
    assert_eq!(tids.len(), 4, "every vCPU has its own thread");
}

#[test]
fn guest_memory_regions_are_reported_for_userfaultfd() {
    let mem =
        create_guest_memory(&[RegionSpec::new(0, RAM), RegionSpec::new(1 << 32, 8 << 20)]).unwrap();
    let r = mem.host_regions();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].guest_addr, 1 << 32);
    assert_eq!(r[1].len, 8 << 20);
    assert_eq!(r[1].host_addr % 4096, 0);
}
