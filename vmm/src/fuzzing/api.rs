//! `api`: a byte stream sent to a real control-socket server ([`ApiServer`] on a
//! Unix socket, with its poll loop, per-client buffers and line splitting), read
//! back to the end and compared reply by reply with what [`parse_request`] and the
//! handler give for each line the model splits off.
//!
//! Checks: every line gets exactly one reply, in order, equal to the model's
//! (same id, same result or same error kind and message); a too-long line gets one
//! `parse` error and ends the connection; a parsed request survives a round trip
//! through [`Request::to_line`]; the server is still there afterwards.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use serde_json::{json, Value};

use super::harness::Encoder;
use crate::api::{
    help_result, parse_request, ApiError, ApiServer, ErrorKind, ProtocolError, Reply, Request,
    MAX_LINE,
};

/// The handler behind the fuzzed server: deterministic, with each kind of answer.
fn handle(req: &Request) -> Result<Value, ApiError> {
    match req {
        Request::BalloonSet { target } if target.bytes() > 1 << 40 => Err(ApiError::BadArgument(
            format!("target {} is above guest RAM", target.bytes()),
        )),
        Request::BalloonSet { target } => Ok(json!({ "target_bytes": target.bytes() })),
        Request::BalloonStats => Err(ApiError::Unavailable("no balloon".into())),
        Request::SwapperStatus => Ok(json!({ "resident_pages": 7 })),
        Request::VmStats => Ok(json!({ "exits": [] })),
        Request::Help => Ok(help_result()),
        // Commands added later: echo their name.
        #[allow(unreachable_patterns)]
        other => Ok(json!({ "cmd": other.name() })),
    }
}

/// The reply the server must give to `line`.
fn model_reply(line: &[u8]) -> Reply {
    let (id, parsed) = parse_request(line);
    match parsed {
        Err(e) => Reply::error(id, e.kind(), e.to_string()),
        Ok(Request::Help) => Reply::ok(id, help_result()),
        Ok(req) => match handle(&req) {
            Ok(v) => Reply::ok(id, v),
            Err(e) => e.to_reply(id),
        },
    }
}

/// The replies the model expects for `data` sent then the write side closed, and
/// whether the server must close the connection early (a too-long line).
fn model(data: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            out.push(ApiError::from(ProtocolError::LineTooLong).to_reply(None));
            return out;
        }
        rest = next;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (_, parsed) = parse_request(line);
        match parsed {
            Ok(req) => {
                let (id2, again) = parse_request(req.to_line().as_bytes());
                assert!(
                    id2.is_none() && again.as_ref() == Ok(&req),
                    "{req:?} round trip"
                );
            }
            Err(e) => assert_ne!(e.kind(), ErrorKind::Internal),
        }
        out.push(model_reply(line));
    }
    out
}

/// The server every input goes to, started once per process: an input gets a
/// connection of its own, and the server keeps nothing across connections.
/// (Started per input, with its thread, it held the target to ~100 inputs/s.)
/// Its socket is in a scratch directory named after this process, removed when
/// the process exits (and swept by the next process making one, if this one was
/// killed).
static SERVER: OnceLock<(PathBuf, ApiServer)> = OnceLock::new();

fn server_path() -> &'static Path {
    &SERVER
        .get_or_init(|| {
            let dir = base::scratch::dir("swaplab-fuzz-api-")
                .expect("a scratch directory")
                .keep();
            // SAFETY: registers a plain function without arguments, which
            // libc runs once at exit.
            unsafe { libc::atexit(remove_server_dir) };
            let path = dir.join("api.sock");
            let server = ApiServer::start(&path, Arc::new(handle)).expect("control socket server");
            (path, server)
        })
        .0
}

