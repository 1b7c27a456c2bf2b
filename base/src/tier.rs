//! Test tiers: what a test needs from the host, and skipping a test that
//! cannot run here, visibly and never on a machine that has what it needs.
//!
//! A test that finds its tier missing calls [`skip`] and returns. On its own
//! that prints one `SKIPPED` line. The README's test command (`scripts/test.sh`)
//! asks `swaplab doctor` which tiers this machine has and lists them in
//! [`ENV_REQUIRE`]: a skip of a listed tier then fails the test instead (the
//! machine has it, so the test must run). Every skip is also appended to the
//! file named by [`ENV_SKIP_LOG`], from which the script prints a summary of
//! the run's skips with their reasons.
//!
//! `scripts/test.sh` also requires `tool` (its setup installs every program the
//! tests drive).

use std::io::Write;

/// Comma-separated tier names the run requires (see [`Tier::name`]).
pub const ENV_REQUIRE: &str = "SWAPLAB_REQUIRE_TIERS";
/// A file every skip is appended to, one tab-separated line each:
/// tier, test, reason.
pub const ENV_SKIP_LOG: &str = "SWAPLAB_SKIP_LOG";

/// What a test needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// A usable `/dev/kvm` (any flavour: hardware or PVM).
    Kvm,
    /// userfaultfd (the syscall or `/dev/userfaultfd`).
    Userfaultfd,
    /// Running as root (cgroups, swap devices, tracefs).
    Root,
    /// `qemu-system-x86_64` (the nested sandbox, the QEMU comparisons).
    Qemu,
    /// A program the test drives (`scripts/setup.sh` installs every one).
    Tool,
    /// `O_DIRECT` and hole punching on the disk-backed [`DISK_TMP`].
    DirectIo,
}

/// Where tests put files that need a disk-backed file system (`O_DIRECT`,
/// hole punching): `/var/tmp`, which is not tmpfs on Debian.
pub const DISK_TMP: &str = "/var/tmp";

impl Tier {
    /// The name used in [`ENV_REQUIRE`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Userfaultfd => "userfaultfd",
            Self::Root => "root",
            Self::Qemu => "qemu",
            Self::Tool => "tool",
            Self::DirectIo => "direct_io",
        }
    }
}

/// Whether the run requires `tier`, per `required` (the value of [`ENV_REQUIRE`]).
pub fn is_required(tier: Tier, required: Option<&str>) -> bool {
    required.is_some_and(|v| v.split(',').any(|t| t.trim() == tier.name()))
}

/// The calling test cannot run here: `tier` is missing (`why` says how).
///
/// # Panics
///
/// When the run requires `tier` ([`ENV_REQUIRE`]): that fails the test, as a
/// skip on a machine that has the tier must.
pub fn skip(tier: Tier, why: &str) {
    let required = std::env::var(ENV_REQUIRE).ok();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    if is_required(tier, required.as_deref()) {
        panic!(
            "{test} would skip, but this run requires the {} tier ({ENV_REQUIRE}={}): {why}",
            tier.name(),
            required.unwrap_or_default()
        );
    }
    eprintln!("SKIPPED ({}): {test}: {why}", tier.name());
    if let Some(path) = std::env::var_os(ENV_SKIP_LOG) {
        let line = format!(
            "{}\t{test}\t{}\n",
            tier.name(),
            why.replace(['\t', '\n'], " ")
        );
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_tier_is_required() {
        assert!(is_required(Tier::Kvm, Some("kvm,root")));
        assert!(is_required(Tier::Root, Some("kvm, root")));
        assert!(!is_required(Tier::Qemu, Some("kvm,root")));
        assert!(!is_required(Tier::Kvm, Some("")));
        assert!(!is_required(Tier::Kvm, None));
        assert!(!is_required(Tier::Kvm, Some("kvmx")));
    }
}
