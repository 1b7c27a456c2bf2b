//! Resuming a matrix (`swaplab run --out DIR --resume`): the runs an earlier
//! attempt finished are read back from their `result.json` instead of being
//! run again. `swaplab run` resumes by itself when the nested sandbox's L1
//! kernel dies mid-matrix (TCG-emulated L1 has panicked now and then under
//! load, taking the matrix with it); a user can resume one stopped by Ctrl-C.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::result::RunResult;
use scenario::Scenario;

/// Fault injection, to test the recovery for real: with
/// `SWAPLAB_INJECT_L1_PANIC=N`, a matrix running in the nested sandbox crashes
/// L1's kernel (`echo c > /proc/sysrq-trigger`) as its N-th run starts, once
/// per output directory. Outside the sandbox it does nothing.
pub const ENV_INJECT_L1_PANIC: &str = "SWAPLAB_INJECT_L1_PANIC";

/// What L1's kernel says as it panics by [`ENV_INJECT_L1_PANIC`].
pub const INJECTED_PANIC: &str = "sysrq triggered crash";

/// Marks an output directory whose injected panic has happened.
const INJECTED_MARK: &str = ".l1-panic-injected";

/// [`ENV_INJECT_L1_PANIC`]: crash L1 if this (1-based `index`) run is the one
/// named, after creating its directory `dir` (so the resumed matrix finds it
/// cut off). Returns only when it does not crash.
pub fn maybe_inject_l1_panic(out: &Path, index: u32, dir: &Path) {
    let wanted = std::env::var(ENV_INJECT_L1_PANIC).ok();
    if wanted.and_then(|v| v.trim().parse::<u32>().ok()) != Some(index) || !sandbox::in_sandbox() {
        return;
    }
    let mark = out.join(INJECTED_MARK);
    if mark.exists() || std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if std::fs::write(&mark, b"").is_err() {
        return;
    }
    eprintln!("swaplab: {ENV_INJECT_L1_PANIC}={index}: crashing L1's kernel");
    // Flushes the 9p writes made so far.
    nix::unistd::sync();
    let _ = std::fs::write("/proc/sysrq-trigger", b"c");
}

/// Makes the guest of the run with this 1-based index (in the nested sandbox
/// only) triple-fault before its command, once: a test of how the matrix
/// takes that emulation residue ([`crate::boot::TRIPLE_FAULT`]).
pub const ENV_INJECT_TRIPLE_FAULT: &str = "SWAPLAB_INJECT_TRIPLE_FAULT";

/// Whether [`ENV_INJECT_TRIPLE_FAULT`] names the run with this index.
pub fn inject_triple_fault(index: u32) -> bool {
    let wanted = std::env::var(ENV_INJECT_TRIPLE_FAULT).ok();
    sandbox::in_sandbox() && wanted.and_then(|v| v.trim().parse::<u32>().ok()) == Some(index)
}

/// Notes a retry in the test script's log ([`base::retry_log`]): a matrix
/// run that went once more inside a passing test would show nowhere else.
/// Best effort: a run is not failed for its note.
pub fn note_retry(what: &str) {
    let _ = base::retry_log::note("swaplab run", what);
}

/// What an earlier attempt left in a run's directory.
#[derive(Debug)]
pub enum Earlier {
    /// Nothing: the run had not started.
    Absent,
    /// It finished (well or not): its result, kept.
    Kept(Box<RunResult>),
    /// It started but wrote no result: it was cut off.
    Unfinished,
    /// A result that cannot be kept, and why (unreadable, or for a scenario
    /// that differs from the one given now).
    Unusable(String),
}

/// What the earlier attempt left in `dir` for scenario `s`.
pub fn earlier(dir: &Path, s: &Scenario) -> Earlier {
    if !dir.exists() {
        return Earlier::Absent;
    }
    let path = dir.join("result.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Earlier::Unfinished,
        Err(e) => return Earlier::Unusable(format!("cannot read {}: {e}", path.display())),
    };
    match parse(&text, s) {
        Ok(r) => Earlier::Kept(Box::new(r)),
        Err(why) => Earlier::Unusable(format!("{}: {why}", path.display())),
    }
}

