//! Runs the generated `/init` under the host's busybox `sh`, with the commands
//! that need a real guest (mount, insmod, poweroff, ...) replaced by shell
//! functions that log, to check module order, command decoding (quotes,
//! semicolons, spaces) and the console markers.

use std::path::Path;
use std::process::Command;

use workloads::image::{busybox, init};

const STUBS: &str = r#"
log() { echo "$*" >> "$SWAPLAB_TEST_LOG"; }
mount() { log "mount $*"; case "$*" in *ext4*) [ -z "$SWAPLAB_TEST_MOUNT_FAIL" ] || { echo "mount: wrong fs type"; return 1; } ;; esac; }
chroot() { log "chroot $1"; shift; busybox "$@"; }
ip() { log "ip $*"; }
mkdir() { :; }
cd() { :; }
sync() { :; }
insmod() { log "insmod $1"; case "$1" in *broken*) return 1 ;; esac; }
poweroff() { log "poweroff $*"; exit 0; }
reboot() { log "reboot $*"; exit 0; }
sh() { busybox sh "$@"; }
base64() { busybox base64 "$@"; }
cat() { busybox cat "$@"; }
sleep() { :; }
stty() { log "stty $*"; }
# Device nodes: the ones named in $SWAPLAB_TEST_HAVE exist.
test() {
    case "$1" in
        -b|-c) case " $SWAPLAB_TEST_HAVE " in *" $2 "*) return 0 ;; esac; return 1 ;;
        -f) case "$2" in /newroot/*) [ -n "$SWAPLAB_TEST_ROOTFS" ]; return ;; esac; [ "$@" ] ;;
        *) [ "$@" ] ;;
    esac
}
mkswap() { log "mkswap $*"; case "$1" in *bad*) echo "mkswap: $1: cannot open"; echo "second line"; return 1 ;; esac; echo "Setting up swapspace"; }
swapon() { log "swapon $*"; }
"#;

struct Run {
    console: String,
    log: String,
    /// What `/init` wrote to the kernel log (`SWAPLAB_KMSG`).
    kmsg: String,
}

fn run_init(modules: &[&str], cmdline: &str) -> Option<Run> {
    run_init_env(modules, cmdline, &[])
}

/// [`run_init`] with extra environment variables (the stubs read `SWAPLAB_TEST_HAVE`).
fn run_init_env(modules: &[&str], cmdline: &str, env: &[(&str, &str)]) -> Option<Run> {
    let bb = match busybox::find(None) {
        Ok(b) => b,
        Err(e) => {
            base::tier::skip(base::tier::Tier::Tool, &e.to_string());
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let modules: Vec<String> = modules.iter().map(|s| s.to_string()).collect();
    let root_modules = [
        "/lib/modules/v/crc16.ko".to_string(),
        "/lib/modules/v/ext4.ko".into(),
    ];
    std::fs::write(
        d.join("init"),
        init::script(&modules, &root_modules).unwrap(),
    )
    .unwrap();
    // Two virtio disks, as /sys/block shows them: the swap disk, the root disk.
    for (dev, serial) in [("vda", "swaplab-swap"), ("vdb", "swaplab-root")] {
        let b = d.join("sys-block").join(dev);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("serial"), format!("{serial}\n")).unwrap();
    }
    std::fs::write(d.join("stubs"), STUBS).unwrap();
    std::fs::write(d.join("cmdline"), format!("{cmdline}\n")).unwrap();
    std::fs::write(
        d.join("swaps"),
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda                                partition\t262140\t\t0\t\t-2\n",
    )
    .unwrap();
    // busybox must be callable as `busybox` from the stubs.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&bb.path, bin.join("busybox")).unwrap();
    let out = Command::new(&bb.path)
        .args(["sh", "-c", ". ./stubs; PATH=\"$PWD/bin:$PATH\"; . ./init"])
        .current_dir(d)
        .env("SWAPLAB_CMDLINE_FILE", d.join("cmdline"))
        .env("SWAPLAB_TEST_LOG", d.join("log"))
        .env("SWAPLAB_SYS_BLOCK", d.join("sys-block"))
        .env("SWAPLAB_KMSG", d.join("kmsg"))
        .env(
            "SWAPLAB_SWAPS_FILE",
            std::env::current_dir().unwrap().join(d.join("swaps")),
        )
        .envs(env.iter().copied())
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
        kmsg: std::fs::read_to_string(d.join("kmsg")).unwrap_or_default(),
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
    // Also through the kernel's synchronous console write, which poweroff
    // does not cut off; the parser finds it after the kernel's timestamp.
    assert_eq!(r.kmsg, "<3>SWAPLAB-EXIT 7\n");
    assert_eq!(
        init::find_end("[   12.345678] SWAPLAB-EXIT 7\n"),
        Some(init::GuestEnd::Exited(7))
    );
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
    std::fs::write(
        &p,
        init::script(&["/lib/modules/x.ko".into()], &[]).unwrap(),
    )
    .unwrap();
    let st = Command::new(&bb.path)
        .args(["sh", "-n"])
        .arg(Path::new(&p))
        .status()
        .unwrap();
    assert!(st.success());
}

fn params(swap: Option<&str>, channel: bool, cmd: &str) -> String {
    init::cmdline_with(
        "console=ttyS0 quiet",
        &init::InitParams {
            run: Some(cmd.into()),
            swap: swap.map(str::to_string),
            channel,
            root: None,
        },
    )
    .unwrap()
}

#[test]
fn swap_is_made_and_switched_on_before_the_command() {
    let cmd = r#"echo "command ran" >> "$SWAPLAB_TEST_LOG"; echo ran"#;
    let Some(r) = run_init_env(
        &["/lib/modules/v/virtio_blk.ko"],
        &params(Some("/dev/vda"), false, cmd),
        &[("SWAPLAB_TEST_HAVE", "/dev/vda")],
    ) else {
        return;
    };
    assert_eq!(
        init::find_swap(&r.console),
        Some(init::SwapSetup::On(262_140 * 1024)),
        "{}",
        r.console
    );
    assert!(
        r.console.contains("SWAPLAB-SWAP ok 268431360\nran\n"),
        "{}",
        r.console
    );
    assert!(
        !r.console.contains("Setting up"),
        "mkswap's chatter stays off the console"
    );
    assert_eq!(init::find_end(&r.console), Some(init::GuestEnd::Exited(0)));
    let order: Vec<&str> = r.log.lines().filter(|l| !l.starts_with("mount")).collect();
    assert_eq!(
        order,
        [
            "ip link set lo up",
            "insmod /lib/modules/v/virtio_blk.ko",
            "mkswap /dev/vda",
            "swapon /dev/vda",
            "command ran",
            // The console drains (stty's TCSETSW) before the kernel's copy of
            // the exit marker; the stub prints no settings back.
            "stty -g",
            "stty ",
            "poweroff -f"
        ]
    );
}

#[test]
fn a_swap_failure_stops_the_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let two_areas = dir.path().join("swaps");
    std::fs::write(
        &two_areas,
        "Filename Type Size Used Priority\n/dev/x partition 100 0 -2\n/dev/y partition 200 0 -3\n",
    )
    .unwrap();
    let two_areas = two_areas.to_str().unwrap();
    let cases = [
        ("/dev/vdz", "/dev/vda", None, "no block device /dev/vdz"),
        (
            "/dev/bad0",
            "/dev/bad0",
            None,
            "mkswap /dev/bad0: mkswap: /dev/bad0: cannot open second line",
        ),
        (
            "/dev/vdb",
            "/dev/vdb",
            Some(two_areas),
            "/dev/vdb is not in /proc/swaps after swapon",
        ),
    ];
    for (dev, have, swaps, reason) in cases {
        let mut env = vec![("SWAPLAB_TEST_HAVE", have)];
        env.extend(swaps.map(|s| ("SWAPLAB_SWAPS_FILE", s)));
        let Some(r) = run_init_env(
            &[],
            &params(
                Some(dev),
                false,
                r#"echo "command ran" >> "$SWAPLAB_TEST_LOG""#,
            ),
            &env,
        ) else {
            return;
        };
        assert_eq!(
            init::find_swap(&r.console),
            Some(init::SwapSetup::Failed(reason.into())),
            "{}",
            r.console
        );
        assert_eq!(
            init::find_end(&r.console),
            Some(init::GuestEnd::Failed(format!("swap: {reason}")))
        );
        assert!(!r.log.contains("command ran"), "{}", r.log);
        assert!(r.log.contains("poweroff -f"));
    }
    // A single area under another name (the device was a symlink) is the one.
    let r = run_init_env(
        &[],
        &params(Some("/dev/disk/swap"), false, "true"),
        &[("SWAPLAB_TEST_HAVE", "/dev/disk/swap")],
    )
    .unwrap();
    assert_eq!(
        init::find_swap(&r.console),
        Some(init::SwapSetup::On(262_140 * 1024))
    );
}

#[test]
fn the_channel_is_exported_to_the_command_in_raw_mode() {
    let cmd = r#"echo "chan=${SWAPLAB_CHANNEL-unset}""#;
    let with = run_init_env(
        &[],
        &params(None, true, cmd),
        &[("SWAPLAB_TEST_HAVE", "/dev/ttyS1")],
    );
    let Some(with) = with else { return };
    assert!(
        with.console.contains("chan=/dev/ttyS1\n"),
        "{}",
        with.console
    );
    assert!(
        with.log.contains("stty -F /dev/ttyS1 raw -echo"),
        "{}",
        with.log
    );
    let without = run_init_env(
        &[],
        &params(None, false, cmd),
        &[("SWAPLAB_TEST_HAVE", "/dev/ttyS1")],
    )
    .unwrap();
    assert!(
        without.console.contains("chan=unset\n"),
        "{}",
        without.console
    );
    let missing = run_init_env(&[], &params(None, true, cmd), &[]).unwrap();
    assert_eq!(
        init::find_end(&missing.console),
        Some(init::GuestEnd::Failed(
            "swaplab.channel=1 but /dev/ttyS1 does not exist".into()
        ))
    );
}

fn with_root(swap: Option<&str>, serial: &str, cmd: &str) -> String {
    init::cmdline_with(
        "console=ttyS0 quiet",
        &init::InitParams {
            run: Some(cmd.into()),
            swap: swap.map(str::to_string),
            channel: false,
            root: Some(serial.into()),
        },
    )
    .unwrap()
}

#[test]
fn the_root_disk_is_found_by_serial_mounted_and_entered() {
    let Some(r) = run_init_env(
        &["/lib/modules/v/virtio_blk.ko"],
        &with_root(Some("/dev/vda"), "swaplab-root", "echo in-root; exit 4"),
        &[
            ("SWAPLAB_TEST_HAVE", "/dev/vda"),
            ("SWAPLAB_TEST_ROOTFS", "1"),
        ],
    ) else {
        return;
    };
    assert!(
        r.console.contains("SWAPLAB-ROOT ok /dev/vdb\nin-root\n"),
        "{}",
        r.console
    );
    assert_eq!(init::find_end(&r.console), Some(init::GuestEnd::Exited(4)));
    let log: Vec<&str> = r.log.lines().collect();
    let at = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {log:#?}"))
    };
    // Swap first, then the root modules, the mount, the binds, chroot.
    assert!(at("swapon /dev/vda") < at("insmod /lib/modules/v/crc16.ko"));
    assert!(at("crc16.ko") < at("ext4.ko"));
    assert!(at("ext4.ko") < at("mount -t ext4 -o noatime /dev/vdb /newroot"));
    for bind in [
        "/proc /newroot/proc",
        "/sys /newroot/sys",
        "/dev /newroot/dev",
    ] {
        assert!(at(bind) < at("chroot /newroot"), "{bind}");
    }
    assert!(at("/usr/bin/swaplab-guest /newroot/usr/local/bin/swaplab-guest") < at("chroot"));
}

#[test]
fn root_disk_failures_end_the_run_with_a_reason() {
    let fails = |cmdline: &str, env: &[(&str, &str)]| -> String {
        let r = run_init_env(&[], cmdline, env).expect("busybox");
        assert!(!r.console.contains("should-not-run"), "{}", r.console);
        assert!(!r.log.contains("chroot"), "{}", r.log);
        match init::find_end(&r.console) {
            Some(init::GuestEnd::Failed(why)) => why,
            other => panic!("{other:?}: {}", r.console),
        }
    };
    // Without busybox this records the skip (and fails where the tier is required).
    if run_init_env(&[], "quiet", &[]).is_none() {
        return;
    }
    let cmd = "echo should-not-run";
    let have = ("SWAPLAB_TEST_HAVE", "/dev/vda");
    let rootfs = ("SWAPLAB_TEST_ROOTFS", "1");
    assert_eq!(
        fails(&with_root(None, "other-serial", cmd), &[rootfs]),
        "root: no virtio disk with serial other-serial"
    );
    assert_eq!(
        fails(
            &with_root(Some("/dev/vda"), "swaplab-swap", cmd),
            &[have, rootfs]
        ),
        "root: /dev/vda is both the root disk and the swap device"
    );
    let why = fails(&with_root(None, "swaplab-root", cmd), &[]);
    assert!(why.contains("/dev/vdb is not a swaplab root disk"), "{why}");
    let why = fails(
        &with_root(None, "swaplab-root", cmd),
        &[rootfs, ("SWAPLAB_TEST_MOUNT_FAIL", "1")],
    );
    assert!(
        why.starts_with("root: mount /dev/vdb: mount: wrong fs type"),
        "{why}"
    );
}