/// At exit: removes the server's scratch directory.
extern "C" fn remove_server_dir() {
    if let Some(dir) = SERVER.get().and_then(|(path, _)| path.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Sends `input` on a fresh connection, shuts the sending side, and reads
/// until the server closes: everything it replied. One thread, non-blocking:
/// the server may reply (and fill the socket) before it has read everything,
/// and may close early (a too-long line), after which writing fails.
fn exchange(path: &Path, input: &[u8]) -> Vec<u8> {
    let conn = UnixStream::connect(path).expect("connect");
    conn.set_nonblocking(true).expect("non-blocking");
    let mut sent = 0;
    let mut sending = true;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // A deadlock guard only: the server answers at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if sending && sent == input.len() {
            let _ = conn.shutdown(Shutdown::Write);
            sending = false;
        }
        let events = if sending {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let mut fds = [PollFd::new(conn.as_fd(), events)];
        poll(&mut fds, PollTimeout::from(1000u16)).expect("poll");
        assert!(Instant::now() < deadline, "no end of replies within 30 s");
        let ready = fds[0].revents().unwrap_or(PollFlags::empty());
        if sending && ready.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP)
        {
            match (&conn).write(&input[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => sending = false,
            }
        }
        if ready.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP) {
            match (&conn).read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Reset by a server that closed with input unread.
                Err(_) => return got,
            }
        }
    }
}

/// The `api` fuzz target.
pub fn api(data: &[u8]) {
    let expected = model(data);
    let path = server_path();
    let got = exchange(path, data);
    let text = std::str::from_utf8(&got).expect("replies are UTF-8");
    let replies: Vec<Reply> = text
        .lines()
        .map(|l| Reply::from_line(l).unwrap_or_else(|e| panic!("bad reply line {l:?}: {e}")))
        .collect();
    assert!(
        got.is_empty() || got.ends_with(b"\n"),
        "a partial reply line"
    );
    assert_eq!(replies.len(), expected.len(), "one reply per request line");
    for (i, (g, w)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(g, w, "reply {i}");
    }
    // The server still serves others.
    let probe = b"{\"cmd\":\"vm.stats\",\"id\":1}";
    let mut line = probe.to_vec();
    line.push(b'\n');
    let s = String::from_utf8(exchange(path, &line)).expect("replies are UTF-8");
    assert_eq!(
        Reply::from_line(s.trim_end()).ok(),
        Some(model_reply(probe))
    );
}

/// Seeds: every command with and without ids and arguments, pipelined, with CRLF,
/// blank lines, a final line without newline, and the documented error cases.
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let lines: &[&str] = &[
        r#"{"cmd":"balloon.set","target":"256M","id":1}"#,
        r#"{"cmd":"balloon.set","target":4096}"#,
        r#"{"cmd":"balloon.set","target":"2T","id":"big"}"#,
        r#"{"cmd":"balloon.stats","id":null}"#,
        r#"{"cmd":"swapper.status","id":[1,{"a":2}]}"#,
        r#"{"cmd":"vm.stats","id":-3.5}"#,
        r#"{"cmd":"help"}"#,
        r#"{"cmd":"balloon.sett"}"#,
        r#"{"cmd":"balloon.set","target":"25X"}"#,
        r#"{"cmd":"balloon.set","target":-1}"#,
        r#"{"cmd":"balloon.set","target":1.5}"#,
        r#"{"cmd":"balloon.set"}"#,
        r#"{"cmd":"vm.stats","x":1}"#,
        r#"{"cmd": stats}"#,
        r#"{"cmd":7}"#,
        r#"["cmd","help"]"#,
        r#"{}"#,
        r#"{"id":5}"#,
    ];
    let mut out: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| format!("{l}\n").into_bytes())
        .collect();
    let mut all = Encoder::default();
    for l in lines {
        all.bytes(l.as_bytes()).bytes(b"\r\n\n   \n");
    }
    out.push(all.0);
    out.push(br#"{"cmd":"help","id":0}"#.to_vec());
    out.push(b"\xff\xfe{\n\t\n".to_vec());
    out
}
