//! Swapper configuration. Sizes in it are bytes; parse them from text with
//! [`base::size::parse`].

use crate::fatal::FatalHook;
use crate::page::PAGE_SIZE;
use crate::policy::PolicyKind;
use crate::store::faulty::FaultInjector;
use crate::store::StoreKind;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// What to do with a page whose content cannot be produced (store read
/// failure, checksum mismatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FatalAction {
    /// Install a poison marker (`UFFDIO_POISON`): the faulting access and
    /// every later one fail (`SIGBUS` for user-mode accesses, `EFAULT` /
    /// `EHWPOISON` for kernel and KVM accesses), like an uncorrectable memory
    /// error. Wrong data can never be read, even after the swapper stops.
    Poison,
    /// Leave the faulting thread blocked; the VMM must stop the VM before it
    /// shuts the swapper down (unregistering would let it read zeros).
    Block,
}

/// Where read-ahead pages go (see `Shared::prefetch` in `fault.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefetchMode {
    /// Installed in the guest mapping: one fault per cluster on a
    /// sequential scan; their use is not observable.
    Map,
    /// Kept in staging (like the kernel's swap cache): each use is a cheap
    /// `prefetch_hit` fault without I/O; hits and waste are counted.
    Cache,
}

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// Swapper settings. `Default` gives a 1 GiB limit, the memory store, fifo,
/// no prefetch, one handler thread, checksums off.
#[derive(Clone)]
pub struct SwapperConfig {
    /// Resident limit in bytes.
    pub limit_bytes: u64,
    /// Slack above the limit for the zero-map pool, bytes. `None`:
    /// `max(1 MiB, limit / 16)`. `Some(0)` gives a strict limit (first
    /// touches beyond free room then take a userfaultfd round trip).
    pub slack_bytes: Option<u64>,
    /// Backing store.
    pub store: StoreKind,
    /// Store capacity in pages (`None`: one slot per managed page, so the
    /// store can never be full).
    pub store_pages: Option<u32>,
    /// Eviction policy.
    pub policy: PolicyKind,
    /// Clock: the inactive list holds `limit / inactive_divisor` pages.
    pub inactive_divisor: u64,
    /// Prefetch cluster: on a sequential fault, read up to this many
    /// following evicted pages (0 = off).
    pub prefetch: u32,
    /// Where prefetched pages go.
    pub prefetch_mode: PrefetchMode,
    /// First-touch zero cluster: a zero fault also zero-maps up to this many
    /// aligned neighbours when there is room (1 = just the page).
    pub zero_cluster: u32,
    /// Number of fault-handler threads (at least 1).
    pub handler_threads: usize,
    /// Handler threads busy-poll this long (µs) for the next event before
    /// sleeping in `poll(2)`: lower fault latency, one CPU burnt while
    /// faults keep coming (0 = off).
    pub handler_spin_us: u32,
    /// Record a crc32 per stored page and verify it on every swap-in.
    pub checksums: bool,
    /// Install pages read back for read faults write-protected, so a clean
    /// page with a valid store copy is dropped without a write. Off: every
    /// swapped-in page is treated as dirty.
    pub dirty_tracking: bool,
    /// The false-anonymity mitigation (VSwapper's Swap Mapper, see
    /// [`crate::named`]): pages a disk read fills are installed
    /// write-protected as exact copies of their block, and evicting one that
    /// was not written since drops it without a store write. Off: mirrors
    /// are only counted (`false_anonymity`).
    pub named: bool,
    /// Named faults that follow the disk's order read this many following
    /// named blocks ahead (0 = off; at most [`crate::named::MAX_READAHEAD`]).
    pub named_readahead: u32,
    /// Trace ring capacity in records.
    pub trace_capacity: usize,
    /// Longest interval between PAGEMAP_SCAN passes over the pool.
    pub max_scan_interval: Duration,
    /// What to do when a page cannot be read back.
    pub fatal_action: FatalAction,
    /// A remote store's timeout on every connect, send and reply wait
    /// (default [`crate::store::redis::conn::DEFAULT_TIMEOUT`]; within
    /// [`crate::store::redis::conn::TIMEOUT_RANGE`]). Local stores have none.
    pub store_timeout: Duration,
    /// Called on every fatal error (from a handler thread).
    pub on_fatal: Option<FatalHook>,
    /// Wraps the store in a [`crate::store::faulty::FaultyStore`] (tests).
    pub fault_injector: Option<Arc<FaultInjector>>,
    /// Seed for the random policy.
    pub seed: u64,
}

