//! L1's KVM keeper: two idle VMs, each with one vCPU that never runs (one with
//! the in-kernel irqchip, one without), held open for L1's whole life, started
//! in the background of every sandbox job (`swaplab sandbox --l1-hold-kvm`)
//! unless `SWAPLAB_SANDBOX_HOLD_KVM=0`.
//!
//! Why: KVM flips static keys when the first VM or vCPU of a kind appears and
//! when the last goes: `preempt_notifier_key` (any VM), `apic_sw_disabled`
//! (a vCPU with an in-kernel local APIC, software-disabled from reset until
//! its guest enables it) and `kvm_has_noapic_vcpu` (a vCPU without one). Their
//! checks are inlined all over kvm.ko, and each flip rewrites the code at every
//! use site while L1's other vCPU runs — measured in L1 with kprobes on
//! `arch_jump_label_transform_queue` and `static_key_slow_inc`/`_dec`: 188
//! sites patched over one short `swaplab probe` VM's life. Under QEMU's multi-threaded TCG, cross-vCPU code patching is
//! where L1's kernel has died: both L1 panics on record came at a VM's start
//! or end, one with RIP one byte into a just-patched `jmp` in `__schedule`.
//! With a VM and a vCPU always present, the keys never return to their
//! default and guests come and go without patching any code. The idle VMs
//! cost L1 a few pages and no measurable time.
//!
//! The keeper also holds L1's kernel tracepoints the same way. swaplab traces
//! in L1 (every guest's shutdown watch, `--ktrace`): enabling an event in a
//! tracefs instance with a pid filter registers probes on the KVM event and
//! on the scheduler's `sched_switch`, `sched_wakeup`, fork and exit
//! tracepoints, and the kernel rewrites a tracepoint's call site (its static
//! key and static call) whenever its probes go from 0 to 1, 1 to 2 and back.
//! Measured in L1 with kprobes over the test suite's 6-run matrix: 290 code
//! patches, `__schedule`'s among them, all from swaplab's own tracing. Two
//! instances of the keeper's ([`hold_tracepoints`]) keep every such
//! tracepoint at two probes or more for L1's whole life, so that tracing
//! comes and goes without patching (tracing is off in them: nothing is
//! recorded). With them, the same matrix patched no code at all.
//!
//! The keeper runs before the command starts (`Job::setup`): it sets all this
//! up, then forks, and the child holds it while the parent returns, so no
//! guest starts before the keys are held.
//!
//! On by default. Without it, CI's `boot_guest` died twice in a row of L1
//! oopses "int3" at jump-label sites in kvm.ko (`vcpu_run`, RIP one byte into
//! a patched `jmp`; `apic_has_pending_timer`, inside a patched NOP): the
//! breakpoint of a code patch in flight, not recognised under TCG. With it, one
//! L1 once went idle for good as a guest started, cause unknown.
//!
use std::fmt;

/// Why the keeper could not hold a VM.
#[derive(Debug)]
pub struct KeeperError(String);

impl fmt::Display for KeeperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeeperError {}

/// An idle VM: dropped, it closes.
pub struct IdleVm {
    _vcpu: kvm_ioctls::VcpuFd,
    _vm: kvm_ioctls::VmFd,
}

/// Creates an idle VM: `KVM_CREATE_VM`, with `irqchip` `KVM_CREATE_IRQCHIP`
/// (the vCPU then gets an in-kernel local APIC, software-disabled as at
/// reset), and `KVM_CREATE_VCPU`.
pub fn idle_vm(kvm: &kvm_ioctls::Kvm, irqchip: bool) -> Result<IdleVm, KeeperError> {
    let step = |what: &'static str| move |e: kvm_ioctls::Error| KeeperError(format!("{what}: {e}"));
    let vm = kvm.create_vm().map_err(step("KVM_CREATE_VM"))?;
    if irqchip {
        vm.create_irq_chip().map_err(step("KVM_CREATE_IRQCHIP"))?;
    }
    let vcpu = vm.create_vcpu(0).map_err(step("KVM_CREATE_VCPU"))?;
    Ok(IdleVm {
        _vcpu: vcpu,
        _vm: vm,
    })
}

