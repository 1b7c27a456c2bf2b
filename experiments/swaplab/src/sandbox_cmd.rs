//! `swaplab sandbox`: the command line of the nested sandbox.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base::ByteSize;
use sandbox::forward::{self, ForwardSocket};
use sandbox::{
    initramfs, job, prepare, run_in_sandbox, SandboxConfig, SandboxError, SandboxMode,
    DEFAULT_CPUS, DEFAULT_TIMEOUT, ENV_FORWARD_SOCK_PREFIX,
};

/// `swaplab sandbox`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The command runs as root in L1, chrooted into this host's / (9p, read-write), in the \
current directory, with stdin from /dev/null. Its stdout and stderr stream back \
live; swaplab exits with its status (126/127 if it cannot start, 1 if L1 fails).")]
pub struct SandboxArgs {
    /// L1 memory.
    #[arg(long, default_value = "3G")]
    pub mem: ByteSize,
    /// L1 vCPUs.
    #[arg(long, default_value_t = DEFAULT_CPUS)]
    pub cpus: u32,
    /// Kill L1 after this many seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Pass an environment variable: NAME=VALUE, or NAME to copy this
    /// process's value (PATH, HOME, SWAPLAB_*, RUST*, CARGO*, LC_* ... pass by default).
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<OsString>,
    /// Write L1's kernel console to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Add a word to L1's kernel command line (for debugging).
    #[arg(long, value_name = "WORD")]
    pub kernel_arg: Vec<String>,
    /// L1's kernel: `host` (the host's apt sources; bookworm's 6.1 lacks the
    /// userfaultfd features the host swapper needs) or a Debian suite
    /// [default: $SWAPLAB_SANDBOX_KERNEL, else bookworm-backports].
    #[arg(long, value_name = "host|SUITE")]
    pub l1_kernel: Option<String>,
    /// Only make sure L1's kernel and initramfs are in the cache (fetching and
    /// building them if needed), print what L1 would boot, and exit.
    #[arg(long, conflicts_with = "command")]
    pub prepare: bool,
    /// Make HOST_PATH a listening Unix socket on this host whose connections
    /// reach INNER_PATH in L1, where the command must listen (default
    /// /run/swaplab/forward-N.sock, on L1's own tmpfs). The command finds the
    /// inner paths in SWAPLAB_FORWARD_SOCK_0, _1, ... Up to 16 clients at once, each served on its own.
    /// HOST_PATH is removed when the sandbox ends. Repeatable.
    #[arg(long, value_name = "HOST_PATH[=INNER_PATH]")]
    pub forward_socket: Vec<PathBuf>,
    /// Run the L1 side of a forwarded socket (started in L1 by the sandbox itself).
    #[arg(long, value_name = "PORT=INNER_PATH", hide = true, conflicts_with_all = ["command", "prepare"])]
    pub l1_bridge: Option<String>,
    /// Hold idle VMs and L1's tracepoints for L1's life, in a forked child (run in L1 by the sandbox itself before the command; see sandbox::keeper).
    #[arg(long, hide = true, conflicts_with_all = ["command", "prepare", "l1_bridge"])]
    pub l1_hold_kvm: bool,
    /// Print L1's stages with times, and how long it took to boot and to run the command.
    #[arg(short, long)]
    pub verbose: bool,
    /// The command and its arguments (after `--`).
    #[arg(
        last = true,
        required_unless_present_any = ["prepare", "l1_bridge", "l1_hold_kvm"],
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

fn cli_config(
    args: &SandboxArgs,
    env: Vec<(OsString, OsString)>,
) -> Result<SandboxConfig, SandboxError> {
    let kernel = match args
        .l1_kernel
        .clone()
        .or_else(|| std::env::var(initramfs::ENV_KERNEL).ok())
        .filter(|v| !v.is_empty())
    {
        Some(v) => initramfs::parse_kernel_source(&v).ok_or_else(|| {
            SandboxError::Config(format!(
                "L1 kernel {v:?} is neither `host` nor a Debian suite name"
            ))
        })?,
        None => initramfs::default_kernel_source(),
    };
    let cwd = std::env::current_dir().map_err(SandboxError::Cwd)?;
    let mut env = env;
    let mut forwards = Vec::new();
    for (i, a) in args.forward_socket.iter().enumerate() {
        let mut f = forward_arg(a, i);
        f.host = cwd.join(&f.host);
        let name = format!("{ENV_FORWARD_SOCK_PREFIX}{i}");
        env.retain(|(k, _)| *k != *name);
        env.push((name.into(), f.inner.clone().into_os_string()));
        forwards.push(f);
    }
    Ok(SandboxConfig {
        mem: args.mem.0,
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout),
        env: Some(env),
        console_log: args.console_log.clone(),
        kernel_args: args.kernel_arg.clone(),
        kernel,
        forwards,
        verbose: args.verbose,
        liveness: sandbox::liveness_from_env()?,
        ..SandboxConfig::default()
    })
}

