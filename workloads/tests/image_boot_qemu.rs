//! Boots the cached guest image under QEMU's software emulation (independent
//! of this host's KVM) and checks that `/init` loads the modules, runs the
//! command from `swaplab.run` verbatim, reports its status and powers off.
//! Takes a few seconds; skipped (with the reason) when qemu-system-x86_64 is
//! not installed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use workloads::image::{ensure_image, init, ImageOptions};

const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn guest_image_boots_runs_the_command_and_powers_off() {
    let img = ensure_image(&ImageOptions::default()).expect("guest image");
    let command = r#"grep MemTotal /proc/meminfo; echo "semi;colon  'quoted'"; swaplab-guest info; lsmod | grep -c virtio; exit 42"#;
    // QEMU's microvm machine has no HPET/PM timer, and under TCG its TSC
    // calibration against the PIT sometimes fails and hangs the kernel; `pc` is reliable.
    let cmdline =
        init::cmdline_with_run(&img.manifest.cmdline.replace(" pci=off", ""), Some(command))
            .unwrap();
    let mut child = match Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-M", "pc", "-cpu", "max", "-m", "256", "-smp", "1",
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&img.vmlinux)
        .arg("-initrd")
        .arg(&img.initramfs)
        .args(["-append", &cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            base::tier::skip(
                base::tier::Tier::Qemu,
                "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)",
            );
            return;
        }
        Err(e) => panic!("starting qemu: {e}"),
    };
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guest did not power off within {TIMEOUT:?}");
        }
    };
    let status = child.wait().unwrap();
    let console = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(status.success(), "qemu {status}: {console}");
    assert!(init::find_init_uptime(&console).is_some(), "{console}");
    assert_eq!(
        init::find_end(&console),
        Some(init::GuestEnd::Exited(42)),
        "{console}"
    );
    assert!(console.contains("semi;colon  'quoted'\n"), "{console}");
    assert!(
        console.contains("{\"kind\":\"kernel\",\"release\":"),
        "{console}"
    );
    assert!(console.contains(&img.manifest.kernel_version), "{console}");
    let mem_kib: u64 = console
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {console}"));
    assert!(
        mem_kib > 150 * 1024 && mem_kib <= 256 * 1024,
        "MemTotal {mem_kib} kB"
    );
    // virtio_ring, virtio, virtio_mmio, virtio_blk, virtio_balloon, virtio_console
    assert!(
        console
            .lines()
            .any(|l| l.trim() == img.manifest.modules.len().to_string()),
        "{console}"
    );
}
