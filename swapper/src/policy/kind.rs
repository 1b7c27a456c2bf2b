//! [`PolicyKind`]: which policy, by name.

use thiserror::Error;

/// Which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// First in, first out.
    Fifo,
    /// Uniform random.
    Random,
    /// Second-chance clock with software reference bits.
    Clock,
}

impl PolicyKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Random => "random",
            Self::Clock => "clock",
        }
    }
}

/// Errors of this module.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Unknown policy name.
    #[error("unknown policy {0:?} (expected fifo, random or clock)")]
    Unknown(String),
}

impl std::str::FromStr for PolicyKind {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fifo" => Ok(Self::Fifo),
            "random" => Ok(Self::Random),
            "clock" => Ok(Self::Clock),
            other => Err(PolicyError::Unknown(other.to_string())),
        }
    }
}
