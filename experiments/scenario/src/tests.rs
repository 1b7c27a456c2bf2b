//! Scenario and matrix parsing: built-in files, located errors, cross-field checks.

use super::*;
use base::ByteSize;
use workloads::probe::Pattern;

/// A valid scenario; tests replace or append lines.
const BASE: &str = r#"name = "t"
description = "test"

[guest]
mem = "256M"
cpus = 1
swap = "512M"

[host]
limit = "192M"
store = "memory"
policy = "clock"

[workload]
kind = "touch"
mb = 384
pattern = "random"
passes = 2
"#;

fn scenario(text: &str) -> Result<Scenario, ScenarioError> {
    parse_scenario(&Source::new("t.toml", text))
}

/// BASE with the line starting with `prefix` replaced by `line`.
fn with(prefix: &str, line: &str) -> String {
    let mut found = false;
    let out: Vec<&str> = BASE
        .lines()
        .map(|l| {
            if l.starts_with(prefix) && !found {
                found = true;
                line
            } else {
                l
            }
        })
        .collect();
    assert!(found, "BASE has no line starting with {prefix:?}");
    out.join("\n") + "\n"
}

fn diag(r: Result<Scenario, ScenarioError>) -> (String, Diagnostic) {
    let e = r.expect_err("should be rejected");
    let d = e.diagnostic().expect("a located error").clone();
    (e.to_string(), d)
}

fn no_resolve(name: &str) -> Result<Source, String> {
    Err(format!("no file {name}"))
}

#[test]
fn the_host_swapper_is_uffd_unless_set_and_kernel_reads_back() {
    let s = scenario(BASE).unwrap();
    assert_eq!(s.host.as_ref().unwrap().swapper, HostSwapper::Uffd);
    let k = scenario(&with("store", "store = \"file\"\nswapper = \"kernel\"")).unwrap();
    let h = k.host.as_ref().unwrap();
    assert_eq!(
        (h.swapper, h.store),
        (HostSwapper::Kernel, StoreChoice::File)
    );
    // A result written before the key existed reads as the uffd swapper.
    let mut v = serde_json::to_value(&s).unwrap();
    v["host"].as_object_mut().unwrap().remove("swapper");
    let old: Scenario = serde_json::from_value(v).unwrap();
    assert_eq!(old.host.unwrap().swapper, HostSwapper::Uffd);
}

#[test]
fn base_parses_with_every_value() {
    let s = scenario(BASE).unwrap();
    assert_eq!(s.name, "t");
    assert_eq!(s.guest.mem.0, 256 << 20);
    assert_eq!(s.guest.swap.unwrap().0, 512 << 20);
    let h = s.host.as_ref().unwrap();
    assert_eq!(h.limit.0, 192 << 20);
    assert_eq!(h.policy, PolicyKind::Clock);
    assert_eq!(h.store, StoreChoice::Memory);
    assert_eq!(s.workload.pattern, Pattern::Random);
    assert_eq!((s.workload.mb, s.workload.passes), (384, 2));
    // Unset keys take their documented defaults.
    assert_eq!((s.repetitions, s.timeout_s), (3, 600));
    assert_eq!(s.balloon.policy, BalloonPolicy::None);
    assert_eq!(s.balloon.stats_interval_ms, 1000);
    assert_eq!(s.workload.seed, 1);
    // Origins point at the keys.
    assert_eq!(s.origin["workload.mb"].line, 16);
    assert_eq!(s.origin["host.limit"].to_string(), "t.toml:10:1");
}

#[test]
fn every_builtin_file_parses() {
    for name in builtin_names() {
        let m = load(name).unwrap_or_else(|e| panic!("built-in {name}: {e}"));
        assert!(!m.scenarios.is_empty(), "{name}");
        assert_eq!(m.source, format!("scenarios/{name}.toml"));
        // A one-scenario file is named after its scenario (matrices such as
        // default and papers hold many).
        if m.scenarios.len() == 1 {
            assert_eq!(m.scenarios[0].name, name, "file name = scenario name");
        }
    }
}

