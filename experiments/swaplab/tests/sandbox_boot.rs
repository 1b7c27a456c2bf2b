//! The nested sandbox, end to end: `swaplab sandbox -- CMD` boots L1 under
//! QEMU TCG and runs CMD there. Boots are slow under emulation, so one boot
//! checks everything about a successful run, and one checks a failing boot.
//! Skipped (with a printed reason) where QEMU is not installed.

mod common;

use std::process::{Command, Output};
use std::time::Instant;

fn swaplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swaplab"))
}

fn qemu_missing() -> bool {
    !common::have_program("qemu-system-x86_64", "qemu-system-x86")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn command_runs_in_l1_with_kvm_and_host_files() {
    if qemu_missing() {
        return;
    }
    let tmp = common::temp_dir("sandbox-test");
    let file = tmp.path().join("written-in-l1");
    let script = format!(
        r#"
        [ -c /dev/kvm ] && echo "kvm-dev: yes"
        grep -q '^kvm_amd ' /proc/modules && echo "kvm_amd: loaded"
        grep -qw swaplab.sandbox=1 /proc/cmdline && echo "cmdline-marker: yes"
        echo "env-marker: $SWAPLAB_SANDBOX"
        # The KVM keeper (sandbox::keeper, asked for below) ran before this
        # command: it holds two idle vCPUs open, and two tracing instances
        # with the KVM events on (tracing off).
        echo "idle-vcpus: $(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c 'anon_inode:kvm-vcpu')"
        for i in 0 1; do
            d=/sys/kernel/tracing/instances/swaplab-keeper-$i
            echo "keeper-$i: $(cat $d/events/kvm/enable $d/events/kvmmmu/enable $d/tracing_on | tr '\n' ' ')"
        done
        echo "l1-cpus: $(nproc)"
        echo "pwd: $PWD"
        echo "from-l1 $(uname -r)" > '{file}'
        echo "to-stderr" >&2
        exit 7
        "#,
        file = file.display()
    );
    let start = Instant::now();
    let out = swaplab()
        .args([
            "sandbox",
            "--mem",
            "1G",
            "--timeout",
            "300",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .env("SWAPLAB_SANDBOX_HOLD_KVM", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    eprintln!("sandbox run took {:.1} s", start.elapsed().as_secs_f64());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    for want in [
        "kvm-dev: yes",
        "kvm_amd: loaded",
        "cmdline-marker: yes",
        "env-marker: 1",
        "idle-vcpus: 2",
        "keeper-0: 1 1 0 ",
        "keeper-1: 1 1 0 ",
        "l1-cpus: 1",
        &format!("pwd: {}", env!("CARGO_MANIFEST_DIR")),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "missing {want:?}\n{}",
            show(&out)
        );
    }
    assert!(text(&out.stderr).contains("to-stderr"), "{}", show(&out));
    assert!(!stdout.contains("to-stderr"), "stderr leaked into stdout");
    let written = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{} not visible on the host: {e}\n{}",
            file.display(),
            show(&out)
        )
    });
    assert!(written.starts_with("from-l1 "), "{written}");
}

