//! `swaplab run [SCENARIO|FILE]...`: run scenarios (built-in names or TOML
//! files; none: the standard matrix), print a summary per run and write the
//! results.
//!
//! Output directory (`--out DIR`, default `results/<UTC timestamp>/`):
//! `results.json` (every run), `<scenario>/<repetition>/result.json` and
//! `console.log` per run, and `result.json` at the top when there was only
//! one run.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::analyze::analyze;
use super::clock::utc_stamp;
use super::interrupt::Interrupter;
use super::machine::{run_machine, MachineOptions};
use super::report::{self, progress::LiveProgress};
use super::result::RunResult;
use super::resume::{self, Earlier};
use super::trace::session::Tracing;
use crate::boot::console::Show;
use crate::boot::{BootFiles, TRIPLE_FAULT};
use crate::cli::usage;
use ::report::data::Outcome;
use ::report::progress::RunEnd;
use base::ByteSize;
use hostsys::signals::{signal_name, SignalScope};
use sandbox::{needs_sandbox_here, SandboxError, SandboxMode};
use scenario::{self, Matrix, Scenario};

/// Arguments.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scenarios or matrices to run: built-in names (default, baseline, guest-swap,
    /// host-swap, host-swap-mitigated, double-paging, balloon, soak, papers) or TOML files.
    /// None: the standard matrix (`default`).
    pub scenarios: Vec<String>,
    /// Where results go (default: results/<UTC timestamp>).
    pub out: Option<PathBuf>,
    /// Print each run's result as one JSON line on stdout instead of the summary.
    pub json: bool,
    /// Override every scenario's repetitions.
    pub repetitions: Option<u32>,
    /// One repetition each, and only the scenarios with `quick` (the default).
    pub quick: bool,
    /// Override the guest's RAM.
    pub mem: Option<ByteSize>,
    /// Override the guest swap disk size.
    pub guest_swap: Option<ByteSize>,
    /// Override the host limit (only for scenarios with host swapping).
    pub host_limit: Option<ByteSize>,
    /// Override who swaps on the host (scenarios with host swapping).
    pub host_swapper: Option<scenario::HostSwapper>,
    /// Override the workload's working set.
    pub working_set: Option<ByteSize>,
    /// Override the workload's passes.
    pub passes: Option<u32>,
    /// Override the per-run time limit, seconds.
    pub timeout: Option<u64>,
    /// Show the guest's console (kernel messages and the command's output) on stderr.
    pub console: bool,
    /// Serve the control socket here while each guest runs (`swaplab ctl --sock PATH`).
    pub api_sock: Option<PathBuf>,
    // runreport: --ktrace
    /// Record KVM's kernel trace events (kvm:kvm_exit, kvm:kvm_page_fault, kvmmmu:*, …)
    /// during each run and merge them into trace.json (needs root and tracefs, which is
    /// mounted for the run if it is not; without them the run goes on without).
    pub ktrace: bool,
    /// Continue the matrix in --out DIR: runs whose result.json is there (for the same
    /// settings) are kept, the rest run. A run that started but wrote no result runs again.
    /// In the nested sandbox swaplab does this by itself when L1's kernel dies mid-matrix.
    pub resume: bool,
    /// Why the matrix is resumed, for the report (set by swaplab when it restarts L1).
    pub resume_reason: Option<String>,
    pub sandbox: SandboxMode,
    /// Run the VMM's threads under their seccomp filters (`--no-seccomp` turns
    /// them off).
    pub seccomp: bool,
    /// In the nested sandbox: split the matrix into this many shards, each in
    /// its own L1 at once, then gather them (1: one L1, the runs in order;
    /// `auto`: one per CPU, see [`Jobs::resolve`]).
    pub jobs: Jobs,
    /// Run only this shard of the matrix (its result files go to `--out`, the
    /// shard's own results, report and trace to `--out`/shards/I/).
    pub shard: Option<Shard>,
    /// With `shard`: take runs first come, first served with the other
    /// shards writing to `out` ([`jobs::Claims`]), not every Nth.
    pub claim_runs: bool,
}

pub use super::jobs::{Jobs, Shard, MAX_SHARDS};

