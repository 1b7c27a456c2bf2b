//! The guest root disk (`workload.kind = "command"`, `swaplab boot
//! --root-disk`): a Debian userland on a virtio-blk disk that each run sees
//! copy-on-write. Commands from it run with their metric parsed; a failing
//! command fails its run with its output; a missing or damaged root disk is
//! a clear error before anything boots; runs leave nothing behind and never
//! change the cached image. Tier: a stock Linux guest (natively on hardware
//! KVM, in the nested sandbox here); the root disk is built by setup, so a
//! missing one fails the test.

mod common;

use std::path::{Path, PathBuf};

use common::{swaplab_with_env, temp_dir};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The cached root disk's image, as `swaplab image --root-disk --json` finds it
/// (setup built it; this never builds it, so it needs no network).
fn root_image() -> PathBuf {
    let out = common::swaplab(&["image", "--root-disk", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["root_disk"]["built"], false, "setup should have built it");
    PathBuf::from(v["root_disk"]["image"].as_str().unwrap())
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

const GOOD: &str = r#"
name = "sysbench-memory"
description = "sysbench memory from the root disk; each repetition must find the disk as built"
repetitions = 2
timeout_s = 600

[guest]
mem = "512M"
# The default package, named: found in the cache like any other (never downloaded).
kernel = "linux-image-amd64"

[workload]
kind = "command"
# A file left by the first repetition would fail the second: runs are private.
# The booted kernel's modules are there (the image's, bound in by /init).
command = "test ! -e /root/left-over && date > /root/left-over && cat /etc/swaplab-rootfs && test -f /lib/modules/$(uname -r)/kernel/drivers/block/virtio_blk.ko && sysbench memory --memory-total-size=64M run"
metric = 'MiB transferred \(([0-9.]+) MiB/sec\)'
"#;

const FAILING: &str = r#"
name = "failing-command"
description = "a command that fails"
repetitions = 1
timeout_s = 600

[guest]
mem = "256M"

[workload]
kind = "command"
command = "echo about to fail; echo boom-7f3a >&2; exit 3"
"#;

#[test]
fn commands_run_on_a_private_view_of_the_root_disk() {
    if common::linux_guest().is_none() {
        return;
    }
    let image = root_image();
    let before = mtime(&image);
    common::retry_if_l1_panicked(|| command_cases(&image));
    assert_eq!(mtime(&image), before, "a run wrote the cached root disk");
}

fn command_cases(image: &Path) {
    let dir = temp_dir("root-disk");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let good = dir.path().join("good.toml");
    let failing = dir.path().join("failing.toml");
    std::fs::write(&good, GOOD).unwrap();
    std::fs::write(&failing, FAILING).unwrap();
    let out_dir = dir.path().join("out");
    let out = swaplab_with_env(
        &[
            "run",
            good.to_str().unwrap(),
            failing.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[("TMPDIR", scratch.to_str().unwrap())],
    );
    let err = text(&out.stderr);
    // One run failed: the matrix fails, and says which and why.
    assert_eq!(out.status.code(), Some(1), "{err}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap_or_else(|e| panic!("results.json: {e}\n{err}"));
    let runs = results.as_array().expect("a list of runs");
    let of =
        |name: &str| -> Vec<&Value> { runs.iter().filter(|r| r["scenario"] == name).collect() };
    let good_runs = of("sysbench-memory");
    assert_eq!(good_runs.len(), 2, "{err}");
    for r in good_runs {
        assert_eq!(r["outcome"], "ok", "{r}\n{err}");
        // Which guest kernel ran is recorded (the image's).
        let k = r["environment"]["guest_kernel"]
            .as_str()
            .unwrap_or_default();
        assert!(k.contains("linux-image-"), "guest_kernel {k:?}");
        let metric = r["metric"].as_f64().expect("a metric");
        assert!(metric > 0.0, "{metric}");
        // The programs and their libraries came from the disk.
        let reads = r["root_disk"]["bytes_read"].as_u64().unwrap();
        assert!(reads > 1 << 20, "root disk read only {reads} bytes");
    }
    let bad = of("failing-command");
    assert_eq!(bad.len(), 1, "{err}");
    let why = bad[0]["outcome"].as_str().unwrap();
    assert!(
        why.contains("exited with status 3") && why.contains("boom-7f3a"),
        "{why}"
    );
    assert!(err.contains("boom-7f3a"), "{err}");
    // The whole output is in the run's console log.
    let logs: Vec<String> = walk(&out_dir.join("failing-command"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("about to fail") && l.contains("boom-7f3a")),
        "no console log with the command's output under {}",
        out_dir.display()
    );
    // Nothing left in the scratch directory (the copy-on-write layers included).
    let left: Vec<PathBuf> = walk(&scratch);
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = image;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_missing_or_damaged_root_disk_is_a_clear_error_before_booting() {
    let image = root_image();
    let key_dir = image.parent().unwrap();
    let dir = temp_dir("root-disk-missing");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    // The guest image is found where it is; only the root disk is looked for
    // in the empty cache.
    let img_dir = {
        let out = common::swaplab(&["image", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["dir"].as_str().unwrap().to_string()
    };
    let env = [
        ("SWAPLAB_CACHE", cache.to_str().unwrap()),
        (runner::boot::ENV_IMAGE_DIR, img_dir.as_str()),
    ];
    let run = |args: &[&str]| {
        let out = swaplab_with_env(args, &env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        text(&out.stderr)
    };
    for args in [
        vec![
            "run",
            good.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        vec!["boot", "--root-disk", "--run", "true"],
    ] {
        let err = run(&args);
        assert!(
            err.contains("the guest root disk is not built")
                && err.contains("swaplab image --root-disk"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("running in the nested sandbox"),
            "booted first: {err}"
        );
    }
    // Damaged: the manifest is there, the image has no ext4 superblock.
    let damaged = cache.join("rootfs").join(key_dir.file_name().unwrap());
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::copy(key_dir.join("manifest.json"), damaged.join("manifest.json")).unwrap();
    let len = std::fs::metadata(&image).unwrap().len();
    std::fs::File::create(damaged.join("root.img"))
        .unwrap()
        .set_len(len)
        .unwrap();
    let err = run(&["boot", "--root-disk", "--run", "true"]);
    assert!(
        err.contains("no ext4 superblock") && err.contains("--force"),
        "{err}"
    );
    // Truncated.
    std::fs::File::create(damaged.join("root.img"))
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = run(&[
        "run",
        good.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(err.contains("the manifest says"), "{err}");
    assert!(!dir.path().join("o").join("results.json").exists());

    // A guest kernel that was never fetched: said before anything boots, with
    // the command that fetches it (runs never download).
    let unbuilt = dir.path().join("unbuilt.toml");
    std::fs::write(&unbuilt, UNBUILT_KERNEL).unwrap();
    let o = dir.path().join("o2");
    let out = common::swaplab(&[
        "run",
        unbuilt.to_str().unwrap(),
        "--out",
        o.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the guest kernel linux-image-rt-amd64 is not in the cache")
            && err.contains("swaplab image --kernel-package linux-image-rt-amd64"),
        "{err}"
    );
    assert!(
        !err.contains("running in the nested sandbox"),
        "booted first: {err}"
    );
    assert!(!o.join("results.json").exists());
}

const UNBUILT_KERNEL: &str = r#"
name = "unbuilt-kernel"
[guest]
mem = "256M"
kernel = "linux-image-rt-amd64"
[workload]
kind = "touch"
mb = 8
"#;

/// Every application of the registry, small, one run each in one matrix:
/// each reports its metric, which it prints only after checking its output.
#[test]
fn every_application_runs_checks_its_output_and_reports_its_metric() {
    if common::linux_guest().is_none() {
        return;
    }
    root_image();
    common::retry_if_l1_panicked(app_cases);
}

fn app_cases() {
    let dir = temp_dir("root-disk-apps");
    let mut files = Vec::new();
    for app in workloads::apps::APPS {
        // The smallest sizes that still do each app's whole work.
        let mb = match app.default_mb {
            0 => String::new(),
            _ => "mb = 8\n".to_string(),
        };
        let f = dir.path().join(format!("{}.toml", app.name));
        std::fs::write(
            &f,
            format!(
                "name = \"{}\"\nrepetitions = 1\ntimeout_s = 600\n[guest]\nmem = \"512M\"\n[workload]\nkind = \"app\"\napp = \"{}\"\n{mb}passes = 1\n",
                app.name, app.name
            ),
        )
        .unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let out_dir = dir.path().join("out");
    let mut args: Vec<&str> = vec!["run"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--out", out_dir.to_str().unwrap()]);
    let out = common::swaplab(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    let runs = results.as_array().unwrap();
    assert_eq!(runs.len(), workloads::apps::APPS.len(), "{err}");
    for app in workloads::apps::APPS {
        let r = runs
            .iter()
            .find(|r| r["scenario"] == app.name)
            .unwrap_or_else(|| panic!("no run of {}", app.name));
        assert_eq!(r["outcome"], "ok", "{}: {r}", app.name);
        assert_eq!(r["metric_name"], app.metric, "{}", app.name);
        let m = r["metric"].as_f64().unwrap_or(0.0);
        assert!(m > 0.0, "{}: metric {m}", app.name);
        let log = std::fs::read_to_string(out_dir.join(app.name).join("1").join("console.log"))
            .unwrap_or_default();
        assert!(
            log.contains(&format!("swaplab-app {} ok", app.name)),
            "{}: no check line in its console log",
            app.name
        );
    }
}

#[test]
fn command_scenario_errors_name_the_key() {
    let dir = temp_dir("root-disk-keys");
    for (body, needle) in [
        (
            "[workload]\nkind = \"command\"\n",
            "workload.command: missing",
        ),
        (
            "[workload]\nkind = \"command\"\ncommand = \"  \"\n",
            "workload.command: is empty",
        ),
        (
            "[workload]\nkind = \"command\"\ncommand = \"true\"\nmetric = \"(\"\n",
            "workload.metric: not a regular expression",
        ),
        (
            "[workload]\nmb = 8\ncommand = \"true\"\n",
            "workload.command: only the command workload takes it",
        ),
        (
            "[workload]\nkind = \"command\"\ncommand = \"true\"\nmetric = 7\n",
            "expected a string",
        ),
        (
            "[workload]\nkind = \"app\"\napp = \"pbzip3\"\n",
            "workload.app: unknown application \"pbzip3\" (known: sysbench-memory",
        ),
        (
            "[workload]\nkind = \"app\"\n",
            "workload.app: missing or unknown",
        ),
        (
            "[workload]\nkind = \"app\"\napp = \"compile\"\nmb = 8\n",
            "workload.mb: compile has no size in MiB",
        ),
        (
            "[workload]\nkind = \"app\"\napp = \"redis\"\ncommand = \"true\"\n",
            "workload.command: an application has its own command",
        ),
    ] {
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            format!("name = \"t\"\n[guest]\nmem = \"256M\"\n{body}"),
        )
        .unwrap();
        let out = common::swaplab(&[
            "run",
            file.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(needle), "{body}: expected {needle:?} in {err}");
    }
    let long = "x".repeat(769);
    let file = dir.path().join("long.toml");
    std::fs::write(
        &file,
        format!("name = \"t\"\n[workload]\nkind = \"command\"\ncommand = \"{long}\"\n"),
    )
    .unwrap();
    let out = common::swaplab(&["run", file.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("769 bytes, at most 768"), "{err}");
}
