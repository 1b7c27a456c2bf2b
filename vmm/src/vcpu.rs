//! vCPU threads: the `KVM_RUN` loop and exit dispatch to the buses. How a vCPU
//! is stopped from another thread (the stop flag, the kick signal) is in `stop.rs`.

use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::bus::{Bus, BusAction, BusError, Dispatch};
use crate::exits::{ExitReason, ExitStats};
use crate::poison::{take_poisoned, InKvmRun};
use crate::stop::{unblock_kick_signal, KickRegistration, Shared};

/// What a triple fault's report says besides RIP: the stack pointer and
/// the control registers and descriptor table that decide how (and whether)
/// the guest could take an exception.
///
/// On AMD SVM, KVM reinitialises the vCPU when it intercepts a shutdown (the
/// VMCB is undefined after one), so what reads back is the x86 reset state:
/// RIP 0xfff0 with paging off. The report says so, instead of presenting the
/// reset vector as where the guest faulted.
fn shutdown_state(
    rip: Option<u64>,
    rsp: Option<u64>,
    sregs: Option<kvm_bindings::kvm_sregs>,
) -> String {
    let mut parts = Vec::new();
    let reset =
        rip == Some(0xfff0) && sregs.is_some_and(|s| s.cr0 & 1 == 0 && s.cr3 == 0 && s.efer == 0);
    if reset {
        parts.push(
            "registers read back in the x86 reset state: KVM on AMD SVM reinitialises a vCPU \
             on a shutdown, so where the guest faulted is unknown;"
                .to_string(),
        );
    }
    if let Some(rsp) = rsp {
        parts.push(format!("rsp {rsp:#x}"));
    }
    if let Some(s) = sregs {
        parts.push(format!(
            "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} idt {:#x}+{:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.idt.base, s.idt.limit
        ));
    }
    if parts.is_empty() {
        "no register state".to_string()
    } else {
        parts.join(" ")
    }
}

