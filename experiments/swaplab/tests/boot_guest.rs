//! `swaplab boot` end to end: boots of the guest image checked by what the guest
//! printed and how swaplab exited.
//!
//! Tiers: on hardware KVM the boots run here; on a host that needs the nested sandbox
//! (PVM, no KVM) they run in one sandbox session (an L1 boot costs seconds, so the
//! cases are batched in one script); without QEMU or the guest image they are skipped
//! with a printed reason. Errors found before any guest runs (missing or corrupt
//! files, bad flags) are tested everywhere.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SWAPLAB: &str = env!("CARGO_BIN_EXE_swaplab");

fn swaplab(args: &[&str]) -> Output {
    common::output_within(Command::new(SWAPLAB).args(args), common::COMMAND_LIMIT)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn errors_found_before_booting_are_quick_and_clear() {
    let dir = common::temp_dir("boot-early");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let junk = junk.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--kernel", "/nonexistent/vmlinux"],
            1,
            "cannot read kernel /nonexistent/vmlinux",
        ),
        (&["--kernel", junk], 1, "is not a Linux kernel"),
        (
            &["--initrd", junk],
            1,
            "is not an initramfs: it starts with 5a 5a",
        ),
        (&["--mem", "1M"], 2, "--mem must be"),
        (&["--cpus", "0"], 2, "--cpus must be between 1 and"),
        (&["--timeout", "0"], 2, "--timeout must be between"),
        (&["--run", ""], 2, "--run: the guest command is empty"),
    ];
    for (args, code, needle) in cases {
        let start = Instant::now();
        let mut all = vec!["boot"];
        all.extend_from_slice(args);
        let out = swaplab(&all);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("sandbox"),
            "{args:?} went to the sandbox: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{args:?} was slow"
        );
    }
}