#[test]
fn default_matrix_is_the_standard_one() {
    let m = load("default").unwrap();
    let names: Vec<&str> = m.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "guest-swap",
            "host-swap",
            "host-swap-mitigated",
            "double-paging",
            "balloon"
        ]
    );
    let by = |n: &str| m.scenarios.iter().find(|s| s.name == n).unwrap();
    // Every guest has the disk the workload reads; only guest-swap and
    // double-paging give it too little RAM for the working set.
    let squeezed = |n: &str| {
        let s = by(n);
        assert!(s.guest.swap.is_some(), "{n}");
        s.workload.bytes() + validate::GUEST_OS_RESERVE >= s.guest.mem.bytes()
    };
    assert!(by("baseline").host.is_none() && !squeezed("baseline"));
    assert!(by("guest-swap").host.is_none() && squeezed("guest-swap"));
    assert!(by("host-swap").host.is_some() && !squeezed("host-swap"));
    assert!(by("double-paging").host.is_some() && squeezed("double-paging"));
    // The balloon meets host-swap's limit: it takes what the limit leaves out
    // (and a little more), so the guest fits under it.
    let (hs, b) = (by("host-swap"), by("balloon"));
    assert_eq!(
        b.host.as_ref().unwrap().limit,
        hs.host.as_ref().unwrap().limit
    );
    match &b.balloon.policy {
        BalloonPolicy::Manual { target } => assert!(
            b.guest.mem.bytes() - target.bytes() < hs.host.as_ref().unwrap().limit.bytes(),
            "{target:?}"
        ),
        other => panic!("balloon scenario: {other:?}"),
    }
    // All five of VSwapper's anomalies mitigated.
    let mitigated = by("host-swap-mitigated").host.as_ref().unwrap();
    assert_eq!(mitigated.mitigations.len(), crate::Mitigation::ALL.len());
    // The matrix's defaults reach referenced files.
    assert!(m
        .scenarios
        .iter()
        .all(|s| s.repetitions == 3 && s.timeout_s == 300));
    assert_eq!(m.total_runs(), 18);
    // One workload throughout, within the sandbox budget.
    for s in &m.scenarios {
        assert_eq!(s.workload, by("baseline").workload, "{}", s.name);
        assert!(s.workload.mb <= 384 && s.workload.passes <= 2, "{}", s.name);
        assert!(s.workload.write_ratio < 1.0 && s.workload.disk_read_mb > 0);
    }
}

#[test]
fn builtin_accepts_name_forms_and_reports_unknown() {
    assert!(builtin("guest-swap.toml").is_some());
    assert!(builtin("scenarios/guest-swap.toml").is_some());
    assert!(builtin("nope").is_none());
    let e = load("no-such-scenario").unwrap_err();
    assert!(matches!(e, ScenarioError::NotFound { .. }));
    assert!(e.to_string().contains("guest-swap"), "{e}");
    let e = load("/nonexistent/dir/x.toml").unwrap_err();
    assert!(matches!(e, ScenarioError::Io { .. }), "{e}");
}

#[test]
fn load_reads_files_and_resolves_references_next_to_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one.toml"), BASE).unwrap();
    let matrix = "[defaults]\nrepetitions = 1\n\n[[scenario]]\nfile = \"one.toml\"\n";
    let path = dir.path().join("m.toml");
    std::fs::write(&path, matrix).unwrap();
    let m = load(path.to_str().unwrap()).unwrap();
    assert_eq!(m.scenarios.len(), 1);
    assert_eq!(m.scenarios[0].repetitions, 1);
    // An error in the referenced file names that file.
    std::fs::write(
        dir.path().join("one.toml"),
        with("policy", "polcy = \"fifo\""),
    )
    .unwrap();
    let e = load(path.to_str().unwrap()).unwrap_err().to_string();
    let want = format!(
        "{}:12:1: unknown key",
        dir.path().join("one.toml").display()
    );
    assert!(e.starts_with(&want), "{e}");
}

#[test]
fn typo_key_names_key_file_line_and_suggestion() {
    let text = with("policy", "polcy = \"clock\"");
    let e = parse_scenario(&Source::new("scenarios/default.toml", text)).unwrap_err();
    assert!(matches!(e, ScenarioError::Schema(_)));
    assert_eq!(
        e.to_string(),
        "scenarios/default.toml:12:1: unknown key \"polcy\" in [host] (did you mean \"policy\"?)"
    );
    assert_eq!(e.diagnostic().unwrap().key.as_deref(), Some("host.polcy"));
    // At the top level, and with no close match.
    let (msg, d) = diag(scenario(&format!("colour = 1\n{BASE}")));
    assert_eq!(msg, "t.toml:1:1: unknown key \"colour\" in the top level");
    assert_eq!(d.pos.unwrap().line, 1);
    // Unknown table.
    let (msg, _) = diag(scenario(&format!("{BASE}[guset]\nmem = \"1G\"\n")));
    assert!(
        msg.contains("unknown key \"guset\"") && msg.contains("\"guest\""),
        "{msg}"
    );
}

