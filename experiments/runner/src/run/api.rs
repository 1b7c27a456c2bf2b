//! What a running VM answers on its control socket ([`vmm::api`]):
//! `balloon.set`, `balloon.stats`, `swapper.status`, `swapper.set_limit`,
//! `vm.stats`, `vm.recent`, `guest.send`.
//!
//! Every answer comes from state the devices and the swapper already keep
//! (cheap, never waiting for the guest), so a guest that does not cooperate
//! cannot stall the socket.

use std::sync::Arc;
use std::time::Instant;

use balloon::BalloonHandle;
use serde_json::{json, Value};
use swapper::Swapper;
use vmm::api::{ApiError, ApiHandler, Request};
use vmm::devices::serial::ChannelInput;
use vmm::virtio::blk::BlkHandle;
use vmm::HostRegion;

use super::recent::Recent;

/// The VM's parts the socket can see.
pub struct VmApi {
    /// The balloon, if the VM has one.
    pub balloon: Option<BalloonHandle>,
    /// The host swapper, if guest RAM is host-swapped.
    pub swapper: Option<Arc<Swapper>>,
    /// The swap disk, if any.
    pub blk: Option<BlkHandle>,
    /// Guest RAM, host ranges.
    pub regions: Vec<HostRegion>,
    /// Guest RAM bytes.
    pub guest_mem: u64,
    /// When the vCPUs started.
    pub started: Instant,
    /// Recent faults and events (`vm.recent`), if kept.
    pub recent: Option<Arc<Recent>>,
    /// Lines to the guest on the result channel (`guest.send`), if it has one.
    pub channel_input: Option<ChannelInput>,
}

/// Pages of `[addr, addr + len)` resident in host memory (`mincore`).
pub use hostsys::mem::resident_pages;

/// Host memory holding guest RAM: the swapper's count when it manages RAM
/// (`status` not passive; pages it moved aside included), else the page
/// tables' (`mincore` over `regions`); `None` if they cannot be read.
pub fn host_resident_bytes(
    status: Option<&swapper::SwapperStatus>,
    regions: &[HostRegion],
) -> Option<u64> {
    if let Some(st) = status.filter(|st| !st.passive) {
        return Some(st.resident_pages * swapper::PAGE_SIZE as u64);
    }
    let pages: Option<u64> = regions
        .iter()
        .map(|r| resident_pages(r.host_addr, r.len).ok())
        .sum();
    pages.map(|p| p * 4096)
}

impl VmApi {
    /// [`host_resident_bytes`] now.
    pub fn host_resident_bytes(&self) -> u64 {
        let status = self.swapper.as_ref().map(|sw| sw.status());
        host_resident_bytes(status.as_ref(), &self.regions).unwrap_or(0)
    }

    fn event(&self, text: &str) {
        if let Some(r) = &self.recent {
            r.push_event("host", text);
        }
    }

    fn swapper(&self) -> Result<&Arc<Swapper>, ApiError> {
        self.swapper.as_ref().ok_or_else(|| {
            ApiError::Unavailable("no host swapper on this VM (no host limit)".into())
        })
    }

    fn balloon(&self) -> Result<&BalloonHandle, ApiError> {
        self.balloon.as_ref().ok_or_else(|| {
            ApiError::Unavailable("this VM has no balloon device (start it with one)".into())
        })
    }

    fn balloon_stats(&self) -> Result<Value, ApiError> {
        let b = self.balloon()?;
        let stats = b.stats().map(|s| {
            let named: serde_json::Map<String, Value> =
                s.named().into_iter().map(|(k, v)| (k, v.into())).collect();
            json!({ "age_ms": b.epoch().elapsed().as_millis() as u64 - s.t_ns / 1_000_000, "values": named })
        });
        Ok(json!({
            "target_bytes": b.target_bytes(),
            "actual_bytes": b.actual_bytes(),
            "active": b.is_active(),
            "stats": stats,
            "metrics": serde_json::to_value(b.metrics()).unwrap_or_default(),
        }))
    }
}

