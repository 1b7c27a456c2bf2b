//! Running a Linux guest to its end and telling how it ended.
//!
//! A watchdog thread stops the VM when the time limit passes, or shortly after the
//! console shows the end of a kernel panic (in case the guest does not reboot on
//! panic by itself). The outcome combines what the power devices recorded, how the
//! vCPUs ended (a triple fault is a reset), what the console showed, and the watchdog.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base::sync::lock;
use serde::Serialize;

use crate::devices::console::{ConsoleLog, LineHook};
use crate::devices::power::{PowerEvent, PowerState};
use crate::vcpu::VcpuError;
use crate::virtio::mmio::{MmioSlot, MmioTransport, TransportStats};
use crate::vm::{RunningVm, VmError, VmHandle, VmReport};

use super::error::LinuxError;

/// How long a guest that printed the end of a kernel panic may take to reboot itself.
pub const PANIC_GRACE: Duration = Duration::from_secs(2);
/// Console lines kept in the report.
const REPORT_LINES: usize = 40;

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GuestOutcome {
    /// The guest powered off through ACPI.
    PoweredOff,
    /// The guest reset the machine (`how`: acpi_reset, keyboard_reset, triple_fault).
    Rebooted {
        /// How.
        how: String,
    },
    /// The kernel panicked.
    Panicked {
        /// The panic message.
        message: String,
        /// Earlier console lines that often explain a panic (a failed initramfs
        /// unpack, a BUG or Oops, a missing init).
        hints: Vec<String>,
        /// What happened next (rebooted, timed out, stopped).
        then: Box<GuestOutcome>,
    },
    /// The guest did not end within the time limit and was stopped.
    TimedOut {
        /// The limit.
        after_ms: u64,
    },
    /// The VM was stopped from outside (a [`VmHandle`]) or by a KVM system event.
    Stopped,
}

/// What a finished guest leaves behind.
#[derive(Debug, Clone, Serialize)]
pub struct LinuxReport {
    /// How it ended.
    pub outcome: GuestOutcome,
    /// From [`LinuxVm::new`](super::LinuxVm::new) to the vCPUs starting.
    pub setup_ns: u64,
    /// From the vCPUs starting to the last one ending.
    pub run_ns: u64,
    /// The last console lines.
    pub console_tail: Vec<String>,
    /// Console bytes in total.
    pub console_bytes: u64,
    /// VM exits and KVM statistics (absent if the VM ended with a triple fault).
    pub vm: Option<VmReport>,
    /// Per virtio device: name, register window, counters.
    pub virtio: Vec<VirtioReport>,
}

/// A virtio device's transport counters.
#[derive(Debug, Clone, Serialize)]
pub struct VirtioReport {
    /// Device name.
    pub name: String,
    /// Register window base.
    pub base: u64,
    /// GSI.
    pub gsi: u32,
    /// Device type.
    pub device_type: u32,
    /// Whether the driver activated it (and it is still active).
    pub activated: bool,
    /// Counters.
    pub stats: TransportStats,
}

/// What the console showed of a panic.
#[derive(Debug, Default)]
pub(crate) struct PanicWatch {
    message: Option<String>,
    hints: Vec<String>,
}

/// Console lines worth quoting when the kernel panics.
const HINTS: &[&str] = &[
    "Initramfs unpacking failed",
    "BUG:",
    "Oops:",
    "Failed to execute",
    "No working init found",
    "Out of memory",
];
/// Most hint lines kept.
const MAX_HINTS: usize = 4;

/// Events for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// The console showed `---[ end Kernel panic`.
    PanicEnded,
    /// The VM ended.
    Done,
}

/// Strip a printk timestamp (`[    1.234567] `).
fn strip_timestamp(line: &str) -> &str {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let stamp = rest[..end].trim();
            if !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return rest[end + 1..].trim_start();
            }
        }
    }
    t
}