#[test]
fn typo_in_defaults_and_inline_tables_names_the_table() {
    let m = "[defaults.host]\nstroe = \"lz4\"\n\n[[scenario]]\nfile = \"x.toml\"\n";
    let e = parse_matrix(&Source::new("m.toml", m), &no_resolve).unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.toml:2:1: unknown key \"stroe\" in [defaults.host] (did you mean \"store\"?)"
    );
    let m = "[[scenario]]\nname = \"a\"\n[scenario.workload]\nmb = 16\npases = 2\n";
    let e = parse_matrix(&Source::new("m.toml", m), &no_resolve).unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.toml:5:1: unknown key \"pases\" in [scenario.workload] (did you mean \"passes\"?)"
    );
}

#[test]
fn syntax_errors_are_located() {
    let e = scenario("name = \"t\"\n[guest\nmem = 1\n").unwrap_err();
    let d = e.diagnostic().unwrap();
    assert!(matches!(e, ScenarioError::Syntax(_)));
    assert_eq!(d.pos.as_ref().unwrap().line, 2, "{e}");
    assert!(e.to_string().starts_with("t.toml:2:"), "{e}");
}

#[test]
fn each_bad_value_names_its_key() {
    // (line prefix in BASE, replacement, key, text the message must contain)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "mem",
            "mem = \"12Q\"",
            "guest.mem",
            "guest.mem: bad size \"12Q\"",
        ),
        ("mem", "mem = 256", "guest.mem", "found the integer 256"),
        ("mem", "mem = \"64M\"", "guest.mem", "out of range"),
        (
            "cpus",
            "cpus = 0",
            "guest.cpus",
            "0 is out of range (expected 1 to 32)",
        ),
        (
            "cpus",
            "cpus = \"1\"",
            "guest.cpus",
            "expected an integer, found string",
        ),
        ("swap", "swap = \"lots\"", "guest.swap", "bad size \"lots\""),
        (
            "swap",
            "kernel = \"linux image\"",
            "guest.kernel",
            "expected a Debian kernel package name, optionally @SUITE",
        ),
        (
            "swap",
            "kernel = \"linux-image-amd64@\"",
            "guest.kernel",
            "expected a Debian kernel package name",
        ),
        ("swap", "kernel = 6", "guest.kernel", "expected a string"),
        ("limit", "limit = true", "host.limit", "found boolean"),
        (
            "store",
            "store = \"disk\"",
            "host.store",
            "expected file, memory, lz4 or redis",
        ),
        (
            "policy",
            "policy = \"lru\"",
            "host.policy",
            "expected fifo, random or clock",
        ),
        (
            "policy",
            "policy = \"clck\"",
            "host.policy",
            "did you mean \"clock\"?",
        ),
        (
            "store",
            "prefetch = -1",
            "host.prefetch",
            "-1 is out of range",
        ),
        (
            "store",
            "prefetch = 9999",
            "host.prefetch",
            "out of range (expected 0 to 256)",
        ),
        (
            "store",
            "mitigations = [\"silent-write\"]",
            "host.mitigations",
            "unknown mitigation \"silent-write\"",
        ),
        (
            "store",
            "mitigations = \"all\"",
            "host.mitigations",
            "expected a list of strings",
        ),
        (
            "store",
            "mitigations = [1]",
            "host.mitigations",
            "found integer in it",
        ),
        (
            "store",
            "swapper = \"linux\"",
            "host.swapper",
            "expected uffd or kernel",
        ),
        (
            "store",
            "swapper = \"kernel\"\nmitigations = [\"silent-writes\"]",
            "host.mitigations",
            "the kernel swapper (host.swapper = \"kernel\") has none",
        ),
        (
            "store",
            "swapper = \"kernel\"\nprefetch = 8",
            "host.prefetch",
            "vm.page-cluster",
        ),
        (
            "store",
            "store = \"redis\"",
            "host.store_url",
            "is required with store = \"redis\"",
        ),
        (
            "store",
            "store = \"memory\"\nstore_url = \"redis://127.0.0.1:6379\"",
            "host.store_url",
            "is for store = \"redis\" only",
        ),
        (
            "store",
            "store = \"redis\"\nstore_url = \"http://x:1\"",
            "host.store_url",
            "is not redis://HOST:PORT[/DB]",
        ),
        (
            "store",
            "store = \"redis\"\nstore_url = 7",
            "host.store_url",
            "expected a string",
        ),
        (
            "store",
            "store = \"redis\"\nstore_url = \"redis://127.0.0.1:1\"\nswapper = \"kernel\"",
            "host.store",
            "the kernel swapper swaps to zram or a swap file",
        ),
        (
            "kind",
            "kind = \"stream\"",
            "workload.kind",
            "expected touch, integrity, command or app",
        ),
        (
            "mb",
            "mb = 1.5",
            "workload.mb",
            "expected an integer, found float",
        ),
        ("mb", "mb = 0", "workload.mb", "out of range"),
        (
            "pattern",
            "pattern = \"zipf:0\"",
            "workload.pattern",
            "bad zipf skew",
        ),
        (
            "pattern",
            "pattern = \"spiral\"",
            "workload.pattern",
            "unknown pattern",
        ),
        ("passes", "passes = 0", "workload.passes", "out of range"),
        (
            "passes",
            "write_ratio = 1.5",
            "workload.write_ratio",
            "out of range",
        ),
        (
            "passes",
            "write_ratio = \"half\"",
            "workload.write_ratio",
            "expected a number from 0 to 1, found string",
        ),
        (
            "passes",
            "disk_read_mb = -1",
            "workload.disk_read_mb",
            "out of range",
        ),
        ("name", "name = \"Bad Name\"", "name", "not a valid name"),
        ("name", "name = 7", "name", "expected a string"),
        (
            "description",
            "repetitions = 0",
            "repetitions",
            "out of range",
        ),
        (
            "description",
            "timeout_s = 100000",
            "timeout_s",
            "out of range",
        ),
    ];
    for (prefix, line, key, want) in cases {
        let (msg, d) = diag(scenario(&with(prefix, line)));
        assert_eq!(d.key.as_deref(), Some(*key), "{line}: {msg}");
        assert!(
            msg.contains(&format!(": {key}:")),
            "{line}: key not named: {msg}"
        );
        assert!(msg.contains(want), "{line}: {msg} lacks {want:?}");
        assert!(msg.starts_with("t.toml:"), "{msg}");
    }
    // The column points at the value.
    let (msg, _) = diag(scenario(&with("mem", "mem = \"12Q\"")));
    assert!(
        msg.starts_with("t.toml:5:7: guest.mem: bad size \"12Q\""),
        "{msg}"
    );
}

