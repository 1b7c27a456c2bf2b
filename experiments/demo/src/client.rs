//! The demo's control-socket client: a poller thread that asks the VM for
//! everything on the screen once per interval and runs the actions the UI
//! sends it, each exchange on a fresh connection that is closed right after.
//!
//! One connection per exchange, never held open: a held connection would take
//! one of the control socket's client slots (16, natively and through the
//! nested sandbox's forwarding) for as long as the demo runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm::api::{Reply, Request};

/// Longest reply line read (the VM's replies are far smaller).
const MAX_REPLY: u64 = 1 << 20;

/// Errors talking to the VM.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before every reply came.
    #[error("the VM closed the connection after {got} of {want} replies")]
    Short {
        /// Replies received.
        got: usize,
        /// Replies expected.
        want: usize,
    },
    /// A reply was not a reply.
    #[error("bad reply: {0}")]
    BadReply(String),
}

/// Sends `reqs` on one connection and reads their replies, in order.
pub fn exchange(
    sock: &Path,
    reqs: &[Request],
    timeout: Duration,
) -> Result<Vec<Reply>, ClientError> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut out = String::new();
    for r in reqs {
        out.push_str(&r.to_line());
        out.push('\n');
    }
    // The write side stays open until every reply is read: the sandbox's
    // forwarder may end a relayed connection at the client's EOF.
    s.write_all(out.as_bytes())?;
    let mut reader = BufReader::new(std::io::Read::take(s, MAX_REPLY * reqs.len() as u64));
    let mut replies = Vec::with_capacity(reqs.len());
    let mut line = String::new();
    while replies.len() < reqs.len() {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Short {
                got: replies.len(),
                want: reqs.len(),
            });
        }
        let reply = Reply::from_line(line.trim_end())
            .map_err(|e| ClientError::BadReply(format!("{e}: {:.120}", line.trim_end())))?;
        replies.push(reply);
    }
    Ok(replies)
}

/// What the poller tells the UI.
#[derive(Debug)]
pub enum Update {
    /// One poll's results (seconds since the poller started), in the order
    /// `balloon.stats`, `swapper.status`, `vm.stats`, `vm.recent`; an error
    /// reply is `Err(message)`.
    Poll {
        /// When, s.
        t_s: f64,
        /// The four results.
        results: Vec<Result<Value, String>>,
    },
    /// The VM could not be reached.
    Unreachable(String),
    /// An action's outcome: what was asked, and the error if it failed.
    Done {
        /// The command.
        what: String,
        /// The error message, if it failed.
        error: Option<String>,
    },
}

/// The requests of one poll.
pub fn poll_requests() -> [Request; 4] {
    [
        Request::BalloonStats,
        Request::SwapperStatus,
        Request::VmStats,
        Request::VmRecent,
    ]
}

/// Runs the poller until `actions` is closed; results go to `updates`.
pub fn run_poller(
    sock: PathBuf,
    interval: Duration,
    actions: Receiver<Request>,
    updates: Sender<Update>,
) {
    let started = Instant::now();
    let timeout = Duration::from_secs(5);
    let mut next_poll = Instant::now();
    loop {
        let wait = next_poll.saturating_duration_since(Instant::now());
        match actions.recv_timeout(wait) {
            Ok(req) => {
                let what = req.name().to_string();
                let error = match exchange(&sock, std::slice::from_ref(&req), timeout) {
                    Ok(r) => r[0].outcome.as_ref().err().map(|e| e.message.clone()),
                    Err(e) => Some(e.to_string()),
                };
                if updates.send(Update::Done { what, error }).is_err() {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        next_poll = Instant::now() + interval;
        let update = match exchange(&sock, &poll_requests(), timeout) {
            Ok(replies) => Update::Poll {
                t_s: started.elapsed().as_secs_f64(),
                results: replies
                    .into_iter()
                    .map(|r| r.outcome.map_err(|e| e.message))
                    .collect(),
            },
            Err(e) => Update::Unreachable(e.to_string()),
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use vmm::api::{ApiError, ApiServer};

    #[test]
    fn one_connection_carries_a_whole_poll() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let handler = |req: &Request| -> Result<Value, ApiError> {
            match req {
                Request::BalloonStats => Ok(json!({"actual_bytes": 1})),
                Request::SwapperStatus => Err(ApiError::Unavailable("no swapper".into())),
                _ => Ok(json!({"cmd": req.name()})),
            }
        };
        let _server = ApiServer::start(&sock, Arc::new(handler)).unwrap();
        let replies = exchange(&sock, &poll_requests(), Duration::from_secs(5)).unwrap();
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[0].outcome, Ok(json!({"actual_bytes": 1})));
        assert!(replies[1].outcome.is_err());
        assert_eq!(replies[3].outcome, Ok(json!({"cmd": "vm.recent"})));

        let (atx, arx) = std::sync::mpsc::channel();
        let (utx, urx) = std::sync::mpsc::channel();
        let poller = std::thread::spawn({
            let sock = sock.clone();
            move || run_poller(sock, Duration::from_millis(10), arx, utx)
        });
        atx.send(Request::GuestSend { line: "x".into() }).unwrap();
        let mut polls = 0;
        let mut done = None;
        while polls < 2 || done.is_none() {
            match urx.recv_timeout(Duration::from_secs(10)).unwrap() {
                Update::Poll { results, .. } => {
                    assert_eq!(results.len(), 4);
                    assert_eq!(results[1], Err("no swapper".into()));
                    polls += 1;
                }
                Update::Done { what, error } => done = Some((what, error)),
                Update::Unreachable(e) => panic!("{e}"),
            }
        }
        assert_eq!(done, Some(("guest.send".into(), None)));
        drop(atx);
        poller.join().unwrap();
    }

    #[test]
    fn nobody_listening_is_an_error() {
        let e = exchange(
            Path::new("/nonexistent/demo.sock"),
            &poll_requests(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Io(_)), "{e:?}");
    }
}
