//! Cross-field checks: reject scenarios whose runs would measure nothing.

use crate::bounds;
use crate::model::{
    BalloonPolicy, Diagnostic, HostConfig, HostSwapper, Scenario, ScenarioError, StoreChoice,
    WorkloadKind, PRIVATE_STORE_URL,
};
use base::ByteSize;

const MIB: u64 = 1 << 20;

/// Guest RAM the guest OS (kernel, initramfs in RAM, page tables, the guest
/// program) needs besides the working set. Working sets, balloons and host
/// limits are checked against guest RAM minus this.
pub const GUEST_OS_RESERVE: u64 = 64 * MIB;

/// Smallest host limit: below it the guest kernel's own pages thrash and the
/// run measures nothing else.
pub const MIN_HOST_LIMIT: u64 = 32 * MIB;

/// Time a run needs besides a timed workload (boot, last round, report), s.
pub const DURATION_SLACK_S: u64 = 120;

/// Smallest guest RAM.
pub const MIN_GUEST_MEM: u64 = 128 * MIB;

impl Scenario {
    /// An [`ScenarioError::Invalid`] about `key`, located where the key was set
    /// (or where the scenario starts).
    fn invalid(&self, key: &str, message: String) -> ScenarioError {
        let pos = self
            .origin
            .get(key)
            .or_else(|| self.origin.get(""))
            .cloned();
        let message = if pos.is_some() {
            format!("{key}: {message}")
        } else {
            format!("scenario {:?}: {key}: {message}", self.name)
        };
        ScenarioError::Invalid(Diagnostic {
            pos,
            key: Some(key.to_string()),
            message,
        })
    }

