//! The balloons `swaplab bench balloon` drives, over one Unix socket each:
//! swaplab's control socket (`balloon.set`, `balloon.stats`' `actual_bytes`) and
//! QEMU's QMP (`balloon` with the logical RAM size, `query-balloon`'s `actual`),
//! and the measurement: from the request to the first poll that sees the
//! guest's `actual` at the target.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::qemu;
use serde_json::{json, Value};
use vmm::api::{Reply, Request, Size};

/// Errors driving one VM's balloon.
#[derive(Debug, thiserror::Error)]
pub enum BalloonBenchError {
    /// The VMM could not start.
    #[error(transparent)]
    Spawn(#[from] qemu::QemuRunError),
    /// Socket I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// Which exchange.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A reply was not what the protocol says.
    #[error("{0}")]
    Protocol(String),
    /// Something did not happen in time.
    #[error("{what} did not happen within {secs} s{}", tail(.output))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        secs: u64,
        /// The end of the VM's output.
        output: Vec<String>,
    },
    /// The VM ended before the measurement did.
    #[error("the VM ended before {what}{}", tail(.output))]
    Ended {
        /// What was awaited.
        what: String,
        /// The end of the VM's output.
        output: Vec<String>,
    },
}

pub(super) fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(8);
    format!("; its output ended with: {}", lines[start..].join(" / "))
}

/// Limit on one socket exchange.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One JSON object per line over a Unix socket (the control socket, QMP).
pub(super) struct JsonLines {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    what: &'static str,
}

impl JsonLines {
    /// Connects to `path`, retrying until it listens or `limit` passes.
    pub(super) fn connect(
        path: &Path,
        what: &'static str,
        limit: Duration,
    ) -> Result<Self, BalloonBenchError> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(source) => {
                    return Err(BalloonBenchError::Io {
                        what: format!("connecting to {what} at {}", path.display()),
                        source,
                    })
                }
            }
        };
        let io = |source| BalloonBenchError::Io {
            what: format!("setting up {what}"),
            source,
        };
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Self {
            writer: stream,
            reader,
            what,
        })
    }

    fn io(&self, op: &str) -> impl FnOnce(std::io::Error) -> BalloonBenchError {
        let what = format!("{} {op}", self.what);
        move |source| BalloonBenchError::Io { what, source }
    }

    fn send(&mut self, line: &str) -> Result<(), BalloonBenchError> {
        let mut l = line.to_string();
        l.push('\n');
        let e = self.io("write");
        self.writer.write_all(l.as_bytes()).map_err(e)
    }

    /// The next line that is not a QMP event.
    fn recv(&mut self) -> Result<Value, BalloonBenchError> {
        loop {
            let mut line = String::new();
            let e = self.io("read");
            if self.reader.read_line(&mut line).map_err(e)? == 0 {
                return Err(BalloonBenchError::Protocol(format!(
                    "{} closed the connection",
                    self.what
                )));
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| {
                BalloonBenchError::Protocol(format!("{}: {e} in {line:?}", self.what))
            })?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }
}

/// A balloon to drive: set its size, read the size the guest reports.
pub(super) trait Driver {
    /// Asks for a balloon of `bytes`.
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError>;
    /// The balloon's size the guest reports, bytes.
    fn actual(&mut self) -> Result<u64, BalloonBenchError>;
}

/// swaplab's control socket.
pub(super) struct ControlSocket(pub(super) JsonLines);

impl ControlSocket {
    fn call(&mut self, req: &Request) -> Result<Value, BalloonBenchError> {
        self.0.send(&req.to_line())?;
        let v = self.0.recv()?;
        let reply = Reply::from_line(&v.to_string())
            .map_err(|e| BalloonBenchError::Protocol(format!("control socket: {e}")))?;
        if !reply.is_ok() {
            return Err(BalloonBenchError::Protocol(format!(
                "control socket: {} answered {v}",
                req.name()
            )));
        }
        Ok(v["result"].clone())
    }
}