/// Loads the scenarios and applies the command line's overrides; every error
/// (a typo'd key, a bad value, a meaningless override) before anything runs.
pub fn load(args: &RunOptions) -> anyhow::Result<Vec<Scenario>> {
    let names: Vec<String> = if args.scenarios.is_empty() {
        vec!["default".into()]
    } else {
        args.scenarios.clone()
    };
    let mut out: Vec<Scenario> = Vec::new();
    for name in &names {
        let m: Matrix = scenario::load(name).map_err(|e| usage(e.to_string()))?;
        for mut s in m.scenarios {
            if args.quick && !s.quick {
                continue;
            }
            if out.iter().any(|o| o.name == s.name) {
                return Err(usage(format!("scenario {:?} is named twice", s.name)));
            }
            overrides(args, &mut s);
            s.validate()
                .map_err(|e| usage(format!("with the command line's overrides: {e}")))?;
            out.push(s);
        }
    }
    Ok(out)
}

fn overrides(args: &RunOptions, s: &mut Scenario) {
    if args.quick {
        s.repetitions = 1;
    }
    if let Some(n) = args.repetitions {
        s.repetitions = n;
    }
    if let Some(m) = args.mem {
        s.guest.mem = m;
    }
    if let Some(g) = args.guest_swap {
        if s.guest.swap.is_some() {
            s.guest.swap = Some(g);
        }
    }
    if let (Some(l), Some(h)) = (args.host_limit, s.host.as_mut()) {
        h.limit = l;
    }
    if let (Some(w), Some(h)) = (args.host_swapper, s.host.as_mut()) {
        h.swapper = w;
    }
    if let Some(w) = args.working_set {
        s.workload.mb = w.bytes().div_ceil(1 << 20);
    }
    if let Some(p) = args.passes {
        s.workload.passes = p;
    }
    if let Some(t) = args.timeout {
        s.timeout_s = t;
    }
}

/// Where scratch files (the guest swap image, host store files) go: tmpfs in
/// the sandbox (L1's root is the host's over 9p, slow for random I/O), else
/// the system's temporary directory.
fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let base = if sandbox::in_sandbox() && Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base::scratch::dir_in(&base, "swaplab-run-")
        .with_context(|| format!("creating a scratch directory in {}", base.display()))
}

/// Runs one repetition of `s`, writing `result.json` and `console.log` into `dir`.
pub fn run_one(
    s: &Scenario,
    dir: &Path,
    show: Show,
    api_sock: Option<&Path>,
    mut tracing: Option<(&mut Tracing, &str)>,
    interrupter: Option<&Interrupter>,
    triple_fault_first: bool,
) -> anyhow::Result<RunResult> {
    let scratch = scratch_dir()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("console.log");
    let opts = MachineOptions {
        scratch: scratch.path(),
        show,
        console_log: Some(&log),
        // In the sandbox the requested path is forwarded out of L1; listen on the inner one.
        api_sock: api_sock.map(sandbox::api_sock_listen_path),
        command: None,
        console_to_stdout: false,
        interrupter: interrupter.cloned(),
        triple_fault_first,
    };
    // runreport: kernel tracing around the machine, the run's trace after it.
    let ktrace = tracing.as_mut().and_then(|(t, _)| t.start_run());
    let raw = run_machine(s, opts).with_context(|| format!("running scenario {}", s.name))?;
    let async_pf = match tracing {
        Some((t, label)) => t.end_run(label, &raw, ktrace),
        None => Vec::new(),
    };
    let mut result = analyze(s, &raw);
    result.add_async_pf(async_pf);
    write_json(&dir.join("result.json"), &result)?;
    Ok(result)
}

/// Writes `v` to `path` whole or not at all (a temporary file, synced, then
/// renamed): `--resume` keeps a run whose `result.json` is there, and in the
/// sandbox L1's 9p mount caches writes that an L1 panic would lose.
fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let body = serde_json::to_string_pretty(v)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// `results/<UTC timestamp>`.
fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("results").join(utc_stamp(secs))
}

/// How many times in a row L1 may die under one matrix (shard) without a run
/// finishing in between before the matrix gives up: an L1 that dies before
/// any run ends would die again. Deaths between which runs finish do not
/// count against it (a long matrix under two L1s met three stalls in 40
/// minutes, each after runs had finished), up to [`L1_MATRIX_MOST_ATTEMPTS`].
const L1_MATRIX_ATTEMPTS: u32 = 3;

/// The most L1s one matrix (shard) starts, whatever finished in between.
const L1_MATRIX_MOST_ATTEMPTS: u32 = 12;

/// How many runs have a `result.json` in the matrix directory `out`
/// (`<scenario>/<repetition>/result.json`; set-aside attempts not counted).
fn finished_runs(out: &Path) -> usize {
    let Ok(scenarios) = std::fs::read_dir(out) else {
        return 0;
    };
    scenarios
        .flatten()
        .filter_map(|s| std::fs::read_dir(s.path()).ok())
        .flat_map(|reps| reps.flatten())
        .filter(|r| {
            r.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                && r.path().join("result.json").is_file()
        })
        .count()
}

