//! The virtio-balloon with a real Debian guest, driven through the control socket
//! (issue #6's acceptance points), in one boot: `swaplab boot --balloon --api-sock`
//! (natively on hardware KVM; in one nested sandbox session here, the socket
//! forwarded out of L1).
//!
//! The guest touches 400 MiB of its 512 MiB and frees it, then waits; the test
//! - sends malformed requests (error replies, the VM keeps answering);
//! - watches the statistics arrive every second with the usual fields;
//! - inflates the balloon to 256 MiB (the guest reports it, its available memory
//!   and the host's residency fall) and deflates it (available memory returns);
//! - asks for 480 MiB while the guest touches 400 MiB again (the guest starts once
//!   it sees the second inflation begin): the guest must deflate on OOM, finish
//!   with every page intact and kill nothing, while the socket keeps answering.
//!
//! Everything waits by polling state with deadlines.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use swaplab::ctl;
use vmm::api::{Reply, Request, Size};

const MIB: u64 = 1 << 20;
/// Each control-socket request must be answered within this.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// Pages the first inflation moves (256 MiB).
const FIRST_INFLATE_PAGES: u64 = 256 * MIB / 4096;

/// Phase 1 touches and frees 400 MiB; phase 2 starts once the guest's
/// `balloon_inflate` count shows the second inflation under way, touches 400 MiB
/// twice with the balloon asked for 480 MiB, and prints the guest's balloon and
/// OOM-kill counters. The command's status is phase 2's.
fn guest_command() -> String {
    let start = FIRST_INFLATE_PAGES + 2048;
    [
        "swaplab-guest touch --mb 400 --out - >/dev/null && echo 'phase1: touched'",
        &format!(
            "while :; do n=0; while read -r k v; do [ \"$k\" = balloon_inflate ] && n=$v; done </proc/vmstat; [ \"$n\" -ge {start} ] && break; sleep 0.1; done"
        ),
        "echo 'phase2: touching'",
        "swaplab-guest touch --mb 400 --passes 2 --out -",
        "rc=$?",
        "echo \"phase2: exit $rc\"",
        "grep -E '^(balloon_|oom_kill )' /proc/vmstat",
        "exit $rc",
    ]
    .join("; ")
}

/// Why the test cannot run here, if it cannot.
/// The booted guest: its process, its command's output as lines, its stderr.
struct Guest {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Its stderr so far, and whether it has ended.
    stderr: Arc<(Mutex<(String, bool)>, Condvar)>,
    sock: PathBuf,
}

impl Guest {
    fn boot(sock: &Path) -> Guest {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swaplab"))
            .args(["boot", "--mem", "512M", "--balloon", "--timeout", "1500"])
            .arg("--api-sock")
            .arg(sock)
            .arg("--run")
            .arg(guest_command())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run swaplab boot");
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new((Mutex::new((String::new(), false)), Condvar::new()));
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                e.0.lock()
                    .unwrap()
                    .0
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            e.0.lock().unwrap().1 = true;
            e.1.notify_all();
        });
        Guest {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            sock: sock.to_path_buf(),
        }
    }

    /// What the run printed so far, for failure messages. A VMM that is
    /// exiting gets a moment to finish its stderr (its last words say why).
    fn context(&self) -> String {
        let (lock, ended) = &*self.stderr;
        let (err, _) = ended
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |e| !e.1)
            .unwrap();
        format!(
            "--- guest output\n{}\n--- stderr\n{}",
            self.seen.join("\n"),
            err.0
        )
    }

    /// Takes the lines printed so far; true once one starts with `prefix`.
    fn saw(&mut self, prefix: &str) -> bool {
        self.seen.extend(self.lines.try_iter());
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    /// Waits for a line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.saw(prefix) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(e) => panic!("waiting for {prefix:?}: {e:?}\n{}", self.context()),
            }
        }
    }

    /// One request, answered within [`REQUEST_LIMIT`].
    fn reply<'a>(&self, msg: impl Into<ctl::Message<'a>>) -> Reply {
        ctl::request(&self.sock, msg, REQUEST_LIMIT).unwrap_or_else(|e| {
            panic!(
                "the control socket did not answer within {REQUEST_LIMIT:?}: {e}\n{}",
                self.context()
            )
        })
    }

    /// One request that must succeed; its result.
    fn call(&self, req: &Request) -> Value {
        self.succeeded(req, self.reply(req))
    }

    /// Like [`Guest::call`], but a socket that is gone (the VM ended) is
    /// `Err` with what the connection said, not a panic.
    fn call_unless_gone(&self, req: &Request) -> Result<Value, String> {
        let r = ctl::request(&self.sock, req, REQUEST_LIMIT).map_err(|e| e.to_string())?;
        Ok(self.succeeded(req, r))
    }

    fn succeeded(&self, req: &Request, r: Reply) -> Value {
        match r.outcome {
            Ok(v) => v,
            Err(e) => panic!("{} failed: {e:?}\n{}", req.name(), self.context()),
        }
    }

    /// Polls `f` until it gives a value or `limit` passes.
    fn poll<T>(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}\n{}",
                self.context()
            );
            self.seen.extend(self.lines.try_iter());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Only if the test failed before the VM ended: it must not outlive us.
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill only sends a signal, to our own child (swaplab handles
            // SIGTERM by stopping the sandbox and removing the host socket).
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{} is not an integer in {v}", path.join(".")))
}

