//! Forwarding a Unix socket out of the sandbox: a listening socket at a host
//! path whose connections reach a Unix socket a command listens on in L1.
//!
//! ```text
//! client ──unix──▶ host path ── swaplab (host thread) ══ socketpair ══ QEMU
//!   ══ virtio-serial port swaplab.fwd.N ══ bridge in L1 ──unix──▶ inner path ◀── server
//! ```
//!
//! - On the host, swaplab itself listens at the host path ([`HostForward`]) and
//!   talks to QEMU through a socketpair (`-chardev socket,fd=N` on a
//!   virtserialport). So the port is connected from L1's boot on, and L1 can
//!   wait on it.
//! - In L1 the job starts a bridge ([`l1_bridge`]; the swaplab binary's hidden
//!   `swaplab sandbox --l1-bridge PORT=INNER`) before the command. For each
//!   host connection it connects to the inner path, retrying for up to
//!   [`INNER_CONNECT_WAIT`] while the server is not listening yet.
//! - Connections are served at once and independently, with the bounds of
//!   the native control-socket server (`vmm::api::server::ServerLimits`'
//!   defaults): at most [`MAX_CLIENTS`] clients (one more is accepted and
//!   closed with nothing sent: the relay does not speak the server's protocol,
//!   so it cannot send the native `unavailable` reply), each nonblocking, with at most
//!   [`MAX_PENDING_OUTPUT`] bytes waiting for it. Both ends are one `poll(2)`
//!   loop each: the host side over the listener, the port and every client;
//!   the bridge over the port and one inner connection per connection number
//!   (connected by a short-lived thread each, so a server that is not
//!   listening yet delays only its own connection).
//! - The port is read whenever it has bytes, so one connection never stops
//!   the others: a local end (host client or inner connection) that lets more
//!   than [`MAX_PENDING_OUTPUT`] bytes pile up, or takes none of them for
//!   [`WRITE_TIMEOUT`], is dropped and the other side gets its `Close`. There
//!   is no flow control per connection over the port, so dropping is the only
//!   bound (the native server instead stops reading such a client). Local ends
//!   are read only while the port's outgoing buffer is under `PORT_OUT_LIMIT`
//!   (1 MiB): all connections share the port's pace. An idle
//!   client costs a slot and nothing else.
//! - Over the port both sides speak [`Frame`]s: `Open`, `Data`, `Shut`
//!   (half-close: no more data this way), `Close`, each with the connection's
//!   number, so bytes of a finished connection never reach the next one.
//! - The host path is removed when the sandbox ends, on every path that
//!   unwinds (errors included; `swaplab sandbox` catches Ctrl-C and SIGTERM
//!   while a socket is forwarded). A leftover socket nobody listens on (from a
//!   killed run) is replaced; any other existing file is an error.
//!
//! Inner paths default to `/run/swaplab/forward-N.sock`: L1's `/run` is a
//! tmpfs of its own (the host's `/run` is not visible in L1).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Directory of the default inner paths (a tmpfs in L1).
pub const INNER_DIR: &str = "/run/swaplab";
/// Prefix of the forwarding ports' names (`swaplab.fwd.0`, ...).
pub const PORT_PREFIX: &str = "swaplab.fwd.";
/// How long the L1 bridge waits for the inner socket to accept a connection.
pub const INNER_CONNECT_WAIT: Duration = Duration::from_secs(120);
/// Largest frame payload.
pub const MAX_FRAME: usize = 64 * 1024;
/// Connections served at once (the native control socket's `max_clients`).
pub const MAX_CLIENTS: usize = 16;
/// Bytes kept for a client (or inner connection) that does not read them; past
/// this it is dropped (the native control socket's `max_pending_output`).
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// A client (or inner connection) that takes none of its pending bytes for
/// this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Local ends are not read while this many bytes wait to go out on the port.
const PORT_OUT_LIMIT: usize = 1 << 20;
/// How long the L1 bridge waits for its virtio-serial port to appear.
const PORT_WAIT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for the port or the inner socket.
const RETRY: Duration = Duration::from_millis(20);

