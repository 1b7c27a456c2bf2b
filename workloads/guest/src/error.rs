//! [`GuestError`]: what the guest programs fail with.

/// Errors of the guest program.
#[derive(Debug)]
pub enum GuestError {
    /// Bad command line.
    Usage(String),
    /// Reading a /proc file or writing output failed.
    Io {
        /// What failed.
        what: String,
        /// Why (part of the message: the guest prints one line, not a chain).
        error: std::io::Error,
    },
    /// Memory did not hold what was written to it.
    Integrity(String),
}

// By hand rather than with thiserror: this crate depends on std and libc only
// (see Cargo.toml).
impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) => f.write_str(m),
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Integrity(m) => write!(f, "memory integrity: {m}"),
        }
    }
}

impl std::error::Error for GuestError {}

impl GuestError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestError {
        let what = what.into();
        move |error| GuestError::Io { what, error }
    }
}
