//! The demo's VM: a child `swaplab demo --serve …` process that boots the guest
//! image (in the nested sandbox when this host needs it) with a balloon, the
//! host swapper, a guest swap disk, the control socket and the guest agent,
//! its output going to a log file so it never touches the terminal.
//!
//! [`VmChild`] stops it when dropped (SIGTERM, then SIGKILL after a grace
//! period), so the VM goes away on every exit path of the demo.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::options::DemoOptions;
use base::ByteSize;
use runner::boot::cmd::BootOptions;

/// The guest command: the agent that starts and stops the workload.
pub const GUEST_COMMAND: &str = "swaplab-guest agent";

/// A running child VM process.
pub struct VmChild {
    child: Child,
    reaped: Option<ExitStatus>,
    /// Where its output goes.
    pub log: PathBuf,
}

/// The child's arguments (after the program name).
pub fn serve_args(args: &DemoOptions, sock: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["demo".into(), "--serve".into()];
    let mut push = |k: &str, val: String| {
        v.push(k.into());
        v.push(val.into());
    };
    push("--mem", args.mem.to_string());
    push("--cpus", args.cpus.to_string());
    push("--guest-swap", args.guest_swap.to_string());
    push("--timeout", args.timeout.to_string());
    push("--host-limits", crate::options::limits_arg(&args.limits()));
    v.push("--api-sock".into());
    v.push(sock.as_os_str().to_owned());
    v.push(format!("--sandbox={}", args.sandbox.name()).into());
    if !args.seccomp {
        v.push("--no-seccomp".into());
    }
    v
}

impl VmChild {
    /// Starts `swaplab demo --serve` for `args`, serving `sock`, output to `log`.
    pub fn spawn(args: &DemoOptions, sock: &Path, log: &Path) -> anyhow::Result<VmChild> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("creating the VM log {}", log.display()))?;
        let err = out.try_clone().context("duplicating the VM log")?;
        let exe = sandbox::reexec::current_exe().context("finding swaplab")?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(exe)
                .args(serve_args(args, sock))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own process group: terminal signals reach the demo, which
                // stops the VM in order.
                .process_group(0)
                .spawn()
                .context("starting the VM process")?
        };
        Ok(VmChild {
            child,
            reaped: None,
            log: log.to_path_buf(),
        })
    }

    /// Its exit status, if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Waits up to `limit` for it to end by itself.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling a child with a deadline (std has no timed wait).
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it: SIGTERM (the sandbox then stops QEMU), SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // The child is not reaped yet (checked just above), so its pid is still ours.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        if self.wait_for(grace).is_none() {
            let _ = self.child.kill();
            self.reaped = self.child.wait().ok();
        }
    }
}

impl Drop for VmChild {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(20));
    }
}

/// The demo's machine, as `swaplab boot` options.
fn boot_options(args: &DemoOptions, sock: &Path) -> anyhow::Result<BootOptions> {
    let boot = BootOptions {
        balloon: true,
        host_limit: Some(ByteSize(args.limits()[0])),
        run: Some(GUEST_COMMAND.into()),
        api_sock: Some(sock.to_path_buf()),
        seccomp: args.seccomp,
        ..BootOptions::guest_image(args.mem, args.cpus, args.timeout, args.sandbox)
    };
    runner::boot::cmd::validate(&boot)?;
    Ok(boot)
}

/// `swaplab demo --serve`: runs the demo's VM until the guest powers off.
pub fn serve(args: &DemoOptions) -> anyhow::Result<u8> {
    // If the demo dies without stopping us, we get SIGTERM (and the sandbox
    // stops QEMU).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let sock = args
        .api_sock
        .clone()
        .ok_or_else(|| runner::cli::usage("--serve needs --api-sock"))?;
    let boot = boot_options(args, &sock)?;
    if sandbox::needs_sandbox_here(args.sandbox) {
        let files = runner::boot::BootFiles::resolve(None, None, None, false)?;
        return runner::boot::cmd::run_in_sandbox(
            &files,
            args.mem.bytes(),
            Duration::from_secs(args.timeout),
        );
    }
    let mut spec = runner::run::boot::scenario(&boot);
    spec.guest.swap = Some(args.guest_swap);
    runner::run::boot::boot_scenario(&boot, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_gets_the_machine_and_the_socket() {
        let args = crate::options::default_options();
        let v: Vec<String> = serve_args(&args, Path::new("/tmp/x.sock"))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = v.join(" ");
        assert!(joined.starts_with("demo --serve --mem 256M"), "{joined}");
        assert!(joined.contains("--host-limits 224M,128M,64M"), "{joined}");
        assert!(joined.contains("--api-sock /tmp/x.sock"), "{joined}");
        assert!(joined.ends_with("--sandbox=auto"), "{joined}");
        let boot = boot_options(&args, Path::new("/tmp/x.sock")).unwrap();
        assert_eq!(boot.host_limit, Some(ByteSize(224 << 20)));
        assert!(boot.balloon);
        assert_eq!(boot.run.as_deref(), Some(GUEST_COMMAND));
    }
}
