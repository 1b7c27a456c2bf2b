//! `swaplab image` end to end (uses the shared cache; cheap once the image exists).

use std::process::Command;

fn swaplab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_manifest_then_up_to_date() {
    let out = swaplab(&["image", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    for f in ["bzimage", "vmlinux", "initramfs", "dir"] {
        let p = v[f].as_str().unwrap_or_else(|| panic!("no {f}"));
        assert!(
            std::path::Path::new(p).is_absolute() && std::path::Path::new(p).exists(),
            "{f}: {p}"
        );
    }
    assert!(v["pvh_entry"].as_u64().unwrap() > 0);
    assert!(v["kernel_version"].as_str().unwrap().ends_with("-amd64"));
    let mods: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in [
        "virtio_ring",
        "virtio",
        "virtio_mmio",
        "virtio_blk",
        "virtio_balloon",
        "virtio_console",
    ] {
        assert!(mods.contains(&m), "{m} not in {mods:?}");
    }

    let out = swaplab(&["image"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("guest image up to date: "), "{text}");
    assert!(text.contains(v["dir"].as_str().unwrap()));
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["image", "--module", "no_such_module_x"][..],
        &["image", "--compress", "lzma"],
        &["image", "--kernel-package", "linux image"],
        &["image", "--kernel-package", "linux-image-amd64@"],
        &["image", "--kernel-package", "@bookworm-backports"],
    ] {
        let out = swaplab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("swaplab image: "))
            .collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].starts_with("swaplab: "), "{err}");
        assert!(!err.contains("panicked"));
    }
}
