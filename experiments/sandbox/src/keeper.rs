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

/// `swaplab sandbox --l1-hold-kvm`: hold the idle VMs until killed (L1
/// powering off ends it). Without `/dev/kvm` there is nothing to keep.
pub fn hold() -> Result<(), KeeperError> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Ok(());
    }
    let _vms = idle_vms()?;
    loop {
        nix::unistd::pause();
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
