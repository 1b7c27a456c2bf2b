//! Runs the generated `/init` under the host's busybox `sh`, with the commands
//! that need a real guest (mount, insmod, poweroff, ...) replaced by shell
//! functions that log, to check module order, command decoding (quotes,
//! semicolons, spaces) and the console markers.

use std::path::Path;
use std::process::Command;

use workloads::image::{busybox, init};

const STUBS: &str = r#"
log() { echo "$*" >> "$SWAPLAB_TEST_LOG"; }
mount() { log "mount $*"; }
mkdir() { :; }
cd() { :; }
sync() { :; }
insmod() { log "insmod $1"; case "$1" in *broken*) return 1 ;; esac; }
poweroff() { log "poweroff $*"; exit 0; }
reboot() { log "reboot $*"; exit 0; }
sh() { busybox sh "$@"; }
base64() { busybox base64 "$@"; }
cat() { busybox cat "$@"; }
"#;

struct Run {
    console: String,
    log: String,
}

fn run_init(modules: &[&str], cmdline: &str) -> Option<Run> {
    let bb = match busybox::find(None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let modules: Vec<String> = modules.iter().map(|s| s.to_string()).collect();
    std::fs::write(d.join("init"), init::script(&modules).unwrap()).unwrap();
    std::fs::write(d.join("stubs"), STUBS).unwrap();
    std::fs::write(d.join("cmdline"), format!("{cmdline}\n")).unwrap();
    // busybox must be callable as `busybox` from the stubs.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&bb.path, bin.join("busybox")).unwrap();
    let out = Command::new(&bb.path)
        .args(["sh", "-c", ". ./stubs; PATH=\"$PWD/bin:$PATH\"; . ./init"])
        .current_dir(d)
        .env("SWAPLAB_CMDLINE_FILE", d.join("cmdline"))
        .env("SWAPLAB_TEST_LOG", d.join("log"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Run {
        console: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: std::fs::read_to_string(d.join("log")).unwrap_or_default(),
    })
}

#[test]
fn runs_the_encoded_command_verbatim_and_reports_its_status() {
    let cmd = r#"printf '[%s]' "a  b" 'c;d' "e'f" 'g"h' '$HOME' '*'; echo; exit 7"#;
    let cmdline = init::cmdline_with_run("console=ttyS0 quiet foo=\"x y\" *", Some(cmd)).unwrap();
    let Some(r) = run_init(
        &["/lib/modules/v/virtio_ring.ko", "/lib/modules/v/virtio.ko"],
        &cmdline,
    ) else {
        return;
    };
    assert!(
        r.console.starts_with("SWAPLAB-INIT uptime="),
        "{}",
        r.console
    );
    assert!(init::find_init_uptime(&r.console).is_some());
    assert!(
        r.console.contains("[a  b][c;d][e'f][g\"h][$HOME][*]\n"),
        "{}",
        r.console
    );
    assert_eq!(init::find_end(&r.console), Some(init::GuestEnd::Exited(7)));
    let insmods: Vec<&str> = r.log.lines().filter(|l| l.starts_with("insmod")).collect();
    assert_eq!(
        insmods,
        [
            "insmod /lib/modules/v/virtio_ring.ko",
            "insmod /lib/modules/v/virtio.ko"
        ]
    );
    for fs in ["proc /proc", "sysfs /sys", "devtmpfs /dev"] {
        assert!(r.log.contains(fs), "{fs} not mounted: {}", r.log);
    }
    assert!(r.log.trim_end().ends_with("poweroff -f"), "{}", r.log);
}

#[test]
fn default_mode_runs_swaplab_guest_info() {
    let Some(r) = run_init(&[], "console=ttyS0 quiet") else {
        return;
    };
    // Not installed on the host: sh reports it and the status is 127,
    // which shows the default command was attempted.
    assert_eq!(
        init::find_end(&r.console),
        Some(init::GuestEnd::Exited(127))
    );
}

#[test]
fn bad_encoding_fails_clearly_without_running_anything() {
    let Some(r) = run_init(&[], "quiet swaplab.run=not-base64!") else {
        return;
    };
    match init::find_end(&r.console) {
        Some(init::GuestEnd::Failed(reason)) => assert!(reason.contains("base64"), "{reason}"),
        other => panic!("{other:?}: {}", r.console),
    }
    assert!(!r.console.contains("SWAPLAB-EXIT"));
    assert!(r.log.contains("poweroff -f"));
}

#[test]
fn failed_insmod_stops_with_a_fail_marker() {
    let cmdline = init::cmdline_with_run("quiet", Some("echo should-not-run")).unwrap();
    let Some(r) = run_init(
        &[
            "/lib/modules/v/ok.ko",
            "/lib/modules/v/broken.ko",
            "/lib/modules/v/after.ko",
        ],
        &cmdline,
    ) else {
        return;
    };
    assert_eq!(
        init::find_end(&r.console),
        Some(init::GuestEnd::Failed(
            "insmod /lib/modules/v/broken.ko".into()
        ))
    );
    assert!(!r.console.contains("should-not-run"));
    assert!(!r.log.contains("after.ko"));
}

#[test]
fn script_is_valid_busybox_sh_syntax() {
    let Ok(bb) = busybox::find(None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("init");
    std::fs::write(&p, init::script(&["/lib/modules/x.ko".into()]).unwrap()).unwrap();
    let st = Command::new(&bb.path)
        .args(["sh", "-n"])
        .arg(Path::new(&p))
        .status()
        .unwrap();
    assert!(st.success());
}