impl Default for SwapperConfig {
    fn default() -> Self {
        Self {
            limit_bytes: 1 << 30,
            slack_bytes: None,
            store: StoreKind::Memory,
            store_pages: None,
            policy: PolicyKind::Fifo,
            inactive_divisor: 8,
            prefetch: 0,
            prefetch_mode: PrefetchMode::Map,
            zero_cluster: 32,
            handler_threads: 1,
            handler_spin_us: 0,
            checksums: false,
            dirty_tracking: true,
            named: false,
            named_readahead: 8,
            trace_capacity: 1 << 16,
            max_scan_interval: Duration::from_millis(200),
            fatal_action: FatalAction::Poison,
            store_timeout: crate::store::redis::conn::DEFAULT_TIMEOUT,
            on_fatal: None,
            fault_injector: None,
            seed: 0x5eed,
        }
    }
}

impl std::fmt::Debug for SwapperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapperConfig")
            .field("limit_bytes", &self.limit_bytes)
            .field("slack_bytes", &self.slack_bytes)
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("prefetch", &self.prefetch)
            .field("handler_threads", &self.handler_threads)
            .field("checksums", &self.checksums)
            .field("dirty_tracking", &self.dirty_tracking)
            .field("named", &self.named)
            .field("fatal_action", &self.fatal_action)
            .field("store_timeout", &self.store_timeout)
            .field("on_fatal", &self.on_fatal.is_some())
            .field("fault_injector", &self.fault_injector.is_some())
            .finish_non_exhaustive()
    }
}

impl SwapperConfig {
    /// Limit in pages.
    pub fn limit_pages(&self) -> u64 {
        self.limit_bytes / PAGE_SIZE as u64
    }

    /// Slack in pages.
    pub fn slack_pages(&self) -> u64 {
        match self.slack_bytes {
            Some(b) => b / PAGE_SIZE as u64,
            None => (self.limit_pages() / 16).max(256),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limit_pages() < 16 {
            return Err(ConfigError::Invalid("limit must be at least 16 pages"));
        }
        if self.handler_threads == 0 {
            return Err(ConfigError::Invalid("need at least one handler thread"));
        }
        if self.inactive_divisor < 2 {
            return Err(ConfigError::Invalid("inactive_divisor must be >= 2"));
        }
        if self.zero_cluster == 0 {
            return Err(ConfigError::Invalid("zero_cluster must be >= 1"));
        }
        if self.named_readahead > crate::mirrors::MAX_READAHEAD {
            return Err(ConfigError::Invalid("named_readahead must be at most 64"));
        }
        if !crate::store::redis::conn::TIMEOUT_RANGE.contains(&self.store_timeout) {
            return Err(ConfigError::Invalid(
                "store_timeout must be between 10 ms and 120 s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base::size::parse as parse_size;

    /// Sizes in swapper settings (limits, slack) use the workspace grammar.
    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size(" 2G "), Ok(2 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn defaults_are_valid_and_derive_slack() {
        let c = SwapperConfig {
            limit_bytes: 64 << 20,
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(c.limit_pages(), 16384);
        assert_eq!(c.slack_pages(), 1024);
        let small = SwapperConfig {
            limit_bytes: 1 << 20,
            ..Default::default()
        };
        assert_eq!(small.slack_pages(), 256);
        let strict = SwapperConfig {
            slack_bytes: Some(0),
            ..Default::default()
        };
        assert_eq!(strict.slack_pages(), 0);
        let bad = SwapperConfig {
            handler_threads: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_store_timeout_is_bounded() {
        for (ms, ok) in [(9, false), (10, true), (60_000, true), (120_001, false)] {
            let c = SwapperConfig {
                store_timeout: Duration::from_millis(ms),
                ..Default::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{ms} ms");
        }
    }
}
