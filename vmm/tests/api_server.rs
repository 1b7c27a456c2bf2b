//! The control-socket server over real Unix sockets, with test handlers.
//!
//! Synchronisation is by replies only: every test waits for a reply (or EOF) that proves
//! the server reached the state the next step needs. Read timeouts only turn a hang
//! (a bug) into a failure.

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use vmm::api::{ApiError, ApiHandler, ApiServer, Request, ServerLimits, MAX_LINE};

/// Long enough for a loaded 2-core machine; only a hang trips it.
const SAFETY: Duration = Duration::from_secs(60);

/// Records requests; balloon.set and vm.stats succeed, swapper.status is unavailable.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Request>>,
}

impl ApiHandler for Recorder {
    fn handle(&self, req: &Request) -> Result<Value, ApiError> {
        self.seen.lock().unwrap().push(req.clone());
        match req {
            Request::BalloonSet { target } => Ok(json!({ "target_bytes": target.bytes() })),
            Request::BalloonStats => Err(ApiError::BadArgument("not now".into())),
            Request::VmStats => Ok(json!({ "exits": 3 })),
            Request::SwapperStatus => Err(ApiError::Unavailable(
                "no swapper: guest RAM is not managed".into(),
            )),
            Request::Help => Err(ApiError::Internal("help reached the handler".into())),
            _ => Err(ApiError::Unavailable("not in this test".into())),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    recorder: Arc<Recorder>,
    server: Option<ApiServer>,
}

fn fixture_with(limits: ServerLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let recorder = Arc::new(Recorder::default());
    let server = ApiServer::start_with_limits(&path, recorder.clone(), limits).unwrap();
    Fixture {
        _dir: dir,
        path,
        recorder,
        server: Some(server),
    }
}

fn fixture() -> Fixture {
    fixture_with(ServerLimits::default())
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(SAFETY)).unwrap();
        s.set_write_timeout(Some(SAFETY)).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    fn recv_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a reply");
        assert!(n > 0, "server closed the connection instead of replying");
        assert!(line.ends_with('\n'), "{line:?}");
        line
    }

    fn recv(&mut self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.send("\n");
        self.recv()
    }

    /// The server closed the connection (EOF, or a reset after it closed).
    fn assert_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected data: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == IoKind::ConnectionReset => {}
            Err(e) => panic!("want EOF, got {e}"),
        }
    }
}

fn error_of(v: &Value) -> (&str, &str) {
    assert_eq!(v["ok"], false, "{v}");
    assert!(v.get("result").is_none(), "{v}");
    (
        v["error"]["kind"].as_str().unwrap(),
        v["error"]["message"].as_str().unwrap(),
    )
}