/// Run the matrix in the sandbox. The output directory is chosen here, so
/// that when L1's kernel panics (it is emulated by TCG, and has, now and then,
/// under load) L1 is started again and the matrix resumes there
/// ([`super::resume`]): finished runs are kept, the cut-off run runs again,
/// and the report says so.
fn run_in_sandbox(
    args: &RunOptions,
    scenarios: &[Scenario],
    kernel_images: Vec<(String, PathBuf)>,
) -> anyhow::Result<u8> {
    let mut files = BootFiles::resolve(None, None, None, false)?;
    files.kernel_images = kernel_images;
    let mem = scenarios
        .iter()
        .map(|s| s.guest.mem.bytes())
        .max()
        .unwrap_or(0);
    let time = scenarios
        .iter()
        .map(|s| std::time::Duration::from_secs(s.timeout_s * u64::from(s.repetitions)))
        .sum();
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let o = default_out();
            add_args(&mut argv, [OsString::from("--out"), o.clone().into()]);
            o
        }
    };
    // An unwritable --out fails here, not after L1 has booted.
    std::fs::create_dir_all(&out).map_err(|e| usage(format!("--out {}: {e}", out.display())))?;
    let l1 = L1Job {
        files: &files,
        mem: 2 * mem,
        time,
        out: &out,
    };
    let runs: u32 = scenarios.iter().map(|s| s.repetitions).sum();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let shardable = args.shard.is_none() && args.api_sock.is_none();
    let jobs = args.jobs.resolve(shardable, cpus, runs);
    if jobs > 1 {
        if args.jobs == Jobs::Auto {
            eprintln!(
                "swaplab: {runs} runs as {jobs} shards in {jobs} sandboxes at once, one per CPU \
                 (--jobs auto; --jobs 1 runs them in one sandbox, in order, with quieter timings)"
            );
        }
        if !args.resume {
            // A fresh matrix starts with empty histories and no run claimed.
            resume::History::open(&out, false, None);
            let _ = std::fs::remove_dir_all(super::jobs::Claims::dir(&out));
        }
        run_shards(&l1, &argv, jobs)?;
        let reason = format!(
            "running as {n} shards in {n} sandboxes at once (--jobs {n}; each shard's trace is \
             shards/I/trace.json)",
            n = jobs
        );
        if every_run_kept(&out, scenarios) {
            // Nothing left to run: gathering needs no guest, so no L1 (it
            // took one more L1 boot, half a minute here).
            let gather = RunOptions {
                out: Some(out.clone()),
                resume: true,
                resume_reason: Some(reason),
                jobs: Jobs::N(1),
                shard: None,
                ..args.clone()
            };
            return run_here(&gather, scenarios);
        }
        // Otherwise one more L1 gathers them and runs what a shard did not.
        if !argv.iter().any(|a| a == "--resume") {
            add_args(&mut argv, ["--resume".into()]);
        }
        add_args(&mut argv, ["--resume-reason".into(), reason.into()]);
    }
    l1.attempts(argv, &mut std::io::stdout(), &mut std::io::stderr())
}

/// Where repetition `rep` of `s` writes its files in the matrix's `out`.
fn run_dir(out: &Path, s: &Scenario, rep: u32) -> PathBuf {
    out.join(&s.name).join(rep.to_string())
}

/// Whether every run of `scenarios` has a result in `out` that `--resume`
/// keeps (the same test the gathering pass makes).
fn every_run_kept(out: &Path, scenarios: &[Scenario]) -> bool {
    scenarios.iter().all(|s| {
        (1..=s.repetitions)
            .all(|rep| matches!(resume::earlier(&run_dir(out, s, rep), s), Earlier::Kept(_)))
    })
}

/// What every L1 of one matrix shares.
struct L1Job<'a> {
    files: &'a BootFiles,
    mem: u64,
    time: std::time::Duration,
    out: &'a Path,
}