/// A kernel of another release than the guest image's, booted with the
/// image's initramfs, is refused before booting: its modules would not load.
#[test]
fn a_kernel_the_image_has_no_modules_for_is_refused_before_booting() {
    let out = swaplab(&["image", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let release = v["kernel_version"].as_str().unwrap().to_string();
    let mut vmlinux = std::fs::read(v["vmlinux"].as_str().unwrap()).unwrap();
    // Another release of the same length in the banner: "6.1.0-57-amd64" -> "6.1.0-57-amdXX".
    let banner = format!("Linux version {release} ");
    let at = vmlinux
        .windows(banner.len())
        .position(|w| w == banner.as_bytes())
        .expect("the banner");
    let other = format!("{}XX", &release[..release.len() - 2]);
    vmlinux[at + 14..at + 14 + release.len()].copy_from_slice(other.as_bytes());
    let dir = common::temp_dir("boot-release");
    let k = dir.path().join("vmlinux");
    std::fs::write(&k, vmlinux).unwrap();
    let start = Instant::now();
    let out = swaplab(&["boot", "--kernel", k.to_str().unwrap(), "--run", "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is kernel {other}, but the guest image's initramfs holds modules for {release}"
        )) && err.contains("swaplab image --kernel-package"),
        "{err}"
    );
    assert!(!err.contains("sandbox"), "booted first: {err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// Written by the guest to its result channel: quotes, a tab, JSON-looking text.
const CHANNEL_LINE: &str = r#"exact line: {"a": 1}	'q' \ end"#;

use common::Tier;

/// Where guest boots can run here.
/// The guest image, built if needed (the cache makes this cheap after the first time).
fn image_dir() -> Result<String, String> {
    let out = swaplab(&["image", "--json"]);
    if !out.status.success() {
        return Err(format!(
            "the guest image cannot be built: {}",
            text(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v["dir"].as_str().ok_or("no dir in image JSON")?.to_string())
}

/// One boot's results.
#[derive(Debug, Default)]
struct Case {
    rc: i32,
    out: String,
    err: String,
    secs: f64,
}

/// Run every case in one shell script (here or in one sandbox session) and collect
/// each one's status, output and duration.
fn run_cases(tier: &Tier, dir: &Path, cases: &[(&str, Vec<String>)]) -> BTreeMap<String, Case> {
    let mut script = String::from("#!/bin/sh\n");
    for (name, args) in cases {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let base = dir.join(name);
        let b = base.display();
        script.push_str(&format!(
            "s=$(date +%s.%N); '{SWAPLAB}' boot --sandbox never {} >'{b}.out' 2>'{b}.err'; echo $? >'{b}.rc'; e=$(date +%s.%N); echo \"$e - $s\" | bc >'{b}.secs'\n",
            quoted.join(" ")
        ));
    }
    let path = dir.join("cases.sh");
    std::fs::write(&path, script).unwrap();
    let out = match tier {
        Tier::Native => common::output_within(Command::new("sh").arg(&path), common::COMMAND_LIMIT),
        Tier::Sandbox => common::output_within(
            Command::new(SWAPLAB)
                .args(["sandbox", "--", "sh"])
                .arg(&path),
            common::COMMAND_LIMIT,
        ),
    };
    let read = |name: &str, ext: &str| {
        std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap_or_default()
    };
    if !out.status.success() {
        let done: Vec<String> = cases
            .iter()
            .map(|(name, _)| format!("{name}: rc {:?}", read(name, "rc").trim()))
            .collect();
        panic!(
            "the case script failed ({}); cases: {}\n{}{}",
            out.status,
            done.join(", "),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    cases
        .iter()
        .map(|(name, _)| {
            let case = Case {
                rc: read(name, "rc").trim().parse().unwrap_or(-1),
                out: read(name, "out"),
                err: read(name, "err"),
                secs: read(name, "secs").trim().parse().unwrap_or(f64::NAN),
            };
            (name.to_string(), case)
        })
        .collect()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The first number after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn guest_image_boots_runs_commands_and_every_failure_is_reported() {
    let Some(tier) = common::linux_guest() else {
        return;
    };
    // The guest image is built by setup; failing to build it is a failure, not a skip.
    let image = image_dir().unwrap_or_else(|why| panic!("{why}"));
    common::retry_if_l1_panicked(|| boot_cases(&tier, &image));
}

/// Every case: good commands, bad files, failing guests.
fn boot_cases(tier: &Tier, image: &str) {
    let dir = common::temp_dir("boot-guest");
    // A truncated initramfs: a valid cpio start, without /init (the archive's end).
    let cpio = std::fs::read(Path::new(&image).join("initramfs.cpio")).unwrap();
    let trunc = dir.path().join("trunc.cpio");
    std::fs::write(&trunc, &cpio[..cpio.len().min(200_000)]).unwrap();
    // A corrupt one: a gzip header, then garbage.
    let mut gz = vec![0x1f, 0x8b, 0x08, 0x00];
    gz.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let corrupt = dir.path().join("corrupt.cpio.gz");
    std::fs::write(&corrupt, gz).unwrap();
    // An ELF header followed by garbage: only the full loader can tell.
    let mut elf = b"\x7fELF".to_vec();
    elf.extend_from_slice(&[0xa5; 4096]);
    let bad_elf = dir.path().join("bad.elf");
    std::fs::write(&bad_elf, elf).unwrap();

    let channel_file = dir.path().join("channel.lines");
    let cases = vec![
        (
            "channel",
            args(&[
                "--channel",
                channel_file.to_str().unwrap(),
                "--run",
                &format!(
                    "printf '%s\\n' '{}' > /dev/ttyS1; {}; {}; echo \"console: $SWAPLAB_CHANNEL\"",
                    CHANNEL_LINE.replace('\'', r"'\''"),
                    "swaplab-guest report --count 20 --interval-ms 0",
                    "swaplab-guest touch --mb 8 --pattern random",
                ),
            ]),
        ),
        (
            "swapfail",
            args(&[
                "--cmdline",
                "console=ttyS0 quiet panic=-1 pci=off swaplab.swap=/dev/vda",
                "--run",
                "echo should-not-run",
            ]),
        ),
        (
            "meminfo",
            args(&[
                "--mem",
                "512M",
                "--cpus",
                "2",
                "--run",
                "grep MemTotal /proc/meminfo; nproc; dmesg | grep -o 'Memory: [0-9]*K/[0-9]*K'; \
                 dmesg | grep -A3 -e 'cut here' -e 'WARNING:' -e 'BUG:' | sed 's/^/dmesg: /'",
            ]),
        ),
        (
            "virtio",
            args(&[
                "--cpus",
                "3",
                "--null-device",
                "4",
                "--null-device",
                "18",
                "--null-device",
                "3",
                "-v",
                "--run",
                "cat /sys/bus/virtio/devices/*/device; ls /dev/hvc0; nproc; printf no-newline; exit 7",
            ]),
        ),
        ("bzimage", args(&["--bzimage", "--run", "echo bz-ok"])),
        (
            "panic",
            args(&["--run", "echo c > /proc/sysrq-trigger"]),
        ),
        (
            "truncated",
            args(&["--initrd", trunc.to_str().unwrap(), "--run", "true"]),
        ),
        (
            "corrupt",
            args(&["--initrd", corrupt.to_str().unwrap(), "--run", "true"]),
        ),
        (
            "timeout",
            args(&["--run", "echo started; sleep 600", "--timeout", "30"]),
        ),
        ("badelf", args(&["--kernel", bad_elf.to_str().unwrap()])),
    ];
    // Generous limits: a loaded host slows the sandbox down a lot.
    let cases: Vec<(&str, Vec<String>)> = cases
        .into_iter()
        .map(|(name, mut a)| {
            if !a.iter().any(|x| x == "--timeout") {
                a.extend(args(&["--timeout", "120"]));
            }
            (name, a)
        })
        .collect();
    let r = run_cases(tier, dir.path(), &cases);
    let show = |name: &str| format!("{name}: {:?}", r[name]);

    // The result channel: a line written to /dev/ttyS1 arrives exactly, guest
    // programs write there (not to the console) when /init names it.
    let c = &r["channel"];
    assert_eq!(c.rc, 0, "{}", show("channel"));
    assert_eq!(c.out, "console: /dev/ttyS1\n", "{}", show("channel"));
    let chan = std::fs::read_to_string(&channel_file).unwrap();
    let lines: Vec<&str> = chan.lines().collect();
    assert_eq!(lines.first(), Some(&CHANNEL_LINE), "{chan}");
    let json: Vec<serde_json::Value> = lines[1..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = json.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    let mut expect = vec!["report"; 20];
    expect.extend(["touch", "touch", "touch_done"]);
    assert_eq!(kinds, expect, "{chan}");
    assert!(
        json[0]["mem_total_kib"].as_u64().unwrap() > 400_000,
        "{chan}"
    );
    let done = &json[22];
    assert_eq!(done["pages_touched"], 2048, "{chan}");
    assert_eq!(done["integrity_errors"], 0, "{chan}");
    assert_eq!(done["pages_verified"], 3 * 2048, "{chan}");
    // What a channel line costs: report lines back to back (each also reads two /proc
    // files). Printed, not asserted: timing depends on the host.
    let mut gaps: Vec<u64> = json[..20]
        .windows(2)
        .map(|w| w[1]["monotonic_ns"].as_u64().unwrap() - w[0]["monotonic_ns"].as_u64().unwrap())
        .collect();
    gaps.sort_unstable();
    let bytes: usize = lines[1..21].iter().map(|l| l.len() + 1).sum::<usize>() / 20;
    eprintln!(
        "channel: median {} us between {bytes}-byte report lines ({:?} tier)",
        gaps[gaps.len() / 2] / 1000,
        matches!(tier, Tier::Sandbox)
            .then_some("sandbox")
            .unwrap_or("native")
    );

    // Swap that cannot be set up fails the run and says why; the command never runs.
    let s = &r["swapfail"];
    assert_eq!(s.rc, 1, "{}", show("swapfail"));
    assert!(
        s.err
            .contains("could not run the command: swap: no block device /dev/vda"),
        "{}",
        show("swapfail")
    );
    assert!(!s.out.contains("should-not-run"), "{}", show("swapfail"));

    // 512 MiB, 2 vCPUs: the guest sees all the RAM given (the kernel's own count of
    // physical pages; only the BIOS hole below 1 MiB is missing) and both vCPUs.
    // MemTotal is what is left after the kernel's image and struct pages: ~91% with
    // Debian's generic kernel, the same as QEMU gives it.
    let m = &r["meminfo"];
    assert_eq!(m.rc, 0, "{}", show("meminfo"));
    let total_kib = 512 * 1024;
    let seen = number_after(&m.out, "K/").expect("Memory: line");
    assert!(
        seen <= total_kib && seen >= total_kib - 1024,
        "{}",
        show("meminfo")
    );
    let memtotal = number_after(&m.out, "MemTotal:").expect("MemTotal");
    assert!(
        memtotal * 100 >= total_kib * 88 && memtotal < total_kib,
        "{}",
        show("meminfo")
    );
    assert!(
        m.out.lines().any(|l| l.trim() == "2"),
        "{}",
        show("meminfo")
    );
    assert!(
        !m.out.contains("SWAPLAB-"),
        "markers leaked: {}",
        show("meminfo")
    );
    // The guest's kernel found nothing to warn about in the machine it was
    // given (in the sandbox it once warned of an XSAVE consistency problem
    // at every boot; `quiet` hid it from the console).
    assert!(
        !m.out.contains("dmesg: "),
        "the guest kernel warned: {}",
        show("meminfo")
    );
    if matches!(tier, Tier::Sandbox) {
        assert!(m.secs < 60.0, "{}", show("meminfo"));
    }

    // virtio-mmio devices described in the DSDT are found; the status and the output
    // without a final newline come through.
    let v = &r["virtio"];
    assert_eq!(v.rc, 7, "{}", show("virtio"));
    let lines: Vec<&str> = v.out.lines().collect();
    assert_eq!(
        lines,
        ["0x0004", "0x0012", "0x0003", "/dev/hvc0", "3", "no-newline"],
        "{}",
        show("virtio")
    );
    // The one the guest has a driver for (console) is activated through the transport,
    // with its queue notifications on ioeventfds; the others are only enumerated.
    let device = |ty: &str| {
        v.err
            .lines()
            .find(|l| l.contains(ty))
            .unwrap_or_else(|| panic!("no {ty} in {}", show("virtio")))
    };
    let console = device("(type 3, 0xd0002000, GSI 7)");
    assert!(
        console.contains("activations: 1, failed_activations: 0")
            && console.contains("invalid: 0,"),
        "{console}"
    );
    let rng = device("(type 4, 0xd0000000, GSI 5)");
    assert!(
        rng.contains("activations: 0,") && rng.contains("invalid: 0,"),
        "{rng}"
    );

    let b = &r["bzimage"];
    assert_eq!(
        (b.rc, b.out.as_str()),
        (0, "bz-ok\n"),
        "{}",
        show("bzimage")
    );

    let p = &r["panic"];
    assert_eq!(p.rc, 1, "{}", show("panic"));
    assert!(
        p.err.contains("the guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash; it then rebooted"),
        "{}",
        show("panic")
    );
    assert!(
        p.secs < 100.0,
        "a panic must not wait for the timeout: {}",
        show("panic")
    );

    // Without /init the kernel looks for a root device, finds none and panics.
    let i = &r["truncated"];
    assert_eq!(i.rc, 1, "{}", show("truncated"));
    assert!(
        i.err
            .contains("panicked: Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "{}",
        show("truncated")
    );
    let c = &r["corrupt"];
    assert_eq!(c.rc, 1, "{}", show("corrupt"));
    assert!(
        c.err.contains("(earlier: Initramfs unpacking failed: "),
        "{}",
        show("corrupt")
    );

    let t = &r["timeout"];
    assert_eq!(t.rc, 124, "{}", show("timeout"));
    assert_eq!(t.out, "started\n", "{}", show("timeout"));
    assert!(
        t.err.contains("did not power off within 30 s"),
        "{}",
        show("timeout")
    );
    assert!(t.secs >= 30.0 && t.secs < 90.0, "{}", show("timeout"));

    let e = &r["badelf"];
    assert_eq!(e.rc, 1, "{}", show("badelf"));
    assert!(e.err.contains("cannot load kernel"), "{}", show("badelf"));

    // Nothing is left running: no process mentions this test's files.
    let dir_str = dir.path().display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !text(&cmdline).contains(&dir_str),
            "process {} is still running: {}",
            name.to_string_lossy(),
            text(&cmdline).replace('\0', " ")
        );
    }
}
