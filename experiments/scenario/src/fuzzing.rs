//! The body of the `scenario` fuzz target (`fuzz/`), as a plain function so that a
//! stable `cargo test` replays the committed seed corpus (`fuzz/corpus/scenario/`)
//! through exactly the code the fuzzer runs.
//!
//! The input is a scenario or matrix file. [`reader`] treats it as `swaplab run FILE`
//! does once the file is read: more than [`MAX_FILE_BYTES`] or not UTF-8 is refused
//! by the file read (`builtin::read`) and skipped here; the text goes to [`parse`].
//! A matrix's `file = "..."` references resolve to the built-in files (by name, as
//! `swaplab run default` resolves them), not to the disk.
//!
//! Checks:
//! - no panic;
//! - a rejected file gets a located diagnostic (a syntax, schema or validity error,
//!   never an I/O one) whose position is inside the file it names (this one or a
//!   referenced built-in), and whose printed message (after `FILE:LINE:COL: `) is
//!   at most [`MAX_MESSAGE`] bytes of the message plus the `… (N more bytes)` note;
//! - an accepted file is a matrix of at least one scenario with unique, valid names,
//!   each of which passes [`Scenario::validate`] again, has every number within
//!   [`crate::bounds`] and the ranges of the schema (crate doc), and serializes to
//!   JSON that reads back as the same scenario (what resuming a matrix compares).

use crate::bounds;
use crate::builtin::{builtin, BUILTIN, MAX_FILE_BYTES};
use crate::model::{BalloonPolicy, Matrix, Scenario, ScenarioError, MAX_MESSAGE};
use crate::parse::parse;
use crate::source::Source;
use crate::validate::{GUEST_OS_RESERVE, MIN_HOST_LIMIT};

/// The name the input is read under.
const NAME: &str = "fuzz.toml";

/// What [`run`] made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused before parsing (too large, not UTF-8), as the file read does.
    Unread,
    /// A matrix of this many scenarios.
    Accepted(usize),
    /// A diagnostic.
    Rejected,
}

/// The fuzz target: `data` as a scenario or matrix file.
pub fn reader(data: &[u8]) {
    run(data);
}

fn resolve(name: &str) -> Result<Source, String> {
    builtin(name).ok_or_else(|| "no built-in scenario file of that name".to_string())
}

fn run(data: &[u8]) -> Outcome {
    if data.len() as u64 > MAX_FILE_BYTES {
        return Outcome::Unread;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Unread;
    };
    let src = Source::new(NAME, text);
    match parse(&src, &resolve) {
        Ok(m) => {
            check_matrix(&m);
            Outcome::Accepted(m.scenarios.len())
        }
        Err(e) => {
            check_error(&e, text);
            Outcome::Rejected
        }
    }
}

/// The text of the file a diagnostic names.
fn text_of<'a>(file: &str, input: &'a str) -> &'a str {
    if file == NAME {
        return input;
    }
    let name = file
        .strip_prefix("scenarios/")
        .and_then(|f| f.strip_suffix(".toml"));
    BUILTIN
        .iter()
        .find(|(n, _)| Some(*n) == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("a diagnostic names {file:?}, neither the input nor a built-in"))
}

fn check_error(e: &ScenarioError, input: &str) {
    let d = e
        .diagnostic()
        .unwrap_or_else(|| panic!("parsing a text failed without a diagnostic: {e}"));
    assert!(
        !d.message.trim().is_empty(),
        "a diagnostic without a message: {d:?}"
    );
    let shown = e.to_string();
    let msg = match &d.pos {
        Some(p) => {
            let text = text_of(&p.file, input);
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                (1..=lines.len()).contains(&p.line),
                "{p}: line outside the file ({} lines)",
                lines.len()
            );
            let cols = lines[p.line - 1].chars().count() + 1;
            assert!(
                (1..=cols).contains(&p.col),
                "{p}: column outside its line ({cols} columns)"
            );
            let prefix = format!("{p}: ");
            shown
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{shown:?} does not start with {prefix:?}"))
        }
        None => &shown[..],
    };
    if d.message.len() <= MAX_MESSAGE {
        assert_eq!(msg, d.message);
        return;
    }
    let (kept, note) = msg
        .rsplit_once("… (")
        .unwrap_or_else(|| panic!("a long message printed without its note: {msg:?}"));
    assert!(
        kept.len() <= MAX_MESSAGE && kept.len() + 4 > MAX_MESSAGE,
        "{} bytes of the message printed (at most {MAX_MESSAGE})",
        kept.len()
    );
    assert!(d.message.starts_with(kept));
    assert_eq!(
        note,
        format!("{} more bytes)", d.message.len() - kept.len()),
        "the note of {msg:?}"
    );
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