impl L1Job<'_> {
    /// Runs `argv` in L1 and, when L1's kernel dies mid-matrix, starts L1
    /// again to resume it (at most [`L1_MATRIX_ATTEMPTS`] deaths in a row
    /// with no run finished in between, [`L1_MATRIX_MOST_ATTEMPTS`] L1s in all).
    fn attempts(
        &self,
        mut argv: Vec<OsString>,
        stdout: &mut dyn std::io::Write,
        stderr: &mut dyn std::io::Write,
    ) -> anyhow::Result<u8> {
        let out = self.out;
        let mut attempt = 1;
        // Deaths in a row with no run finished in between.
        let mut fruitless = 0;
        let mut finished = finished_runs(out);
        loop {
            let result = crate::boot::cmd::run_args_in_sandbox_to(
                self.files,
                self.mem,
                self.time,
                argv.clone(),
                stdout,
                stderr,
            );
            let died = match &result {
                Err(e) => match e
                    .downcast_ref::<SandboxError>()
                    .and_then(SandboxError::l1_died)
                {
                    Some(why) => why,
                    None => return result,
                },
                Ok(_) => return result,
            };
            let now = finished_runs(out);
            fruitless = if now > finished { 1 } else { fruitless + 1 };
            finished = now;
            if fruitless == L1_MATRIX_ATTEMPTS || attempt == L1_MATRIX_MOST_ATTEMPTS {
                return result;
            }
            attempt += 1;
            // A death the test suite asked for is no retry worth listing.
            let injected = std::env::var_os(resume::ENV_INJECT_L1_PANIC).is_some()
                && died.contains(resume::INJECTED_PANIC);
            if !injected {
                resume::note_retry(&format!(
                    "resumed the matrix in {} after the sandbox's {died}",
                    out.display()
                ));
            }
            if let Err(e) = &result {
                let _ = writeln!(stderr, "swaplab: {e:#}");
            }
            let _ = writeln!(
                stderr,
                "swaplab: starting L1 again to resume the matrix in {} (attempt {attempt}; \
                 {fruitless} of at most {L1_MATRIX_ATTEMPTS} deaths in a row without a run finished)",
                out.display()
            );
            if !argv.iter().any(|a| a == "--resume") {
                add_args(&mut argv, ["--resume".into()]);
            }
            // The reason is set once: a third attempt replaces the second's.
            if let Some(i) = argv.iter().position(|a| a == "--resume-reason") {
                argv.drain(i..(i + 2).min(argv.len()));
            }
            let reason = format!("the sandbox's {died}");
            add_args(&mut argv, ["--resume-reason".into(), reason.into()]);
        }
    }
}

/// Runs the matrix `argv` names as `jobs` shards, each in its own L1 at once
/// (with its own resumes), their output lines prefixed `[shard I/N]`. A
/// shard that fails says so, and the gathering pass runs what it left; but
/// when a shard was interrupted (Ctrl-C, SIGTERM: QEMU was stopped by the
/// signal), that error is returned and nothing more starts.
fn run_shards(l1: &L1Job<'_>, argv: &[OsString], jobs: u32) -> anyhow::Result<()> {
    let interrupted = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=jobs)
            .map(|index| {
                let shard = Shard { index, count: jobs };
                let mut argv = argv.to_vec();
                add_args(
                    &mut argv,
                    [
                        "--shard".into(),
                        shard.to_string().into(),
                        "--claim-runs".into(),
                    ],
                );
                scope.spawn(move || {
                    let tag = format!("[shard {shard}] ");
                    let mut out = Prefixed::new(&tag, Stream::Stdout);
                    let mut err = Prefixed::new(&tag, Stream::Stderr);
                    match l1.attempts(argv, &mut out, &mut err) {
                        Ok(0) => None,
                        Ok(code) => {
                            err.line(&format!("swaplab: shard {shard} ended with status {code}"));
                            None
                        }
                        Err(e)
                            if matches!(
                                e.downcast_ref::<SandboxError>(),
                                Some(SandboxError::Interrupted(_))
                            ) =>
                        {
                            Some(e)
                        }
                        Err(e) => {
                            err.line(&format!("swaplab: shard {shard} failed: {e:#}"));
                            None
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .next()
    });
    interrupted.map_or(Ok(()), Err)
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Output of one shard: whole lines, each with the shard's tag, so that
/// shards running at once do not cut into each other's lines.
struct Prefixed<'a> {
    tag: &'a str,
    to: Stream,
    pending: Vec<u8>,
}

impl<'a> Prefixed<'a> {
    fn new(tag: &'a str, to: Stream) -> Self {
        Prefixed {
            tag,
            to,
            pending: Vec::new(),
        }
    }

    fn line(&mut self, text: &str) {
        let _ = self.write_all(format!("{text}\n").as_bytes());
    }

    fn emit(&self, line: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(self.tag.len() + line.len());
        buf.extend_from_slice(self.tag.as_bytes());
        buf.extend_from_slice(line);
        match self.to {
            Stream::Stdout => std::io::stdout().lock().write_all(&buf),
            Stream::Stderr => std::io::stderr().lock().write_all(&buf),
        }
    }
}

impl std::io::Write for Prefixed<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Prefixed<'_> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let mut rest = std::mem::take(&mut self.pending);
            rest.push(b'\n');
            let _ = self.emit(&rest);
        }
    }
}

