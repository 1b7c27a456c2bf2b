//! Tests of the copy-on-write overlay ([`super`]).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::*;

/// A base image (never containing a zero byte) and an empty scratch directory.
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    scratch: PathBuf,
    data: Vec<u8>,
}

fn fixture(len: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    let data: Vec<u8> = (0..len)
        .map(|i| ((i * 7 + i / BLOCK) % 255 + 1) as u8)
        .collect();
    std::fs::write(&base, &data).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    Fixture {
        _dir: dir,
        base,
        scratch,
        data,
    }
}

impl Fixture {
    fn open(&self) -> Overlay {
        Overlay::open(&self.base, &self.scratch).unwrap()
    }

    /// The base as the overlay sees it (rounded down to a sector).
    fn model(&self) -> Vec<u8> {
        self.data[..self.data.len() / 512 * 512].to_vec()
    }

    fn assert_base_intact(&self) {
        assert!(
            std::fs::read(&self.base).unwrap() == self.data,
            "base modified"
        );
    }

    fn assert_scratch_empty(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.scratch).unwrap().collect();
        assert!(names.is_empty(), "scratch directory holds {names:?}");
    }
}

fn read(ov: &mut Overlay, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xeeu8; len];
    ov.read_at(&mut buf, offset).unwrap();
    buf
}

