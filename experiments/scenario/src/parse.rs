//! Scenario and matrix files → [`Scenario`] and [`Matrix`] (schema in the module doc).

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use workloads::probe::Pattern;

use super::reader::{Item, Layer, Section};
use super::source::{did_you_mean, Source};
use crate::bounds;
use crate::model::{
    BalloonConfig, BalloonPolicy, GuestConfig, HostConfig, HostSwapper, Matrix, Mitigation,
    PolicyKind, Pos, Scenario, ScenarioError, StoreChoice, WorkloadConfig, WorkloadKind,
};
use base::ByteSize;

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "repetitions",
    "timeout_s",
    "quick",
    "guest",
    "host",
    "balloon",
    "workload",
];
const DEFAULT_KEYS: &[&str] = &[
    "repetitions",
    "timeout_s",
    "quick",
    "guest",
    "host",
    "balloon",
    "workload",
];
const GUEST_KEYS: &[&str] = &["mem", "cpus", "swap", "kernel"];
const HOST_KEYS: &[&str] = &[
    "swapper",
    "limit",
    "store",
    "store_url",
    "policy",
    "prefetch",
    "mitigations",
];
const BALLOON_KEYS: &[&str] = &["policy", "target", "period_s", "stats_interval_ms"];
const WORKLOAD_KEYS: &[&str] = &[
    "kind",
    "mb",
    "pattern",
    "passes",
    "seed",
    "write_ratio",
    "disk_read_mb",
    "disk_cache_mb",
    "duration_s",
    "command",
    "metric",
    "app",
];
const MATRIX_KEYS: &[&str] = &["description", "defaults", "scenario"];

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Defaults for keys nobody sets.
const DEFAULT_REPETITIONS: u64 = 3;
const DEFAULT_TIMEOUT_S: u64 = 600;
const DEFAULT_GUEST_MEM: u64 = 256 * MIB;
const DEFAULT_STATS_INTERVAL_MS: u64 = 1000;
const DEFAULT_CHURN_PERIOD_S: u32 = 10;

/// Parses TOML, turning a syntax error into a located diagnostic.
fn parse_toml(src: &Source) -> Result<Spanned<DeTable<'_>>, ScenarioError> {
    DeTable::parse(src.text()).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        ScenarioError::Syntax(src.diag(at..at, None, e.message().trim_end().to_string()))
    })
}

/// Checks the keys of a scenario table and its four sub-tables.
fn check_all_keys(root: &Section<'_, '_>, top: &[&str]) -> Result<(), ScenarioError> {
    root.check_keys(top)?;
    for (name, keys) in [
        ("guest", GUEST_KEYS),
        ("host", HOST_KEYS),
        ("balloon", BALLOON_KEYS),
        ("workload", WORKLOAD_KEYS),
    ] {
        root.sub(name)?.check_keys(keys)?;
    }
    Ok(())
}

