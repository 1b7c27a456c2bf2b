//! Kernel modules: reading `modules.dep`, computing the closure of a set of
//! modules in load order, generating `modules.dep` from the modules' own
//! `.modinfo` (Debian's package ships none; `depmod` writes it at install time),
//! and reading possibly-compressed module files.
//!
//! ```no_run
//! # fn main() -> Result<(), workloads::image::modules::ModulesError> {
//! use std::path::Path;
//! use workloads::image::modules;
//! let dir = Path::new("/root/.cache/swaplab/kernels/linux-image-6.1.0-56-amd64_6.1.192-2/root/lib/modules/6.1.0-56-amd64");
//! for m in modules::closure(dir, &["virtio_blk", "virtio_mmio"])? {
//!     println!("insmod {}", m.rel); // virtio_ring, virtio, virtio_blk, virtio_mmio
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::image::bzimage::Codec;
use crate::image::elf::{Elf, ElfError};
use crate::image::tools::ToolError;

/// Errors from module handling.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `modules.dep` is absent.
    #[error("{0} not found (generate it with modules::generate_modules_dep or depmod -b)")]
    NoModulesDep(PathBuf),
    /// A malformed `modules.dep` line.
    #[error("modules.dep line {line}: {text:?} is not `path: deps...`")]
    BadDepLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A module that `modules.dep` refers to but does not list.
    #[error("module {name:?} is neither in modules.dep nor built in{}", hint(.similar))]
    Unknown {
        /// The requested name.
        name: String,
        /// Names that look similar.
        similar: Vec<String>,
    },
    /// The dependency graph has a cycle.
    #[error("dependency cycle through module {0}")]
    Cycle(String),
    /// A module is not a valid ELF object.
    #[error("{path}: not a kernel module")]
    Elf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfError,
    },
    /// Decompressing a `.ko.xz`/`.ko.zst`/`.ko.gz` failed.
    #[error("decompressing {path}")]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ToolError,
    },
}

fn hint(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", similar.join(", "))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModulesError + '_ {
    move |source| ModulesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Compression suffixes a module file may have, and their codecs.
const COMPRESSED: [(&str, Codec); 3] = [
    (".ko.xz", Codec::Xz),
    (".ko.zst", Codec::Zstd),
    (".ko.gz", Codec::Gzip),
];

/// The canonical module name of a module file path: the file name without
/// `.ko[.xz|.zst|.gz]`, with `-` replaced by `_` (as the kernel does).
pub fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = COMPRESSED
        .iter()
        .find_map(|(suffix, _)| file.strip_suffix(suffix))
        .or_else(|| file.strip_suffix(".ko"))
        .unwrap_or(file);
    normalize(stem)
}

/// `-` and `_` are interchangeable in module names; `_` is canonical.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// One module file, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModulePath {
    /// Canonical name (`virtio_blk`).
    pub name: String,
    /// Path relative to the modules directory, as in `modules.dep`
    /// (`kernel/drivers/block/virtio_blk.ko`).
    pub rel: String,
    /// Absolute path of the file.
    pub path: PathBuf,
}

impl ModulePath {
    /// The compression of the file, judged by its suffix.
    pub fn codec(&self) -> Option<Codec> {
        COMPRESSED
            .iter()
            .find(|(s, _)| self.rel.ends_with(s))
            .map(|&(_, c)| c)
    }

    /// `rel` with any compression suffix dropped (where to put the decompressed file).
    pub fn uncompressed_rel(&self) -> String {
        COMPRESSED
            .iter()
            .find_map(|(s, _)| self.rel.strip_suffix(s).map(|base| format!("{base}.ko")))
            .unwrap_or_else(|| self.rel.clone())
    }

    /// The module's bytes, decompressed if the file is compressed, so that a
    /// plain `insmod` (busybox) can load them.
    pub fn read(&self) -> Result<Vec<u8>, ModulesError> {
        let data = std::fs::read(&self.path).map_err(io_err(&self.path))?;
        match self.codec() {
            None => Ok(data),
            Some(codec) => codec
                .decompress(&data)
                .map_err(|source| ModulesError::Decompress {
                    path: self.path.clone(),
                    source,
                }),
        }
    }
}

