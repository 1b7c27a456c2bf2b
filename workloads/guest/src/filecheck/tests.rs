use std::path::PathBuf;

use super::*;

fn args(a: &[&str]) -> Result<FileCheckArgs, GuestError> {
    FileCheckArgs::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

use crate::json::parse_lines as lines;

/// A temporary directory (under `std::env::temp_dir()`, removed on drop) with a
/// stand-in for `/proc/sys/vm/drop_caches`, so tests never drop the host's caches.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drop_caches"), "").unwrap();
        Self { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("check.dat")
    }

    fn drop_caches(&self) -> PathBuf {
        self.dir.path().join("drop_caches")
    }

    /// Whether the filesystem here takes `O_DIRECT` (tmpfs before Linux 6.6 does not:
    /// `EINVAL`). Any other failure fails the test.
    fn direct_io_works(&self) -> bool {
        let p = self.dir.path().join("probe");
        let r = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&p)
            .and_then(|f| f.write_all_at(AlignedBuf::new(PAGE).as_mut_slice(), 0));
        let _ = std::fs::remove_file(&p);
        match r {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => panic!("probing O_DIRECT in {:?}: {e}", self.dir.path()),
        }
    }

    fn args(&self, extra: &[&str]) -> FileCheckArgs {
        let path = self.file().display().to_string();
        let mut a = vec!["--path", &path];
        a.extend_from_slice(extra);
        args(&a).unwrap()
    }

    /// Run with `hook`; the result and the lines written.
    fn run(
        &self,
        a: &FileCheckArgs,
        hook: &mut dyn FnMut(u64, Step),
    ) -> (Result<(), GuestError>, Vec<serde_json::Value>) {
        let mut out = Vec::new();
        let r = run_with(a, &mut out, Some(&self.drop_caches()), hook);
        (r, lines(&out))
    }
}

/// The `--direct-share` to test with here: 0.5 where `O_DIRECT` works, else 0.
fn direct_share(d: &Dir) -> &'static str {
    if d.direct_io_works() {
        "0.5"
    } else {
        "0"
    }
}

fn read_page(path: &Path, index: usize) -> Vec<u8> {
    let mut page = vec![0u8; PAGE];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut page, (index * PAGE) as u64)
        .unwrap();
    page
}

fn write_page(path: &Path, index: usize, page: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(page, (index * PAGE) as u64)
        .unwrap();
}

/// Every page of the file at `path` holds its own index and a whole, valid pattern.
fn assert_file_consistent(path: &Path, pages: usize, seed: u64) {
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        (pages * PAGE) as u64
    );
    for i in 0..pages {
        let page = read_page(path, i);
        match Found::of(&page) {
            Found::Page { index, generation } => {
                assert_eq!(index, i as u64);
                assert_eq!(
                    first_wrong_byte(&page, seed, index, generation),
                    None,
                    "page {i}"
                );
            }
            other => panic!("page {i}: {other}"),
        }
    }
}

