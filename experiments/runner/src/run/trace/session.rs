//! The runner's side of tracing: one `trace.json` for the whole matrix,
//! kernel tracing (`--ktrace`) around each run, notes instead of failures
//! (a trace that cannot be written never fails a run).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{MatrixTrace, RunTrace};
use crate::run::ktrace::{Ktrace, KtraceConfig, KtraceError};
use crate::run::machine::RawRun;

/// Tracing for one `swaplab run`.
pub struct Tracing {
    /// `trace.json`, which exists only once the trace is complete.
    path: PathBuf,
    /// Where it is written until then (`trace.json.partial`): a run stopped
    /// by SIGKILL or a dying L1 leaves a file that says it is partial, never
    /// an empty or cut `trace.json`.
    partial: PathBuf,
    trace: Option<MatrixTrace<BufWriter<File>>>,
    ktrace: Option<KtraceConfig>,
    note: Box<dyn FnMut(&str) + Send>,
}

impl Tracing {
    /// Starts `out_dir/trace.json`; with `ktrace`, kernel events are recorded
    /// around each run. `note` receives one-line messages for the user.
    pub fn new(out_dir: &Path, ktrace: bool, mut note: Box<dyn FnMut(&str) + Send>) -> Self {
        let path = out_dir.join("trace.json");
        let partial = out_dir.join("trace.json.partial");
        let trace = match MatrixTrace::create(&partial) {
            Ok(t) => Some(t),
            Err(e) => {
                note(&format!("no trace.json: {}", chain(&e)));
                None
            }
        };
        Self {
            path,
            partial,
            trace,
            ktrace: ktrace.then(KtraceConfig::default),
            note,
        }
    }

    /// Starts kernel tracing for a run (if asked for and possible) on this
    /// thread and the threads it starts. Without tracefs it says so once and
    /// goes on without.
    pub fn start_run(&mut self) -> Option<Ktrace> {
        let note = &mut self.note;
        let cfg = self.ktrace.as_ref()?;
        match Ktrace::start(cfg) {
            Ok(k) => Some(k),
            Err(e) => {
                if matches!(e, KtraceError::Unavailable(_) | KtraceError::NoEvents(_)) {
                    self.ktrace = None;
                    note(&format!("--ktrace: {e}; running without kernel events"));
                } else {
                    note(&format!(
                        "--ktrace: {}; this run has no kernel events",
                        chain(&e)
                    ));
                }
                None
            }
        }
    }

    /// Ends a run: stops kernel tracing and writes the run into the trace as
    /// process `label`.
    /// Returns the latencies of KVM's async page faults it recorded
    /// ([`crate::run::ktrace::async_pf_latencies`]; none without `--ktrace`).
    pub fn end_run(&mut self, label: &str, raw: &RawRun, ktrace: Option<Ktrace>) -> Vec<u64> {
        let note = &mut self.note;
        let capture = ktrace.map(Ktrace::stop);
        let async_pf = capture
            .as_ref()
            .map(crate::run::ktrace::async_pf_latencies)
            .unwrap_or_default();
        if let Some(c) = &capture {
            if c.dropped > 0 || c.lost > 0 {
                note(&format!(
                    "--ktrace: {} kernel events kept, {} over the limit, {} lost by the kernel",
                    c.events.len(),
                    c.dropped,
                    c.lost
                ));
            }
        }
        let Some(t) = self.trace.as_mut() else {
            return async_pf;
        };
        match t.add_run(label, &RunTrace::from_raw(raw, capture.as_ref())) {
            Ok(s) if s.dropped > 0 => note(&format!(
                "trace: {label}: {} events left out (limit {} per run)",
                s.dropped,
                super::MAX_EVENTS_PER_RUN
            )),
            Ok(_) => {}
            Err(e) => self.fail(&e),
        }
        async_pf
    }

    /// A run that failed before producing records.
    pub fn failed_run(&mut self, label: &str, why: &str) {
        if let Some(t) = self.trace.as_mut() {
            if let Err(e) = t.add_failed(label, why) {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &super::TraceFileError) {
        (self.note)(&format!("trace.json abandoned: {}", chain(e)));
        self.trace = None;
        let _ = std::fs::remove_file(&self.partial);
    }

    /// Closes `trace.json`; its path if it was written.
    pub fn finish(mut self) -> Option<PathBuf> {
        let t = self.trace.take()?;
        let done = t.finish().and_then(|mut w| {
            w.flush()?;
            std::fs::rename(&self.partial, &self.path)?;
            Ok(())
        });
        match done {
            Ok(()) => Some(self.path.clone()),
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
