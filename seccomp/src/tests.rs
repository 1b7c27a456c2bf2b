use super::*;
use std::process::Command;

#[test]
fn syscall_table_matches_libc() {
    for &(nr, name) in syscalls_check::PAIRS {
        assert_eq!(syscall_name(nr), name, "syscall {nr}");
    }
    assert_eq!(syscall_name(-1), "unknown");
    assert_eq!(syscall_name(100_000), "unknown");
    // A hole in the numbering (x86_64 leaves 335..=423 unused).
    assert_eq!(syscall_name(400), "unknown");
}

#[test]
fn every_class_compiles_and_names_round_trip() {
    for class in ThreadClass::ALL {
        let prog = program(class).unwrap_or_else(|e| panic!("{e}"));
        assert!(!prog.is_empty(), "{class}");
        assert_eq!(ThreadClass::from_name(class.name()), Some(class));
        let allowed = class.allowed();
        assert!(
            !allowed.contains(&PROBE_SYSCALL),
            "{class} allows the probe syscall"
        );
        for nr in [
            libc::SYS_execve,
            libc::SYS_fork,
            libc::SYS_ptrace,
            libc::SYS_kill,
        ] {
            assert!(
                !allowed.contains(&nr),
                "{class} allows {}",
                syscall_name(nr)
            );
        }
        for nr in [
            libc::SYS_write,
            libc::SYS_futex,
            libc::SYS_mmap,
            libc::SYS_exit_group,
        ] {
            assert!(allowed.contains(&nr), "{class} lacks {}", syscall_name(nr));
        }
    }
    assert_eq!(ThreadClass::from_name("nope"), None);
}

#[test]
fn vcpu_allows_what_the_device_threads_it_spawns_allow() {
    // The blk and balloon workers start on a vCPU and inherit its filter.
    let vcpu = ThreadClass::Vcpu.allowed();
    for class in [ThreadClass::BlkWorker, ThreadClass::Balloon] {
        for nr in class.allowed() {
            assert!(
                vcpu.contains(&nr),
                "vcpu lacks {} that {class} needs",
                syscall_name(nr)
            );
        }
    }
}

#[test]
fn message_names_thread_and_syscall() {
    let line = message(b"vcpu0", libc::SYS_getpgid);
    assert_eq!(
        std::str::from_utf8(&line.buf[..line.len]).unwrap(),
        "swaplab: seccomp: thread vcpu0 made a forbidden syscall getpgid (121); \
         rerun with --no-seccomp to run without filters\n"
    );
    let long = [b'x'; 300];
    let line = message(&long, -1);
    assert_eq!(line.len, line.buf.len(), "truncated, not overflowed");
}

/// What the child run of this test binary does (`SWAPLAB_SECCOMP_TEST_CHILD`).
const CHILD_ENV: &str = "SWAPLAB_SECCOMP_TEST_CHILD";

/// Not a test by itself: the body of the child process the tests below start.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t = std::thread::Builder::new()
        .name("seccomp-child".into())
        .spawn(move || {
            apply(ThreadClass::SwapperHandler).unwrap();
            // Allowed: allocation, time, a file already open, a futex.
            let v = vec![7u8; 1 << 20];
            let _ = std::time::Instant::now();
            let m = std::sync::Mutex::new(v.len());
            eprintln!("allowed ok {}", *m.lock().unwrap());
            if mode == "forbidden" {
                // SAFETY: no memory arguments; trapped by the filter.
                unsafe { libc::syscall(libc::SYS_getpgid, 0) };
                eprintln!("still alive");
            }
        })
        .unwrap();
    t.join().unwrap();
}

fn run_child(mode: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "tests::child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn filtered_thread_runs_allowed_syscalls_and_dies_on_a_forbidden_one() {
    let ok = run_child("allowed", &[]);
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{err}");
    assert!(err.contains("allowed ok 1048576"), "{err}");

    let bad = run_child("forbidden", &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(EXIT_STATUS), "{err}");
    assert!(err.contains("allowed ok"), "{err}");
    assert!(!err.contains("still alive"), "{err}");
    assert!(
        err.contains(
            "swaplab: seccomp: thread seccomp-child made a forbidden syscall getpgid (121); \
             rerun with --no-seccomp"
        ),
        "{err}"
    );
}

#[test]
fn probe_hook_trips_the_named_class_only() {
    let hit = run_child("allowed", &[(PROBE_ENV, "swapper-fault")]);
    let err = String::from_utf8_lossy(&hit.stderr);
    assert_eq!(hit.status.code(), Some(EXIT_STATUS), "{err}");
    assert!(
        err.contains("thread seccomp-child made a forbidden syscall getpgid"),
        "{err}"
    );
    assert!(!err.contains("allowed ok"), "{err}");

    let miss = run_child("allowed", &[(PROBE_ENV, "vcpu")]);
    assert!(
        miss.status.success(),
        "{}",
        String::from_utf8_lossy(&miss.stderr)
    );
}

#[test]
#[ignore = "prints the allow-lists (for the README)"]
fn print_allow_lists() {
    for class in ThreadClass::ALL {
        let names: Vec<&str> = class.allowed().into_iter().map(syscall_name).collect();
        println!("{class} ({}): {}", names.len(), names.join(" "));
    }
}

#[test]
fn classes_that_reach_the_swapper_may_use_its_ioctls() {
    // UFFDIO_COPY from the blk worker's page install (false-read mitigation),
    // the balloon's page release, a lower limit set over the control socket.
    for class in [
        ThreadClass::BlkWorker,
        ThreadClass::Balloon,
        ThreadClass::ControlSocket,
        ThreadClass::SwapperHandler,
        ThreadClass::SwapperEvictor,
        ThreadClass::SwapperRemote,
    ] {
        assert!(class.allowed().contains(&libc::SYS_ioctl), "{class}");
        assert!(class.allowed().contains(&libc::SYS_fallocate), "{class}");
    }
}

#[test]
fn only_a_remote_store_s_swapper_threads_open_sockets() {
    let remote = ThreadClass::SwapperRemote.allowed();
    for nr in [
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
    ] {
        assert!(remote.contains(&nr), "{}", syscall_name(nr));
        for class in [ThreadClass::SwapperHandler, ThreadClass::SwapperEvictor] {
            assert!(
                !class.allowed().contains(&nr),
                "{class}: {}",
                syscall_name(nr)
            );
        }
    }
}
