//! The report section "Host-swap anomalies: unmitigated vs mitigated": every
//! scenario with VSwapper's mitigations on (`host.mitigations`) beside the
//! scenario that is the same without them (same guest, workload, host limit,
//! store and policy), with the five anomalies VSwapper named (silent writes,
//! stale reads, false reads, decayed sequentiality, false anonymity), what
//! each mitigation did instead, and the pages and time it all cost. Where a
//! mitigation is on and its anomaly did not go down, the section says so.

use std::fmt::Write as _;

use serde_json::Value;

use super::data::{counters, MatrixResults, ScenarioResults};
use super::kernel_vs_uffd::{counter, median, swapper};
use super::svg::trim_number;
use super::table::cell;

/// Each anomaly: its counter, label, the mitigation that answers it, and the
/// counter of what that mitigation did instead (with its label).
const ANOMALIES: &[(&str, &str, &str, &str, &str)] = &[
    (
        counters::SILENT_WRITES,
        "silent writes",
        "silent-writes",
        "silent_writes_avoided",
        "clean pages dropped without a write",
    ),
    (
        counters::STALE_READS,
        "stale reads",
        "stale-reads",
        "false_reads_avoided",
        "evicted pages a disk read filled without a store read",
    ),
    (
        counters::FALSE_READS,
        "false reads",
        "false-reads",
        "balloon_reported_pages",
        "free pages the guest reported",
    ),
    (
        counters::DECAYED_SEQUENTIALITY,
        "decayed sequentiality",
        "decayed-sequentiality",
        "sequential_store_reads",
        "sequential store reads",
    ),
    (
        counters::FALSE_ANONYMITY,
        "false anonymity",
        "false-anonymity",
        "named_evictions",
        "mirrored pages dropped without a store write",
    ),
];