    /// Checks that the values make a meaningful run together (see the module
    /// doc). Parsing calls this; call it again for scenarios built in code.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.validate_sizes()?;
        self.validate_workload()?;
        let balloon = self.validate_balloon()?;
        self.validate_fit(balloon)?;
        self.validate_host()
    }

    /// Guest RAM is big enough, and the counts are not zero.
    fn validate_sizes(&self) -> Result<(), ScenarioError> {
        let mem = self.guest.mem.0;
        if mem < MIN_GUEST_MEM {
            return Err(self.invalid(
                "guest.mem",
                format!(
                    "{} is too small (at least {})",
                    self.guest.mem,
                    ByteSize(MIN_GUEST_MEM)
                ),
            ));
        }
        for (key, v, range) in [
            (
                "repetitions",
                u64::from(self.repetitions),
                bounds::REPETITIONS,
            ),
            ("timeout_s", self.timeout_s, bounds::TIMEOUT_S),
            ("guest.cpus", u64::from(self.guest.cpus), bounds::CPUS),
            (
                "workload.mb",
                self.workload.mb,
                // A command need not say how much memory it uses.
                if !self.workload.known_working_set() {
                    0..=*bounds::WORKLOAD_MB.end()
                } else {
                    bounds::WORKLOAD_MB
                },
            ),
            (
                "workload.passes",
                u64::from(self.workload.passes),
                bounds::PASSES,
            ),
        ] {
            if !range.contains(&v) {
                return Err(self.invalid(
                    key,
                    format!("{v} is out of range ({}..={})", range.start(), range.end()),
                ));
            }
        }
        let sizes = [
            ("guest.mem", Some(self.guest.mem), bounds::GUEST_MEM),
            ("guest.swap", self.guest.swap, bounds::GUEST_SWAP),
            (
                "host.limit",
                self.host.as_ref().map(|h| h.limit),
                bounds::HOST_LIMIT,
            ),
        ];
        for (key, v, range) in sizes {
            if let Some(v) = v.filter(|v| !range.contains(&v.0)) {
                return Err(self.invalid(
                    key,
                    format!(
                        "{v} is out of range ({}..={})",
                        ByteSize(*range.start()),
                        ByteSize(*range.end())
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `workload.command` and `workload.metric` come with the command
    /// workload and only with it; the command is a non-empty line the guest
    /// can run, the metric a regular expression that compiles.
    fn validate_command(&self) -> Result<(), ScenarioError> {
        let w = &self.workload;
        if w.kind != WorkloadKind::App && w.app.is_some() {
            return Err(self.invalid(
                "workload.app",
                "only the app workload takes it (set kind = \"app\")".to_string(),
            ));
        }
        if w.kind != WorkloadKind::Command {
            for (key, set) in [
                ("workload.command", w.command.is_some()),
                ("workload.metric", w.metric.is_some()),
            ] {
                if set {
                    let why = if w.kind == WorkloadKind::App {
                        "an application has its own command and metric (use kind = \"command\" for your own)"
                    } else {
                        "only the command workload takes it (set kind = \"command\")"
                    };
                    return Err(self.invalid(key, why.to_string()));
                }
            }
        }
        if w.kind == WorkloadKind::App {
            let Some(app) = w.application() else {
                return Err(self.invalid(
                    "workload.app",
                    format!(
                        "missing or unknown: the app workload needs one of {}",
                        workloads::apps::names().join(", ")
                    ),
                ));
            };
            if app.default_mb == 0 && w.mb != 0 {
                return Err(self.invalid(
                    "workload.mb",
                    format!(
                        "{} has no size in MiB (workload.passes sets how much it does)",
                        app.name
                    ),
                ));
            }
            return Ok(());
        }
        if w.kind != WorkloadKind::Command {
            return Ok(());
        }
        match w.command.as_deref() {
            None => {
                return Err(self.invalid(
                    "workload.command",
                    "missing: the command workload needs the command to run, e.g. command = \"sysbench cpu run\"".to_string(),
                ))
            }
            Some(c) if c.trim().is_empty() => {
                return Err(self.invalid("workload.command", "is empty".to_string()))
            }
            Some(c) if c.len() > bounds::COMMAND_BYTES => {
                return Err(self.invalid(
                    "workload.command",
                    format!("{} bytes, at most {}", c.len(), bounds::COMMAND_BYTES),
                ))
            }
            Some(c) if c.contains('\0') => {
                return Err(self.invalid("workload.command", "contains a NUL byte".to_string()))
            }
            Some(_) => {}
        }
        if let Some(m) = &w.metric {
            if m.len() > bounds::METRIC_BYTES {
                return Err(self.invalid(
                    "workload.metric",
                    format!("{} bytes, at most {}", m.len(), bounds::METRIC_BYTES),
                ));
            }
            crate::metric::compile(m).map_err(|e| {
                self.invalid("workload.metric", format!("not a regular expression: {e}"))
            })?;
        }
        Ok(())
    }

    /// The workload's options suit its kind, its time fits in the run's
    /// and what it reads fits on the disk.
    fn validate_workload(&self) -> Result<(), ScenarioError> {
        self.validate_command()?;
        if self.workload.write_ratio < 1.0 && self.workload.kind != WorkloadKind::Touch {
            return Err(self.invalid(
                "workload.write_ratio",
                "only the touch workload reads pages without writing them (remove it or use \
                 kind = \"touch\")"
                    .to_string(),
            ));
        }
        let d = self.workload.duration_s;
        if d > 0 && self.workload.kind != WorkloadKind::Integrity {
            return Err(self.invalid(
                "workload.duration_s",
                "only the integrity workload runs for a time (use kind = \"integrity\", or \
                 workload.passes)"
                    .to_string(),
            ));
        }
        // Boot and the final report take time too.
        if d > 0 && d + DURATION_SLACK_S > self.timeout_s {
            return Err(self.invalid(
                "workload.duration_s",
                format!(
                    "{d} s leaves no time to boot and report within timeout_s = {} (give \
                     timeout_s at least {} s more)",
                    self.timeout_s, DURATION_SLACK_S
                ),
            ));
        }
        let w = &self.workload;
        let disk_read = w
            .disk_read_mb
            .saturating_add(w.disk_cache_mb)
            .saturating_mul(MIB);
        let key = if w.disk_cache_mb > 0 {
            "workload.disk_cache_mb"
        } else {
            "workload.disk_read_mb"
        };
        if disk_read > 0 {
            match self.guest.swap {
                None => {
                    return Err(self.invalid(
                        key,
                        "the guest has no disk to read (set guest.swap)".to_string(),
                    ))
                }
                Some(disk) if disk.0 < disk_read => {
                    return Err(self.invalid(
                        key,
                        format!(
                            "{}{} is more than the guest's {disk} disk (guest.swap)",
                            size(disk_read),
                            if w.disk_cache_mb > 0 {
                                " (disk_read_mb + disk_cache_mb)"
                            } else {
                                ""
                            }
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The balloon's target leaves the guest OS its RAM; the target, bytes.
    fn validate_balloon(&self) -> Result<u64, ScenarioError> {
        let mem = self.guest.mem.0;
        let balloon = match self.balloon.policy {
            BalloonPolicy::Manual { target } | BalloonPolicy::Churn { target, .. } => target.0,
            BalloonPolicy::None | BalloonPolicy::Auto => 0,
        };
        if balloon > 0 && balloon + GUEST_OS_RESERVE > mem {
            return Err(self.invalid(
                "balloon.target",
                format!(
                    "a {} balloon leaves the guest {} of its {}, less than the {} the guest OS \
                     needs",
                    ByteSize(balloon),
                    size(mem.saturating_sub(balloon)),
                    self.guest.mem,
                    ByteSize(GUEST_OS_RESERVE)
                ),
            ));
        }
        Ok(balloon)
    }

    /// The working set fits in guest RAM and swap, besides the guest OS and
    /// a `balloon` of that many bytes.
    fn validate_fit(&self, balloon: u64) -> Result<(), ScenarioError> {
        let Some(ws) = self.workload.memory_bytes() else {
            return Ok(());
        };
        let mem = self.guest.mem.0;
        let swap = self.guest.swap.map_or(0, |s| s.0);
        let room = mem - GUEST_OS_RESERVE - balloon + swap;
        if ws > room {
            let mut sum = format!(
                "{} of guest RAM − {} for the guest OS",
                self.guest.mem,
                ByteSize(GUEST_OS_RESERVE)
            );
            if balloon > 0 {
                sum += &format!(" − {} balloon", ByteSize(balloon));
            }
            if swap > 0 {
                sum += &format!(" + {} of guest swap", ByteSize(swap));
            }
            let swap_note = if swap == 0 {
                ", and the guest has no swap"
            } else {
                ""
            };
            return Err(self.invalid(
                "workload.mb",
                format!(
                    "a {} working set does not fit in the guest: {sum} = {}{swap_note}; the \
                     workload would only be OOM-killed (host swapping cannot help: it gives the \
                     guest no more RAM). Add or grow guest.swap, raise guest.mem or lower \
                     workload.mb",
                    size(ws),
                    size(room)
                ),
            ));
        }
        Ok(())
    }

    /// The host limit makes the host swap (and not thrash), mitigations are
    /// listed once, and the auto balloon has a host limit to react to.
    fn validate_host(&self) -> Result<(), ScenarioError> {
        let mem = self.guest.mem.0;
        let swap = self.guest.swap.map_or(0, |s| s.0);
        let ws = self.workload.bytes();
        match &self.host {
            Some(h) => {
                let limit = h.limit.0;
                if limit >= mem {
                    return Err(self.invalid(
                        "host.limit",
                        format!(
                            "{} is not below guest.mem {}: the host would never swap (remove \
                             [host] for a run without host swapping)",
                            h.limit, self.guest.mem
                        ),
                    ));
                }
                if limit < MIN_HOST_LIMIT {
                    return Err(self.invalid(
                        "host.limit",
                        format!(
                            "{} is below {}: the guest kernel's own pages would thrash and the \
                             run would measure nothing else",
                            h.limit,
                            ByteSize(MIN_HOST_LIMIT)
                        ),
                    ));
                }
                // Without guest swap, the guest touches about its OS and the
                // working set; if that fits, the host has nothing to evict.
                // (Unless the workload does not say what it uses.)
                let known = self.workload.memory_bytes().is_some();
                if swap == 0 && known && ws + GUEST_OS_RESERVE <= limit {
                    return Err(self.invalid(
                        "host.limit",
                        format!(
                            "{} holds the whole {} working set plus {} for the guest OS: the \
                             host would have nothing to swap (lower host.limit or raise \
                             workload.mb)",
                            h.limit,
                            size(ws),
                            ByteSize(GUEST_OS_RESERVE)
                        ),
                    ));
                }
                self.validate_store(h)?;
                if h.swapper == HostSwapper::Kernel {
                    if let Some(m) = h.mitigations.first() {
                        return Err(self.invalid(
                            "host.mitigations",
                            format!(
                                "{:?} is a mitigation of swaplab's userfaultfd swapper; the \
                                 kernel swapper (host.swapper = \"kernel\") has none (remove \
                                 host.mitigations, or use swapper = \"uffd\")",
                                m.name()
                            ),
                        ));
                    }
                    if h.prefetch > 0 {
                        return Err(self.invalid(
                            "host.prefetch",
                            "is the userfaultfd swapper's; the kernel swapper reads ahead \
                             as its own vm.page-cluster says (remove host.prefetch, or use \
                             swapper = \"uffd\")"
                                .to_string(),
                        ));
                    }
                }
                let mut seen = Vec::new();
                for m in &h.mitigations {
                    if seen.contains(m) {
                        return Err(self.invalid(
                            "host.mitigations",
                            format!("{:?} is listed twice", m.name()),
                        ));
                    }
                    seen.push(*m);
                }
            }
            None => {
                if self.balloon.policy == BalloonPolicy::Auto {
                    return Err(self.invalid(
                        "balloon.policy",
                        "\"auto\" inflates the balloon under host memory pressure, but without \
                         host.limit there is none (set host.limit, or use policy = \"manual\")"
                            .to_string(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// `host.store_url` goes with `store = "redis"` (and only with it), names
    /// Redis servers, and the kernel swapper has no Redis store.
    fn validate_store(&self, h: &HostConfig) -> Result<(), ScenarioError> {
        let redis = h.store == StoreChoice::Redis;
        match (&h.store_url, redis) {
            (None, true) => {
                return Err(self.invalid(
                    "host.store_url",
                    "is required with store = \"redis\" (redis://HOST:PORT[/DB], \
                     comma-separated nodes of one Redis Cluster, or \"private\" for a \
                     server of the run's own)"
                        .to_string(),
                ))
            }
            (Some(_), false) => {
                return Err(self.invalid(
                    "host.store_url",
                    "is for store = \"redis\" only (remove it, or set store = \"redis\")"
                        .to_string(),
                ))
            }
            (Some(url), true) if url == PRIVATE_STORE_URL => {}
            (Some(url), true) => {
                let bad = url.split(',').map(str::trim).find(|u| {
                    let rest = u.strip_prefix("redis://").unwrap_or("");
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with(':')
                });
                if let Some(u) = bad {
                    return Err(self.invalid(
                        "host.store_url",
                        format!("{u:?} is not redis://HOST:PORT[/DB] (or \"private\")"),
                    ));
                }
            }
            (None, false) => {}
        }
        if redis && h.swapper == HostSwapper::Kernel {
            return Err(self.invalid(
                "host.store",
                "\"redis\" is the userfaultfd swapper's; the kernel swapper swaps to zram or \
                 a swap file (use swapper = \"uffd\")"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

/// A size for messages: exact when whole, else in MiB with one decimal.
fn size(bytes: u64) -> String {
    if bytes % MIB == 0 || bytes < MIB {
        ByteSize(bytes).to_string()
    } else {
        format!("{:.1}M", bytes as f64 / MIB as f64)
    }
}
