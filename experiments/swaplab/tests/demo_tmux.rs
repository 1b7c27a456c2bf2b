//! `swaplab demo --script` in an 80×24 tmux pane with the real Debian guest
//! (through the nested sandbox on this kind of host), issue #8's acceptance:
//!
//! - the scripted inflations show on screen: the balloon grows and the guest's
//!   free memory falls;
//! - after the host limit is lowered twice and the workload starts, the host
//!   swap-in total on screen rises;
//! - the `q` key ends the demo with status 0 and the terminal is given back
//!   (the shell's next line is on the normal screen, not the alternate one).
//!
//! Every wait polls the captured pane until a condition holds or a deadline
//! passes. The tmux session (and with it the demo and its VM) is killed by a
//! guard, also when an assertion fails.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// The script: three inflations, two limit steps (to a quarter of guest RAM),
/// then the workload. The test presses `q` itself once it has seen enough.
const SCRIPT: &str = "\
# swaplab demo test script
1  +
2  +
3  +
8  l
9  l
10 w
";

/// Why the test cannot run here, if it cannot.
/// Whether tmux and a Linux guest are here (the test skips otherwise).
fn available() -> bool {
    common::have_program("tmux", "tmux") && common::linux_guest().is_some()
}

/// A detached tmux session on a tmux server of its own (its socket in the
/// test's directory, so no user's server is touched and nothing is left in
/// `/tmp/tmux-<uid>`), killed on drop (its pane's processes get SIGHUP; the
/// demo stops its VM on it).
struct Session {
    name: String,
    /// The private server's socket.
    socket: std::path::PathBuf,
    /// The pane's shell, the leader of the demo's process group.
    pane_pid: Option<String>,
    /// The demo's VM log (`--log`), shown when a wait fails.
    log: std::path::PathBuf,
}

impl Session {
    fn start(
        name: &str,
        command: &str,
        log: &std::path::Path,
        socket: &std::path::Path,
    ) -> Session {
        let mut s = Session {
            name: name.to_string(),
            socket: socket.to_path_buf(),
            pane_pid: None,
            log: log.to_path_buf(),
        };
        let ok = s
            .tmux()
            .args(["new-session", "-d", "-x", "80", "-y", "24", "-s", name])
            .arg(command)
            .status()
            .expect("running tmux");
        assert!(ok.success(), "tmux new-session failed");
        let pid = s
            .tmux()
            .args(["display-message", "-p", "-t", name, "#{pane_pid}"])
            .output()
            .expect("tmux display-message");
        s.pane_pid =
            Some(String::from_utf8_lossy(&pid.stdout).trim().to_string()).filter(|p| !p.is_empty());
        s
    }

