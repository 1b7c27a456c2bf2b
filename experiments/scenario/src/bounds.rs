//! The range of every number a scenario holds. Scenario files are parsed
//! against them and [`crate::Scenario::validate`] checks them again, so a
//! value that arrives another way (a `swaplab run` override) meets the same
//! bounds.

use std::ops::RangeInclusive;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// `repetitions`.
pub const REPETITIONS: RangeInclusive<u64> = 1..=100;
/// `timeout_s`: a day at most.
pub const TIMEOUT_S: RangeInclusive<u64> = 1..=86_400;
/// `guest.cpus`.
pub const CPUS: RangeInclusive<u64> = 1..=32;
/// `guest.mem`, bytes.
pub const GUEST_MEM: RangeInclusive<u64> = 128 * MIB..=64 * GIB;
/// `guest.swap`, bytes.
pub const GUEST_SWAP: RangeInclusive<u64> = MIB..=64 * GIB;
/// `host.limit`, bytes (checked against the guest's memory as well).
pub const HOST_LIMIT: RangeInclusive<u64> = 0..=64 * GIB;
/// `workload.mb`.
pub const WORKLOAD_MB: RangeInclusive<u64> = 1..=64 * 1024;
/// `workload.passes`.
pub const PASSES: RangeInclusive<u64> = 1..=1000;
/// `workload.command`, bytes: it travels base64-encoded on the guest's
/// kernel command line (2047 bytes in all).
pub const COMMAND_BYTES: usize = 768;
/// Longest `host.store_url` (several cluster nodes fit easily).
pub const STORE_URL_BYTES: usize = 1024;
/// `workload.metric`, bytes.
pub const METRIC_BYTES: usize = 256;
