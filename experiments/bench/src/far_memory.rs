//! `swaplab bench far-memory`: the userfaultfd swapper with its store in Redis,
//! at emulated distances, against the two round trips a swap-in is made of.
//!
//! A store swap-in from far memory is at least one userfaultfd round trip
//! (the floor, [`swapper::floor`]) plus one `GET` round trip to the store. The
//! bench measures both in the same run as the swapper, and gives the swap-in
//! p50 as a ratio to their sum: what is above it is the swapper's own work.
//!
//! - The store: a private `redis-server` on loopback started for the run
//!   ([`base::redis_server`]), or `--store-url`: a real remote Redis, whose
//!   distance is real (no delay is added).
//! - Distance, *emulated*, one of two ways (`--distance`):
//!   - `netem`: the private server runs in a network namespace of its own
//!     ([`hostsys::netns::DelayNet`]), reached over a veth pair with a
//!     `tc netem` delay on both ends; delay 0 is the veth and the qdisc alone;
//!   - `relay`: each delay puts a [`hostsys::relay::DelayRelay`] in front of
//!     the server on loopback; delay 0 is the relay alone;
//!
//!   `auto` (the default) takes netem where the kernel has `sch_netem` and
//!   the relay elsewhere (this project's PVM hosts have no netem), and says
//!   why in `distance_note`. Either way a round trip crosses the delay
//!   twice, and every output says "emulated". The loopback row is a private
//!   server on this namespace's loopback either way, so the two modes'
//!   rows compare with the same reference.
//! - Per delay: the `GET` round trip of one 4 KiB value (p50/p99 over
//!   `--gets` requests through the same relay), then the probe under the
//!   swapper (checksums on, clock) with the store behind the relay:
//!   `random` without prefetch (every fault a store swap-in: the latency
//!   figure), and `sequential` without and with `--prefetch` (what a
//!   batched read in one round trip buys).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use base::redis_server::RedisServer;
use base::ByteSize;
use hostsys::netns::DelayNet;
use hostsys::relay::DelayRelay;
use hostsys::signals::SignalScope;
use report::stats::fmt_ns;
use runner::cli::usage;
use runner::probe_run::plan::SwapPlan;
use runner::probe_run::ProbeConfig;
use swapper::policy::PolicyKind;
use swapper::{StoreKind, SwapperConfig};
use workloads::guest::pattern::Pattern;

use crate::host_swap::{opt, probe_figures, ratio, verdict, RunFigures};

/// Most delays in one run.
pub const MAX_DELAYS: usize = 8;
/// Most `GET`s per delay.
pub const MAX_GETS: u32 = 100_000;
/// Most passes per run.
const MAX_PASSES: u32 = 100;
/// The bar: swap-in p50 at most this many times (floor + `GET` round trip).
pub const BAR: f64 = 1.5;
/// The idle gap before each timed `GET`: longer than the probe's time
/// between two faults, so that the server sleeps in between as it does
/// when the swapper asks.
pub const GET_GAP: Duration = Duration::from_micros(500);

/// `swaplab bench far-memory`.
#[derive(Debug, Clone)]
pub struct FarMemoryOptions {
    /// Test RAM.
    pub mem: ByteSize,
    /// Host resident limit.
    pub limit: ByteSize,
    /// Passes per run (the first is not measured).
    pub passes: u32,
    /// One-way delays to emulate, µs.
    pub delays_us: Vec<u64>,
    /// `GET` round trips timed per delay.
    pub gets: u32,
    /// Prefetch cluster of the prefetching run, pages.
    pub prefetch: u32,
    /// A real Redis to use instead of a private one (no delay added).
    pub store_url: Option<String>,
    /// Host CPU for the probe and the swapper, or `none`.
    pub cpu: Option<String>,
    /// Print one JSON object instead of tables.
    pub json: bool,
    /// Run under the seccomp filters.
    pub seccomp: bool,
    /// How distance is emulated: `auto`, `netem` or `relay`.
    pub distance: String,
}

/// How distance is emulated (`--distance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistanceMode {
    /// netem where the kernel can, else the relay.
    Auto,
    /// A network namespace and a veth pair with `tc netem` (no fallback).
    Netem,
    /// The userspace delay relay.
    Relay,
}

impl DistanceMode {
    /// Parses `--distance`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "netem" => Ok(Self::Netem),
            "relay" => Ok(Self::Relay),
            _ => Err(usage(format!(
                "--distance must be auto, netem or relay, got {} characters{}",
                s.len(),
                if s.len() <= 16 && s.chars().all(|c| c.is_ascii_graphic()) {
                    format!(" ({s:?})")
                } else {
                    String::new()
                }
            ))),
        }
    }
}

