//! Re-running a swaplab command inside the sandbox when this host's KVM cannot
//! boot a stock Linux guest, and knowing, inside L1, that we are there.

use std::ffi::OsString;

use crate::host::{self, KvmFlavour};

use super::job::MARKER_ENV;

/// Kernel command-line word that marks L1.
pub const MARKER_CMDLINE: &str = "swaplab.sandbox=1";

/// What reports and the first line of a sandboxed command say.
pub const NOTE: &str =
    "running in the nested sandbox (QEMU TCG L1, kvm_amd): functional, not timing-grade";

/// The `--sandbox` flag.
const FLAG: &str = "--sandbox";

/// Where a command that needs a stock Linux guest runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SandboxMode {
    /// In the sandbox when this host's KVM cannot boot a stock kernel (PVM or no KVM).
    #[default]
    Auto,
    /// Always in the sandbox (unless already in it).
    Always,
    /// Never: here, whatever the KVM flavour.
    Never,
}

impl SandboxMode {
    /// The `--sandbox` word for this mode.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// Errors deciding about the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ReexecError {
    /// The path of the running executable is unknown or gone.
    #[error("cannot find this program's own executable (needed to re-run it in the sandbox)")]
    CurrentExe(#[source] std::io::Error),
    /// The executable was replaced or deleted since it started.
    #[error("this program's executable {0} was deleted since it started (rebuilt?); run it again")]
    ExeDeleted(String),
}

/// Whether this process runs inside the sandbox's L1 (by the environment
/// marker the job sets, or the kernel command line).
pub fn in_sandbox() -> bool {
    if std::env::var_os(MARKER_ENV).is_some_and(|v| v == "1") {
        return true;
    }
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == MARKER_CMDLINE))
}

/// The note for reports, when running in the sandbox.
pub fn environment_note() -> Option<&'static str> {
    in_sandbox().then_some(NOTE)
}

/// Whether a command in `mode` must go to the sandbox, given whether we are in
/// it already and this host's KVM flavour.
pub fn needs_sandbox(mode: SandboxMode, inside: bool, kvm: KvmFlavour) -> bool {
    match mode {
        _ if inside => false,
        SandboxMode::Never => false,
        SandboxMode::Always => true,
        SandboxMode::Auto => kvm != KvmFlavour::Hardware,
    }
}

/// [`needs_sandbox`] for this process and host.
pub fn needs_sandbox_here(mode: SandboxMode) -> bool {
    let inside = in_sandbox();
    if inside || mode != SandboxMode::Auto {
        return needs_sandbox(mode, inside, KvmFlavour::Hardware);
    }
    needs_sandbox(mode, inside, host::kvm_flavour().0)
}

/// The arguments (without `argv[0]`) for the re-run: any `--sandbox X` /
/// `--sandbox=X` before a bare `--` is dropped and `--sandbox=never` is put
/// there instead (before `--`, or at the end).
pub fn reexec_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a);
            rest.extend(it.by_ref());
            break;
        }
        if a == FLAG {
            let _ = it.next();
            continue;
        }
        if a.to_str().is_some_and(|s| s.starts_with("--sandbox=")) {
            continue;
        }
        out.push(a);
    }
    out.push(OsString::from("--sandbox=never"));
    out.extend(rest);
    out
}

/// The `--api-sock` flag of swaplab commands that serve a control socket.
pub const API_SOCK_FLAG: &str = "--api-sock";

/// The PATH of `--api-sock PATH` or `--api-sock=PATH` in `args` (before a
/// bare `--`; the last one wins, as with clap).
pub fn api_sock_arg(args: &[OsString]) -> Option<std::path::PathBuf> {
    let eq = format!("{API_SOCK_FLAG}=");
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == API_SOCK_FLAG {
            found = it.next().map(std::path::PathBuf::from);
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix(eq.as_str())) {
            found = Some(p.into());
        }
    }
    found
}

/// The running executable's path, as L1 sees it (L1's root is the host's).
pub fn current_exe() -> Result<OsString, ReexecError> {
    let exe = std::env::current_exe().map_err(ReexecError::CurrentExe)?;
    let s = exe.to_string_lossy();
    if s.ends_with(" (deleted)") || !exe.is_file() {
        return Err(ReexecError::ExeDeleted(s.into_owned()));
    }
    Ok(exe.into_os_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn args_get_sandbox_never() {
        assert_eq!(
            reexec_args(v(&["boot", "--mem", "512M"])),
            v(&["boot", "--mem", "512M", "--sandbox=never"])
        );
        assert_eq!(
            reexec_args(v(&["boot", "--sandbox", "always", "--cpus", "2"])),
            v(&["boot", "--cpus", "2", "--sandbox=never"])
        );
        assert_eq!(
            reexec_args(v(&["boot", "--sandbox=auto", "--", "x", "--sandbox", "y"])),
            v(&["boot", "--sandbox=never", "--", "x", "--sandbox", "y"])
        );
    }

    #[test]
    fn api_sock_is_found_before_the_command_separator() {
        assert_eq!(api_sock_arg(&v(&["boot", "--mem", "1G"])), None);
        assert_eq!(
            api_sock_arg(&v(&["boot", "--api-sock", "/tmp/a.sock", "--run", "x"])),
            Some("/tmp/a.sock".into())
        );
        assert_eq!(
            api_sock_arg(&v(&["run", "--api-sock=rel.sock"])),
            Some("rel.sock".into())
        );
        assert_eq!(
            api_sock_arg(&v(&["sandbox", "--", "x", "--api-sock", "/no"])),
            None
        );
    }

    #[test]
    fn decision_table() {
        use KvmFlavour::*;
        use SandboxMode::*;
        assert!(needs_sandbox(Auto, false, Pvm));
        assert!(needs_sandbox(Auto, false, None));
        assert!(!needs_sandbox(Auto, false, Hardware));
        assert!(needs_sandbox(Always, false, Hardware));
        assert!(!needs_sandbox(Never, false, Pvm));
        assert!(!needs_sandbox(Always, true, Pvm), "never nest the sandbox");
        assert!(!needs_sandbox(Auto, true, Pvm));
    }
}
