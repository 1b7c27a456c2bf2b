//! A TCP relay that adds a fixed one-way delay: emulated distance for a store
//! on another machine, where the kernel has no `tc netem` (this project's
//! PVM hosts are built without `CONFIG_NET_SCH_NETEM`).
//!
//! Every chunk read from one side is written to the other side no earlier
//! than `delay` after it was read, in order, in each direction, so a request
//! and its reply cross two delays: a round trip gains `2 × delay`, as
//! through netem on both ends of a link. Bytes are relayed as they come
//! (`TCP_NODELAY` on both sockets); a chunk is at most [`CHUNK`] bytes.
//!
//! The delay is kept by sleeping until shortly before the deadline and
//! spinning the rest ([`SPIN`]): a plain sleep overshoots by tens of
//! microseconds. The deadline counts from the moment a chunk was read, so
//! the relay's own hand-over between its threads is part of the delay, not
//! added to it: a round trip through the relay is at least `2 × delay`, and
//! at least the relay's own cost (with no delay). Measured on this project's
//! PVM machine, loopback echo round trip p50: direct 62 µs; through the
//! relay with a one-way delay of 0 µs 95 µs, 10 µs 97 µs, 50 µs 123 µs,
//! 200 µs 422 µs. A delay below the hand-over's cost is absorbed in it.
//! Whoever reports a figure measured through the relay therefore measures the
//! store's round trip through it in the same run, and labels the distance
//! *emulated*.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest chunk relayed at once.
pub const CHUNK: usize = 64 * 1024;
/// The last part of a wait that is spun rather than slept.
pub const SPIN: Duration = Duration::from_micros(200);
/// Longest one-way delay accepted: 100 ms (a far continent's round trip is
/// about 200 ms).
pub const MAX_DELAY: Duration = Duration::from_millis(100);
/// Most connections open at once; more are refused (closed at once).
pub const MAX_CONNECTIONS: usize = 256;

/// Errors starting a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The delay is out of range.
    #[error("a relay's one-way delay must be at most {MAX_DELAY:?}, got {0:?}")]
    Delay(Duration),
    /// The listening socket could not be made.
    #[error("relay: listening on 127.0.0.1: {0}")]
    Listen(#[source] io::Error),
}

struct Shared {
    upstream: SocketAddr,
    delay: Duration,
    stop: AtomicBool,
    /// Chunks relayed, both directions.
    chunks: AtomicU64,
    /// Open connections, to shut them down on drop.
    open: Mutex<Vec<Conn>>,
}

/// One relayed connection: its two sockets and its four threads.
struct Conn {
    sockets: [TcpStream; 2],
    pumps: Vec<JoinHandle<()>>,
}

/// A running relay from a loopback port to `upstream`. Dropping it closes
/// the port and every relayed connection and joins its threads.
pub struct DelayRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DelayRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayRelay")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("delay", &self.shared.delay)
            .finish()
    }
}