fn check_matrix(m: &Matrix) {
    assert_eq!(m.source, NAME);
    assert!(
        !m.scenarios.is_empty(),
        "an accepted matrix with no scenario"
    );
    for (i, s) in m.scenarios.iter().enumerate() {
        assert!(valid_name(&s.name), "accepted the name {:?}", s.name);
        assert!(
            m.scenarios[..i].iter().all(|o| o.name != s.name),
            "the name {:?} twice",
            s.name
        );
        check_scenario(s);
    }
}

fn check_scenario(s: &Scenario) {
    if let Err(e) = s.validate() {
        panic!("accepted, then not valid: {e}\n{s:?}");
    }
    let within = |what: &str, v: u64, range: std::ops::RangeInclusive<u64>| {
        assert!(
            range.contains(&v),
            "{}: {what} = {v} outside {range:?}",
            s.name
        );
    };
    within("repetitions", s.repetitions.into(), bounds::REPETITIONS);
    within("timeout_s", s.timeout_s, bounds::TIMEOUT_S);
    within("guest.cpus", s.guest.cpus.into(), bounds::CPUS);
    within("guest.mem", s.guest.mem.0, bounds::GUEST_MEM);
    if let Some(swap) = s.guest.swap {
        within("guest.swap", swap.0, bounds::GUEST_SWAP);
    }
    if let Some(h) = &s.host {
        within("host.limit", h.limit.0, bounds::HOST_LIMIT);
        within("host.limit", h.limit.0, MIN_HOST_LIMIT..=s.guest.mem.0 - 1);
        within("host.prefetch", h.prefetch.into(), 0..=256);
        assert!(
            h.mitigations.windows(2).all(|w| w[0] < w[1]),
            "mitigations not sorted and unique: {:?}",
            h.mitigations
        );
    }
    let w = &s.workload;
    if w.known_working_set() {
        within("workload.mb", w.mb, bounds::WORKLOAD_MB);
    } else {
        // A command or an application need not give a size.
        within("workload.mb", w.mb, 0..=*bounds::WORKLOAD_MB.end());
        assert!(w.command.is_some() || w.application().is_some(), "{s:?}");
        assert!(
            s.guest.root_disk,
            "a {:?} workload off the root disk",
            w.kind
        );
    }
    within("workload.passes", w.passes.into(), bounds::PASSES);
    within("workload.duration_s", w.duration_s, 0..=86_400);
    within("workload.disk_read_mb", w.disk_read_mb, 0..=64 * 1024);
    within("workload.disk_cache_mb", w.disk_cache_mb, 0..=64 * 1024);
    assert!(
        (0.0..=1.0).contains(&w.write_ratio),
        "write_ratio {}",
        w.write_ratio
    );
    let stats = u64::from(s.balloon.stats_interval_ms);
    assert!(
        stats == 0 || (100..=60_000).contains(&stats),
        "stats_interval_ms {stats}"
    );
    match s.balloon.policy {
        BalloonPolicy::Manual { target } | BalloonPolicy::Churn { target, .. } => {
            within(
                "balloon.target",
                target.0,
                1..=s.guest.mem.0 - GUEST_OS_RESERVE,
            );
        }
        BalloonPolicy::None => {}
        BalloonPolicy::Auto => assert!(s.host.is_some(), "an auto balloon without host.limit"),
    }
    if let BalloonPolicy::Churn { period_s, .. } = s.balloon.policy {
        within("balloon.period_s", period_s.into(), 1..=3600);
    }

    // A result's `spec` is the scenario as JSON; resuming compares it, as read back
    // from the saved text, with the scenario as it serializes now.
    let text = serde_json::to_string_pretty(s).expect("a scenario serializes");
    let read: serde_json::Value = serde_json::from_str(&text).expect("its JSON parses");
    let now = serde_json::to_value(s).expect("a scenario serializes");
    assert_eq!(read, now, "the saved spec would not match: {text}");
    let back: Scenario = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the spec does not read back: {e}\n{text}"));
    let mut s = s.clone();
    s.origin.clear();
    assert_eq!(back, s, "the spec reads back as another scenario");
}