/// The parsed `modules.dep`: module path -> the paths it depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleDeps {
    /// Keyed by path relative to the modules directory.
    pub deps: BTreeMap<String, Vec<String>>,
    /// Canonical name -> path.
    by_name: BTreeMap<String, String>,
}

impl ModuleDeps {
    /// Parse the text of a `modules.dep` file (`path: dep dep ...` per line).
    pub fn parse(text: &str) -> Result<Self, ModulesError> {
        let mut out = ModuleDeps::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line
                .split_once(':')
                .ok_or_else(|| ModulesError::BadDepLine {
                    line: i + 1,
                    text: line.to_string(),
                })?;
            let path = path.trim();
            if path.is_empty() || path.contains(char::is_whitespace) {
                return Err(ModulesError::BadDepLine {
                    line: i + 1,
                    text: line.to_string(),
                });
            }
            out.by_name.insert(module_name(path), path.to_string());
            out.deps.insert(
                path.to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            );
        }
        Ok(out)
    }

    /// The path of the module called `name` (`-`/`_` insensitive).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name.get(&normalize(name)).map(String::as_str)
    }

    /// Names that contain `name` (for "did you mean" hints).
    fn similar(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        self.by_name
            .keys()
            .filter(|k| k.contains(&n))
            .take(5)
            .cloned()
            .collect()
    }

    /// Resolve `names` and everything they depend on, in load order (every
    /// module after all of its dependencies; requested order kept otherwise).
    /// Names in `builtin` are skipped: the kernel already has them.
    pub fn closure(
        &self,
        names: &[&str],
        builtin: &BTreeSet<String>,
    ) -> Result<Vec<String>, ModulesError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for name in names {
            let Some(path) = self.path_of(name) else {
                if builtin.contains(&normalize(name)) {
                    continue;
                }
                return Err(ModulesError::Unknown {
                    name: name.to_string(),
                    similar: self.similar(name),
                });
            };
            self.visit(path, &mut order, &mut done, &mut visiting)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        path: &str,
        order: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<(), ModulesError> {
        if done.contains(path) {
            return Ok(());
        }
        if !visiting.insert(path.to_string()) {
            return Err(ModulesError::Cycle(module_name(path)));
        }
        let deps = self.deps.get(path).ok_or_else(|| ModulesError::Unknown {
            name: module_name(path),
            similar: Vec::new(),
        })?;
        // modules.dep lists the deepest dependencies last; visiting them first
        // keeps the order close to what modprobe does.
        for dep in deps.iter().rev() {
            self.visit(dep, order, done, visiting)?;
        }
        visiting.remove(path);
        done.insert(path.to_string());
        order.push(path.to_string());
        Ok(())
    }
}

/// Parse `modules.builtin` (one path per line) into canonical names.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// The modules `names` need, with all their dependencies, in load order, from
/// `modules_dir` (`.../lib/modules/<version>`, holding `modules.dep`).
///
/// Built-in modules (listed in `modules.builtin`) are satisfied without a file.
pub fn closure(modules_dir: &Path, names: &[&str]) -> Result<Vec<ModulePath>, ModulesError> {
    let dep_file = modules_dir.join("modules.dep");
    let text = match std::fs::read_to_string(&dep_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModulesError::NoModulesDep(dep_file))
        }
        Err(e) => return Err(io_err(&dep_file)(e)),
    };
    let deps = ModuleDeps::parse(&text)?;
    let builtin = match std::fs::read_to_string(modules_dir.join("modules.builtin")) {
        Ok(t) => parse_builtin(&t),
        Err(_) => BTreeSet::new(),
    };
    Ok(deps
        .closure(names, &builtin)?
        .into_iter()
        .map(|rel| ModulePath {
            name: module_name(&rel),
            path: modules_dir.join(&rel),
            rel,
        })
        .collect())
}

/// The `depends=` list from a module's `.modinfo` section (canonical names).
pub fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>, ElfError> {
    let elf = Elf::parse(ko)?;
    let Some(info) = elf.section(".modinfo")? else {
        return Ok(Vec::new());
    };
    Ok(info
        .split(|&c| c == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect())
}

fn walk_modules(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ModulesError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            walk_modules(root, &path, out)?;
        } else if ft.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".ko") || COMPRESSED.iter().any(|(s, _)| name.ends_with(s)) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