/// One distance's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Distance {
    /// How the store is reached: `loopback` (the private server, directly),
    /// `relay` (through a delay relay), `netem` (in a network namespace over
    /// a veth pair with a netem delay), or `remote` (`--store-url`).
    pub path: String,
    /// One-way delay added, µs (`None`: nothing added).
    pub delay_us: Option<u64>,
    /// Whether the distance is emulated (a delay relay or netem on this host).
    pub emulated: bool,
    /// `GET` of one page, round trip p50, ns, each after an idle gap
    /// ([`GET_GAP`]), as a fault's `GET` comes: the server and the client
    /// wake for it.
    pub get_p50_ns: Option<u64>,
    /// Its p99, ns.
    pub get_p99_ns: Option<u64>,
    /// `GET`s back to back, p50, ns: both sides stay awake, so this is the
    /// wire and the server alone (reported; not the bound).
    pub get_hot_p50_ns: Option<u64>,
    /// The swapper's own time for a store swap-in of the random run (fault
    /// read to `UFFDIO_COPY` done, the `GET` included), p50, ns.
    pub handler_store_p50_ns: Option<u64>,
    /// floor p50 + `GET` p50, ns: what a swap-in cannot go below.
    pub bound_p50_ns: Option<u64>,
    /// Random store swap-in p50 ÷ the bound (bar ≤ 1.5).
    pub swap_in_bound_ratio: Option<f64>,
    /// Random, no prefetch.
    pub random: RunFigures,
    /// Sequential, no prefetch.
    pub sequential: RunFigures,
    /// Sequential with prefetch.
    pub sequential_prefetch: RunFigures,
    /// Sequential throughput, prefetch ÷ none.
    pub prefetch_throughput_ratio: Option<f64>,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct FarMemoryBench {
    /// Test RAM, bytes.
    pub mem_bytes: u64,
    /// Limit, bytes.
    pub limit_bytes: u64,
    /// Passes per run.
    pub passes: u32,
    /// Prefetch cluster of the prefetching runs.
    pub prefetch: u32,
    /// `GET`s per distance.
    pub gets: u32,
    /// The store: `private redis-server on loopback`, `private redis-server
    /// in a network namespace` or the URL given (without credentials).
    pub store: String,
    /// How the distance was made: `netem`, `relay` or `remote` (real).
    pub distance: String,
    /// Why, when it is not what `--distance` asked for or could be
    /// otherwise (`auto`'s fallback to the relay says why netem could not
    /// be used).
    pub distance_note: Option<String>,
    /// CPU the probe ran on.
    pub cpu: Option<usize>,
    /// The userfaultfd floor (random), p50, ns.
    pub floor_p50_ns: Option<u64>,
    /// Its p99, ns.
    pub floor_p99_ns: Option<u64>,
    /// Per distance.
    pub distances: Vec<Distance>,
    /// The largest swap-in ÷ bound ratio over the distances.
    pub worst_swap_in_bound_ratio: Option<f64>,
}

fn validate(a: &FarMemoryOptions) -> anyhow::Result<()> {
    if a.limit.bytes() == 0 || a.limit.bytes() >= a.mem.bytes() {
        return Err(usage(format!(
            "--limit must be above 0 and below --mem ({}), got {}",
            a.mem, a.limit
        )));
    }
    if !(2..=MAX_PASSES).contains(&a.passes) {
        return Err(usage(format!(
            "--passes must be between 2 and {MAX_PASSES} (the first is not measured), got {}",
            a.passes
        )));
    }
    if a.delays_us.is_empty() || a.delays_us.len() > MAX_DELAYS {
        return Err(usage(format!(
            "--delays-us takes 1 to {MAX_DELAYS} delays, got {}",
            a.delays_us.len()
        )));
    }
    let max = hostsys::relay::MAX_DELAY.as_micros() as u64;
    if let Some(d) = a.delays_us.iter().find(|&&d| d > max) {
        return Err(usage(format!(
            "--delays-us: each delay must be at most {max} µs, got {d}"
        )));
    }
    if let Some(url) = &a.store_url {
        remote_url(url)?;
    }
    crate::host_swap::cpu_of(a.cpu.as_deref())?;
    DistanceMode::parse(&a.distance)?;
    if !(1..=MAX_GETS).contains(&a.gets) {
        return Err(usage(format!(
            "--gets must be between 1 and {MAX_GETS}, got {}",
            a.gets
        )));
    }
    if !(1..=1024).contains(&a.prefetch) {
        return Err(usage(format!(
            "--prefetch must be between 1 and 1024 pages, got {}",
            a.prefetch
        )));
    }
    Ok(())
}