#[test]
fn request_reply_round_trip() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    let v = c.call(r#"{"cmd":"balloon.set","target":"256M","id":1}"#);
    assert_eq!(
        v,
        json!({"ok": true, "id": 1, "result": {"target_bytes": 268435456u64}})
    );
    let v = c.call(r#"{"id":"x","cmd":"balloon.set","target":4096}"#);
    assert_eq!(v["id"], "x");
    assert_eq!(v["result"]["target_bytes"], 4096);
    let v = c.call(r#"{"cmd":"vm.stats"}"#);
    assert_eq!(v, json!({"ok": true, "result": {"exits": 3}}));
    // Handler errors keep their kind and message.
    let v = c.call(r#"{"cmd":"swapper.status","id":[1,2]}"#);
    assert_eq!(v["id"], json!([1, 2]));
    assert_eq!(
        error_of(&v),
        ("unavailable", "no swapper: guest RAM is not managed")
    );
    assert_eq!(
        error_of(&c.call(r#"{"cmd":"balloon.stats"}"#)),
        ("bad_argument", "not now")
    );
    assert_eq!(
        *f.recorder.seen.lock().unwrap(),
        vec![
            Request::BalloonSet {
                target: vmm::api::Size(256 << 20)
            },
            Request::BalloonSet {
                target: vmm::api::Size(4096)
            },
            Request::VmStats,
            Request::SwapperStatus,
            Request::BalloonStats,
        ]
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    let batch: String = (0..200)
        .map(|i| format!("{{\"cmd\":\"balloon.set\",\"target\":{i},\"id\":{i}}}\n"))
        .collect();
    c.send(&batch);
    for i in 0..200u64 {
        let v = c.recv();
        assert_eq!(v["id"], i);
        assert_eq!(v["result"]["target_bytes"], i);
    }
}

#[test]
fn help_is_answered_by_the_server() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    let v = c.call(r#"{"cmd":"help","id":7}"#);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["id"], 7);
    let names: Vec<&str> = v["result"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cmd"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "balloon.set",
            "balloon.stats",
            "swapper.status",
            "swapper.set_limit",
            "vm.stats",
            "vm.recent",
            "guest.send",
            "help"
        ]
    );
    assert!(f.recorder.seen.lock().unwrap().is_empty());
}

#[test]
fn malformed_lines_get_a_parse_error_and_the_connection_stays_usable() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    let v = c.call(r#"{"cmd": help}"#);
    let (kind, msg) = error_of(&v);
    assert_eq!(kind, "parse");
    assert!(msg.starts_with("line is not JSON: "), "{msg}");
    assert!(msg.ends_with("at column 9"), "{msg}");
    let v = c.call("[1,2]");
    let (kind, msg) = error_of(&v);
    assert_eq!(kind, "parse");
    assert!(msg.contains("got an array"), "{msg}");
    assert_eq!(error_of(&c.call(r#"{"id":4}"#)).0, "parse");
    assert_eq!(c.call(r#"{"id":4}"#)["id"], 4);
    // Invalid UTF-8 is a parse error too, not a dropped connection.
    c.writer.write_all(b"{\"cmd\":\"\xff\xfe\"}\n").unwrap();
    assert_eq!(error_of(&c.recv()).0, "parse");
    // Blank lines are skipped, CRLF is accepted: one reply, for the request.
    c.send("\n  \n\r\n{\"cmd\":\"vm.stats\",\"id\":5}\r\n");
    let v = c.recv();
    assert_eq!(v["id"], 5);
    assert_eq!(v["ok"], true);
    assert_eq!(c.call(r#"{"cmd":"vm.stats","id":6}"#)["id"], 6);
}

#[test]
fn unknown_commands_and_fields_are_named() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    let v = c.call(r#"{"cmd":"balloon.sett","target":"1M","id":2}"#);
    assert_eq!(v["id"], 2);
    assert_eq!(
        error_of(&v),
        (
            "unknown_command",
            "unknown command \"balloon.sett\"; known: balloon.set, balloon.stats, \
             swapper.status, swapper.set_limit, vm.stats, vm.recent, guest.send, help"
        )
    );
    let v = c.call(r#"{"cmd":"balloon.set","target":"1M","size":1}"#);
    assert_eq!(
        error_of(&v),
        (
            "bad_argument",
            "unknown field \"size\" for balloon.set; it takes: target, id"
        )
    );
    let v = c.call(r#"{"cmd":"balloon.set"}"#);
    let (kind, msg) = error_of(&v);
    assert_eq!(kind, "bad_argument");
    assert!(msg.contains("needs \"target\""), "{msg}");
    assert!(f.recorder.seen.lock().unwrap().is_empty());
}

#[test]
fn bad_sizes_are_bad_arguments() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    for (target, needle) in [
        (r#""25X""#, r#"bad size "25X": unknown unit "X""#),
        ("-1", "must not be negative"),
        ("2.5", "whole number"),
        (r#""lots""#, r#"bad size "lots""#),
    ] {
        let v = c.call(&format!(r#"{{"cmd":"balloon.set","target":{target}}}"#));
        let (kind, msg) = error_of(&v);
        assert_eq!(kind, "bad_argument", "{v}");
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    assert!(f.recorder.seen.lock().unwrap().is_empty());
}

#[test]
fn a_panicking_handler_gives_an_internal_error_and_the_server_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let handler = |req: &Request| -> Result<Value, ApiError> {
        match req {
            Request::VmStats => panic!("handler bug"),
            _ => Ok(json!("fine")),
        }
    };
    let _server = ApiServer::start(&path, Arc::new(handler)).unwrap();
    let mut c = Conn::open(&path);
    let v = c.call(r#"{"cmd":"vm.stats","id":1}"#);
    assert_eq!(v["id"], 1);
    assert_eq!(
        error_of(&v),
        ("internal", "vm.stats failed: the handler panicked")
    );
    assert_eq!(c.call(r#"{"cmd":"balloon.stats"}"#)["result"], "fine");
    assert_eq!(
        Conn::open(&path).call(r#"{"cmd":"balloon.stats"}"#)["ok"],
        true
    );
}

#[test]
fn a_too_long_line_gets_an_error_and_the_connection_is_closed() {
    let f = fixture();
    // Exactly 64 KiB is still a line.
    let mut c = Conn::open(&f.path);
    let mut line = r#"{"cmd":"vm.stats","id":1}"#.to_string();
    line.push_str(&" ".repeat(MAX_LINE - line.len()));
    assert_eq!(c.call(&line)["id"], 1);
    // One byte more is not, with or without its newline arriving.
    for with_newline in [true, false] {
        let mut c = Conn::open(&f.path);
        let mut long = "x".repeat(MAX_LINE + 2);
        if with_newline {
            long.push('\n');
        }
        // The server may close while we write: ignore EPIPE.
        let _ = c.writer.write_all(long.as_bytes());
        let v = c.recv();
        assert_eq!(error_of(&v), ("parse", "line longer than 64 KiB"));
        c.assert_closed();
    }
    // Other clients are unaffected.
    assert_eq!(c.call(r#"{"cmd":"vm.stats","id":2}"#)["id"], 2);
}

#[test]
fn many_concurrent_clients() {
    let f = fixture();
    const CLIENTS: usize = 12;
    const REQUESTS: usize = 50;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let path = f.path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(&path);
                barrier.wait();
                for i in 0..REQUESTS {
                    let target = t * 1000 + i;
                    let v = c.call(&format!(
                        r#"{{"cmd":"balloon.set","target":{target},"id":"{t}-{i}"}}"#
                    ));
                    assert_eq!(v["id"], format!("{t}-{i}"));
                    assert_eq!(v["result"]["target_bytes"], target);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(f.recorder.seen.lock().unwrap().len(), CLIENTS * REQUESTS);
}

#[test]
fn a_client_stuck_halfway_through_a_line_does_not_block_others() {
    let f = fixture();
    let mut stuck = Conn::open(&f.path);
    stuck.send(r#"{"cmd":"vm.st"#);
    let mut other = Conn::open(&f.path);
    assert_eq!(other.call(r#"{"cmd":"vm.stats","id":1}"#)["id"], 1);
    // A client that leaves halfway through a line costs nothing either.
    let gone = Conn::open(&f.path);
    drop(gone);
    assert_eq!(other.call(r#"{"cmd":"vm.stats","id":2}"#)["id"], 2);
    // The stuck client's line completes later and is answered.
    assert_eq!(stuck.call(r#"ats","id":3}"#)["id"], 3);
}

#[test]
fn a_client_that_never_reads_does_not_block_others() {
    let f = fixture_with(ServerLimits {
        max_clients: 4,
        max_pending_output: 4096,
    });
    let mut greedy = Conn::open(&f.path);
    greedy.writer.set_nonblocking(true).unwrap();
    const LINE: &str = "{\"cmd\":\"vm.stats\"}\n";
    let chunk = LINE.repeat(256);
    // Write requests without reading replies until the server stops reading them.
    let mut written = 0usize;
    let tail = loop {
        assert!(written < 64 << 20, "the server never stopped reading");
        let start = written % chunk.len();
        match greedy.writer.write(&chunk.as_bytes()[start..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == IoKind::WouldBlock => break written % LINE.len(),
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert!(written > 64 * 1024, "only {written} bytes before blocking");
    // Someone else is served meanwhile.
    let mut other = Conn::open(&f.path);
    assert_eq!(other.call(r#"{"cmd":"vm.stats","id":1}"#)["id"], 1);
    // Every request of the greedy client is answered once it reads.
    greedy.writer.set_nonblocking(false).unwrap();
    let mut reader = greedy.reader;
    let counter = std::thread::spawn(move || {
        let mut n = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                return n;
            }
            assert_eq!(line, "{\"ok\":true,\"result\":{\"exits\":3}}\n");
            n += 1;
        }
    });
    if tail > 0 {
        greedy.writer.write_all(&LINE.as_bytes()[tail..]).unwrap();
        written += LINE.len() - tail;
    }
    greedy.writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(counter.join().unwrap(), written / LINE.len());
}

#[test]
fn a_last_line_without_newline_is_answered_at_eof() {
    let f = fixture();
    let mut c = Conn::open(&f.path);
    c.send(r#"{"cmd":"vm.stats","id":1}"#);
    c.writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.recv()["id"], 1);
    c.assert_closed();
}

#[test]
fn clients_over_the_limit_are_told_and_closed() {
    let f = fixture_with(ServerLimits {
        max_clients: 2,
        ..ServerLimits::default()
    });
    let mut a = Conn::open(&f.path);
    let mut b = Conn::open(&f.path);
    // Both are registered once they have been answered.
    assert_eq!(a.call(r#"{"cmd":"vm.stats"}"#)["ok"], true);
    assert_eq!(b.call(r#"{"cmd":"vm.stats"}"#)["ok"], true);
    let mut c = Conn::open(&f.path);
    let v = c.recv();
    let (kind, msg) = error_of(&v);
    assert_eq!(kind, "unavailable");
    assert!(msg.contains("too many"), "{msg}");
    c.assert_closed();
    assert_eq!(a.call(r#"{"cmd":"vm.stats","id":9}"#)["id"], 9);
}

#[test]
fn stop_closes_clients_and_removes_the_socket() {
    let mut f = fixture();
    let mut c = Conn::open(&f.path);
    assert_eq!(c.call(r#"{"cmd":"vm.stats"}"#)["ok"], true);
    let mut idle = Conn::open(&f.path);
    idle.send(r#"{"cmd":"#);
    let server = f.server.take().unwrap();
    assert_eq!(server.path(), f.path);
    server.stop();
    assert!(!f.path.exists());
    c.assert_closed();
    idle.assert_closed();
    let e = UnixStream::connect(&f.path).unwrap_err();
    assert_eq!(e.kind(), IoKind::NotFound);
}

#[test]
fn drop_removes_the_socket_but_not_a_file_that_replaced_it() {
    let mut f = fixture();
    assert!(f.path.exists());
    drop(f.server.take());
    assert!(!f.path.exists());

    // Someone replaced our socket with their own file: stop leaves it alone.
    let server = ApiServer::start(&f.path, f.recorder.clone()).unwrap();
    std::fs::remove_file(&f.path).unwrap();
    std::fs::write(&f.path, "theirs").unwrap();
    drop(server);
    assert_eq!(std::fs::read_to_string(&f.path).unwrap(), "theirs");
}

#[test]
fn the_socket_is_private_to_its_owner() {
    let f = fixture();
    let mode = std::fs::metadata(&f.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn refuses_to_clobber_anything_but_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let handler: Arc<dyn ApiHandler> = Arc::new(Recorder::default());

    let file = dir.path().join("file");
    std::fs::write(&file, "precious").unwrap();
    let e = ApiServer::start(&file, handler.clone()).unwrap_err();
    assert!(matches!(e, ApiError::NotASocket(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "refusing to replace {}: it exists and is not a socket",
            file.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let subdir = dir.path().join("dir");
    std::fs::create_dir(&subdir).unwrap();
    let e = ApiServer::start(&subdir, handler.clone()).unwrap_err();
    assert!(matches!(e, ApiError::NotASocket(_)), "{e:?}");

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let e = ApiServer::start(&link, handler.clone()).unwrap_err();
    assert!(matches!(e, ApiError::NotASocket(_)), "{e:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let missing = dir.path().join("no/such/dir/api.sock");
    let e = ApiServer::start(&missing, handler).unwrap_err();
    assert!(matches!(e, ApiError::Socket { op: "bind", .. }), "{e:?}");
    assert!(e.to_string().contains("no/such/dir/api.sock"), "{e}");
}

#[test]
fn replaces_a_stale_socket_but_not_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    // A socket file left behind by a process that is gone.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let first = ApiServer::start(&path, Arc::new(Recorder::default())).unwrap();
    assert_eq!(Conn::open(&path).call(r#"{"cmd":"vm.stats"}"#)["ok"], true);

    let e = ApiServer::start(&path, Arc::new(Recorder::default())).unwrap_err();
    assert!(matches!(e, ApiError::InUse(_)), "{e:?}");
    assert!(e.to_string().contains("in use"), "{e}");
    // The live server still answers.
    assert_eq!(
        Conn::open(&path).call(r#"{"cmd":"vm.stats","id":1}"#)["id"],
        1
    );
    drop(first);
    assert!(!path.exists());
}

/// With `SWAPLAB_SECCOMP_PROBE=api` the control socket thread makes a syscall its seccomp filter
/// forbids right after installing it: the process ends with status 159 and one
/// line naming the thread and the syscall.
#[test]
fn seccomp_probe_stops_the_process_naming_the_thread() {
    seccomp::assert_probe_stops(
        "request_reply_round_trip",
        seccomp::ThreadClass::ControlSocket,
        "api-server",
    );
}
