//! Resource bounds of the control socket: a client sending an endless line is
//! answered with an error and disconnected after at most `MAX_LINE` (+ one read)
//! buffered bytes; clients past `max_clients` are refused at once, however many
//! connect, while the admitted ones (each holding a nearly full line buffer) are
//! still served.
//!
//! Synchronisation is by replies and EOF only; read timeouts just turn a hang into
//! a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vmm::api::{ApiError, ApiServer, Request, ServerLimits, MAX_LINE};

const SAFETY: Duration = Duration::from_secs(60);

fn handler(_: &Request) -> Result<Value, ApiError> {
    Ok(json!({ "fine": true }))
}

fn server(dir: &Path) -> (ApiServer, std::path::PathBuf) {
    let path = dir.join("api.sock");
    let s = ApiServer::start(&path, Arc::new(handler)).unwrap();
    (s, path)
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(SAFETY)).unwrap();
    s
}

/// One reply line, parsed.
fn reply(s: &UnixStream) -> Value {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn call(path: &Path, line: &str) -> Value {
    let mut s = connect(path);
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    reply(&s)
}

#[test]
fn an_endless_line_gets_an_error_and_the_client_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, path) = server(dir.path());
    let c = connect(&path);
    let mut w = c.try_clone().unwrap();
    // Writes 'x' until the server hangs up (the writer sees EPIPE or a reset), and
    // gives up at 256 MiB: a server that kept reading would get that far.
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 256 << 20 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    });
    let v = reply(&c);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "parse");
    assert_eq!(v["error"]["message"], "line longer than 64 KiB");
    // Then EOF: the server closed the connection.
    let mut rest = Vec::new();
    let mut r = &c;
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the error");
    let (sent, hung_up) = writer.join().unwrap();
    assert!(hung_up, "the server never hung up after {sent} bytes");
    // What the server took in is bounded by its line limit and one read; the rest
    // of what the writer got rid of sat in the socket buffers (a few hundred KiB).
    assert!(
        sent < MAX_LINE + (8 << 20),
        "the server kept reading an endless line: {sent} bytes"
    );
    // Others are served as before.
    assert_eq!(call(&path, r#"{"cmd":"vm.stats"}"#)["ok"], true);
}

#[test]
fn clients_past_the_limit_are_refused_and_the_admitted_ones_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, path) = server(dir.path());
    let max = ServerLimits::default().max_clients;
    // Fill every client slot; each client leaves most of a line (a request padded
    // with blanks, still under the limit) in the server's buffer after a request
    // that proves it was admitted.
    let mut held: Vec<UnixStream> = (0..max)
        .map(|_| {
            let mut s = connect(&path);
            s.write_all(b"{\"cmd\":\"vm.stats\"}\n").unwrap();
            assert_eq!(reply(&s)["ok"], true);
            s.write_all(b"{\"cmd\":\"vm.stats\",\"id\":7").unwrap();
            s.write_all(&vec![b' '; MAX_LINE - 100]).unwrap();
            s
        })
        .collect();
    // Far more clients than slots: each is told and closed.
    for _ in 0..4 * max {
        let mut s = connect(&path);
        let v = reply(&s);
        assert_eq!(v["error"]["kind"], "unavailable", "{v}");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    // The admitted clients finish their lines and are answered.
    for s in &mut held {
        s.write_all(b"}\n").unwrap();
        let v = reply(s);
        assert_eq!((&v["ok"], &v["id"]), (&json!(true), &json!(7)), "{v}");
    }
    // Once they leave, a new client gets a slot.
    drop(held);
    let v = (0..100)
        .map(|_| call(&path, r#"{"cmd":"vm.stats","id":1}"#))
        .find(|v| v["ok"] == true)
        .expect("a slot frees up once the held clients are gone");
    assert_eq!(v["id"], 1);
}