#[test]
fn parses_flags_and_refuses_out_of_bounds_values() {
    let a = args(&["--path", "/f", "--mb", "8"]).unwrap();
    assert_eq!(
        a,
        FileCheckArgs {
            path: "/f".into(),
            mb: 8,
            rounds: 4,
            rewrite: 0.25,
            direct_share: 0.5,
            seed: 1
        }
    );
    let a = args(&[
        "--path=/g",
        "--mb=4096",
        "--rounds",
        "0",
        "--rewrite",
        "1",
        "--direct-share",
        "0",
        "--seed",
        "7",
    ])
    .unwrap();
    assert_eq!(
        (a.mb, a.rounds, a.rewrite, a.direct_share, a.seed),
        (4096, 0, 1.0, 0.0, 7)
    );
    assert_eq!(
        args(&["--path", "/f", "--mb", "1", "--rounds", "1000000"])
            .unwrap()
            .rounds,
        1_000_000
    );
    for (bad, needle) in [
        (&["--path", "/f", "--mb", "0"][..], "--mb"),
        (&["--path", "/f", "--mb", "4097"], "--mb"),
        (&["--path", "/f"], "--mb"),
        (&["--mb", "1"], "--path"),
        (&["--path=", "--mb", "1"], "--path"),
        (
            &["--path", "/f", "--mb", "1", "--rewrite", "1.5"],
            "--rewrite",
        ),
        (
            &["--path", "/f", "--mb", "1", "--rewrite", "-0.1"],
            "--rewrite",
        ),
        (
            &["--path", "/f", "--mb", "1", "--direct-share", "2"],
            "--direct-share",
        ),
        (
            &["--path", "/f", "--mb", "1", "--rounds", "1000001"],
            "--rounds",
        ),
        (&["--path", "/f", "--mb", "1", "--seed", "x"], "--seed"),
        (
            &["--path", "/f", "--mb", "1", "--interval-ms", "5"],
            "unknown flag",
        ),
    ] {
        match args(bad) {
            Err(GuestError::Usage(m)) => assert!(m.contains(needle), "{bad:?}: {m}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn pages_identify_themselves_and_the_first_wrong_byte_is_found() {
    let mut page = vec![0u8; PAGE];
    fill_page(&mut page, 1, 5, 2);
    assert_eq!(first_wrong_byte(&page, 1, 5, 2), None);
    assert_eq!(
        Found::of(&page),
        Found::Page {
            index: 5,
            generation: 2
        }
    );
    assert_eq!(Found::of(&page).to_string(), "page 5 gen 2");
    assert_eq!(first_wrong_byte(&page, 1, 6, 2), Some(0), "another page");
    assert_eq!(
        first_wrong_byte(&page, 1, 5, 3),
        Some(8),
        "another generation"
    );
    assert!(
        first_wrong_byte(&page, 2, 5, 2).unwrap() >= HEADER,
        "another seed"
    );
    // The whole page is covered, not just a word.
    assert!(page[HEADER..].iter().filter(|&&b| b == 0).count() < 64);
    page[4095] ^= 0x10;
    assert_eq!(first_wrong_byte(&page, 1, 5, 2), Some(4095));
    page[1234] = page[1234].wrapping_add(1);
    assert_eq!(first_wrong_byte(&page, 1, 5, 2), Some(1234));
    let zeros = [0u8; PAGE];
    assert_eq!(Found::of(&zeros), Found::Zeros);
    assert_eq!(first_wrong_byte(&zeros, 1, 5, 2), Some(0));
    // Page 0 of generation 0 has a zero index and generation: the magic differs.
    assert_eq!(first_wrong_byte(&zeros, 1, 0, 0), Some(12));
    page[13] ^= 1;
    assert_eq!(Found::of(&page), Found::Unknown);
    assert_eq!(Found::of(&page).to_string(), "unknown");
}

#[test]
fn aligned_buffers_are_aligned() {
    for len in [PAGE, 3 * PAGE, CHUNK_PAGES * PAGE] {
        let mut b = AlignedBuf::new(len);
        let s = b.as_mut_slice();
        assert_eq!(s.len(), len);
        assert_eq!(s.as_ptr() as usize % ALIGN, 0);
    }
}

#[test]
fn a_clean_file_passes_through_the_page_cache_alone() {
    let d = Dir::new();
    let a = d.args(&["--mb", "1", "--rounds", "3", "--direct-share", "0"]);
    let (r, l) = d.run(&a, &mut |_, _| {});
    r.unwrap();
    assert_eq!(l.len(), 5, "{l:?}");
    assert_eq!(l[0]["kind"], "filecheck_start");
    assert_eq!(l[0]["pages"], 256);
    assert_eq!(l[0]["direct"], false);
    assert_eq!(l[0]["drop_caches"], true);
    let mut rewritten = 0;
    for (i, r) in l[1..4].iter().enumerate() {
        assert_eq!(r["kind"], "filecheck_round");
        assert_eq!(r["round"], i + 1);
        assert_eq!(r["round_bad"], 0);
        assert_eq!(r["bad_indices"], serde_json::json!([]));
        assert_eq!(r["bad_found"], serde_json::json!([]));
        assert_eq!(r["post_read"], "buffered");
        assert_eq!(r["fadvise_dontneed"], i == 1, "every other round");
        assert_eq!(r["rewritten_direct"], 0);
        assert_eq!(r["pages_verified"], 512 * (i + 1));
        rewritten += r["rewritten_buffered"].as_u64().unwrap();
        assert_eq!(r["pages_rewritten_buffered"], rewritten);
    }
    // About a quarter of 3 × 256 pages (binomial, sd ≈ 12).
    assert!((130..=260).contains(&rewritten), "{rewritten}");
    let s = &l[4];
    assert_eq!(s["kind"], "filecheck_done");
    assert_eq!(s["rounds"], 3);
    assert_eq!(s["pages_verified"], 1536);
    assert_eq!(s["pages_rewritten_buffered"], rewritten);
    assert_eq!(s["pages_rewritten_direct"], 0);
    assert_eq!(s["bad_pages"], 0);
    assert_eq!(s["integrity_errors"], 0);
    assert_eq!(s["drop_caches"], true);
    assert_eq!(s["stopped"], false);
    assert_file_consistent(&d.file(), 256, 1);

    // Where drop_caches cannot be written, the run goes on and says so.
    let a = d.args(&["--mb", "1", "--rounds", "1", "--direct-share", "0"]);
    let mut out = Vec::new();
    let missing = d.dir.path().join("no").join("drop_caches");
    run_with(&a, &mut out, Some(&missing), &mut |_, _| {}).unwrap();
    let l = lines(&out);
    assert_eq!(
        (&l[0]["drop_caches"], &l[2]["drop_caches"]),
        (&false.into(), &false.into())
    );
}

#[test]
fn o_direct_is_used_where_the_filesystem_takes_it_and_named_where_refused() {
    let d = Dir::new();
    let a = d.args(&["--mb", "1", "--rounds", "3", "--direct-share", "0.5"]);
    if d.direct_io_works() {
        let (r, l) = d.run(&a, &mut |_, _| {});
        r.unwrap();
        assert_eq!(l[0]["direct"], true);
        let post: Vec<_> = l[1..4].iter().map(|r| r["post_read"].clone()).collect();
        assert_eq!(post, ["direct", "buffered", "direct"]);
        let s = &l[4];
        assert_eq!(s["bad_pages"], 0);
        // Half of about 192 rewrites each way (sd ≈ 7 around the halves).
        let direct = s["pages_rewritten_direct"].as_u64().unwrap();
        let buffered = s["pages_rewritten_buffered"].as_u64().unwrap();
        assert!(direct >= 40 && buffered >= 40, "{direct} {buffered}");
        assert!((130..=260).contains(&(direct + buffered)));
        assert_file_consistent(&d.file(), 256, 1);
    } else {
        eprintln!("O_DIRECT refused in {:?}: checking the error", d.dir.path());
        let (r, l) = d.run(&a, &mut |_, _| {});
        match r {
            Err(e @ GuestError::Io { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("O_DIRECT") && m.contains("--direct-share 0"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(l.is_empty(), "{l:?}");
        let a = d.args(&["--mb", "1", "--rounds", "3", "--direct-share", "0"]);
        let (r, l) = d.run(&a, &mut |_, _| {});
        r.unwrap();
        assert_eq!(l[4]["bad_pages"], 0);
        assert_eq!(l[4]["pages_rewritten_direct"], 0);
    }
}

#[test]
fn changes_behind_the_programs_back_are_reported_once_by_page() {
    let d = Dir::new();
    let a = d.args(&[
        "--mb",
        "1",
        "--rounds",
        "3",
        "--direct-share",
        direct_share(&d),
    ]);
    let path = d.file();
    let (r, l) = d.run(&a, &mut |round, step| match (round, step) {
        (2, Step::BeforeRound) => {
            let mut page = read_page(&path, 7);
            page[100] ^= 4;
            write_page(&path, 7, &page);
        }
        // Page 9 gets page 8's contents (a misplaced block).
        (2, Step::AfterRewrite) => write_page(&path, 9, &read_page(&path, 8)),
        (3, Step::BeforeRound) => write_page(&path, 5, &[0u8; PAGE]),
        _ => {}
    });
    match r {
        Err(GuestError::Integrity(m)) => assert!(m.contains(&path.display().to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(l.len(), 5, "{l:?}");
    assert_eq!(l[1]["round_bad"], 0);
    let r2 = &l[2];
    assert_eq!(r2["round_bad"], 2);
    assert_eq!(r2["bad_indices"], serde_json::json!([7, 9]));
    assert_eq!(r2["bad_offsets"], serde_json::json!([100, 0]));
    assert_eq!(
        r2["bad_reads"],
        serde_json::json!(["pre_buffered", "post_buffered"])
    );
    let found = |i: usize| r2["bad_found"][i].as_str().unwrap().to_string();
    assert_eq!(
        found(0),
        format!("page 7 gen {}", r2["bad_expected_gens"][0])
    );
    assert!(found(1).starts_with("page 8 gen "), "{}", found(1));
    let r3 = &l[3];
    assert_eq!(r3["round_bad"], 1, "each error reported once");
    assert_eq!(r3["bad_indices"], serde_json::json!([5]));
    assert_eq!(r3["bad_offsets"], serde_json::json!([0]));
    assert_eq!(r3["bad_found"], serde_json::json!(["zeros"]));
    let s = &l[4];
    assert_eq!(s["bad_pages"], 3);
    assert_eq!(s["integrity_errors"], 3);
    assert_eq!(s["first_bad_indices"], serde_json::json!([7, 9, 5]));
    assert_eq!(s["first_bad_found"][2], "zeros");
    assert_eq!(s["pages_verified"], 1536);
    // The bad pages were rewritten: the file is whole again.
    assert_file_consistent(&path, 256, 1);
}

#[test]
fn a_stale_block_is_reported_with_the_generation_it_holds() {
    let d = Dir::new();
    let share = direct_share(&d);
    let a = d.args(&[
        "--mb",
        "1",
        "--rounds",
        "1",
        "--rewrite",
        "1",
        "--direct-share",
        share,
    ]);
    let path = d.file();
    let mut old = Vec::new();
    let (r, l) = d.run(&a, &mut |_, step| match step {
        Step::BeforeRound => old = read_page(&path, 3),
        // The block goes back to what it held before the round's rewrite.
        Step::AfterRewrite => write_page(&path, 3, &old),
    });
    assert!(matches!(r, Err(GuestError::Integrity(_))), "{r:?}");
    let r1 = &l[1];
    assert_eq!(
        r1["rewritten_buffered"].as_u64().unwrap() + r1["rewritten_direct"].as_u64().unwrap(),
        256
    );
    assert_eq!(r1["bad_indices"], serde_json::json!([3]));
    assert_eq!(
        r1["bad_offsets"],
        serde_json::json!([8]),
        "the generation field"
    );
    assert_eq!(r1["bad_expected_gens"], serde_json::json!([1]));
    assert_eq!(r1["bad_found"], serde_json::json!(["page 3 gen 0"]));
    let read = if share == "0" {
        "post_buffered"
    } else {
        "post_direct"
    };
    assert_eq!(r1["bad_reads"], serde_json::json!([read]));
}

#[test]
fn io_errors_name_the_file_and_the_operation() {
    let d = Dir::new();
    let path = d.dir.path().join("missing").join("f");
    let a = args(&["--path", path.to_str().unwrap(), "--mb", "1"]).unwrap();
    let mut out = Vec::new();
    let e = run_with(&a, &mut out, None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, GuestError::Io { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("creating") && m.contains(path.to_str().unwrap()),
        "{m}"
    );
    assert!(out.is_empty());
    // What a filesystem that refuses O_DIRECT gets (tmpfs before Linux 6.6), whether
    // or not the one here does.
    let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
    let m = direct_err("opening /f with O_DIRECT".into())(einval).to_string();
    assert!(
        m.starts_with("filecheck: opening /f with O_DIRECT (O_DIRECT refused"),
        "{m}"
    );
    assert!(m.contains("--direct-share 0"), "{m}");
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    let m = direct_err("O_DIRECT read of pages 0..64 of /f".into())(eio).to_string();
    assert!(!m.contains("refused") && m.contains("O_DIRECT read"), "{m}");
}
