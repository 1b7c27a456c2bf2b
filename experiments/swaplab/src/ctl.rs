//! `swaplab ctl`: the client of a VM's control socket (protocol: [`vmm::api`]).
//!
//! [`request`] sends one request line and waits for its reply; the CLI maps command
//! words (`balloon set 256M`, `vm stats`, …) to a [`Request`] with [`parse_command`].

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmm::api::{Reply, Request, Size};

use base::ByteSize;
use runner::cli::usage;

/// The longest reply line [`request`] accepts.
pub const MAX_REPLY: usize = 16 << 20;

/// Arguments of `swaplab ctl`.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The VM's control socket (required).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
    /// Send this JSON line as it is instead of a command.
    #[arg(long, value_name = "JSON")]
    pub raw: Option<String>,
    /// Pretty-print the reply.
    #[arg(long)]
    pub pretty: bool,
    /// Seconds to wait for the reply.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// `balloon set SIZE`, `balloon stats`, `swapper status`, `swapper limit SIZE`,
    /// `vm stats`, `vm recent`, `guest send LINE` or `help`.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What [`request`] sends: a request, or a raw line (sent as it is, for testing servers).
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// A well-formed request.
    Request(&'a Request),
    /// One line of text, without its newline.
    Raw(&'a str),
}

impl<'a> From<&'a Request> for Message<'a> {
    fn from(r: &'a Request) -> Self {
        Message::Request(r)
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(s: &'a str) -> Self {
        Message::Raw(s)
    }
}

/// Why a control-socket exchange failed (a reply with `"ok":false` is not a failure here).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No socket at the path, or nobody listening on it.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No (complete) reply within the timeout.
    #[error("no reply from {} within {} s", path.display(), timeout.as_secs_f64())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// Sending or receiving failed.
    #[error("control socket {} failed while {op}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// `sending the request` or `reading the reply`.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection before a whole reply line.
    #[error("{} closed the connection without replying", path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The reply line exceeds [`MAX_REPLY`].
    #[error("the reply from {} is longer than {} MiB", path.display(), MAX_REPLY >> 20)]
    ReplyTooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// The reply line is not a protocol reply.
    #[error("{} sent something that is not a reply: {line:?}", path.display())]
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// The start of the line.
        line: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A raw message that is not one line.
    #[error("a raw request must be one line without newlines")]
    NotOneLine,
}

/// Send one message to the control socket at `path` and wait up to `timeout` for the reply.
pub fn request<'a>(
    path: &Path,
    msg: impl Into<Message<'a>>,
    timeout: Duration,
) -> Result<Reply, CtlError> {
    let mut line = match msg.into() {
        Message::Request(r) => r.to_line(),
        Message::Raw(s) if s.contains('\n') => return Err(CtlError::NotOneLine),
        Message::Raw(s) => s.to_string(),
    };
    line.push('\n');
    let deadline = Instant::now() + timeout;
    let timed_out = || CtlError::Timeout {
        path: path.to_owned(),
        timeout,
    };
    let io_err = |op: &'static str| {
        move |source: io::Error| match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            _ => CtlError::Io {
                path: path.to_owned(),
                op,
                source,
            },
        }
    };
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)
    };

    let mut stream = UnixStream::connect(path).map_err(|source| CtlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(io_err("sending the request"))?;
    // A server that rejects a request before reading all of it (a line over its limit)
    // replies and closes: read that reply rather than report the broken pipe.
    let send_failed = match stream.write_all(line.as_bytes()) {
        Ok(()) => None,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Some(e)
        }
        Err(e) => return Err(io_err("sending the request")(e)),
    };
    let no_reply = |e: Option<io::Error>| match send_failed {
        Some(s) => io_err("sending the request")(s),
        None => match e {
            Some(e) => io_err("reading the reply")(e),
            None => CtlError::Closed {
                path: path.to_owned(),
            },
        },
    };

    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(io_err("reading the reply"))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(no_reply(None)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(no_reply(Some(e))),
        };
        let old = reply.len();
        reply.extend_from_slice(&buf[..n]);
        if let Some(nl) = reply[old..].iter().position(|&b| b == b'\n') {
            reply.truncate(old + nl);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(CtlError::ReplyTooLong {
                path: path.to_owned(),
            });
        }
    }
    let text = String::from_utf8_lossy(&reply);
    Reply::from_line(&text).map_err(|source| CtlError::BadReply {
        path: path.to_owned(),
        line: text.chars().take(200).collect(),
        source,
    })
}

const KNOWN: &str = "balloon set SIZE, balloon stats, swapper status, swapper limit SIZE, vm stats, vm recent, guest send LINE, help";

