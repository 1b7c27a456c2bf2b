//! Key layout of the Redis store: one namespace per run, a registry of runs.
//!
//! A page in slot `S` of run `R` lives at `swaplab:R:S`, where `R` is
//! `<host>-<pid>-<start-ns>`. There is deliberately no hash tag (`{...}`):
//! Redis Cluster hashes the whole key, so a run's pages spread over every
//! node by hash slot instead of all landing on one. The host part is reduced
//! to `[A-Za-z0-9._]`, so a run's prefix is also a literal `SCAN MATCH`
//! pattern (no `*?[]\` in it) and never contains a brace.
//!
//! Every run adds its id to the set [`REGISTRY`] while it runs and removes
//! it when its keys are gone; a run whose process died (SIGKILL, power
//! loss) leaves its id behind, and the next run on the same host sweeps it
//! ([`is_dead_here`]).

/// The set of run ids whose keys may exist.
pub const REGISTRY: &str = "swaplab:runs";

/// One run's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId(String);

/// This host's name as it appears in run ids.
pub fn host_tag() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let tag: String = raw
        .trim()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if tag.is_empty() {
        "host".into()
    } else {
        tag
    }
}

impl RunId {
    /// A fresh id for this process (the start time keeps two stores of one
    /// process apart).
    pub fn fresh() -> Self {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self::new(&host_tag(), std::process::id(), ns)
    }

    /// The id of run `pid` started at `start_ns` on `host` (a [`host_tag`]).
    pub fn new(host: &str, pid: u32, start_ns: u128) -> Self {
        Self(format!("{host}-{pid}-{start_ns}"))
    }

    /// Parses a registry member; `None` if it is not a run id.
    pub fn parse(s: &str) -> Option<Self> {
        let (host, pid, _) = split(s)?;
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        (ok && pid > 0).then(|| Self(s.to_string()))
    }

    /// The id as stored in the registry.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix of every key of this run.
    pub fn prefix(&self) -> String {
        format!("swaplab:{}:", self.0)
    }

    /// The key of `slot`.
    pub fn key(&self, slot: u32) -> String {
        format!("swaplab:{}:{slot}", self.0)
    }

    /// The `SCAN MATCH` pattern of this run's keys.
    pub fn pattern(&self) -> String {
        format!("{}*", self.prefix())
    }

    /// Whether this run belongs to `host` and its process is gone.
    pub fn is_dead_here(&self, host: &str) -> bool {
        match split(&self.0) {
            Some((h, pid, _)) if h == host => !pid_alive(pid),
            _ => false,
        }
    }
}

/// Redis Cluster's hash slot of `key` (CRC16/XMODEM mod 16384; our keys
/// have no hash tag, so the whole key counts).
pub fn hash_slot(key: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in key {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `host-pid-ns` → its parts (the host may hold no `-`: see [`host_tag`]).
fn split(s: &str) -> Option<(&str, u32, u128)> {
    let mut it = s.rsplitn(3, '-');
    let ns = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    Some((it.next()?, pid, ns))
}

/// Whether a process `pid` exists on this host (EPERM: it does, not ours).
fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_hash_tag_and_share_the_run_prefix() {
        let r = RunId::new("box.lan", 42, 7);
        assert_eq!(r.key(3), "swaplab:box.lan-42-7:3");
        assert!(r.key(3).starts_with(&r.prefix()));
        assert_eq!(r.pattern(), "swaplab:box.lan-42-7:*");
        assert!(!r.key(3).contains('{'));
    }

    #[test]
    fn hash_slots_match_redis_cluster() {
        // The CRC16 check value, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(hash_slot(b"123456789"), 0x31c3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b""), 0);
    }

    #[test]
    fn host_tags_are_glob_and_brace_free() {
        let t = host_tag();
        assert!(!t.is_empty());
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'));
    }

    #[test]
    fn registry_members_parse_back_and_junk_is_refused() {
        let r = RunId::new("h_1", 9, 123);
        assert_eq!(RunId::parse(r.as_str()), Some(r));
        for junk in [
            "", "x", "h-1", "h-x-1", "-1-2", "h*-1-2", "h-0-2", "a{b}-1-2",
        ] {
            assert_eq!(RunId::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn only_dead_processes_of_this_host_are_swept() {
        let me = std::process::id();
        assert!(!RunId::new("h", me, 1).is_dead_here("h"));
        assert!(!RunId::new("other", u32::MAX - 1, 1).is_dead_here("h"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(RunId::new("h", pid, 1).is_dead_here("h"));
    }
}