/// Both idle VMs: one with the in-kernel irqchip, one without.
pub fn idle_vms() -> Result<[IdleVm; 2], KeeperError> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| KeeperError(format!("opening /dev/kvm: {e}")))?;
    Ok([idle_vm(&kvm, true)?, idle_vm(&kvm, false)?])
}

/// Where L1's tracefs is (mounted there by [`hold_tracepoints`] if it is not).
const TRACEFS: &str = "/sys/kernel/tracing";
/// The event groups swaplab traces in L1 (the runner's `--ktrace` events and
/// its shutdown watch).
const HELD_GROUPS: &[&str] = &["kvm", "kvmmmu"];
/// The keeper's tracing instances: `instances/swaplab-keeper-N` (a name
/// swaplab's sweep of dead tracers' instances leaves alone).
pub const HELD_INSTANCES: [&str; 2] = ["swaplab-keeper-0", "swaplab-keeper-1"];

/// Makes [`HELD_INSTANCES`] in L1's tracefs, each with this process as its
/// pid filter (with `event-fork`) and [`HELD_GROUPS`] enabled, tracing off.
/// They stay until L1 powers off, whether or not this process lives.
pub fn hold_tracepoints() -> Result<(), KeeperError> {
    use std::path::Path;
    let root = Path::new(TRACEFS);
    if !root.join("instances").is_dir() {
        nix::mount::mount(
            Some("tracefs"),
            root,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| KeeperError(format!("mounting tracefs on {TRACEFS}: {e}")))?;
    }
    let write = |path: &Path, value: &str| {
        std::fs::write(path, value)
            .map_err(|e| KeeperError(format!("writing {value:?} to {}: {e}", path.display())))
    };
    for name in HELD_INSTANCES {
        let dir = root.join("instances").join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(KeeperError(format!("creating {}: {e}", dir.display()))),
        }
        write(&dir.join("tracing_on"), "0")?;
        write(&dir.join("set_event_pid"), &std::process::id().to_string())?;
        write(&dir.join("options/event-fork"), "1")?;
        for group in HELD_GROUPS {
            let enable = dir.join("events").join(group).join("enable");
            if enable.exists() {
                write(&enable, "1")?;
            }
        }
    }
    Ok(())
}

/// `swaplab sandbox --l1-hold-kvm`: holds L1's tracepoints
/// ([`hold_tracepoints`]) and, with `/dev/kvm`, the idle VMs; then forks, the
/// child holding them until L1 powers off, and returns in the parent. Call it
/// only while this process has a single thread.
pub fn hold() -> Result<(), KeeperError> {
    if let Err(e) = hold_tracepoints() {
        // Guests still run; tracing in L1 then patches its code.
        eprintln!("swaplab sandbox: cannot hold L1's tracepoints: {e}");
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        return Ok(());
    }
    let vms = idle_vms()?;
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    if threads != 1 {
        return Err(KeeperError(format!(
            "the keeper has {threads} threads and cannot fork safely"
        )));
    }
    // SAFETY: this process has a single thread (checked just above), so the
    // child starts with no lock held by a thread that does not exist there;
    // it only calls pause(2).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _vms = vms;
            loop {
                nix::unistd::pause();
            }
        }
        // The child holds the VMs: the parent's copies of the fds close as it exits.
        Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(()),
        Err(e) => Err(KeeperError(format!("fork: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_vm_can_be_created_and_closed() {
        if !std::path::Path::new("/dev/kvm").exists() {
            base::tier::skip(base::tier::Tier::Kvm, "/dev/kvm is absent");
            return;
        }
        let held = idle_vms().unwrap();
        // Guests (and more keepers) come and go beside them.
        let more = idle_vms().unwrap();
        drop(more);
        drop(held);
    }
}
