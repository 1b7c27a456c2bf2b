//! `swaplab bench balloon`: how fast the balloon inflates and deflates under swaplab
//! and under QEMU's virtio-balloon, with the same kernel, initramfs, guest size and
//! guest state, in the same environment (both inside the sandbox on a host that
//! needs it), several times each (interleaved), comparing the medians.
//!
//! Each run boots a fresh VM whose guest first touches most of its RAM
//! (`swaplab-guest touch`, which then exits: the memory is free in the guest and
//! resident on the host), then
//! - inflate: the target goes from 0 to `--balloon`; timed from sending the
//!   request to the first poll that sees the guest's `actual` equal to it;
//! - deflate: the target goes back to 0, timed the same way.
//!
//! Both VMMs are child processes driven over a Unix socket: swaplab (`swaplab boot
//! --balloon --api-sock`) through its control socket (`balloon.set`, and
//! `balloon.stats`' `actual_bytes`), QEMU microvm (`-device
//! virtio-balloon-device,deflate-on-oom=on`) through QMP (`balloon` with the
//! logical RAM size, `query-balloon`'s `actual`). Both offer `DEFLATE_ON_OOM` and
//! ask the guest for statistics every second. `actual` is what the guest wrote in
//! the config space on both. The poll interval (`--poll-ms`) plus one round trip
//! is the resolution.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::boot::bench::median;
use crate::boot::console::{GuestConsole, Show};
use crate::boot::qemu::{self, QEMU};
use crate::boot::BootFiles;
use crate::cli::usage;
use crate::sandbox::{needs_sandbox_here, SandboxFlag};
use crate::size::ByteSize;
use vmm::api::{Reply, Request, Size};

/// `swaplab bench balloon`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchBalloonArgs {
    /// Boots per VMM (one inflate and one deflate each).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    pub mem: ByteSize,
    /// Balloon size to inflate to (and deflate from).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub balloon: ByteSize,
    /// Memory the guest touches (and frees) before the balloon moves (default:
    /// three quarters of --mem).
    #[arg(long, value_name = "SIZE")]
    pub touch: Option<ByteSize>,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Poll interval for the balloon's size, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    pub poll_ms: u64,
    /// Limit per boot (boot, touch, inflate, deflate), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// The QEMU binary.
    #[arg(long, value_name = "PROGRAM", default_value = QEMU)]
    pub qemu: OsString,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlag,
}

/// Errors driving one VM's balloon.
#[derive(Debug, thiserror::Error)]
pub enum BalloonBenchError {
    /// The VMM could not start.
    #[error(transparent)]
    Spawn(#[from] qemu::QemuRunError),
    /// Socket I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// Which exchange.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A reply was not what the protocol says.
    #[error("{0}")]
    Protocol(String),
    /// Something did not happen in time.
    #[error("{what} did not happen within {secs} s{}", tail(.output))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        secs: u64,
        /// The end of the VM's output.
        output: Vec<String>,
    },
    /// The VM ended before the measurement did.
    #[error("the VM ended before {what}{}", tail(.output))]
    Ended {
        /// What was awaited.
        what: String,
        /// The end of the VM's output.
        output: Vec<String>,
    },
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(8);
    format!("; its output ended with: {}", lines[start..].join(" / "))
}

/// Printed by the guest once it has touched (and freed) its memory.
const READY_MARKER: &str = "swaplab-bench-balloon: touched";
/// Most runs accepted.
const MAX_RUNS: u32 = 100;
/// Limit on one socket exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Statistics interval asked of both devices, seconds.
const STATS_INTERVAL_S: u64 = 1;

/// The guest command: touch, free, say so, wait to be stopped.
fn guest_command(touch_mib: u64) -> String {
    format!(
        "swaplab-guest touch --mb {touch_mib} --out - >/dev/null && echo {READY_MARKER}; exec sleep 1000000"
    )
}

/// Lines of a VM's command output, arriving from a reader thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Waits for a line starting with `marker`.
    fn wait_for(&mut self, marker: &str, limit: Duration) -> Result<(), BalloonBenchError> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.starts_with(marker);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(BalloonBenchError::Timeout {
                        what: format!("the guest printing {marker:?}"),
                        secs: limit.as_secs(),
                        output: self.seen.clone(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BalloonBenchError::Ended {
                        what: format!("printing {marker:?}"),
                        output: self.seen.clone(),
                    })
                }
            }
        }
    }
}

