//! Connections to one Redis server or a Redis Cluster: timeouts on every
//! request, a small pool shared by the swapper's threads, and reconnection.
//!
//! A connection whose request failed at the transport (refused, reset,
//! timed out) is dropped, and the request is tried once more on a fresh
//! connection: a restarted server is picked up by the next request. A
//! second failure is the caller's error (the core keeps the page resident
//! for a write, or stops the VM for a read).

use super::super::error::StoreError;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};
use std::sync::Mutex;
use std::time::Duration;

/// The default timeout of connecting to a server, of sending one request
/// and of waiting for its reply (`SwapperConfig::store_timeout`). A loopback
/// or LAN server accepts in well under a millisecond, a 4 KiB GET on
/// loopback answers in ~50 µs, and a far-memory link with tens of ms of
/// delay is still far below this; a server silent for a second is treated
/// as failed (a read then stops the VM, a write keeps its page resident),
/// and a fault waiting on it must not stall the guest for longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The bounds of a store's timeout.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(120);
/// Most idle connections kept (one per handler thread plus the evictor and
/// a reporter is plenty).
const POOL: usize = 16;

/// One server holding keys, with the hash slots it serves.
#[derive(Clone, Debug)]
pub struct Node {
    /// How to reach it.
    pub info: ConnectionInfo,
    /// Inclusive hash-slot ranges (a standalone server holds them all).
    pub slots: Vec<(u16, u16)>,
}

