//! The built-in scenario files (`scenarios/` at the repository root), compiled
//! into the binary, and [`load`], which finds a scenario by path or built-in name.

use std::path::Path;

use crate::model::{Matrix, ScenarioError};
use crate::parse::parse;
use crate::source::Source;

/// Built-in files: (name, contents). `default` is the standard matrix.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../../scenarios/default.toml")),
    ("baseline", include_str!("../../../scenarios/baseline.toml")),
    (
        "guest-swap",
        include_str!("../../../scenarios/guest-swap.toml"),
    ),
    (
        "host-swap",
        include_str!("../../../scenarios/host-swap.toml"),
    ),
    (
        "host-swap-mitigated",
        include_str!("../../../scenarios/host-swap-mitigated.toml"),
    ),
    (
        "double-paging",
        include_str!("../../../scenarios/double-paging.toml"),
    ),
    ("balloon", include_str!("../../../scenarios/balloon.toml")),
    ("soak", include_str!("../../../scenarios/soak.toml")),
    ("papers", include_str!("../../../scenarios/papers.toml")),
    (
        "kernel-vs-uffd",
        include_str!("../../../scenarios/kernel-vs-uffd.toml"),
    ),
    (
        "far-memory",
        include_str!("../../../scenarios/far-memory.toml"),
    ),
];

/// The names of the built-in files.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A built-in file by name (`guest-swap`, `guest-swap.toml` or
/// `scenarios/guest-swap.toml`), reported as `scenarios/NAME.toml`.
pub fn builtin(name: &str) -> Option<Source> {
    let name = name.strip_prefix("scenarios/").unwrap_or(name);
    let name = name.strip_suffix(".toml").unwrap_or(name);
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Source::new(format!("scenarios/{n}.toml"), *text))
}

/// Largest scenario or matrix file read (the built-in ones are about 2 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a scenario file: a regular file of at most [`MAX_FILE_BYTES`] of UTF-8
/// (a device, a FIFO or a huge file is refused before it is read).
fn read(path: &Path) -> Result<Source, std::io::Error> {
    use std::io::{Error, ErrorKind, Read};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} KiB", MAX_FILE_BYTES >> 10),
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // A file that grows while it is read is cut off here, not read without end.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))?;
    Ok(Source::new(path.display().to_string(), text))
}

/// Loads what `swaplab run ARG` names: an existing file (a scenario or a
/// matrix, whose `file = "..."` references are read relative to it), else a
/// built-in scenario or matrix (no argument: use `"default"`).
pub fn load(arg: &str) -> Result<Matrix, ScenarioError> {
    let path = Path::new(arg);
    if path.is_file() {
        let src = read(path).map_err(|source| ScenarioError::Io {
            path: arg.to_string(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let resolve = move |name: &str| read(&dir.join(name)).map_err(|e| e.to_string());
        return parse(&src, &resolve);
    }
    if let Some(src) = builtin(arg) {
        let resolve = |name: &str| {
            builtin(name).ok_or_else(|| {
                format!(
                    "no built-in scenario file of that name (built-in: {})",
                    builtin_names().join(", ")
                )
            })
        };
        return parse(&src, &resolve);
    }
    if arg.contains('/') || arg.ends_with(".toml") {
        // Looks like a path: say why it could not be read.
        let source = std::fs::metadata(path).err().unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")
        });
        return Err(ScenarioError::Io {
            path: arg.to_string(),
            source,
        });
    }
    Err(ScenarioError::NotFound {
        name: arg.to_string(),
        known: builtin_names().join(", "),
    })
}