/// A writer sending each complete line to a channel.
struct LineSender {
    tx: mpsc::Sender<String>,
    buf: Vec<u8>,
}

impl LineSender {
    fn new(tx: mpsc::Sender<String>) -> Self {
        Self {
            tx,
            buf: Vec::new(),
        }
    }
}

impl Write for LineSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]);
            let _ = self.tx.send(text.trim_end_matches('\r').to_string());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds `out` to `sink` on a thread until it closes.
fn pump(mut out: impl Read + Send + 'static, mut sink: impl Write + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = sink.write_all(&buf[..n]);
                }
            }
        }
    });
}

/// One JSON object per line over a Unix socket (the control socket, QMP).
struct JsonLines {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    what: &'static str,
}

impl JsonLines {
    /// Connects to `path`, retrying until it listens or `limit` passes.
    fn connect(
        path: &Path,
        what: &'static str,
        limit: Duration,
    ) -> Result<Self, BalloonBenchError> {
        let deadline = Instant::now() + limit;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(source) => {
                    return Err(BalloonBenchError::Io {
                        what: format!("connecting to {what} at {}", path.display()),
                        source,
                    })
                }
            }
        };
        let io = |source| BalloonBenchError::Io {
            what: format!("setting up {what}"),
            source,
        };
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Self {
            writer: stream,
            reader,
            what,
        })
    }

    fn io(&self, op: &str) -> impl FnOnce(std::io::Error) -> BalloonBenchError {
        let what = format!("{} {op}", self.what);
        move |source| BalloonBenchError::Io { what, source }
    }

    fn send(&mut self, line: &str) -> Result<(), BalloonBenchError> {
        let mut l = line.to_string();
        l.push('\n');
        let e = self.io("write");
        self.writer.write_all(l.as_bytes()).map_err(e)
    }

    /// The next line that is not a QMP event.
    fn recv(&mut self) -> Result<Value, BalloonBenchError> {
        loop {
            let mut line = String::new();
            let e = self.io("read");
            if self.reader.read_line(&mut line).map_err(e)? == 0 {
                return Err(BalloonBenchError::Protocol(format!(
                    "{} closed the connection",
                    self.what
                )));
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| {
                BalloonBenchError::Protocol(format!("{}: {e} in {line:?}", self.what))
            })?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }
}

/// A balloon to drive: set its size, read the size the guest reports.
trait Driver {
    /// Asks for a balloon of `bytes`.
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError>;
    /// The balloon's size the guest reports, bytes.
    fn actual(&mut self) -> Result<u64, BalloonBenchError>;
}

/// swaplab's control socket.
struct ControlSocket(JsonLines);

impl ControlSocket {
    fn call(&mut self, req: &Request) -> Result<Value, BalloonBenchError> {
        self.0.send(&req.to_line())?;
        let v = self.0.recv()?;
        let reply = Reply::from_line(&v.to_string())
            .map_err(|e| BalloonBenchError::Protocol(format!("control socket: {e}")))?;
        if !reply.is_ok() {
            return Err(BalloonBenchError::Protocol(format!(
                "control socket: {} answered {v}",
                req.name()
            )));
        }
        Ok(v["result"].clone())
    }
}

impl Driver for ControlSocket {
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
        self.call(&Request::BalloonSet {
            target: Size(bytes),
        })
        .map(drop)
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        let r = self.call(&Request::BalloonStats)?;
        r["actual_bytes"].as_u64().ok_or_else(|| {
            BalloonBenchError::Protocol(format!("balloon.stats has no actual_bytes: {r}"))
        })
    }
}

/// QEMU's QMP socket.
struct Qmp {
    lines: JsonLines,
    /// Guest RAM: QMP speaks of the logical RAM size, RAM minus the balloon.
    mem: u64,
}