/// `--store-url` as the store parses it (its checks, its display without
/// credentials), which must name one server: a cluster's timing `GET` would
/// be redirected. Returns the URL as shown.
fn remote_url(url: &str) -> anyhow::Result<String> {
    let one_server = || {
        usage(format!(
            "--store-url takes one Redis server, redis://HOST:PORT[/DB] (a cluster's timing \
             GET would be redirected), got {} characters",
            url.len()
        ))
    };
    if url.len() > 1024 {
        return Err(one_server());
    }
    let seeds = swapper::store::redis::conn::parse_url(url)
        .map_err(|e| usage(format!("--store-url: {e}")))?;
    match seeds.as_slice() {
        [one] => Ok(swapper::store::redis::conn::display(one)),
        _ => Err(one_server()),
    }
}

/// Where the store is, and what keeps a private one alive. A private
/// server's directory is in a scratch directory named after this process
/// (last: removed after the servers), which the next bench sweeps if this
/// one is killed.
enum Store {
    /// A server on loopback, and the relays in front of it.
    Relay {
        server: RedisServer,
        relays: Vec<DelayRelay>,
        _scratch: tempfile::TempDir,
    },
    /// A server on loopback (the loopback row), and another in a network
    /// namespace. The server in the namespace is declared before the
    /// namespace: it is killed first.
    Netem {
        loopback: RedisServer,
        server: RedisServer,
        net: DelayNet,
        _scratch: tempfile::TempDir,
    },
    /// The URL, and how it is shown (without credentials).
    Remote(String, String),
}

impl Store {
    fn describe(&self) -> String {
        match self {
            Self::Relay { .. } => "private redis-server on loopback".into(),
            Self::Netem { net, .. } => format!(
                "private redis-server in network namespace {} (veth {}, tc netem)",
                net.ns(),
                net.host_if()
            ),
            Self::Remote(_, shown) => shown.clone(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Relay { .. } => "relay",
            Self::Netem { .. } => "netem",
            Self::Remote(..) => "remote",
        }
    }
}

/// The mode to use, and a note on why, for a private server: `auto` tries
/// netem and falls back to the relay.
fn resolve(mode: DistanceMode) -> (DistanceMode, Option<String>) {
    match mode {
        DistanceMode::Auto => match hostsys::netns::available() {
            Ok(()) => (
                DistanceMode::Netem,
                Some("auto: this kernel has netem and network namespaces".into()),
            ),
            Err(why) => (
                DistanceMode::Relay,
                Some(format!(
                    "auto: netem unavailable, using the delay relay: {why}"
                )),
            ),
        },
        m => (m, None),
    }
}

/// A private server's command: SIGKILL when this thread dies, set in the
/// child before it execs anything (`ip netns exec` and `setpriv` run first:
/// a bench killed meanwhile would leave the server running).
fn dies_with_us(cmd: &mut std::process::Command) {
    hostsys::child::ChildSetup {
        death_signal: Some(nix::sys::signal::Signal::SIGKILL),
        ..Default::default()
    }
    .apply(cmd);
}

/// Starts the private store(s) and what emulates distance.
fn private_store(mode: DistanceMode, delays_us: &[u64]) -> anyhow::Result<Store> {
    let scratch = base::scratch::dir("swaplab-far-memory-")
        .context("a scratch directory for redis-server")?;
    let loopback = RedisServer::try_start_with(Some(scratch.path()), None, dies_with_us)
        .map_err(anyhow::Error::msg)?;
    if mode == DistanceMode::Relay {
        let addr = server_addr(&loopback);
        let relays = delays_us
            .iter()
            .map(|&d| DelayRelay::start(addr, Duration::from_micros(d)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Store::Relay {
            server: loopback,
            relays,
            _scratch: scratch,
        });
    }
    let mut net = DelayNet::new().context("--distance netem: the network namespace")?;
    net.set_delay(Duration::from_micros(delays_us[0]))
        .context("--distance netem: the netem qdisc")?;
    let at = Some((net.ns(), net.ns_addr()));
    let server = RedisServer::try_start_with(Some(scratch.path()), at, dies_with_us)
        .map_err(anyhow::Error::msg)
        .context("--distance netem: redis-server in the network namespace")?;
    Ok(Store::Netem {
        loopback,
        server,
        net,
        _scratch: scratch,
    })
}

/// `GET` round trips of one page-sized value at `url`, ns: (p50, p99) of `n`
/// each after [`GET_GAP`] idle, and the p50 of `n` back to back. The value
/// lives under a key of this process that expires by itself, and is deleted
/// at the end.
fn get_round_trips(url: &str, n: u32) -> anyhow::Result<(u64, u64, u64)> {
    use redis::Commands as _;
    let timeout = Duration::from_secs(2);
    let shown = remote_url(url)?;
    let client = redis::Client::open(url).with_context(|| format!("store URL {shown}"))?;
    let mut c = client
        .get_connection_with_timeout(timeout)
        .with_context(|| format!("connecting to {shown}"))?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    let key = format!("swaplab:bench-get:{}", std::process::id());
    let value: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .arg("PX")
        .arg(600_000)
        .query(&mut c)
        .context("SET of the timing key")?;
    let mut timed = |gap: Option<Duration>| -> anyhow::Result<Vec<u64>> {
        let mut ns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            if let Some(g) = gap {
                std::thread::sleep(g);
            }
            let t = Instant::now();
            let got: Vec<u8> = c.get(&key).context("GET of the timing key")?;
            ns.push(t.elapsed().as_nanos() as u64);
            anyhow::ensure!(got == value, "GET returned other bytes than were SET");
        }
        ns.sort_unstable();
        Ok(ns)
    };
    let spaced = timed(Some(GET_GAP))?;
    let hot = timed(None)?;
    let _: () = c.del(&key).context("DEL of the timing key")?;
    let p = |v: &[u64], q| base::stats::percentile(v, q).unwrap_or(0);
    Ok((p(&spaced, 0.5), p(&spaced, 0.99), p(&hot, 0.5)))
}

struct Bench<'a> {
    args: &'a FarMemoryOptions,
    scope: &'a SignalScope,
}