impl DelayRelay {
    /// Listens on a free loopback port and relays every connection to
    /// `upstream`, `delay` each way.
    pub fn start(upstream: SocketAddr, delay: Duration) -> Result<Self, RelayError> {
        if delay > MAX_DELAY {
            return Err(RelayError::Delay(delay));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(RelayError::Listen)?;
        let addr = listener.local_addr().map_err(RelayError::Listen)?;
        let shared = Arc::new(Shared {
            upstream,
            delay,
            stop: AtomicBool::new(false),
            chunks: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(&listener, &s))
            .map_err(RelayError::Listen)?;
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The loopback address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        self.shared.delay
    }

    /// Chunks relayed (or being sent) so far, both directions.
    pub fn chunks(&self) -> u64 {
        self.shared.chunks.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; a refused connection is fine too.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let open = match self.shared.open.lock() {
            Ok(mut open) => std::mem::take(&mut *open),
            Err(_) => return,
        };
        for c in &open {
            for s in &c.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for p in open.into_iter().flat_map(|c| c.pumps) {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, s: &Arc<Shared>) {
    for conn in listener.incoming() {
        if s.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = conn else { continue };
        let Ok(mut open) = s.open.lock() else { break };
        // Connections whose threads all ended are closed here.
        open.retain(|c| !c.pumps.iter().all(JoinHandle::is_finished));
        if open.len() >= MAX_CONNECTIONS {
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&s.upstream, Duration::from_secs(2)) else {
            // Upstream down: the client sees its connection closed.
            continue;
        };
        let mut pumps = Vec::new();
        for (from, to) in [(&client, &server), (&server, &client)] {
            pumps.extend(pump(from, to, s).into_iter().flatten());
        }
        open.push(Conn {
            sockets: [client, server],
            pumps,
        });
    }
}

/// Starts the two threads of one direction: a reader that stamps each
/// chunk, and a writer that sends it once its delay has passed.
fn pump(from: &TcpStream, to: &TcpStream, s: &Arc<Shared>) -> Option<[JoinHandle<()>; 2]> {
    let (mut r, mut w) = (from.try_clone().ok()?, to.try_clone().ok()?);
    let _ = r.set_nodelay(true);
    let _ = w.set_nodelay(true);
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let delay = s.delay;
    let reader = std::thread::Builder::new()
        .name("relay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .send((Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        })
        .ok()?;
    let shared = Arc::clone(s);
    let writer = std::thread::Builder::new()
        .name("relay-write".into())
        .spawn(move || {
            for (due, chunk) in rx {
                wait_until(due);
                // Counted before it is sent, so a reader that has it sees it counted.
                shared.chunks.fetch_add(1, Ordering::Relaxed);
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
            // The reader saw end of stream (or an error): pass it on.
            let _ = w.shutdown(Shutdown::Write);
        })
        .ok()?;
    Some([reader, writer])
}

/// Returns at `due` or just after: sleeps while more than [`SPIN`] is left,
/// then spins.
pub fn wait_until(due: Instant) {
    loop {
        let now = Instant::now();
        let Some(left) = due.checked_duration_since(now) else {
            return;
        };
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port, answering until dropped.
    fn echo() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            if let Some(Ok(mut c)) = l.incoming().next() {
                let _ = c.set_nodelay(true);
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, h)
    }

    fn round_trips(addr: SocketAddr, n: usize) -> Vec<Duration> {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut times = Vec::new();
        let mut buf = [0u8; 8];
        for i in 0..n {
            let msg = (i as u64).to_le_bytes();
            let t = Instant::now();
            c.write_all(&msg).unwrap();
            c.read_exact(&mut buf).unwrap();
            times.push(t.elapsed());
            assert_eq!(buf, msg, "bytes relayed in order, unchanged");
        }
        times
    }

    #[test]
    fn every_round_trip_crosses_two_delays_and_bytes_arrive_unchanged() {
        let (addr, server) = echo();
        let delay = Duration::from_millis(2);
        let relay = DelayRelay::start(addr, delay).unwrap();
        let times = round_trips(relay.addr(), 20);
        for t in &times {
            // A lower bound only: the machine may be slow, never early.
            assert!(*t >= 2 * delay, "round trip {t:?} under twice {delay:?}");
        }
        assert!(relay.chunks() >= 40, "{} chunks", relay.chunks());
        drop(relay);
        server.join().unwrap();
    }

    #[test]
    fn drop_closes_relayed_connections() {
        let (addr, server) = echo();
        let relay = DelayRelay::start(addr, Duration::ZERO).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        drop(relay);
        // The client sees end of stream, not a hang.
        assert_eq!(c.read(&mut b).unwrap_or(0), 0);
        server.join().unwrap();
    }

    #[test]
    fn an_upstream_that_is_down_closes_the_client() {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        let relay = DelayRelay::start(dead, Duration::ZERO).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap_or(0), 0);
    }

    #[test]
    fn refuses_a_delay_out_of_range() {
        let e = DelayRelay::start("127.0.0.1:1".parse().unwrap(), MAX_DELAY * 2).unwrap_err();
        assert!(e.to_string().contains("one-way delay"), "{e}");
    }
}