/// The scenario's mitigations (empty without host swapping).
fn mitigations(sc: &ScenarioResults) -> Vec<String> {
    sc.config
        .get("host")
        .and_then(|h| h.get("mitigations"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// What must agree for two scenarios to be compared: all but the names,
/// repetitions, time limit and the mitigations themselves (and the
/// read-ahead, which `decayed-sequentiality` sets).
fn setup(sc: &ScenarioResults) -> Value {
    let mut s = sc.setup(&["guest", "workload"], &["limit", "store", "policy"]);
    s["swapper"] = swapper(sc).into();
    s
}

/// (unmitigated, mitigated) pairs of the userfaultfd swapper, in matrix order.
pub fn pairs(r: &MatrixResults) -> Vec<(&ScenarioResults, &ScenarioResults)> {
    r.twins(
        |m| !mitigations(m).is_empty(),
        |u| mitigations(u).is_empty(),
        setup,
    )
    .into_iter()
    .filter(|(m, _)| swapper(m) == Some("uffd"))
    .map(|(m, plain)| (plain, m))
    .collect()
}

fn median_counter(sc: &ScenarioResults, key: &str) -> Option<f64> {
    median(sc, |r| r.counters.get(key).map(|&c| c as f64))
}

/// Renders the section (nothing when the matrix has no pair).
pub fn section(out: &mut String, r: &MatrixResults) {
    let pairs = pairs(r);
    if pairs.is_empty() {
        return;
    }
    out.push_str(
        "## Host-swap anomalies: unmitigated vs mitigated\n\nThe five reasons VSwapper \
         (ASPLOS 2014) gives for uncooperative host swapping being slow, counted in a scenario \
         and in the same scenario with the mitigations on, and what each mitigation did \
         instead. Medians over the successful repetitions, range in parentheses. *Silent \
         writes*: store writes of pages unchanged since their store copy. *Stale reads*: store \
         reads of pages a guest disk read then overwrote. *False reads*: store reads of pages \
         the guest then freed or zeroed. *Decayed sequentiality*: sequential guest reads whose \
         store slots were not sequential. *False anonymity*: store writes of pages that held a \
         copy of a disk block the guest had read (its page cache); mitigated, the host drops \
         them and reads them back from the disk (*named* pages).\n\n",
    );
    for (u, m) in pairs {
        pair(out, u, m);
    }
}

fn pair(out: &mut String, u: &ScenarioResults, m: &ScenarioResults) {
    let on = mitigations(m);
    let _ = writeln!(
        out,
        "### `{}` vs `{}`\n\nMitigations: {}.\n\n| anomaly | `{}` | `{}` | the mitigation did instead |\n|---|---|---|---|",
        cell(&u.name),
        cell(&m.name),
        on.join(", "),
        cell(&u.name),
        cell(&m.name)
    );
    let mut shape = Vec::new();
    for &(key, label, mitigation, did, did_label) in ANOMALIES {
        let active = on.iter().any(|x| x == mitigation);
        let instead = if active {
            format!("{} {did_label}", counter(m, did))
        } else {
            "(not on)".to_string()
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {instead} |",
            counter(u, key),
            counter(m, key)
        );
        if let (true, Some(a), Some(b)) = (active, median_counter(u, key), median_counter(m, key)) {
            if a > 0.0 && b >= a {
                shape.push(format!(
                    "{label} did not go down with its mitigation ({} unmitigated, {} mitigated)",
                    trim_number(a),
                    trim_number(b)
                ));
            }
        }
    }
    for (key, label) in [
        ("host_swap_ins_named", "named pages read back from disk"),
        (counters::HOST_EVICTIONS, "host evictions (store writes)"),
        (counters::HOST_SWAP_INS, "host swap-ins (pages)"),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | |",
            counter(u, key),
            counter(m, key)
        );
    }
    let runtime = |s: &ScenarioResults| median(s, |r| Some(r.runtime_s));
    if let (Some(a), Some(b)) = (runtime(u), runtime(m)) {
        if a > 0.0 {
            let _ = writeln!(
                out,
                "\nThe mitigated run took {:.2}× the unmitigated one (median runtimes).",
                b / a
            );
        }
    }
    if shape.is_empty() {
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "\n**Not the published shape:** {}.\n",
            shape.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Environment, Outcome, RunResult};
    use std::collections::BTreeMap;

    fn run(c: &[(&str, u64)]) -> RunResult {
        RunResult {
            repetition: 1,
            outcome: Outcome::Ok,
            runtime_s: 10.0,
            counters: c.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            latency: BTreeMap::new(),
            samples: BTreeMap::new(),
            timeline: Vec::new(),
            metric: None,
        }
    }

    fn scenario(name: &str, mitigations: &[&str], c: &[(&str, u64)]) -> ScenarioResults {
        ScenarioResults {
            name: name.into(),
            description: String::new(),
            config: serde_json::json!({
                "guest": {"mem": "160M"},
                "workload": {"mb": 64},
                "host": {"limit": "96M", "policy": "random", "mitigations": mitigations},
            }),
            runs: vec![run(c)],
            experiment: None,
        }
    }

    fn matrix(s: Vec<ScenarioResults>) -> MatrixResults {
        MatrixResults {
            matrix: "m".into(),
            description: String::new(),
            notes: Vec::new(),
            environment: Environment::default(),
            scenarios: s,
        }
    }

    #[test]
    fn pairs_show_all_five_anomalies_and_say_when_one_did_not_go_down() {
        let plain = scenario(
            "host-swap",
            &[],
            &[
                ("false_anonymity", 900),
                ("silent_writes", 50),
                ("stale_reads", 3),
            ],
        );
        let mitigated = scenario(
            "host-swap-mitigated",
            &["silent-writes", "stale-reads", "false-anonymity"],
            &[
                ("false_anonymity", 0),
                ("named_evictions", 850),
                ("silent_writes", 0),
                ("stale_reads", 7),
            ],
        );
        let mut other = scenario("bigger", &[], &[]);
        other.config["guest"]["mem"] = "1G".into();
        let r = matrix(vec![plain, other, mitigated]);
        let p = pairs(&r);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].0.name.as_str(), p[0].1.name.as_str()),
            ("host-swap", "host-swap-mitigated")
        );
        let mut out = String::new();
        section(&mut out, &r);
        for label in [
            "silent writes",
            "stale reads",
            "false reads",
            "decayed sequentiality",
            "false anonymity",
        ] {
            assert!(out.contains(&format!("| {label} |")), "{label}: {out}");
        }
        assert!(
            out.contains("| false anonymity | 900 | 0 | 850 mirrored pages dropped"),
            "{out}"
        );
        assert!(out.contains("| false reads | — | — | (not on) |"), "{out}");
        assert!(
            out.contains("**Not the published shape:** stale reads did not go down with its mitigation (3 unmitigated, 7 mitigated)"),
            "{out}"
        );
        // Nothing to pair: no section.
        let mut none = String::new();
        section(&mut none, &matrix(vec![scenario("host-swap", &[], &[])]));
        assert!(none.is_empty());
    }
}