impl Bench<'_> {
    fn plan(&self, url: &str, prefetch: u32) -> SwapPlan {
        let limit = self.args.limit.bytes();
        SwapPlan::Uffd {
            limit_bytes: limit,
            config: SwapperConfig {
                limit_bytes: limit,
                store: StoreKind::Redis {
                    url: url.to_string(),
                },
                policy: PolicyKind::Clock,
                prefetch,
                checksums: true,
                ..Default::default()
            },
            inject: Default::default(),
        }
    }

    /// One probe run; a failed run is recorded in its figures, not fatal
    /// (except an interruption).
    fn run(&self, label: &str, pattern: Pattern, plan: &SwapPlan) -> anyhow::Result<RunFigures> {
        if !self.args.json {
            eprintln!("bench: {label}");
        }
        let config = ProbeConfig {
            mem_bytes: self.args.mem.bytes(),
            pattern,
            passes: self.args.passes,
            seed: 1,
            verify: false,
            seccomp: self.args.seccomp,
        };
        probe_figures(&config, plan, self.scope, 1, 1)
    }

    /// Every distance's row: the loopback one first (what the relay or
    /// netem adds shows against it), then one per delay.
    fn distances(&self, store: &mut Store, floor: Option<u64>) -> anyhow::Result<Vec<Distance>> {
        let mut rows = Vec::new();
        match store {
            Store::Remote(url, _) => rows.push(self.distance(url, "remote", None, floor)?),
            Store::Relay {
                server: s, relays, ..
            } => {
                rows.push(self.distance(&s.url(), "loopback", None, floor)?);
                for r in relays.iter() {
                    let url = format!("redis://{}", r.addr());
                    let d = r.delay().as_micros() as u64;
                    rows.push(self.distance(&url, "relay", Some(d), floor)?);
                }
            }
            Store::Netem {
                loopback,
                server,
                net,
                ..
            } => {
                rows.push(self.distance(&loopback.url(), "loopback", None, floor)?);
                for &d in &self.args.delays_us {
                    net.set_delay(Duration::from_micros(d))
                        .context("--distance netem: the netem qdisc")?;
                    rows.push(self.distance(&server.url(), "netem", Some(d), floor)?);
                }
            }
        }
        Ok(rows)
    }

    /// The three runs and the `GET` timing at one distance (`url` reaches
    /// the store through it).
    fn distance(
        &self,
        url: &str,
        path: &str,
        delay_us: Option<u64>,
        floor: Option<u64>,
    ) -> anyhow::Result<Distance> {
        let at = label(path, delay_us);
        let (get_p50, get_p99, get_hot_p50) = get_round_trips(url, self.args.gets)?;
        let label = |w: &str| format!("redis {w}, {at}");
        let random = self.run(&label("random"), Pattern::Random, &self.plan(url, 0))?;
        let sequential = self.run(&label("sequential"), Pattern::Seq, &self.plan(url, 0))?;
        let sequential_prefetch = self.run(
            &label(&format!("sequential, prefetch {}", self.args.prefetch)),
            Pattern::Seq,
            &self.plan(url, self.args.prefetch),
        )?;
        let bound = floor.map(|f| f + get_p50);
        Ok(Distance {
            path: path.to_string(),
            delay_us,
            emulated: delay_us.is_some(),
            get_p50_ns: Some(get_p50),
            get_p99_ns: Some(get_p99),
            get_hot_p50_ns: Some(get_hot_p50),
            handler_store_p50_ns: random.handler_store_p50_ns,
            bound_p50_ns: bound,
            swap_in_bound_ratio: ratio(
                random.fault_p50_ns.map(|v| v as f64),
                bound.map(|v| v as f64),
            ),
            prefetch_throughput_ratio: ratio(
                sequential_prefetch.accesses_per_sec,
                sequential.accesses_per_sec,
            ),
            random,
            sequential,
            sequential_prefetch,
        })
    }
}