    /// `tmux -S <socket>`: a command to this session's server.
    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn keys(&self, keys: &str) {
        let ok = self
            .tmux()
            .args(["send-keys", "-t", &self.name, keys])
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    fn capture(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `cond` returns `Some`, or panics at the deadline
    /// with the last screen.
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let t = Instant::now();
        let mut screen = String::new();
        while t.elapsed() < limit {
            screen = self.capture();
            if let Some(v) = cond(&screen) {
                return v;
            }
            assert!(
                !screen.contains("the VM exited"),
                "the demo's VM ended early while waiting for {what}:\n{screen}\nVM log:\n{}",
                self.vm_log()
            );
            // Paces the polling of the pane (not a synchronisation: the
            // condition above is what is waited for).
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "no {what} within {limit:?}; last screen:\n{screen}\nVM log:\n{}",
            self.vm_log()
        );
    }

    fn vm_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(unreadable: {e})"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The hangup alone ends the demo, which stops its VM; SIGTERM to the
        // pane's process group as well, in case the hangup is missed (the VM
        // process follows its parent: it gets SIGTERM when the demo dies).
        let _ = self
            .tmux()
            .args(["kill-session", "-t", &self.name])
            .status();
        // Gone with its last session already, as a rule.
        let _ = self
            .tmux()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(pid) = &self.pane_pid {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The number after `label` in the panels (the title line, whose status may
/// repeat a label, is skipped), e.g. `free    90 MiB` → 90.
fn panel_value(screen: &str, label: &str) -> Option<u64> {
    let line = screen
        .lines()
        .filter(|l| l.starts_with('│'))
        .find(|l| l.contains(label))?;
    number_after(line, label)
}

/// The number after `label` in `text` (e.g. `free    90 MiB` → 90).
fn number_after(screen: &str, label: &str) -> Option<u64> {
    let i = screen.find(label)? + label.len();
    let rest = screen[i..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[test]
fn number_after_reads_screen_values() {
    let s = "│free     90 MiB │ balloon 64 MiB  target 96 MiB │swap-in    12/s  total 345";
    assert_eq!(number_after(s, "free "), Some(90));
    assert_eq!(number_after(s, "balloon "), Some(64));
    assert_eq!(number_after(s, "target "), Some(96));
    assert_eq!(number_after(s, "total "), Some(345));
    assert_eq!(number_after("free     — MiB", "free "), None);
    let screen = " swaplab demo · balloon target 96 MiB\n│balloon 64 MiB  target 96 MiB│";
    assert_eq!(panel_value(screen, "balloon "), Some(64));
    assert_eq!(panel_value(screen, "free "), None);
}

#[test]
fn scripted_demo_in_tmux_shows_ballooning_and_host_swapping() {
    if !available() {
        return;
    }
    let dir = common::temp_dir("demo-tmux");
    let script = dir.path().join("demo.script");
    std::fs::write(&script, SCRIPT).unwrap();
    let log = dir.path().join("vm.log");
    let status = dir.path().join("status");
    // Whatever the demo leaves in its temporary directory, even when this test
    // fails and kills it, goes with the test's directory.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let command = format!(
        "TMPDIR={tmp} {exe} demo --mem 256M --step 32M --workload-mb 96 --script {script} --log {log}; echo DEMO-EXIT=$? > {status}; echo DEMO-EXIT-SHOWN; sleep 600",
        exe = env!("CARGO_BIN_EXE_swaplab"),
        tmp = tmp.display(),
        script = script.display(),
        log = log.display(),
        status = status.display(),
    );
    let name = format!("swaplab-demo-test-{}", std::process::id());
    let session = Session::start(&name, &command, &log, &dir.path().join("tmux.sock"));

    // The screen is up at 80x24 with its panels and help line.
    let first = session.wait_for("the demo's screen", Duration::from_secs(60), |s| {
        // The whole frame: tmux can be read while the first one is still
        // being written (the title drawn, the panels not yet), so wait for
        // its last line, the help line, too.
        (s.contains("swaplab demo") && s.contains("quit")).then(|| s.to_string())
    });
    assert!(
        first.contains("Guest memory") && first.contains("Balloon"),
        "{first}"
    );
    assert!(
        first.contains("inflate") && first.contains("quit"),
        "{first}"
    );
    assert!(first.lines().all(|l| l.chars().count() <= 80), "{first}");

    // The guest reports its memory; remember how much was free before the
    // balloon grew (the script starts when the agent is ready).
    let boot_limit = Duration::from_secs(600);
    let free_before = session.wait_for("guest memory statistics", boot_limit, |s| {
        panel_value(s, "free ").filter(|_| panel_value(s, "balloon ").is_some())
    });
    // Three 32 MiB inflations: the balloon reaches 96 MiB and the guest's
    // free memory falls by most of it.
    let (balloon, free_after) = session.wait_for(
        "the balloon at 96 MiB and less free memory",
        Duration::from_secs(300),
        |s| {
            let b = panel_value(s, "balloon ")?;
            let f = panel_value(s, "free ")?;
            (b >= 96 && f + 64 <= free_before).then_some((b, f))
        },
    );
    eprintln!("balloon {balloon} MiB, guest free {free_before} -> {free_after} MiB");
    // Host limit down to 64 MiB and the 96 MiB workload running: host swap-ins
    // climb on screen.
    let limit_screen =
        session.wait_for("the host limit at 64 MiB", Duration::from_secs(120), |s| {
            (panel_value(s, "/ limit ") == Some(64)).then(|| s.to_string())
        });
    assert!(
        limit_screen.contains("host limit set to 64 MiB"),
        "{limit_screen}"
    );
    let swap_in_total = |s: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.contains("swap-in"))?;
        number_after(&line[line.find("swap-in")?..], "total ")
    };
    let first_total = session.wait_for("host swap-ins", Duration::from_secs(300), |s| {
        swap_in_total(s).filter(|&n| n > 0 && s.contains("workload on"))
    });
    let later_total = session.wait_for("host swap-ins rising", Duration::from_secs(300), |s| {
        swap_in_total(s).filter(|&n| n > first_total + 100)
    });
    eprintln!("host swap-ins {first_total} -> {later_total}");
    let busy = session.capture();
    assert!(
        busy.contains("started mb=96"),
        "the agent's event is shown:\n{busy}"
    );

    // `q` quits: status 0, and the shell's line is on the normal screen.
    session.keys("q");
    let after = session.wait_for("the demo to quit", Duration::from_secs(300), |s| {
        s.contains("DEMO-EXIT-SHOWN").then(|| s.to_string())
    });
    let status = std::fs::read_to_string(&status).unwrap_or_default();
    assert_eq!(
        status.trim(),
        "DEMO-EXIT=0",
        "screen:\n{after}\nVM log:\n{}",
        session.vm_log()
    );
    assert!(
        !after.contains("Guest memory"),
        "the alternate screen is gone:\n{after}"
    );
    drop(session);
}
