//! The job: the shell script L1's `/init` runs (chrooted into the host's root)
//! to start the caller's command in the caller's directory with the caller's
//! environment. It travels to L1 through QEMU's fw_cfg, so no file is written
//! on the host.
//!
//! The script is run as `sh -c JOB` with an empty environment and the status
//! port open on fd 3 (a virtio port can be opened only once); it exports the
//! variables, changes directory, checks that the command can start (reporting
//! `cannot-start CODE MESSAGE` on fd 3 if not), closes fd 3, runs the helpers
//! in [`Job::setup`] (the KVM keeper) to completion, starts those in
//! [`Job::background`] (the socket-forwarding bridges) and `exec`s the command.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Environment variable set in L1 for the command: the in-sandbox marker.
pub const MARKER_ENV: &str = "SWAPLAB_SANDBOX";

/// Variables passed to L1 by name.
const PASS_NAMES: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "SHELL",
];
/// Variables passed to L1 by prefix.
const PASS_PREFIXES: &[&str] = &["SWAPLAB_", "RUST", "CARGO", "LC_"];

/// Errors building a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No command given.
    #[error("no command given")]
    NoCommand,
    /// The working directory is not absolute.
    #[error("working directory {0} is not an absolute path")]
    RelativeCwd(PathBuf),
    /// A variable name a shell cannot export.
    #[error("environment variable name {0:?} cannot be passed to the sandbox")]
    BadEnvName(OsString),
}

/// What to run in L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Absolute working directory (a host path; L1's root is the host's root).
    pub cwd: PathBuf,
    /// The whole environment of the command (plus [`MARKER_ENV`], added by [`Job::script`]).
    pub env: Vec<(OsString, OsString)>,
    /// Commands run to completion before the command and the background
    /// ones (same directory and environment, stdin from `/dev/null`, output
    /// to the command's stderr); one that fails has said why there, and the
    /// command still runs. A helper that must outlive its setup (the KVM
    /// keeper) forks and leaves the child holding what it set up.
    pub setup: Vec<Vec<OsString>>,
    /// Commands started in the background just before the command (same
    /// directory and environment, stdin from `/dev/null`, output to the
    /// command's stderr). They end when L1 powers off.
    pub background: Vec<Vec<OsString>>,
}

/// Whether the host variable `name` is passed to L1 by default.
pub fn passes_by_default(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    PASS_NAMES.contains(&name) || PASS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The default environment for L1: the variables of `vars` that pass by default.
pub fn default_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| passes_by_default(k))
        .collect();
    env.sort();
    env
}

/// Apply a `--env` argument: `NAME=VALUE` sets, `NAME` copies the host's value
/// (or, when the host has none, removes it).
pub fn apply_env_arg(
    env: &mut Vec<(OsString, OsString)>,
    arg: &OsStr,
    host: impl Fn(&OsStr) -> Option<OsString>,
) {
    let bytes = arg.as_bytes();
    let (name, value) = match bytes.iter().position(|&b| b == b'=') {
        Some(i) => (
            OsStr::from_bytes(&bytes[..i]).to_os_string(),
            Some(OsStr::from_bytes(&bytes[i + 1..]).to_os_string()),
        ),
        None => (arg.to_os_string(), host(arg)),
    };
    env.retain(|(k, _)| *k != name);
    if let Some(v) = value {
        env.push((name, v));
    }
}

/// Quote bytes for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn shell_quote(s: &OsStr) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

