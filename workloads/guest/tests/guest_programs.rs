//! The guest programs run on the host as the guest runs them: as a process, writing to
//! a tty (a pty here, `/dev/ttyS1` in the guest) or stdout, stopped by a signal.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

const GUEST: &str = env!("CARGO_BIN_EXE_swaplab-guest");

fn json(l: &str) -> serde_json::Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}"))
}

/// Start `args`, read its stdout until `ready` lines arrived, SIGTERM it, and return
/// its exit code and every line.
fn stop_after(args: &[&str], ready: usize) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut child = Command::new(GUEST)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for l in lines.by_ref().take(ready) {
        got.push(json(&l.unwrap()));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    got.extend(lines.map(|l| json(&l.unwrap())));
    (child.wait().unwrap().code(), got)
}

#[test]
fn sigterm_ends_an_endless_integrity_run_with_its_summary() {
    let (code, lines) = stop_after(
        &[
            "integrity",
            "--mb",
            "4",
            "--rounds",
            "0",
            "--interval-ms",
            "20",
        ],
        3,
    );
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines[0]["kind"], "integrity_start");
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "integrity_done", "{lines:?}");
    assert_eq!(last["stopped"], true);
    assert_eq!(last["integrity_errors"], 0);
    let rounds = last["rounds"].as_u64().unwrap();
    assert!(rounds >= 2);
    assert_eq!(last["pages_verified"], rounds * 1024);
    assert_eq!(lines.len() as u64, rounds + 2);
}

#[test]
fn sigterm_ends_an_endless_report() {
    let (code, lines) = stop_after(&["report", "--interval-ms", "20"], 2);
    assert_eq!(code, Some(0));
    assert!(lines.len() >= 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["kind"], "report");
        assert_eq!(l["seq"], i + 1);
        assert!(l["pswpout"].is_u64() && l["mem_total_kib"].is_u64(), "{l}");
    }
}

/// A pty pair: the slave's path (what the guest program opens) and both ends.
fn pty() -> (String, OwnedFd, OwnedFd) {
    let p = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&p.slave).unwrap();
    (path.display().to_string(), p.master, p.slave)
}

#[test]
fn a_tty_channel_gets_raw_whole_lines_from_concurrent_writers() {
    let (path, master, slave) = pty();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed: the end.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let writers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(GUEST)
                .args(["report", "--count", "40", "--interval-ms", "0"])
                .env("SWAPLAB_CHANNEL", &path)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let other = Command::new(GUEST)
        .args(["--out", &path, "touch", "--mb", "2", "--passes", "1"])
        .env("SWAPLAB_CHANNEL", "/dev/swaplab-not-used")
        .status()
        .unwrap();
    assert!(other.success());
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    // The raw mode the programs set stays on the tty: check it while it is still open.
    let t = nix::sys::termios::tcgetattr(&slave).unwrap();
    assert!(!t
        .output_flags
        .contains(nix::sys::termios::OutputFlags::OPOST));
    drop(slave);
    let out = String::from_utf8(reader.join().unwrap()).unwrap();
    assert!(!out.contains('\r'), "newlines were translated");
    let kinds: Vec<String> = out
        .lines()
        .map(|l| json(l)["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "report").count(), 80);
    assert_eq!(kinds.iter().filter(|k| *k == "touch").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "touch_done").count(), 1);
}

#[test]
fn usage_errors_exit_2_and_integrity_failures_1() {
    let out = Command::new(GUEST)
        .args(["touch", "--mb", "1", "--pattern", "zipf:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad zipf skew"));
    assert!(out.stdout.is_empty());
    let out = Command::new(GUEST)
        .args(["report", "--out", "/dev/swaplab-no-such-tty"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/swaplab-no-such-tty"));
}

#[test]
fn a_stop_during_the_first_round_still_verifies_every_page_once() {
    // SIGTERM right after the fill: the first round runs whole all the same
    // (a scenario's duration_s must never end a run with nothing verified).
    let (code, lines) = stop_after(&["integrity", "--mb", "64", "--rounds", "0"], 1);
    assert_eq!(code, Some(0), "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "integrity_done", "{lines:?}");
    assert_eq!(last["stopped"], true);
    assert!(last["rounds"].as_u64().unwrap() >= 1, "{last}");
    assert!(
        last["pages_verified"].as_u64().unwrap() >= 64 * 256,
        "{last}"
    );
}
