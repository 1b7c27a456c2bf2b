//! The command line: [`USAGE`], dispatch to a subcommand ([`run`]), routing results
//! to the result channel ([`run_routed`]) and the program's [`main`].

use std::io::Write;

use crate::error::GuestError;
use crate::{agent, args, balloon_wait, filecheck, info, integrity, output, report, touch};

/// The usage text.
pub const USAGE: &str = "usage: swaplab-guest [--out PATH|-] <command> [flags]
commands:
  info                     memory, CPUs, kernel, uptime
  touch --mb N [--passes P] [--pattern seq|random|zipf[:S]|phase[:K]] [--seed X] [--write-ratio R]
                           access N MiB in a pattern P times (default 2, seq, seed 1, ratio 1),
                           timing each access and checking each page's tag
  integrity --mb N [--rounds R] [--interval-ms M] [--rewrite F] [--seed X]
                           fill N MiB with per-page patterns, verify every byte each round
                           (default 1 round; 0 = until killed), rewriting a fraction F (0.25)
  filecheck --path FILE --mb N [--rounds R] [--rewrite F] [--direct-share D] [--seed X]
                           write an N MiB file of per-page patterns and drop it from the page
                           cache; each round verify it, rewrite a fraction F (0.25) of its pages,
                           a share D (0.5) with O_DIRECT (0: none), verify again (default 4
                           rounds; 0 = until killed)
  report [--interval-ms M] [--count N]
                           vmstat swap/fault counters, meminfo and timestamps per sample
                           (default once; with --interval-ms alone until killed)
  agent [--input PATH]     run commands from PATH (default $SWAPLAB_CHANNEL): start MB [PATTERN]
                           starts touch until stop; stop; quit
  balloon-wait --mb N [--timeout-s S]
                           wait until the balloon holds N MiB (default timeout 120 s)
  help                     this text
results go to --out PATH, else to $SWAPLAB_CHANNEL if set, else to stdout (--out - for stdout)";

/// Run the guest program on `args` (without the program name and `--out`), writing
/// its result lines to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<(), GuestError> {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => return Err(GuestError::Usage("missing command".into())),
    };
    match cmd {
        "info" => {
            if let Some(extra) = rest.first() {
                return Err(GuestError::Usage(format!(
                    "info takes no arguments (got {extra:?})"
                )));
            }
            info::run(out)
        }
        "touch" => touch::run(&touch::TouchArgs::parse(rest)?, out),
        "integrity" => integrity::run(&integrity::IntegrityArgs::parse(rest)?, out),
        "filecheck" => filecheck::run(&filecheck::FileCheckArgs::parse(rest)?, out),
        "report" => report::run(&report::ReportArgs::parse(rest)?, out),
        "agent" => agent::run(rest, out),
        "balloon-wait" => balloon_wait::run(&balloon_wait::BalloonWaitArgs::parse(rest)?, out),
        "help" | "--help" | "-h" => {
            writeln!(out, "{USAGE}").map_err(GuestError::io("writing"))?;
            Ok(())
        }
        other => Err(GuestError::Usage(format!("unknown command {other:?}"))),
    }
}

/// Run on `args` with results going where `--out` / `env_channel` say.
pub fn run_routed(args: &[String], env_channel: Option<String>) -> Result<(), GuestError> {
    let (out_flag, rest) = args::split_out(args)?;
    let help = matches!(
        rest.first().map(String::as_str),
        Some("help" | "--help" | "-h")
    );
    match output::channel_path(out_flag, env_channel).filter(|_| !help) {
        Some(path) => run(&rest, &mut output::open_channel(&path)?),
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let r = run(&rest, &mut out);
            let _ = out.flush();
            r
        }
    }
}

/// The program's `main`: runs [`run_routed`] on the process arguments and
/// `$SWAPLAB_CHANNEL`, and returns the exit status.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    output::install_stop_handler();
    match run_routed(&args, std::env::var(output::CHANNEL_ENV).ok()) {
        Ok(()) => 0,
        Err(e @ GuestError::Usage(_)) => {
            eprintln!("swaplab-guest: {e}\n{USAGE}");
            2
        }
        Err(e) => {
            eprintln!("swaplab-guest: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run_str(args: &[&str]) -> Result<String, GuestError> {
        let mut out = Vec::new();
        run(&strings(args), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(run_str(&[]), Err(GuestError::Usage(_))));
        assert!(matches!(run_str(&["bogus"]), Err(GuestError::Usage(m)) if m.contains("bogus")));
        assert!(matches!(run_str(&["info", "x"]), Err(GuestError::Usage(_))));
        assert!(matches!(
            run_str(&["integrity"]),
            Err(GuestError::Usage(m)) if m.contains("--mb")
        ));
        assert!(matches!(
            run_str(&["filecheck", "--mb", "1"]),
            Err(GuestError::Usage(m)) if m.contains("--path")
        ));
        assert!(matches!(
            run_str(&["filecheck", "--path", "/nonexistent/f", "--mb", "0"]),
            Err(GuestError::Usage(m)) if m.contains("--mb")
        ));
        assert!(matches!(
            run_str(&["report", "--count"]),
            Err(GuestError::Usage(_))
        ));
        let help = run_str(&["help"]).unwrap();
        for c in [
            "touch --mb",
            "integrity --mb",
            "filecheck --path FILE --mb N",
            "report [--interval-ms",
        ] {
            assert!(help.contains(c), "{c}");
        }
    }

    #[test]
    fn info_prints_json_lines_on_this_host() {
        let out = run_str(&["info"]).unwrap();
        let kinds: Vec<String> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
                v["kind"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(kinds, ["meminfo", "cpus", "kernel", "uptime"]);
    }

    #[test]
    fn results_follow_out_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let by_flag = dir.path().join("flag");
        let by_env = dir.path().join("env");
        let env = Some(by_env.display().to_string());
        let flag = format!("--out={}", by_flag.display());
        run_routed(&strings(&["report", &flag, "--count", "1"]), env.clone()).unwrap();
        run_routed(&strings(&["integrity", "--mb", "1"]), env.clone()).unwrap();
        run_routed(
            &strings(&["report", "--count", "2", "--interval-ms", "0"]),
            env,
        )
        .unwrap();
        let kinds = |p: &std::path::Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["kind"].as_str().unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(kinds(&by_flag), ["report"]);
        assert_eq!(
            kinds(&by_env),
            [
                "integrity_start",
                "integrity_round",
                "integrity_done",
                "report",
                "report"
            ]
        );
        assert!(matches!(
            run_routed(&strings(&["info", "--out=/dev/swaplab-missing"]), None),
            Err(GuestError::Io { .. })
        ));
    }
}