impl ApiHandler for VmApi {
    fn handle(&self, req: &Request) -> Result<Value, ApiError> {
        match req {
            Request::BalloonSet { target } => {
                let b = self.balloon()?;
                if target.0 > self.guest_mem {
                    return Err(ApiError::BadArgument(format!(
                        "balloon target {} bytes is more than the guest's RAM ({} bytes)",
                        target.0, self.guest_mem
                    )));
                }
                b.set_target(target.0);
                self.event(&format!("balloon target set to {} MiB", target.0 >> 20));
                Ok(json!({ "target_bytes": b.target_bytes(), "actual_bytes": b.actual_bytes() }))
            }
            Request::BalloonStats => self.balloon_stats(),
            Request::SwapperStatus => serde_json::to_value(self.swapper()?.status())
                .map_err(|e| ApiError::Internal(e.to_string())),
            Request::SwapperSetLimit { limit } => {
                let l = self
                    .swapper()?
                    .set_limit(limit.0)
                    .map_err(|e| ApiError::BadArgument(e.to_string()))?;
                let bytes = l.limit * swapper::PAGE_SIZE as u64;
                self.event(&format!("host limit set to {} MiB", bytes >> 20));
                Ok(
                    json!({ "limit_bytes": bytes, "slack_bytes": l.slack * swapper::PAGE_SIZE as u64 }),
                )
            }
            Request::VmRecent => Ok(self
                .recent
                .as_ref()
                .map_or_else(|| json!({ "faults": {}, "events": [] }), |r| r.snapshot())),
            Request::GuestSend { line } => {
                let input = self.channel_input.as_ref().ok_or_else(|| {
                    ApiError::Unavailable("this VM has no result channel to send on".into())
                })?;
                input.send_line(line).map_err(|e| match e {
                    vmm::devices::serial::InputError::Full { .. } => {
                        ApiError::Unavailable(e.to_string())
                    }
                    _ => ApiError::BadArgument(e.to_string()),
                })?;
                self.event(&format!("sent to guest: {line}"));
                Ok(json!({ "sent_bytes": line.len() + 1 }))
            }
            Request::VmStats => Ok(json!({
                "guest_mem_bytes": self.guest_mem,
                "host_resident_bytes": self.host_resident_bytes(),
                "uptime_s": self.started.elapsed().as_secs_f64(),
                "balloon_actual_bytes": self.balloon.as_ref().map(|b| b.actual_bytes()),
                "swap_disk": self.blk.as_ref().map(|b| serde_json::to_value(b.counters()).unwrap_or_default()),
            })),
            Request::Help => Ok(vmm::api::help_result()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mincore_counts_touched_pages() {
        let len = 64 * 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(resident_pages(p as usize, len).unwrap(), 0);
        for i in 0..10 {
            let page = (p as usize + i * 4096) as *mut u8;
            // SAFETY: a byte inside the mapping.
            unsafe { page.write(1) };
        }
        assert_eq!(resident_pages(p as usize, len).unwrap(), 10);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, len) };
    }

    #[test]
    fn requests_without_the_device_are_unavailable() {
        let api = VmApi {
            balloon: None,
            swapper: None,
            blk: None,
            regions: Vec::new(),
            guest_mem: 1 << 30,
            started: Instant::now(),
            recent: None,
            channel_input: None,
        };
        let e = api.handle(&Request::BalloonStats).unwrap_err();
        assert!(e.to_string().contains("no balloon"), "{e}");
        assert!(api.handle(&Request::SwapperStatus).is_err());
        let e = api
            .handle(&Request::SwapperSetLimit {
                limit: vmm::api::Size(64 << 20),
            })
            .unwrap_err();
        assert!(e.to_string().contains("no host swapper"), "{e}");
        let e = api
            .handle(&Request::GuestSend {
                line: "stop".into(),
            })
            .unwrap_err();
        assert!(e.to_string().contains("no result channel"), "{e}");
        assert_eq!(
            api.handle(&Request::VmRecent).unwrap(),
            json!({ "faults": {}, "events": [] })
        );
        let v = api.handle(&Request::VmStats).unwrap();
        assert_eq!(v["guest_mem_bytes"], 1u64 << 30);
        assert_eq!(v["host_resident_bytes"], 0);
    }
}