#[test]
fn balloon_values_are_checked() {
    let b = |lines: &str| scenario(&format!("{BASE}[balloon]\n{lines}\n"));
    let (msg, d) = diag(b("policy = \"sometimes\""));
    assert_eq!(d.key.as_deref(), Some("balloon.policy"));
    assert!(
        msg.contains("expected none, manual, auto or churn"),
        "{msg}"
    );
    let (msg, _) = diag(b("policy = \"auto\"\nstats_interval_ms = 5"));
    assert!(
        msg.contains("balloon.stats_interval_ms: 5 ms is too often"),
        "{msg}"
    );
    let (msg, d) = diag(b("policy = \"manual\""));
    assert_eq!(d.key.as_deref(), Some("balloon.target"));
    assert!(msg.contains("missing"), "{msg}");
    let (msg, _) = diag(b("target = \"64M\""));
    assert!(msg.contains("only applies to policy = \"manual\""), "{msg}");
    let s = b("policy = \"manual\"\ntarget = \"64M\"").unwrap();
    assert_eq!(
        s.balloon.policy,
        BalloonPolicy::Manual {
            target: ByteSize(64 << 20)
        }
    );
    assert_eq!(
        b("policy = \"auto\"").unwrap().balloon.policy,
        BalloonPolicy::Auto
    );
    // Churn: a size and a period (10 s unless given), nowhere else.
    let s = b("policy = \"churn\"\ntarget = \"32M\"").unwrap();
    assert_eq!(
        s.balloon.policy,
        BalloonPolicy::Churn {
            target: ByteSize(32 << 20),
            period_s: 10
        }
    );
    let (msg, d) = diag(b("policy = \"churn\""));
    assert_eq!(d.key.as_deref(), Some("balloon.target"));
    assert!(
        msg.contains("policy = \"churn\" needs the balloon size"),
        "{msg}"
    );
    let (msg, d) = diag(b("policy = \"manual\"\ntarget = \"32M\"\nperiod_s = 5"));
    assert_eq!(d.key.as_deref(), Some("balloon.period_s"));
    assert!(msg.contains("only applies to policy = \"churn\""), "{msg}");
    let (msg, _) = diag(b("policy = \"churn\"\ntarget = \"32M\"\nperiod_s = 0"));
    assert!(msg.contains("balloon.period_s: 0 is out of range"), "{msg}");
}