fn stat(b: &Value, name: &str) -> Option<u64> {
    b["stats"]["values"][name].as_u64()
}

/// The guest's `NAME VALUE` counter line.
fn counter(seen: &[String], name: &str) -> Option<u64> {
    seen.iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[test]
fn balloon_inflates_deflates_reports_and_survives_a_guest_that_needs_its_memory() {
    if common::linux_guest().is_none() {
        return;
    }
    common::retry_if_l1_panicked(balloon_phases);
}

/// The whole run: one guest, its balloon driven through the control socket.
fn balloon_phases() {
    let started = Instant::now();
    let dir = common::temp_dir("balloon-guest");
    let sock = dir.path().join("vm.sock");
    let mut g = Guest::boot(&sock);
    g.wait_line("phase1: touched", Duration::from_secs(900));

    // (d) Malformed requests get error replies; the VM keeps answering.
    for (line, kind) in [
        ("garbage", "\"kind\":\"parse\""),
        ("{\"cmd\":\"balloon.sett\"}", "\"kind\":\"unknown_command\""),
        (
            "{\"cmd\":\"balloon.set\",\"target\":\"1T\"}",
            "\"kind\":\"bad_argument\"",
        ),
    ] {
        let r = g.reply(line);
        assert!(!r.is_ok(), "{line}: {}", r.to_line());
        assert!(r.to_line().contains(kind), "{line}: {}", r.to_line());
    }
    let vm = g.call(&Request::VmStats);
    assert_eq!(u(&vm, &["guest_mem_bytes"]), 512 * MIB);

    // (b) Statistics every second (the boot's interval), with the usual fields.
    let b0 = g.call(&Request::BalloonStats);
    let (n0, age0) = (
        u(&b0, &["metrics", "stats_updates"]),
        u(&b0, &["stats", "age_ms"]),
    );
    let t0 = Instant::now();
    let (b1, t1) = g.poll("4 more statistics updates", Duration::from_secs(120), |g| {
        let b = g.call(&Request::BalloonStats);
        (u(&b, &["metrics", "stats_updates"]) >= n0 + 4).then(|| (b, Instant::now()))
    });
    let n1 = u(&b1, &["metrics", "stats_updates"]);
    // When the first and the last update arrived, on the test's clock.
    let first = t0.checked_sub(Duration::from_millis(age0)).unwrap();
    let last = t1
        .checked_sub(Duration::from_millis(u(&b1, &["stats", "age_ms"])))
        .unwrap();
    let interval = (last - first).as_secs_f64() / (n1 - n0) as f64;
    assert!(
        (0.5..=5.0).contains(&interval),
        "statistics every {interval:.2} s, not every second"
    );
    for name in [
        "swap-in",
        "swap-out",
        "major-faults",
        "minor-faults",
        "free-memory",
        "available-memory",
        "total-memory",
    ] {
        assert!(stat(&b1, name).is_some(), "no {name} in {b1}");
    }
    assert_eq!(
        stat(&b1, "total-memory").map(|t| t <= 512 * MIB),
        Some(true)
    );

    // (a) Inflate to 256 MiB: the guest reports it, gives up that much available
    // memory, and the host's residency falls with it.
    let resident0 = u(&g.call(&Request::VmStats), &["host_resident_bytes"]);
    assert!(
        resident0 >= 400 * MIB,
        "the guest touched 400 MiB: {resident0}"
    );
    let avail0 = stat(&b1, "available-memory").unwrap();
    let r = g.call(&Request::BalloonSet {
        target: Size(256 * MIB),
    });
    assert_eq!(u(&r, &["target_bytes"]), 256 * MIB);
    g.poll(
        "the balloon reaching 256 MiB",
        Duration::from_secs(300),
        |g| (u(&g.call(&Request::BalloonStats), &["actual_bytes"]) == 256 * MIB).then_some(()),
    );
    let resident1 = u(&g.call(&Request::VmStats), &["host_resident_bytes"]);
    assert!(
        resident0.saturating_sub(resident1) >= 200 * MIB,
        "host residency {resident0} -> {resident1}: not 200 MiB less"
    );
    let avail1 = g.poll(
        "available memory 200 MiB lower",
        Duration::from_secs(60),
        |g| {
            let a = stat(&g.call(&Request::BalloonStats), "available-memory")?;
            (a + 200 * MIB <= avail0).then_some(a)
        },
    );

    // Back to 0: the memory returns to the guest.
    g.call(&Request::BalloonSet { target: Size(0) });
    g.poll("the balloon back at 0", Duration::from_secs(300), |g| {
        (u(&g.call(&Request::BalloonStats), &["actual_bytes"]) == 0).then_some(())
    });
    g.poll(
        "available memory 200 MiB higher again",
        Duration::from_secs(60),
        |g| {
            let a = stat(&g.call(&Request::BalloonStats), "available-memory")?;
            (a >= avail1 + 200 * MIB).then_some(())
        },
    );

    // (c) 480 MiB asked of a guest about to touch 400 MiB: the guest deflates on
    // OOM, its workload finishes intact, the socket keeps answering.
    g.call(&Request::BalloonSet {
        target: Size(480 * MIB),
    });
    let mut answered_while_touching = 0;
    let mut max_actual = 0;
    // The guest powers off right after phase 2, so the socket may close
    // before its last lines are read here: a closed socket ends the polling,
    // and the phase's end must then follow on the console.
    let mut socket_closed = None;
    g.poll("phase 2's end", Duration::from_secs(900), |g| {
        let done = g.seen.iter().any(|l| l.starts_with("phase2: exit"));
        let b = match g.call_unless_gone(&Request::BalloonStats) {
            Ok(v) => v,
            Err(e) => {
                socket_closed = Some(e);
                return Some(());
            }
        };
        max_actual = max_actual.max(u(&b, &["actual_bytes"]));
        let touching = g.seen.iter().any(|l| l.starts_with("phase2: touching"));
        if touching && !done {
            answered_while_touching += 1;
        }
        done.then_some(())
    });
    if let Some(e) = &socket_closed {
        eprintln!("the control socket went away at phase 2's end ({e}); waiting for the console");
        g.wait_line("phase2: exit", Duration::from_secs(60));
    }
    let ctx = g.context();
    assert!(
        g.saw("phase2: exit 0"),
        "the workload failed or was killed\n{ctx}"
    );
    let done = g
        .seen
        .iter()
        .filter(|l| l.contains("\"integrity_errors\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next_back()
        .unwrap_or_else(|| panic!("no touch result\n{ctx}"));
    assert_eq!(u(&done, &["integrity_errors"]), 0, "{ctx}");
    assert!(u(&done, &["pages_verified"]) >= 400 * 256, "{ctx}");
    assert!(
        answered_while_touching >= 1,
        "no request made while the guest touched\n{ctx}"
    );

    // The VM ends by itself (the command's status), cleanly.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the VMM did not exit\n{}",
            g.context()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    g.seen.extend(g.lines.iter());
    let ctx = g.context();
    assert!(status.success(), "{status}\n{ctx}");
    assert!(!ctx.contains("panicked"), "{ctx}");
    // The guest deflated on OOM (more than the 256 MiB deflated on request) and
    // killed nothing.
    let deflated = counter(&g.seen, "balloon_deflate").unwrap_or_else(|| panic!("{ctx}"));
    assert!(
        deflated > FIRST_INFLATE_PAGES,
        "balloon_deflate {deflated}: no deflation on OOM (largest balloon {max_actual})\n{ctx}"
    );
    assert_eq!(counter(&g.seen, "oom_kill"), Some(0), "{ctx}");
    assert!(!sock.exists(), "the socket outlived the VM");
    eprintln!(
        "balloon test: {:.0} s; statistics every {interval:.2} s; at 256 MiB host residency {} -> {} MiB, available {} -> {} MiB; \
         asked 480 MiB of a guest touching 400 MiB: largest balloon {} MiB, balloon_deflate {deflated} pages, \
         {answered_while_touching} requests answered while it touched",
        started.elapsed().as_secs_f64(),
        resident0 >> 20,
        resident1 >> 20,
        avail0 >> 20,
        avail1 >> 20,
        max_actual >> 20
    );
}