/// Errors that end a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted (an exception it could not deliver).
    #[error("guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU {vcpu} at RIP {rip:#x} ({state}): an unhandled guest exception")]
    TripleFault {
        /// vCPU index.
        vcpu: u32,
        /// Guest RIP as KVM reports it after the shutdown (best effort).
        rip: u64,
        /// The rest of the vCPU's state that tells why (RSP, CR0/2/3/4, EFER,
        /// IDT), best effort.
        state: String,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`.
    #[error("KVM internal error on vCPU {vcpu} (suberror {suberror}) at RIP {rip:#x}")]
    InternalError {
        /// vCPU index.
        vcpu: u32,
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// Guest RIP (best effort).
        rip: u64,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused the guest state.
    #[error("VM entry failed on vCPU {vcpu}: hardware reason {reason:#x} on host CPU {cpu}")]
    FailEntry {
        /// vCPU index.
        vcpu: u32,
        /// Hardware entry failure reason.
        reason: u64,
        /// Host CPU.
        cpu: u32,
    },
    /// The guest crashed (`KVM_SYSTEM_EVENT_CRASH`).
    #[error("guest reported a crash on vCPU {0}")]
    GuestCrash(u32),
    /// An exit this VMM does not handle.
    #[error("unexpected exit {what} on vCPU {vcpu}")]
    Unexpected {
        /// vCPU index.
        vcpu: u32,
        /// Description of the exit.
        what: String,
    },
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN failed on vCPU {vcpu}")]
    Run {
        /// vCPU index.
        vcpu: u32,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A device failed while handling an access.
    #[error("vCPU {vcpu}: device access failed")]
    Bus {
        /// vCPU index.
        vcpu: u32,
        /// The bus error.
        #[source]
        source: BusError,
    },
    /// The kick signal could not be installed or unblocked.
    #[error("cannot set up the vCPU kick signal")]
    Signal(#[source] std::io::Error),
}

/// How a vCPU thread ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuEnd {
    /// The VM was asked to stop (by a device, a handle, or another vCPU).
    Stopped,
    /// The guest executed HLT with no interrupt controller to wake it.
    Halted,
}

/// What one vCPU thread reports when it ends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VcpuReport {
    /// vCPU index.
    pub index: u32,
    /// Linux thread id the vCPU ran on.
    pub tid: i32,
    /// How it ended.
    pub end: VcpuEnd,
    /// Userspace exits.
    pub exits: ExitStats,
    /// Guest accesses no device claimed (reads return all-ones, writes are dropped).
    pub unclaimed_accesses: u64,
}

/// Called on each vCPU thread as it starts, before its first `KVM_RUN`, with the vCPU
/// index and the thread's Linux TID (what `UFFD_FEATURE_THREAD_ID` reports).
pub type VcpuStartHook = Arc<dyn Fn(u32, i32) + Send + Sync>;

/// Everything a vCPU thread needs.
pub(crate) struct VcpuContext {
    pub index: u32,
    pub fd: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub shared: Arc<Shared>,
    pub on_start: Option<VcpuStartHook>,
}

/// Run one vCPU until the VM stops, the vCPU halts, or something fails.
///
/// Any error also stops the rest of the VM.
pub(crate) fn run(mut ctx: VcpuContext) -> Result<VcpuReport, VcpuError> {
    let tid = nix::unistd::gettid().as_raw();
    if let Some(hook) = &ctx.on_start {
        hook(ctx.index, tid);
    }
    let shared = ctx.shared.clone();
    let result = run_loop(&mut ctx, tid);
    if result.is_err() {
        shared.request_stop();
    }
    result
}

fn run_loop(ctx: &mut VcpuContext, tid: i32) -> Result<VcpuReport, VcpuError> {
    unblock_kick_signal().map_err(VcpuError::Signal)?;
    let slot = &ctx.shared.kick_slots[ctx.index as usize];
    let _registration = KickRegistration::new(slot, &mut ctx.fd);
    let vcpu = ctx.index;
    let mut exits = ExitStats::default();
    let mut unclaimed = 0u64;
    let end = loop {
        if ctx.shared.stop_requested() {
            break VcpuEnd::Stopped;
        }
        let entered = Instant::now();
        let exit = {
            let _in_run = InKvmRun::enter();
            ctx.fd.run()
        };
        let exited = Instant::now();
        if let Some(addr) = take_poisoned() {
            // KVM met a page the host swapper poisoned (see `crate::poison`):
            // its `SIGBUS` made KVM_RUN return. The guest cannot go on; the
            // swapper's own reason, if it gave one first, is kept.
            ctx.shared.abort(format!(
                "vCPU {vcpu}: guest memory at host address {addr:#x} is poisoned (the host \
                 swapper could not serve that page)"
            ));
        }
        exits.in_kvm_run_ns += nanos(exited - entered);
        let (reason, step) = match exit {
            Ok(VcpuExit::MmioWrite(addr, data)) => (
                ExitReason::MmioWrite,
                dispatch(ctx.mmio.write(addr, data), vcpu, addr, &mut unclaimed)?,
            ),
            Ok(VcpuExit::MmioRead(addr, data)) => (
                ExitReason::MmioRead,
                dispatch(ctx.mmio.read(addr, data), vcpu, addr, &mut unclaimed)?,
            ),
            Ok(VcpuExit::IoOut(port, data)) => (
                ExitReason::IoOut,
                dispatch(
                    ctx.pio.write(port.into(), data),
                    vcpu,
                    port.into(),
                    &mut unclaimed,
                )?,
            ),
            Ok(VcpuExit::IoIn(port, data)) => (
                ExitReason::IoIn,
                dispatch(
                    ctx.pio.read(port.into(), data),
                    vcpu,
                    port.into(),
                    &mut unclaimed,
                )?,
            ),
            Ok(VcpuExit::Hlt) => (ExitReason::Hlt, Step::End(VcpuEnd::Halted)),
            Ok(VcpuExit::Intr) => (ExitReason::Intr, Step::Resume),
            Ok(VcpuExit::Shutdown) => {
                let regs = ctx.fd.get_regs().ok();
                return Err(VcpuError::TripleFault {
                    vcpu,
                    rip: regs.map_or(0, |r| r.rip),
                    state: shutdown_state(
                        regs.map(|r| r.rip),
                        regs.map(|r| r.rsp),
                        ctx.fd.get_sregs().ok(),
                    ),
                });
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(VcpuError::FailEntry { vcpu, reason, cpu })
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member of the union.
                let suberror = unsafe { ctx.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                return Err(VcpuError::InternalError {
                    vcpu,
                    suberror,
                    rip: ctx.fd.get_regs().map(|r| r.rip).unwrap_or(0),
                });
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_CRASH => return Err(VcpuError::GuestCrash(vcpu)),
                _ => (ExitReason::SystemEvent, Step::StopVm),
            },
            Ok(other) => {
                return Err(VcpuError::Unexpected {
                    vcpu,
                    what: format!("{other:?}"),
                })
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (or a stray signal). Clear immediate_exit *before* re-checking the
                // stop flag at the top of the loop, so a concurrent stop is never lost.
                ctx.fd.set_kvm_immediate_exit(0);
                (ExitReason::Intr, Step::Resume)
            }
            Err(source) => return Err(VcpuError::Run { vcpu, source }),
        };
        exits.record(reason, nanos(exited.elapsed()));
        match step {
            Step::Resume => {}
            Step::StopVm => ctx.shared.request_stop(),
            Step::End(end) => break end,
        }
    };
    Ok(VcpuReport {
        index: vcpu,
        tid,
        end,
        exits,
        unclaimed_accesses: unclaimed,
    })
}

enum Step {
    Resume,
    StopVm,
    End(VcpuEnd),
}

fn dispatch(
    r: Result<Dispatch, BusError>,
    vcpu: u32,
    addr: u64,
    unclaimed: &mut u64,
) -> Result<Step, VcpuError> {
    match r.map_err(|source| VcpuError::Bus { vcpu, source })? {
        Dispatch::Handled(BusAction::Continue) => Ok(Step::Resume),
        Dispatch::Handled(BusAction::Stop) => Ok(Step::StopVm),
        Dispatch::Unclaimed => {
            *unclaimed += 1;
            // Rate-limited: the guest controls how often this happens.
            if *unclaimed <= 5 || unclaimed.is_power_of_two() {
                tracing::warn!(
                    vcpu,
                    addr = format_args!("{addr:#x}"),
                    count = *unclaimed,
                    "guest access to an address no device claims"
                );
            }
            Ok(Step::Resume)
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_read_back_in_the_reset_state_says_so() {
        let mut s = kvm_bindings::kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let reset = shutdown_state(Some(0xfff0), Some(0), Some(s));
        assert!(reset.contains("reset state"), "{reset}");
        assert!(reset.contains("cr0 0x60000010"), "{reset}");
        s.cr0 = 0x8005_0033;
        s.cr3 = 0x1000;
        s.efer = 0xd01;
        let paged = shutdown_state(Some(0xffff_ffff_8100_0000), Some(0x1000), Some(s));
        assert!(!paged.contains("reset state"), "{paged}");
        assert!(paged.starts_with("rsp 0x1000 cr0 0x80050033"), "{paged}");
        assert_eq!(shutdown_state(None, None, None), "no register state");
    }
}