/// Errors forwarding a socket.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The host path exists and is not a stale socket.
    #[error("{0} exists and is not a socket left over by an earlier run; not replacing it")]
    Exists(PathBuf),
    /// Something already listens on the host path.
    #[error("{0}: something is already listening on this socket")]
    InUse(PathBuf),
    /// A path that cannot be a Unix socket address.
    #[error("{0}: not usable as a Unix socket path ({1})")]
    BadPath(PathBuf, &'static str),
    /// A system call failed.
    #[error("{what} {}", .path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which path (may be empty).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The other side sent something that is not a frame.
    #[error("bad frame on the forwarding port: {0}")]
    BadFrame(String),
    /// L1's port did not appear.
    #[error("virtio-serial port {0} did not appear in L1")]
    NoPort(String),
    /// A bridge argument is not `PORT=INNER`.
    #[error("bridge argument {0:?} is not PORT_NAME=INNER_PATH")]
    BadSpec(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ForwardError + 'a {
    move |source| ForwardError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One forwarded socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSocket {
    /// Where clients connect, on the host.
    pub host: PathBuf,
    /// Where the command listens, in L1.
    pub inner: PathBuf,
}

/// The default inner path of the `index`th forwarded socket.
pub fn default_inner(index: usize) -> PathBuf {
    Path::new(INNER_DIR).join(format!("forward-{index}.sock"))
}

/// The virtio-serial port name of the `index`th forwarded socket.
pub fn port_name(index: usize) -> String {
    format!("{PORT_PREFIX}{index}")
}

/// Check that `path` can be a Unix socket address (absolute, fits `sun_path`).
pub fn check_path(path: &Path) -> Result<(), ForwardError> {
    if !path.is_absolute() {
        return Err(ForwardError::BadPath(path.into(), "not absolute"));
    }
    if path.as_os_str().len() >= 108 {
        return Err(ForwardError::BadPath(path.into(), "longer than 107 bytes"));
    }
    if path.file_name().is_none() {
        return Err(ForwardError::BadPath(path.into(), "no file name"));
    }
    Ok(())
}

/// A message on the forwarding port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Host → L1: a client connected.
    Open(u32),
    /// Bytes of a connection, either way.
    Data(u32, Vec<u8>),
    /// The sender's side will send no more (half-close).
    Shut(u32),
    /// The connection is over on the sender's side.
    Close(u32),
}

const OPEN: u8 = 1;
const DATA: u8 = 2;
const SHUT: u8 = 3;
const CLOSE: u8 = 4;
/// kind (1), connection (4, LE), payload length (4, LE).
const HEADER: usize = 9;

impl Frame {
    /// The connection number.
    pub fn conn(&self) -> u32 {
        match self {
            Frame::Open(c) | Frame::Data(c, _) | Frame::Shut(c) | Frame::Close(c) => *c,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Open(_) => (OPEN, &[]),
            Frame::Data(_, d) => (DATA, d),
            Frame::Shut(_) => (SHUT, &[]),
            Frame::Close(_) => (CLOSE, &[]),
        };
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(kind);
        out.extend_from_slice(&self.conn().to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// Splits a byte stream into [`Frame`]s.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Add bytes; return the frames now complete, or an error for bytes that
    /// are not a frame (the stream cannot be trusted after that).
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Frame>, ForwardError> {
        self.buf.extend_from_slice(data);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= HEADER {
            let h = &self.buf[at..at + HEADER];
            let kind = h[0];
            let conn = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
            let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
            if len > MAX_FRAME {
                return Err(ForwardError::BadFrame(format!(
                    "payload of {len} bytes (at most {MAX_FRAME})"
                )));
            }
            if kind != DATA && len != 0 {
                return Err(ForwardError::BadFrame(format!(
                    "kind {kind} with a payload"
                )));
            }
            if self.buf.len() - at < HEADER + len {
                break;
            }
            let payload = &self.buf[at + HEADER..at + HEADER + len];
            frames.push(match kind {
                OPEN => Frame::Open(conn),
                DATA => Frame::Data(conn, payload.to_vec()),
                SHUT => Frame::Shut(conn),
                CLOSE => Frame::Close(conn),
                k => return Err(ForwardError::BadFrame(format!("unknown kind {k}"))),
            });
            at += HEADER + len;
        }
        self.buf.drain(..at);
        Ok(frames)
    }
}

/// poll(2) on `(fd, events)` pairs until one is ready or `timeout` passes
/// (`None`: no limit), retried on EINTR; the returned events of each.
fn poll(
    fds: &[(BorrowedFd<'_>, PollFlags)],
    timeout: Option<Duration>,
) -> std::io::Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|&(fd, ev)| PollFd::new(fd, ev)).collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            // Round up, so a deadline less than 1 ms away does not spin.
            Some(d) => PollTimeout::try_from(
                d.saturating_duration_since(Instant::now()) + Duration::from_micros(999),
            )
            .unwrap_or(PollTimeout::MAX),
        };
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents().unwrap_or(PollFlags::empty()))
        .collect())
}

const READABLE: PollFlags = PollFlags::POLLIN
    .union(PollFlags::POLLHUP)
    .union(PollFlags::POLLERR);
const GONE: PollFlags = PollFlags::POLLHUP
    .union(PollFlags::POLLERR)
    .union(PollFlags::POLLNVAL);

