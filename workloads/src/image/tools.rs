//! Running the host tools the image builder needs (`xz`, `zstd`, `apt-get`, `cargo`, ...).
//!
//! Every tool is named together with the Debian package that provides it, so a
//! missing tool gives an error that says what to install.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Program name, looked up in `PATH`.
    pub program: &'static str,
    /// Debian package to install when the program is missing.
    pub package: &'static str,
}

/// `xz` (kernel payloads, `.ko.xz` modules).
pub const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
};
/// `zstd` (zstd payloads, `.ko.zst` modules, compressed initramfs).
pub const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};
/// `gzip`.
pub const GZIP: Tool = Tool {
    program: "gzip",
    package: "gzip",
};
/// `bzip2`.
pub const BZIP2: Tool = Tool {
    program: "bzip2",
    package: "bzip2",
};
/// `lz4`.
pub const LZ4: Tool = Tool {
    program: "lz4",
    package: "lz4",
};
/// `lzop`.
pub const LZOP: Tool = Tool {
    program: "lzop",
    package: "lzop",
};
/// `apt-get` (downloading packages).
pub const APT_GET: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
/// `apt-cache` (resolving package names and versions).
pub const APT_CACHE: Tool = Tool {
    program: "apt-cache",
    package: "apt",
};
/// `dpkg-deb` (unpacking `.deb` files).
pub const DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
};
/// `dpkg-query` (versions of installed packages).
pub const DPKG_QUERY: Tool = Tool {
    program: "dpkg-query",
    package: "dpkg",
};

/// Errors from running a host tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not installed.
    #[error("`{program}` not found in PATH: install the Debian package `{package}` (apt-get install {package})")]
    Missing {
        /// Program name.
        program: String,
        /// Debian package that provides it.
        package: String,
    },
    /// The program ran but failed.
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        /// The command line, for the message.
        command: String,
        /// Exit status as text.
        status: String,
        /// The last lines of its standard error.
        stderr: String,
    },
    /// Spawning or talking to the program failed.
    #[error("running `{command}`")]
    Io {
        /// The command line, for the message.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Keep the last few non-empty lines of a tool's stderr, joined with " / ".
fn stderr_tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(4);
    lines[start..].join(" / ")
}

/// Render a command line for error messages.
fn render<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Run `tool` with `args` (in `cwd` if given), feeding it `stdin`, and return its stdout.
///
/// A missing program becomes [`ToolError::Missing`] naming the package; a non-zero
/// exit becomes [`ToolError::Failed`] with the tail of its stderr.
pub fn run<S: AsRef<OsStr>>(
    tool: Tool,
    args: &[S],
    stdin: Option<&[u8]>,
    cwd: Option<&Path>,
) -> Result<Vec<u8>, ToolError> {
    let mut cmd = Command::new(tool.program);
    cmd.args(args);
    run_command(tool, cmd, stdin, cwd)
}

/// Like [`run`] but for a prepared [`Command`] (extra environment, a program path
/// that is not the tool's bare name, ...). `tool` is used for error messages.
pub fn run_command(
    tool: Tool,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    cwd: Option<&Path>,
) -> Result<Vec<u8>, ToolError> {
    let rendered = {
        let args: Vec<&OsStr> = cmd.get_args().collect();
        render(&cmd.get_program().to_string_lossy(), &args)
    };
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing {
                program: tool.program.to_string(),
                package: tool.package.to_string(),
            }
        } else {
            ToolError::Io {
                command: rendered.clone(),
                source: e,
            }
        }
    })?;
    let io_err = |source| ToolError::Io {
        command: rendered.clone(),
        source,
    };
    let output = std::thread::scope(|scope| {
        let feeder = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(scope.spawn(move || {
                // A tool that stops reading early (error, or done) closes the pipe;
                // its exit status then tells what happened.
                match pipe.write_all(data) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            })),
            _ => None,
        };
        let output = child.wait_with_output();
        let fed = feeder.map(|h| h.join().unwrap_or(Ok(())));
        (output, fed)
    });
    let (output, fed) = output;
    let output = output.map_err(io_err)?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            command: rendered,
            status: output.status.to_string(),
            stderr: stderr_tail(&output.stderr),
        });
    }
    if let Some(fed) = fed {
        fed.map_err(io_err)?;
    }
    Ok(output.stdout)
}

/// Like [`run`], returning stdout as trimmed UTF-8 text (lossy).
pub fn run_text<S: AsRef<OsStr>>(tool: Tool, args: &[S]) -> Result<String, ToolError> {
    let out = run(tool, args, None, None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISSING: Tool = Tool {
        program: "swaplab-no-such-tool-xyz",
        package: "swaplab-fake-package",
    };
    const SH: Tool = Tool {
        program: "sh",
        package: "dash",
    };

    #[test]
    fn missing_tool_names_package() {
        let err = run(MISSING, &["--version"], None, None).unwrap_err();
        assert!(matches!(err, ToolError::Missing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("swaplab-fake-package"), "{msg}");
        assert!(msg.contains("swaplab-no-such-tool-xyz"), "{msg}");
    }

    #[test]
    fn stdin_is_fed_and_stdout_returned() {
        let data = vec![b'a'; 1 << 20];
        let out = run(SH, &["-c", "wc -c"], Some(&data), None).unwrap();
        assert_eq!(String::from_utf8_lossy(&out).trim(), "1048576");
    }

    #[test]
    fn failure_reports_status_and_stderr() {
        let err = run(SH, &["-c", "echo boom >&2; exit 3"], None, None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ToolError::Failed { .. }));
        assert!(msg.contains("boom") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn early_exit_with_unread_stdin_is_a_failure_not_a_hang() {
        let data = vec![0u8; 8 << 20];
        let err = run(SH, &["-c", "exit 4"], Some(&data), None).unwrap_err();
        assert!(err.to_string().contains('4'));
    }
}
