//! The probe's doorbell device: serves chunks of page indices and drains latencies.
//!
//! It runs on the vCPU thread, inside the doorbell's MMIO exit, so the guest is stopped
//! while the host refills: none of this time is inside a timed access.

use std::time::Instant;

use hdrhistogram::Histogram;
use vmm::vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::{BusAction, BusDevice, DeviceError};
use workloads::probe::abi::{self, Doorbell};
use workloads::probe::AccessPlan;

/// Significant figures kept by the latency histograms.
const SIGFIGS: u8 = 3;
/// Largest latency a histogram tracks (1 hour, in ns); longer ones are clamped to it.
const MAX_TRACKED_NS: u64 = 3_600 * 1_000_000_000;

/// Errors the device reports (they stop the VM).
#[derive(Debug, thiserror::Error)]
pub enum DoorbellError {
    /// A value that is not a doorbell code.
    #[error("unknown probe doorbell code {0:#x}")]
    UnknownCode(u64),
    /// A write that is not one aligned 8-byte store at offset 0.
    #[error("probe doorbell written with {len} bytes at offset {offset}")]
    BadAccess {
        /// Offset in the doorbell.
        offset: u64,
        /// Bytes written.
        len: usize,
    },
    /// A code out of protocol order.
    #[error("probe doorbell {code:?} out of order ({state})")]
    Protocol {
        /// The code.
        code: Doorbell,
        /// What the device expected.
        state: &'static str,
    },
    /// Reading or writing the control region failed.
    #[error("probe control region access failed")]
    Memory(#[from] vmm::vm_memory::GuestMemoryError),
}

/// Latencies and counts of one pass.
pub(crate) struct PassAccum {
    pub hist: Histogram<u64>,
    /// Accesses of at least [`crate::probe_run::hooks::FAULT_THRESHOLD_NS`]: the ones that took a host
    /// page fault (a resident access is well under a microsecond, the cheapest host
    /// fault several).
    pub faults: Histogram<u64>,
    pub distinct: u64,
    /// Pages touched for the first time in the run.
    pub new_pages: u64,
    pub started: Instant,
    pub ended: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Running,
    Finished,
}

/// Host side of the probe protocol (see `workloads::probe::abi`).
pub(crate) struct ProbeDevice {
    mem: GuestMemoryMmap,
    plan: AccessPlan,
    passes: u32,
    tsc_khz: u64,
    phase: Phase,
    pass: u32,
    chunk_len: usize,
    indices: Vec<u32>,
    bytes: Vec<u8>,
    /// Accesses handed out per page over the whole run.
    pub counts: Vec<u32>,
    /// `pass + 1` of the last pass that touched each page.
    seen_in: Vec<u32>,
    pub pass_stats: Vec<PassAccum>,
    /// Called with the 1-based pass number when a pass ends (on the vCPU thread, guest
    /// stopped).
    on_pass_end: Option<crate::probe_run::hooks::PassEndHook>,
}

impl ProbeDevice {
    pub(crate) fn new(
        mem: GuestMemoryMmap,
        plan: AccessPlan,
        passes: u32,
        tsc_khz: u64,
        on_pass_end: Option<crate::probe_run::hooks::PassEndHook>,
    ) -> Self {
        let pages = plan.pages() as usize;
        Self {
            mem,
            plan,
            passes,
            tsc_khz,
            phase: Phase::NotStarted,
            pass: 0,
            chunk_len: 0,
            indices: vec![0; abi::CHUNK_CAPACITY],
            bytes: Vec::with_capacity(8 * abi::CHUNK_CAPACITY),
            counts: vec![0; pages],
            seen_in: vec![0; pages],
            pass_stats: Vec::new(),
            on_pass_end,
        }
    }

    /// Whether the guest reported it finished every pass.
    pub(crate) fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    fn begin_pass(&mut self) {
        self.plan.start_pass(self.pass);
        self.pass_stats.push(PassAccum {
            hist: new_histogram(),
            faults: new_histogram(),
            distinct: 0,
            new_pages: 0,
            started: Instant::now(),
            ended: None,
        });
    }

