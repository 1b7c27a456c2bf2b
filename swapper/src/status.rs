//! Counters and the serde status snapshot.

base::counters! {
    /// Live event counters (relaxed atomics).
    pub struct Counters;
    /// A snapshot of [`Counters`].
    #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    pub struct CounterSnapshot {
        counters {
            /// Fault events read from the userfaultfd.
            faults,
            /// Faults served with a zero page (first touch, zeroed, ballooned).
            swapin_zero,
            /// Faults served from the store.
            swapin_store,
            /// Faults served by moving a clock-inactive page back (minor faults).
            swapin_minor,
            /// Faults served from the prefetch cache.
            prefetch_hits,
            /// Faults on named pages, served from their disk block.
            swapin_named,
            /// Write-protect faults (first write to a clean page).
            wp_faults,
            /// Faults that were already resolved when handled.
            stale_faults,
            /// Pages evicted to the store (written).
            evictions,
            /// Store write batches those went out in (`Store::write_batch`
            /// calls, failed ones too): `evictions / store_write_batches` is
            /// the mean batch, one round trip each for a remote store.
            store_write_batches,
            /// Pages deactivated (moved aside) by the clock.
            deactivations,
            /// Clean pages dropped without a write (valid copy in the store).
            silent_writes_avoided,
            /// Silent swap writes done: pages written to the store with the same
            /// content as the copy already there (counted only without dirty
            /// tracking, the unmitigated mode, by comparing checksums).
            silent_writes,
            /// Store reads for a fault on page `p` right after a store read for
            /// `p - 1` (the guest reads sequentially).
            sequential_store_reads,
            /// Of those, reads whose slot did not follow the previous one's: decayed
            /// swap sequentiality (the store layout no longer matches guest order).
            decayed_sequential_reads,
            /// Evicted pages installed with new content from a device instead of
            /// being read from the store first (the false-read mitigation).
            false_reads_avoided,
            /// Pages found all-zero at eviction: dropped, not stored.
            zero_pages,
            /// Of those, pages that had come back from the store: the guest zeroed
            /// (freed) them after the swapper read them in, so the read was for
            /// nothing. VSwapper's false swap reads, counted when seen (a lower bound:
            /// a page zeroed and then rewritten before its next eviction is missed).
            false_reads,
            /// Evictions that wrote a page to the store although it held a copy
            /// of a disk block the guest had read it from (its crc32 still that of
            /// the block, the block unwritten since): VSwapper's false page
            /// anonymity.
            false_anonymity,
            /// Store writes of pages recorded as mirrors whose content no longer
            /// matched their block (the guest wrote them since; counting mode).
            mirror_mismatches,
            /// Pages a disk read filled that were recorded as mirrors of their block.
            mirrors_registered,
            /// Disk-read pages not recorded (page busy or poisoned,
            /// or the install failed): the device wrote them itself.
            mirrors_skipped,
            /// Mirrors ended because the guest wrote the page (named mode).
            mirror_ends_guest_write,
            /// Mirrors ended because their disk block was about to be written or
            /// discarded.
            mirror_ends_disk_write,
            /// Mirrored pages dropped at eviction without a store write (named
            /// mode: the false-anonymity mitigation).
            named_evictions,
            /// Named pages read back into memory because their disk block was
            /// about to change.
            named_rescues,
            /// Named pages read ahead by disk offset after a sequential named fault.
            named_readahead,
            /// Pages read ahead into the prefetch cache.
            prefetched,
            /// Prefetched pages evicted without being used.
            prefetch_wasted,
            /// Store writes that failed (page kept resident).
            write_errors,
            /// Evictions refused because the store had no free slot.
            store_full,
            /// Store reads that failed (fatal for the page).
            store_read_errors,
            /// Checksum mismatches on swap-in (fatal for the page).
            integrity_errors,
            /// Pages discarded through `discard` (balloon).
            discarded_pages,
            /// UFFD_EVENT_REMOVE events received.
            remove_events,
            /// Pages found unmapped behind the swapper's back.
            external_zaps,
            /// Pages zero-mapped into the pool ahead of use.
            pool_refills,
            /// Pool pages found written by a scan.
            pool_promotions,
            /// Unwritten pool pages reclaimed.
            pool_reclaims,
            /// PAGEMAP_SCAN passes.
            scans,
            /// Time spent in those passes (the kernel's page-table walk and
            /// the promotion of what it found), nanoseconds.
            scan_ns,
            /// Evictions done by a fault handler itself (no free budget).
            direct_reclaims,
            /// Operations retried after EAGAIN (a non-cooperative event pending).
            eagain_retries,
            /// Page-table operations that found the page already populated.
            eexist,
            /// Victims skipped because the page was busy or could not be moved.
            busy_victims,
            /// Evictor rounds that found known-resident pages over the target.
            evictor_rounds,
            /// Of those, rounds that did not evict because store writes were
            /// backing off after a failure.
            evictor_backoffs,
            /// Of those, rounds that stopped over the target because the policy
            /// had no page left to offer (every resident page is tracked, so this
            /// means everything resident was already being acted on).
            evictor_no_victim,
            /// Of those, rounds that stopped after 64 busy victims in a row.
            evictor_busy_stops,
            /// Time the evictor spent in those rounds (choosing, moving aside
            /// and saving victims), nanoseconds.
            evictor_ns,
        }
    }
}