/// One repetition to run afresh.
struct Fresh<'a> {
    s: &'a Scenario,
    dir: &'a Path,
    label: &'a str,
    show: Show,
    api_sock: Option<&'a Path>,
    interrupter: &'a Interrupter,
}

impl Fresh<'_> {
    /// Runs it ([`run_one`]); a run that could not be made is a failed run.
    fn run(&self, tracing: &mut Tracing, triple_fault_first: bool) -> RunResult {
        run_one(
            self.s,
            self.dir,
            self.show,
            self.api_sock,
            Some((&mut *tracing, self.label)),
            Some(self.interrupter),
            triple_fault_first,
        )
        .unwrap_or_else(|e| failed_run(self.s, self.dir, self.label, &e, tracing))
    }
}

/// Why a run in the nested sandbox runs once more: a residue of L1's
/// emulation, not of what the run measures.
#[derive(Debug, Clone, PartialEq)]
enum Residue {
    /// The guest triple-faulted ([`emulation_residue`]).
    TripleFault,
    /// L1 stood still this long during the run ([`l1_stall`]).
    L1Stall(f64),
}

impl Residue {
    /// Where the first attempt is kept, beside the run's directory.
    fn suffix(&self) -> &'static str {
        match self {
            Residue::TripleFault => "triple-fault",
            Residue::L1Stall(_) => "l1-stall",
        }
    }
}

/// Moves a run that ended in a [`Residue`] aside, to `<rep>-<suffix>/`
/// beside `dir`, so it runs once more in `dir`; the progress note that says so.
fn set_aside(dir: &Path, rep: u32, label: &str, why: &Residue) -> String {
    let kept_at = dir.with_file_name(format!("{rep}-{}", why.suffix()));
    let _ = std::fs::remove_dir_all(&kept_at);
    let kept = if std::fs::rename(dir, &kept_at).is_ok() {
        format!(" (the first attempt is kept in {})", kept_at.display())
    } else {
        String::new()
    };
    match why {
        Residue::TripleFault => format!(
            "{label}: {TRIPLE_FAULT} in the nested sandbox, a known residue of L1's emulated SVM \
             (QEMU TCG); running it once more{kept}"
        ),
        Residue::L1Stall(secs) => format!(
            "{label}: L1 stood still for {secs:.1} s during it (no host sample; the nested \
             sandbox's emulation stalled), so its times are not the workload's; running it \
             once more{kept}"
        ),
    }
}

/// Whether `r` failed only by a guest triple fault in the nested sandbox,
/// where that is a known residue of L1's emulated SVM: no guest panic or
/// oops came before it (that would be the verdict instead), every page the
/// workload verified was right and the host swapper lost no page (no store
/// read failed, no checksum mismatched).
fn emulation_residue(r: &RunResult) -> bool {
    sandbox::in_sandbox()
        && r.outcome.contains(TRIPLE_FAULT)
        && r.integrity_errors == 0
        && r.guest.integrity_errors == 0
        && r.swapper.as_ref().is_none_or(|s| s.fatal_errors == 0)
}

/// The host samples a run every 250 ms; a gap this long between two means
/// the whole of L1 stood still (in the nested sandbox, its emulation stalled:
/// runs have shown 32 s), and everything timed across it is the stall's.
pub const L1_STALL_GAP_S: f64 = 5.0;

/// The longest gap between two of `r`'s host samples, if it is a stall of
/// L1 ([`L1_STALL_GAP_S`], in the nested sandbox only).
fn l1_stall(r: &RunResult) -> Option<f64> {
    let gap = longest_sample_gap(&r.timeline);
    (sandbox::in_sandbox() && gap >= L1_STALL_GAP_S).then_some(gap)
}

/// The longest time between two consecutive samples, seconds.
fn longest_sample_gap(timeline: &[super::result::HostSample]) -> f64 {
    timeline
        .windows(2)
        .map(|w| w[1].t_s - w[0].t_s)
        .fold(0.0, f64::max)
}