impl Qmp {
    fn open(path: &Path, mem: u64, limit: Duration) -> Result<Self, BalloonBenchError> {
        let mut q = Qmp {
            lines: JsonLines::connect(path, "QMP", limit)?,
            mem,
        };
        let greeting = q.lines.recv()?;
        if greeting.get("QMP").is_none() {
            return Err(BalloonBenchError::Protocol(format!(
                "QMP greeting expected, got {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn execute(&mut self, cmd: &str, arguments: Option<Value>) -> Result<Value, BalloonBenchError> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        self.lines.send(&msg.to_string())?;
        let v = self.lines.recv()?;
        v.get("return")
            .cloned()
            .ok_or_else(|| BalloonBenchError::Protocol(format!("QMP {cmd} answered {v}")))
    }
}

impl Driver for Qmp {
    fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
        let value = self.mem.saturating_sub(bytes);
        self.execute("balloon", Some(json!({ "value": value })))
            .map(drop)
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        let r = self.execute("query-balloon", None)?;
        let logical = r["actual"].as_u64().ok_or_else(|| {
            BalloonBenchError::Protocol(format!("query-balloon has no actual: {r}"))
        })?;
        Ok(self.mem.saturating_sub(logical))
    }
}

/// Time from asking for `bytes` to the guest reporting it.
fn measure(
    d: &mut dyn Driver,
    bytes: u64,
    poll: Duration,
    limit: Duration,
) -> Result<Duration, BalloonBenchError> {
    let t0 = Instant::now();
    d.set(bytes)?;
    loop {
        if d.actual()? == bytes {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(BalloonBenchError::Timeout {
                what: format!("the balloon reaching {} MiB", bytes >> 20),
                secs: limit.as_secs(),
                output: Vec::new(),
            });
        }
        std::thread::sleep(poll);
    }
}

/// A VM under test: its process, its output, its balloon.
struct Vm {
    child: Child,
    lines: Lines,
    driver: Box<dyn Driver>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What both VMMs are given.
struct Setup {
    files: BootFiles,
    mem: u64,
    cpus: u32,
    command: String,
    limit: Duration,
}

impl Setup {
    /// QEMU's command line (swaplab adds `swaplab.channel=1` for its result channel).
    fn qemu_cmdline(&self) -> Result<String, BalloonBenchError> {
        let base = format!("{} no-kvmapf", self.files.cmdline);
        workloads::image::init::cmdline_with_run(&base, Some(&self.command))
            .map_err(|e| BalloonBenchError::Protocol(e.to_string()))
    }
}

/// Boots swaplab (`swaplab boot --balloon --api-sock`) up to the guest's ready line.
fn start_swaplab(s: &Setup, dir: &Path) -> Result<Vm, BalloonBenchError> {
    let sock = dir.join("swaplab-api.sock");
    let exe = crate::sandbox::reexec::current_exe()
        .map_err(|e| BalloonBenchError::Protocol(e.to_string()))?;
    let args: Vec<OsString> = vec![
        "boot".into(),
        "--sandbox".into(),
        "never".into(),
        "--mem".into(),
        format!("{}M", s.mem >> 20).into(),
        "--cpus".into(),
        s.cpus.to_string().into(),
        "--balloon".into(),
        "--api-sock".into(),
        sock.clone().into_os_string(),
        "--timeout".into(),
        s.limit.as_secs().max(1).to_string().into(),
        "--run".into(),
        s.command.clone().into(),
    ];
    let mut child = qemu::spawn(&exe, &args)?;
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        pump(out, LineSender::new(tx));
    }
    if let Some(err) = child.stderr.take() {
        pump(err, std::io::sink());
    }
    let mut vm = Vm {
        child,
        lines: Lines {
            rx,
            seen: Vec::new(),
        },
        driver: Box::new(NoDriver),
    };
    vm.lines.wait_for(READY_MARKER, s.limit)?;
    vm.driver = Box::new(ControlSocket(JsonLines::connect(
        &sock,
        "the control socket",
        REQUEST_TIMEOUT,
    )?));
    Ok(vm)
}

/// Boots QEMU microvm with a virtio-balloon up to the guest's ready line.
fn start_qemu(s: &Setup, program: &std::ffi::OsStr, dir: &Path) -> Result<Vm, BalloonBenchError> {
    let sock = dir.join("qmp.sock");
    let mut args = qemu::args(&s.files, &s.qemu_cmdline()?, s.mem, s.cpus);
    args.extend([
        "-device".into(),
        "virtio-balloon-device,id=balloon0,deflate-on-oom=on".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock.display()).into(),
    ]);
    let mut child = qemu::spawn(program, &args)?;
    let (tx, rx) = mpsc::channel();
    let (console, _marks) = GuestConsole::new(Show::Command, Box::new(LineSender::new(tx)), None);
    if let Some(out) = child.stdout.take() {
        pump(out, console);
    }
    let (etx, erx) = mpsc::channel();
    if let Some(err) = child.stderr.take() {
        pump(err, LineSender::new(etx));
    }
    let mut vm = Vm {
        child,
        lines: Lines {
            rx,
            seen: Vec::new(),
        },
        driver: Box::new(NoDriver),
    };
    let mut qmp = match Qmp::open(&sock, s.mem, REQUEST_TIMEOUT) {
        Ok(q) => q,
        Err(e) => {
            let stderr: Vec<String> = erx.try_iter().collect();
            return Err(BalloonBenchError::Protocol(format!("{e}{}", tail(&stderr))));
        }
    };
    // Statistics every second, as swaplab's balloon asks for them.
    qmp.execute(
        "qom-set",
        Some(json!({
            "path": "/machine/peripheral/balloon0",
            "property": "guest-stats-polling-interval",
            "value": STATS_INTERVAL_S,
        })),
    )?;
    vm.lines.wait_for(READY_MARKER, s.limit)?;
    vm.driver = Box::new(qmp);
    Ok(vm)
}

/// Stands in until the VM is ready.
struct NoDriver;

impl Driver for NoDriver {
    fn set(&mut self, _: u64) -> Result<(), BalloonBenchError> {
        Err(BalloonBenchError::Protocol("no balloon yet".into()))
    }

    fn actual(&mut self) -> Result<u64, BalloonBenchError> {
        Err(BalloonBenchError::Protocol("no balloon yet".into()))
    }
}

/// One VMM's runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Inflate times (0 to the balloon size), ms, per run.
    pub inflate_ms: Vec<f64>,
    /// Deflate times (back to 0), ms, per run.
    pub deflate_ms: Vec<f64>,
    /// Inflate rates, MiB/s, per run.
    pub inflate_mib_s: Vec<f64>,
    /// Deflate rates, MiB/s, per run.
    pub deflate_mib_s: Vec<f64>,
    /// Median of `inflate_mib_s`.
    pub median_inflate_mib_s: f64,
    /// Median of `deflate_mib_s`.
    pub median_deflate_mib_s: f64,
}

impl Series {
    fn push(&mut self, mib: f64, inflate: Duration, deflate: Duration) {
        self.inflate_ms.push(inflate.as_secs_f64() * 1e3);
        self.deflate_ms.push(deflate.as_secs_f64() * 1e3);
        self.inflate_mib_s.push(mib / inflate.as_secs_f64());
        self.deflate_mib_s.push(mib / deflate.as_secs_f64());
        self.median_inflate_mib_s = median(&self.inflate_mib_s);
        self.median_deflate_mib_s = median(&self.deflate_mib_s);
    }
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BalloonBench {
    /// Where it ran (the sandbox note, if in the sandbox).
    pub environment: Option<String>,
    /// Kernel.
    pub kernel: String,
    /// initramfs.
    pub initrd: Option<String>,
    /// QEMU's command line (swaplab's adds `swaplab.channel=1`).
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Balloon size inflated to, MiB.
    pub balloon_mib: u64,
    /// The guest's state when the balloon moves.
    pub guest_state: String,
    /// Poll interval, ms (the resolution, plus one round trip).
    pub poll_ms: u64,
    /// swaplab's runs.
    pub swaplab: Series,
    /// QEMU microvm's runs.
    pub qemu: Series,
    /// swaplab median / QEMU median, inflate MiB/s.
    pub ratio_inflate: f64,
    /// swaplab median / QEMU median, deflate MiB/s.
    pub ratio_deflate: f64,
}

/// Default `--touch`: three quarters of the guest's RAM.
fn touch_mib(args: &BenchBalloonArgs) -> u64 {
    args.touch.map_or(args.mem.bytes() * 3 / 4, |t| t.bytes()) >> 20
}

fn validate(args: &BenchBalloonArgs) -> anyhow::Result<()> {
    if !(1..=MAX_RUNS).contains(&args.runs) {
        return Err(usage(format!(
            "--runs must be between 1 and {MAX_RUNS}, got {}",
            args.runs
        )));
    }
    let (mem, balloon) = (args.mem.bytes(), args.balloon.bytes());
    if balloon == 0 || balloon % (1 << 20) != 0 || balloon > mem / 2 {
        return Err(usage(format!(
            "--balloon must be a whole number of MiB, at most half of --mem {}, got {}",
            args.mem, args.balloon
        )));
    }
    let touch = touch_mib(args);
    if touch == 0 || touch > (mem >> 20).saturating_sub(96) {
        return Err(usage(format!(
            "--touch must be at least 1M and leave the guest 96M, got {touch}M"
        )));
    }
    if !(1..=1000).contains(&args.poll_ms) {
        return Err(usage(format!(
            "--poll-ms must be between 1 and 1000, got {}",
            args.poll_ms
        )));
    }
    let boot = crate::boot::cmd::BootArgs {
        kernel: None,
        initrd: None,
        bzimage: false,
        mem: args.mem,
        cpus: args.cpus,
        cmdline: None,
        run: Some(guest_command(touch)),
        timeout: args.timeout,
        console: None,
        channel: None,
        boot_log: false,
        verbose: false,
        api_sock: None,
        balloon: true,
        host_limit: None,
        null_device: Vec::new(),
        sandbox: args.sandbox,
    };
    crate::boot::cmd::validate(&boot)
}

/// One run of one VM: boot, inflate, deflate.
fn one_run(
    vm: Result<Vm, BalloonBenchError>,
    bytes: u64,
    poll: Duration,
    limit: Duration,
) -> Result<(Duration, Duration), BalloonBenchError> {
    let mut vm = vm?;
    let inflate = measure(vm.driver.as_mut(), bytes, poll, limit)?;
    let deflate = measure(vm.driver.as_mut(), 0, poll, limit)?;
    Ok((inflate, deflate))
}

/// Where the sockets go: L1's own tmpfs in the sandbox (its `/tmp` is the host's,
/// over 9p), the temp dir elsewhere.
fn socket_dir() -> PathBuf {
    if crate::sandbox::in_sandbox() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    }
}

/// Run the benchmark here.
pub fn bench_balloon(args: &BenchBalloonArgs, files: BootFiles) -> anyhow::Result<BalloonBench> {
    let touch = touch_mib(args);
    let setup = Setup {
        files,
        mem: args.mem.bytes(),
        cpus: args.cpus,
        command: guest_command(touch),
        limit: Duration::from_secs(args.timeout),
    };
    let cmdline = setup.qemu_cmdline()?;
    let bytes = args.balloon.bytes();
    let mib = (bytes >> 20) as f64;
    let poll = Duration::from_millis(args.poll_ms);
    let mut ours = Series::default();
    let mut theirs = Series::default();
    for i in 0..args.runs {
        let dir = tempfile::Builder::new()
            .prefix("swaplab-bench-balloon-")
            .tempdir_in(socket_dir())?;
        let (inf, def) = one_run(start_swaplab(&setup, dir.path()), bytes, poll, setup.limit)
            .map_err(|e| anyhow::anyhow!("swaplab run {}: {e}", i + 1))?;
        ours.push(mib, inf, def);
        let (inf, def) = one_run(
            start_qemu(&setup, &args.qemu, dir.path()),
            bytes,
            poll,
            setup.limit,
        )
        .map_err(|e| anyhow::anyhow!("QEMU run {}: {e}", i + 1))?;
        theirs.push(mib, inf, def);
    }
    Ok(BalloonBench {
        environment: crate::sandbox::environment_note().map(str::to_string),
        kernel: setup.files.kernel.display().to_string(),
        initrd: setup.files.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline,
        mem_mib: setup.mem >> 20,
        cpus: setup.cpus,
        balloon_mib: bytes >> 20,
        guest_state: format!(
            "touched {touch} MiB, then freed it (free in the guest, resident on the host)"
        ),
        poll_ms: args.poll_ms,
        ratio_inflate: ours.median_inflate_mib_s / theirs.median_inflate_mib_s,
        ratio_deflate: ours.median_deflate_mib_s / theirs.median_deflate_mib_s,
        swaplab: ours,
        qemu: theirs,
    })
}

/// The table.
pub fn render_text(b: &BalloonBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "balloon: 0 -> {} MiB -> 0 in a {} MiB guest ({} vCPUs), {} runs each, poll every {} ms",
        b.balloon_mib,
        b.mem_mib,
        b.cpus,
        b.swaplab.inflate_ms.len(),
        b.poll_ms
    );
    let _ = writeln!(s, "guest: {}; kernel {}", b.guest_state, b.kernel);
    if let Some(env) = &b.environment {
        let _ = writeln!(s, "environment: {env}");
    }
    let _ = writeln!(
        s,
        "\n{:<14} {:>16} {:>16} {:>20} {:>20}",
        "", "inflate (median)", "deflate (median)", "inflate ms", "deflate ms"
    );
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (name, series) in [("swaplab", &b.swaplab), ("qemu microvm", &b.qemu)] {
        let _ = writeln!(
            s,
            "{:<14} {:>10.0} MiB/s {:>10.0} MiB/s {:>20} {:>20}",
            name,
            series.median_inflate_mib_s,
            series.median_deflate_mib_s,
            list(&series.inflate_ms),
            list(&series.deflate_ms)
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>16.2} {:>16.2}",
        "ratio", b.ratio_inflate, b.ratio_deflate
    );
    s
}

