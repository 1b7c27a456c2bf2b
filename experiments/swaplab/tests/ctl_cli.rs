//! `swaplab ctl` against a real control-socket server started in the test.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::swaplab;
use serde_json::{json, Value};
use swaplab::ctl::{self, CtlError};
use vmm::api::{ApiError, ApiHandler, ApiServer, Request, Size};

/// Records requests; balloon requests succeed, the others fail in two different ways.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Request>>,
}

impl ApiHandler for Recorder {
    fn handle(&self, req: &Request) -> Result<Value, ApiError> {
        self.seen.lock().unwrap().push(req.clone());
        match req {
            Request::BalloonSet { target } => Ok(json!({ "target_bytes": target.bytes() })),
            Request::BalloonStats => Ok(json!({ "actual_bytes": 0, "target_bytes": 0 })),
            Request::SwapperStatus => Err(ApiError::Unavailable(
                "no swapper: guest RAM is not managed".into(),
            )),
            Request::VmStats => Err(ApiError::Internal("stats fd closed".into())),
            Request::Help => unreachable!("the server answers help"),
            _ => Err(ApiError::Unavailable("not in this test".into())),
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    recorder: Arc<Recorder>,
    _server: ApiServer,
}

fn fixture() -> Fixture {
    let dir = common::temp_dir("ctl");
    let path = dir.path().join("vm.sock");
    let recorder = Arc::new(Recorder::default());
    let server = ApiServer::start(&path, recorder.clone()).unwrap();
    Fixture {
        dir,
        path,
        recorder,
        _server: server,
    }
}

fn ctl(sock: &Path, args: &[&str]) -> Output {
    let sock = sock.to_str().unwrap();
    let mut all = vec!["ctl", "--sock", sock];
    all.extend_from_slice(args);
    swaplab(&all)
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn assert_clean_stderr(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

/// A usage error: exit 2, one line on stderr naming the problem, nothing on stdout.
fn assert_usage(sock: &Path, args: &[&str], needle: &str) {
    let out = ctl(sock, args);
    let stderr = assert_clean_stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} lacks {needle:?}",
        lines[0]
    );
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
}

#[test]
fn balloon_set_round_trip() {
    let f = fixture();
    let out = ctl(&f.path, &["balloon", "set", "256M"]);
    assert_clean_stderr(&out);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text, "{\"ok\":true,\"result\":{\"target_bytes\":268435456}}\n",
        "one line by default"
    );
    assert_eq!(
        *f.recorder.seen.lock().unwrap(),
        [Request::BalloonSet {
            target: Size(256 << 20)
        }]
    );
}

#[test]
fn every_command_word_reaches_the_server() {
    let f = fixture();
    let out = ctl(&f.path, &["balloon", "stats"]);
    assert!(out.status.success());
    assert_eq!(stdout_json(&out)["result"]["actual_bytes"], 0);
    let out = ctl(&f.path, &["help"]);
    assert!(out.status.success());
    assert_eq!(
        stdout_json(&out)["result"]["commands"][0]["cmd"],
        "balloon.set"
    );
    assert_eq!(ctl(&f.path, &["swapper", "status"]).status.code(), Some(1));
    assert_eq!(ctl(&f.path, &["vm", "stats"]).status.code(), Some(1));
    assert_eq!(
        *f.recorder.seen.lock().unwrap(),
        [
            Request::BalloonStats,
            Request::SwapperStatus,
            Request::VmStats
        ]
    );
}

#[test]
fn pretty_prints_over_several_lines() {
    let f = fixture();
    let out = ctl(&f.path, &["--pretty", "balloon", "set", "1G"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() > 3, "{text}");
    assert_eq!(stdout_json(&out)["result"]["target_bytes"], 1u64 << 30);
}

#[test]
fn raw_lines_are_sent_as_they_are() {
    let f = fixture();
    let out = ctl(
        &f.path,
        &["--raw", r#"{"cmd":"balloon.set","target":"2M","id":"r1"}"#],
    );
    assert!(out.status.success(), "{}", assert_clean_stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["id"], "r1");
    assert_eq!(v["result"]["target_bytes"], 2 << 20);

    let out = ctl(&f.path, &["--raw", r#"{"cmd": oops}"#]);
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["error"]["kind"], "parse");
    let stderr = assert_clean_stderr(&out);
    assert!(
        stderr.contains("swaplab: parse: line is not JSON"),
        "{stderr}"
    );
}

#[test]
fn a_raw_line_over_the_limit_gets_the_servers_reply() {
    let f = fixture();
    let long = format!(r#"{{"cmd":"help","pad":"{}"}}"#, "x".repeat(100_000));
    let out = ctl(&f.path, &["--raw", &long]);
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["error"]["message"], "line longer than 64 KiB");
    assert_eq!(
        assert_clean_stderr(&out),
        "swaplab: parse: line longer than 64 KiB\n"
    );
}

#[test]
fn an_error_reply_exits_1_with_the_message_on_stderr() {
    let f = fixture();
    let out = ctl(&f.path, &["swapper", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "unavailable");
    let stderr = assert_clean_stderr(&out);
    assert_eq!(
        stderr,
        "swaplab: unavailable: no swapper: guest RAM is not managed\n"
    );
}

#[test]
fn no_socket_or_no_listener_is_a_clear_error() {
    let dir = common::temp_dir("ctl-none");
    let missing = dir.path().join("missing.sock");
    let out = ctl(&missing, &["vm", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = assert_clean_stderr(&out);
    assert!(
        stderr.starts_with(&format!(
            "swaplab: cannot connect to {}: ",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // A socket file left behind, nobody listening.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let out = ctl(&stale, &["vm", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = assert_clean_stderr(&out);
    assert!(
        stderr.contains(&format!("cannot connect to {}: ", stale.display()))
            && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_never_replies_times_out() {
    let dir = common::temp_dir("ctl-mute");
    let path = dir.path().join("mute.sock");
    // Listening (connections queue in the backlog) but never accepting.
    let _listener = UnixListener::bind(&path).unwrap();
    let out = ctl(&path, &["--timeout", "0.3", "vm", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = assert_clean_stderr(&out);
    assert_eq!(
        stderr,
        format!("swaplab: no reply from {} within 0.3 s\n", path.display())
    );
    let e = ctl::request(&path, &Request::Help, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, CtlError::Timeout { .. }), "{e:?}");
}

#[test]
fn usage_errors_exit_2() {
    let f = fixture();
    let p = &f.path;
    assert_usage(
        p,
        &["balloon", "sett", "1G"],
        "unknown ctl command 'balloon sett 1G'",
    );
    assert_usage(p, &["balloon", "set"], "needs a SIZE");
    assert_usage(p, &["balloon", "set", "12X"], "bad balloon size");
    assert_usage(p, &[], "ctl needs a command");
    assert_usage(
        p,
        &["--raw", r#"{"cmd":"help"}"#, "vm", "stats"],
        "either a command or --raw",
    );
    assert_usage(p, &["--raw", "  "], "--raw takes one non-empty line");
    assert_usage(p, &["--raw", "{}\n{}"], "--raw takes one non-empty line");
    assert_usage(
        p,
        &["--timeout", "0", "help"],
        "--timeout 0 is not a positive",
    );
    assert_usage(p, &["--timeout", "-1", "help"], "--timeout");
    assert_usage(p, &["--timeout", "soon", "help"], "soon");
    // --sock is required.
    let out = swaplab(&["ctl", "help"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "swaplab: ctl needs --sock PATH (the VM's control socket)\n"
    );
    // Nothing reached the server.
    assert!(f.recorder.seen.lock().unwrap().is_empty());
    assert!(f.dir.path().join("vm.sock").exists());
}

#[test]
fn the_library_call_is_reusable() {
    let f = fixture();
    let t = Duration::from_secs(30);
    let r = ctl::request(&f.path, &Request::BalloonSet { target: Size(4096) }, t).unwrap();
    assert_eq!(r.outcome, Ok(json!({"target_bytes": 4096})));
    let r = ctl::request(&f.path, r#"{"cmd":"vm.stats","id":3}"#, t).unwrap();
    assert_eq!(r.id, Some(json!(3)));
    let e = r.outcome.unwrap_err();
    assert_eq!(e.kind, vmm::api::ErrorKind::Internal);
    assert_eq!(e.message, "stats fd closed");
    // More than the socket buffers hold: the server replies and closes while the client
    // is still writing, and the client still gets the reply.
    let huge = format!(r#"{{"cmd":"help","pad":"{}"}}"#, "x".repeat(8 << 20));
    let r = ctl::request(&f.path, huge.as_str(), t).unwrap();
    assert_eq!(r.outcome.unwrap_err().message, "line longer than 64 KiB");
}
