//! Emulated network distance with the kernel's own tools: a network
//! namespace, a veth pair into it, and a `tc netem` delay on both ends of
//! the pair (a round trip crosses the delay twice, as through
//! [`crate::relay::DelayRelay`]). Where the kernel has no `sch_netem`
//! (`CONFIG_NET_SCH_NETEM`), [`available`] says so and the caller falls back
//! to the relay.
//!
//! Everything is made with iproute2's `ip` and `tc` and named after this
//! process: the namespace `swaplab-<pid>-<n>`, the veth ends `swl<pid>h<n>`
//! (host) and `swl<pid>p<n>` (in the namespace; at most 15 characters, the
//! kernel's limit). Dropping a [`DelayNet`] deletes the host end (which
//! deletes its peer and both qdiscs at once, even while a process still
//! runs in the namespace) and the namespace. A process killed without
//! unwinding leaves them behind; the next [`DelayNet::new`] sweeps those
//! whose pid no longer exists.
//!
//! Addresses: a /30 in `10.250.0.0/16`, chosen from the pid and `n` and not
//! used by any address on the host already.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base::scratch::pid_alive;

/// Prefix of the namespaces' names.
pub const NS_PREFIX: &str = "swaplab-";
/// Prefix of the veth ends' names.
pub const VETH_PREFIX: &str = "swl";
/// Longest one-way delay accepted (as for the relay).
pub const MAX_DELAY: Duration = crate::relay::MAX_DELAY;
/// Most namespaces one process tries to name before giving up.
const MAX_PER_PROCESS: u32 = 1000;
/// /30 subnets in `10.250.0.0/16`.
const SLOTS: u32 = 1 << 14;

/// Errors of a [`DelayNet`].
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command could not be started (not installed?).
    #[error("cannot run `{cmd}` (iproute2 is installed by scripts/setup.sh): {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No free name or subnet.
    #[error("no free network namespace name or 10.250.0.0/16 subnet for this process")]
    Exhausted,
    /// The delay is out of range.
    #[error("a netem one-way delay must be at most {MAX_DELAY:?}, got {0:?}")]
    Delay(Duration),
}

/// Runs `prog args...`, returning its stdout, or an error naming the command
/// and carrying its stderr.
fn run(prog: &str, args: &[&str]) -> Result<String, NetnsError> {
    let cmd = std::iter::once(prog)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid in a namespace name `swaplab-<pid>-<n>`, if it is one.
pub fn ns_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    digits(n)?;
    digits(pid)
}

/// The pid in a veth end's name `swl<pid>h<n>` or `swl<pid>p<n>`, if it is one.
pub fn veth_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(VETH_PREFIX)?;
    let (pid, n) = rest.split_once(['h', 'p'])?;
    digits(n)?;
    digits(pid)
}

/// `s` as a number, if it is only ASCII digits (1 to 9 of them).
fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Of `names`, those that `pid_of` parses and whose process is not alive.
pub fn dead_ones<'a>(
    names: impl IntoIterator<Item = &'a str>,
    pid_of: fn(&str) -> Option<u32>,
    alive: impl Fn(u32) -> bool,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| pid_of(n).is_some_and(|p| !alive(p)))
        .map(str::to_string)
        .collect()
}

/// Names in `ip netns list` output (`NAME` or `NAME (id: N)` per line).
pub fn parse_netns_list(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Link names in `ip -o link` output (`N: NAME[@PEER]: <...` per line).
pub fn parse_link_list(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name))
        })
        .collect()
}

/// Deletes the namespaces and host-side veth ends of processes that are
/// gone (best effort); returns what it deleted.
pub fn sweep() -> Vec<String> {
    let mut gone = Vec::new();
    if let Ok(out) = run("ip", &["-o", "link", "show", "type", "veth"]) {
        for name in dead_ones(parse_link_list(&out), veth_pid, pid_alive) {
            if run("ip", &["link", "del", &name]).is_ok() {
                gone.push(name);
            }
        }
    }
    if let Ok(out) = run("ip", &["netns", "list"]) {
        for name in dead_ones(parse_netns_list(&out), ns_pid, pid_alive) {
            if run("ip", &["netns", "del", &name]).is_ok() {
                gone.push(name);
            }
        }
    }
    gone
}

