//! `swaplab-guest`: the program that runs inside the guest image.
//!
//! Subcommands print JSON lines (one object per line, each with a `kind`) so the
//! host can parse the console output:
//!
//! - `info`: memory (`/proc/meminfo`), CPUs, kernel release, uptime.
//! - `touch --mb N [--passes P] [--pattern seq|random]`: allocate N MiB and
//!   write one byte per page, P times, timing each pass.
//!
//! Only `std` is used here, so the static guest build stays small and fast.
//! Exit status: 0 on success, 1 on a runtime error, 2 on a usage error.

pub mod info;
pub mod json;
pub mod touch;

use std::io::Write;

/// The usage text.
pub const USAGE: &str = "usage: swaplab-guest <command>
commands:
  info                                   memory, CPUs, kernel, uptime as JSON lines
  touch --mb N [--passes P] [--pattern seq|random]
                                         allocate N MiB, write every page P times (default 2)
  help                                   this text";

/// Errors of the guest program.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// Reading a /proc file or writing output failed.
    #[error("{what}: {error}")]
    Io {
        /// What failed.
        what: String,
        /// Why (part of the message: the guest prints one line, not a chain).
        error: std::io::Error,
    },
}

impl GuestError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestError {
        let what = what.into();
        move |error| GuestError::Io { what, error }
    }
}

/// Run the guest program on `args` (without the program name), writing to `out`.
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
        "help" | "--help" | "-h" => {
            writeln!(out, "{USAGE}").map_err(GuestError::io("writing"))?;
            Ok(())
        }
        other => Err(GuestError::Usage(format!("unknown command {other:?}"))),
    }
}

/// The program's `main`: runs [`run`] on the process arguments and returns the exit status.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(&args, &mut out);
    let _ = out.flush();
    match result {
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

    fn run_str(args: &[&str]) -> Result<String, GuestError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        run(&args, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(run_str(&[]), Err(GuestError::Usage(_))));
        assert!(matches!(run_str(&["bogus"]), Err(GuestError::Usage(m)) if m.contains("bogus")));
        assert!(matches!(run_str(&["info", "x"]), Err(GuestError::Usage(_))));
        assert!(run_str(&["help"]).unwrap().contains("touch --mb"));
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
}