#[test]
fn a_kernel_panic_is_a_clear_error_not_a_hang() {
    if qemu_missing() {
        return;
    }
    let start = Instant::now();
    // No init in the initramfs: the kernel tries a root device and panics.
    let out = swaplab()
        .args([
            "sandbox",
            "--mem",
            "512M",
            "--timeout",
            "300",
            "--kernel-arg",
            "rdinit=/no-such-init",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    eprintln!(
        "panicking sandbox took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("the L1 kernel panicked"), "{}", show(&out));
    assert!(err.contains("Kernel panic - not syncing"), "{}", show(&out));
}

#[test]
fn an_l1_triple_fault_is_named_not_taken_for_a_power_off() {
    if qemu_missing() {
        return;
    }
    // reboot=t makes L1's kernel restart by triple-faulting on purpose;
    // sysrq b restarts at once. QEMU (-no-reboot) then exits 0, as after a
    // power-off: only its log tells the two apart.
    let out = swaplab()
        .args([
            "sandbox",
            "--mem",
            "512M",
            "--timeout",
            "300",
            "--kernel-arg",
            "reboot=t",
            "--",
            "sh",
            "-c",
            "echo b > /proc/sysrq-trigger",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(sandbox::L1_TRIPLE_FAULTED) && err.contains("QEMU's log:\n  Triple fault"),
        "{}",
        show(&out)
    );
    assert!(err.contains("last L1 stage: run"), "{}", show(&out));
}

/// `swaplab sandbox -- sh -c script` with the heartbeat limit `liveness` (s).
fn silent_sandbox(script: &str, liveness: &str) -> Output {
    swaplab()
        .args([
            "sandbox",
            "--mem",
            "512M",
            "--timeout",
            "600",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("SWAPLAB_SANDBOX_LIVENESS", liveness)
        .output()
        .unwrap()
}

/// The supervisor said that L1 fell silent, what QEMU made of its CPU, and
/// that it sent an interrupt.
fn assert_kicked(out: &Output) {
    let err = text(&out.stderr);
    assert!(
        err.contains("swaplab sandbox: L1 silent for ")
            && err.contains(" s (no heartbeat); QEMU says CPU 0: RIP=")
            && err.contains("; sent it an interrupt; QEMU's threads: "),
        "{}",
        show(out)
    );
}

/// ... and, when that did not end the silence, an interrupt and an NMI.
fn assert_nmi_sent(out: &Output) {
    assert_kicked(out);
    assert!(
        text(&out.stderr).contains("swaplab sandbox: L1 still silent ")
            && text(&out.stderr).contains("; sent it an interrupt and an NMI, and will every 4 s"),
        "{}",
        show(out)
    );
}

#[test]
fn an_l1_whose_heartbeat_stops_gets_an_interrupt_on_the_kick_port() {
    if qemu_missing() {
        return;
    }
    // The command stops only the heartbeat until L1's kick reader has counted
    // two kicks: the supervisor's quiet one 2 s into the silence and the said
    // one at 4 s are lines on the swaplab.kick port (interrupts), and they
    // arrive. At most a minute.
    let script = r#"beat=$(cat /run/swaplab-heartbeat.pid); kill -STOP "$beat"; i=0
until [ "$(cat /run/swaplab-kicks 2>/dev/null)" = 2 ]; do i=$((i+1)); [ $i -le 60 ] || { kill -CONT "$beat"; echo "no kick came" >&2; exit 3; }; sleep 1; done
kill -CONT "$beat"; echo "kicks: $(cat /run/swaplab-kicks)""#;
    let out = silent_sandbox(script, "40");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_kicked(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("swaplab sandbox: L1 answered again ")
            && err.contains(" s after the last of 2 interrupts; it was silent for "),
        "{}",
        show(&out)
    );
    assert_eq!(text(&out.stdout).trim(), "kicks: 2", "{}", show(&out));
}

#[test]
fn an_l1_that_falls_silent_gets_an_nmi_and_goes_on() {
    if qemu_missing() {
        return;
    }
    // The command stops the heartbeat (every other child of L1's init, the
    // kick reader among them) until L1's NMI count rises, then lets it go on:
    // the supervisor's third kick, an interrupt and an NMI 8 s into the
    // silence, is what ends it. At most a minute of waiting, so a missing
    // NMI fails the test.
    let script = r#"stop() { for p in $(ps -o pid= --ppid 1); do [ "$p" = "$$" ] || kill -$1 "$p"; done; }
nmis() { awk '/^ *NMI:/ { print $2 }' /proc/interrupts; }
n=$(nmis); stop STOP; i=0
while [ "$(nmis)" = "$n" ]; do i=$((i+1)); [ $i -le 60 ] || { stop CONT; echo "no NMI came" >&2; exit 3; }; sleep 1; done
stop CONT; echo "NMIs: $n then $(nmis)""#;
    let out = silent_sandbox(script, "40");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = text(&out.stderr);
    assert_nmi_sent(&out);
    assert!(
        err.contains("swaplab sandbox: L1 answered again"),
        "{}",
        show(&out)
    );
    assert!(
        err.contains("swaplab sandbox: L1 fell silent once while the command ran"),
        "the closing line on the silence: {}",
        show(&out)
    );
    assert!(text(&out.stdout).starts_with("NMIs: "), "{}", show(&out));
}

#[test]
fn an_l1_that_stops_responding_is_stopped_and_named() {
    if qemu_missing() {
        return;
    }
    // The command stops every other child of L1's init, the heartbeat among
    // them, as a wedged L1 kernel would (nothing in L1 runs), then waits far
    // longer than the heartbeat limit, here 15 s.
    let start = Instant::now();
    let out = silent_sandbox(
        r#"for p in $(ps -o pid= --ppid 1); do [ "$p" = "$$" ] || kill -STOP "$p"; done; sleep 500"#,
        "15",
    );
    eprintln!("silent sandbox took {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("L1 stopped responding: no heartbeat for 15 s while the command ran"),
        "{}",
        show(&out)
    );
    assert!(err.starts_with("swaplab: ") || err.contains(sandbox::L1_UNRESPONSIVE));
    // 2 and 4 s into the silence L1 got an interrupt (QEMU was asked what
    // L1's CPU does at 4 s), then interrupts and NMIs every 4 s (which cannot wake stopped
    // processes); the error shows QEMU's view.
    assert_nmi_sent(&out);
    assert!(
        err.contains(
            "QEMU's view of L1 when it fell silent (neither interrupts nor NMIs woke it):\n  CPU 0: RIP="
        ),
        "{}",
        show(&out)
    );
    assert!(err.contains("LVT"), "info lapic's dump: {}", show(&out));
    // A bad limit is a configuration error, before anything boots.
    let out = swaplab()
        .args(["sandbox", "--", "true"])
        .env("SWAPLAB_SANDBOX_LIVENESS", "5")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("SWAPLAB_SANDBOX_LIVENESS"),
        "{}",
        show(&out)
    );
}
