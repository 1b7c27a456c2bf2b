//! Builds the real guest image into the swaplab cache (`$SWAPLAB_CACHE` or
//! `~/.cache/swaplab`; the first run downloads the kernel and builds the static
//! guest programs, later runs find them) and checks what is in it.

use workloads::image::cpio::{read_entries, CpioEntry, EntryKind};
use workloads::image::elf::Elf;
use workloads::image::{ensure_image, init, GuestImage, ImageOptions, DEFAULT_MODULES};

fn entry<'a>(entries: &'a [CpioEntry], name: &str) -> &'a CpioEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} missing from the initramfs"))
}

fn check_image(img: &GuestImage) {
    let m = &img.manifest;
    assert!(img.dir.ends_with(&m.key));
    assert!(img.dir.join("manifest.json").is_file());

    // vmlinux: x86-64 ELF with the PVH note the manifest reports.
    let vmlinux = std::fs::read(&img.vmlinux).unwrap();
    let elf = Elf::parse(&vmlinux).unwrap();
    assert_eq!(elf.pvh_entry().unwrap(), Some(m.pvh_entry));
    assert_eq!(m.pvh_entry_hex, format!("{:#x}", m.pvh_entry));
    assert_eq!(m.sizes.vmlinux, vmlinux.len() as u64);
    let bz = std::fs::read(&img.bzimage).unwrap();
    assert_eq!(&bz[0x202..0x206], b"HdrS");
    assert!(m
        .kernel_version_string
        .as_deref()
        .unwrap()
        .starts_with(&m.kernel_version));

    // initramfs: /init, busybox (static) with applets, modules, guest program, console.
    let cpio = std::fs::read(&img.initramfs).unwrap();
    assert_eq!(m.sizes.initramfs, cpio.len() as u64);
    let entries = read_entries(&cpio).unwrap();
    let init_entry = entry(&entries, "init");
    assert_eq!(init_entry.kind(), EntryKind::File);
    assert_eq!(init_entry.mode & 0o111, 0o111);
    let script = String::from_utf8(init_entry.data.clone()).unwrap();
    assert!(script.starts_with("#!/bin/sh"));

    let bb = entry(&entries, "bin/busybox");
    assert!(
        !Elf::parse(&bb.data).unwrap().has_interpreter().unwrap(),
        "busybox must be static"
    );
    for applet in [
        "bin/sh",
        "sbin/insmod",
        "sbin/poweroff",
        "bin/mount",
        "bin/base64",
    ] {
        let e = entry(&entries, applet);
        assert_eq!(e.kind(), EntryKind::Symlink, "{applet}");
        assert_eq!(e.data, b"/bin/busybox");
    }
    let guest = entry(&entries, "usr/bin/swaplab-guest");
    assert!(
        !Elf::parse(&guest.data).unwrap().has_interpreter().unwrap(),
        "swaplab-guest must be static"
    );
    assert_eq!(entry(&entries, "dev/console").rdev, (5, 1));

    // Every requested module is there (with its dependencies first), as an
    // uncompressed ELF object, and /init loads them in the manifest's order.
    let names: Vec<&str> = m.modules.iter().map(|x| x.name.as_str()).collect();
    for want in DEFAULT_MODULES {
        assert!(names.contains(want), "{want} not in {names:?}");
    }
    assert!(
        names.iter().position(|n| *n == "virtio").unwrap()
            < names.iter().position(|n| *n == "virtio_mmio").unwrap()
    );
    assert_eq!(names[0], "virtio_ring");
    let mut last = 0;
    for module in &m.modules {
        let e = entry(&entries, module.path.trim_start_matches('/'));
        assert_eq!(
            Elf::parse(&e.data).unwrap().kind,
            workloads::image::elf::ET_REL,
            "{}",
            module.path
        );
        let at = script
            .find(&module.path)
            .unwrap_or_else(|| panic!("/init does not load {}", module.path));
        assert!(at > last, "/init loads {} out of order", module.path);
        last = at;
    }
    assert!(script.contains(init::EXIT_MARKER));
}

#[test]
fn builds_cached_image_with_kernel_busybox_modules_and_guest_program() {
    let img = ensure_image(&ImageOptions::default()).expect("guest image");
    check_image(&img);

    // Unchanged inputs: found, not rebuilt.
    let again = ensure_image(&ImageOptions::default()).unwrap();
    assert!(!again.built);
    assert_eq!(again.dir, img.dir);
    assert_eq!(again.manifest, img.manifest);

    // Another module set is another image.
    let mut opts = ImageOptions::default();
    opts.modules.push("zram".into());
    let with_zram = ensure_image(&opts).unwrap();
    assert_ne!(with_zram.manifest.key, img.manifest.key);
    assert!(with_zram.manifest.modules.iter().any(|m| m.name == "zram"));
    check_image(&with_zram);

    // --force rebuilds the same bytes (the build is deterministic). Done on the
    // zram variant so that guests booting the default image are not disturbed.
    let before = std::fs::read(&with_zram.initramfs).unwrap();
    let forced = ensure_image(&ImageOptions {
        force: true,
        ..opts
    })
    .unwrap();
    assert!(forced.built);
    assert_eq!(forced.dir, with_zram.dir);
    assert_eq!(std::fs::read(&forced.initramfs).unwrap(), before);
    check_image(&forced);
}

#[test]
fn unknown_module_is_a_clear_error() {
    let mut opts = ImageOptions::default();
    opts.modules.push("virtio_nonexistent".into());
    let err = ensure_image(&opts).unwrap_err();
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("virtio_nonexistent"), "{chain}");
}
