//! README.md's CLI table names every flag the `swaplab` binary accepts.
//!
//! Runs `swaplab <cmd>… --help` for every subcommand and nested subcommand (found in
//! each help's `Commands:` list; `ctl`'s actions are positional words, not
//! subcommands), takes the long flags from the option lines of each help, and checks
//! that each appears in the `## CLI` table's row(s) for that subcommand: rows whose
//! first cell starts with `` `swaplab <cmd> ``. `--help` and `--version` are exempt;
//! hidden (testing/internal) flags are not in the help and need no row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const EXEMPT: &[&str] = &["--help", "--version"];

/// `swaplab <path…> --help`'s output.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_swaplab"))
        .args(path)
        .arg("--help")
        .output()
        .expect("run swaplab");
    assert!(
        out.status.success(),
        "`swaplab {} --help` failed: {}\n{}",
        path.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// The long flags of a help's option lines (`  -v, --verbose`, `      --mem <SIZE>`),
/// not flags its descriptions mention.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|l| {
            let indent = l.len() - l.trim_start().len();
            (1..=6).contains(&indent) && l.trim_start().starts_with('-')
        })
        .filter_map(|l| {
            // The option spec ends where the (short help's) description starts.
            let spec = l.trim_start().split("  ").next().unwrap_or("");
            spec.split([' ', ',', '='])
                .find(|w| w.starts_with("--") && w.len() > 2)
                .map(String::from)
        })
        .collect()
}

/// Every command path (`["bench", "host-swap"]`) with its long flags.
fn commands() -> BTreeMap<Vec<String>, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut queue: Vec<Vec<String>> = subcommands(&help(&[]))
        .into_iter()
        .map(|c| vec![c])
        .collect();
    assert!(queue.len() >= 5, "found only {queue:?} in `swaplab --help`");
    while let Some(path) = queue.pop() {
        let h = help(&path);
        for sub in subcommands(&h) {
            let mut p = path.clone();
            p.push(sub);
            queue.push(p);
        }
        out.insert(path, long_flags(&h));
    }
    out
}

fn readme_path() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    loop {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        if manifest.lines().any(|l| l.trim() == "[workspace]") {
            return dir.join("README.md");
        }
        dir = dir
            .parent()
            .expect("a Cargo.toml with [workspace] above this crate");
    }
}

/// The rows of the first table in README.md's `## CLI` section.
fn cli_rows(readme: &str) -> Vec<&str> {
    readme
        .lines()
        .skip_while(|l| l.trim_end() != "## CLI")
        .skip(1)
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### "))
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect()
}

/// The command words a row documents: `` | `swaplab bench host-swap [--mem …` `` gives
/// `["bench", "host-swap"]`.
fn row_words(row: &str) -> Option<Vec<String>> {
    let rest = row.strip_prefix("| `swaplab ")?;
    let words = rest
        .split([' ', '`'])
        .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .take_while(|w| !w.starts_with('-'))
        .map(String::from)
        .collect();
    Some(words)
}

/// Whether `flag` occurs in `text` as a whole flag (`--store` not in `--store-path`).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let after = text[i + flag.len()..].chars().next();
        let before = text[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn readme_cli_table_names_every_flag() {
    let cmds = commands();
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let rows = cli_rows(&readme);
    assert!(
        !rows.is_empty(),
        "no table under `## CLI` in {}",
        path.display()
    );
    // Each row belongs to the longest command path its words start with.
    let mut text: BTreeMap<&Vec<String>, String> = BTreeMap::new();
    for row in &rows {
        let Some(words) = row_words(row) else {
            continue;
        };
        if let Some(cmd) = cmds
            .keys()
            .filter(|c| words.starts_with(c))
            .max_by_key(|c| c.len())
        {
            text.entry(cmd).or_default().push_str(row);
        }
    }
    let mut missing = Vec::new();
    for (cmd, flags) in &cmds {
        let name = cmd.join(" ");
        let flags: Vec<&String> = flags
            .iter()
            .filter(|f| !EXEMPT.contains(&f.as_str()))
            .collect();
        let Some(row) = text.get(cmd) else {
            if !flags.is_empty() {
                missing.push(format!("{name}: no row (`swaplab {name} …`) for {flags:?}"));
            }
            continue;
        };
        for f in flags {
            if !mentions(row, f) {
                missing.push(format!("{name}: {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} flag(s) of `swaplab … --help` missing from {}'s `## CLI` table (add them to \
         the row of their subcommand):\n  {}",
        missing.len(),
        path.display(),
        missing.join("\n  ")
    );
}

#[test]
fn help_parsing() {
    let h = "Run it\n\nUsage: swaplab x [OPTIONS]\n\nCommands:\n  boot  Boot\n  host-swap  \
             Swap\n  help  Print\n\nOptions:\n      --mem <SIZE>\n          Test RAM; see --other\n  \
             -v, --verbose  Louder, unlike --quiet\n      --env=<NAME>  x\n  -h, --help\n";
    assert_eq!(subcommands(h), ["boot", "host-swap"]);
    let flags: Vec<String> = long_flags(h).into_iter().collect();
    assert_eq!(flags, ["--env", "--help", "--mem", "--verbose"]);
    assert!(mentions("`x [--store file] [--store-path D]`", "--store"));
    assert!(!mentions("`x [--store-path D]`", "--store"));
    assert_eq!(
        row_words("| `swaplab bench host-swap [--mem SIZE]` | x |"),
        Some(vec!["bench".to_string(), "host-swap".to_string()])
    );
    assert_eq!(
        row_words("| `swaplab probe ... --host-limit SIZE` | x |"),
        Some(vec!["probe".to_string()])
    );
    assert_eq!(
        row_words("| `swaplab doctor [--json]` | x |"),
        Some(vec!["doctor".to_string()])
    );
}
