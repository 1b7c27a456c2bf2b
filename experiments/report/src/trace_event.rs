//! A streaming writer of Chrome trace-event JSON (the object format:
//! `{"displayTimeUnit": …, "traceEvents": [ … ]}`), which Perfetto's UI and
//! `chrome://tracing` open.
//!
//! Events go straight to the underlying writer (wrap files in a
//! `BufWriter`), so memory stays bounded however long the trace. The format
//! does not require time order. Timestamps and durations are microseconds as
//! floats (ns precision). Supported phases:
//!
//! | phase | method | use here |
//! |---|---|---|
//! | `M` metadata | [`TraceWriter::process_name`], [`TraceWriter::thread_name`], [`TraceWriter::thread_sort_index`] | name a VM (pid) and its tracks (tid: a vCPU, a fault handler, the blk worker) |
//! | `X` complete | [`TraceWriter::complete`] | a fault, a blk request, a balloon batch |
//! | `i` instant | [`TraceWriter::instant`] | an eviction, a balloon target change |
//! | `C` counter | [`TraceWriter::counter`] | resident bytes, balloon size over time |
//! | `s` / `f` flow | [`TraceWriter::flow_start`], [`TraceWriter::flow_end`], [`TraceWriter::link`] | an arrow from a guest blk request to the host fault it caused (double paging) |
//!
//! Complete events on one thread must nest (a later one inside an earlier
//! one, or after it); put events that overlap without nesting on different tids.

use std::fmt::Write as _;
use std::io::Write;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Writing failed.
    #[error("writing the trace: {0}")]
    Io(#[from] std::io::Error),
    /// A timestamp, duration or value was NaN or infinite (JSON has no such numbers).
    #[error("trace event {event:?}: {field} is not a finite number")]
    NonFinite {
        /// The event's name.
        event: String,
        /// Which field.
        field: &'static str,
    },
    /// A negative duration.
    #[error("trace event {event:?}: negative duration {dur_us} µs")]
    NegativeDuration {
        /// The event's name.
        event: String,
        /// The duration.
        dur_us: f64,
    },
    /// An event after [`TraceWriter::finish`].
    #[error("trace already finished")]
    Finished,
}

/// How the viewer displays times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds.
    Ms,
    /// Nanoseconds (fault latencies are µs-scale).
    Ns,
}

/// Scope of an instant event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Drawn on its thread's track.
    Thread,
    /// Across its process.
    Process,
    /// Across the whole trace.
    Global,
}

/// An event argument value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg<'a> {
    /// Unsigned integer.
    U64(u64),
    /// Signed integer.
    I64(i64),
    /// Float (must be finite).
    F64(f64),
    /// String.
    Str(&'a str),
    /// Boolean.
    Bool(bool),
}

/// A complete (`X`) event: something with a start and a duration on one thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slice<'a> {
    /// Name.
    pub name: &'a str,
    /// Category (comma-separated tags; viewers filter on it).
    pub cat: &'a str,
    /// Process (a VM).
    pub pid: u32,
    /// Thread (a track).
    pub tid: u32,
    /// Start, µs.
    pub ts_us: f64,
    /// Duration, µs.
    pub dur_us: f64,
    /// Arguments shown with the event.
    pub args: &'a [(&'a str, Arg<'a>)],
}

/// Where a flow arrow starts or ends: a point on a thread inside a slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Process.
    pub pid: u32,
    /// Thread.
    pub tid: u32,
    /// Time, µs (inside the slice the arrow binds to).
    pub ts_us: f64,
}

/// Appends `s` as a JSON string literal (serde_json's escaping).
pub fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serialising a str cannot fail; an empty string keeps the JSON valid.
        Err(_) => out.push_str("\"\""),
    }
}

/// Writes Chrome trace-event JSON to `W` as events arrive.
pub struct TraceWriter<W: Write> {
    out: W,
    events: u64,
    finished: bool,
    /// Reused per event.
    buf: String,
}