/// Run `swaplab sandbox`: the command's exit status, or an error message and
/// 1 (126/127 when the command cannot start).
pub fn main(args: &SandboxArgs) -> ExitCode {
    if args.l1_hold_kvm {
        return match sandbox::keeper::hold() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("swaplab sandbox: cannot hold an idle VM in L1 (guests will patch L1's code as they come and go): {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(spec) = &args.l1_bridge {
        let result = forward::parse_bridge_spec(spec)
            .and_then(|(port, inner)| forward::l1_bridge(&port, &inner));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("swaplab sandbox bridge: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    let mut env = job::default_env(std::env::vars_os());
    for e in &args.env {
        job::apply_env_arg(&mut env, e, |k| std::env::var_os(k));
    }
    if args.prepare {
        return match cli_config(args, env).and_then(|cfg| prepare(&cfg)) {
            Ok(image) => runner::cli::finish(runner::cli::print_out(&format!(
                "L1 kernel {} ({}), initramfs {}{}\n",
                image.kernel_version,
                image.vmlinux.display(),
                image.initramfs.display(),
                if image.built { " (built now)" } else { "" }
            ))),
            Err(e) => failed(&e),
        };
    }
    let result = cli_config(args, env).and_then(|cfg| {
        run_in_sandbox(
            &cfg,
            args.command.clone(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .map(|run| run.exit_code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => failed(&e),
    }
}

/// Reports a sandbox failure; its exit status.
fn failed(e: &SandboxError) -> ExitCode {
    eprintln!("swaplab: sandbox: {}", error_chain(e));
    ExitCode::from(e.exit_code())
}

/// An error and its causes, joined with ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// Where a command that needs a stock Linux guest runs (`--sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxArg {
    /// In the sandbox when this host's KVM cannot boot a stock kernel (PVM or no KVM).
    #[default]
    Auto,
    /// Always in the sandbox (unless already in it).
    Always,
    /// Never: here, whatever the KVM flavour.
    Never,
}

impl From<SandboxArg> for SandboxMode {
    fn from(a: SandboxArg) -> Self {
        match a {
            SandboxArg::Auto => Self::Auto,
            SandboxArg::Always => Self::Always,
            SandboxArg::Never => Self::Never,
        }
    }
}

/// `--sandbox auto|always|never`, for commands to `#[command(flatten)]`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct SandboxFlag {
    /// Where to run the stock Linux guest: auto (in the nested sandbox when this
    /// host's KVM cannot boot a stock kernel), always (in the sandbox), never (here).
    #[arg(long, value_enum, default_value_t = SandboxArg::Auto)]
    pub sandbox: SandboxArg,
}

impl SandboxFlag {
    /// The mode the runners take.
    pub fn mode(self) -> SandboxMode {
        self.sandbox.into()
    }
}

/// Split a `--forward-socket HOST_PATH[=INNER_PATH]` value.
fn forward_arg(arg: &Path, index: usize) -> ForwardSocket {
    use std::os::unix::ffi::OsStrExt;
    let bytes = arg.as_os_str().as_bytes();
    match bytes.iter().position(|&b| b == b'=') {
        Some(i) => ForwardSocket {
            host: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..i])),
            inner: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[i + 1..])),
        },
        None => ForwardSocket {
            host: arg.to_path_buf(),
            inner: forward::default_inner(index),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_arguments_split_at_the_first_equals_sign() {
        assert_eq!(
            forward_arg(Path::new("/h/a.sock"), 2),
            ForwardSocket {
                host: "/h/a.sock".into(),
                inner: "/run/swaplab/forward-2.sock".into()
            }
        );
        assert_eq!(
            forward_arg(Path::new("/h/a.sock=/run/x=y.sock"), 0),
            ForwardSocket {
                host: "/h/a.sock".into(),
                inner: "/run/x=y.sock".into()
            }
        );
    }
}
