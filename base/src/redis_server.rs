//! A private `redis-server` (or a Redis Cluster of them) for tests and for
//! `swaplab bench far-memory`: free loopback ports, a temporary directory, no
//! persistence (`--save ''`, `--appendonly no`), killed on drop, also when a
//! test fails. [`RedisServer::try_start_with`] starts one inside a network
//! namespace instead (`ip netns exec`), on an address of that namespace.
//! [`RedisServer::try_start`] reports a failure; the rest of this harness is
//! for tests and panics on one.
//!
//! Readiness is polled (`PING`, `CLUSTER INFO`) with a bounded deadline.
//! A missing `redis-server` is a failure that says to run
//! `scripts/setup.sh`, never a silent skip.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first `PING`, and a cluster to
/// reach `cluster_state:ok`.
const READY: Duration = Duration::from_secs(20);
/// Between two readiness polls.
const POLL: Duration = Duration::from_millis(10);

/// One `redis-server` on `127.0.0.1`, or on an address of a network namespace.
pub struct RedisServer {
    child: Option<Child>,
    /// Where it listens.
    host: Ipv4Addr,
    /// The network namespace it runs in (`ip netns` name), if not this one.
    netns: Option<String>,
    /// Run on the command before each spawn.
    prepare: Option<fn(&mut Command)>,
    port: u16,
    cluster: bool,
    dir: tempfile::TempDir,
}

/// A port free on loopback now whose cluster bus port (+10000) is free too.
fn free_port() -> Result<u16, String> {
    for _ in 0..100 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free loopback port pair for redis-server".into())
}

/// Processes named `redis-server` on this host now (tests check that what
/// they started is gone).
pub fn running_servers() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == "redis-server")
                .count()
        })
        .unwrap_or(0)
}