/// The seed inputs: every built-in file, a matrix that refers to them, and a
/// few files each rejected for another reason.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = BUILTIN.iter().map(|(_, t)| t.as_bytes().to_vec()).collect();
    let extra = [
        // References to built-ins, with defaults, and an inline scenario.
        "description = \"refs\"\n[defaults]\ntimeout_s = 900\n[defaults.workload]\n\
         passes = 3\n[[scenario]]\nfile = \"baseline.toml\"\n[[scenario]]\n\
         file = \"scenarios/guest-swap.toml\"\n[[scenario]]\nname = \"inline\"\n\
         [scenario.guest]\nmem = \"1G\"\ncpus = 4\n[scenario.workload]\nmb = 64\n\
         pattern = \"zipf:1.2\"\n",
        // Every key of a scenario.
        "name = \"all\"\ndescription = \"every key\"\nrepetitions = 2\ntimeout_s = 400\n\
         [guest]\nmem = \"512M\"\ncpus = 2\nswap = \"256M\"\n[host]\nlimit = \"256M\"\n\
         store = \"lz4\"\npolicy = \"fifo\"\nprefetch = 8\nmitigations = [\"stale-reads\", \
         \"silent-writes\"]\n[balloon]\npolicy = \"churn\"\ntarget = \"64M\"\nperiod_s = 5\n\
         stats_interval_ms = 500\n[workload]\nkind = \"integrity\"\nmb = 300\n\
         pattern = \"phase:8\"\npasses = 4\nseed = 7\nduration_s = 60\ndisk_read_mb = 16\n",
        // A typo, a value out of range, a meaningless run, a syntax error.
        "name = \"typo\"\n[host]\npolcy = \"clock\"\n[workload]\nmb = 1\n",
        "name = \"range\"\nrepetitions = 1000\n[workload]\nmb = 1\n",
        "name = \"nofit\"\n[guest]\nmem = \"128M\"\n[workload]\nmb = 4096\n",
        "name = \"syntax\"\n[guest\nmem = 3\n",
        // A duplicate name and a missing reference.
        "[[scenario]]\nfile = \"baseline\"\n[[scenario]]\nfile = \"baseline\"\n",
        "[[scenario]]\nfile = \"nowhere.toml\"\n",
    ];
    seeds.extend(extra.iter().map(|t| t.as_bytes().to_vec()));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_corpus() {
        base::corpus::replay("scenario", reader);
        for tiny in [&[][..], &[0xff], &[0; 64], &[b'['; 64]] {
            reader(tiny);
        }
    }

    #[test]
    fn seeds_reach_every_outcome() {
        let outcomes: Vec<Outcome> = seeds().iter().map(|s| run(s)).collect();
        // Every built-in file is accepted, the standard matrix with 6 scenarios.
        for (o, (name, _)) in outcomes.iter().zip(BUILTIN) {
            assert!(matches!(o, Outcome::Accepted(_)), "{name}: {o:?}");
        }
        assert_eq!(outcomes[0], Outcome::Accepted(6));
        let extra = &outcomes[BUILTIN.len()..];
        assert_eq!(extra[0], Outcome::Accepted(3));
        assert_eq!(extra[1], Outcome::Accepted(1));
        assert!(
            extra[2..].iter().all(|o| *o == Outcome::Rejected),
            "{extra:?}"
        );
        assert_eq!(run(b"name = \"\xff\""), Outcome::Unread);
        let big = vec![b'#'; MAX_FILE_BYTES as usize + 1];
        assert_eq!(run(&big), Outcome::Unread);
    }

    #[test]
    fn long_messages_are_checked_against_their_note() {
        let key = "k".repeat(5000);
        let text = format!("name = \"x\"\n{key} = 1\n");
        assert_eq!(run(text.as_bytes()), Outcome::Rejected);
        let text = format!("[[scenario]]\nfile = \"{key}\"\n");
        assert_eq!(run(text.as_bytes()), Outcome::Rejected);
    }

    /// `cargo test -p scenario --lib -- --ignored write_seeds` regenerates the seeds
    /// (`seed-NN`); other files in the corpus (crash reproducers) are kept.
    #[test]
    #[ignore]
    fn write_seeds() {
        base::corpus::write_seeds("scenario", &seeds()).expect("write seeds");
    }
}