    /// Hand the guest its next chunk (count 0 when every pass is done).
    fn next_chunk(&mut self) -> Result<(), DoorbellError> {
        loop {
            let n = self.plan.fill(&mut self.indices);
            if n > 0 {
                let pass_tag = self.pass + 1;
                let stats = self.pass_stats.last_mut().expect("a pass is open");
                self.bytes.clear();
                for &i in &self.indices[..n] {
                    self.bytes.extend_from_slice(&i.to_le_bytes());
                    if self.counts[i as usize] == 0 {
                        stats.new_pages += 1;
                    }
                    self.counts[i as usize] += 1;
                    if self.seen_in[i as usize] != pass_tag {
                        self.seen_in[i as usize] = pass_tag;
                        stats.distinct += 1;
                    }
                }
                self.mem
                    .write_slice(&self.bytes, GuestAddress(abi::INDEX_ADDR))?;
                return self.set_count(n);
            }
            self.pass_stats.last_mut().expect("a pass is open").ended = Some(Instant::now());
            self.pass += 1;
            if let Some(hook) = &self.on_pass_end {
                hook(self.pass);
            }
            if self.pass == self.passes {
                return self.set_count(0);
            }
            self.begin_pass();
        }
    }

    fn set_count(&mut self, n: usize) -> Result<(), DoorbellError> {
        self.chunk_len = n;
        let at = abi::CONTROL_BLOCK_ADDR + abi::CB_COUNT;
        self.mem.write_obj(n as u64, GuestAddress(at))?;
        Ok(())
    }

    /// Move the finished chunk's latencies into the current pass's histogram.
    fn drain(&mut self) -> Result<(), DoorbellError> {
        let n = self.chunk_len;
        self.bytes.resize(8 * n, 0);
        self.mem
            .read_slice(&mut self.bytes, GuestAddress(abi::LATENCY_ADDR))?;
        let stats = self.pass_stats.last_mut().expect("a pass is open");
        for c in self.bytes.chunks_exact(8) {
            let cycles = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            let ns = cycles_to_ns(cycles, self.tsc_khz);
            stats.hist.saturating_record(ns);
            if ns >= crate::probe_run::hooks::FAULT_THRESHOLD_NS {
                stats.faults.saturating_record(ns);
            }
        }
        Ok(())
    }

    fn on_doorbell(&mut self, code: Doorbell) -> Result<BusAction, DoorbellError> {
        match (code, self.phase) {
            (Doorbell::Ready, Phase::NotStarted) => {
                self.phase = Phase::Running;
                self.pass = 0;
                self.begin_pass();
                self.next_chunk()?;
                Ok(BusAction::Continue)
            }
            (Doorbell::ChunkDone, Phase::Running) if self.chunk_len > 0 => {
                self.drain()?;
                self.next_chunk()?;
                Ok(BusAction::Continue)
            }
            (Doorbell::Finished, Phase::Running) if self.chunk_len == 0 => {
                self.phase = Phase::Finished;
                Ok(BusAction::Stop)
            }
            (Doorbell::Ready, _) => Err(DoorbellError::Protocol {
                code,
                state: "the payload already started",
            }),
            (_, Phase::NotStarted) => Err(DoorbellError::Protocol {
                code,
                state: "the payload has not said ready",
            }),
            (_, Phase::Finished) => Err(DoorbellError::Protocol {
                code,
                state: "the payload already finished",
            }),
            (Doorbell::ChunkDone, _) => Err(DoorbellError::Protocol {
                code,
                state: "no chunk was handed out",
            }),
            (Doorbell::Finished, _) => Err(DoorbellError::Protocol {
                code,
                state: "work was still handed out",
            }),
        }
    }
}

/// An empty latency histogram (1 ns to 1 hour, 3 significant figures).
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Fixed bounds: an auto-resizing histogram would clamp `saturating_record` to its
    // current (tiny) range instead of growing.
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIGS).expect("valid histogram bounds")
}

