//! The progress display ([`report::progress::Progress`]) kept up to
//! date while a run goes on: a small thread redraws it every second.

use std::io::Stderr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use base::{lock, Stop};
use report::progress::Progress;

/// A progress display on stderr with a ticking thread.
pub struct LiveProgress {
    progress: Arc<Mutex<Progress<Stderr>>>,
    stop: Arc<Stop>,
    ticker: Option<JoinHandle<()>>,
}

impl LiveProgress {
    /// A display for `total_runs` runs (redrawn every second on a terminal).
    pub fn start(total_runs: u64) -> Self {
        let progress = Arc::new(Mutex::new(Progress::stderr(total_runs)));
        let stop = Arc::new(Stop::new());
        let ticker = {
            let (progress, stop) = (progress.clone(), stop.clone());
            std::thread::Builder::new()
                .name("swaplab-progress".into())
                .spawn(move || {
                    while !stop.wait_timeout(Duration::from_secs(1)) {
                        lock(&progress).tick();
                    }
                })
                .ok()
        };
        Self {
            progress,
            stop,
            ticker,
        }
    }

    /// The display, locked (do not hold it across a run).
    pub fn get(&self) -> MutexGuard<'_, Progress<Stderr>> {
        lock(&self.progress)
    }

    /// A message line.
    pub fn note(&self, msg: &str) {
        self.get().note(msg);
    }

    /// A sink for one-line messages (for code that runs while the display
    /// is not locked).
    pub fn notifier(&self) -> Box<dyn FnMut(&str) + Send> {
        let p = self.progress.clone();
        Box::new(move |msg| lock(&p).note(msg))
    }

    /// Stops the ticker and prints the summary line.
    pub fn finish(mut self) {
        self.stop_ticker();
        let p = self.progress.clone();
        drop(self);
        // The ticker has ended; notifiers may still hold the display.
        match Arc::try_unwrap(p) {
            Ok(m) => {
                m.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
            }
            Err(shared) => {
                lock(&shared).tick();
            }
        }
    }

    fn stop_ticker(&mut self) {
        self.stop.stop();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveProgress {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}
