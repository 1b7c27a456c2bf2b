//! Exit codes and error output shared by the swaplab commands: a usage error exits 2,
//! any other error 1, with its whole cause chain.

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

/// Writes `text` to standard output and flushes it: a full disk or a closed
/// pipe is an error the command reports (exit 1), not a panic as with `print!`.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
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