/// Convert TSC cycles to nanoseconds at `tsc_khz`.
pub(crate) fn cycles_to_ns(cycles: u64, tsc_khz: u64) -> u64 {
    let ns = u128::from(cycles) * 1_000_000 / u128::from(tsc_khz.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl BusDevice for ProbeDevice {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<BusAction, DeviceError> {
        if offset != 0 || data.len() != 8 {
            return Err(DoorbellError::BadAccess {
                offset,
                len: data.len(),
            }
            .into());
        }
        let v = u64::from_le_bytes(data.try_into().expect("8 bytes"));
        let code = Doorbell::from_u64(v).ok_or(DoorbellError::UnknownCode(v))?;
        Ok(self.on_doorbell(code)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm::{create_guest_memory, RegionSpec};
    use workloads::probe::Pattern;

    fn device_with(
        pages: u64,
        passes: u32,
        on_pass_end: Option<crate::probe_run::PassEndHook>,
    ) -> ProbeDevice {
        let mem = create_guest_memory(&[RegionSpec::new(0, abi::CONTROL_SIZE)]).unwrap();
        let plan = AccessPlan::new(Pattern::Random, pages, 1).unwrap();
        ProbeDevice::new(mem, plan, passes, 2_000_000, on_pass_end)
    }

    fn device(pages: u64, passes: u32) -> ProbeDevice {
        device_with(pages, passes, None)
    }

    fn ring(d: &mut ProbeDevice, code: Doorbell) -> Result<BusAction, DeviceError> {
        d.write(0, &(code as u64).to_le_bytes())
    }

    fn count(d: &ProbeDevice) -> u64 {
        d.mem
            .read_obj(GuestAddress(abi::CONTROL_BLOCK_ADDR + abi::CB_COUNT))
            .unwrap()
    }

    /// Play the guest's part: for every chunk, "measure" 2000 cycles (1 µs at 2 GHz),
    /// except every fourth access, which "faults" (10000 cycles, 5 µs).
    #[test]
    fn serves_every_pass_in_chunks_and_records_latencies() {
        let pages = abi::CHUNK_CAPACITY as u64 + 10;
        let ended = Arc::new(Mutex::new(Vec::new()));
        let hook: crate::probe_run::PassEndHook = {
            let ended = ended.clone();
            Arc::new(move |pass| ended.lock().unwrap().push(pass))
        };
        let mut d = device_with(pages, 2, Some(hook));
        assert_eq!(ring(&mut d, Doorbell::Ready).unwrap(), BusAction::Continue);
        let mut chunks = vec![];
        loop {
            let n = count(&d);
            if n == 0 {
                break;
            }
            chunks.push(n);
            let lat: Vec<u8> = (0..n)
                .flat_map(|i| if i % 4 == 0 { 10_000u64 } else { 2000 }.to_le_bytes())
                .collect();
            d.mem
                .write_slice(&lat, GuestAddress(abi::LATENCY_ADDR))
                .unwrap();
            assert_eq!(
                ring(&mut d, Doorbell::ChunkDone).unwrap(),
                BusAction::Continue
            );
        }
        // Chunks never straddle passes.
        let cap = abi::CHUNK_CAPACITY as u64;
        assert_eq!(chunks, vec![cap, 10, cap, 10]);
        assert_eq!(ring(&mut d, Doorbell::Finished).unwrap(), BusAction::Stop);
        assert!(d.finished());
        assert_eq!(d.pass_stats.len(), 2);
        assert_eq!(*ended.lock().unwrap(), vec![1, 2]);
        // Every fourth access of each chunk "faulted".
        let slow = cap.div_ceil(4) + 10u64.div_ceil(4);
        for p in &d.pass_stats {
            assert_eq!(p.hist.len(), pages);
            assert_eq!(p.faults.len(), slow);
            assert!(p.faults.equivalent(p.faults.min(), 5000));
            assert!(p.faults.equivalent(p.faults.max(), 5000));
            assert_eq!(p.distinct, pages);
            assert_eq!(p.hist.value_at_quantile(0.5), 1000);
            assert!(p.ended.is_some());
        }
        assert!(d.counts.iter().all(|&c| c == 2));
        assert_eq!(d.pass_stats[0].new_pages, pages);
        assert_eq!(d.pass_stats[1].new_pages, 0);
        // The last chunk's indices are in the index buffer, each in range.
        let idx: u32 = d.mem.read_obj(GuestAddress(abi::INDEX_ADDR)).unwrap();
        assert!(u64::from(idx) < pages);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut d = device(100, 1);
        let e = ring(&mut d, Doorbell::ChunkDone).unwrap_err();
        assert!(e.to_string().contains("not said ready"), "{e}");
        ring(&mut d, Doorbell::Ready).unwrap();
        assert!(ring(&mut d, Doorbell::Ready).is_err());
        let e = ring(&mut d, Doorbell::Finished).unwrap_err();
        assert!(e.to_string().contains("still handed out"), "{e}");
        let e = d.write(0, &99u64.to_le_bytes()).unwrap_err();
        assert!(e.to_string().contains("0x63"), "{e}");
        assert!(d.write(0, &[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn converts_cycles_at_the_tsc_rate() {
        assert_eq!(cycles_to_ns(3_000, 3_000_000), 1_000);
        assert_eq!(cycles_to_ns(1, 1_000_000), 1);
        assert_eq!(cycles_to_ns(u64::MAX, 1), u64::MAX);
    }
}