/// How a distance is named in the output.
fn label(path: &str, delay_us: Option<u64>) -> String {
    match (path, delay_us) {
        ("relay", Some(d)) => format!("{d} µs one way (emulated)"),
        ("netem", Some(d)) => format!("{d} µs one way (emulated, netem)"),
        ("loopback", _) => "loopback, no relay".into(),
        _ => "remote (real)".into(),
    }
}

/// The private server's address, for the relays.
fn server_addr(server: &RedisServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

/// Runs the benchmark.
pub fn bench(args: &FarMemoryOptions, scope: &SignalScope) -> anyhow::Result<FarMemoryBench> {
    validate(args)?;
    let mode = DistanceMode::parse(&args.distance)?;
    // The servers, the relays and the namespace are made before the probe's
    // CPU is chosen, so that the servers do not inherit it: a remote store
    // has its own.
    let (mut store, note) = match &args.store_url {
        Some(url) => (
            Store::Remote(url.clone(), remote_url(url)?),
            Some("--store-url: the distance is real, nothing is added".to_string()),
        ),
        None => {
            let (mode, note) = resolve(mode);
            (private_store(mode, &args.delays_us)?, note)
        }
    };
    if let Some(n) = &note {
        eprintln!("bench: distance {}: {n}", store.kind());
    }
    let cpu = crate::host_swap::pin_chosen_cpu(args.cpu.as_deref())?;
    let b = Bench { args, scope };
    let floor_plan = SwapPlan::Floor;
    if !args.json {
        eprintln!("bench: the userfaultfd floor");
    }
    let floor = b.run("floor, random", Pattern::Random, &floor_plan)?;
    let distances = b.distances(&mut store, floor.fault_p50_ns)?;
    let (store_shown, kind) = (store.describe(), store.kind());
    drop(store);
    let worst = distances
        .iter()
        .filter_map(|d| d.swap_in_bound_ratio)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    Ok(FarMemoryBench {
        mem_bytes: args.mem.bytes(),
        limit_bytes: args.limit.bytes(),
        passes: args.passes,
        prefetch: args.prefetch,
        gets: args.gets,
        store: store_shown,
        distance: kind.to_string(),
        distance_note: note,
        cpu,
        floor_p50_ns: floor.fault_p50_ns,
        floor_p99_ns: floor.fault_p99_ns,
        distances,
        worst_swap_in_bound_ratio: worst,
    })
}

/// The table.
pub fn render_text(b: &FarMemoryBench) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "far-memory bench: test RAM {}, limit {}, {} passes (figures from pass 2 on), store: {}, checksums on, clock",
        ByteSize(b.mem_bytes),
        ByteSize(b.limit_bytes),
        b.passes,
        b.store
    );
    let how = match b.distance.as_str() {
        "netem" => "emulated: a network namespace, a veth pair, tc netem on both ends",
        "relay" => "emulated: a userspace delay relay",
        _ => "real",
    };
    let _ = writeln!(s, "distance: {how}");
    if let Some(n) = &b.distance_note {
        let _ = writeln!(s, "  ({n})");
    }
    let _ = writeln!(
        s,
        "userfaultfd floor (random): p50 {}, p99 {}\n",
        opt(b.floor_p50_ns, fmt_ns),
        opt(b.floor_p99_ns, fmt_ns)
    );
    let row = |cells: [String; 13]| {
        let [a, rest @ ..] = cells;
        let rest: Vec<String> = rest.iter().map(|c| format!("{c:>10}")).collect();
        format!("{a:<32} {}", rest.join(" "))
    };
    let h = |v: &str| v.to_string();
    let _ = writeln!(
        s,
        "{}",
        row([
            h("distance"),
            h("GET p50"),
            h("GET p99"),
            h("GET hot"),
            h("floor+GET"),
            h("swap-in"),
            h("p99"),
            h("handler"),
            h("÷bound"),
            h(""),
            h("seq acc/s"),
            h("prefetch"),
            h("×"),
        ])
    );
    for d in &b.distances {
        let rate = |r: &RunFigures| opt(r.accesses_per_sec, |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "{}",
            row([
                label(&d.path, d.delay_us),
                opt(d.get_p50_ns, fmt_ns),
                opt(d.get_p99_ns, fmt_ns),
                opt(d.get_hot_p50_ns, fmt_ns),
                opt(d.bound_p50_ns, fmt_ns),
                opt(d.random.fault_p50_ns, fmt_ns),
                opt(d.random.fault_p99_ns, fmt_ns),
                opt(d.handler_store_p50_ns, fmt_ns),
                opt(d.swap_in_bound_ratio, |v| format!("{v:.2}")),
                verdict(d.swap_in_bound_ratio, |v| v <= BAR).to_string(),
                rate(&d.sequential),
                rate(&d.sequential_prefetch),
                opt(d.prefetch_throughput_ratio, |v| format!("{v:.2}")),
            ])
        );
        for (w, r) in [
            ("random", &d.random),
            ("sequential", &d.sequential),
            ("sequential prefetch", &d.sequential_prefetch),
        ] {
            if let Some(e) = &r.error {
                let _ = writeln!(s, "  {w} failed: {e}");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nbar: random store swap-in p50 ≤ {BAR} × (floor + GET round trip) at every distance: {}",
        verdict(b.worst_swap_in_bound_ratio, |v| v <= BAR)
    );
    s
}

/// Run `swaplab bench far-memory`.
pub fn run(args: &FarMemoryOptions) -> anyhow::Result<()> {
    validate(args)?;
    let scope = SignalScope::new().context("watching for Ctrl-C")?;
    let b = bench(args, &scope)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        print!("{}", render_text(&b));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FarMemoryOptions {
        FarMemoryOptions {
            mem: ByteSize(16 << 20),
            limit: ByteSize(4 << 20),
            passes: 2,
            delays_us: vec![0, 50],
            gets: 100,
            prefetch: 16,
            store_url: None,
            cpu: None,
            json: true,
            seccomp: true,
            distance: "auto".into(),
        }
    }

    #[test]
    fn bad_options_are_refused_naming_the_flag() {
        assert!(validate(&options()).is_ok());
        type Breaks = fn(&mut FarMemoryOptions);
        let cases: [(&str, Breaks); 10] = [
            ("--distance", |o| o.distance = "bogus".into()),
            ("--distance", |o| o.distance = "x".repeat(5000)),
            ("--limit", |o| o.limit = o.mem),
            ("--passes", |o| o.passes = 1),
            ("--delays-us", |o| o.delays_us.clear()),
            ("--delays-us", |o| o.delays_us = vec![1_000_000]),
            ("--gets", |o| o.gets = 0),
            ("--prefetch", |o| o.prefetch = 0),
            ("--store-url", |o| {
                o.store_url = Some("redis://a:1,redis://b:2".into())
            }),
            ("--store-url", |o| o.store_url = Some("http://a:1".into())),
        ];
        for (flag, break_it) in cases {
            let mut o = options();
            break_it(&mut o);
            let e = validate(&o).unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            remote_url("redis://u:secret@h:1/2").unwrap(),
            "redis://h:1/2"
        );
        assert_eq!(remote_url("redis://:secret@h:1").unwrap(), "redis://h:1");
        assert_eq!(remote_url("redis://h:1").unwrap(), "redis://h:1");
        let e = remote_url("redis://u:secret@h:1,redis://h:2").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