/// A saved `result.json` for scenario `s`: its `spec` must be `s` as it
/// serializes now (same settings after the command line's overrides).
pub fn parse(text: &str, s: &Scenario) -> Result<RunResult, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let now = serde_json::to_value(s).map_err(|e| e.to_string())?;
    if v.get("spec") != Some(&now) {
        return Err("it was run with other settings".into());
    }
    let mut r: RunResult =
        serde_json::from_value(v).map_err(|e| format!("not a run result: {e}"))?;
    // Where each key was set is not saved; the scenario given now knows.
    r.spec = s.clone();
    Ok(r)
}

/// Where a matrix's output directory keeps what every attempt at it went
/// through (one event per line, written the moment it happens), so that the
/// report made by the last attempt tells them all: L1 may die more than once
/// in one matrix, and each attempt may rerun a run after a guest triple fault.
pub const HISTORY_FILE: &str = "attempts.tsv";

/// One thing an attempt at a matrix went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This attempt resumed an earlier one, after what (from whoever restarted
    /// the matrix; none when a user gave `--resume`).
    Resumed(Option<String>),
    /// The earlier attempt was cut off in this run: it runs again from the start.
    CutOff(String),
    /// This run went once more after an emulation residue (a guest triple
    /// fault in the nested sandbox).
    Residue(String),
    /// This run went once more because L1 stood still during it (its label
    /// and how long, in words): see `cmd::l1_stall`.
    Stalled(String),
}

impl Event {
    fn line(&self) -> String {
        let clean = |t: &str| t.replace(['\n', '\t'], " ");
        match self {
            Event::Resumed(why) => format!("resumed\t{}\n", clean(why.as_deref().unwrap_or(""))),
            Event::CutOff(label) => format!("cut-off\t{}\n", clean(label)),
            Event::Residue(label) => format!("residue\t{}\n", clean(label)),
            Event::Stalled(what) => format!("stalled\t{}\n", clean(what)),
        }
    }

    fn parse(line: &str) -> Option<Event> {
        let (kind, what) = line.split_once('\t')?;
        let what = what.to_string();
        match kind {
            "resumed" => Some(Event::Resumed(Some(what).filter(|w| !w.is_empty()))),
            "cut-off" => Some(Event::CutOff(what)),
            "residue" => Some(Event::Residue(what)),
            "stalled" => Some(Event::Stalled(what)),
            _ => None,
        }
    }
}

/// The events of every attempt at one matrix, in `<out>/`[`HISTORY_FILE`].
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    events: Vec<Event>,
}

impl History {
    /// The matrix's: a fresh matrix starts an empty history (its shards'
    /// too); a resumed one reads the earlier attempts', its shards' included
    /// (`shards/I/`[`HISTORY_FILE`], after its own), and adds
    /// [`Event::Resumed`] with `reason` to its own file.
    pub fn open(out: &Path, resume: bool, reason: Option<&str>) -> History {
        let shards = Self::shard_files(out);
        if !resume {
            let _ = std::fs::write(out.join(HISTORY_FILE), b"");
            for f in &shards {
                let _ = std::fs::remove_file(f);
            }
        }
        let mut h = Self::read(out.join(HISTORY_FILE));
        for f in &shards {
            h.events.extend(Self::read(f.clone()).events);
        }
        if resume {
            h.record(Event::Resumed(reason.map(str::to_string)));
        }
        h
    }

    /// A shard's, in its own directory `dir` (`<out>/shards/I/`): shards run
    /// at once in L1s of their own, whose 9p mounts do not share a file's
    /// end, so appends of two shards to one file overwrote each other. The
    /// matrix's history ([`History::open`]) reads every shard's. A resumed
    /// shard adds [`Event::Resumed`] with `reason`.
    pub fn open_shard(dir: &Path, resume: bool, reason: Option<&str>) -> History {
        let _ = std::fs::create_dir_all(dir);
        let mut h = Self::read(dir.join(HISTORY_FILE));
        if resume {
            h.record(Event::Resumed(reason.map(str::to_string)));
        }
        h
    }

    /// The history in `path` (none if absent), to be added to there.
    fn read(path: PathBuf) -> History {
        History {
            events: std::fs::read_to_string(&path)
                .map(|t| t.lines().filter_map(Event::parse).collect())
                .unwrap_or_default(),
            path,
        }
    }

