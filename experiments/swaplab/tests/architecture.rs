//! Architecture checks over the workspace's own Rust sources (std only, no build of
//! the code under test):
//!
//! - **no import cycles between files**: file A depends on file B when A names an item
//!   (or a submodule) of B's module through `use crate::…`/`super::…`/`self::…`, a
//!   relative `use child::…`, or a path in code (`crate::a::f(`, `super::x::Y`,
//!   `child::f(`, or through a name a `use` bound); re-exports (`pub use x::Y`) are
//!   followed to the file that defines the module. A bare `mod b;` is not an import;
//!   every path is, in any direction: a module naming its own submodules
//!   (`pub use device::Balloon`, `child::run()` in a `mod.rs`), children naming their
//!   ancestors, siblings naming each other. So a `lib.rs`/`mod.rs` that re-exports its
//!   children must not define what they use (move it to a module of its own). Paths
//!   into other crates are ignored. Strongly connected components (Tarjan) of more
//!   than one file are cycles;
//! - **an `unsafe` budget for the crates under `experiments/`**: `unsafe {` blocks and
//!   `unsafe impl`s in production code, at most [`MAX_EXPERIMENTS_UNSAFE`];
//! - **no long functions**: no production function spans more than [`MAX_FN_LINES`]
//!   lines (from its `fn` line to its closing brace).
//!
//! "Production" means the module trees of each member's library, binaries and build
//! script, without `#[cfg(test)]`/`#[test]` items and the files of `#[cfg(test)] mod x;`
//! (integration tests, benches and examples are separate crates and not read).
//!
//! The sources go through a small tokenizer that drops comments, string literals (raw
//! ones too) and char literals, and tells lifetimes from char literals, so braces and
//! `unsafe` inside them do not count. Run with `--nocapture` to see what was found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// At most this many `unsafe` blocks and impls in the crates under `experiments/`.
const MAX_EXPERIMENTS_UNSAFE: usize = 15;
/// No production function is longer than this many lines.
const MAX_FN_LINES: usize = 150;

// ---------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string literal's text (escapes left as written).
    Str(String),
    Char,
    Lifetime,
    Num,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// If a (possibly prefixed) string literal starts at `i` (`"`, `b"`, `c"`, `r"`,
/// `r#"`, `br##"`, …): the index of its opening quote and, for raw strings, the
/// number of `#`s.
fn string_start(c: &[char], i: usize) -> Option<(usize, Option<usize>)> {
    let mut j = i;
    if matches!(c.get(j), Some('b') | Some('c')) {
        j += 1;
    }
    if c.get(j) == Some(&'r') {
        j += 1;
        let mut hashes = 0;
        while c.get(j + hashes) == Some(&'#') {
            hashes += 1;
        }
        return (c.get(j + hashes) == Some(&'"')).then_some((j + hashes, Some(hashes)));
    }
    (c.get(j) == Some(&'"')).then_some((j, None))
}

/// Splits Rust source into tokens, dropping whitespace and comments.
fn tokenize(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let newlines = |s: &[char]| s.iter().filter(|&&ch| ch == '\n').count();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            line += usize::from(ch == '\n');
            i += 1;
            continue;
        }
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if ch == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
            continue;
        }
        let start_line = line;
        if let Some((quote, raw)) = string_start(&c, i) {
            let body = quote + 1;
            let mut j = body;
            let end;
            match raw {
                Some(hashes) => loop {
                    if j >= c.len() {
                        end = c.len();
                        break;
                    }
                    if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                        end = j;
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                },
                None => loop {
                    if j >= c.len() {
                        end = c.len();
                        break;
                    }
                    match c[j] {
                        '\\' => j += 2,
                        '"' => {
                            end = j;
                            j += 1;
                            break;
                        }
                        _ => j += 1,
                    }
                },
            }
            let j = j.min(c.len());
            line += newlines(&c[i..j]);
            out.push(Token {
                tok: Tok::Str(c[body..end.min(c.len())].iter().collect()),
                line: start_line,
            });
            i = j;
            continue;
        }
        // Byte char literal b'x' is a char literal after its prefix.
        let quote_at = if ch == 'b' && next == Some('\'') {
            Some(i + 1)
        } else if ch == '\'' {
            Some(i)
        } else {
            None
        };
        if let Some(q) = quote_at {
            let a = c.get(q + 1).copied();
            let b = c.get(q + 2).copied();
            if a == Some('\\') {
                // Escaped char literal: '\n', '\'', '\u{1F600}', '\x41'.
                let mut j = q + 3;
                while j < c.len() && c[j] != '\'' && c[j] != '\n' {
                    j += 1;
                }
                out.push(Token {
                    tok: Tok::Char,
                    line,
                });
                i = j + 1;
                continue;
            }
            if b == Some('\'') {
                out.push(Token {
                    tok: Tok::Char,
                    line,
                });
                i = q + 3;
                continue;
            }
            if q == i {
                // A lifetime or a label: 'a, 'static, 'outer.
                let mut j = i + 1;
                while j < c.len() && is_ident_continue(c[j]) {
                    j += 1;
                }
                out.push(Token {
                    tok: Tok::Lifetime,
                    line,
                });
                i = j.max(i + 1);
                continue;
            }
        }
        if ch == 'r' && next == Some('#') && c.get(i + 2).is_some_and(|&x| is_ident_start(x)) {
            // Raw identifier r#type.
            let mut j = i + 2;
            while j < c.len() && is_ident_continue(c[j]) {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Ident(c[i + 2..j].iter().collect()),
                line,
            });
            i = j;
            continue;
        }
        if is_ident_start(ch) {
            let mut j = i;
            while j < c.len() && is_ident_continue(c[j]) {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Ident(c[i..j].iter().collect()),
                line,
            });
            i = j;
            continue;
        }
        if ch.is_ascii_digit() {
            let mut j = i;
            while j < c.len() && is_ident_continue(c[j]) {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Num,
                line,
            });
            i = j;
            continue;
        }
        if ch == ':' && next == Some(':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
            continue;
        }
        out.push(Token {
            tok: Tok::Punct(ch),
            line,
        });
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------
// Per-file scan
// ---------------------------------------------------------------------------------