/// Write `modules.dep` for every module under `modules_dir/kernel`, from each
/// module's `.modinfo` `depends=` field (what `depmod` also records). Each line
/// lists the full transitive dependencies, deepest last, as depmod does.
/// Returns the number of modules.
pub fn generate_modules_dep(modules_dir: &Path) -> Result<usize, ModulesError> {
    let mut files = Vec::new();
    let kernel = modules_dir.join("kernel");
    if kernel.is_dir() {
        walk_modules(modules_dir, &kernel, &mut files)?;
    }
    files.sort();
    let mut direct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    for rel in &files {
        let m = ModulePath {
            name: module_name(rel),
            rel: rel.clone(),
            path: modules_dir.join(rel),
        };
        let bytes = m.read()?;
        let deps = modinfo_depends(&bytes).map_err(|source| ModulesError::Elf {
            path: m.path.clone(),
            source,
        })?;
        by_name.insert(m.name.clone(), rel.clone());
        direct.insert(rel.clone(), deps);
    }
    // Resolve names to paths (depends= names a module we must also have).
    let mut graph = ModuleDeps::default();
    for (rel, deps) in &direct {
        let mut paths = Vec::new();
        for d in deps {
            let p = by_name.get(d).ok_or_else(|| ModulesError::Unknown {
                name: d.clone(),
                similar: vec![format!("(needed by {})", module_name(rel))],
            })?;
            paths.push(p.clone());
        }
        graph.deps.insert(rel.clone(), paths);
    }
    graph.by_name = by_name;
    let mut text = String::new();
    for rel in &files {
        let mut order = graph.closure(&[&module_name(rel)], &BTreeSet::new())?;
        order.pop(); // the module itself is last
        order.reverse();
        text.push_str(rel);
        text.push(':');
        for d in &order {
            text.push(' ');
            text.push_str(d);
        }
        text.push('\n');
    }
    let dep_file = modules_dir.join("modules.dep");
    let tmp = modules_dir.join("modules.dep.tmp");
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &dep_file).map_err(io_err(&dep_file))?;
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::elf::testutil::{build, Sec};
    use crate::image::elf::ET_REL;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/virt/lib/irqbypass.ko:
kernel/drivers/crypto/ccp/ccp.ko:
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko kernel/drivers/crypto/ccp/ccp.ko
";

    fn names(paths: &[String]) -> Vec<String> {
        paths.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko"), "kvm_amd");
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("a/b/zram.ko.zst"), "zram");
        assert_eq!(module_name("virtio-rng.ko.gz"), "virtio_rng");
    }

    #[test]
    fn parses_dep_lines() {
        let d = ModuleDeps::parse(DEP).unwrap();
        assert_eq!(d.deps.len(), 8);
        assert_eq!(
            d.deps["kernel/drivers/virtio/virtio_ring.ko"],
            Vec::<String>::new()
        );
        assert_eq!(d.path_of("kvm-amd"), Some("kernel/arch/x86/kvm/kvm-amd.ko"));
        assert_eq!(d.path_of("kvm_amd"), Some("kernel/arch/x86/kvm/kvm-amd.ko"));
        let err = ModuleDeps::parse("ok.ko:\nno colon here\n").unwrap_err();
        assert!(
            matches!(err, ModulesError::BadDepLine { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn closure_is_in_load_order_without_duplicates() {
        let d = ModuleDeps::parse(DEP).unwrap();
        let order = d
            .closure(&["virtio_blk", "virtio_mmio"], &BTreeSet::new())
            .unwrap();
        assert_eq!(
            names(&order),
            ["virtio_ring", "virtio", "virtio_blk", "virtio_mmio"]
        );
        let order = d.closure(&["kvm-amd"], &BTreeSet::new()).unwrap();
        let n = names(&order);
        assert_eq!(n.len(), 4);
        let pos = |m: &str| n.iter().position(|x| x == m).unwrap();
        assert!(pos("irqbypass") < pos("kvm"));
        assert!(pos("kvm") < pos("kvm_amd") && pos("ccp") < pos("kvm_amd"));
    }

    #[test]
    fn builtin_names_are_skipped_unknown_are_errors() {
        let d = ModuleDeps::parse(DEP).unwrap();
        let builtin =
            parse_builtin("kernel/drivers/virtio/virtio_anchor.ko\nkernel/fs/ext4/ext4.ko\n");
        let order = d.closure(&["virtio_anchor", "virtio"], &builtin).unwrap();
        assert_eq!(names(&order), ["virtio_ring", "virtio"]);
        let err = d.closure(&["virtio_bl"], &builtin).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("virtio_bl") && msg.contains("virtio_blk"),
            "{msg}"
        );
    }

    #[test]
    fn cycles_are_reported() {
        let d = ModuleDeps::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            d.closure(&["a"], &BTreeSet::new()),
            Err(ModulesError::Cycle(_))
        ));
    }

    #[test]
    fn dangling_dependency_is_reported() {
        let d = ModuleDeps::parse("a.ko: missing.ko\n").unwrap();
        let err = d.closure(&["a"], &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    fn fake_ko(depends: &str) -> Vec<u8> {
        let info = format!("license=GPL\0depends={depends}\0retpoline=Y\0");
        build(
            ET_REL,
            0,
            None,
            false,
            &[Sec(".modinfo", 1, info.as_bytes())],
        )
    }

    #[test]
    fn modinfo_depends_parsing() {
        assert_eq!(
            modinfo_depends(&fake_ko("virtio,virtio_ring")).unwrap(),
            ["virtio", "virtio_ring"]
        );
        assert!(modinfo_depends(&fake_ko("")).unwrap().is_empty());
        assert!(modinfo_depends(b"not elf").is_err());
    }

    #[test]
    fn generates_transitive_modules_dep_and_closes_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        let write = |rel: &str, bytes: &[u8]| {
            let p = m.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        };
        write("kernel/drivers/virtio/virtio_ring.ko", &fake_ko(""));
        write("kernel/drivers/virtio/virtio.ko", &fake_ko("virtio_ring"));
        write(
            "kernel/drivers/block/virtio_blk.ko",
            &fake_ko("virtio,virtio_ring"),
        );
        write("kernel/net/9p/9pnet_virtio.ko", &fake_ko("virtio,9pnet"));
        write("kernel/net/9p/9pnet.ko", &fake_ko(""));
        write(
            "modules.builtin",
            b"kernel/drivers/virtio/virtio_anchor.ko\n",
        );
        assert_eq!(generate_modules_dep(m).unwrap(), 5);
        let text = std::fs::read_to_string(m.join("modules.dep")).unwrap();
        assert!(
            text.contains("kernel/drivers/virtio/virtio_ring.ko:\n"),
            "{text}"
        );
        assert!(
            text.contains("kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"),
            "{text}"
        );
        let c = closure(m, &["9pnet-virtio", "virtio_anchor"]).unwrap();
        let n: Vec<&str> = c.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(n.len(), 4, "{n:?}");
        let pos = |m: &str| n.iter().position(|x| *x == m).unwrap();
        assert!(pos("virtio_ring") < pos("virtio") && pos("virtio") < pos("9pnet_virtio"));
        assert!(pos("9pnet") < pos("9pnet_virtio"));
        assert_eq!(c[3].path, m.join("kernel/net/9p/9pnet_virtio.ko"));
    }

    #[test]
    fn missing_dependency_module_fails_generation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kernel/a.ko");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, fake_ko("nothere")).unwrap();
        let err = generate_modules_dep(dir.path()).unwrap_err();
        assert!(err.to_string().contains("nothere"), "{err}");
    }

    #[test]
    fn missing_modules_dep_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = closure(dir.path(), &["x"]).unwrap_err();
        assert!(matches!(err, ModulesError::NoModulesDep(_)));
    }

    #[test]
    fn compressed_modules_are_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let ko = fake_ko("");
        let xz = match crate::image::tools::run(crate::image::tools::XZ, &["-c"], Some(&ko), None) {
            Ok(x) => x,
            Err(ToolError::Missing { .. }) => {
                return base::tier::skip(base::tier::Tier::Tool, "xz is not installed")
            }
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("kernel/zram.ko.xz");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, xz).unwrap();
        let m = ModulePath {
            name: "zram".into(),
            rel: "kernel/zram.ko.xz".into(),
            path,
        };
        assert_eq!(m.codec(), Some(Codec::Xz));
        assert_eq!(m.uncompressed_rel(), "kernel/zram.ko");
        assert_eq!(m.read().unwrap(), ko);
        assert_eq!(generate_modules_dep(dir.path()).unwrap(), 1);
    }
}
