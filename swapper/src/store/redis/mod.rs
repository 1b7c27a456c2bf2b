//! Far memory: evicted pages in Redis (one server or a Redis Cluster).
//!
//! Each slot is one key of the run's namespace ([`keys`]) holding the raw
//! 4 KiB page. Batches ([`Store::write_batch`], [`Store::read_batch`]) go
//! out as one pipeline: one round trip per server. Every request has a
//! timeout and a broken connection is replaced ([`conn`]).
//!
//! A read never serves bytes it cannot vouch for: a missing key or a value
//! that is not one page is [`StoreError::Corrupt`], and the core's crc32
//! (with checksums on) catches a page-sized value with the wrong content.
//!
//! Lifetime: opening a store first sweeps the keys of runs on this host
//! whose process is gone, then registers this run. Dropping it (the
//! swapper's shutdown, or any error path that unwinds the swapper) deletes
//! the run's keys with `SCAN` + `UNLINK` on every node, in batches, and
//! unregisters the run.

pub mod conn;
pub mod keys;

use super::backend::{check_len, Store, StoreNode};
use super::error::StoreError;
use super::occupancy::Occupancy;
use crate::page::PAGE_SIZE;
use crate::slots::Slot;
use conn::{Conn, Pool};
use keys::{RunId, REGISTRY};
use redis::{ConnectionInfo, RedisResult};
use std::sync::atomic::{AtomicBool, Ordering};

/// Keys asked for per `SCAN` step and deleted per pipeline.
const SCAN_BATCH: usize = 512;

/// Pages in Redis.
pub struct RedisStore {
    pool: Pool,
    run: RunId,
    occ: Occupancy,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.pool.url)
            .field("run", &self.run)
            .finish()
    }
}

/// A pipeline for either kind of connection.
enum Pipe {
    Single(redis::Pipeline),
    Cluster(redis::cluster::ClusterPipeline),
}

impl Pipe {
    fn new(conn: &Conn) -> Self {
        match conn {
            Conn::Single(_) => Self::Single(redis::pipe()),
            Conn::Cluster(_) => Self::Cluster(redis::cluster::cluster_pipe()),
        }
    }

    fn add(&mut self, cmd: redis::Cmd) {
        match self {
            Self::Single(p) => {
                p.add_command(cmd);
            }
            Self::Cluster(p) => {
                p.add_command(cmd);
            }
        }
    }