/// Map command words (`balloon set 256M`) to a request; the error is a usage message.
pub fn parse_command(words: &[String]) -> Result<Request, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["balloon", "set", size] => size
            .parse::<ByteSize>()
            .map(|s| Request::BalloonSet {
                target: Size(s.bytes()),
            })
            .map_err(|e| format!("bad balloon size: {e}")),
        ["balloon", "set"] => Err("balloon set needs a SIZE (e.g. 256M, 1G, 4096)".into()),
        ["balloon", "stats"] => Ok(Request::BalloonStats),
        ["swapper", "status"] => Ok(Request::SwapperStatus),
        ["swapper", "limit", size] => size
            .parse::<ByteSize>()
            .map(|s| Request::SwapperSetLimit {
                limit: Size(s.bytes()),
            })
            .map_err(|e| format!("bad limit: {e}")),
        ["vm", "stats"] => Ok(Request::VmStats),
        ["vm", "recent"] => Ok(Request::VmRecent),
        ["guest", "send", line @ ..] if !line.is_empty() => Ok(Request::GuestSend {
            line: line.join(" "),
        }),
        ["help"] => Ok(Request::Help),
        [] => Err(format!("ctl needs a command ({KNOWN}) or --raw JSON")),
        _ => Err(format!(
            "unknown ctl command '{}'; known: {KNOWN}",
            words.join(" ")
        )),
    }
}

fn exchange(args: &CtlArgs) -> anyhow::Result<Reply> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            usage(format!(
                "--timeout {} is not a positive number of seconds",
                args.timeout
            ))
        })?;
    // Checked here, not by clap, so the message fits on one line.
    let sock = args
        .sock
        .as_deref()
        .ok_or_else(|| usage("ctl needs --sock PATH (the VM's control socket)"))?;
    let reply = match (&args.raw, args.command.is_empty()) {
        (Some(_), false) => return Err(usage("give either a command or --raw, not both")),
        (Some(raw), true) => {
            if raw.contains('\n') || raw.trim().is_empty() {
                return Err(usage("--raw takes one non-empty line of JSON"));
            }
            request(sock, raw.as_str(), timeout)?
        }
        (None, _) => {
            let req = parse_command(&args.command).map_err(usage)?;
            request(sock, &req, timeout)?
        }
    };
    Ok(reply)
}

/// Run `swaplab ctl`: print the reply; exit 0 if it is ok, 1 if it is an error or no reply
/// came, 2 on a usage error.
pub fn main(args: &CtlArgs) -> ExitCode {
    let reply = match exchange(args) {
        Ok(r) => r,
        Err(e) => return runner::cli::finish(Err(e)),
    };
    let text = if args.pretty {
        reply.to_pretty()
    } else {
        reply.to_line()
    };
    if let Err(e) = runner::cli::print_out(&format!("{text}\n")) {
        return runner::cli::finish(Err(e));
    }
    match &reply.outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swaplab: {}: {}", e.kind, e.message);
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_words_map_to_requests() {
        assert_eq!(
            parse_command(&words("balloon set 256M")),
            Ok(Request::BalloonSet {
                target: Size(256 << 20)
            })
        );
        assert_eq!(
            parse_command(&words("balloon set 0")),
            Ok(Request::BalloonSet { target: Size(0) })
        );
        assert_eq!(
            parse_command(&words("balloon stats")),
            Ok(Request::BalloonStats)
        );
        assert_eq!(
            parse_command(&words("swapper status")),
            Ok(Request::SwapperStatus)
        );
        assert_eq!(parse_command(&words("vm stats")), Ok(Request::VmStats));
        assert_eq!(parse_command(&words("vm recent")), Ok(Request::VmRecent));
        assert_eq!(
            parse_command(&words("swapper limit 96M")),
            Ok(Request::SwapperSetLimit {
                limit: Size(96 << 20)
            })
        );
        assert_eq!(
            parse_command(&words("guest send start 64")),
            Ok(Request::GuestSend {
                line: "start 64".into()
            })
        );
        assert!(parse_command(&words("guest send")).is_err());
        assert_eq!(parse_command(&words("help")), Ok(Request::Help));
    }

    #[test]
    fn bad_words_say_what_is_known() {
        let e = parse_command(&words("balloon sett 1G")).unwrap_err();
        assert!(
            e.starts_with("unknown ctl command 'balloon sett 1G'; known: balloon set SIZE"),
            "{e}"
        );
        assert!(parse_command(&words("balloon set"))
            .unwrap_err()
            .contains("needs a SIZE"));
        assert!(parse_command(&words("balloon set 12X"))
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_command(&[]).unwrap_err().contains("--raw"));
        assert!(parse_command(&words("vm stats now")).is_err());
    }

    #[test]
    fn a_raw_message_must_be_one_line() {
        let e = request(
            Path::new("/nonexistent/sock"),
            "{}\n{}",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, CtlError::NotOneLine), "{e:?}");
    }
}
