//! The nested sandbox's L1 kernel: Debian's `linux-image-amd64` from
//! bookworm-backports, fetched through a private apt setup under the swaplab
//! cache (`$SWAPLAB_CACHE` or `~/.cache/swaplab`): downloaded once, then reused
//! without the network.

use workloads::image::kernel::{self, KernelSource, BACKPORTS_SUITE, DEFAULT_METAPACKAGE};
use workloads::image::{cache, elf::Elf, modules};

#[test]
fn backports_kernel_is_new_enough_for_uffd_move_and_kept_apart() {
    let cache = cache::default_cache_dir().expect("cache dir");
    let source = KernelSource::debian_suite(BACKPORTS_SUITE);
    let k = kernel::ensure_kernel_from(&cache, &source, DEFAULT_METAPACKAGE, None)
        .expect("bookworm-backports kernel");

    assert!(
        k.dir.starts_with(cache.join("kernels")),
        "{}",
        k.dir.display()
    );
    assert_eq!(k.record.source, BACKPORTS_SUITE);
    // UFFD_FEATURE_MOVE needs Linux 6.8.
    let mut nums = k
        .version
        .split(['.', '-', '+'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap(), nums.next().unwrap());
    assert!((major, minor) >= (6, 8), "{}", k.version);

    let vmlinux = std::fs::read(&k.vmlinux).unwrap();
    let elf = Elf::parse(&vmlinux).expect("vmlinux is ELF");
    assert_eq!(elf.pvh_entry().unwrap(), Some(k.pvh_entry));

    // Everything L1's initramfs loads is there (some may be built in).
    let m = modules::closure(
        &k.modules_dir,
        &[
            "virtio_mmio",
            "virtio_console",
            "qemu_fw_cfg",
            "9pnet_virtio",
            "9p",
            "kvm_amd",
        ],
    )
    .unwrap();
    let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
    for n in ["kvm", "kvm_amd", "9pnet", "9p", "virtio_mmio"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    // The guest image's lookups (the host's apt) never return it, and a second
    // call is a cache hit.
    assert!(kernel::cached_kernels(&cache, DEFAULT_METAPACKAGE)
        .iter()
        .all(|h| h.dir != k.dir));
    let again = kernel::ensure_kernel_from(&cache, &source, DEFAULT_METAPACKAGE, None).unwrap();
    assert_eq!(again, k);
}