    fn query<T: redis::FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        match (self, conn) {
            (Self::Single(p), Conn::Single(c)) => p.query(c),
            (Self::Cluster(p), Conn::Cluster(c)) => p.query(c),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::ClientError,
                "pipeline and connection kinds differ",
            ))),
        }
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT[/DB]`, or several comma-separated
    /// nodes of one cluster), sweeps dead runs' keys, registers a new run.
    pub fn open(url: &str, capacity: u32) -> Result<Self, StoreError> {
        Self::open_with(url, capacity, RunId::fresh(), conn::DEFAULT_TIMEOUT)
    }

    /// [`Self::open`] under a given run id (tests).
    pub fn open_as(url: &str, capacity: u32, run: RunId) -> Result<Self, StoreError> {
        Self::open_with(url, capacity, run, conn::DEFAULT_TIMEOUT)
    }

    /// [`Self::open`] under `run`, with `timeout` on every connect, send and
    /// reply wait (within [`conn::TIMEOUT_RANGE`]).
    pub fn open_with(
        url: &str,
        capacity: u32,
        run: RunId,
        timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let pool = Pool::open(url, timeout)?;
        let store = Self {
            pool,
            run,
            occ: Occupancy::new(capacity),
            closed: AtomicBool::new(false),
        };
        store.sweep_dead()?;
        store.registry("SADD", &store.run)?;
        Ok(store)
    }

    /// One command on the run registry (`SADD`, `SREM`) for `run`: one key,
    /// so a cluster routes it like any other.
    fn registry(&self, cmd: &str, run: &RunId) -> Result<(), StoreError> {
        self.pool.run(
            || format!("{cmd} {REGISTRY} {}", run.as_str()),
            |c| {
                let mut p = Pipe::new(c);
                p.add(redis::cmd(cmd).arg(REGISTRY).arg(run.as_str()).clone());
                p.query::<()>(c)
            },
        )
    }

    /// The run's namespace.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// The URL, without credentials.
    pub fn url(&self) -> &str {
        &self.pool.url
    }

    /// Deletes the keys of every registered run of this host whose process
    /// is gone. Returns the runs swept.
    pub fn sweep_dead(&self) -> Result<usize, StoreError> {
        let members: Vec<String> = self.pool.run(
            || "reading the run registry".into(),
            |c| {
                let mut p = Pipe::new(c);
                p.add(redis::cmd("SMEMBERS").arg(REGISTRY).clone());
                p.query::<(Vec<String>,)>(c).map(|(m,)| m)
            },
        )?;
        let host = keys::host_tag();
        let mut swept = 0;
        for run in members.iter().filter_map(|m| RunId::parse(m)) {
            if run.is_dead_here(&host) {
                self.delete_run(&run)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Deletes every key of `run` on every node, then unregisters it.
    pub fn delete_run(&self, run: &RunId) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for node in self.pool.nodes()? {
            deleted += self.unlink_run(&node.info, run)?;
        }
        self.registry("SREM", run)?;
        Ok(deleted)
    }

    /// Unlinks `run`'s keys on one node (`SCAN`, never `KEYS`); returns how
    /// many.
    fn unlink_run(&self, node: &ConnectionInfo, run: &RunId) -> Result<u64, StoreError> {
        let shown = conn::display(node);
        let fail = |op: &str, e: redis::RedisError| StoreError::Remote {
            url: shown.clone(),
            op: format!("{op} of run {}", run.as_str()),
            reason: e.to_string(),
        };
        let mut c = conn::direct(node, self.pool.timeout()).map_err(|e| fail("connect", e))?;
        let pattern = run.pattern();
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query(&mut c)
                .map_err(|e| fail("SCAN", e))?;
            n += batch.len() as u64;
            if !batch.is_empty() {
                // One key per UNLINK: a cluster node refuses keys of
                // different hash slots in one command.
                let mut p = redis::pipe();
                for k in &batch {
                    p.cmd("UNLINK").arg(k).ignore();
                }
                p.query::<()>(&mut c).map_err(|e| fail("UNLINK", e))?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }

    /// Deletes this run's keys now (also done on drop). Idempotent.
    pub fn close(&self) -> Result<u64, StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        self.delete_run(&self.run)
    }

    fn check_value(
        &self,
        slot: Slot,
        v: Option<Vec<u8>>,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        match v {
            Some(v) if v.len() == PAGE_SIZE => {
                buf.copy_from_slice(&v);
                Ok(())
            }
            Some(v) => Err(StoreError::Corrupt {
                slot: slot.0,
                reason: format!(
                    "{} holds {} bytes at {}, not one page",
                    self.pool.url,
                    v.len(),
                    self.run.key(slot.0)
                ),
            }),
            None => Err(StoreError::Corrupt {
                slot: slot.0,
                reason: format!(
                    "{} lost key {} (server restarted or evicting keys?)",
                    self.pool.url,
                    self.run.key(slot.0)
                ),
            }),
        }
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn batch_pages(&self) -> usize {
        super::backend::MAX_BATCH_PAGES
    }

    fn capacity(&self) -> u32 {
        self.occ.capacity()
    }

    fn write(&self, slot: Slot, page: &[u8]) -> Result<(), StoreError> {
        self.write_batch(&[(slot, page)])
    }

    fn read(&self, slot: Slot, buf: &mut [u8]) -> Result<(), StoreError> {
        self.read_batch(&mut [(slot, buf)])
    }

    fn write_batch(&self, pages: &[(Slot, &[u8])]) -> Result<(), StoreError> {
        for (slot, page) in pages {
            self.occ.check(*slot)?;
            check_len(page.len())?;
        }
        self.pool.run(
            || write_op(pages.iter().map(|p| p.0)),
            |c| {
                let mut p = Pipe::new(c);
                for (slot, page) in pages {
                    p.add(
                        redis::cmd("SET")
                            .arg(self.run.key(slot.0))
                            .arg(*page)
                            .clone(),
                    );
                }
                p.query::<()>(c)
            },
        )?;
        for (slot, _) in pages {
            self.occ.set(*slot);
        }
        Ok(())
    }

    fn read_batch(&self, reads: &mut [(Slot, &mut [u8])]) -> Result<(), StoreError> {
        for (slot, buf) in reads.iter() {
            self.occ.check(*slot)?;
            check_len(buf.len())?;
            if !self.occ.is_set(*slot) {
                return Err(StoreError::Empty(slot.0));
            }
        }
        let values: Vec<Option<Vec<u8>>> = self.pool.run(
            || read_op(reads.iter().map(|r| r.0)),
            |c| {
                let mut p = Pipe::new(c);
                for (slot, _) in reads.iter() {
                    p.add(redis::cmd("GET").arg(self.run.key(slot.0)).clone());
                }
                p.query(c)
            },
        )?;
        if values.len() != reads.len() {
            return Err(StoreError::Remote {
                url: self.pool.url.clone(),
                op: read_op(reads.iter().map(|r| r.0)),
                reason: format!("{} replies to {} GETs", values.len(), reads.len()),
            });
        }
        for ((slot, buf), v) in reads.iter_mut().zip(values) {
            self.check_value(*slot, v, buf)?;
        }
        Ok(())
    }

    /// Forgets the slot here only: its key stays on the server until the
    /// slot is written again (`SET` replaces it) or the run ends. A discard
    /// then costs no round trip, and it can come from any thread (the
    /// balloon's page release too), which may not open sockets. The server
    /// holds at most one key per slot, as a swap file holds one block.
    fn discard(&self, slot: Slot) {
        self.occ.clear(slot);
    }

    fn bytes_used(&self) -> u64 {
        self.occ.count() * PAGE_SIZE as u64
    }

    /// Pages in use per server, by each key's hash slot and the slots each
    /// server serves now (`CLUSTER NODES`).
    fn nodes(&self) -> Result<Vec<StoreNode>, StoreError> {
        let nodes = self.pool.nodes()?;
        let mut pages = vec![0u64; nodes.len()];
        for slot in self.occ.used() {
            let hs = keys::hash_slot(self.run.key(slot).as_bytes());
            if let Some(i) = nodes.iter().position(|n| n.holds(hs)) {
                pages[i] += 1;
            }
        }
        Ok(nodes
            .iter()
            .zip(pages)
            .map(|(n, pages)| StoreNode {
                node: conn::display(&n.info),
                pages,
            })
            .collect())
    }

    fn close(&self) -> Result<(), StoreError> {
        RedisStore::close(self).map(|_| ())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Err(e) = RedisStore::close(self) {
            tracing::warn!(
                "redis store: could not delete run {}'s keys ({e}); the next run on this host sweeps them",
                self.run.as_str()
            );
        }
    }
}

fn slots_text(slots: impl Iterator<Item = Slot>) -> String {
    let s: Vec<u32> = slots.map(|s| s.0).collect();
    match s.as_slice() {
        [one] => format!("slot {one}"),
        [first, ..] => format!("{} pages from slot {first}", s.len()),
        [] => "no pages".into(),
    }
}

fn write_op(slots: impl Iterator<Item = Slot>) -> String {
    format!("write of {}", slots_text(slots))
}

fn read_op(slots: impl Iterator<Item = Slot>) -> String {
    format!("read of {}", slots_text(slots))
}