/// A console hook noting the first panic message and telling the watchdog when the
/// panic report ends.
pub(crate) fn panic_hook(watch: Arc<Mutex<PanicWatch>>, events: Sender<WatchEvent>) -> LineHook {
    Box::new(move |line: &str| {
        let text = strip_timestamp(line);
        if text.contains("---[ end Kernel panic") {
            let _ = events.send(WatchEvent::PanicEnded);
        } else if let Some(i) = text.find("Kernel panic - not syncing") {
            let mut w = lock(&watch);
            if w.message.is_none() {
                let msg = text[i..].trim_end();
                w.message = Some(msg.chars().take(512).collect());
            }
        } else if HINTS.iter().any(|h| text.contains(h)) {
            let mut w = lock(&watch);
            if w.message.is_none() && w.hints.len() < MAX_HINTS {
                w.hints.push(text.chars().take(512).collect());
            }
        }
    })
}

const WATCH_RUNNING: u8 = 0;
const WATCH_TIMED_OUT: u8 = 1;
const WATCH_PANIC_STOP: u8 = 2;

fn watchdog(
    events: Receiver<WatchEvent>,
    handle: VmHandle,
    timeout: Option<Duration>,
    verdict: Arc<AtomicU8>,
) {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut panic_deadline: Option<Instant> = None;
    loop {
        let next = match (deadline, panic_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let got = match next {
            Some(at) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(WatchEvent::PanicEnded) => {
                panic_deadline.get_or_insert_with(|| Instant::now() + PANIC_GRACE);
            }
            Ok(WatchEvent::Done) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    verdict.store(WATCH_TIMED_OUT, Ordering::SeqCst);
                    // Before anything is stopped: which thread waits where.
                    tracing::warn!(
                        "the guest ran out of time; this process's threads (tid comm state wchan [kernel stack]):\n{}",
                        crate::threads::dump()
                    );
                } else if panic_deadline.is_some_and(|d| now >= d) {
                    verdict.store(WATCH_PANIC_STOP, Ordering::SeqCst);
                } else {
                    continue;
                }
                handle.stop();
                return;
            }
        }
    }
}

/// A Linux guest whose vCPUs are running.
pub struct RunningLinux {
    running: RunningVm,
    power: PowerState,
    console: Arc<Mutex<ConsoleLog>>,
    panic: Arc<Mutex<PanicWatch>>,
    events: (Sender<WatchEvent>, Receiver<WatchEvent>),
    virtio: Vec<(String, MmioSlot, Arc<Mutex<MmioTransport>>)>,
    setup_ns: u64,
    started: Instant,
}

impl std::fmt::Debug for RunningLinux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningLinux")
            .field("power", &self.power.get())
            .finish_non_exhaustive()
    }
}

impl RunningLinux {
    pub(crate) fn new(
        running: RunningVm,
        power: PowerState,
        console: Arc<Mutex<ConsoleLog>>,
        panic: Arc<Mutex<PanicWatch>>,
        events: (Sender<WatchEvent>, Receiver<WatchEvent>),
        virtio: Vec<(String, MmioSlot, Arc<Mutex<MmioTransport>>)>,
        setup_ns: u64,
    ) -> Self {
        Self {
            running,
            power,
            console,
            panic,
            events,
            virtio,
            setup_ns,
            started: Instant::now(),
        }
    }

    /// A handle to stop the guest from another thread.
    pub fn handle(&self) -> VmHandle {
        self.running.handle()
    }

    /// When the vCPUs started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Wait for the guest to end (or `timeout` to pass: then it is stopped) and report.
    ///
    /// A guest that ends is not an error whatever its outcome; errors are host-side
    /// failures (a vCPU that KVM could not run, a device that failed).
    pub fn wait(self, timeout: Option<Duration>) -> Result<LinuxReport, LinuxError> {
        let (tx, rx) = self.events;
        let verdict = Arc::new(AtomicU8::new(WATCH_RUNNING));
        let handle = self.running.handle();
        let v2 = verdict.clone();
        let dog = std::thread::Builder::new()
            .name("linux-watchdog".into())
            .spawn(move || watchdog(rx, handle, timeout, v2))
            .map_err(|e| LinuxError::Device {
                name: "watchdog".into(),
                source: Box::new(e),
            })?;
        let result = self.running.wait();
        let _ = tx.send(WatchEvent::Done);
        let _ = dog.join();
        let run_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);