fn valid_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl Job {
    /// A job for `argv` in `cwd` with `env`.
    pub fn new(
        argv: Vec<OsString>,
        cwd: &Path,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Self, JobError> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(JobError::NoCommand);
        }
        if !cwd.is_absolute() {
            return Err(JobError::RelativeCwd(cwd.to_path_buf()));
        }
        if let Some((k, _)) = env.iter().find(|(k, _)| !valid_name(k)) {
            return Err(JobError::BadEnvName(k.clone()));
        }
        Ok(Job {
            argv,
            cwd: cwd.to_path_buf(),
            env,
            setup: Vec::new(),
            background: Vec::new(),
        })
    }

    /// The shell script (bytes; paths and values need not be UTF-8).
    pub fn script(&self) -> Vec<u8> {
        let mut s: Vec<u8> = Vec::new();
        s.extend_from_slice(
            b"cannot() { printf 'cannot-start %s %s\\n' \"$1\" \"$2\" >&3; exit \"$1\"; }\n",
        );
        for (k, v) in &self.env {
            if k == MARKER_ENV {
                continue;
            }
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            s.extend_from_slice(b"export ");
            s.extend_from_slice(&shell_quote(&kv));
            s.push(b'\n');
        }
        s.extend_from_slice(format!("export {MARKER_ENV}=1\n").as_bytes());
        let cwd = shell_quote(self.cwd.as_os_str());
        s.extend_from_slice(b"cd -- ");
        s.extend_from_slice(&cwd);
        s.extend_from_slice(b" 2>/dev/null || cannot 126 \"cannot change to directory \"");
        s.extend_from_slice(&cwd);
        s.extend_from_slice(b"\" in L1\"\n");
        let prog = shell_quote(&self.argv[0]);
        if self.argv[0].as_bytes().contains(&b'/') {
            s.extend_from_slice(b"p=");
            s.extend_from_slice(&prog);
            s.extend_from_slice(b"\n[ -e \"$p\" ] || cannot 127 \"no such file: $p\"\n");
        } else {
            s.extend_from_slice(b"p=$(command -v -- ");
            s.extend_from_slice(&prog);
            s.extend_from_slice(b") || cannot 127 \"command not found: \"");
            s.extend_from_slice(&prog);
            s.extend_from_slice(b"\" (PATH=$PATH)\"\n");
        }
        s.extend_from_slice(
            b"case $p in /*|*/*) [ -x \"$p\" ] && [ ! -d \"$p\" ] || cannot 126 \"not executable: $p\";; esac\n",
        );
        s.extend_from_slice(b"exec 3>&-\n");
        for argv in self.setup.iter().filter(|a| !a.is_empty()) {
            for a in argv {
                s.extend_from_slice(&shell_quote(a));
                s.push(b' ');
            }
            s.extend_from_slice(b"</dev/null >&2\n");
        }
        for argv in self.background.iter().filter(|a| !a.is_empty()) {
            for a in argv {
                s.extend_from_slice(&shell_quote(a));
                s.push(b' ');
            }
            s.extend_from_slice(b"</dev/null >&2 &\n");
        }
        s.extend_from_slice(b"exec");
        for a in &self.argv {
            s.push(b' ');
            s.extend_from_slice(&shell_quote(a));
        }
        s.push(b'\n');
        s
    }
}