/// Records where `item` came from.
fn note(origin: &mut BTreeMap<String, Pos>, item: &Item<'_, '_>) {
    origin.insert(item.key.clone(), item.pos());
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

/// Builds one scenario from `root` (its own table first, then defaults) and validates it.
fn build(root: &Section<'_, '_>) -> Result<Scenario, ScenarioError> {
    check_all_keys(root, TOP_KEYS)?;
    let own = *root.own().expect("a scenario always has its own layer");
    let mut origin = BTreeMap::new();
    origin.insert(String::new(), own.src.pos(own.at));

    let Some((name, item)) = root.str("name")? else {
        return Err(own.src.schema(
            own.at..own.at,
            Some("name"),
            "missing key \"name\" (every scenario needs a name, e.g. name = \"guest-swap\")"
                .to_string(),
        ));
    };
    if !valid_name(name) {
        return Err(item.error(format_args!(
            "{name:?} is not a valid name (lower-case letters, digits, '-' and '_', \
             starting with a letter or digit, at most 64 characters)"
        )));
    }
    note(&mut origin, &item);
    let name = name.to_string();
    let description = root.str("description")?.map_or("", |(d, _)| d).to_string();

    let mut uint = |sec: &Section<'_, '_>, key, range, default: u64| {
        Ok::<u64, ScenarioError>(match sec.uint(key, range)? {
            Some((v, item)) => {
                note(&mut origin, &item);
                v
            }
            None => default,
        })
    };
    let repetitions = uint(
        root,
        "repetitions",
        bounds::REPETITIONS,
        DEFAULT_REPETITIONS,
    )? as u32;
    let timeout_s = uint(root, "timeout_s", bounds::TIMEOUT_S, DEFAULT_TIMEOUT_S)?;
    let quick = root.boolean("quick")?;

    let g = root.sub("guest")?;
    let cpus = uint(&g, "cpus", bounds::CPUS, 1)? as u32;
    let w = root.sub("workload")?;
    let passes = uint(&w, "passes", bounds::PASSES, 1)? as u32;
    let seed = uint(&w, "seed", 0..=u64::MAX, 1)?;
    let disk_read_mb = uint(&w, "disk_read_mb", 0..=64 * 1024, 0)?;
    let disk_cache_mb = uint(&w, "disk_cache_mb", 0..=64 * 1024, 0)?;
    let duration_s = uint(&w, "duration_s", 0..=86_400, 0)?;
    let b = root.sub("balloon")?;
    let stats_interval_ms = uint(
        &b,
        "stats_interval_ms",
        0..=60_000,
        DEFAULT_STATS_INTERVAL_MS,
    )?;
    let h = root.sub("host")?;
    let prefetch = uint(&h, "prefetch", 0..=256, 0)? as u32;
    let write_ratio = match w.fraction("write_ratio")? {
        Some((v, item)) => {
            note(&mut origin, &item);
            v
        }
        None => 1.0,
    };
    let (kind, command, metric, app) = program(&w, &mut origin)?;
    let mb = match w.uint("mb", bounds::WORKLOAD_MB)? {
        Some((v, item)) => {
            note(&mut origin, &item);
            v
        }
        // A command's working set is its own business.
        None if kind == WorkloadKind::Command => 0,
        // An application's size has its default.
        None if kind == WorkloadKind::App => app.map_or(0, |a| a.default_mb),
        None => {
            let at = w.own().map_or(own.at, |l| l.at);
            return Err(own.src.schema(
                at..at,
                Some("workload.mb"),
                "workload.mb: missing (the working-set size in MiB, e.g. mb = 128)".to_string(),
            ));
        }
    };

    if (1..100).contains(&stats_interval_ms) {
        let item = b.get("stats_interval_ms").expect("value came from here");
        return Err(item.error(format_args!(
            "{stats_interval_ms} ms is too often (0 for no statistics, or 100 to 60000)"
        )));
    }

    let guest = GuestConfig {
        mem: size_or(&g, "mem", bounds::GUEST_MEM, &mut origin)?
            .unwrap_or(ByteSize(DEFAULT_GUEST_MEM)),
        cpus,
        swap: size_or(&g, "swap", bounds::GUEST_SWAP, &mut origin)?,
        root_disk: matches!(kind, WorkloadKind::Command | WorkloadKind::App),
        kernel: guest_kernel(&g, &mut origin)?,
    };
    let host = host(&h, prefetch, &mut origin)?;
    let balloon = BalloonConfig {
        policy: balloon_policy(&b, &mut origin)?,
        stats_interval_ms: stats_interval_ms as u32,
    };
    let workload = WorkloadConfig {
        kind,
        mb,
        pattern: match w.parsed("pattern", str::parse::<Pattern>)? {
            Some((p, item)) => {
                note(&mut origin, &item);
                p
            }
            None => Pattern::Seq,
        },
        passes,
        seed,
        write_ratio,
        disk_read_mb,
        disk_cache_mb,
        duration_s,
        command,
        metric,
        app: app.map(|a| a.name.to_string()),
    };
    let quick = match quick {
        Some((b, item)) => {
            note(&mut origin, &item);
            b
        }
        None => true,
    };
    let s = Scenario {
        name,
        description,
        repetitions,
        timeout_s,
        quick,
        guest,
        host,
        balloon,
        workload,
        origin,
    };
    s.validate()?;
    Ok(s)
}

/// `guest.kernel`: the guest kernel's Debian package, `NAME[@SUITE]`.
fn guest_kernel(
    g: &Section<'_, '_>,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<Option<String>, ScenarioError> {
    let Some((spec, item)) = g.str("kernel")? else {
        return Ok(None);
    };
    workloads::image::kernel::parse_package_spec(spec).map_err(|e| item.error(e))?;
    note(origin, &item);
    Ok(Some(spec.to_string()))
}

/// What the workload runs: its kind, and for a command its command and
/// metric, for an application the application (an unknown name is an error).
#[allow(clippy::type_complexity)]
fn program(
    w: &Section<'_, '_>,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<
    (
        WorkloadKind,
        Option<String>,
        Option<String>,
        Option<&'static workloads::apps::App>,
    ),
    ScenarioError,
> {
    let kind = choice(
        w,
        "kind",
        &[
            ("touch", WorkloadKind::Touch),
            ("integrity", WorkloadKind::Integrity),
            ("command", WorkloadKind::Command),
            ("app", WorkloadKind::App),
        ],
        origin,
    )?
    .unwrap_or(WorkloadKind::Touch);
    let command = text(w, "command", bounds::COMMAND_BYTES, origin)?;
    let metric = text(w, "metric", bounds::METRIC_BYTES, origin)?;
    let app = match w.str("app")? {
        Some((name, item)) => match workloads::apps::find(name) {
            Some(a) => {
                note(origin, &item);
                Some(a)
            }
            None => {
                return Err(item.error(format_args!(
                    "unknown application {name:?} (known: {})",
                    workloads::apps::names().join(", ")
                )))
            }
        },
        None => None,
    };
    Ok((kind, command, metric, app))
}

/// A string of at most `max` bytes, if set.
fn text(
    sec: &Section<'_, '_>,
    key: &str,
    max: usize,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<Option<String>, ScenarioError> {
    let Some((v, item)) = sec.str(key)? else {
        return Ok(None);
    };
    if v.len() > max {
        return Err(item.error(format_args!("{} bytes, at most {max}", v.len())));
    }
    note(origin, &item);
    Ok(Some(v.to_string()))
}

fn size_or(
    sec: &Section<'_, '_>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<Option<ByteSize>, ScenarioError> {
    Ok(sec.size(key, range)?.map(|(v, item)| {
        note(origin, &item);
        v
    }))
}

fn choice<T: Copy>(
    sec: &Section<'_, '_>,
    key: &str,
    options: &[(&str, T)],
    origin: &mut BTreeMap<String, Pos>,
) -> Result<Option<T>, ScenarioError> {
    Ok(sec.choice(key, options)?.map(|(v, item)| {
        note(origin, &item);
        v
    }))
}

fn host(
    h: &Section<'_, '_>,
    prefetch: u32,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<Option<HostConfig>, ScenarioError> {
    let Some(limit) = size_or(h, "limit", bounds::HOST_LIMIT, origin)? else {
        // Defaults may carry store/policy for the scenarios that swap; a
        // scenario's own [host] without a limit would silently do nothing.
        if let Some(l) = h.own().filter(|l| !l.table.is_empty()) {
            let first = l
                .table
                .keys()
                .min_by_key(|k| k.span().start)
                .expect("not empty");
            return Err(l.src.invalid(
                l.at..l.at,
                Some("host.limit"),
                format!(
                    "[host] sets {} but no limit: without host.limit there is no host swapping, \
                     so it would have no effect (add limit = \"...\" or remove [host])",
                    first.get_ref()
                ),
            ));
        }
        return Ok(None);
    };
    let swapper = choice(h, "swapper", &HostSwapper::ALL, origin)?.unwrap_or_default();
    let store = choice(
        h,
        "store",
        &[
            ("file", StoreChoice::File),
            ("memory", StoreChoice::Memory),
            ("lz4", StoreChoice::Lz4),
            ("redis", StoreChoice::Redis),
        ],
        origin,
    )?
    .unwrap_or(StoreChoice::Memory);
    let store_url = text(h, "store_url", bounds::STORE_URL_BYTES, origin)?;
    let policy = choice(
        h,
        "policy",
        &[
            ("fifo", PolicyKind::Fifo),
            ("random", PolicyKind::Random),
            ("clock", PolicyKind::Clock),
        ],
        origin,
    )?
    .unwrap_or(PolicyKind::Clock);
    let mut mitigations = Vec::new();
    if let Some((list, item)) = h.str_list("mitigations")? {
        note(origin, &item);
        let names: Vec<&str> = Mitigation::ALL.iter().map(|(n, _)| *n).collect();
        for (name, span) in list {
            let Some(&(_, m)) = Mitigation::ALL.iter().find(|(n, _)| *n == name) else {
                return Err(item.src.schema(
                    span,
                    Some(&item.key),
                    format!(
                        "{}: unknown mitigation {name:?} (known: {}){}",
                        item.key,
                        names.join(", "),
                        did_you_mean(name, &names)
                    ),
                ));
            };
            if mitigations.contains(&m) {
                return Err(item.src.invalid(
                    span,
                    Some(&item.key),
                    format!("{}: {name:?} is listed twice", item.key),
                ));
            }
            mitigations.push(m);
        }
        mitigations.sort();
    }
    Ok(Some(HostConfig {
        swapper,
        limit,
        store,
        store_url,
        policy,
        prefetch,
        mitigations,
    }))
}

#[derive(Clone, Copy, PartialEq)]
enum BalloonKind {
    None,
    Manual,
    Auto,
    Churn,
}

fn balloon_policy(
    b: &Section<'_, '_>,
    origin: &mut BTreeMap<String, Pos>,
) -> Result<BalloonPolicy, ScenarioError> {
    let kind = choice(
        b,
        "policy",
        &[
            ("none", BalloonKind::None),
            ("manual", BalloonKind::Manual),
            ("auto", BalloonKind::Auto),
            ("churn", BalloonKind::Churn),
        ],
        origin,
    )?
    .unwrap_or(BalloonKind::None);
    let target = b.size("target", 0..=64 * GIB)?;
    let period = b.uint("period_s", 1..=3600)?;
    if let Some((_, item)) = &period {
        if kind != BalloonKind::Churn && !item.from_default {
            return Err(item.src.invalid(
                item.key_span.clone(),
                Some("balloon.period_s"),
                "balloon.period_s only applies to policy = \"churn\"".to_string(),
            ));
        }
    }
    let sized = matches!(kind, BalloonKind::Manual | BalloonKind::Churn);
    let name = if kind == BalloonKind::Churn {
        "churn"
    } else {
        "manual"
    };
    match (kind, target) {
        (_, Some((t, item))) if sized => {
            if t.0 == 0 {
                return Err(item.error(format_args!("a {name} balloon of 0 bytes does nothing")));
            }
            note(origin, &item);
            if kind == BalloonKind::Manual {
                return Ok(BalloonPolicy::Manual { target: t });
            }
            let period_s = match period {
                Some((p, item)) => {
                    note(origin, &item);
                    p as u32
                }
                None => DEFAULT_CHURN_PERIOD_S,
            };
            Ok(BalloonPolicy::Churn {
                target: t,
                period_s,
            })
        }
        (_, None) if sized => {
            let item = b.get("policy").expect("policy was read");
            Err(item.src.schema(
                item.key_span.clone(),
                Some("balloon.target"),
                format!(
                    "balloon.target: missing (policy = \"{name}\" needs the balloon size, \
                     e.g. target = \"128M\")"
                ),
            ))
        }
        (_, Some((_, item))) if !item.from_default => Err(item.src.invalid(
            item.key_span.clone(),
            Some("balloon.target"),
            "balloon.target only applies to policy = \"manual\" or \"churn\"".to_string(),
        )),
        (BalloonKind::Auto, _) => Ok(BalloonPolicy::Auto),
        (_, _) => Ok(BalloonPolicy::None),
    }
}

/// Parses a scenario file.
pub fn parse_scenario(src: &Source) -> Result<Scenario, ScenarioError> {
    let doc = parse_toml(src)?;
    let root = Section::root(vec![Layer {
        table: doc.get_ref(),
        src,
        at: 0,
        prefix: "",
        is_default: false,
    }]);
    build(&root)
}

/// Parses a file that is either a matrix or a single scenario (a matrix of one).
/// `resolve` loads the scenario files a matrix refers to (`file = "..."`).
pub fn parse(
    src: &Source,
    resolve: &dyn Fn(&str) -> Result<Source, String>,
) -> Result<Matrix, ScenarioError> {
    let doc = parse_toml(src)?;
    let is_matrix = doc
        .get_ref()
        .keys()
        .any(|k| matches!(k.get_ref().as_ref(), "scenario" | "defaults"));
    if is_matrix {
        return parse_matrix(src, resolve);
    }
    let s = parse_scenario(src)?;
    Ok(Matrix {
        source: src.name().to_string(),
        description: s.description.clone(),
        scenarios: vec![s],
    })
}

/// Parses a matrix file.
pub fn parse_matrix(
    src: &Source,
    resolve: &dyn Fn(&str) -> Result<Source, String>,
) -> Result<Matrix, ScenarioError> {
    let doc = parse_toml(src)?;
    let file = Layer {
        table: doc.get_ref(),
        src,
        at: 0,
        prefix: "",
        is_default: false,
    };
    let top = Section::root(vec![file]);
    top.check_keys(MATRIX_KEYS)?;
    let description = top.str("description")?.map_or("", |(d, _)| d).to_string();
    let defaults = top.sub("defaults")?;
    let defaults: Vec<Layer<'_, '_>> = defaults
        .layers
        .into_iter()
        .map(|l| Layer {
            prefix: "defaults",
            is_default: true,
            ..l
        })
        .collect();
    check_all_keys(&Section::root(defaults.clone()), DEFAULT_KEYS)?;

    let entries = match top.get("scenario") {
        None => &[][..],
        Some(item) => match item.value.get_ref() {
            DeValue::Array(a) => &a[..],
            other => {
                return Err(item.error(format_args!(
                    "expected [[scenario]] tables, found {}",
                    other.type_str()
                )))
            }
        },
    };
    if entries.is_empty() {
        return Err(src.invalid(
            0..0,
            None,
            "a matrix needs at least one [[scenario]]".to_string(),
        ));
    }
    let mut scenarios: Vec<Scenario> = Vec::with_capacity(entries.len());
    for entry in entries {
        let DeValue::Table(t) = entry.get_ref() else {
            return Err(src.schema(
                entry.span(),
                Some("scenario"),
                format!(
                    "scenario: expected a table, found {}",
                    entry.get_ref().type_str()
                ),
            ));
        };
        let own = Layer {
            table: t,
            src,
            at: entry.span().start,
            prefix: "scenario",
            is_default: false,
        };
        let entry_section = Section {
            path: "scenario".to_string(),
            layers: vec![own],
        };
        let s = match entry_section.get("file") {
            Some(item) => reference(t, &item, &defaults, resolve)?,
            None => {
                let mut layers = vec![own];
                layers.extend(defaults.iter().copied());
                build(&Section::root(layers))?
            }
        };
        if let Some(first) = scenarios.iter().find(|o| o.name == s.name) {
            let here = s.origin.get("name").cloned();
            let there = first
                .origin
                .get("name")
                .map_or_else(String::new, |p| format!(" (first at {p})"));
            return Err(ScenarioError::Invalid(crate::model::Diagnostic {
                pos: here,
                key: Some("name".to_string()),
                message: format!("scenario name {:?} is used twice{there}", s.name),
            }));
        }
        scenarios.push(s);
    }
    Ok(Matrix {
        source: src.name().to_string(),
        description,
        scenarios,
    })
}

/// A `[[scenario]]` entry `{ file = "..." }`: loads and builds the file with the defaults.
fn reference(
    entry: &DeTable<'_>,
    item: &Item<'_, '_>,
    defaults: &[Layer<'_, '_>],
    resolve: &dyn Fn(&str) -> Result<Source, String>,
) -> Result<Scenario, ScenarioError> {
    let DeValue::String(path) = item.value.get_ref() else {
        return Err(item.error(format_args!(
            "expected a file name, found {}",
            item.value.get_ref().type_str()
        )));
    };
    if let Some(other) = entry
        .keys()
        .filter(|k| k.get_ref().as_ref() != "file")
        .min_by_key(|k| k.span().start)
    {
        return Err(item.src.schema(
            other.span(),
            Some(&format!("scenario.{}", other.get_ref())),
            format!(
                "a [[scenario]] with file = {path:?} takes no other keys (found \"{}\"): \
                 change the scenario file, or set it for all in [defaults]",
                other.get_ref()
            ),
        ));
    }
    let sub =
        resolve(path).map_err(|why| item.error(format_args!("cannot load {path:?}: {why}")))?;
    let doc = parse_toml(&sub)?;
    let mut layers = vec![Layer {
        table: doc.get_ref(),
        src: &sub,
        at: 0,
        prefix: "",
        is_default: false,
    }];
    layers.extend(defaults.iter().copied());
    build(&Section::root(layers))
}
