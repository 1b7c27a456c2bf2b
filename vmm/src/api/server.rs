//! The control-socket server: a Unix listener and its clients, served by one thread.
//!
//! One `poll(2)` loop over a wake-up eventfd, the listener and every client. Clients are
//! nonblocking: a client that stops halfway through a line, or never reads its replies,
//! only stalls itself. Input is bounded by [`MAX_LINE`] per client, pending output by
//! [`ServerLimits::max_pending_output`] (past it the server stops reading that client's
//! requests until it reads its replies), and the number of clients by
//! [`ServerLimits::max_clients`].

use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::handler::{ApiError, ApiHandler};
use super::protocol::{
    help_result, parse_request, ErrorKind, ProtocolError, Reply, Request, MAX_LINE,
};

/// Resource bounds of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Clients served at once; one more gets an `unavailable` reply and is closed.
    pub max_clients: usize,
    /// Reply bytes kept for a client that does not read them before the server stops
    /// reading its requests.
    pub max_pending_output: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_clients: 16,
            max_pending_output: 1 << 20,
        }
    }
}

/// A running control-socket server. [`ApiServer::stop`] or dropping it stops the thread,
/// closes every client and removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we bound, so we never remove someone else's.
    inode: (u64, u64),
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

fn sock_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ApiError + 'a {
    move |source| ApiError::Socket {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Bind `path`, replacing a stale socket file (one nobody listens on) but nothing else.
fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(ApiError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!("replacing stale control socket {}", path.display());
                fs::remove_file(path).map_err(sock_err("remove stale", path))?;
            }
            Err(e) => return Err(sock_err("probe existing", path)(e)),
        },
        Ok(_) => return Err(ApiError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err("inspect", path)(e)),
    }
    UnixListener::bind(path).map_err(sock_err("bind", path))
}

impl ApiServer {
    /// Listen on `path` with the default [`ServerLimits`] and serve requests with
    /// `handler` on a new thread.
    ///
    /// The path is used as given (the caller resolves it, e.g. from an environment
    /// variable inside the sandbox). An existing socket file nobody listens on is
    /// replaced; anything else at `path` is an error. The socket is made `0600`.
    pub fn start(path: &Path, handler: Arc<dyn ApiHandler>) -> Result<ApiServer, ApiError> {
        Self::start_with_limits(path, handler, ServerLimits::default())
    }