#[test]
fn timed_integrity_runs_fit_their_timeout() {
    let soak = load("soak").unwrap().scenarios.remove(0);
    assert_eq!(soak.workload.kind, WorkloadKind::Integrity);
    assert!(
        soak.workload.duration_s >= 600,
        "a soak of at least 10 minutes"
    );
    assert!(soak.host.is_some() && soak.guest.swap.is_some());
    assert!(matches!(soak.balloon.policy, BalloonPolicy::Churn { .. }));
    let integrity = BASE.replace("kind = \"touch\"", "kind = \"integrity\"");
    let s = scenario(&format!("{integrity}duration_s = 60\n")).unwrap();
    assert_eq!(s.workload.duration_s, 60);
    let (msg, d) = diag(scenario(&format!(
        "timeout_s = 100\n{integrity}duration_s = 60\n"
    )));
    assert_eq!(d.key.as_deref(), Some("workload.duration_s"), "{msg}");
    assert!(msg.contains("leaves no time to boot"), "{msg}");
    let (msg, _) = diag(scenario(&format!("{BASE}duration_s = 60\n")));
    assert!(
        msg.contains("only the integrity workload runs for a time"),
        "{msg}"
    );
}

#[test]
fn missing_required_keys_are_named() {
    let (msg, d) = diag(scenario(&with("name", "")));
    assert_eq!(d.key.as_deref(), Some("name"));
    assert!(msg.contains("missing key \"name\""), "{msg}");
    let (msg, d) = diag(scenario(&with("mb", "")));
    assert_eq!(d.key.as_deref(), Some("workload.mb"));
    assert!(
        msg.starts_with("t.toml:14:1: workload.mb: missing"),
        "{msg}"
    );
    let (msg, _) = diag(scenario(&format!("{BASE}guest = 5\n")));
    assert!(msg.contains("duplicate") || msg.contains("guest"), "{msg}");
}

#[test]
fn workload_that_cannot_fit_in_the_guest_is_rejected() {
    // No guest swap, 384M in 256M − 64M: rejected even with host swapping on.
    let text = with("swap", "");
    let (msg, d) = diag(scenario(&text));
    assert!(matches!(scenario(&text), Err(ScenarioError::Invalid(_))));
    assert_eq!(d.key.as_deref(), Some("workload.mb"));
    assert!(
        msg.starts_with("t.toml:16:1: workload.mb: a 384M working set"),
        "{msg}"
    );
    assert!(
        msg.contains("256M of guest RAM − 64M for the guest OS = 192M"),
        "{msg}"
    );
    assert!(
        msg.contains("no swap") && msg.contains("host swapping cannot help"),
        "{msg}"
    );
    // Too small a swap disk.
    let (msg, _) = diag(scenario(&with("swap", "swap = \"128M\"")));
    assert!(msg.contains("+ 128M of guest swap = 320M"), "{msg}");
    // Fits exactly: 192M + 192M.
    assert!(scenario(&with("swap", "swap = \"192M\"")).is_ok());
    // A manual balloon takes its share.
    let text = format!("{BASE}[balloon]\npolicy = \"manual\"\ntarget = \"128M\"\n");
    let text = text.replace("swap = \"512M\"", "swap = \"256M\"");
    let (msg, _) = diag(scenario(&text));
    assert!(msg.contains("− 128M balloon"), "{msg}");
}

