//! Helpers shared by the CLI integration tests: run the built `swaplab`, parse its JSON,
//! check usage errors. Each test binary uses a subset.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base::tier::{skip, Tier as Need};
use serde_json::Value;

/// Run the built `swaplab` with these arguments.
pub fn swaplab(args: &[&str]) -> Output {
    swaplab_with_env(args, &[])
}

/// Run the built `swaplab` with these arguments and environment variables.
pub fn swaplab_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_swaplab"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            // One sandbox per test (cargo runs tests side by side already).
            .env("SWAPLAB_JOBS", "1")
            .envs(env.iter().copied()),
        COMMAND_LIMIT,
    )
}

/// The longest any one command of these tests may run (the longest, the
/// sandboxed test matrix, takes 6–7 min on a loaded CI machine). A command
/// still running then is stuck: it is stopped and the test fails with its
/// output, instead of holding CI to its own limit with nothing said.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Grace between SIGTERM and SIGKILL for a command past its limit.
const TERM_GRACE: Duration = Duration::from_secs(30);

/// `cmd.output()`, bounded: past `limit` the command gets SIGTERM (swaplab
/// then stops its guest or sandbox and cleans up), then SIGKILL, and the test
/// panics with what it printed.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    output_within_child(child, limit, &format!("{cmd:?}"))
}

/// [`output_within`] for a command already started (stdout and stderr piped),
/// named `what` in the panic.
pub fn output_within_child(child: std::process::Child, limit: Duration, what: &str) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    if let Ok(out) = rx.recv_timeout(limit) {
        return out.expect("wait for the command");
    }
    // SAFETY: kill only sends a signal; the child is not reaped before its
    // waiter sends, which has not happened.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = rx.recv_timeout(TERM_GRACE).unwrap_or_else(|_| {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        rx.recv().expect("the waiter thread ended")
    });
    let out = out.expect("wait for the command");
    panic!(
        "{what} still ran after {} s and was stopped ({}).\nstdout:\n{}\nstderr:\n{}",
        limit.as_secs(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether KVM tests can run; otherwise the test skips (`base::tier::skip`,
/// which fails it on a machine whose tiers the run requires).
pub fn have_kvm() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    skip(Need::Kvm, "/dev/kvm is absent on this host");
    false
}

/// Whether this process runs as root; otherwise the test skips.
pub fn have_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(Need::Root, &format!("{what} needs root"));
    false
}

/// Whether `program` is on PATH; otherwise the test skips (QEMU is the `qemu`
/// tier, anything else a `tool`).
pub fn have_program(program: &str, package: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(program).is_file()) {
        return true;
    }
    let need = if program.starts_with("qemu-system") {
        Need::Qemu
    } else {
        Need::Tool
    };
    skip(
        need,
        &format!("{program} is not installed (apt-get install {package})"),
    );
    false
}

/// `swaplab probe --json ARGS`, which must succeed.
pub fn probe_json(args: &[&str]) -> Value {
    let mut all = vec!["probe", "--json"];
    all.extend_from_slice(args);
    let out = swaplab(&all);
    assert!(
        out.status.success(),
        "swaplab {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe --json prints JSON")
}