fn assert_all(ov: &mut Overlay, model: &[u8]) {
    assert!(
        read(ov, 0, model.len()) == model,
        "overlay differs from the model"
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

#[test]
fn unwritten_regions_read_the_base() {
    let f = fixture(5 * BLOCK + 700);
    let mut ov = f.open();
    let model = f.model();
    assert_eq!(ov.size(), 5 * OVERLAY_BLOCK + 512);
    assert_eq!(ov.block_size(), 512);
    assert!(ov.supports_discard());
    assert_all(&mut ov, &model);
    assert_eq!(read(&mut ov, 4000, 5000), model[4000..9000]);
    assert_eq!(ov.blocks_written(), 0);
    // Out of range: refused, nothing changes.
    let mut buf = [0u8; 16];
    let e = ov.read_at(&mut buf, ov.size() - 8).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(ov.write_at(&buf, ov.size() - 8).is_err());
    assert!(ov.discard(u64::MAX - 4, 16).is_err());
    assert_eq!(ov.blocks_written(), 0);
    ov.flush().unwrap();
    f.assert_base_intact();
}

#[test]
fn read_your_writes_across_block_boundaries() {
    let f = fixture(8 * BLOCK);
    let mut ov = f.open();
    let mut model = f.model();
    // (offset, len): partial first and last blocks, single bytes at block
    // edges, a write spanning three blocks, a whole aligned block.
    for (i, &(off, len)) in [
        (4000, 5000),
        (4095, 1),
        (8191, 2),
        (20000, 1),
        (5 * BLOCK, BLOCK),
    ]
    .iter()
    .enumerate()
    {
        let data = pattern(len, i as u8);
        ov.write_at(&data, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&data);
    }
    // Blocks 0, 1, 2 (first write), 4 (20000), 5.
    assert_eq!(ov.blocks_written(), 5);
    assert_all(&mut ov, &model);
    for &(off, len) in &[
        (1, 3),
        (4090, 20),
        (8000, 9000),
        (19999, 3),
        (20471, 4096 + 3),
    ] {
        assert_eq!(
            read(&mut ov, off as u64, len),
            model[off..off + len],
            "{off}+{len}"
        );
    }
    f.assert_base_intact();
}

#[test]
fn final_partial_block_of_an_unaligned_base() {
    // The disk is 3 blocks + 512 bytes (the last 488 bytes are not exposed).
    let f = fixture(3 * BLOCK + 1000);
    let mut ov = f.open();
    let mut model = f.model();
    let size = ov.size() as usize;
    assert_eq!(size, 3 * BLOCK + 512);
    // Partial: copy-up of the 512-byte block, then the change.
    ov.write_at(&[1, 2, 3], (size - 300) as u64).unwrap();
    model[size - 300..size - 297].copy_from_slice(&[1, 2, 3]);
    assert_eq!(ov.blocks_written(), 1);
    assert_eq!(read(&mut ov, 3 * OVERLAY_BLOCK, 512), model[3 * BLOCK..]);
    // Spanning into it, up to the very end.
    let data = pattern(700, 9);
    ov.write_at(&data, (size - 700) as u64).unwrap();
    model[size - 700..].copy_from_slice(&data);
    assert_eq!(ov.blocks_written(), 2);
    ov.discard((size - 10) as u64, 10).unwrap();
    model[size - 10..].fill(0);
    assert_all(&mut ov, &model);
    f.assert_base_intact();
}

#[test]
fn discard_zeroes_exactly_the_range() {
    let f = fixture(16 * BLOCK);
    let mut ov = f.open();
    let mut model = f.model();
    // Whole blocks 1..3 plus part of blocks 0 and 4, none written yet.
    ov.discard(1000, 4 * OVERLAY_BLOCK - 500).unwrap();
    model[1000..4 * BLOCK + 500].fill(0);
    assert_all(&mut ov, &model);
    assert_eq!(ov.blocks_written(), 5);
    // Over written blocks, inside one block, and an aligned range.
    let data = pattern(3 * BLOCK, 4);
    ov.write_at(&data, 8 * OVERLAY_BLOCK).unwrap();
    model[8 * BLOCK..11 * BLOCK].copy_from_slice(&data);
    ov.discard(8 * OVERLAY_BLOCK + 100, 2 * OVERLAY_BLOCK)
        .unwrap();
    model[8 * BLOCK + 100..10 * BLOCK + 100].fill(0);
    ov.discard(13 * OVERLAY_BLOCK + 7, 9).unwrap();
    model[13 * BLOCK + 7..13 * BLOCK + 16].fill(0);
    ov.discard(14 * OVERLAY_BLOCK, 2 * OVERLAY_BLOCK).unwrap();
    model[14 * BLOCK..].fill(0);
    ov.discard(3, 0).unwrap();
    assert_all(&mut ov, &model);
    assert_eq!(ov.blocks_written(), 5 + 3 + 1 + 2);
    f.assert_base_intact();
}

/// xorshift64*: a fixed-seed PRNG for the model test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operations_match_an_in_memory_model() {
    // A size that is a multiple of 512 but not of 4096.
    let f = fixture(37 * BLOCK + 1536);
    for (i, seed) in [1u64, 0x5eed, 0xdead_beef_cafe].into_iter().enumerate() {
        let mut rng = Rng(seed);
        let mut ov = f.open();
        // One run discards by writing zeros, as where holes cannot be punched.
        ov.punch = i != 1;
        let mut model = f.model();
        let size = model.len() as u64;
        let mut touched = vec![false; model.len().div_ceil(BLOCK)];
        for step in 0..3000 {
            let offset = rng.below(size);
            let max = match rng.below(10) {
                0 => 0,
                1 => 20 * OVERLAY_BLOCK,
                _ => 3 * OVERLAY_BLOCK,
            };
            let mut len = rng.below(max + 1).min(size - offset);
            let offset = if rng.below(2) == 0 {
                // Sector-aligned, as the device sends them.
                len = len / 512 * 512;
                offset / 512 * 512
            } else {
                offset
            };
            let (o, l) = (offset as usize, len as usize);
            match rng.below(10) {
                0..=3 => assert!(
                    read(&mut ov, offset, l) == model[o..o + l],
                    "seed {seed} step {step}: read {l} at {o}"
                ),
                4..=7 => {
                    let data = pattern(l, rng.next() as u8);
                    ov.write_at(&data, offset).unwrap();
                    model[o..o + l].copy_from_slice(&data);
                }
                _ => {
                    ov.discard(offset, len).unwrap();
                    model[o..o + l].fill(0);
                }
            }
            if l > 0 {
                touched[o / BLOCK..=(o + l - 1) / BLOCK].fill(true);
            }
        }
        assert_all(&mut ov, &model);
        let expect = touched.iter().filter(|&&t| t).count() as u64;
        assert_eq!(ov.blocks_written(), expect, "seed {seed}");
    }
    f.assert_base_intact();
    f.assert_scratch_empty();
}

#[test]
fn two_overlays_over_one_base_are_independent() {
    let f = fixture(4 * BLOCK);
    let (mut a, mut b) = (f.open(), f.open());
    let (mut ma, mut mb) = (f.model(), f.model());
    a.write_at(&[0xaa; 5000], 100).unwrap();
    ma[100..5100].fill(0xaa);
    b.write_at(&[0xbb; 300], 4000).unwrap();
    mb[4000..4300].fill(0xbb);
    b.discard(2 * OVERLAY_BLOCK, OVERLAY_BLOCK).unwrap();
    mb[2 * BLOCK..3 * BLOCK].fill(0);
    assert_all(&mut a, &ma);
    assert_all(&mut b, &mb);
    assert_all(&mut f.open(), &f.model());
    f.assert_base_intact();
}

#[test]
fn top_layer_is_private_and_invisible() {
    let f = fixture(4 * BLOCK);
    let mut ov = f.open();
    ov.write_at(&[7; 100], 50).unwrap();
    f.assert_scratch_empty();
    let meta = ov.top.metadata().unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.nlink(), 0, "the top layer has a name");
    assert_eq!(meta.len(), 4 * OVERLAY_BLOCK);
}

