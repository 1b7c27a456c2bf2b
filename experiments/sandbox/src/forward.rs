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
//!   block reading it.
//! - In L1 the job starts a bridge ([`l1_bridge`]; the swaplab binary's hidden
//!   `swaplab sandbox --l1-bridge PORT=INNER`) before the command. For each
//!   host connection it connects to the inner path, retrying for up to
//!   [`INNER_CONNECT_WAIT`] while the server is not listening yet.
//! - Connections are served one at a time (a virtio-serial port is one byte
//!   stream): further clients wait in the listen backlog until the current one
//!   is done. Enough for a line request/reply protocol.
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
/// A client that does not read its replies for this long is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
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

fn send(port: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    port.write_all(&frame.encode())
}

/// Send `data` as `Data` frames of at most [`MAX_FRAME`] bytes.
fn send_data(port: &mut impl Write, conn: u32, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(MAX_FRAME) {
        send(port, &Frame::Data(conn, chunk.to_vec()))?;
    }
    Ok(())
}

/// poll(2) on `(fd, events)` pairs until one is ready, retried on EINTR; the
/// returned events of each.
fn poll(fds: &[(BorrowedFd<'_>, PollFlags)]) -> std::io::Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|&(fd, ev)| PollFd::new(fd, ev)).collect();
    loop {
        match nix::poll::poll(&mut pfds, PollTimeout::NONE) {
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

/// Why the host loop stopped.
enum Next {
    Continue,
    Stop,
}

/// Read what the port has; `None` at EOF (QEMU is gone).
fn read_frames(
    port: &mut UnixStream,
    reader: &mut FrameReader,
    buf: &mut [u8],
) -> Result<Option<Vec<Frame>>, ForwardError> {
    match port.read(buf) {
        Ok(0) => Ok(None),
        Ok(n) => reader.feed(&buf[..n]).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Some(Vec::new())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(io("reading the forwarding port", Path::new(""))(e)),
    }
}

fn host_loop(
    listener: &UnixListener,
    mut port: UnixStream,
    stop: &EventFd,
) -> Result<(), ForwardError> {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut conn: u32 = 0;
    loop {
        let rev = poll(&[
            (stop.as_fd(), PollFlags::POLLIN),
            (port.as_fd(), PollFlags::POLLIN),
            (listener.as_fd(), PollFlags::POLLIN),
        ])
        .map_err(io("poll", Path::new("")))?;
        if !rev[0].is_empty() {
            return Ok(());
        }
        if rev[1].intersects(READABLE) {
            // Between connections: only late frames of finished ones arrive.
            if read_frames(&mut port, &mut reader, &mut buf)?.is_none() {
                return Ok(());
            }
        }
        if rev[2].contains(PollFlags::POLLIN) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("accepting on", Path::new(""))(e)),
            };
            conn = conn.wrapping_add(1);
            let _ = client.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
            if let Next::Stop = serve_client(client, conn, &mut port, &mut reader, &mut buf, stop)?
            {
                return Ok(());
            }
        }
    }
}

/// Relay one client until it or the L1 side is done.
fn serve_client(
    mut client: UnixStream,
    conn: u32,
    port: &mut UnixStream,
    reader: &mut FrameReader,
    buf: &mut [u8],
    stop: &EventFd,
) -> Result<Next, ForwardError> {
    let port_err = |e| io("writing the forwarding port", Path::new(""))(e);
    send(port, &Frame::Open(conn)).map_err(port_err)?;
    let mut client_eof = false;
    loop {
        let client_events = if client_eof {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        let rev = poll(&[
            (stop.as_fd(), PollFlags::POLLIN),
            (port.as_fd(), PollFlags::POLLIN),
            (client.as_fd(), client_events),
        ])
        .map_err(io("poll", Path::new("")))?;
        if !rev[0].is_empty() {
            return Ok(Next::Stop);
        }
        if rev[1].intersects(READABLE) {
            let Some(frames) = read_frames(port, reader, buf)? else {
                return Ok(Next::Stop);
            };
            for f in frames {
                match f {
                    Frame::Data(c, d) if c == conn => {
                        let written = client.write_all(&d);
                        if written.is_err() {
                            send(port, &Frame::Close(conn)).map_err(port_err)?;
                            return Ok(Next::Continue);
                        }
                    }
                    Frame::Shut(c) if c == conn => {
                        let _ = client.shutdown(std::net::Shutdown::Write);
                    }
                    Frame::Close(c) if c == conn => return Ok(Next::Continue),
                    _ => {} // a finished connection's, or nonsense from L1: ignored
                }
            }
        }
        let rev = rev[2];
        if !client_eof && rev.intersects(READABLE) {
            match client.read(buf) {
                Ok(0) => {
                    client_eof = true;
                    send(port, &Frame::Shut(conn)).map_err(port_err)?;
                }
                Ok(n) => send_data(port, conn, &buf[..n]).map_err(port_err)?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    send(port, &Frame::Close(conn)).map_err(port_err)?;
                    return Ok(Next::Continue);
                }
            }
        } else if client_eof && rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // The client closed both ways: nobody will read a reply.
            send(port, &Frame::Close(conn)).map_err(port_err)?;
            return Ok(Next::Continue);
        }
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
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(io("opening", &dev))?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut current: Option<(u32, UnixStream)> = None;
    let port_err = |e| io("writing", &dev)(e);
    loop {
        let mut fds = vec![(port.as_fd(), PollFlags::POLLIN)];
        if let Some((_, s)) = &current {
            fds.push((s.as_fd(), PollFlags::POLLIN));
        }
        let rev = poll(&fds).map_err(io("poll", &dev))?;
        drop(fds);
        if rev[0].intersects(READABLE) {
            let n = match port.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("reading", &dev)(e)),
            };
            for f in reader.feed(&buf[..n])? {
                let same = current.as_ref().is_some_and(|(c, _)| *c == f.conn());
                match f {
                    Frame::Open(c) => {
                        current = None;
                        match connect_inner(inner) {
                            Ok(s) => current = Some((c, s)),
                            Err(e) => {
                                eprintln!("swaplab sandbox bridge: {e}");
                                send(&mut port, &Frame::Close(c)).map_err(port_err)?;
                            }
                        }
                    }
                    Frame::Data(c, d) if same => {
                        let ok = current
                            .as_mut()
                            .is_some_and(|(_, s)| s.write_all(&d).is_ok());
                        if !ok {
                            current = None;
                            send(&mut port, &Frame::Close(c)).map_err(port_err)?;
                        }
                    }
                    Frame::Shut(_) if same => {
                        if let Some((_, s)) = &current {
                            let _ = s.shutdown(std::net::Shutdown::Write);
                        }
                    }
                    Frame::Close(_) if same => current = None,
                    _ => {}
                }
            }
        }
        if rev.len() > 1 && rev[1].intersects(READABLE) {
            if let Some((c, s)) = current.as_mut() {
                let c = *c;
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        current = None;
                        send(&mut port, &Frame::Close(c)).map_err(port_err)?;
                    }
                    Ok(n) => send_data(&mut port, c, &buf[..n]).map_err(port_err)?,
                }
            }
        }
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
}