/// Sends one command (inline protocol) and returns the raw reply, or `None`
/// if nothing answers.
fn ask(host: Ipv4Addr, port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from((host, port)),
        Duration::from_millis(200),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete(&out) {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The number in an integer reply (`:N\r\n`).
fn integer_reply(reply: &str) -> Option<u64> {
    reply.strip_prefix(':')?.strip_suffix("\r\n")?.parse().ok()
}

/// Whether `out` holds a whole simple (`+ - :`) or bulk (`$`) reply.
fn complete(out: &[u8]) -> bool {
    let Some(eol) = out.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if out[0] != b'$' {
        return true;
    }
    let len: i64 = std::str::from_utf8(&out[1..eol])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1);
    len < 0 || out.len() >= eol + 2 + len as usize + 2
}

impl RedisServer {
    /// Starts a standalone server, or says why it could not.
    pub fn try_start() -> Result<Self, String> {
        Self::spawn(false, None, None, None)
    }

    /// A standalone server in `dir` if given, in namespace `netns` (an
    /// `ip netns` name, and one of that namespace's addresses reachable from
    /// here, where it listens and readiness is polled) if given, else on
    /// loopback, with `prepare` run on its command before each spawn: for a
    /// caller that sets the parent-death signal in the child before it execs
    /// anything (`setpriv` sets it only once it runs: a parent killed before
    /// that, as `ip netns exec` prepares the namespace, would leave the
    /// server running). This crate has no unsafe code, which `pre_exec`
    /// needs.
    pub fn try_start_with(
        dir: Option<&std::path::Path>,
        netns: Option<(&str, Ipv4Addr)>,
        prepare: fn(&mut Command),
    ) -> Result<Self, String> {
        let netns = netns.map(|(n, a)| (n.to_string(), a));
        Self::spawn(false, dir, netns, Some(prepare))
    }

    /// [`Self::try_start`] with the server's directory (its log) in `dir`
    /// rather than the temp dir: a run puts it in its scratch directory,
    /// which a later run sweeps if this process is killed.
    pub fn try_start_in(dir: &std::path::Path) -> Result<Self, String> {
        Self::spawn(false, Some(dir), None, None)
    }

    /// Starts a standalone server (tests: panics on failure).
    pub fn start() -> Self {
        Self::spawn(false, None, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server in cluster mode (no slots yet; see [`RedisCluster`]).
    pub fn start_cluster_node() -> Self {
        Self::spawn(true, None, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn(
        cluster: bool,
        parent: Option<&std::path::Path>,
        netns: Option<(String, Ipv4Addr)>,
        prepare: Option<fn(&mut Command)>,
    ) -> Result<Self, String> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new().prefix("redis-").tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("temp dir for redis-server: {e}"))?;
        let (netns, host) = match netns {
            Some((ns, addr)) => (Some(ns), addr),
            None => (None, Ipv4Addr::LOCALHOST),
        };
        let mut s = Self {
            child: None,
            host,
            netns,
            prepare,
            port: free_port()?,
            cluster,
            dir,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<(), String> {
        let installed = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| d.join("redis-server").is_file())
        });
        if !installed {
            return Err("redis-server is not installed: run scripts/setup.sh (it installs Debian's redis-server)".into());
        }
        // setpriv (util-linux) execs redis-server with a parent-death signal:
        // a test process that dies without unwinding (a seccomp kill, an
        // abort) takes its servers with it instead of leaving them running.
        // In a namespace, `ip netns exec` execs setpriv (no fork), so the
        // parent-death signal still names this process.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"]);
                c
            }
            None => Command::new("setpriv"),
        };
        let via = if self.netns.is_some() {
            "ip netns exec and setpriv"
        } else {
            "setpriv"
        };
        cmd.args(["--pdeathsig", "KILL", "--", "redis-server"]);
        // Protected mode answers only loopback clients (there is no
        // password): in a namespace the client is this host, over a veth
        // pair to a private address only this host reaches.
        let protected = if self.netns.is_some() { "no" } else { "yes" };
        cmd.args(["--port", &self.port.to_string(), "--bind"])
            .arg(self.host.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                protected,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(self.dir.path().join("nodes.conf"));
        }
        if let Some(prepare) = self.prepare {
            prepare(&mut cmd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start redis-server through {via}: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY;
        loop {
            if ask(self.host, self.port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "redis-server on {}:{} exited ({status}): {}",
                        self.host,
                        self.port,
                        self.log()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on {}:{} did not answer PING within {READY:?}: {}",
                    self.host,
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The network namespace it runs in, if not this process's.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `redis://HOST:PORT` (`127.0.0.1` unless in a namespace).
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// Its `DBSIZE` (keys it holds), or `None` if it does not answer.
    pub fn dbsize(&self) -> Option<u64> {
        integer_reply(&ask(self.host, self.port, "DBSIZE")?)
    }

    /// Kills the server (SIGKILL) and waits for it: it is gone on return.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.launch().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the server (SIGSTOP) without closing anything: connections
    /// stay open and the kernel still accepts new ones, but nothing answers
    /// (a slow or hung server). [`Self::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`Self::pause`]d server run again.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("server running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Whether it is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output (raw mode).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.host.to_string(), "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli (run scripts/setup.sh): {e}"));
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys matching `pattern` on this server (SCAN).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}

/// A Redis Cluster of `n` masters on loopback, no replicas.
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` cluster nodes, gives each an equal range of the 16384 hash
    /// slots, joins them, and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start(n: usize) -> Self {
        assert!(n >= 1);
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start_cluster_node()).collect();
        for (i, node) in nodes.iter().enumerate() {
            let (lo, hi) = (16384 * i / n, 16384 * (i + 1) / n - 1);
            let r = node.cli(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()]);
            assert!(r.contains("OK"), "ADDSLOTSRANGE on {}: {r}", node.url());
        }
        for node in &nodes[1..] {
            let r = nodes[0].cli(&["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()]);
            assert!(r.contains("OK"), "CLUSTER MEET {}: {r}", node.url());
        }
        let c = Self { nodes };
        c.wait_ok(n);
        c
    }

    fn wait_ok(&self, n: usize) {
        let deadline = Instant::now() + READY;
        let want = format!("cluster_known_nodes:{n}");
        loop {
            let ok = self.nodes.iter().all(|s| {
                ask(s.host, s.port, "CLUSTER INFO")
                    .is_some_and(|r| r.contains("cluster_state:ok") && r.contains(&want))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not reach cluster_state:ok within {READY:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The first node's URL (enough for a cluster client to find the rest).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Keys matching `pattern` on each node.
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.nodes.iter().map(|s| s.keys(pattern).len()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbsize_replies_parse() {
        assert_eq!(integer_reply(":0\r\n"), Some(0));
        assert_eq!(integer_reply(":12345\r\n"), Some(12345));
        assert_eq!(integer_reply("-ERR\r\n"), None);
        assert_eq!(integer_reply(":12"), None);
    }
}