#[test]
fn fallback_top_layer_is_private_and_unlinked() {
    let f = fixture(0);
    let top = create_unlinked(&f.scratch).unwrap();
    f.assert_scratch_empty();
    let meta = top.metadata().unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.nlink(), 0);
    top.write_all_at(b"guest", 10).unwrap();
    let mut back = [0u8; 5];
    top.read_exact_at(&mut back, 10).unwrap();
    assert_eq!(&back, b"guest");
}

#[test]
fn open_refuses_a_missing_or_odd_base_and_names_the_path() {
    let f = fixture(BLOCK);
    let missing = f.scratch.join("no-such.img");
    let e = Overlay::open(&missing, &f.scratch).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
    let e = Overlay::open(&f.scratch, &f.scratch).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains(&*f.scratch.to_string_lossy()), "{e}");
    assert!(e.to_string().contains("directory"), "{e}");
    // A FIFO is refused without blocking in open.
    let fifo = f.scratch.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = Overlay::open(&fifo, &f.scratch).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("FIFO"), "{e}");
    // A missing scratch directory is named too.
    let nowhere = f.scratch.join("nowhere");
    let e = Overlay::open(&f.base, &nowhere).unwrap_err();
    assert!(e.to_string().contains(&*nowhere.to_string_lossy()), "{e}");
}

#[test]
fn blk_on_an_overlay_exposes_the_base() {
    use super::super::{Blk, BlkConfig, BlkError};
    use crate::virtio::VirtioDevice;
    use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_F_DISCARD;

    let f = fixture(10 * BLOCK + 1000);
    let blk = Blk::overlay(BlkConfig::new(&f.base), &f.scratch).unwrap();
    assert_eq!(blk.capacity(), (10 * BLOCK as u64 + 512) / 512);
    assert!(!blk.is_read_only());
    assert_ne!(blk.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
    f.assert_scratch_empty();
    let e = Blk::overlay(BlkConfig::new(&f.scratch), &f.scratch).unwrap_err();
    assert!(matches!(e, BlkError::Overlay { .. }), "{e:?}");
    assert!(e.to_string().contains(&*f.scratch.to_string_lossy()), "{e}");
}
