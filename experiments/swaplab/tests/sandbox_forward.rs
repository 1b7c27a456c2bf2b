//! `swaplab sandbox --forward-socket`: a Unix socket on the host whose
//! connections reach a server listening in L1. The server is a few lines of
//! Perl (perl-base is essential on Debian, and L1's root is the host's).
//! Skipped (`base::tier::skip`) where QEMU or Perl is missing.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

mod common;

fn missing(program: &str, package: &str) -> bool {
    !common::have_program(program, package)
}

/// Serves two connections on $SWAPLAB_FORWARD_SOCK_0, answering each line
/// with `echo N: LINE` (N counts connections), then exits.
const SERVER: &str = r#"
use IO::Socket::UNIX;
my $path = $ENV{SWAPLAB_FORWARD_SOCK_0} or die "SWAPLAB_FORWARD_SOCK_0 is not set";
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $path, Listen => 5)
    or die "listen $path: $!";
for my $n (1..2) {
    my $c = $s->accept or die "accept: $!";
    while (my $line = <$c>) { print $c "echo $n: $line"; }
    close $c;
}
print "served 2 connections on $path\n";
"#;

fn request(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &str) -> String {
    stream.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    reply
}

#[test]
fn host_socket_reaches_a_server_in_l1() {
    if missing("qemu-system-x86_64", "qemu-system-x86") || missing("perl", "perl-base") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = sandbox(&[
        "--forward-socket".as_ref(),
        sock.as_os_str(),
        "--".as_ref(),
        "perl".as_ref(),
        "-e".as_ref(),
        SERVER.as_ref(),
    ])
    .spawn()
    .unwrap();
    let (mut stderr, seen) = wait_for_forwarding(&mut child);
    // The sandbox says when the host socket listens (before L1 boots).
    assert!(
        seen.contains("/run/swaplab/forward-0.sock in L1"),
        "inner path: {seen}"
    );
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });

    // Two connections, one after the other, two request lines each: every
    // reply comes from the server in L1, on the right connection.
    for n in 1..=2 {
        let mut stream = UnixStream::connect(&sock).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert_eq!(
            request(&mut stream, &mut reader, "{\"cmd\":\"status\"}\n"),
            format!("echo {n}: {{\"cmd\":\"status\"}}\n")
        );
        assert_eq!(
            request(&mut stream, &mut reader, "second\n"),
            format!("echo {n}: second\n")
        );
    }

    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = rest.join().unwrap();
    assert!(status.success(), "{status}\n{seen}{stderr}");
    assert!(
        stdout.contains("served 2 connections on /run/swaplab/forward-0.sock"),
        "{stdout}\n{seen}{stderr}"
    );
    assert!(!sock.exists(), "the host socket outlived the sandbox");
}

/// Serves connections on $SWAPLAB_FORWARD_SOCK_0 at once (one select loop),
/// answering each line with `echo: LINE`, until two of them have closed.
const CONCURRENT_SERVER: &str = r#"
use IO::Socket::UNIX;
use IO::Select;
my $path = $ENV{SWAPLAB_FORWARD_SOCK_0} or die "SWAPLAB_FORWARD_SOCK_0 is not set";
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $path, Listen => 5)
    or die "listen $path: $!";
my $sel = IO::Select->new($s);
my %buf;
my $done = 0;
while ($done < 2) {
    for my $fh ($sel->can_read) {
        if ($fh == $s) { my $c = $s->accept or die "accept: $!"; $sel->add($c); $buf{$c} = ""; next; }
        my $r = sysread($fh, my $d, 4096);
        if (!$r) { $sel->remove($fh); close $fh; $done++; next; }
        $buf{$fh} .= $d;
        while ($buf{$fh} =~ s/^(.*\n)//) { syswrite($fh, "echo: $1"); }
    }
}
print "served 2 connections at once\n";
"#;

#[test]
fn an_idle_client_does_not_block_another() {
    if missing("qemu-system-x86_64", "qemu-system-x86") || missing("perl", "perl-base") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = sandbox(&[
        "--forward-socket".as_ref(),
        sock.as_os_str(),
        "--".as_ref(),
        "perl".as_ref(),
        "-e".as_ref(),
        CONCURRENT_SERVER.as_ref(),
    ])
    .spawn()
    .unwrap();
    let (mut stderr, seen) = wait_for_forwarding(&mut child);
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let connect = || {
        let stream = UnixStream::connect(&sock).unwrap();
        // Generous: L1 boots and the server starts while the first waits.
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(240)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    };
    // The first client connects and says nothing; the second is served.
    let (mut idle, mut idle_reader) = connect();
    let (mut busy, mut busy_reader) = connect();
    assert_eq!(request(&mut busy, &mut busy_reader, "b1\n"), "echo: b1\n");
    assert_eq!(request(&mut idle, &mut idle_reader, "a1\n"), "echo: a1\n");
    assert_eq!(request(&mut busy, &mut busy_reader, "b2\n"), "echo: b2\n");
    drop((idle, idle_reader, busy, busy_reader));

    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let stderr = rest.join().unwrap();
    assert!(status.success(), "{status}\n{seen}{stderr}");
    assert!(
        stdout.contains("served 2 connections at once"),
        "{stdout}\n{seen}{stderr}"
    );
    assert!(!sock.exists(), "the host socket outlived the sandbox");
}

/// `swaplab sandbox --verbose ARGS`, with stdout and stderr piped.
fn sandbox(args: &[&OsStr]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swaplab"));
    cmd.args(["sandbox", "--verbose", "--mem", "512M", "--timeout", "300"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Read `child`'s stderr up to the line saying the host socket listens;
/// returns the rest of stderr and what it said so far.
fn wait_for_forwarding(child: &mut Child) -> (BufReader<ChildStderr>, String) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("swaplab sandbox ended ({status}) before forwarding:\n{seen}");
        }
        seen.push_str(&line);
        if line.starts_with("swaplab sandbox: forwarding ") {
            return (stderr, seen);
        }
    }
}

#[test]
fn sigterm_stops_l1_and_removes_the_host_socket() {
    if missing("qemu-system-x86_64", "qemu-system-x86") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = sandbox(&[
        "--forward-socket".as_ref(),
        sock.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "echo started; exec sleep 600".as_ref(),
    ])
    .spawn()
    .unwrap();
    let (mut stderr, mut seen) = wait_for_forwarding(&mut child);
    assert!(sock.exists());
    // Stop it while the command runs in L1.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n", "{seen}");
    // SAFETY: kill only sends a signal, to our own child.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("stopped by a signal"), "{seen}");
    assert!(!sock.exists(), "the host socket outlived a stopped sandbox");
}

#[test]
fn host_socket_is_removed_when_l1_fails() {
    if missing("qemu-system-x86_64", "qemu-system-x86") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // No init in the initramfs: L1's kernel panics.
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args(["sandbox", "--mem", "512M", "--timeout", "300"])
        .args(["--kernel-arg", "rdinit=/no-such-init"])
        .arg("--forward-socket")
        .arg(&sock)
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the L1 kernel panicked"), "{err}");
    assert!(!sock.exists(), "the host socket outlived a failed sandbox");
}

#[test]
fn an_existing_file_is_not_replaced() {
    if missing("qemu-system-x86_64", "qemu-system-x86") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args(["sandbox", "--forward-socket"])
        .arg(&file)
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a socket left over"), "{err}");
    assert_eq!(std::fs::read(Path::new(&file)).unwrap(), b"precious");
}