/// Counts of pages by state, at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageCounts {
    /// Never touched / zeroed.
    pub absent: u64,
    /// Zero-map pool.
    pub zero_mapped: u64,
    /// Resident and mapped.
    pub resident: u64,
    /// In staging (clock inactive or prefetched).
    pub staged: u64,
    /// Only in the store.
    pub evicted: u64,
    /// Discarded.
    pub ballooned: u64,
    /// Only on disk: dropped mirrors of disk blocks (named mode).
    #[serde(default)]
    pub named: u64,
    /// Lost (fatal error).
    pub poisoned: u64,
}

/// Everything the VMM reports about the swapper (JSON via serde).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwapperStatus {
    /// Passive mode: the regions fit within limit + slack, so the swapper
    /// never evicts and the regions are not registered with userfaultfd.
    pub passive: bool,
    /// The run stalled and the swapper let go of its faults
    /// (`Swapper::release_waiters`): the regions were unregistered, so the
    /// pages still evicted then were lost.
    #[serde(default)]
    pub released: bool,
    /// Store kind (`file`, `memory`, `lz4`).
    pub store: String,
    /// Policy name.
    pub policy: String,
    /// Pages managed.
    pub region_pages: u64,
    /// Resident limit, pages.
    pub limit_pages: u64,
    /// Allowed slack above the limit (zero-map pool), pages.
    pub slack_pages: u64,
    /// Free room kept by the evictor, pages.
    pub headroom_pages: u64,
    /// Committed pages now (upper bound on resident memory).
    pub committed_pages: u64,
    /// Pages known resident now (resident + staged).
    pub resident_pages: u64,
    /// Pages the eviction policy tracks now. Every known-resident page is
    /// tracked, except victims being acted on at that instant: once the
    /// swapper is idle (or shut down) this equals `resident_pages`.
    #[serde(default)]
    pub policy_pages: u64,
    /// Highest committed value: resident memory never exceeded this.
    pub peak_resident_pages: u64,
    /// Highest known-resident value.
    pub peak_known_resident_pages: u64,
    /// Times a reservation had to exceed `limit + slack`.
    pub limit_overshoots: u64,
    /// Bytes used in the backing store.
    pub store_bytes: u64,
    /// Store slots in use.
    pub store_slots: u64,
    /// Staging slots in use.
    pub staging_pages: u64,
    /// Trace records dropped because the ring was full.
    pub trace_dropped: u64,
    /// Number of fatal errors (see `Swapper::fatal_errors`).
    pub fatal_errors: u64,
    /// Pages that hold a copy of a disk block now (Swap Mapper mirrors,
    /// named pages included).
    #[serde(default)]
    pub mirrored_pages: u64,
    /// Pages by state.
    pub pages: PageCounts,
    /// Fault latency (read → faulting thread woken) per path, by path name
    /// (`zero`, `store`, `minor`, `prefetch_hit`, `named`, `write_protect`,
    /// `stale`, `fatal`); paths without faults are absent.
    pub latency: std::collections::BTreeMap<String, crate::trace::LatencySummary>,
    /// Event counters.
    pub counters: CounterSnapshot,
}

impl SwapperStatus {
    /// Swap-ins of every kind that brought data back (store + minor +
    /// prefetch hits + named).
    pub fn swap_ins(&self) -> u64 {
        self.counters.swapin_store
            + self.counters.swapin_minor
            + self.counters.prefetch_hits
            + self.counters.swapin_named
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn snapshot_reads_counters_and_serializes() {
        let c = Counters::default();
        c.evictions.fetch_add(3, Ordering::Relaxed);
        c.swapin_store.fetch_add(2, Ordering::Relaxed);
        c.prefetch_hits.fetch_add(1, Ordering::Relaxed);
        let s = SwapperStatus {
            counters: c.snapshot(),
            ..Default::default()
        };
        assert_eq!(s.swap_ins(), 3);
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["counters"]["evictions"], 3);
        assert_eq!(j["peak_resident_pages"], 0);
    }
}