impl Node {
    /// Whether it serves hash slot `slot`.
    pub fn holds(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

/// A connection of either kind.
pub enum Conn {
    /// One server.
    Single(redis::Connection),
    /// A cluster (routes each key to its slot's node).
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// Where a store's connections go.
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The servers of a store and its idle connections.
pub struct Pool {
    target: Target,
    /// Every connect, send and reply wait.
    timeout: Duration,
    /// The URL without credentials, for messages.
    pub url: String,
    /// The seed nodes (a cluster's nodes are found from them).
    pub seeds: Vec<ConnectionInfo>,
    idle: Mutex<Vec<Conn>>,
}

/// `redis://HOST:PORT[/DB]` of `info`, without user or password.
pub fn display(info: &ConnectionInfo) -> String {
    let host = match &info.addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        ConnectionAddr::Unix(p) => p.display().to_string(),
    };
    match info.redis.db {
        0 => format!("redis://{host}"),
        db => format!("redis://{host}/{db}"),
    }
}

/// Parses a store URL: one or more `redis://` URLs separated by commas
/// (several seeds of one cluster).
pub fn parse_url(url: &str) -> Result<Vec<ConnectionInfo>, StoreError> {
    let seeds: Vec<ConnectionInfo> = url
        .split(',')
        .map(str::trim)
        .map(|u| {
            if !u.starts_with("redis://") {
                return Err(StoreError::Config(format!(
                    "store URL {u:?} must start with redis:// (redis://HOST:PORT[/DB])"
                )));
            }
            u.into_connection_info()
                .map_err(|e| StoreError::Config(format!("bad store URL: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        return Err(StoreError::Config("empty store URL".into()));
    }
    Ok(seeds)
}

/// Whether a failure is the transport's (worth a fresh connection).
fn transport(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// One connection to one server, with `timeout` on connecting, sending and
/// reading.
pub fn direct(info: &ConnectionInfo, timeout: Duration) -> RedisResult<redis::Connection> {
    let c = redis::Client::open(info.clone())?.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

impl Pool {
    /// Connects to `url`; a server with `cluster_enabled:1` makes it a
    /// cluster store (every seed must then be a node of that cluster). Every
    /// connect, send and reply wait has `timeout` (within [`TIMEOUT_RANGE`]).
    pub fn open(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        if !TIMEOUT_RANGE.contains(&timeout) {
            return Err(StoreError::Config(format!(
                "store timeout {timeout:?} is outside {:?}..={:?}",
                TIMEOUT_RANGE.start(),
                TIMEOUT_RANGE.end()
            )));
        }
        let seeds = parse_url(url)?;
        let shown: Vec<String> = seeds.iter().map(display).collect();
        let shown = shown.join(",");
        let err = |op: &str, e: RedisError| StoreError::Remote {
            url: shown.clone(),
            op: op.into(),
            reason: e.to_string(),
        };
        let mut first = direct(&seeds[0], timeout).map_err(|e| err("connect", e))?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query(&mut first)
            .map_err(|e| err("INFO cluster", e))?;
        let cluster = info.lines().any(|l| l.trim() == "cluster_enabled:1");
        let target = if cluster {
            if let Some(s) = seeds.iter().find(|s| s.redis.db != 0) {
                return Err(StoreError::Config(format!(
                    "{}: Redis Cluster has only database 0",
                    display(s)
                )));
            }
            let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A node that is down fails the request after one retry
                // (with a short wait) instead of the default 16.
                .retries(1)
                .build()
                .map_err(|e| err("cluster setup", e))?;
            Target::Cluster(client)
        } else {
            if seeds.len() > 1 {
                return Err(StoreError::Config(format!(
                    "{shown}: several URLs name a cluster's nodes, but {} is not in cluster mode",
                    display(&seeds[0])
                )));
            }
            let client = redis::Client::open(seeds[0].clone()).map_err(|e| err("connect", e))?;
            Target::Single(client)
        };
        let pool = Self {
            target,
            timeout,
            url: shown,
            seeds,
            idle: Mutex::new(Vec::new()),
        };
        if !cluster {
            pool.put(Conn::Single(first));
        }
        Ok(pool)
    }

    /// The timeout of every connect, send and reply wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether this is a cluster store.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    fn connect(&self) -> RedisResult<Conn> {
        match &self.target {
            Target::Single(c) => {
                let c = c.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Ok(Conn::Single(c))
            }
            Target::Cluster(c) => {
                let c = c.get_connection()?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Ok(Conn::Cluster(Box::new(c)))
            }
        }
    }

    fn take(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL {
            idle.push(c);
        }
    }

    /// Runs `f` on a pooled connection; on a transport failure once more on
    /// a fresh one. `op` names the request in the error.
    pub fn run<T>(
        &self,
        op: impl FnOnce() -> String,
        mut f: impl FnMut(&mut Conn) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut last = None;
        for attempt in 0..2 {
            let conn = if attempt == 0 { self.take() } else { None };
            let mut conn = match conn.map_or_else(|| self.connect(), Ok) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match f(&mut conn) {
                Ok(v) => {
                    self.put(conn);
                    return Ok(v);
                }
                Err(e) if transport(&e) => last = Some(e),
                Err(e) => {
                    self.put(conn);
                    last = Some(e);
                    break;
                }
            }
        }
        Err(StoreError::Remote {
            url: self.url.clone(),
            op: op(),
            reason: last.map_or_else(|| "no connection".into(), |e| e.to_string()),
        })
    }

    /// The servers that hold keys: the one server, or every master of the
    /// cluster (from `CLUSTER NODES` on the first seed that answers).
    pub fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        if !self.is_cluster() {
            return Ok(vec![Node {
                info: self.seeds[0].clone(),
                slots: vec![(0, 16383)],
            }]);
        }
        let mut last = None;
        for seed in &self.seeds {
            let text: RedisResult<String> = direct(seed, self.timeout)
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c));
            match text {
                Ok(t) => return Ok(masters(&t, seed)),
                Err(e) => last = Some(e),
            }
        }
        Err(StoreError::Remote {
            url: self.url.clone(),
            op: "CLUSTER NODES".into(),
            reason: last.map_or_else(|| "no seed".into(), |e| e.to_string()),
        })
    }
}

/// The masters in `CLUSTER NODES` output, with `seed`'s credentials.
fn masters(text: &str, seed: &ConnectionInfo) -> Vec<Node> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.nth(1)?;
            let flags = f.next()?;
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                return None;
            }
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            let host = if host.is_empty() {
                // A node that does not know its own address yet.
                match &seed.addr {
                    ConnectionAddr::Tcp(h, _) => h.clone(),
                    _ => return None,
                }
            } else {
                host.to_string()
            };
            // Fields 9.. are slots (`N` or `A-B`; `[...]` marks a migration).
            let slots = f
                .skip(5)
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Node {
                info: ConnectionInfo {
                    addr: ConnectionAddr::Tcp(host, port.parse().ok()?),
                    redis: seed.redis.clone(),
                },
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let s = parse_url("redis://user:secret@127.0.0.1:6390/3").unwrap();
        assert_eq!(display(&s[0]), "redis://127.0.0.1:6390/3");
        let s = parse_url("redis://127.0.0.1:7000, redis://127.0.0.1:7001").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(display(&s[1]), "redis://127.0.0.1:7001");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for bad in ["", "http://x:1", "redis://", "127.0.0.1:6379"] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.contains("URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_nodes_yield_live_masters() {
        let seed = parse_url("redis://127.0.0.1:7000").unwrap().remove(0);
        let text = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10921 10922\n\
                    c 127.0.0.1:7002@17002 slave b 0 0 2 connected\n\
                    d 127.0.0.1:7003@17003 master,fail - 0 0 3 disconnected\n";
        let m = masters(text, &seed);
        let shown: Vec<String> = m.iter().map(|n| display(&n.info)).collect();
        assert_eq!(shown, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        assert_eq!(m[0].slots, [(0, 5460)]);
        assert_eq!(m[1].slots, [(5461, 10921), (10922, 10922)]);
        assert!(m[1].holds(10922) && !m[1].holds(5460));
    }
}