fn run(args: &BenchBalloonArgs) -> anyhow::Result<u8> {
    validate(args)?;
    let files = BootFiles::resolve(None, None, None, false)?;
    if needs_sandbox_here(args.sandbox.sandbox) {
        let timeout = Duration::from_secs(args.timeout) * 2 * args.runs;
        return crate::boot::cmd::run_in_sandbox(&files, args.mem.bytes(), timeout);
    }
    let b = bench_balloon(args, files)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", render_text(&b));
    }
    Ok(0)
}

/// Run `swaplab bench balloon`.
pub fn main(a: &BenchBalloonArgs) -> ExitCode {
    match run(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => crate::cli::finish(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sender_splits_lines_across_writes() {
        let (tx, rx) = mpsc::channel();
        let mut w = LineSender::new(tx);
        w.write_all(b"ab").unwrap();
        w.write_all(b"c\r\nd\ne").unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["abc", "d"]);
        w.write_all(b"\n").unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["e"]);
    }

    /// A balloon that reaches its target after a few polls.
    struct Fake {
        target: u64,
        actual: u64,
        polls: u32,
    }

    impl Driver for Fake {
        fn set(&mut self, bytes: u64) -> Result<(), BalloonBenchError> {
            self.target = bytes;
            Ok(())
        }

        fn actual(&mut self) -> Result<u64, BalloonBenchError> {
            self.polls += 1;
            if self.polls % 3 == 0 {
                self.actual = self.target;
            }
            Ok(self.actual)
        }
    }

    #[test]
    fn measure_polls_until_actual_is_the_target() {
        let mut f = Fake {
            target: 0,
            actual: 0,
            polls: 0,
        };
        measure(
            &mut f,
            256 << 20,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!((f.actual, f.polls), (256 << 20, 3));
        measure(&mut f, 0, Duration::from_millis(1), Duration::from_secs(60)).unwrap();
        assert_eq!((f.actual, f.polls), (0, 6));
    }

    /// A balloon that never moves.
    struct Stuck;

    impl Driver for Stuck {
        fn set(&mut self, _: u64) -> Result<(), BalloonBenchError> {
            Ok(())
        }

        fn actual(&mut self) -> Result<u64, BalloonBenchError> {
            Ok(1)
        }
    }

    #[test]
    fn measure_gives_up_at_its_limit() {
        let e = measure(&mut Stuck, 2, Duration::from_millis(1), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("did not happen"), "{e}");
    }

    #[test]
    fn series_rates_and_medians() {
        let mut s = Series::default();
        s.push(
            256.0,
            Duration::from_millis(500),
            Duration::from_millis(250),
        );
        s.push(
            256.0,
            Duration::from_millis(1000),
            Duration::from_millis(500),
        );
        s.push(
            256.0,
            Duration::from_millis(250),
            Duration::from_millis(1000),
        );
        assert_eq!(s.inflate_mib_s, [512.0, 256.0, 1024.0]);
        assert_eq!(s.median_inflate_mib_s, 512.0);
        assert_eq!(s.median_deflate_mib_s, 512.0);
    }

    #[test]
    fn guest_command_prints_the_marker_only_after_touching() {
        let c = guest_command(384);
        assert!(c.starts_with("swaplab-guest touch --mb 384 "), "{c}");
        assert!(c.contains(&format!("&& echo {READY_MARKER}")), "{c}");
    }
}