/// A probe the host swapper stopped: exit status 1, no result printed, no panic,
/// and a last line that says no wrong data was served and contains every one of
/// `needles`.
pub fn assert_swapper_stopped_the_vm(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "printed a result: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("swaplab: the host swapper could not serve guest memory"),
        "{last}"
    );
    assert!(last.contains("no wrong data was served"), "{last}");
    for n in needles {
        assert!(last.contains(n), "{n:?} not in: {last}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// A JSON integer.
pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Bad input to `swaplab probe`: one line on stderr naming the problem, exit status 2,
/// no panic, nothing on stdout.
pub fn assert_usage_error(args: &[&str], needle: &str) {
    let mut all = vec!["probe"];
    all.extend_from_slice(args);
    assert_cli_usage_error(&all, needle);
}

/// `swaplab ARGS` fails with exit status 2 and one stderr line containing `needle`.
pub fn assert_cli_usage_error(all: &[&str], needle: &str) {
    let out = swaplab(all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{all:?}: want one line, got {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "{all:?}: {:?} lacks {needle:?}",
        lines[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{all:?} printed to stdout");
}

/// A directory under the host's temp dir, removed on drop.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("swaplab-{name}-"))
        .tempdir()
        .expect("create a temp dir")
}

/// Where a stock Linux guest boots here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// On hardware KVM.
    Native,
    /// In the nested sandbox (QEMU TCG L1).
    Sandbox,
}

/// Where a stock Linux guest boots here; `None` (and the test skips) where it
/// cannot.
pub fn linux_guest() -> Option<Tier> {
    match linux_guest_tier() {
        Ok(t) => Some(t),
        Err((need, why)) => {
            skip(need, &why);
            None
        }
    }
}

/// Where a stock Linux guest boots here, or what is missing and why.
pub fn linux_guest_tier() -> Result<Tier, (Need, String)> {
    use sandbox::host::{kvm_flavour, KvmFlavour};
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err((Need::Kvm, "/dev/kvm is absent".into()));
    }
    match kvm_flavour() {
        (KvmFlavour::Hardware, _) => Ok(Tier::Native),
        (_, why) => {
            let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
            if !qemu.is_ok_and(|o| o.status.success()) {
                return Err((
                    Need::Qemu,
                    format!(
                        "this host's KVM cannot boot a stock kernel ({why}) and \
                         qemu-system-x86_64 is not installed for the sandbox"
                    ),
                ));
            }
            Ok(Tier::Sandbox)
        }
    }
}

/// Most times a test's body runs when the nested sandbox's L1 keeps dying
/// under it: a loaded host once killed L1 twice in a row under one test
/// (a triple fault, then a kernel panic in `__schedule`).
const L1_ATTEMPTS: u32 = 3;

/// Runs a test's `body` again, up to [`L1_ATTEMPTS`] times in all, when it
/// failed because the nested sandbox's L1 died under it: its kernel panicked
/// ("the L1 kernel panicked") or its emulated CPU triple-faulted (QEMU logged
/// "Triple fault"), see `sandbox::L1_DIED`; or because the guest
/// triple-faulted in the sandbox (`runner::boot::TRIPLE_FAULT`), a residue of
/// L1's emulated SVM. L1 is a Linux emulated by QEMU TCG; it has died so now
/// and then on a loaded host, in interrupt context, whatever ran in it. Any
/// other failure, or a death on the last attempt, fails the test; every
/// retry is printed ("RETRYING") and counted by scripts/test.sh.
pub fn retry_if_l1_panicked(body: impl Fn()) {
    for attempt in 1..=L1_ATTEMPTS {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&body));
        let Err(payload) = run else {
            return;
        };
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        let l2_residue = (linux_guest_tier() == Ok(Tier::Sandbox)
            && message.contains(runner::boot::TRIPLE_FAULT))
        .then_some("the guest triple-faulted in the sandbox (a residue of L1's emulated SVM)");
        let died = sandbox::L1_DIED
            .iter()
            .copied()
            .find(|m| message.contains(*m))
            .or(l2_residue);
        let Some(how) = died.filter(|_| attempt < L1_ATTEMPTS) else {
            std::panic::resume_unwind(payload);
        };
        eprintln!("RETRYING: {how} under the test (above); running it again (attempt {} of {L1_ATTEMPTS})", attempt + 1);
        note_retry(how);
    }
}

/// Notes a retry in the test script's log ([`base::retry_log`]), under this
/// test's name.
fn note_retry(how: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    if let Err(e) = base::retry_log::note(&test, how) {
        panic!("cannot note the retry in ${}: {e}", base::retry_log::ENV);
    }
}