fn would_block(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// The forwarding port (nonblocking): frames read from it and frames waiting
/// to be written to it.
struct Port<P> {
    io: P,
    reader: FrameReader,
    out: Vec<u8>,
    out_pos: usize,
}

impl<P: Read + Write + AsFd> Port<P> {
    fn new(io: P) -> Self {
        Port {
            io,
            reader: FrameReader::default(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether connections may be read: their bytes would go to the port, and
    /// the port's buffer is bounded by [`PORT_OUT_LIMIT`].
    fn accepts_data(&self) -> bool {
        self.pending() < PORT_OUT_LIMIT
    }

    fn events(&self) -> PollFlags {
        if self.pending() > 0 {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        }
    }

    fn send(&mut self, frame: &Frame) {
        self.out.extend_from_slice(&frame.encode());
    }

    /// Queue `data` as `Data` frames of at most [`MAX_FRAME`] bytes.
    fn send_data(&mut self, conn: u32, data: &[u8]) {
        for chunk in data.chunks(MAX_FRAME) {
            self.send(&Frame::Data(conn, chunk.to_vec()));
        }
    }

    /// Write what the port takes without blocking.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.pending() > 0 {
            match self.io.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= MAX_FRAME {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Read what the port has (one read); `None` at EOF (the other side is gone).
    fn read(&mut self, buf: &mut [u8]) -> Result<Option<Vec<Frame>>, ForwardError> {
        match self.io.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => self.reader.feed(&buf[..n]).map(Some),
            Err(e) if would_block(&e) => Ok(Some(Vec::new())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(io("reading the forwarding port", Path::new(""))(e)),
        }
    }
}

/// One relayed connection's local end: a host client, or in L1 the inner
/// connection. Nonblocking; bytes for it wait in `out`, at most
/// [`MAX_PENDING_OUTPUT`].
struct Peer {
    /// `None` in L1 while the inner socket is being connected.
    stream: Option<UnixStream>,
    out: Vec<u8>,
    out_pos: usize,
    /// We read its EOF (and sent `Shut`).
    read_done: bool,
    /// The other side sent `Shut`: shut our write side once `out` is sent.
    shut_pending: bool,
    /// The other side sent `Close`: drop it once `out` is sent.
    closing: bool,
    /// Since when output has waited without any of it being taken.
    stalled_since: Option<Instant>,
}

/// What became of a [`Peer`] after some I/O.
#[derive(Debug, PartialEq, Eq)]
enum PeerState {
    Live,
    /// Done normally after the other side's `Close`: forget it, send nothing.
    Finished,
    /// Failed, hung up, over its buffer or stalled: forget it and send `Close`.
    Dropped,
}

impl Peer {
    fn new(stream: Option<UnixStream>) -> Self {
        Peer {
            stream,
            out: Vec::new(),
            out_pos: 0,
            read_done: false,
            shut_pending: false,
            closing: false,
            stalled_since: None,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn wants_read(&self, port_ok: bool) -> bool {
        self.stream.is_some() && port_ok && !self.read_done && !self.closing
    }

    fn events(&self, port_ok: bool) -> PollFlags {
        let mut ev = PollFlags::empty();
        if self.wants_read(port_ok) {
            ev |= PollFlags::POLLIN;
        }
        if self.pending() > 0 {
            ev |= PollFlags::POLLOUT;
        }
        ev
    }

    /// Queue bytes for it; false once more than [`MAX_PENDING_OUTPUT`] wait.
    fn queue(&mut self, data: &[u8], now: Instant) -> bool {
        if self.pending() == 0 {
            self.stalled_since = Some(now);
        }
        self.out.extend_from_slice(data);
        self.pending() <= MAX_PENDING_OUTPUT
    }

    /// When it is dropped for not taking its output.
    fn deadline(&self) -> Option<Instant> {
        // While connecting, the wait is bounded by [`INNER_CONNECT_WAIT`].
        self.stream.as_ref()?;
        self.stalled_since.map(|t| t + WRITE_TIMEOUT)
    }

    /// Send what it takes without blocking, then shut or finish it if asked.
    fn flush(&mut self, now: Instant) -> PeerState {
        let Some(mut stream) = self.stream.as_ref() else {
            // Still connecting (L1): the bytes wait; a `Close` ends it now.
            return if self.closing && self.pending() == 0 {
                PeerState::Finished
            } else {
                PeerState::Live
            };
        };
        let before = self.pending();
        while self.pending() > 0 {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return PeerState::Dropped,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return PeerState::Dropped,
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_pos = 0;
            self.stalled_since = None;
            if self.closing {
                return PeerState::Finished;
            }
            if self.shut_pending {
                self.shut_pending = false;
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        } else if self.pending() < before {
            self.stalled_since = Some(now);
            if self.out_pos >= MAX_FRAME {
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
        }
        PeerState::Live
    }

    /// One read into `buf`, its bytes (or its EOF as `Shut`) queued on `port`.
    fn read_to<P: Read + Write + AsFd>(
        &mut self,
        conn: u32,
        port: &mut Port<P>,
        buf: &mut [u8],
    ) -> PeerState {
        let Some(stream) = self.stream.as_mut() else {
            return PeerState::Live;
        };
        match stream.read(buf) {
            Ok(0) => {
                self.read_done = true;
                port.send(&Frame::Shut(conn));
            }
            Ok(n) => port.send_data(conn, &buf[..n]),
            Err(e) if would_block(&e) => {}
            Err(_) => return PeerState::Dropped,
        }
        PeerState::Live
    }

    /// Serve it after poll reported `rev`.
    fn service<P: Read + Write + AsFd>(
        &mut self,
        conn: u32,
        rev: PollFlags,
        port: &mut Port<P>,
        buf: &mut [u8],
        now: Instant,
    ) -> PeerState {
        if self.stream.is_none() || rev.is_empty() {
            return PeerState::Live;
        }
        // A hung-up peer is read even while the port is full, so poll does not
        // spin on it; what it can still give is bounded by its socket buffer.
        let hup = rev.intersects(GONE) && !self.read_done && !self.closing;
        if (rev.intersects(READABLE) && self.wants_read(port.accepts_data())) || hup {
            let st = self.read_to(conn, port, buf);
            if st != PeerState::Live {
                return st;
            }
        }
        let st = self.flush(now);
        if st != PeerState::Live {
            return st;
        }
        // Gone both ways with nothing left to say: nobody will read a reply.
        if rev.intersects(GONE) && self.read_done && self.pending() == 0 {
            return if self.closing {
                PeerState::Finished
            } else {
                PeerState::Dropped
            };
        }
        PeerState::Live
    }
}

/// Handle one frame from the other side for `peer`: queue its bytes, or note
/// its `Shut`/`Close`. Returns what became of the peer; its pending output is
/// sent by the caller's flush pass.
fn deliver(peer: &mut Peer, frame: Frame, now: Instant) -> PeerState {
    match frame {
        Frame::Data(_, d) if !peer.closing && !peer.queue(&d, now) => return PeerState::Dropped,
        Frame::Shut(_) => peer.shut_pending = true,
        Frame::Close(_) => peer.closing = true,
        _ => {}
    }
    PeerState::Live
}

/// The earliest write deadline among `peers`, as a poll timeout from `now`.
fn next_timeout<'a>(peers: impl Iterator<Item = &'a Peer>, now: Instant) -> Option<Duration> {
    peers
        .filter_map(Peer::deadline)
        .min()
        .map(|d| d.saturating_duration_since(now))
}

/// Flush every peer with output, drop the ones over their write deadline;
/// `Close` for the dropped ones goes to `port`.
fn flush_all<P: Read + Write + AsFd>(
    peers: &mut BTreeMap<u32, Peer>,
    port: &mut Port<P>,
    now: Instant,
) {
    peers.retain(|&conn, p| {
        let mut st = if p.pending() > 0 || p.closing || p.shut_pending {
            p.flush(now)
        } else {
            PeerState::Live
        };
        if st == PeerState::Live && p.deadline().is_some_and(|d| d <= now) {
            st = PeerState::Dropped;
        }
        finish(conn, st, port)
    });
}

/// Keep a peer in `st`? Sends `Close` for a dropped one.
fn finish<P: Read + Write + AsFd>(conn: u32, st: PeerState, port: &mut Port<P>) -> bool {
    match st {
        PeerState::Live => true,
        PeerState::Finished => false,
        PeerState::Dropped => {
            port.send(&Frame::Close(conn));
            false
        }
    }
}

/// The host side of one forwarded socket: the listening socket at the host
/// path and the thread that relays its connections to L1. Dropping it stops
/// the thread and removes the socket file.
#[derive(Debug)]
pub struct HostForward {
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    file_id: (u64, u64),
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

/// A socketpair, both ends close-on-exec.
fn socketpair() -> Result<(UnixStream, OwnedFd), ForwardError> {
    let (ours, theirs) = UnixStream::pair().map_err(io("creating a socketpair", Path::new("")))?;
    Ok((ours, theirs.into()))
}

/// Bind a listening socket at `path`, replacing a stale socket file.
fn listen(path: &Path) -> Result<UnixListener, ForwardError> {
    check_path(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ForwardError::Exists(path.into()));
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(ForwardError::InUse(path.into())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io("removing stale socket", path))?;
            }
            Err(e) => return Err(io("probing existing socket", path)(e)),
        }
    }
    let listener = UnixListener::bind(path).map_err(io("listening on", path))?;
    // Only this user may connect, as with the native control socket.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting the permissions of", path))?;
    Ok(listener)
}

impl HostForward {
    /// Listen at `host` and relay its connections over `port` (our end of the
    /// socketpair whose other end QEMU has). See [`HostForward::create`].
    fn start(host: &Path, port: UnixStream) -> Result<Self, ForwardError> {
        let listener = listen(host)?;
        let meta = std::fs::symlink_metadata(host).map_err(io("checking", host))?;
        let stop = match EventFd::from_flags(EfdFlags::EFD_CLOEXEC) {
            Ok(efd) => Arc::new(efd),
            Err(e) => {
                let _ = std::fs::remove_file(host);
                return Err(io("creating an eventfd", host)(e.into()));
            }
        };
        let mut me = HostForward {
            path: host.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            stop,
            thread: None,
        };
        let stop = me.stop.clone();
        let name = host.display().to_string();
        let thread = std::thread::Builder::new()
            .name("swaplab-forward".into())
            .spawn(move || {
                seccomp::enter(seccomp::ThreadClass::SandboxRelay);
                if let Err(e) = host_loop(&listener, port, &stop) {
                    eprintln!("swaplab sandbox: forwarding {name} stopped: {e}");
                }
            })
            .map_err(io("starting the forwarding thread for", host))?;
        me.thread = Some(thread);
        Ok(me)
    }

    /// Listen at `host`; return the forwarder and the socket QEMU must get
    /// (`-chardev socket,fd=N`).
    pub fn create(host: &Path) -> Result<(HostForward, OwnedFd), ForwardError> {
        let (ours, theirs) = socketpair()?;
        Ok((HostForward::start(host, ours)?, theirs))
    }

    /// The host path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for HostForward {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Remove the file only if it is still the socket we created.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Accept every pending connection: up to [`MAX_CLIENTS`] are served (`Open`
/// to L1), further ones are accepted and closed at once with nothing sent.
/// Returns false if accepting failed in a way that may repeat at once (e.g.
/// out of file descriptors), so the caller backs off.
fn accept_all(
    listener: &UnixListener,
    clients: &mut BTreeMap<u32, Peer>,
    last_conn: &mut u32,
    port: &mut Port<UnixStream>,
) -> bool {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                    continue; // dropped: closed with nothing sent
                }
                // A number no live connection has (they are at most MAX_CLIENTS).
                let mut conn = last_conn.wrapping_add(1);
                while clients.contains_key(&conn) {
                    conn = conn.wrapping_add(1);
                }
                *last_conn = conn;
                port.send(&Frame::Open(conn));
                clients.insert(conn, Peer::new(Some(stream)));
            }
            Err(e) if would_block(&e) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                eprintln!("swaplab sandbox: forwarding: accept failed: {e}; pausing accepts");
                return false;
            }
        }
    }
}

/// The host relay: one poll loop over the stop eventfd, the port, the listener
/// and every client, until stopped or QEMU closes the port.
fn host_loop(
    listener: &UnixListener,
    port: UnixStream,
    stop: &EventFd,
) -> Result<(), ForwardError> {
    let nonblocking = |e| io("making nonblocking", Path::new(""))(e);
    listener.set_nonblocking(true).map_err(nonblocking)?;
    port.set_nonblocking(true).map_err(nonblocking)?;
    let port_err = |e| io("writing the forwarding port", Path::new(""))(e);
    let mut port = Port::new(port);
    let mut clients: BTreeMap<u32, Peer> = BTreeMap::new();
    let mut last_conn: u32 = 0;
    let mut accept_paused_until: Option<Instant> = None;
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let now = Instant::now();
        if accept_paused_until.is_some_and(|t| t <= now) {
            accept_paused_until = None;
        }
        let port_ok = port.accepts_data();
        let listen_ev = if accept_paused_until.is_some() {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        let conns: Vec<u32> = clients.keys().copied().collect();
        let mut fds = vec![
            (stop.as_fd(), PollFlags::POLLIN),
            (port.io.as_fd(), port.events()),
            (listener.as_fd(), listen_ev),
        ];
        fds.extend(clients.values().map(|c| {
            let fd = c.stream.as_ref().map(|s| s.as_fd());
            (fd.unwrap_or(stop.as_fd()), c.events(port_ok))
        }));
        let timeout = next_timeout(clients.values(), now);
        let timeout = match (timeout, accept_paused_until) {
            (t, Some(p)) => Some(t.unwrap_or(Duration::MAX).min(p - now)),
            (t, None) => t,
        };
        let rev = poll(&fds, timeout).map_err(io("poll", Path::new("")))?;
        drop(fds);
        if !rev[0].is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if rev[1].intersects(READABLE) {
            let Some(frames) = port.read(&mut buf)? else {
                return Ok(()); // QEMU is gone
            };
            for f in frames {
                let conn = f.conn();
                // A finished connection's frames, or nonsense from L1: ignored.
                if let Some(c) = clients.get_mut(&conn) {
                    let st = deliver(c, f, now);
                    if !finish(conn, st, &mut port) {
                        clients.remove(&conn);
                    }
                }
            }
        }
        if rev[2].contains(PollFlags::POLLIN)
            && !accept_all(listener, &mut clients, &mut last_conn, &mut port)
        {
            accept_paused_until = Some(now + Duration::from_millis(100));
        }
        for (conn, rev) in conns.iter().zip(&rev[3..]) {
            if let Some(c) = clients.get_mut(conn) {
                let st = c.service(*conn, *rev, &mut port, &mut buf, now);
                if !finish(*conn, st, &mut port) {
                    clients.remove(conn);
                }
            }
        }
        flush_all(&mut clients, &mut port, now);
        port.flush().map_err(port_err)?;
    }
}

/// Parse a bridge argument `PORT_NAME=INNER_PATH`.
pub fn parse_bridge_spec(spec: &str) -> Result<(String, PathBuf), ForwardError> {
    let (name, inner) = spec
        .split_once('=')
        .ok_or_else(|| ForwardError::BadSpec(spec.into()))?;
    if !name.starts_with(PORT_PREFIX) || inner.is_empty() {
        return Err(ForwardError::BadSpec(spec.into()));
    }
    Ok((name.to_string(), PathBuf::from(inner)))
}

/// The `/dev` node of the virtio-serial port named `name`, waiting up to
/// [`PORT_WAIT`] for it (ports appear asynchronously).
fn find_port(name: &str) -> Result<PathBuf, ForwardError> {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim_end() == name {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ForwardError::NoPort(name.into()));
        }
        std::thread::sleep(RETRY);
    }
}

