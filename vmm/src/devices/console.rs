//! The guest console: every byte the guest writes to its serial port goes through a
//! [`ConsoleWriter`], which
//!
//! - keeps the last bytes in a bounded [`ConsoleLog`] (for error messages and reports),
//! - forwards everything to an optional sink (stdout, a file, a filter),
//! - and calls line hooks with each complete line (without `\r\n`), e.g. to notice a
//!   kernel panic.
//!
//! A failing sink never fails the guest's write: the bytes are still logged and the
//! failure is counted (and logged with a rate limit).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use base::sync::lock;

use super::should_log;

/// Longest line handed to hooks; longer lines are cut (the guest controls line length).
pub const MAX_LINE: usize = 4096;

/// A line callback.
pub type LineHook = Box<dyn FnMut(&str) + Send>;

/// The last bytes the guest wrote.
#[derive(Debug)]
pub struct ConsoleLog {
    tail: VecDeque<u8>,
    cap: usize,
    total: u64,
    sink_errors: u64,
}

impl ConsoleLog {
    fn new(cap: usize) -> Self {
        Self {
            tail: VecDeque::with_capacity(cap.min(1 << 16)),
            cap,
            total: 0,
            sink_errors: 0,
        }
    }

    fn push(&mut self, buf: &[u8]) {
        self.total += buf.len() as u64;
        let keep = buf.len().min(self.cap);
        let overflow = (self.tail.len() + keep).saturating_sub(self.cap);
        self.tail.drain(..overflow);
        self.tail.extend(&buf[buf.len() - keep..]);
    }

    /// Bytes written in total.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Writes to the sink that failed.
    pub fn sink_errors(&self) -> u64 {
        self.sink_errors
    }

    /// The kept tail as text (`\r` removed, invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.tail.iter().copied().filter(|&b| b != b'\r').collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last `n` non-empty lines of the tail.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// Where the serial port's output goes.
pub struct ConsoleWriter {
    log: Arc<Mutex<ConsoleLog>>,
    sink: Option<Box<dyn Write + Send>>,
    line: Vec<u8>,
    hooks: Vec<LineHook>,
}

impl std::fmt::Debug for ConsoleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWriter")
            .field("sink", &self.sink.is_some())
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl ConsoleWriter {
    /// A writer keeping the last `tail_bytes` bytes, and a handle to read them.
    pub fn new(tail_bytes: usize) -> (Self, Arc<Mutex<ConsoleLog>>) {
        let log = Arc::new(Mutex::new(ConsoleLog::new(tail_bytes)));
        (
            Self {
                log: log.clone(),
                sink: None,
                line: Vec::new(),
                hooks: Vec::new(),
            },
            log,
        )
    }

    /// Also send everything to `sink`.
    pub fn set_sink(&mut self, sink: Box<dyn Write + Send>) {
        self.sink = Some(sink);
    }

    /// Call `hook` with every complete line.
    pub fn on_line(&mut self, hook: LineHook) {
        self.hooks.push(hook);
    }

    fn end_line(&mut self) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        for h in &mut self.hooks {
            h(&text);
        }
        self.line.clear();
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = lock(&self.log);
        log.push(buf);
        if let Some(sink) = &mut self.sink {
            if let Err(e) = sink.write_all(buf) {
                log.sink_errors += 1;
                if should_log(log.sink_errors) {
                    tracing::warn!(count = log.sink_errors, "guest console output lost: {e}");
                }
            }
        }
        drop(log);
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(sink) = &mut self.sink {
            let _ = sink.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keeps_a_bounded_tail_forwards_and_splits_lines() {
        let (mut w, log) = ConsoleWriter::new(16);
        let sink = Shared::default();
        w.set_sink(Box::new(sink.clone()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        w.on_line(Box::new(move |l| l2.lock().unwrap().push(l.to_string())));
        for b in b"hello\r\nworld\r\npartial" {
            w.write_all(&[*b]).unwrap();
        }
        assert_eq!(*lines.lock().unwrap(), vec!["hello", "world"]);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\r\nworld\r\npartial");
        let log = log.lock().unwrap();
        assert_eq!(log.total_bytes(), 21);
        assert_eq!(log.text(), "\nworld\npartial");
        assert_eq!(log.last_lines(1), vec!["partial"]);
        assert_eq!(log.last_lines(5), vec!["world", "partial"]);
    }

    #[test]
    fn long_lines_are_cut_and_big_writes_keep_the_end() {
        let (mut w, log) = ConsoleWriter::new(8);
        let seen = Arc::new(Mutex::new(0usize));
        let s2 = seen.clone();
        w.on_line(Box::new(move |l| *s2.lock().unwrap() = l.len()));
        w.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
        w.write_all(b"\n0123456789").unwrap();
        assert_eq!(*seen.lock().unwrap(), MAX_LINE);
        assert_eq!(log.lock().unwrap().text(), "23456789");
    }

    #[test]
    fn a_broken_sink_does_not_fail_the_guest() {
        let (mut w, log) = ConsoleWriter::new(64);
        w.set_sink(Box::new(Broken));
        w.write_all(b"abc").unwrap();
        w.flush().unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.sink_errors(), 1);
        assert_eq!(log.text(), "abc");
    }
}