    /// [`ApiServer::start`] with explicit limits.
    pub fn start_with_limits(
        path: &Path,
        handler: Arc<dyn ApiHandler>,
        limits: ServerLimits,
    ) -> Result<ApiServer, ApiError> {
        // Remember the absolute path so a later change of directory cannot make us
        // remove the wrong file; bind with the path as given (sun_path is short).
        let abs = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir()
                .map_err(sock_err("resolve", path))?
                .join(path)
        };
        let listener = bind(path)?;
        let setup = || -> Result<_, ApiError> {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(sock_err("set permissions of", path))?;
            let md = fs::symlink_metadata(path).map_err(sock_err("inspect", path))?;
            listener
                .set_nonblocking(true)
                .map_err(sock_err("configure", path))?;
            let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| ApiError::Start(e.into()))?;
            Ok(((md.dev(), md.ino()), Arc::new(wake)))
        };
        let (inode, wake) = match setup() {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        let thread_wake = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("api-server".into())
            .spawn(move || {
                seccomp::enter(seccomp::ThreadClass::ControlSocket);
                serve(listener, &thread_wake, &*handler, limits)
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(ApiError::Start(e));
            }
        };
        Ok(ApiServer {
            path: abs,
            inode,
            wake,
            thread: Some(thread),
        })
    }

    /// The socket's path (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop serving: wake and join the thread, close every client, remove the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.wake.write(1) {
            // Cannot happen for a fresh eventfd; without it the join would hang.
            tracing::error!("cannot wake the control-socket thread: {e}");
            return;
        }
        if thread.join().is_err() {
            tracing::error!("the control-socket thread panicked");
        }
        match fs::symlink_metadata(&self.path) {
            Ok(md) if (md.dev(), md.ino()) == self.inode => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!("cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {} // Gone already, or replaced by someone else's file: leave it.
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `send(2)` with `MSG_NOSIGNAL`: a client that went away gives `EPIPE`, not `SIGPIPE`.
fn send_nosignal(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice of `buf.len()` readable bytes and `fd` is an open
    // socket borrowed for the duration of the call; send(2) does not retain either.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// Answer one request line.
fn respond(line: &[u8], handler: &dyn ApiHandler) -> Reply {
    let (id, parsed) = parse_request(line);
    match parsed {
        Err(e) => Reply::error(id, e.kind(), e.to_string()),
        Ok(Request::Help) => Reply::ok(id, help_result()),
        Ok(req) => match catch_unwind(AssertUnwindSafe(|| handler.handle(&req))) {
            Ok(Ok(result)) => Reply::ok(id, result),
            Ok(Err(e)) => e.to_reply(id),
            Err(_) => Reply::error(
                id,
                ErrorKind::Internal,
                format!("{} failed: the handler panicked", req.name()),
            ),
        },
    }
}

/// One connected client and its buffers.
struct Client {
    stream: UnixStream,
    /// Received bytes; `inbuf[in_pos..]` is not processed yet.
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Reply bytes; `out[out_pos..]` is not sent yet.
    out: Vec<u8>,
    out_pos: usize,
    /// The client closed its write side.
    eof: bool,
    /// Close once the pending output is sent (after a too-long line).
    closing: bool,
    /// Drop now (I/O error, peer gone).
    dead: bool,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        Client {
            stream,
            inbuf: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            closing: false,
            dead: false,
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn unprocessed(&self) -> &[u8] {
        &self.inbuf[self.in_pos..]
    }

    fn has_line(&self) -> bool {
        self.unprocessed().contains(&b'\n')
    }

    fn wants_read(&self, limits: &ServerLimits) -> bool {
        !self.eof
            && !self.closing
            && !self.dead
            && self.pending_out() < limits.max_pending_output
            && !self.has_line()
    }

    fn finished(&self) -> bool {
        self.dead
            || (self.closing && self.pending_out() == 0)
            || (self.eof && self.pending_out() == 0 && self.unprocessed().is_empty())
    }

    fn read_once(&mut self) {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!("control socket client read failed: {e}");
                self.dead = true;
            }
        }
    }

    fn push_reply(&mut self, reply: &Reply) {
        self.out.extend_from_slice(reply.to_line().as_bytes());
        self.out.push(b'\n');
    }

    /// The next complete line (without `\n` or `\r\n`), `Err` if it is too long.
    fn next_line(&mut self) -> Option<Result<Range<usize>, ()>> {
        let rest = self.unprocessed();
        let (len, consumed) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => (nl, nl + 1),
            // The peer closed its write side: its last line needs no newline.
            None if self.eof && !rest.is_empty() => (rest.len(), rest.len()),
            // Too long even if a `\r\n` comes next.
            None if rest.len() > MAX_LINE + 1 => return Some(Err(())),
            None => return None,
        };
        let start = self.in_pos;
        let mut end = start + len;
        if self.inbuf[start..end].ends_with(b"\r") {
            end -= 1;
        }
        if end - start > MAX_LINE {
            return Some(Err(()));
        }
        self.in_pos += consumed;
        Some(Ok(start..end))
    }

    /// Answer complete lines while the output stays under the limit.
    fn process(&mut self, handler: &dyn ApiHandler, limits: &ServerLimits) {
        while !self.closing && self.pending_out() < limits.max_pending_output {
            match self.next_line() {
                None => break,
                Some(Err(())) => {
                    let reply = ApiError::from(ProtocolError::LineTooLong).to_reply(None);
                    self.push_reply(&reply);
                    self.closing = true;
                    self.inbuf.clear();
                    self.in_pos = 0;
                }
                Some(Ok(range)) => {
                    let line = &self.inbuf[range];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let reply = respond(line, handler);
                    self.push_reply(&reply);
                }
            }
        }
        if self.in_pos > 0 {
            self.inbuf.drain(..self.in_pos);
            self.in_pos = 0;
        }
    }

    fn flush(&mut self) {
        while self.pending_out() > 0 {
            match send_nosignal(self.stream.as_fd(), &self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("control socket client write failed: {e}");
                    self.dead = true;
                    return;
                }
            }
        }
        if self.pending_out() == 0 {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Answer what can be answered and send what can be sent.
    fn service(&mut self, handler: &dyn ApiHandler, limits: &ServerLimits) {
        loop {
            self.process(handler, limits);
            self.flush();
            // Output drained and lines left: they were held back by the output limit.
            if self.dead || self.closing || self.pending_out() > 0 || !self.has_line() {
                break;
            }
        }
        if self.closing && self.pending_out() == 0 {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Tell a client over the limit why it is being closed; best effort.
fn refuse(stream: UnixStream, max: usize) {
    let reply = Reply::error(
        None,
        ErrorKind::Unavailable,
        format!("too many control-socket clients (at most {max}); try again later"),
    );
    let mut line = reply.to_line().into_bytes();
    line.push(b'\n');
    let _ = send_nosignal(stream.as_fd(), &line);
}

/// Connections accepted (or refused) per turn of the loop. Bounded so that a client
/// that reconnects as fast as it is refused cannot keep the loop from serving the
/// admitted clients, and from noticing which of them left.
const ACCEPTS_PER_TURN: usize = 64;

/// Accept the pending connections, at most [`ACCEPTS_PER_TURN`]. Returns false if
/// accepting failed in a way that may repeat at once (e.g. out of file descriptors), so
/// the caller backs off.
fn accept_some(listener: &UnixListener, clients: &mut Vec<Client>, limits: &ServerLimits) -> bool {
    for _ in 0..ACCEPTS_PER_TURN {
        match listener.accept() {
            Ok((stream, _)) => {
                if clients.len() >= limits.max_clients {
                    refuse(stream, limits.max_clients);
                } else if let Err(e) = stream.set_nonblocking(true) {
                    tracing::debug!("cannot make a control socket client nonblocking: {e}");
                } else {
                    clients.push(Client::new(stream));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                tracing::warn!("control socket: accept failed: {e}; pausing accepts");
                return false;
            }
        }
    }
    true
}

/// The server thread: serve until the wake eventfd fires.
fn serve(listener: UnixListener, wake: &EventFd, handler: &dyn ApiHandler, limits: ServerLimits) {
    let mut clients: Vec<Client> = Vec::new();
    let mut accept_paused = false;
    loop {
        let mut fds = Vec::with_capacity(2 + clients.len());
        fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
        let listen_events = if accept_paused {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        fds.push(PollFd::new(listener.as_fd(), listen_events));
        for c in &clients {
            let mut ev = PollFlags::empty();
            if c.wants_read(&limits) {
                ev |= PollFlags::POLLIN;
            }
            if c.pending_out() > 0 {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), ev));
        }
        // After a failed accept, retry in 100 ms rather than spin on a ready listener.
        let timeout = if accept_paused {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("control socket: poll failed: {e}; server stopped");
                return;
            }
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !revents[0].is_empty() {
            return;
        }
        // The clients first, so that the slots of those that left are free before
        // the listener's queue is looked at.
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        for (c, rev) in clients.iter_mut().zip(&revents[2..]) {
            if rev.is_empty() {
                continue;
            }
            if rev.intersects(PollFlags::POLLIN | gone) && c.wants_read(&limits) {
                c.read_once();
            }
            c.service(handler, &limits);
            // A hung-up peer that we neither read nor write would make poll spin.
            if rev.intersects(gone) && !c.wants_read(&limits) && c.pending_out() == 0 {
                c.dead = true;
            }
        }
        clients.retain(|c| !c.finished());
        if accept_paused || !revents[1].is_empty() {
            accept_paused = !accept_some(&listener, &mut clients, &limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn padded(_: &Request) -> Result<serde_json::Value, ApiError> {
        Ok(serde_json::json!({ "pad": "x".repeat(100) }))
    }

    #[test]
    fn output_stays_bounded_for_a_client_that_does_not_read() {
        let (server_end, mut peer) = UnixStream::pair().unwrap();
        server_end.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let limits = ServerLimits {
            max_clients: 1,
            max_pending_output: 4096,
        };
        let reply_len = respond(br#"{"cmd":"vm.stats"}"#, &padded).to_line().len() + 1;
        let mut c = Client::new(server_end);
        let requests = "{\"cmd\":\"vm.stats\"}\n".repeat(64);
        let mut peer_blocked = false;
        for _ in 0..100_000 {
            if !peer_blocked {
                match peer.write(requests.as_bytes()) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => peer_blocked = true,
                    Err(e) => panic!("{e}"),
                }
            }
            if c.wants_read(&limits) {
                c.read_once();
            }
            c.service(&padded, &limits);
            assert!(!c.dead);
            assert!(c.pending_out() < limits.max_pending_output + reply_len);
            if peer_blocked && !c.wants_read(&limits) {
                break;
            }
        }
        // Both socket buffers are full and the server has stopped reading: because of
        // its output, not for lack of input.
        assert!(peer_blocked && !c.wants_read(&limits));
        assert!(c.pending_out() >= limits.max_pending_output);
        // Once the peer reads, the server serves it again.
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = peer.read(&mut buf) {
            assert!(n > 0);
        }
        c.service(&padded, &limits);
        assert!(c.pending_out() < limits.max_pending_output);
    }

    #[test]
    fn lines_are_split_on_newlines_and_crlf() {
        let (server_end, _peer) = UnixStream::pair().unwrap();
        let mut c = Client::new(server_end);
        c.inbuf = b"a\r\nbc\n\nd".to_vec();
        let mut lines = Vec::new();
        while let Some(Ok(r)) = c.next_line() {
            lines.push(c.inbuf[r].to_vec());
        }
        assert_eq!(lines, [b"a".to_vec(), b"bc".to_vec(), b"".to_vec()]);
        c.eof = true;
        let r = c.next_line().unwrap().unwrap();
        assert_eq!(&c.inbuf[r], b"d");
        assert!(c.next_line().is_none());
    }

    #[test]
    fn an_unterminated_line_is_too_long_only_past_the_limit() {
        let (server_end, _peer) = UnixStream::pair().unwrap();
        let mut c = Client::new(server_end);
        // MAX_LINE bytes and a '\r' may still be followed by '\n'.
        c.inbuf = vec![b' '; MAX_LINE + 1];
        assert!(c.next_line().is_none());
        c.inbuf.push(b' ');
        assert_eq!(c.next_line(), Some(Err(())));
        c.inbuf = vec![b' '; MAX_LINE];
        c.inbuf.extend_from_slice(b"\r\n");
        assert!(matches!(c.next_line(), Some(Ok(r)) if r.len() == MAX_LINE));
    }
}