#[test]
fn read_mostly_workloads_and_disk_reads() {
    let text = format!("{BASE}write_ratio = 0.25\ndisk_read_mb = 64\n");
    let s = scenario(&text).unwrap();
    assert_eq!(
        (s.workload.write_ratio, s.workload.disk_read_mb),
        (0.25, 64)
    );
    // Integers 0 and 1 are fractions too; the default writes every access.
    let s = scenario(&format!("{BASE}write_ratio = 0\n")).unwrap();
    assert_eq!(s.workload.write_ratio, 0.0);
    assert_eq!(scenario(BASE).unwrap().workload.write_ratio, 1.0);
    // Only touch reads without writing.
    let text =
        format!("{BASE}write_ratio = 0.5\n").replace("kind = \"touch\"", "kind = \"integrity\"");
    let (msg, d) = diag(scenario(&text));
    assert_eq!(d.key.as_deref(), Some("workload.write_ratio"), "{msg}");
    assert!(
        msg.starts_with("t.toml:19:1: workload.write_ratio: only the touch"),
        "{msg}"
    );
    // The disk read needs a disk at least that large.
    let (msg, d) = diag(scenario(&format!("{BASE}disk_read_mb = 1024\n")));
    assert_eq!(d.key.as_deref(), Some("workload.disk_read_mb"), "{msg}");
    assert!(
        msg.contains("1G is more than the guest's 512M disk"),
        "{msg}"
    );
    let text = format!("{BASE}disk_read_mb = 8\n")
        .replace("swap = \"512M\"\n", "")
        .replace("mb = 384", "mb = 64");
    let (msg, _) = diag(scenario(&text));
    assert!(msg.contains("the guest has no disk to read"), "{msg}");
    // The page-cache read comes after it on the same disk.
    let (msg, d) = diag(scenario(&format!(
        "{BASE}disk_read_mb = 256
disk_cache_mb = 300
"
    )));
    assert_eq!(d.key.as_deref(), Some("workload.disk_cache_mb"), "{msg}");
    assert!(
        msg.contains("556M (disk_read_mb + disk_cache_mb) is more than"),
        "{msg}"
    );
    let s = scenario(&format!(
        "{BASE}disk_read_mb = 256
disk_cache_mb = 256
"
    ))
    .unwrap();
    assert_eq!(s.workload.disk_cache_mb, 256);
}

#[test]
fn host_limit_must_make_the_host_swap() {
    let (msg, d) = diag(scenario(&with("limit", "limit = \"256M\"")));
    assert_eq!(d.key.as_deref(), Some("host.limit"));
    assert!(
        msg.contains("not below guest.mem 256M") && msg.contains("never swap"),
        "{msg}"
    );
    let (msg, _) = diag(scenario(&with("limit", "limit = \"16M\"")));
    assert!(msg.contains("16M is below 32M"), "{msg}");
    // The working set and the OS fit in the limit and the guest cannot swap.
    let text = with("swap", "")
        .replace("mem = \"256M\"", "mem = \"1G\"")
        .replace("limit = \"192M\"", "limit = \"512M\"");
    let (msg, _) = diag(scenario(&text));
    assert!(msg.contains("host would have nothing to swap"), "{msg}");
    // [host] without a limit does nothing: rejected, pointing at [host].
    let (msg, d) = diag(scenario(&with("limit", "")));
    assert_eq!(d.key.as_deref(), Some("host.limit"));
    assert!(
        msg.starts_with("t.toml:9:1: [host] sets store but no limit"),
        "{msg}"
    );
}

#[test]
fn balloon_cross_checks() {
    // auto needs host pressure.
    let text = format!(
        "{}[balloon]\npolicy = \"auto\"\n",
        BASE.replace(
            "limit = \"192M\"\nstore = \"memory\"\npolicy = \"clock\"\n",
            ""
        )
    );
    let text = text.replace("[host]\n", "");
    let (msg, d) = diag(scenario(&text));
    assert_eq!(d.key.as_deref(), Some("balloon.policy"));
    assert!(msg.contains("without host.limit there is none"), "{msg}");
    // A manual balloon must leave the guest OS its room.
    let text = format!("{BASE}[balloon]\npolicy = \"manual\"\ntarget = \"224M\"\n");
    let (msg, d) = diag(scenario(&text));
    assert_eq!(d.key.as_deref(), Some("balloon.target"));
    assert!(msg.contains("leaves the guest 32M of its 256M"), "{msg}");
}

