//! The demo's main loop: start the VM, poll it, draw, turn keys and script
//! steps into control-socket requests, and tear everything down in order.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use vmm::api::{Request, Size};

use super::action::Action;
use super::client::{run_poller, Update};
use super::model::Model;
use super::script::{self, Player};
use super::term::TermGuard;
use super::ui::{self, Controls};
use super::vm::VmChild;
use crate::options::DemoOptions;
use hostsys::signals::{signal_name, SignalScope};

/// The guest keeps at least this much memory outside the balloon.
const GUEST_FLOOR: u64 = 64 << 20;
/// How long `q` waits for the guest to power off before stopping the VM.
const QUIT_GRACE: Duration = Duration::from_secs(30);

/// The state the keys change.
struct Demo {
    model: Model,
    controls: Controls,
    target: u64,
    workload_on: bool,
    guest_mem: u64,
    pattern: String,
    actions: mpsc::Sender<Request>,
    /// Whether a poll has answered (the balloon target is then known).
    polled: bool,
}

impl Demo {
    fn send(&mut self, req: Request) {
        // The poller lives as long as the loop; a send cannot fail before.
        let _ = self.actions.send(req);
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Inflate | Action::Deflate => {
                let step = self.controls.step;
                let max = self.guest_mem.saturating_sub(GUEST_FLOOR);
                self.target = if a == Action::Inflate {
                    (self.target + step).min(max)
                } else {
                    self.target.saturating_sub(step)
                };
                self.controls.status = format!("balloon target {} MiB", self.target >> 20);
                self.send(Request::BalloonSet {
                    target: Size(self.target),
                });
            }
            Action::Workload => {
                self.workload_on = !self.workload_on;
                let line = if self.workload_on {
                    format!("start {} {}", self.controls.workload_mb, self.pattern)
                } else {
                    "stop".to_string()
                };
                self.controls.status = format!(
                    "workload {}",
                    if self.workload_on {
                        "starting"
                    } else {
                        "stopping"
                    }
                );
                self.send(Request::GuestSend { line });
            }
            Action::Limit => {
                let n = self.controls.limits.len().max(1);
                self.controls.limit_idx = (self.controls.limit_idx + 1) % n;
                if let Some(&l) = self.controls.limits.get(self.controls.limit_idx) {
                    self.controls.status = format!("host limit {} MiB", l >> 20);
                    self.send(Request::SwapperSetLimit { limit: Size(l) });
                }
            }
            Action::Quit => {}
        }
    }

    fn apply(&mut self, u: Update) {
        match u {
            Update::Poll { t_s, results } => {
                let mut it = results.into_iter();
                if let Some(Ok(v)) = it.next() {
                    self.model.apply_balloon(t_s, &v);
                    if !self.polled {
                        self.target = self.model.balloon_target.unwrap_or(0);
                    }
                }
                self.polled = true;
                if let Some(Ok(v)) = it.next() {
                    self.model.apply_swapper(t_s, &v);
                }
                if let Some(Ok(v)) = it.next() {
                    self.model.apply_vm(&v);
                    if let Some(g) = self.model.guest_mem {
                        self.guest_mem = g;
                    }
                }
                if let Some(Ok(v)) = it.next() {
                    self.model.apply_recent(&v);
                }
                let running = self.model.workload_running;
                if (self.controls.status == "workload starting" && running)
                    || (self.controls.status == "workload stopping" && !running)
                {
                    self.controls.status =
                        format!("workload {}", if running { "running" } else { "stopped" });
                }
                if self.controls.status.starts_with("waiting for the VM") {
                    self.controls.status = "waiting for the guest agent".into();
                }
                if self.model.agent_ready && self.controls.status == "waiting for the guest agent" {
                    self.controls.status = "ready".into();
                }
            }
            Update::Unreachable(e) => {
                if self.model.uptime_s.is_some() {
                    self.controls.status = format!("VM unreachable: {e}");
                }
            }
            Update::Done { what, error } => {
                if let Some(e) = error {
                    self.controls.status = format!("{what} failed: {e}");
                }
            }
        }
    }
}