/// The `n`th candidate /30 for `pid`: (network's third octet, fourth octet).
fn slot(pid: u32, n: u32, attempt: u32) -> (u8, u8) {
    let s = (pid.wrapping_mul(7919) ^ n.wrapping_mul(104_729)).wrapping_add(attempt) % SLOTS;
    ((s >> 6) as u8, ((s & 63) << 2) as u8)
}

/// A network namespace joined to this one by a veth pair, with a `netem`
/// qdisc on both ends once [`Self::set_delay`] is called. Deleted on drop.
#[derive(Debug)]
pub struct DelayNet {
    ns: String,
    host_if: String,
    peer_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
    delay: Option<Duration>,
}

impl DelayNet {
    /// Sweeps what dead processes left, then makes the namespace, the veth
    /// pair and their addresses, all up (the namespace's `lo` too).
    pub fn new() -> Result<Self, NetnsError> {
        sweep();
        let pid = std::process::id();
        let mut n = 0;
        let ns = loop {
            if n >= MAX_PER_PROCESS {
                return Err(NetnsError::Exhausted);
            }
            let name = format!("{NS_PREFIX}{pid}-{n}");
            let taken = || Path::new("/run/netns").join(&name).exists();
            if taken() {
                n += 1;
                continue;
            }
            // `ip netns add` refuses an existing name: that claims it.
            match run("ip", &["netns", "add", &name]) {
                Ok(_) => break name,
                // Taken meanwhile, by another thread of this process.
                Err(_) if taken() => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut net = Self {
            host_if: format!("{VETH_PREFIX}{pid}h{n}"),
            peer_if: format!("{VETH_PREFIX}{pid}p{n}"),
            ns,
            host_addr: Ipv4Addr::UNSPECIFIED,
            ns_addr: Ipv4Addr::UNSPECIFIED,
            delay: None,
        };
        // From here on, Drop removes whatever was made.
        net.setup(pid, n)?;
        Ok(net)
    }

    fn setup(&mut self, pid: u32, n: u32) -> Result<(), NetnsError> {
        let used = run("ip", &["-o", "-4", "addr", "show"])?;
        let (c, d) = (0..64)
            .map(|a| slot(pid, n, a))
            .find(|&(c, d)| !used.lines().any(|l| host_in(l, c, d)))
            .ok_or(NetnsError::Exhausted)?;
        self.host_addr = Ipv4Addr::new(10, 250, c, d + 1);
        self.ns_addr = Ipv4Addr::new(10, 250, c, d + 2);
        run(
            "ip",
            &[
                "link",
                "add",
                &self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &self.peer_if,
                "netns",
                &self.ns,
            ],
        )?;
        let host = format!("{}/30", self.host_addr);
        let peer = format!("{}/30", self.ns_addr);
        run("ip", &["addr", "add", &host, "dev", &self.host_if])?;
        run("ip", &["link", "set", &self.host_if, "up"])?;
        let ns = self.ns.as_str();
        run(
            "ip",
            &["-n", ns, "addr", "add", &peer, "dev", &self.peer_if],
        )?;
        run("ip", &["-n", ns, "link", "set", &self.peer_if, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Sets a `netem` qdisc with `one_way` delay on both ends (replacing
    /// the previous one). A delay of 0 is netem without delay: the veth and
    /// the qdisc alone.
    pub fn set_delay(&mut self, one_way: Duration) -> Result<(), NetnsError> {
        if one_way > MAX_DELAY {
            return Err(NetnsError::Delay(one_way));
        }
        let us = format!("{}us", one_way.as_micros());
        let qdisc = ["qdisc", "replace", "dev"];
        let tail = ["root", "netem", "delay", us.as_str()];
        let host: Vec<&str> = qdisc
            .iter()
            .copied()
            .chain([self.host_if.as_str()])
            .chain(tail)
            .collect();
        run("tc", &host)?;
        let peer: Vec<&str> = ["-n", self.ns.as_str()]
            .into_iter()
            .chain(qdisc)
            .chain([self.peer_if.as_str()])
            .chain(tail)
            .collect();
        run("tc", &peer)?;
        self.delay = Some(one_way);
        Ok(())
    }

    /// The delay set last, if any.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host end's name.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The namespace end's name.
    pub fn peer_if(&self) -> &str {
        &self.peer_if
    }

    /// The host end's address.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The namespace end's address: where a server in the namespace listens.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }
}

/// Whether the `ip -o -4 addr` line `l` holds an address in 10.250.c.d/30.
fn host_in(l: &str, c: u8, d: u8) -> bool {
    (0..4).any(|i| l.contains(&format!(" 10.250.{c}.{}/", d + i)))
}

impl Drop for DelayNet {
    fn drop(&mut self) {
        // Deleting one end deletes the pair and both qdiscs now, even while
        // a process still holds the namespace; the namespace's name goes
        // next (the namespace itself with its last process).
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.ns]);
    }
}

/// Whether this kernel and these tools can make a [`DelayNet`] with a netem
/// qdisc: tries it (and removes it). The error says why not, for a fallback.
pub fn available() -> Result<(), String> {
    let mut net =
        DelayNet::new().map_err(|e| format!("no network namespace with a veth pair: {e}"))?;
    net.set_delay(Duration::ZERO).map_err(|e| {
        format!("no netem qdisc (the kernel needs sch_netem, CONFIG_NET_SCH_NETEM): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_in_their_exact_form() {
        assert_eq!(ns_pid("swaplab-123-0"), Some(123));
        assert_eq!(ns_pid("swaplab-4194304-999"), Some(4_194_304));
        for bad in [
            "swaplab-123",
            "swaplab-123-",
            "swaplab-x-1",
            "swaplab--1",
            "swaplab-12-3a",
            "other-1-2",
            "swaplab-run-1-2",
        ] {
            assert_eq!(ns_pid(bad), None, "{bad}");
        }
        assert_eq!(veth_pid("swl123h0"), Some(123));
        assert_eq!(veth_pid("swl4194304p12"), Some(4_194_304));
        for bad in [
            "sl0", "swl", "swl12", "swl12h", "swlh1", "swl1x2", "swl1h2x", "eth0",
        ] {
            assert_eq!(veth_pid(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_fit_the_kernels_limit() {
        let worst = format!("{VETH_PREFIX}{}h{}", 4_194_304, MAX_PER_PROCESS - 1);
        assert!(worst.len() <= 15, "{worst}");
    }

    #[test]
    fn listings_parse() {
        let ns = "swaplab-1-0 (id: 3)\nswaplab-2-1\n\nblue\n";
        assert_eq!(parse_netns_list(ns), ["swaplab-1-0", "swaplab-2-1", "blue"]);
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\\    link/loopback\n\
                     7: swl12h0@if6: <BROADCAST> mtu 1500\\    link/ether\n\
                     9: eth0: <UP> mtu 1400";
        assert_eq!(parse_link_list(links), ["lo", "swl12h0", "eth0"]);
    }

    #[test]
    fn only_dead_processes_names_are_swept() {
        let names = [
            "swaplab-10-0",
            "swaplab-11-0",
            "swaplab-run-10-x",
            "blue",
            "swaplab-10-1",
        ];
        let alive = |p: u32| p == 11;
        assert_eq!(
            dead_ones(names, ns_pid, alive),
            ["swaplab-10-0", "swaplab-10-1"]
        );
        let links = ["swl10h0", "swl11h0", "sl0", "swl10p0", "eth0"];
        assert_eq!(dead_ones(links, veth_pid, alive), ["swl10h0", "swl10p0"]);
        // This process is alive, pid 0 never is a process of ours.
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }

    #[test]
    fn slots_are_30s_in_range() {
        for a in 0..64 {
            let (c, d) = slot(4_194_303, 7, a);
            assert_eq!(d % 4, 0);
            assert!(d <= 252, "{c}.{d}");
        }
        assert_ne!(slot(100, 0, 0), slot(100, 1, 0));
        assert!(host_in("3: swl1h0 inet 10.250.4.9/30 brd", 4, 8));
        assert!(!host_in("3: swl1h0 inet 10.250.4.13/30 brd", 4, 8));
    }
}
