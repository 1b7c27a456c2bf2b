//! The real Debian kernel, fetched into the swaplab cache (`$SWAPLAB_CACHE` or
//! `~/.cache/swaplab`): downloaded once, then reused.

use workloads::image::{cache, elf::Elf, kernel, modules};

#[test]
fn debian_kernel_is_unpacked_with_pvh_vmlinux_and_module_index() {
    let cache = cache::default_cache_dir().expect("cache dir");
    let k = kernel::ensure_debian_kernel(&cache).expect("debian kernel");

    // Never installed into the host: everything is under the cache.
    assert!(k.dir.starts_with(&cache), "{}", k.dir.display());
    assert!(k.version.ends_with("-amd64"), "{}", k.version);
    assert!(k.modules_dir.ends_with(&k.version));

    let vmlinux = std::fs::read(&k.vmlinux).unwrap();
    let elf = Elf::parse(&vmlinux).expect("vmlinux is ELF");
    assert_eq!(elf.machine, workloads::image::elf::EM_X86_64);
    assert_eq!(elf.pvh_entry().unwrap(), Some(k.pvh_entry));
    assert!(
        k.pvh_entry > 0x10_0000 && k.pvh_entry < 0x1_0000_0000,
        "{:#x}",
        k.pvh_entry
    );

    let bz = std::fs::read(&k.bzimage).unwrap();
    let hdr = workloads::image::bzimage::SetupHeader::parse(&bz).unwrap();
    assert!(hdr.kernel_version.unwrap().starts_with(&k.version));

    // The guest's modules, in load order.
    let m = modules::closure(
        &k.modules_dir,
        &[
            "virtio_mmio",
            "virtio_blk",
            "virtio_balloon",
            "virtio_console",
        ],
    )
    .unwrap();
    let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
    };
    assert!(pos("virtio_ring") < pos("virtio"));
    assert!(pos("virtio") < pos("virtio_blk") && pos("virtio") < pos("virtio_mmio"));
    assert!(m.iter().all(|m| m.path.is_file()));

    // The nested sandbox's modules.
    let m = modules::closure(&k.modules_dir, &["kvm_amd", "9pnet_virtio", "9p"]).unwrap();
    let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
    for n in ["kvm", "irqbypass", "kvm_amd", "9pnet", "9pnet_virtio", "9p"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // A second call is a cache hit returning the same files.
    let again = kernel::ensure_debian_kernel(&cache).unwrap();
    assert_eq!(again, k);
}

#[test]
fn unknown_metapackage_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = kernel::ensure_kernel(dir.path(), "linux-image-swaplab-nonexistent").unwrap_err();
    assert!(
        matches!(err, kernel::KernelError::NoCandidate(ref p) if p == "linux-image-swaplab-nonexistent"),
        "{err}"
    );
    assert!(err.to_string().contains("apt-get update"));
}