impl Driver for ControlSocket {
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
        self.call(&Request::BalloonSet {
            target: Size(bytes),
        })
        .map(drop)
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        let r = self.call(&Request::BalloonStats)?;
        r["actual_bytes"].as_u64().ok_or_else(|| {
            BalloonBenchError::Protocol(format!("balloon.stats has no actual_bytes: {r}"))
        })
    }
}

/// QEMU's QMP socket.
pub(super) struct Qmp {
    lines: JsonLines,
    /// Guest RAM: QMP speaks of the logical RAM size, RAM minus the balloon.
    mem: u64,
}

impl Qmp {
    pub(super) fn open(path: &Path, mem: u64, limit: Duration) -> Result<Self, BalloonBenchError> {
        let mut q = Qmp {
            lines: JsonLines::connect(path, "QMP", limit)?,
            mem,
        };
        let greeting = q.lines.recv()?;
        if greeting.get("QMP").is_none() {
            return Err(BalloonBenchError::Protocol(format!(
                "QMP greeting expected, got {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    pub(super) fn execute(
        &mut self,
        cmd: &str,
        arguments: Option<Value>,
    ) -> Result<Value, BalloonBenchError> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        self.lines.send(&msg.to_string())?;
        let v = self.lines.recv()?;
        v.get("return")
            .cloned()
            .ok_or_else(|| BalloonBenchError::Protocol(format!("QMP {cmd} answered {v}")))
    }
}

impl Driver for Qmp {
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
        let value = self.mem.saturating_sub(bytes);
        self.execute("balloon", Some(json!({ "value": value })))
            .map(drop)
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        let r = self.execute("query-balloon", None)?;
        let logical = r["actual"].as_u64().ok_or_else(|| {
            BalloonBenchError::Protocol(format!("query-balloon has no actual: {r}"))
        })?;
        Ok(self.mem.saturating_sub(logical))
    }
}

/// Time from asking for `bytes` to the guest reporting it.
pub(super) fn measure(
    d: &mut dyn Driver,
    bytes: u64,
    poll: Duration,
    limit: Duration,
) -> Result<Duration, BalloonBenchError> {
    let t0 = Instant::now();
    d.set(bytes)?;
    loop {
        if d.actual()? == bytes {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(BalloonBenchError::Timeout {
                what: format!("the balloon reaching {} MiB", bytes >> 20),
                secs: limit.as_secs(),
                output: Vec::new(),
            });
        }
        std::thread::sleep(poll);
    }
}

/// Stands in until the VM is ready.
pub(super) struct NoDriver;

impl Driver for NoDriver {
    fn set(&mut self, _: u64) -> Result<(), BalloonBenchError> {
        Err(BalloonBenchError::Protocol("no balloon yet".into()))
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        Err(BalloonBenchError::Protocol("no balloon yet".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A balloon that reaches its target after a few polls.
    struct Fake {
        target: u64,
        actual: u64,
        polls: u32,
    }

    impl Driver for Fake {
        fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
            self.target = bytes;
            Ok(())
        }

        fn actual(&mut self) -> Result<u64, BalloonBenchError> {
            self.polls += 1;
            if self.polls % 3 == 0 {
                self.actual = self.target;
            }
            Ok(self.actual)
        }
    }

    #[test]
    fn measure_polls_until_actual_is_the_target() {
        let mut f = Fake {
            target: 0,
            actual: 0,
            polls: 0,
        };
        measure(
            &mut f,
            256 << 20,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!((f.actual, f.polls), (256 << 20, 3));
        measure(&mut f, 0, Duration::from_millis(1), Duration::from_secs(60)).unwrap();
        assert_eq!((f.actual, f.polls), (0, 6));
    }

    /// A balloon that never moves.
    struct Stuck;

    impl Driver for Stuck {
        fn set(&mut self, _: u64) -> Result<(), BalloonBenchError> {
            Ok(())
        }

        fn actual(&mut self) -> Result<u64, BalloonBenchError> {
            Ok(1)
        }
    }

    #[test]
    fn measure_gives_up_at_its_limit() {
        let e = measure(&mut Stuck, 2, Duration::from_millis(1), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("did not happen"), "{e}");
    }
}