/// A run that ended in residue `why` goes once more: its first attempt is
/// set aside, and that is said, noted for the test log (unless the test
/// injected it) and recorded in the matrix's history.
fn once_more(
    fresh: &Fresh<'_>,
    rep: u32,
    why: &Residue,
    injected: bool,
    progress: &LiveProgress,
    history: &mut resume::History,
) {
    let label = fresh.label;
    let note = set_aside(fresh.dir, rep, label, why);
    progress.note(&note);
    if !injected {
        resume::note_retry(&note);
    }
    history.record(match why {
        Residue::TripleFault => resume::Event::Residue(label.to_string()),
        Residue::L1Stall(secs) => {
            resume::Event::Stalled(format!("{label} (no host sample for {secs:.1} s)"))
        }
    });
}

/// Which of the matrix's runs this process runs: all, a `--shard`'s every
/// Nth, or, for the shards of `--jobs`, those it claims first.
enum Share {
    All,
    Every(Shard),
    Claimed(super::jobs::Claims),
}

impl Share {
    fn new(args: &RunOptions, out: &Path) -> anyhow::Result<Share> {
        Ok(match args.shard {
            None => Share::All,
            Some(sh) if !args.claim_runs => Share::Every(sh),
            Some(sh) => Share::Claimed(
                super::jobs::Claims::new(out, sh)
                    .with_context(|| format!("creating the shards' claims in {}", out.display()))?,
            ),
        })
    }

    /// How many of the matrix's `runs` it runs (about, when claimed).
    fn total(&self, runs: u32) -> u32 {
        match self {
            Share::All => runs,
            Share::Every(sh) => (1..=runs).filter(|&nth| sh.has(nth)).count() as u32,
            Share::Claimed(c) => c.share(runs),
        }
    }

    /// Whether [`Share::total`] was a guess.
    fn guessed(&self) -> bool {
        matches!(self, Share::Claimed(_))
    }

    /// Whether the `nth` run (from 1) is this process's.
    fn mine(&self, nth: u32, progress: &LiveProgress) -> bool {
        match self {
            Share::All => true,
            Share::Every(sh) => sh.has(nth),
            Share::Claimed(c) => c.take(nth).unwrap_or_else(|e| {
                progress.note(&format!(
                    "cannot claim run {nth} ({e}); it is left to the gathering pass"
                ));
                false
            }),
        }
    }
}

/// The residue `r` (just run) ended in, if any.
fn residue(r: &RunResult) -> Option<Residue> {
    if emulation_residue(r) {
        Some(Residue::TripleFault)
    } else {
        l1_stall(r).map(Residue::L1Stall)
    }
}

/// Adds options to `swaplab run`'s arguments (after the subcommand, before a `--`).
fn add_args<const N: usize>(argv: &mut Vec<OsString>, extra: [OsString; N]) {
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv.splice(at..at, extra);
}

/// `--resume`: the run the earlier attempt finished in `dir`, if it is to be
/// kept; otherwise says on `progress` why it runs again (and records in
/// `history` that the earlier attempt was cut off in it, if it was).
fn kept_run(
    s: &Scenario,
    dir: &Path,
    label: &str,
    progress: &LiveProgress,
    history: &mut resume::History,
) -> Option<RunResult> {
    match resume::earlier(dir, s) {
        Earlier::Absent => None,
        Earlier::Kept(r) => Some(*r),
        Earlier::Unfinished => {
            progress.note(&format!(
                "{label}: the earlier attempt did not finish it; running it again"
            ));
            history.record(resume::Event::CutOff(label.to_string()));
            None
        }
        Earlier::Unusable(why) => {
            progress.note(&format!("{label}: not kept ({why}); running it again"));
            None
        }
    }
}

/// The result of a run that could not run: why (the whole cause chain), also
/// written to `dir`'s result.json and told to the trace.
fn failed_run(
    s: &Scenario,
    dir: &Path,
    label: &str,
    e: &anyhow::Error,
    tracing: &mut Tracing,
) -> RunResult {
    let why: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let why = why.join(": ");
    tracing.failed_run(label, &why);
    let r = report::failed_run(s, &why);
    let _ = write_json(&dir.join("result.json"), &r);
    r
}

/// `--jobs` and `--shard` make sense together with the rest of the command
/// line (in L1, the re-run has both and takes `--shard`).
fn check_jobs(args: &RunOptions) -> anyhow::Result<()> {
    if !args.jobs.explicit_parallel() || sandbox::in_sandbox() {
        return Ok(());
    }
    if args.shard.is_some() {
        return Err(usage(
            "--jobs and --shard: give one (--jobs makes the shards itself)",
        ));
    }
    if args.api_sock.is_some() {
        return Err(usage(
            "--jobs runs several guests at once; --api-sock serves one",
        ));
    }
    if !needs_sandbox_here(args.sandbox) {
        return Err(usage(
            "--jobs runs shards in nested sandboxes at once; here guests run on this host's KVM, one at a time (to spread a matrix, run --shard I/N yourself)",
        ));
    }
    Ok(())
}