#[test]
fn duplicate_mitigation_is_rejected_and_list_is_sorted() {
    let (msg, _) = diag(scenario(&with(
        "store",
        "mitigations = [\"false-reads\", \"false-reads\"]",
    )));
    assert!(msg.contains("\"false-reads\" is listed twice"), "{msg}");
    let s = scenario(&with(
        "store",
        "mitigations = [\"false-reads\", \"silent-writes\"]",
    ))
    .unwrap();
    assert_eq!(
        s.host.unwrap().mitigations,
        [Mitigation::SilentWrites, Mitigation::FalseReads]
    );
    assert_eq!(
        Mitigation::DecayedSequentiality.name(),
        "decayed-sequentiality"
    );
}

#[test]
fn matrix_defaults_apply_but_scenarios_win() {
    let m = r#"description = "m"
[defaults]
repetitions = 5
[defaults.host]
store = "lz4"
[defaults.workload]
passes = 3

[[scenario]]
name = "a"
repetitions = 2
[scenario.guest]
mem = "512M"
[scenario.workload]
mb = 100

[[scenario]]
name = "b"
[scenario.guest]
mem = "512M"
[scenario.host]
limit = "128M"
[scenario.workload]
mb = 300
passes = 1
"#;
    let m = parse(&Source::new("m.toml", m), &no_resolve).unwrap();
    assert_eq!(m.description, "m");
    let (a, b) = (&m.scenarios[0], &m.scenarios[1]);
    assert_eq!((a.repetitions, b.repetitions), (2, 5));
    assert_eq!((a.workload.passes, b.workload.passes), (3, 1));
    // A default [host] setting does not switch host swapping on...
    assert!(a.host.is_none());
    // ...but applies where a scenario sets a limit.
    assert_eq!(b.host.as_ref().unwrap().store, StoreChoice::Lz4);
    // Origins name the defaults' position for defaulted keys.
    assert_eq!(b.origin["repetitions"].line, 3);
}

#[test]
fn matrix_structure_errors() {
    let p = |t: &str| parse_matrix(&Source::new("m.toml", t), &no_resolve);
    let e = p("[defaults]\nrepetitions = 1\n").unwrap_err().to_string();
    assert!(e.contains("at least one [[scenario]]"), "{e}");
    let e = p("[defaults]\nname = \"x\"\n[[scenario]]\nfile = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("m.toml:2:1: unknown key \"name\" in [defaults]"),
        "{e}"
    );
    let e = p("[[scenario]]\nfile = \"a.toml\"\nrepetitions = 2\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("m.toml:3:1:") && e.contains("takes no other keys"),
        "{e}"
    );
    let e = p("[[scenario]]\nfile = \"a.toml\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("m.toml:2:8: scenario.file: cannot load \"a.toml\": no file a.toml"),
        "{e}"
    );
    let dup = "[[scenario]]\nname = \"a\"\nworkload = { mb = 8 }\n[[scenario]]\nname = \"a\"\nworkload = { mb = 8 }\n";
    let e = p(dup).unwrap_err();
    assert!(matches!(e, ScenarioError::Invalid(_)));
    let e = e.to_string();
    assert!(
        e.starts_with("m.toml:5:1:") && e.contains("used twice (first at m.toml:2:1)"),
        "{e}"
    );
    let e = p("scenario = 3\n").unwrap_err().to_string();
    assert!(e.contains("expected [[scenario]] tables"), "{e}");
}

#[test]
fn single_scenario_file_is_a_matrix_of_one() {
    let m = parse(&Source::new("t.toml", BASE), &no_resolve).unwrap();
    assert_eq!(m.scenarios.len(), 1);
    assert_eq!(m.total_runs(), 3);
    assert_eq!(m.description, "test");
}

#[test]
fn code_built_scenarios_validate_without_positions() {
    let mut s = scenario(BASE).unwrap();
    s.origin.clear();
    s.guest.swap = None;
    let e = s.validate().unwrap_err();
    let d = e.diagnostic().unwrap();
    assert!(d.pos.is_none());
    assert!(
        e.to_string().starts_with("scenario \"t\": workload.mb:"),
        "{e}"
    );
}

#[test]
fn scenario_serialises_in_file_terms() {
    let s = scenario(&with("store", "mitigations = [\"stale-reads\"]")).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["guest"]["mem"], "256M");
    assert_eq!(v["guest"]["swap"], "512M");
    assert_eq!(v["host"]["policy"], "clock");
    assert_eq!(v["host"]["mitigations"][0], "stale-reads");
    assert_eq!(v["workload"]["pattern"], "random");
    assert_eq!(v["balloon"]["policy"], "none");
    assert!(v.get("origin").is_none());
}

