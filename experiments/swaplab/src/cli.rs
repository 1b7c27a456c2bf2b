//! The binary's own plumbing: clap errors as one line, and logging.

use std::process::ExitCode;

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
            // The first line, with the indented lines that continue it (clap's list of
            // missing arguments) joined on.
            let mut lines = rendered.lines().skip_while(|l| l.trim().is_empty());
            let mut first = lines
                .next()
                .unwrap_or("error: invalid arguments")
                .trim()
                .to_string();
            for more in lines.take_while(|l| l.starts_with(' ') && !l.trim().is_empty()) {
                first.push(' ');
                first.push_str(more.trim());
            }
            // Keep the list of allowed values, when clap gives one, on the same line.
            let hint = rendered
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("[possible values:") && !first.contains(*l))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(&first);
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

/// `--no-seccomp`, shared by every subcommand that runs a VMM.
#[derive(clap::Args, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeccompFlag {
    /// Run the VMM's threads (vCPUs, device workers, control socket, host swapper)
    /// without their seccomp filters.
    #[arg(long)]
    pub no_seccomp: bool,
}

impl SeccompFlag {
    /// Whether the filters are on.
    pub fn enabled(self) -> bool {
        !self.no_seccomp
    }
}