/// `mod name;` or `mod name { … }` in production code.
#[derive(Debug, Clone)]
struct ModDecl {
    /// Inline modules (within the file) it is declared in.
    inline: Vec<String>,
    name: String,
    path_attr: Option<String>,
    has_body: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum RefKind {
    /// One leaf of a `use` tree; `bind` is the name it brings into scope.
    Use { glob: bool, bind: Option<String> },
    /// A path in code (`crate::a::f`, `super::X`, `child::f`, `Alias::new`).
    Code,
}

/// A path that may name an item of this crate.
#[derive(Debug, Clone)]
struct PathRef {
    inline: Vec<String>,
    segs: Vec<String>,
    line: usize,
    kind: RefKind,
}

#[derive(Debug, Clone)]
struct FnSpan {
    name: String,
    line: usize,
    lines: usize,
}

/// What one file holds, production code only.
#[derive(Debug, Default, Clone)]
struct FileScan {
    /// `#![cfg(test)]` at the top: the whole file is test code.
    test_only: bool,
    mods: Vec<ModDecl>,
    refs: Vec<PathRef>,
    /// Lines of `unsafe {` blocks and `unsafe impl`s.
    unsafe_lines: Vec<usize>,
    fns: Vec<FnSpan>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(c)) if *c == p)
}

fn is_pathsep(t: Option<&Token>) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::PathSep))
}

/// Whether a `cfg(...)` predicate (tokens inside the parentheses) holds only in tests.
fn cfg_test_only(toks: &[Token]) -> bool {
    fn pred(toks: &[Token], i: &mut usize) -> bool {
        let name = ident(toks.get(*i)).unwrap_or("").to_string();
        *i += 1;
        if !is_punct(toks.get(*i), '(') {
            // `test`, `unix`, `feature = "x"`
            if is_punct(toks.get(*i), '=') {
                *i += 2;
            }
            return name == "test";
        }
        *i += 1;
        let mut parts = Vec::new();
        while *i < toks.len() && !is_punct(toks.get(*i), ')') {
            parts.push(pred(toks, i));
            if is_punct(toks.get(*i), ',') {
                *i += 1;
            }
        }
        *i += 1;
        match name.as_str() {
            "all" | "cfg" => parts.iter().any(|&p| p),
            "any" => !parts.is_empty() && parts.iter().all(|&p| p),
            _ => false, // not(…): never test-only
        }
    }
    let mut i = 0;
    pred(toks, &mut i)
}

/// Parses one use tree at `i`, appending its leaves; returns the index after it.
fn parse_use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<PathRef>,
) -> usize {
    let mut path = prefix.to_vec();
    let line = toks.get(i).map_or(0, |t| t.line);
    if is_pathsep(toks.get(i)) {
        if path.is_empty() {
            path.push("::".to_string());
        }
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                i += 1;
                if is_pathsep(toks.get(i)) {
                    i += 1;
                    continue;
                }
                if path.last().is_some_and(|s| s == "self") {
                    path.pop();
                }
                let mut bind = path.last().cloned();
                if ident(toks.get(i)) == Some("as") {
                    bind = ident(toks.get(i + 1))
                        .filter(|&n| n != "_")
                        .map(String::from);
                    i += 2;
                }
                out.push(PathRef {
                    inline: Vec::new(),
                    segs: path,
                    line,
                    kind: RefKind::Use { glob: false, bind },
                });
                return i;
            }
            Some(Tok::Punct('*')) => {
                out.push(PathRef {
                    inline: Vec::new(),
                    segs: path,
                    line,
                    kind: RefKind::Use {
                        glob: true,
                        bind: None,
                    },
                });
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    if i >= toks.len() {
                        return i;
                    }
                    if is_punct(toks.get(i), '}') {
                        return i + 1;
                    }
                    if is_punct(toks.get(i), ',') {
                        i += 1;
                        continue;
                    }
                    let before = i;
                    i = parse_use_tree(toks, i, &path, out);
                    if i == before {
                        i += 1;
                    }
                }
            }
            _ => return i,
        }
    }
}

enum ScopeKind {
    Module(String),
    Fn { name: String, line: usize },
    Other,
}

struct Scope {
    kind: ScopeKind,
    test: bool,
}

struct PendingFn {
    name: String,
    line: usize,
    test: bool,
    depth: i32,
}