/// Escape a value for a QEMU option list (`,` is written `,,`).
pub fn qemu_opt_escape(value: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn quoting_round_trips_through_sh() {
        let nasty = "a b'c\"d$e`f\\g\nh;|&*?";
        let q = shell_quote(OsStr::new(nasty));
        let mut script = b"printf %s ".to_vec();
        script.extend_from_slice(&q);
        let out = Command::new("sh")
            .arg("-c")
            .arg(OsStr::from_bytes(&script))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), nasty);
    }

    #[test]
    fn env_filter_and_overrides() {
        let host = vec![
            (os("PATH"), os("/bin")),
            (os("SSH_AUTH_SOCK"), os("/x")),
            (os("CARGO_TARGET_DIR"), os("/t")),
            (os("RUST_LOG"), os("debug")),
            (os("SWAPLAB_CACHE"), os("/c")),
        ];
        let mut env = default_env(host);
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["CARGO_TARGET_DIR", "PATH", "RUST_LOG", "SWAPLAB_CACHE"]
        );
        apply_env_arg(&mut env, OsStr::new("FOO=a=b"), |_| None);
        apply_env_arg(&mut env, OsStr::new("PATH"), |_| None);
        apply_env_arg(&mut env, OsStr::new("BAR"), |_| Some(os("host")));
        assert!(env.contains(&(os("FOO"), os("a=b"))));
        assert!(env.contains(&(os("BAR"), os("host"))));
        assert!(!env.iter().any(|(k, _)| k == "PATH"));
    }

    #[test]
    fn rejects_bad_jobs() {
        let cwd = Path::new("/");
        assert!(matches!(
            Job::new(vec![], cwd, vec![]),
            Err(JobError::NoCommand)
        ));
        assert!(matches!(
            Job::new(vec![os("x")], Path::new("rel"), vec![]),
            Err(JobError::RelativeCwd(_))
        ));
        assert!(matches!(
            Job::new(vec![os("x")], cwd, vec![(os("A-B"), os("1"))]),
            Err(JobError::BadEnvName(_))
        ));
    }

    /// Run a job's script on the host the way L1's init does, with a file
    /// standing in for the status port.
    fn run_script(job: &Job, name: &str) -> (i32, String, String, String) {
        let dir =
            std::env::temp_dir().join(format!("swaplab-job-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = dir.join("status");
        let mut script = b"exec 3>\"$1\"\n".to_vec();
        script.extend_from_slice(&job.script());
        let out = Command::new("sh")
            .env_clear()
            .arg("-c")
            .arg(OsStr::from_bytes(&script))
            .arg("swaplab-job")
            .arg(&st)
            .output()
            .unwrap();
        let status = std::fs::read_to_string(&st).unwrap_or_default();
        let _ = std::fs::remove_file(&st);
        let _ = std::fs::remove_dir(&dir);
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            status,
        )
    }

    #[test]
    fn script_sets_env_cwd_and_execs() {
        let env = vec![(os("PATH"), os("/usr/bin:/bin")), (os("X"), os("it's"))];
        let argv = vec![
            os("sh"),
            os("-c"),
            os("echo \"$X|$PWD|$SWAPLAB_SANDBOX|$1\"; [ -e /dev/fd/3 ] && echo fd3-leaked; exit 3"),
            os("zero"),
            os("a b"),
        ];
        let mut job = Job::new(argv, Path::new("/usr"), env).unwrap();
        job.background
            .push(vec![os("sh"), os("-c"), os("echo \"bg $PWD $X\"")]);
        // A failing setup command is told on stderr; the rest still runs,
        // after it.
        job.setup.push(vec![
            os("sh"),
            os("-c"),
            os("echo \"setup $PWD $X\"; exit 1"),
        ]);
        let (code, out, err, st) = run_script(&job, "t1");
        assert_eq!(code, 3);
        assert_eq!(out, "it's|/usr|1|a b\n");
        assert_eq!(st, "");
        // The background command runs in the same directory and environment, its
        // output on stderr (`output()` reads until it, too, has closed stderr).
        assert_eq!(err, "setup /usr it's\nbg /usr it's\n");
    }

    #[test]
    fn script_reports_commands_that_cannot_start() {
        let env = vec![(os("PATH"), os("/usr/bin:/bin"))];
        let job = Job::new(vec![os("no-such-cmd-xyz")], Path::new("/"), env.clone()).unwrap();
        let (code, _, _, st) = run_script(&job, "t2");
        assert_eq!(code, 127);
        assert!(st.starts_with("cannot-start 127 command not found"), "{st}");

        let job = Job::new(vec![os("/etc/passwd")], Path::new("/"), env.clone()).unwrap();
        let (code, _, _, st) = run_script(&job, "t3");
        assert_eq!(code, 126);
        assert!(st.starts_with("cannot-start 126 not executable"), "{st}");

        let job = Job::new(vec![os("./nope")], Path::new("/"), env.clone()).unwrap();
        let (code, _, _, st) = run_script(&job, "t9");
        assert_eq!(code, 127);
        assert!(
            st.starts_with("cannot-start 127 no such file: ./nope"),
            "{st}"
        );

        let job = Job::new(vec![os("true")], Path::new("/nonexistent/dir"), env).unwrap();
        let (code, _, _, st) = run_script(&job, "t4");
        assert_eq!(code, 126);
        assert!(st.contains("cannot change to directory"), "{st}");
    }

    #[test]
    fn qemu_escaping_doubles_commas() {
        assert_eq!(qemu_opt_escape(b"a,b,,c"), os("a,,b,,,,c"));
    }
}