#[test]
fn referenced_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("m.toml");
    std::fs::write(&matrix, "[[scenario]]\nfile = \"/dev/zero\"\n").unwrap();
    let e = load(matrix.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; (builtin::MAX_FILE_BYTES + 1) as usize]).unwrap();
    std::fs::write(&matrix, "[[scenario]]\nfile = \"big.toml\"\n").unwrap();
    let e = load(matrix.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("larger than 1024 KiB"), "{e}");
    let e = load(big.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("larger than 1024 KiB"), "{e}");
    let e = load("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn a_huge_key_gives_a_short_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    let key = "k".repeat(500_000);
    std::fs::write(&file, format!("name = \"x\"\n{key} = 1\n")).unwrap();
    let e = load(file.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("unknown key \"kkk"), "{}", &e[..200]);
    assert!(e.len() < 1000, "{} bytes", e.len());
    assert!(e.contains("more bytes)"), "{e}");
}

#[test]
fn a_spec_reads_back_from_its_json_exactly() {
    // Resuming a matrix compares a saved result's `spec`, read back from its JSON
    // text, with the scenario as it serializes now: a float must read back to the
    // same bits, or the run is taken for one with other settings and run again.
    for ratio in [
        "0.9999999999999999",
        "1.2345678901234571e-13",
        "0.3",
        "1e-300",
    ] {
        let s = scenario(&with("passes", &format!("write_ratio = {ratio}"))).unwrap();
        let text = serde_json::to_string_pretty(&s).unwrap();
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read, serde_json::to_value(&s).unwrap(), "{ratio}");
    }
}

#[test]
fn guest_kernel_names_a_debian_package() {
    let s = scenario(&BASE.replace(
        "swap = \"512M\"",
        "swap = \"512M\"\nkernel = \"linux-image-amd64@bookworm-backports\"",
    ))
    .unwrap();
    assert_eq!(
        s.guest.kernel.as_deref(),
        Some("linux-image-amd64@bookworm-backports")
    );
    // Unset: the default image, and nothing in the serialized settings.
    let s = scenario(BASE).unwrap();
    assert_eq!(s.guest.kernel, None);
    let json = serde_json::to_string(&s.guest).unwrap();
    assert!(!json.contains("kernel"), "{json}");
}

#[test]
fn a_redis_store_takes_its_url_and_reads_back() {
    let s = scenario(&with(
        "store",
        "store = \"redis\"\nstore_url = \"redis://127.0.0.1:7000,redis://127.0.0.1:7001\"",
    ))
    .unwrap();
    let h = s.host.as_ref().unwrap();
    assert_eq!(h.store, StoreChoice::Redis);
    assert_eq!(
        h.store_url.as_deref(),
        Some("redis://127.0.0.1:7000,redis://127.0.0.1:7001")
    );
    let back: Scenario = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert_eq!(back.host, s.host);
    // A URL longer than the bound is refused, naming the key.
    let long = format!(
        "store = \"redis\"\nstore_url = \"redis://{}:1\"",
        "h".repeat(1100)
    );
    let (msg, d) = diag(scenario(&with("store", &long)));
    assert_eq!(d.key.as_deref(), Some("host.store_url"), "{msg}");
    assert!(msg.contains("at most 1024"), "{msg}");
}

#[test]
fn a_private_redis_store_is_a_url_of_its_own() {
    let s = scenario(&with("store", "store = \"redis\"\nstore_url = \"private\"")).unwrap();
    let h = s.host.as_ref().unwrap();
    assert_eq!(h.store_url.as_deref(), Some(PRIVATE_STORE_URL));
    // Only the whole word: as one node among others it is no URL.
    let (msg, d) = diag(scenario(&with(
        "store",
        "store = \"redis\"\nstore_url = \"private,redis://127.0.0.1:1\"",
    )));
    assert_eq!(d.key.as_deref(), Some("host.store_url"), "{msg}");
    assert!(msg.contains("\"private\" is not redis://"), "{msg}");
    // Still for the Redis store only.
    let (msg, d) = diag(scenario(&with("store", "store_url = \"private\"")));
    assert_eq!(d.key.as_deref(), Some("host.store_url"), "{msg}");
}