/// Runs the matrix `args` asks for: 0 when every run finished and verified
/// its pages, 1 when one failed; usage errors (bad scenario files included)
/// are [`crate::cli::UsageError`]s.
pub fn run(args: &RunOptions) -> anyhow::Result<u8> {
    seccomp::set_enabled(args.seccomp);
    let scenarios = load(args)?;
    if scenarios.iter().any(|s| s.guest.root_disk) {
        // Missing or damaged: said here, before any guest (or L1) boots.
        workloads::image::rootfs::find(None)?;
    }
    // So are guest kernels that were never built.
    let kernel_images =
        crate::boot::kernel_images(scenarios.iter().filter_map(|s| s.guest.kernel.as_deref()))?;
    check_jobs(args)?;
    if needs_sandbox_here(args.sandbox) {
        return run_in_sandbox(args, &scenarios, kernel_images);
    }
    run_here(args, &scenarios)
}

/// Runs the matrix (or `--shard` of it) in this process.
fn run_here(args: &RunOptions, scenarios: &[Scenario]) -> anyhow::Result<u8> {
    let out = args.out.clone().unwrap_or_else(default_out);
    // A shard's own results, report and trace; its runs' files go to `out`.
    let mdir = match args.shard {
        Some(sh) => out.join("shards").join(sh.index.to_string()),
        None => out.clone(),
    };
    std::fs::create_dir_all(&mdir).with_context(|| format!("creating {}", mdir.display()))?;
    if sandbox::in_sandbox() && !args.resume {
        // Ctrl-C on the host stops L1 at once (QEMU takes the signal too): say
        // up front where the finished runs' result.json files are, to resume.
        eprintln!(
            "swaplab: results go to {}; if this is interrupted, the same command with \
             `--out {} --resume` keeps the runs that finished and goes on",
            out.display(),
            out.display()
        );
    }
    let show = if args.console {
        Show::All
    } else {
        Show::Nothing
    };
    // Ctrl-C (or SIGTERM, SIGHUP) stops the running guest and the matrix;
    // what ran is still written, and kernel tracing is switched off. Before
    // any thread starts (the progress ticker's too): a thread that does not
    // block the signals would take them with their default action, death.
    let interrupter = Interrupter::default();
    let signals = SignalScope::new().context("watching for Ctrl-C")?;
    signals.set_action(Some({
        let i = interrupter.clone();
        Box::new(move |sig| i.interrupt(&format!("interrupted by {}", signal_name(sig))))
    }));
    // runreport: progress display, trace.json, failed runs kept, report.md.
    let runs: u32 = scenarios.iter().map(|s| s.repetitions).sum();
    let share = Share::new(args, &out)?;
    let total = share.total(runs);
    let started = std::time::SystemTime::now();
    let progress = LiveProgress::start(u64::from(total));
    let mut tracing = Tracing::new(&mdir, args.ktrace, progress.notifier());
    let mut results = Vec::new();
    let mut failed = false;
    // --resume: runs kept from the earlier attempt, and those it cut off.
    let mut kept_runs = 0;
    let mut index = 0;
    // Every attempt's resumes and the runs that went once more after an
    // emulation residue (a guest triple fault in the sandbox): counted in the
    // report, never hidden.
    let reason = args.resume_reason.as_deref();
    let mut history = match args.shard {
        Some(_) => resume::History::open_shard(&mdir, args.resume, reason),
        None => resume::History::open(&out, args.resume, reason),
    };
    let mut nth = 0;
    'matrix: for s in scenarios {
        for rep in 1..=s.repetitions {
            if signals.caught().is_some() {
                break 'matrix;
            }
            nth += 1;
            if !share.mine(nth, &progress) {
                continue;
            }
            progress.get().start_run(&s.name, rep, s.repetitions);
            let label = format!("{} repetition {rep}/{}", s.name, s.repetitions);
            let dir = run_dir(&out, s, rep);
            let kept = if args.resume {
                kept_run(s, &dir, &label, &progress, &mut history)
            } else {
                None
            };
            index += 1;
            let ran = kept.is_none();
            if ran {
                resume::maybe_inject_l1_panic(&out, index, &dir);
            }
            let fresh = Fresh {
                s,
                dir: &dir,
                label: &label,
                show,
                api_sock: args.api_sock.as_deref(),
                interrupter: &interrupter,
            };
            let mut r = match kept {
                Some(r) => {
                    kept_runs += 1;
                    r
                }
                None => fresh.run(&mut tracing, resume::inject_triple_fault(index)),
            };
            if ran && signals.caught().is_none() {
                if let Some(why) = residue(&r) {
                    let injected = resume::inject_triple_fault(index);
                    once_more(&fresh, rep, &why, injected, &progress, &mut history);
                    r = fresh.run(&mut tracing, false);
                }
            }
            let outcome = report::outcome(&r);
            let end = report::run_end(&outcome);
            progress.get().end_run(if ran {
                end
            } else {
                RunEnd::Kept(match end {
                    RunEnd::Failed(why) => why,
                    RunEnd::TimedOut => "timed out",
                    _ => "ok",
                })
            });
            // A kept run's summary was printed by the attempt that ran it.
            match (ran, args.json) {
                (false, _) => {}
                (true, true) => println!("{}", serde_json::to_string(&r)?),
                (true, false) => print!("{}", r.summary()),
            }
            failed |= outcome != Outcome::Ok;
            results.push(r);
        }
    }
    if share.guessed() {
        // The share was a guess; the summary line counts what this shard ran.
        progress.get().set_total(results.len() as u64);
    }
    write_json(&mdir.join("results.json"), &results)?;
    if let [only] = results.as_slice() {
        write_json(&mdir.join("result.json"), only)?;
    }
    tracing.finish();
    let env = report::matrix_environment(&results, started);
    let mut info = report::matrix_info(&args.scenarios);
    info.notes.extend(history.notes(kept_runs, total));
    if let Err(e) = report::write_report(&mdir, &info, env, &results) {
        progress.note(&format!("no report: {e}"));
    }
    progress.finish();
    eprintln!("swaplab: results in {}", mdir.display());
    if let Some(sig) = signals.caught() {
        eprintln!(
            "swaplab: {} after {} of {total} runs",
            interrupter.reason().unwrap_or_else(|| signal_name(sig)),
            results.len()
        );
        return Ok(128 + sig as u8);
    }
    Ok(u8::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_runs_are_the_result_files_of_repetitions() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(finished_runs(&tmp.path().join("absent")), 0);
        for (dir, file) in [
            ("redis/1", true),
            ("redis/2", false),
            ("redis/1-l1-stall", true),
            ("dbench/3", true),
            ("shards/1", false),
        ] {
            let d = tmp.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            if file {
                std::fs::write(d.join("result.json"), "{}").unwrap();
            }
        }
        std::fs::write(tmp.path().join("report.md"), "").unwrap();
        assert_eq!(finished_runs(tmp.path()), 2);
    }

    #[test]
    fn a_gap_in_the_host_samples_is_a_stall_and_its_attempt_is_set_aside() {
        use super::super::result::HostSample;
        let at = |t_s| HostSample {
            t_s,
            ..HostSample::default()
        };
        let steady: Vec<HostSample> = (0..40).map(|i| at(f64::from(i) * 0.25)).collect();
        assert!(longest_sample_gap(&steady) < 0.26);
        let mut stalled = steady.clone();
        stalled.push(at(10.0 + 32.5));
        stalled.push(at(42.75));
        assert!((longest_sample_gap(&stalled) - 32.75).abs() < 1e-9);
        assert_eq!(longest_sample_gap(&[]), 0.0);
        // Outside the sandbox a gap is not L1's: nothing runs again.
        let mut r = report::failed_run(&scenario::load("baseline").unwrap().scenarios[0], "ok");
        r.timeline = stalled;
        assert_eq!(l1_stall(&r), None);
        assert_eq!(residue(&r), None);
        // Set aside: the directory moves to `<rep>-l1-stall/`.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("redis/1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("result.json"), "{}").unwrap();
        let note = set_aside(&dir, 1, "redis repetition 1/1", &Residue::L1Stall(32.5));
        assert!(
            note.starts_with("redis repetition 1/1: L1 stood still for 32.5 s"),
            "{note}"
        );
        assert!(!dir.exists());
        assert!(tmp.path().join("redis/1-l1-stall/result.json").exists());
    }

    #[test]
    fn prefixed_output_keeps_whole_lines() {
        let mut p = Prefixed::new("[t] ", Stream::Stderr);
        p.write_all(b"par").unwrap();
        assert_eq!(p.pending, b"par");
        p.write_all(b"tial\nnext\nla").unwrap();
        assert_eq!(p.pending, b"la");
    }
}
