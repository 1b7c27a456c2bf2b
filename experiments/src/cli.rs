//! Process-level plumbing shared by the subcommands: exit codes and error output.

use std::process::ExitCode;

/// An error in what the user asked for (bad flag value, impossible size, ...).
///
/// `finish` turns it into a one-line message and exit status 2, like a clap error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for returning a [`UsageError`] from a subcommand.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Print a clap error as one line (help and version go out whole) and pick the exit code.
pub fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments")
                .trim();
            // Keep the list of allowed values, when clap gives one, on the same line.
            let hint = rendered
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:"))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("swaplab: {first}{hint}");
            ExitCode::from(2)
        }
    }
}

/// Log to stderr, filtered by `SWAPLAB_LOG` (default: warnings).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWAPLAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Turn a subcommand's result into an exit code, printing the whole cause chain.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    finish_status(result.map(|()| 0))
}

/// [`finish`] for subcommands that choose their own exit status: `Ok(n)` exits
/// with `n`; an error prints its cause chain and exits 2 for usage errors, 1
/// otherwise.
pub fn finish_status(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("swaplab: {}", chain.join(": "));
            ExitCode::from(code)
        }
    }
}