/// Scans one file's source.
fn scan_file(src: &str) -> FileScan {
    let toks = tokenize(src);
    let mut scan = FileScan::default();
    let mut stack: Vec<Scope> = Vec::new();
    let mut pending_test = false;
    let mut pending_path: Option<String> = None;
    let mut pending_mod: Option<(String, bool)> = None;
    let mut pending_fn: Option<PendingFn> = None;
    let inline = |stack: &[Scope]| -> Vec<String> {
        stack
            .iter()
            .filter_map(|s| match &s.kind {
                ScopeKind::Module(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    };
    let mut i = 0;
    while i < toks.len() {
        let cur_test = stack.last().map_or(scan.test_only, |s| s.test);
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('#') => {
                let inner = is_punct(toks.get(i + 1), '!');
                let open = if inner { i + 2 } else { i + 1 };
                if !is_punct(toks.get(open), '[') {
                    i += 1;
                    continue;
                }
                let mut depth = 0;
                let mut close = open;
                while close < toks.len() {
                    match toks[close].tok {
                        Tok::Punct('[') => depth += 1,
                        Tok::Punct(']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    close += 1;
                }
                let body = &toks[open + 1..close.min(toks.len())];
                let test = match ident(body.first()) {
                    Some("cfg") if is_punct(body.get(1), '(') => cfg_test_only(body),
                    Some("test") => body.len() == 1,
                    _ => false,
                };
                if ident(body.first()) == Some("path") && is_punct(body.get(1), '=') {
                    if let Some(Tok::Str(p)) = body.get(2).map(|t| &t.tok) {
                        pending_path = Some(p.clone());
                    }
                }
                if test {
                    if !inner {
                        pending_test = true;
                    } else if let Some(s) = stack.last_mut() {
                        s.test = true;
                    } else {
                        scan.test_only = true;
                    }
                }
                i = close + 1;
                continue;
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    let test = cur_test || pending_test;
                    if is_punct(toks.get(i + 2), ';') || is_punct(toks.get(i + 2), '{') {
                        let has_body = is_punct(toks.get(i + 2), '{');
                        if !test {
                            scan.mods.push(ModDecl {
                                inline: inline(&stack),
                                name: name.to_string(),
                                path_attr: pending_path.take(),
                                has_body,
                            });
                        }
                        if has_body {
                            pending_mod = Some((name.to_string(), test));
                        }
                        pending_test = false;
                        pending_path = None;
                        i += 2;
                        continue;
                    }
                }
            }
            Tok::Ident(kw) if kw == "fn" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    pending_fn = Some(PendingFn {
                        name: name.to_string(),
                        line: t.line,
                        test: cur_test || pending_test,
                        depth: 0,
                    });
                    pending_test = false;
                    i += 2;
                    continue;
                }
            }
            Tok::Ident(kw) if kw == "use" && !is_punct(toks.get(i + 1), '<') => {
                let mut leaves = Vec::new();
                let mut j = parse_use_tree(&toks, i + 1, &[], &mut leaves);
                while j < toks.len() && !is_punct(toks.get(j), ';') {
                    j += 1;
                }
                if !(cur_test || pending_test) {
                    let inl = inline(&stack);
                    for mut l in leaves {
                        l.inline = inl.clone();
                        scan.refs.push(l);
                    }
                }
                pending_test = false;
                i = j + 1;
                continue;
            }
            Tok::Ident(kw) if kw == "unsafe" => {
                let block =
                    is_punct(toks.get(i + 1), '{') || ident(toks.get(i + 1)) == Some("impl");
                if block && !(cur_test || pending_test) {
                    scan.unsafe_lines.push(t.line);
                }
            }
            Tok::Ident(first) if is_pathsep(toks.get(i + 1)) => {
                let prev = i.checked_sub(1).map(|p| &toks[p]);
                let continues = is_pathsep(prev);
                // `pub(in crate::a)` is a visibility, not a reference.
                let visibility = ident(prev) == Some("in")
                    && i >= 3
                    && is_punct(toks.get(i - 2), '(')
                    && ident(toks.get(i - 3)) == Some("pub");
                let mut segs = vec![first.clone()];
                let mut j = i + 1;
                while is_pathsep(toks.get(j)) {
                    match ident(toks.get(j + 1)) {
                        Some(s) => segs.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if !continues && !visibility && !cur_test {
                    scan.refs.push(PathRef {
                        inline: inline(&stack),
                        segs,
                        line: t.line,
                        kind: RefKind::Code,
                    });
                }
                i = j;
                continue;
            }
            Tok::Punct('(') | Tok::Punct('[') => {
                if let Some(f) = pending_fn.as_mut() {
                    f.depth += 1;
                }
            }
            Tok::Punct(')') | Tok::Punct(']') => {
                if let Some(f) = pending_fn.as_mut() {
                    f.depth -= 1;
                }
            }
            Tok::Punct('{') => {
                let scope = if let Some((name, test)) = pending_mod.take() {
                    Scope {
                        kind: ScopeKind::Module(name),
                        test,
                    }
                } else if pending_fn.as_ref().is_some_and(|f| f.depth == 0) {
                    let f = pending_fn.take().expect("checked");
                    Scope {
                        kind: ScopeKind::Fn {
                            name: f.name,
                            line: f.line,
                        },
                        test: f.test || cur_test,
                    }
                } else {
                    Scope {
                        kind: ScopeKind::Other,
                        test: cur_test || pending_test,
                    }
                };
                stack.push(scope);
                pending_test = false;
                pending_path = None;
            }
            Tok::Punct('}') => {
                if let Some(Scope {
                    kind: ScopeKind::Fn { name, line },
                    test,
                }) = stack.pop()
                {
                    if !test {
                        scan.fns.push(FnSpan {
                            name,
                            line,
                            lines: t.line - line + 1,
                        });
                    }
                }
                pending_test = false;
                pending_path = None;
            }
            Tok::Punct(';') => {
                if pending_fn.as_ref().is_some_and(|f| f.depth == 0) {
                    pending_fn = None;
                }
                pending_test = false;
                pending_path = None;
            }
            _ => {}
        }
        i += 1;
    }
    if scan.test_only {
        return FileScan {
            test_only: true,
            ..FileScan::default()
        };
    }
    scan
}

// ---------------------------------------------------------------------------------
// Workspace, crates and module trees
// ---------------------------------------------------------------------------------

/// One crate (a library, a binary or a build script): its modules and their files.
#[derive(Debug, Default)]
struct CrateTree {
    /// The member directory, relative to the workspace root (`experiments`).
    member: String,
    /// Module path (`["run", "machine"]`) to the file that holds it.
    mods: BTreeMap<Vec<String>, PathBuf>,
    /// Every file of the crate with its module path.
    files: Vec<(PathBuf, Vec<String>)>,
}

/// The scanned sources of every crate.
#[derive(Debug, Default)]
struct Sources {
    scans: BTreeMap<PathBuf, FileScan>,
    crates: Vec<CrateTree>,
    /// `mod x;` declarations whose file was not found.
    missing: Vec<String>,
}

/// Removes `.` and `a/..` from a path without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl Sources {
    /// Reads (through `load`) and scans the crate whose root file is `root_file`.
    fn add_crate(
        &mut self,
        member: &str,
        root_file: &Path,
        load: &dyn Fn(&Path) -> Option<String>,
    ) {
        let mut tree = CrateTree {
            member: member.to_string(),
            ..CrateTree::default()
        };
        let mut queue = vec![(normalize(root_file), Vec::<String>::new(), true)];
        while let Some((file, modpath, mod_rs)) = queue.pop() {
            if !self.scans.contains_key(&file) {
                let Some(src) = load(&file) else {
                    self.missing.push(file.display().to_string());
                    continue;
                };
                self.scans.insert(file.clone(), scan_file(&src));
            }
            let scan = &self.scans[&file];
            if scan.test_only {
                continue;
            }
            tree.mods.insert(modpath.clone(), file.clone());
            tree.files.push((file.clone(), modpath.clone()));
            let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
            let child_base = if mod_rs {
                dir.clone()
            } else {
                dir.join(file.file_stem().unwrap_or_default())
            };
            for d in &scan.mods {
                let mut full = modpath.clone();
                full.extend(d.inline.iter().cloned());
                full.push(d.name.clone());
                if d.has_body {
                    tree.mods.insert(full, file.clone());
                    continue;
                }
                let inline_base = d.inline.iter().fold(child_base.clone(), |b, m| b.join(m));
                let candidates = match &d.path_attr {
                    Some(p) if d.inline.is_empty() => vec![dir.join(p)],
                    Some(p) => vec![inline_base.join(p)],
                    None => vec![
                        inline_base.join(format!("{}.rs", d.name)),
                        inline_base.join(&d.name).join("mod.rs"),
                    ],
                };
                let found = candidates
                    .iter()
                    .map(|c| normalize(c))
                    .find(|c| self.scans.contains_key(c) || load(c).is_some());
                match found {
                    Some(child) => {
                        let child_mod_rs = d.path_attr.is_some()
                            || child.file_name().is_some_and(|n| n == "mod.rs");
                        queue.push((child, full, child_mod_rs));
                    }
                    None => self.missing.push(format!(
                        "{}: mod {} (tried {})",
                        file.display(),
                        d.name,
                        candidates
                            .iter()
                            .map(|c| c.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
        }
        self.crates.push(tree);
    }
}

/// Names bound by `use` in each module: module path → name → the `use` path.
type Aliases = HashMap<Vec<String>, HashMap<String, Vec<String>>>;

fn child_of(m: &[String], name: &str) -> Vec<String> {
    let mut v = m.to_vec();
    v.push(name.to_string());
    v
}

/// Resolves `segs` as written in module `from`: the module whose file holds what it
/// names, and whether the whole path named a module. `None`: another crate.
fn resolve(
    tree: &CrateTree,
    aliases: &Aliases,
    from: &[String],
    segs: &[String],
    depth: u32,
) -> Option<(Vec<String>, bool)> {
    if depth > 8 || segs.is_empty() {
        return None;
    }
    let alias = |m: &[String], name: &str| aliases.get(m).and_then(|a| a.get(name)).cloned();
    let mut k = 1;
    let mut m: Vec<String> = match segs[0].as_str() {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => {
            let mut m = from.to_vec();
            m.pop()?;
            while segs.get(k).is_some_and(|s| s == "super") {
                m.pop()?;
                k += 1;
            }
            m
        }
        "::" => return None,
        first => {
            let child = child_of(from, first);
            if tree.mods.contains_key(&child) {
                child
            } else if let Some(target) = alias(from, first) {
                match resolve(tree, aliases, from, &target, depth + 1)? {
                    (t, true) => t,
                    (t, false) => return Some((t, false)),
                }
            } else {
                return None;
            }
        }
    };
    while k < segs.len() {
        let s = &segs[k];
        if s == "self" {
            k += 1;
            continue;
        }
        let child = child_of(&m, s);
        if tree.mods.contains_key(&child) {
            m = child;
            k += 1;
            continue;
        }
        if let Some(target) = alias(&m, s) {
            match resolve(tree, aliases, &m, &target, depth + 1) {
                Some((t, true)) => {
                    m = t;
                    k += 1;
                    continue;
                }
                Some((t, false)) => return Some((t, false)),
                None => return Some((m, false)),
            }
        }
        return Some((m, false));
    }
    Some((m, true))
}

/// File → file imports of one crate, each with where it comes from (`line: path`).
fn import_edges(sources: &Sources) -> BTreeMap<(PathBuf, PathBuf), String> {
    let mut edges = BTreeMap::new();
    for tree in &sources.crates {
        let mut aliases: Aliases = HashMap::new();
        for (file, modpath) in &tree.files {
            for r in &sources.scans[file].refs {
                if let RefKind::Use {
                    glob: false,
                    bind: Some(b),
                } = &r.kind
                {
                    let mut m = modpath.clone();
                    m.extend(r.inline.iter().cloned());
                    aliases
                        .entry(m)
                        .or_default()
                        .insert(b.clone(), r.segs.clone());
                }
            }
        }
        for (file, modpath) in &tree.files {
            for r in &sources.scans[file].refs {
                let mut m = modpath.clone();
                m.extend(r.inline.iter().cloned());
                let Some((target, whole_module)) = resolve(tree, &aliases, &m, &r.segs, 0) else {
                    continue;
                };
                // `use crate::a::b;` only binds a name; what is used through it counts.
                if whole_module && matches!(r.kind, RefKind::Use { glob: false, .. }) {
                    continue;
                }
                let Some(to) = tree.mods.get(&target) else {
                    continue;
                };
                // Every direction counts: a module re-exporting or calling into its
                // submodules (`pub use device::Balloon`, `child::run()`) imports them,
                // just as children naming their ancestors and siblings naming each
                // other do. Only a bare `mod child;` (no path) is not an import.
                if to != file {
                    edges
                        .entry((file.clone(), to.clone()))
                        .or_insert_with(|| format!("line {}: {}", r.line, r.segs.join("::")));
                }
            }
        }
    }
    edges
}

/// Strongly connected components (Tarjan) with more than one node, each sorted.
fn cycles<N: Ord + Clone>(edges: impl IntoIterator<Item = (N, N)>) -> Vec<Vec<N>> {
    let mut nodes: BTreeMap<N, usize> = BTreeMap::new();
    let mut adj: Vec<Vec<usize>> = Vec::new();
    let mut names: Vec<N> = Vec::new();
    let mut id = |n: N, nodes: &mut BTreeMap<N, usize>, adj: &mut Vec<Vec<usize>>| {
        *nodes.entry(n.clone()).or_insert_with(|| {
            adj.push(Vec::new());
            names.push(n);
            adj.len() - 1
        })
    };
    for (a, b) in edges {
        let a = id(a, &mut nodes, &mut adj);
        let b = id(b, &mut nodes, &mut adj);
        adj[a].push(b);
    }
    struct Tarjan<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adj[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let n = adj.len();
    let mut t = Tarjan {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut out: Vec<Vec<N>> = t
        .out
        .into_iter()
        .map(|c| {
            let mut c: Vec<N> = c.into_iter().map(|i| names[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------
// The real workspace
// ---------------------------------------------------------------------------------

/// The directory whose Cargo.toml has `[workspace]`, walking up from this crate.
fn workspace_root() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    loop {
        let text = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        if text.lines().any(|l| l.trim() == "[workspace]") {
            return dir.to_path_buf();
        }
        dir = dir.parent().unwrap_or_else(|| {
            panic!(
                "no Cargo.toml with [workspace] in {} or above",
                env!("CARGO_MANIFEST_DIR")
            )
        });
    }
}

/// The lines of `[section]` in a TOML file (up to the next header).
fn toml_section<'a>(text: &'a str, section: &str) -> Vec<&'a str> {
    let header = format!("[{section}]");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect()
}

/// The strings of `key = ["a", "b", …]` (the array may span lines).
fn toml_strings(lines: &[&str], key: &str) -> Vec<String> {
    let joined = lines
        .iter()
        .map(|l| l.split(" #").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let Some(start) = joined
        .find(&format!("\n{key}"))
        .map(|p| p + 1)
        .or_else(|| joined.starts_with(key).then_some(0))
    else {
        return Vec::new();
    };
    let rest = &joined[start..];
    let Some(open) = rest.find('[') else {
        return Vec::new();
    };
    let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
    rest[open + 1..close]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The workspace members (globs `dir/*` expanded), without `fuzz`, `target` and
/// excluded paths.
fn workspace_members(root: &Path) -> Vec<String> {
    let text = fs::read_to_string(root.join("Cargo.toml")).expect("workspace Cargo.toml");
    let ws = toml_section(&text, "workspace");
    let exclude = toml_strings(&ws, "exclude");
    let mut members = Vec::new();
    for m in toml_strings(&ws, "members") {
        if let Some(parent) = m.strip_suffix("/*") {
            let mut found: Vec<String> = fs::read_dir(root.join(parent))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().join("Cargo.toml").is_file())
                .map(|e| format!("{parent}/{}", e.file_name().to_string_lossy()))
                .collect();
            found.sort();
            members.extend(found);
        } else {
            members.push(m);
        }
    }
    members.retain(|m| {
        let first = m.split('/').next().unwrap_or("");
        first != "fuzz" && first != "target" && !exclude.contains(m)
    });
    assert!(!members.is_empty(), "no workspace members found");
    members
}

/// A member's crate roots: library, binaries (`src/main.rs`, `src/bin/`, `[[bin]]`
/// paths), build script.
fn crate_roots(member_dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![
        member_dir.join("src/lib.rs"),
        member_dir.join("src/main.rs"),
        member_dir.join("build.rs"),
    ];
    for e in fs::read_dir(member_dir.join("src/bin"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            roots.push(p);
        } else if p.join("main.rs").is_file() {
            roots.push(p.join("main.rs"));
        }
    }
    let manifest = fs::read_to_string(member_dir.join("Cargo.toml")).unwrap_or_default();
    let mut in_target = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_target = l == "[lib]" || l == "[[bin]]";
        } else if in_target && l.starts_with("path") {
            if let Some(p) = l.split('"').nth(1) {
                roots.push(member_dir.join(p));
            }
        }
    }
    let mut roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| normalize(r))
        .filter(|r| r.is_file())
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

struct Workspace {
    root: PathBuf,
    sources: Sources,
}

impl Workspace {
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    /// Production files of members whose path starts with `prefix` (all for "").
    fn files_under(&self, prefix: &str) -> BTreeSet<&PathBuf> {
        self.sources
            .crates
            .iter()
            .filter(|c| c.member.starts_with(prefix))
            .flat_map(|c| c.files.iter().map(|(f, _)| f))
            .collect()
    }
}

fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        let root = workspace_root();
        let mut sources = Sources::default();
        let load = |p: &Path| fs::read_to_string(p).ok();
        for member in workspace_members(&root) {
            for r in crate_roots(&root.join(&member)) {
                sources.add_crate(&member, &r, &load);
            }
        }
        assert!(
            sources.scans.len() > 10,
            "found only {} source files under {}",
            sources.scans.len(),
            root.display()
        );
        Workspace { root, sources }
    })
}

#[test]
fn no_import_cycles_between_files() {
    let ws = workspace();
    if !ws.sources.missing.is_empty() {
        println!(
            "note: module files not found:\n  {}",
            ws.sources.missing.join("\n  ")
        );
    }
    let edges = import_edges(&ws.sources);
    let comps = cycles(edges.keys().cloned());
    let mut report = String::new();
    for (n, comp) in comps.iter().enumerate() {
        let names: Vec<String> = comp.iter().map(|f| ws.rel(f)).collect();
        report += &format!("cycle {}: {}\n", n + 1, names.join(" <-> "));
        for ((a, b), why) in &edges {
            if comp.contains(a) && comp.contains(b) {
                report += &format!("    {} -> {} ({why})\n", ws.rel(a), ws.rel(b));
            }
        }
    }
    println!(
        "{} files, {} file imports, {} cycles\n{report}",
        ws.sources.scans.len(),
        edges.len(),
        comps.len()
    );
    assert!(
        comps.is_empty(),
        "{} import cycles between files (no file may import a file that imports it back):\n{report}",
        comps.len()
    );
}

#[test]
fn unsafe_budget_in_experiments() {
    let ws = workspace();
    let mut counts = Vec::new();
    let mut total = 0;
    for f in ws.files_under("experiments") {
        let n = ws.sources.scans[f].unsafe_lines.len();
        if n > 0 {
            total += n;
            let lines: Vec<String> = ws.sources.scans[f]
                .unsafe_lines
                .iter()
                .map(|l| l.to_string())
                .collect();
            counts.push(format!(
                "  {:3}  {} (lines {})",
                n,
                ws.rel(f),
                lines.join(", ")
            ));
        }
    }
    let report = counts.join("\n");
    println!("unsafe blocks and impls under experiments/: {total}\n{report}");
    assert!(
        total <= MAX_EXPERIMENTS_UNSAFE,
        "{total} unsafe blocks/impls in production code under experiments/, at most \
         {MAX_EXPERIMENTS_UNSAFE} allowed (move them behind safe wrappers in the crates that \
         own the devices and the swapper):\n{report}"
    );
}

#[test]
fn no_function_longer_than_the_limit() {
    let ws = workspace();
    let mut long = Vec::new();
    for f in ws.files_under("") {
        for s in &ws.sources.scans[f].fns {
            if s.lines > MAX_FN_LINES {
                long.push((
                    s.lines,
                    format!("{}:{} {} ({} lines)", ws.rel(f), s.line, s.name, s.lines),
                ));
            }
        }
    }
    long.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let report: Vec<String> = long.into_iter().map(|(_, s)| format!("  {s}")).collect();
    let report = report.join("\n");
    println!(
        "functions over {MAX_FN_LINES} lines: {}\n{report}",
        report.lines().count()
    );
    assert!(
        report.is_empty(),
        "production functions longer than {MAX_FN_LINES} lines (split them):\n{report}"
    );
}

// ---------------------------------------------------------------------------------
// The scanner's own tests
// ---------------------------------------------------------------------------------

/// Builds one crate from in-memory files (`path`, `source`), root first.
fn synthetic(files: &[(&str, &str)]) -> Sources {
    let map: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect();
    let mut sources = Sources::default();
    sources.add_crate("experiments", Path::new(files[0].0), &|p: &Path| {
        map.get(p).cloned()
    });
    sources
}

fn synthetic_cycles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    let sources = synthetic(files);
    assert!(sources.missing.is_empty(), "{:?}", sources.missing);
    cycles(import_edges(&sources).into_keys())
        .into_iter()
        .map(|c| c.iter().map(|p| p.display().to_string()).collect())
        .collect()
}

#[test]
fn scanner_lifetimes_are_not_char_literals() {
    let toks = tokenize("fn f<'a>(x: &'a str) -> char { let _ = '{'; let _ = '\\''; 'x' }");
    let lifetimes = toks.iter().filter(|t| t.tok == Tok::Lifetime).count();
    let chars = toks.iter().filter(|t| t.tok == Tok::Char).count();
    assert_eq!((lifetimes, chars), (2, 3), "{toks:?}");
    let opens = toks.iter().filter(|t| t.tok == Tok::Punct('{')).count();
    let closes = toks.iter().filter(|t| t.tok == Tok::Punct('}')).count();
    assert_eq!((opens, closes), (1, 1));
}

#[test]
fn scanner_skips_comments_and_strings() {
    let src = r####"
        // unsafe { in a comment }
        /* nested /* unsafe { */ still a comment } */
        const A: &str = "unsafe { \" }";
        const B: &str = r#"unsafe { "# ;
        const C: &[u8] = br##"}"# {"##;
        fn f() { let _ = b'{'; unsafe { g() } }
        unsafe impl Send for X {}
    "####;
    let scan = scan_file(src);
    assert_eq!(scan.unsafe_lines, vec![7, 8]);
    assert_eq!(scan.fns.len(), 1);
    assert_eq!(scan.fns[0].name, "f");
    assert_eq!(scan.fns[0].line, 7);
}

#[test]
fn scanner_ignores_test_code() {
    let src = "
fn prod() { unsafe { a() } }
#[cfg(test)]
mod tests {
    use super::*;
    fn helper() { unsafe { b() } }
}
#[test]
fn t() { unsafe { c() } }
#[cfg(all(test, unix))]
mod more;
#[cfg(not(test))]
fn also_prod() { crate::x::y(); }
";
    let scan = scan_file(src);
    assert_eq!(scan.unsafe_lines, vec![2]);
    let names: Vec<&str> = scan.fns.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["prod", "also_prod"]);
    assert!(scan.mods.is_empty());
    assert_eq!(scan.refs.len(), 1);
    assert_eq!(scan.refs[0].segs, ["crate", "x", "y"]);
    assert!(scan_file("#![cfg(test)]\nfn x() { unsafe {} }").test_only);
}

#[test]
fn scanner_measures_functions() {
    let body = "    let s = \"}\";\n".repeat(10);
    let src = format!("impl X {{\n    fn long(\n        a: [u8; 4],\n    ) -> u8 {{\n{body}    }}\n}}\ntrait T {{ fn decl(&self); }}\n");
    let scan = scan_file(&src);
    assert_eq!(scan.fns.len(), 1, "{:?}", scan.fns);
    assert_eq!((scan.fns[0].line, scan.fns[0].lines), (2, 14));
}

#[test]
fn scanner_parses_grouped_uses() {
    let scan = scan_file("use crate::{a::X, b::{self, Y as Z, c::*}};\npub use ::ext::Q;");
    let leaves: Vec<(String, RefKind)> = scan
        .refs
        .iter()
        .map(|r| (r.segs.join("::"), r.kind.clone()))
        .collect();
    let bind = |s: &str| RefKind::Use {
        glob: false,
        bind: Some(s.to_string()),
    };
    assert_eq!(
        leaves,
        [
            ("crate::a::X".to_string(), bind("X")),
            ("crate::b".to_string(), bind("b")),
            ("crate::b::Y".to_string(), bind("Z")),
            (
                "crate::b::c".to_string(),
                RefKind::Use {
                    glob: true,
                    bind: None
                }
            ),
            ("::::ext::Q".to_string(), bind("Q")),
        ]
    );
}

#[test]
fn finds_a_cycle_between_two_files() {
    let found = synthetic_cycles(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "src/b/mod.rs",
            "pub struct B;\nfn f() -> super::a::A { todo!() }\n",
        ),
    ]);
    assert_eq!(found, [["src/a.rs", "src/b/mod.rs"]]);
}

#[test]
fn finds_cycles_through_relative_paths_and_aliases() {
    // Siblings: one names the other through a `use`d module alias, the other through
    // a name its parent re-exports.
    let found = synthetic_cycles(&[
        ("src/main.rs", "mod run;\nfn main() { run::go(); }\n"),
        (
            "src/run/mod.rs",
            "mod a;\nmod b;\npub use b::B;\npub fn go() { a::start(); }\n",
        ),
        (
            "src/run/a.rs",
            "use super::b as bb;\npub struct A;\npub fn start() { bb::f(); }\n",
        ),
        (
            "src/run/b.rs",
            "pub struct B;\npub fn f() -> crate::run::a::A { crate::run::a::A }\n",
        ),
        ("src/other.rs", "pub fn g() -> crate::run::B { todo!() }\n"),
    ]);
    assert_eq!(found, [["src/run/a.rs", "src/run/b.rs"]]);
}

#[test]
fn a_parent_and_child_naming_each_other_are_a_cycle() {
    // mod.rs calls its child; the child uses a type the parent defines: mutual import.
    let found = synthetic_cycles(&[
        ("src/main.rs", "mod run;\nfn main() { run::go(); }\n"),
        (
            "src/run/mod.rs",
            "mod machine;\npub struct Cfg;\npub fn go() { machine::start(); }\n",
        ),
        (
            "src/run/machine.rs",
            "use crate::run as r;\npub fn start() -> r::Cfg { r::Cfg }\n",
        ),
    ]);
    assert_eq!(found, [["src/run/machine.rs", "src/run/mod.rs"]]);
    // The same through a re-export: lib.rs re-exports its child, which names a
    // constant lib.rs defines.
    let found = synthetic_cycles(&[
        (
            "src/lib.rs",
            "mod fault;\npub use fault::Fault;\npub const PAGE: usize = 4096;\n",
        ),
        ("src/fault.rs", "pub struct Fault([u8; crate::PAGE]);\n"),
    ]);
    assert_eq!(found, [["src/fault.rs", "src/lib.rs"]]);
}

#[test]
fn a_parent_re_exporting_its_children_is_not_a_cycle() {
    // A parent that only declares `mod child;` does not import it; one that
    // re-exports or calls a child imports it, but without the child reaching back
    // (it names a sibling that holds the shared item) there is no cycle.
    let found = synthetic_cycles(&[
        (
            "src/lib.rs",
            "mod quiet;\nmod page;\nmod fault;\npub use fault::Fault;\npub use page::PAGE;\n\
             pub fn f() -> Fault { fault::make() }\n",
        ),
        ("src/quiet.rs", "pub struct Q;\n"),
        ("src/page.rs", "pub const PAGE: usize = 4096;\n"),
        (
            "src/fault.rs",
            "use crate::page::PAGE;\npub struct Fault([u8; PAGE]);\n\
             pub fn make() -> Fault { Fault([0; PAGE]) }\n",
        ),
    ]);
    assert!(found.is_empty(), "{found:?}");
    let sources = synthetic(&[
        ("src/lib.rs", "mod quiet;\npub struct Top;\n"),
        ("src/quiet.rs", "pub fn f() -> crate::Top { crate::Top }\n"),
    ]);
    let edges: Vec<(String, String)> = import_edges(&sources)
        .into_keys()
        .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
        .collect();
    assert_eq!(
        edges,
        [("src/quiet.rs".to_string(), "src/lib.rs".to_string())]
    );
}

#[test]
fn no_false_cycles() {
    let found = synthetic_cycles(&[
        // A bare `mod` is not an import; test children are not read.
        (
            "src/lib.rs",
            "pub mod a;\npub mod b;\nmod inline { pub use crate::a::A; }\n",
        ),
        (
            "src/a.rs",
            "#[cfg(test)]\nmod tests;\npub struct A;\npub(in crate::b) fn f() {}\n",
        ),
        ("src/a/tests.rs", "use super::*;\nuse crate::b::B;\n"),
        // A re-export is followed to the file that defines the item; other crates
        // and `std` are not this crate's files.
        (
            "src/b.rs",
            "use std::io;\nuse vmm::a::Thing;\npub struct B(crate::inline::A, io::Error);\n",
        ),
    ]);
    assert!(found.is_empty(), "{found:?}");
    let found = synthetic_cycles(&[
        (
            "src/bin/tool.rs",
            "#[path = \"../shared/x.rs\"]\nmod x;\nmod y { pub struct Y; }\n",
        ),
        (
            "src/shared/x.rs",
            "mod z;\npub fn x() -> crate::y::Y { z::f() }\n",
        ),
        ("src/shared/z.rs", "pub fn f() -> crate::y::Y { todo!() }\n"),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn path_attribute_children_resolve() {
    let sources = synthetic(&[
        (
            "src/bin/tool.rs",
            "#[path = \"../shared/x.rs\"]\nmod x;\nfn main() { x::f(); }\n",
        ),
        ("src/shared/x.rs", "mod z;\npub fn f() { z::g() }\n"),
        ("src/shared/z.rs", "pub fn g() { crate::main() }\n"),
    ]);
    assert!(sources.missing.is_empty(), "{:?}", sources.missing);
    // z.rs was found beside x.rs (a #[path] file's children live in its directory);
    // tool.rs calls x.rs, x.rs calls z.rs, and z.rs names the root: one cycle.
    let edges: Vec<(String, String)> = import_edges(&sources)
        .into_keys()
        .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
        .collect();
    let edge = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        edges,
        [
            edge("src/bin/tool.rs", "src/shared/x.rs"),
            edge("src/shared/x.rs", "src/shared/z.rs"),
            edge("src/shared/z.rs", "src/bin/tool.rs"),
        ]
    );
}