/// Runs the demo until `q`, a signal, or a fatal error.
pub fn run(args: &DemoOptions) -> anyhow::Result<()> {
    let steps = match &args.script {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading script {}", p.display()))?;
            let steps = script::parse(&text)
                .map_err(|e| runner::cli::usage(format!("script {}: {e}", p.display())))?;
            Some(Player::new(steps))
        }
        None => None,
    };
    let scratch = base::scratch::dir("swaplab-demo-").context("creating a scratch directory")?;
    let (sock, mut vm) = match &args.attach {
        Some(p) => (p.clone(), None),
        None => {
            let sock = args
                .api_sock
                .clone()
                .unwrap_or_else(|| scratch.path().join("api.sock"));
            let log = args
                .log
                .clone()
                .unwrap_or_else(|| scratch.path().join("vm.log"));
            (sock.clone(), Some(VmChild::spawn(args, &sock, &log)?))
        }
    };
    // Before any thread: the poller and the UI inherit the blocked signals,
    // which the scope's own thread reads.
    let signals = SignalScope::new().context("catching signals")?;
    let outcome = run_screen(args, sock, steps, vm.as_mut(), &signals);
    let log: Option<PathBuf> = vm.as_ref().map(|v| v.log.clone());
    if let Some(v) = vm.as_mut() {
        v.stop(Duration::from_secs(20));
    }
    match (&outcome, log) {
        (Err(_), Some(log)) if args.log.is_none() => {
            // Keep the log of a failed run: the scratch directory goes away. A
            // new file of a random name (O_EXCL, mode 0600), never a predictable
            // one in a world-writable directory.
            match keep_log(&log) {
                Ok(kept) => eprintln!("swaplab: the VM's output is in {}", kept.display()),
                Err(e) => eprintln!("swaplab: cannot keep the VM's output: {e}"),
            }
        }
        (_, Some(log)) if args.log.is_some() => {
            eprintln!("swaplab: the VM's output is in {}", log.display());
        }
        _ => {}
    }
    // The scratch directory goes while signals are still held: a second
    // signal (a hangup, then the SIGTERM of whoever closed the terminal) would
    // otherwise kill the process as the scope ends, before it is removed.
    drop(vm);
    drop(scratch);
    if let Some(sig) = signals.caught() {
        anyhow::bail!("stopped by {}", signal_name(sig));
    }
    outcome
}

/// Copies `log` to a new private file in the temporary directory; its path.
fn keep_log(log: &std::path::Path) -> std::io::Result<PathBuf> {
    let mut kept = tempfile::Builder::new()
        .prefix("swaplab-demo-")
        .suffix(".log")
        .tempfile()?;
    std::io::copy(&mut std::fs::File::open(log)?, kept.as_file_mut())?;
    let (_, path) = kept.keep().map_err(|e| e.error)?;
    Ok(path)
}

fn run_screen(
    args: &DemoOptions,
    sock: PathBuf,
    mut player: Option<Player>,
    mut vm: Option<&mut VmChild>,
    signals: &SignalScope,
) -> anyhow::Result<()> {
    let (atx, arx) = mpsc::channel();
    let (utx, urx) = mpsc::channel();
    let interval = Duration::from_millis(args.interval_ms);
    let poller = std::thread::Builder::new()
        .name("demo-poller".into())
        .spawn(move || run_poller(sock, interval, arx, utx))
        .context("starting the poller")?;
    let limits = args.limits();
    let mut demo = Demo {
        model: Model {
            guest_mem: args.attach.is_none().then(|| args.mem.bytes()),
            ..Model::default()
        },
        controls: Controls {
            limits,
            limit_idx: 0,
            step: args.step.bytes(),
            workload_mb: args.workload_mb(),
            status: if args.attach.is_some() {
                "waiting for the VM".into()
            } else {
                "waiting for the VM to boot".into()
            },
            script: player.as_ref().map(Player::progress),
        },
        target: 0,
        workload_on: false,
        guest_mem: args.mem.bytes(),
        pattern: args.pattern.clone(),
        actions: atx,
        polled: false,
    };
    let result = (|| -> anyhow::Result<()> {
        let guard = TermGuard::enter().context("setting up the terminal")?;
        let mut terminal =
            Terminal::new(CrosstermBackend::new(std::io::stdout())).context("terminal")?;
        terminal.clear()?;
        let mut script_start: Option<Instant> = None;
        let mut quitting: Option<Instant> = None;
        loop {
            if signals.caught().is_some() {
                break;
            }
            while let Ok(u) = urx.try_recv() {
                demo.apply(u);
            }
            let attached_ready = args.attach.is_some() && demo.polled;
            if (demo.model.agent_ready || attached_ready) && script_start.is_none() {
                script_start = Some(Instant::now());
            }
            let mut due = Vec::new();
            if let (Some(p), Some(t0)) = (player.as_mut(), script_start) {
                due = p.due(t0.elapsed());
                demo.controls.script = Some(p.progress());
            }
            if let Some(v) = vm.as_deref_mut() {
                if let Some(status) = v.exited() {
                    if quitting.is_some() {
                        break;
                    }
                    demo.controls.status = format!(
                        "the VM exited ({status}); see {} · q quits",
                        v.log.display()
                    );
                    player = None;
                    due.clear();
                }
            }
            if let Some(t) = quitting {
                if t.elapsed() >= QUIT_GRACE || vm.is_none() {
                    break;
                }
            }
            terminal.draw(|f| ui::draw(f, &demo.model, &demo.controls))?;
            match super::term::read_keys(Duration::from_millis(100))? {
                // The terminal is gone: quit (and stop the VM) at once.
                None => break,
                Some(keys) => {
                    for k in keys {
                        if k == super::term::CTRL_C {
                            due.push(Action::Quit);
                        } else {
                            due.extend(Action::from_key(char::from(k)));
                        }
                    }
                }
            }
            for a in due {
                if quitting.is_some() {
                    break;
                }
                if a == Action::Quit {
                    quitting = Some(Instant::now());
                    demo.controls.status = "quitting: stopping the VM".into();
                    if vm.is_some() {
                        demo.send(Request::GuestSend {
                            line: "quit".into(),
                        });
                    }
                } else {
                    demo.act(a);
                }
            }
        }
        drop(terminal);
        drop(guard);
        Ok(())
    })();
    drop(demo);
    let _ = poller.join();
    result
}