        let (panic, hints) = {
            let w = lock(&self.panic);
            (w.message.clone(), w.hints.clone())
        };
        let (vm, outcome) = match result {
            Ok(report) => (Some(report), None),
            Err(VmError::Vcpu(VcpuError::TripleFault { vcpu, rip, state })) => {
                // The registers go to the log: the outcome names the reset
                // kind only (reports group runs by it).
                tracing::warn!("guest triple fault on vCPU {vcpu} at RIP {rip:#x} ({state})");
                (
                    None,
                    Some(GuestOutcome::Rebooted {
                        how: "triple_fault".into(),
                    }),
                )
            }
            Err(VmError::Vcpu(VcpuError::GuestCrash(_))) => (
                None,
                Some(GuestOutcome::Panicked {
                    message: "the guest reported a crash (KVM_SYSTEM_EVENT_CRASH)".into(),
                    hints: hints.clone(),
                    then: Box::new(GuestOutcome::Stopped),
                }),
            ),
            Err(e) if panic.is_none() => return Err(e.into()),
            Err(_) => (None, Some(GuestOutcome::Stopped)),
        };
        let outcome =
            outcome.unwrap_or_else(
                || match (self.power.get(), verdict.load(Ordering::SeqCst)) {
                    (Some(PowerEvent::PowerOff), _) => GuestOutcome::PoweredOff,
                    (Some(PowerEvent::AcpiReset), _) => GuestOutcome::Rebooted {
                        how: "acpi_reset".into(),
                    },
                    (Some(PowerEvent::KeyboardReset), _) => GuestOutcome::Rebooted {
                        how: "keyboard_reset".into(),
                    },
                    (None, WATCH_TIMED_OUT) => GuestOutcome::TimedOut {
                        after_ms: timeout.map_or(0, |t| t.as_millis() as u64),
                    },
                    _ => GuestOutcome::Stopped,
                },
            );
        let outcome = match (panic, outcome) {
            (Some(message), then) if !matches!(then, GuestOutcome::Panicked { .. }) => {
                GuestOutcome::Panicked {
                    message,
                    hints,
                    then: Box::new(then),
                }
            }
            (_, outcome) => outcome,
        };
        let console = lock(&self.console);
        let virtio = self
            .virtio
            .iter()
            .map(|(name, slot, t)| {
                let t = lock(t);
                VirtioReport {
                    name: name.clone(),
                    base: slot.base,
                    gsi: slot.gsi,
                    device_type: t.device().device_type(),
                    activated: t.is_activated(),
                    stats: t.stats(),
                }
            })
            .collect();
        Ok(LinuxReport {
            outcome,
            setup_ns: self.setup_ns,
            run_ns,
            console_tail: console.last_lines(REPORT_LINES),
            console_bytes: console.total_bytes(),
            vm,
            virtio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_stripped_only_when_they_are_timestamps() {
        assert_eq!(
            strip_timestamp("[    1.234567] Kernel panic"),
            "Kernel panic"
        );
        assert_eq!(strip_timestamp("[x] not a stamp"), "[x] not a stamp");
        assert_eq!(strip_timestamp("plain"), "plain");
        assert_eq!(strip_timestamp("[] empty"), "[] empty");
    }

    #[test]
    fn panic_hook_keeps_the_first_message_and_signals_the_end() {
        let watch = Arc::new(Mutex::new(PanicWatch::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut hook = panic_hook(watch.clone(), tx);
        hook("[    0.5] Initramfs unpacking failed: junk");
        hook("[    0.6] all fine");
        hook("[    2.000000] Kernel panic - not syncing: VFS: Unable to mount root fs");
        hook("[    2.1] Kernel panic - not syncing: second");
        assert!(rx.try_recv().is_err());
        hook("[    2.2] ---[ end Kernel panic - not syncing: VFS ]---");
        assert_eq!(rx.try_recv(), Ok(WatchEvent::PanicEnded));
        let w = watch.lock().unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
        assert_eq!(w.hints, vec!["Initramfs unpacking failed: junk"]);
    }
}