impl<W: Write> TraceWriter<W> {
    /// Starts the document.
    pub fn new(mut out: W, unit: TimeUnit) -> Result<Self, TraceError> {
        let unit = match unit {
            TimeUnit::Ms => "ms",
            TimeUnit::Ns => "ns",
        };
        write!(out, "{{\"displayTimeUnit\":\"{unit}\",\"traceEvents\":[")?;
        Ok(Self {
            out,
            events: 0,
            finished: false,
            buf: String::with_capacity(256),
        })
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Starts an event object in `buf`: `{"name":…,"ph":…,"pid":…,"tid":…`.
    fn head(&mut self, name: &str, ph: &str, pid: u32, tid: u32) -> Result<(), TraceError> {
        if self.finished {
            return Err(TraceError::Finished);
        }
        self.buf.clear();
        if self.events > 0 {
            self.buf.push(',');
        }
        self.buf.push_str("\n{\"name\":");
        push_json_str(&mut self.buf, name);
        let _ = write!(self.buf, ",\"ph\":\"{ph}\",\"pid\":{pid},\"tid\":{tid}");
        Ok(())
    }

    fn field_str(&mut self, key: &str, value: &str) {
        let _ = write!(self.buf, ",\"{key}\":");
        push_json_str(&mut self.buf, value);
    }

    fn field_num(&mut self, event: &str, key: &'static str, v: f64) -> Result<(), TraceError> {
        if !v.is_finite() {
            return Err(TraceError::NonFinite {
                event: event.to_string(),
                field: key,
            });
        }
        let _ = write!(self.buf, ",\"{key}\":{}", fmt_us(v));
        Ok(())
    }

    fn args(&mut self, event: &str, args: &[(&str, Arg<'_>)]) -> Result<(), TraceError> {
        self.buf.push_str(",\"args\":{");
        for (i, (k, v)) in args.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            push_json_str(&mut self.buf, k);
            self.buf.push(':');
            match *v {
                Arg::U64(n) => {
                    let _ = write!(self.buf, "{n}");
                }
                Arg::I64(n) => {
                    let _ = write!(self.buf, "{n}");
                }
                Arg::F64(x) if x.is_finite() => {
                    let _ = write!(self.buf, "{x}");
                }
                Arg::F64(_) => {
                    return Err(TraceError::NonFinite {
                        event: event.to_string(),
                        field: "args",
                    })
                }
                Arg::Str(s) => push_json_str(&mut self.buf, s),
                Arg::Bool(b) => {
                    let _ = write!(self.buf, "{b}");
                }
            }
        }
        self.buf.push('}');
        Ok(())
    }

    /// Ends the event and writes it out.
    fn emit(&mut self) -> Result<(), TraceError> {
        self.buf.push('}');
        self.out.write_all(self.buf.as_bytes())?;
        self.events += 1;
        Ok(())
    }

    fn metadata(
        &mut self,
        kind: &str,
        pid: u32,
        tid: u32,
        args: &[(&str, Arg<'_>)],
    ) -> Result<(), TraceError> {
        self.head(kind, "M", pid, tid)?;
        self.args(kind, args)?;
        self.emit()
    }

    /// Names process `pid` (a VM, a scenario run).
    pub fn process_name(&mut self, pid: u32, name: &str) -> Result<(), TraceError> {
        self.metadata("process_name", pid, 0, &[("name", Arg::Str(name))])
    }

    /// Names thread `tid` of `pid` (a track: `vcpu0`, `uffd-handler-1`, `virtio-blk`).
    pub fn thread_name(&mut self, pid: u32, tid: u32, name: &str) -> Result<(), TraceError> {
        self.metadata("thread_name", pid, tid, &[("name", Arg::Str(name))])
    }

    /// Orders thread tracks within their process (lower first).
    pub fn thread_sort_index(&mut self, pid: u32, tid: u32, index: i64) -> Result<(), TraceError> {
        self.metadata(
            "thread_sort_index",
            pid,
            tid,
            &[("sort_index", Arg::I64(index))],
        )
    }

    /// A complete (`X`) event.
    pub fn complete(&mut self, s: &Slice<'_>) -> Result<(), TraceError> {
        if s.dur_us < 0.0 {
            return Err(TraceError::NegativeDuration {
                event: s.name.to_string(),
                dur_us: s.dur_us,
            });
        }
        self.head(s.name, "X", s.pid, s.tid)?;
        self.field_str("cat", s.cat);
        self.field_num(s.name, "ts", s.ts_us)?;
        self.field_num(s.name, "dur", s.dur_us)?;
        if !s.args.is_empty() {
            self.args(s.name, s.args)?;
        }
        self.emit()
    }

    /// An instant (`i`) event.
    pub fn instant(
        &mut self,
        name: &str,
        cat: &str,
        at: Point,
        scope: Scope,
        args: &[(&str, Arg<'_>)],
    ) -> Result<(), TraceError> {
        self.head(name, "i", at.pid, at.tid)?;
        self.field_str("cat", cat);
        self.field_num(name, "ts", at.ts_us)?;
        let s = match scope {
            Scope::Thread => "t",
            Scope::Process => "p",
            Scope::Global => "g",
        };
        self.field_str("s", s);
        if !args.is_empty() {
            self.args(name, args)?;
        }
        self.emit()
    }

    /// A counter (`C`) sample: one track per `name` in `pid`, one line per series.
    pub fn counter(
        &mut self,
        name: &str,
        pid: u32,
        ts_us: f64,
        values: &[(&str, f64)],
    ) -> Result<(), TraceError> {
        self.head(name, "C", pid, 0)?;
        self.field_num(name, "ts", ts_us)?;
        let args: Vec<(&str, Arg<'_>)> = values.iter().map(|&(k, v)| (k, Arg::F64(v))).collect();
        self.args(name, &args)?;
        self.emit()
    }

    /// The start (`s`) of flow `id`; it binds to the slice enclosing `at`.
    pub fn flow_start(
        &mut self,
        id: u64,
        name: &str,
        cat: &str,
        at: Point,
    ) -> Result<(), TraceError> {
        self.head(name, "s", at.pid, at.tid)?;
        self.field_str("cat", cat);
        self.field_num(name, "ts", at.ts_us)?;
        let _ = write!(self.buf, ",\"id\":{id}");
        self.emit()
    }

    /// The end (`f`) of flow `id` (same `name` and `cat` as its start); it binds
    /// to the slice enclosing `at` (binding point `e`).
    pub fn flow_end(
        &mut self,
        id: u64,
        name: &str,
        cat: &str,
        at: Point,
    ) -> Result<(), TraceError> {
        self.head(name, "f", at.pid, at.tid)?;
        self.field_str("cat", cat);
        self.field_num(name, "ts", at.ts_us)?;
        let _ = write!(self.buf, ",\"id\":{id},\"bp\":\"e\"");
        self.emit()
    }

    /// An arrow from slice `from` to slice `to` (flow `id`, named `name`), e.g.
    /// from a guest swap-out blk request to the host fault it caused.
    pub fn link(
        &mut self,
        id: u64,
        name: &str,
        from: &Slice<'_>,
        to: &Slice<'_>,
    ) -> Result<(), TraceError> {
        let at = |s: &Slice<'_>| Point {
            pid: s.pid,
            tid: s.tid,
            ts_us: s.ts_us,
        };
        self.flow_start(id, name, "flow", at(from))?;
        self.flow_end(id, name, "flow", at(to))
    }

    /// Closes the document and flushes; returns the writer.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.finished = true;
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// µs with up to 3 decimals (ns precision), no trailing zeros.
fn fmt_us(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