/// Connect to the inner socket, waiting up to [`INNER_CONNECT_WAIT`] for a
/// server to listen there.
fn connect_inner(inner: &Path) -> Result<UnixStream, ForwardError> {
    let deadline = Instant::now() + INNER_CONNECT_WAIT;
    loop {
        match UnixStream::connect(inner) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(RETRY);
            }
            Err(e) => return Err(io("connecting to", inner)(e)),
        }
    }
}

/// The L1 side: relay the connections announced on the port named
/// `port_name` to the Unix socket at `inner`, until the port closes.
pub fn l1_bridge(port_name: &str, inner: &Path) -> Result<(), ForwardError> {
    check_path(inner)?;
    if let Some(dir) = inner.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let dev = find_port(port_name)?;
    use std::os::unix::fs::OpenOptionsExt;
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&dev)
        .map_err(io("opening", &dev))?;
    bridge_loop(port, inner)
}

/// An inner connection made by a connector thread: (connection, its `Open`'s
/// token, the stream or why not).
type Connected = (u32, u64, Result<UnixStream, ForwardError>);

/// The bridge's poll loop over `port` (nonblocking), the connector threads'
/// wake-up eventfd and every inner connection, until the port closes.
fn bridge_loop<P: Read + Write + AsFd>(port: P, inner: &Path) -> Result<(), ForwardError> {
    let port_err = |e| io("writing the forwarding port", Path::new(""))(e);
    let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| io("creating an eventfd", Path::new(""))(e.into()))?;
    let wake = Arc::new(wake);
    let (tx, rx) = std::sync::mpsc::channel::<Connected>();
    let mut port = Port::new(port);
    let mut conns: BTreeMap<u32, Peer> = BTreeMap::new();
    // The token of each connection's `Open`, so a late connector result of an
    // earlier connection with the same number is not taken for this one.
    let mut tokens: BTreeMap<u32, u64> = BTreeMap::new();
    let mut next_token: u64 = 0;
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let now = Instant::now();
        let port_ok = port.accepts_data();
        let ids: Vec<u32> = conns.keys().copied().collect();
        let mut fds = vec![
            (port.io.as_fd(), port.events()),
            (wake.as_fd(), PollFlags::POLLIN),
        ];
        // A connection still being connected has no fd yet: the eventfd with
        // no events stands in (it never reports anything then).
        fds.extend(conns.values().map(|c| match &c.stream {
            Some(s) => (s.as_fd(), c.events(port_ok)),
            None => (wake.as_fd(), PollFlags::empty()),
        }));
        let timeout = next_timeout(conns.values(), now);
        let rev = poll(&fds, timeout).map_err(io("poll", Path::new("")))?;
        drop(fds);
        let now = Instant::now();
        if rev[0].intersects(READABLE) {
            let Some(frames) = port.read(&mut buf)? else {
                return Ok(()); // the host side is gone
            };
            for f in frames {
                let conn = f.conn();
                if let Frame::Open(c) = f {
                    // A reused number: the old connection is over.
                    conns.remove(&c);
                    if conns.len() >= MAX_CLIENTS {
                        port.send(&Frame::Close(c));
                        continue;
                    }
                    next_token += 1;
                    let token = next_token;
                    let (tx, wake, inner) = (tx.clone(), Arc::clone(&wake), inner.to_path_buf());
                    let spawned = std::thread::Builder::new()
                        .name("swaplab-bridge-connect".into())
                        .spawn(move || {
                            seccomp::enter(seccomp::ThreadClass::SandboxRelay);
                            let _ = tx.send((c, token, connect_inner(&inner)));
                            let _ = wake.write(1);
                        });
                    match spawned {
                        Ok(_) => {
                            conns.insert(c, Peer::new(None));
                            tokens.insert(c, token);
                        }
                        Err(e) => {
                            eprintln!("swaplab sandbox bridge: cannot start a connector: {e}");
                            port.send(&Frame::Close(c));
                        }
                    }
                } else if let Some(p) = conns.get_mut(&conn) {
                    let st = deliver(p, f, now);
                    if !finish(conn, st, &mut port) {
                        conns.remove(&conn);
                    }
                }
            }
        }
        if !rev[1].is_empty() {
            let _ = wake.read();
        }
        while let Ok((c, token, result)) = rx.try_recv() {
            let Some(p) = conns.get_mut(&c).filter(|_| tokens.get(&c) == Some(&token)) else {
                continue; // closed meanwhile
            };
            match result.and_then(|s| {
                s.set_nonblocking(true)
                    .map_err(io("making nonblocking", inner))?;
                Ok(s)
            }) {
                Ok(s) => {
                    p.stream = Some(s);
                    if p.pending() > 0 {
                        p.stalled_since = Some(now);
                    }
                }
                Err(e) => {
                    eprintln!("swaplab sandbox bridge: {e}");
                    conns.remove(&c);
                    port.send(&Frame::Close(c));
                }
            }
        }
        for (conn, rev) in ids.iter().zip(&rev[2..]) {
            if let Some(p) = conns.get_mut(conn) {
                let st = p.service(*conn, *rev, &mut port, &mut buf, now);
                if !finish(*conn, st, &mut port) {
                    conns.remove(conn);
                }
            }
        }
        flush_all(&mut conns, &mut port, now);
        tokens.retain(|c, _| conns.contains_key(c));
        port.flush().map_err(port_err)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = vec![
            Frame::Open(1),
            Frame::Data(1, b"{\"cmd\":\"status\"}\n".to_vec()),
            Frame::Shut(1),
            Frame::Data(1, vec![]),
            Frame::Close(7),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for step in [1, 3, 9, bytes.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                got.extend(r.feed(chunk).unwrap());
            }
            assert_eq!(got, frames, "step {step}");
        }
    }

    #[test]
    fn nonsense_is_an_error_not_a_panic() {
        let mut r = FrameReader::default();
        let mut big = vec![DATA, 0, 0, 0, 0];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(r.feed(&big).is_err());
        let mut r = FrameReader::default();
        assert!(r.feed(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut r = FrameReader::default();
        assert!(r.feed(&[OPEN, 0, 0, 0, 0, 1, 0, 0, 0, b'x']).is_err());
    }

    #[test]
    fn bridge_specs_and_paths() {
        assert_eq!(
            parse_bridge_spec("swaplab.fwd.0=/run/swaplab/a.sock").unwrap(),
            (
                "swaplab.fwd.0".to_string(),
                PathBuf::from("/run/swaplab/a.sock")
            )
        );
        assert!(parse_bridge_spec("other=/x").is_err());
        assert!(parse_bridge_spec("swaplab.fwd.0").is_err());
        assert!(check_path(Path::new("rel.sock")).is_err());
        assert!(check_path(&PathBuf::from(format!("/{}", "x".repeat(120)))).is_err());
        assert_eq!(default_inner(2), Path::new("/run/swaplab/forward-2.sock"));
    }

    #[test]
    fn existing_files_are_kept_and_stale_sockets_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"keep").unwrap();
        assert!(matches!(
            HostForward::create(&file),
            Err(ForwardError::Exists(_))
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");

        let sock = dir.path().join("s.sock");
        drop(UnixListener::bind(&sock).unwrap()); // stale: nobody listens
        let (fwd, _qemu_end) = HostForward::create(&sock).unwrap();
        assert!(matches!(
            HostForward::create(&sock),
            Err(ForwardError::InUse(_))
        ));
        drop(fwd);
        assert!(!sock.exists(), "the socket file is removed on drop");
    }

    /// The host side against a fake L1 on the other end of the socketpair.
    #[test]
    fn host_side_relays_one_connection_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let (fwd, l1_end) = HostForward::create(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only this user may connect");
        let mut l1 = UnixStream::from(l1_end);
        let mut reader = FrameReader::default();
        let mut next = |l1: &mut UnixStream| -> Frame {
            let mut buf = [0u8; 256];
            loop {
                let n = l1.read(&mut buf).unwrap();
                assert!(n > 0, "host side closed the port");
                let mut f = reader.feed(&buf[..n]).unwrap();
                if !f.is_empty() {
                    assert_eq!(f.len(), 1, "{f:?}");
                    return f.remove(0);
                }
            }
        };
        for round in 1..=2u32 {
            let mut client = UnixStream::connect(&sock).unwrap();
            assert_eq!(next(&mut l1), Frame::Open(round));
            client.write_all(b"ping\n").unwrap();
            assert_eq!(next(&mut l1), Frame::Data(round, b"ping\n".to_vec()));
            // A late frame of the previous connection must not reach this client.
            l1.write_all(&Frame::Data(round - 1, b"stale\n".to_vec()).encode())
                .unwrap();
            l1.write_all(&Frame::Data(round, b"pong\n".to_vec()).encode())
                .unwrap();
            l1.write_all(&Frame::Close(round).encode()).unwrap();
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, "pong\n");
        }
        drop(fwd);
        assert!(!sock.exists());
    }

    const TEST_WAIT: Duration = Duration::from_secs(30);

    /// Read frames from a fake other side until `want` comes; the ones before.
    fn wait_for(port: &mut UnixStream, reader: &mut FrameReader, want: &Frame) -> Vec<Frame> {
        port.set_read_timeout(Some(TEST_WAIT)).unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let n = port.read(&mut buf).expect("a frame within the wait");
            assert!(n > 0, "port closed while waiting for {want:?}");
            for f in reader.feed(&buf[..n]).unwrap() {
                if &f == want {
                    return seen;
                }
                seen.push(f);
            }
        }
    }

    /// An inner server: per connection, one reply line per request line:
    /// `re:LINE`, or 16 KiB for `big`; after `sleep` it stops reading.
    fn inner_server(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                std::thread::spawn(move || {
                    use std::io::BufRead;
                    let mut w = s.try_clone().unwrap();
                    for line in std::io::BufReader::new(s).lines() {
                        let Ok(line) = line else { return };
                        let reply = match line.as_str() {
                            "sleep" => {
                                std::thread::sleep(Duration::from_secs(120));
                                return;
                            }
                            "big" => format!("{}\n", "x".repeat(16 * 1024)),
                            l => format!("re:{l}\n"),
                        };
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    /// Both sides over a socketpair (QEMU's place), with a real inner server.
    fn stack(dir: &Path) -> (HostForward, PathBuf, JoinHandle<()>) {
        let sock = dir.join("host.sock");
        let inner = dir.join("inner.sock");
        inner_server(&inner);
        let (fwd, l1_end) = HostForward::create(&sock).unwrap();
        let port = UnixStream::from(l1_end);
        port.set_nonblocking(true).unwrap();
        let bridge = std::thread::spawn(move || bridge_loop(port, &inner).unwrap());
        (fwd, sock, bridge)
    }

    fn client(sock: &Path) -> UnixStream {
        let c = UnixStream::connect(sock).unwrap();
        c.set_read_timeout(Some(TEST_WAIT)).unwrap();
        c
    }

    fn read_line(c: &mut UnixStream) -> String {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while c.read(&mut b).expect("a reply within the wait") == 1 {
            line.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
        }
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn two_clients_interleave_and_both_get_their_replies() {
        let dir = tempfile::tempdir().unwrap();
        let (fwd, sock, bridge) = stack(dir.path());
        let mut a = client(&sock);
        let mut b = client(&sock);
        a.write_all(b"a1\n").unwrap();
        b.write_all(b"b1\n").unwrap();
        assert_eq!(read_line(&mut b), "re:b1\n");
        a.write_all(b"a2\n").unwrap();
        assert_eq!(read_line(&mut a), "re:a1\n");
        assert_eq!(read_line(&mut a), "re:a2\n");
        b.write_all(b"b2\nb3\n").unwrap();
        assert_eq!(read_line(&mut b), "re:b2\n");
        assert_eq!(read_line(&mut b), "re:b3\n");
        drop(fwd);
        bridge.join().unwrap(); // the port closed: the bridge ends
    }

    #[test]
    fn a_half_close_reaches_the_server_and_its_close_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let (fwd, sock, bridge) = stack(dir.path());
        let mut a = client(&sock);
        a.write_all(b"one\n").unwrap();
        assert_eq!(read_line(&mut a), "re:one\n");
        // A half-close with nothing else to send.
        a.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        a.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "the server saw the end and closed");
        let mut b = client(&sock);
        b.write_all(b"last\n").unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        b.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "re:last\n");
        drop(fwd);
        bridge.join().unwrap();
    }

    #[test]
    fn a_peer_that_takes_nothing_for_the_write_timeout_is_dropped() {
        let (ours, _never_read) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (port_end, mut other) = UnixStream::pair().unwrap();
        port_end.set_nonblocking(true).unwrap();
        let mut port = Port::new(port_end);
        let mut peers = BTreeMap::new();
        let mut peer = Peer::new(Some(ours));
        let now = Instant::now();
        assert!(peer.queue(&vec![0u8; MAX_PENDING_OUTPUT], now));
        assert_eq!(peer.flush(now), PeerState::Live);
        assert!(peer.pending() > 0, "the socket buffer is full");
        peers.insert(5, peer);
        flush_all(&mut peers, &mut port, now + WRITE_TIMEOUT / 2);
        assert!(peers.contains_key(&5), "not yet");
        flush_all(&mut peers, &mut port, now + WRITE_TIMEOUT);
        assert!(peers.is_empty());
        port.flush().unwrap();
        let mut reader = FrameReader::default();
        assert!(wait_for(&mut other, &mut reader, &Frame::Close(5)).is_empty());
    }

    #[test]
    fn a_client_that_never_reads_is_dropped_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let (fwd, sock, bridge) = stack(dir.path());
        let flooder = client(&sock);
        flooder.set_write_timeout(Some(TEST_WAIT)).unwrap();
        let flood = std::thread::spawn(move || {
            let mut f = flooder;
            // Pipelined requests for 16 KiB replies, never reading one, until
            // the forwarder hangs up. The bound (64 MiB of requests, replies
            // worth 256 GiB) is only there so a forwarder that never drops it
            // ends the test: 100,000 requests (400 KB) could all fit in the
            // socket buffers before the first MiB of replies came back, and
            // did, in 3 % of runs.
            for _ in 0..(16u32 << 20) {
                if let Err(e) = f.write_all(b"big\n") {
                    return e.kind();
                }
            }
            std::io::ErrorKind::Other
        });
        let mut b = client(&sock);
        let mut round = 0;
        while !flood.is_finished() {
            round += 1;
            b.write_all(format!("b{round}\n").as_bytes()).unwrap();
            assert_eq!(read_line(&mut b), format!("re:b{round}\n"));
        }
        let kind = flood.join().unwrap();
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "the flooder was dropped, not {kind:?}"
        );
        b.write_all(b"after\n").unwrap();
        assert_eq!(read_line(&mut b), "re:after\n");
        drop(fwd);
        bridge.join().unwrap();
    }

    /// The host side against a fake L1: an idle client blocks nobody, and
    /// clients past the limit are closed with nothing sent.
    #[test]
    fn host_side_idle_client_blocks_nobody_and_clients_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let (fwd, l1_end) = HostForward::create(&sock).unwrap();
        let mut l1 = UnixStream::from(l1_end);
        let mut reader = FrameReader::default();
        let mut idle = client(&sock);
        wait_for(&mut l1, &mut reader, &Frame::Open(1));
        let mut b = client(&sock);
        wait_for(&mut l1, &mut reader, &Frame::Open(2));
        b.write_all(b"ping\n").unwrap();
        wait_for(&mut l1, &mut reader, &Frame::Data(2, b"ping\n".to_vec()));
        l1.write_all(&Frame::Data(2, b"pong\n".to_vec()).encode())
            .unwrap();
        assert_eq!(read_line(&mut b), "pong\n");
        // The idle one is still served.
        l1.write_all(&Frame::Data(1, b"late\n".to_vec()).encode())
            .unwrap();
        assert_eq!(read_line(&mut idle), "late\n");

        let mut more = Vec::new();
        for n in 3..=MAX_CLIENTS as u32 {
            more.push(client(&sock));
            wait_for(&mut l1, &mut reader, &Frame::Open(n));
        }
        let mut extra = client(&sock);
        let mut got = Vec::new();
        extra.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "closed with nothing sent");
        // A slot freed by a client that leaves is reused.
        drop(b);
        wait_for(&mut l1, &mut reader, &Frame::Close(2));
        let _again = client(&sock);
        wait_for(&mut l1, &mut reader, &Frame::Open(MAX_CLIENTS as u32 + 1));
        drop(fwd);
    }

    /// The bridge against a fake host: an inner server that stops reading
    /// loses its connection once its buffer is full; the others are served.
    #[test]
    fn bridge_drops_an_inner_connection_that_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner.sock");
        inner_server(&inner);
        let (mut host, port) = UnixStream::pair().unwrap();
        port.set_nonblocking(true).unwrap();
        let bridge = std::thread::spawn(move || bridge_loop(port, &inner).unwrap());
        let mut reader = FrameReader::default();
        let send = |host: &mut UnixStream, f: Frame| host.write_all(&f.encode()).unwrap();
        send(&mut host, Frame::Open(1));
        send(&mut host, Frame::Data(1, b"sleep\n".to_vec()));
        send(&mut host, Frame::Open(2));
        send(&mut host, Frame::Data(2, b"b1\n".to_vec()));
        wait_for(&mut host, &mut reader, &Frame::Data(2, b"re:b1\n".to_vec()));
        let chunk = vec![b'y'; MAX_FRAME];
        for _ in 0..(4 * MAX_PENDING_OUTPUT / MAX_FRAME) {
            send(&mut host, Frame::Data(1, chunk.clone()));
        }
        send(&mut host, Frame::Data(2, b"b2\n".to_vec()));
        let before = wait_for(&mut host, &mut reader, &Frame::Data(2, b"re:b2\n".to_vec()));
        let mut all = before;
        if !all.contains(&Frame::Close(1)) {
            all = wait_for(&mut host, &mut reader, &Frame::Close(1));
            assert!(all.is_empty(), "{all:?}");
        }
        // An idle connection (3) does not hold up a new one (4) either.
        send(&mut host, Frame::Open(3));
        send(&mut host, Frame::Open(4));
        send(&mut host, Frame::Data(4, b"d\n".to_vec()));
        wait_for(&mut host, &mut reader, &Frame::Data(4, b"re:d\n".to_vec()));
        drop(host);
        bridge.join().unwrap();
    }
}