    /// The shards' history files under `out`, in shard order.
    fn shard_files(out: &Path) -> Vec<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(out.join("shards"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let i = e.file_name().to_str()?.parse::<u32>().ok()?;
                let f = e.path().join(HISTORY_FILE);
                f.is_file().then_some((i, f))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, f)| f).collect()
    }

    /// Adds `e`, to the file at once (best effort: a run is not failed for
    /// its note; a report made without it still says what this attempt saw).
    pub fn record(&mut self, e: Event) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = f.write_all(e.line().as_bytes());
        }
        self.events.push(e);
    }

    /// The report's notes: every resume (after what, and which runs were cut
    /// off and ran again from the start), how many of the `total` runs were
    /// kept from earlier attempts (`kept`, this attempt's count), and every
    /// run that went once more after a guest triple fault.
    pub fn notes(&self, kept: usize, total: u32) -> Vec<String> {
        let mut notes = Vec::new();
        // (reason, runs cut off) per resume, in order.
        let mut resumes: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
        let mut residues = Vec::new();
        let mut stalls = Vec::new();
        for e in &self.events {
            match e {
                Event::Resumed(why) => resumes.push((why.as_deref(), Vec::new())),
                Event::CutOff(label) => match resumes.last_mut() {
                    Some((_, cut)) => cut.push(label),
                    None => resumes.push((None, vec![label])),
                },
                Event::Residue(label) => residues.push(label.as_str()),
                Event::Stalled(what) => stalls.push(what.as_str()),
            }
        }
        let cut_off = resumes.iter().any(|(_, cut)| !cut.is_empty());
        if kept > 0 || cut_off {
            let each: Vec<String> = resumes
                .iter()
                .map(|(why, cut)| {
                    let mut n = why.map_or_else(String::new, |w| format!(" after {w}"));
                    if !cut.is_empty() {
                        n.push_str(&format!(
                            " (cut off and run again from the start: {})",
                            cut.join(", ")
                        ));
                    }
                    n
                })
                .filter(|n| !n.is_empty())
                .collect();
            let times = match resumes.len() {
                1 => String::new(),
                n => format!(" {n} times"),
            };
            notes.push(format!(
                "Resumed{times}{}: {kept} of {total} runs were kept from the earlier \
                 attempts' result.json. trace.json holds only the runs made after the last resume.",
                each.join(", then")
            ));
        }
        if !residues.is_empty() {
            notes.push(format!(
                "{} of {total} runs ran a second time after the guest triple-faulted in the \
                 nested sandbox, a known residue of L1's SVM as QEMU TCG emulates it (the \
                 first attempt is kept beside it, `<repetition>-triple-fault/`): {}",
                residues.len(),
                residues.join(", ")
            ));
        }
        if !stalls.is_empty() {
            notes.push(format!(
                "{} of {total} runs ran a second time because L1 stood still during them (the \
                 host's samples, every 250 ms, stopped for seconds: the nested sandbox's \
                 emulation stalled, so the run's times were not its workload's; the first \
                 attempt is kept beside it, `<repetition>-l1-stall/`): {}",
                stalls.len(),
                stalls.join(", ")
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::report::failed_run;

    fn scenario(name: &str) -> Scenario {
        scenario::load(name).unwrap().scenarios.remove(0)
    }

    #[test]
    fn a_saved_result_reads_back_as_it_was_written() {
        let s = scenario("double-paging");
        let mut r = failed_run(&s, "ok");
        r.host_swap_ins = 12_017;
        r.runtime_s = 41.25;
        r.latency_samples
            .insert("double_paging".into(), vec![1, 2, 3]);
        let text = serde_json::to_string(&r).unwrap();
        let back = parse(&text, &s).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&r).unwrap()
        );
        assert_eq!(back.spec, s, "the scenario given now, origins included");
    }

    #[test]
    fn a_result_for_other_settings_or_garbage_is_not_kept() {
        let s = scenario("host-swap");
        let text = serde_json::to_string(&failed_run(&s, "ok")).unwrap();
        let mut other = s.clone();
        other.workload.passes += 1;
        assert!(parse(&text, &other).unwrap_err().contains("other settings"));
        assert!(parse("{", &s).unwrap_err().contains("not JSON"));
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["host_swap_ins"] = "many".into();
        let e = parse(&v.to_string(), &s).unwrap_err();
        assert!(e.contains("not a run result"), "{e}");
    }

    #[test]
    fn a_directory_tells_what_the_earlier_attempt_left() {
        let s = scenario("baseline");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("baseline/1");
        assert!(matches!(earlier(&dir, &s), Earlier::Absent));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(earlier(&dir, &s), Earlier::Unfinished));
        let r = failed_run(&s, "ok");
        std::fs::write(dir.join("result.json"), serde_json::to_string(&r).unwrap()).unwrap();
        assert!(matches!(earlier(&dir, &s), Earlier::Kept(_)));
        std::fs::write(dir.join("result.json"), "[]").unwrap();
        assert!(matches!(earlier(&dir, &s), Earlier::Unusable(_)));
    }

    #[test]
    fn each_shard_keeps_its_own_history_and_the_matrix_reads_them_all() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        History::open(out, false, None);
        let shard = |i: u32| out.join("shards").join(i.to_string());
        let mut one = History::open_shard(&shard(1), false, None);
        let mut two = History::open_shard(&shard(2), false, None);
        // Interleaved, as two L1s write them.
        one.record(Event::Stalled(
            "a repetition 1/1 (no host sample for 30.0 s)".into(),
        ));
        two.record(Event::Residue("b repetition 1/1".into()));
        one.record(Event::CutOff("c repetition 1/1".into()));
        // Shard 1 resumed in a fresh L1 reads its own, not shard 2's.
        let again = History::open_shard(&shard(1), true, Some("an L1 stall"));
        assert_eq!(again.events.len(), 3, "{:?}", again.events);
        // The gathering pass reads the matrix's and every shard's.
        let all = History::open(out, true, Some("running as 2 shards"));
        assert_eq!(
            all.events,
            [
                Event::Stalled("a repetition 1/1 (no host sample for 30.0 s)".into()),
                Event::CutOff("c repetition 1/1".into()),
                Event::Resumed(Some("an L1 stall".into())),
                Event::Residue("b repetition 1/1".into()),
                Event::Resumed(Some("running as 2 shards".into())),
            ]
        );
        // A fresh matrix forgets them all.
        assert!(History::open(out, false, None).events.is_empty());
        assert!(!shard(1).join(HISTORY_FILE).exists());
    }

    #[test]
    fn the_notes_tell_every_attempt_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let h = History::open(tmp.path(), false, None);
        assert!(h.notes(0, 18).is_empty());
        let mut h = History::open(tmp.path(), true, Some("an L1 kernel panic"));
        h.record(Event::CutOff("balloon repetition 2/3".into()));
        h.record(Event::Residue("host-swap repetition 1/3".into()));
        h.record(Event::Stalled(
            "redis repetition 1/1 (no host sample for 32.5 s)".into(),
        ));
        // The second resume reads what the first wrote.
        let mut h = History::open(tmp.path(), true, Some("an L1 triple fault"));
        h.record(Event::CutOff("guest-swap repetition 1/1".into()));
        let notes = h.notes(7, 18);
        assert_eq!(
            notes[0],
            "Resumed 2 times after an L1 kernel panic (cut off and run again from the start: \
             balloon repetition 2/3), then after an L1 triple fault (cut off and run again \
             from the start: guest-swap repetition 1/1): 7 of 18 runs were kept from the \
             earlier attempts' result.json. trace.json holds only the runs made after the \
             last resume."
        );
        assert!(
            notes[1].starts_with("1 of 18 runs ran a second time")
                && notes[1].ends_with(": host-swap repetition 1/3"),
            "{}",
            notes[1]
        );
        assert!(
            notes[2].starts_with("1 of 18 runs ran a second time because L1 stood still")
                && notes[2].ends_with(": redis repetition 1/1 (no host sample for 32.5 s)"),
            "{}",
            notes[2]
        );
        // A fresh start forgets the earlier attempts.
        let h = History::open(tmp.path(), false, None);
        assert!(h.notes(0, 18).is_empty());
    }

    #[test]
    fn a_resume_that_kept_nothing_and_cut_nothing_off_says_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let h = History::open(tmp.path(), true, None);
        assert!(h.notes(0, 4).is_empty());
        let h = History::open(tmp.path(), true, None);
        assert_eq!(
            h.notes(2, 4)[0],
            "Resumed 2 times: 2 of 4 runs were kept from the earlier attempts' result.json. \
             trace.json holds only the runs made after the last resume."
        );
    }
}
