//! Typed, located reads from parsed TOML tables, with layered defaults.
//!
//! A [`Section`] is one table of the schema (`""` for the top level, `host`, …)
//! seen through one or more layers: the scenario's own table first, then the
//! matrix's `[defaults]`. A key is taken from the first layer that has it, and
//! every error points at that layer's file, line and column.

use std::fmt;
use std::ops::{Range, RangeInclusive};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::source::{did_you_mean, Source};
use crate::model::{Pos, ScenarioError};
use base::ByteSize;

/// One table from one file.
#[derive(Clone, Copy)]
pub(super) struct Layer<'a, 'i> {
    /// The table.
    pub table: &'a DeTable<'i>,
    /// Its file.
    pub src: &'a Source,
    /// Where the table starts (its header, or the file).
    pub at: usize,
    /// How its tables are named in messages: `""` for a scenario file's own
    /// tables (`[host]`), `"defaults"` (`[defaults.host]`), `"scenario"`.
    pub prefix: &'a str,
    /// From the matrix's `[defaults]`.
    pub is_default: bool,
}

/// A schema table seen through its layers.
#[derive(Clone)]
pub(super) struct Section<'a, 'i> {
    /// Dotted path of the table (`""`, `"host"`).
    pub path: String,
    /// Highest priority first.
    pub layers: Vec<Layer<'a, 'i>>,
}

/// A value found for a key.
pub(super) struct Item<'a, 'i> {
    /// The value.
    pub value: &'a Spanned<DeValue<'i>>,
    /// The key's span.
    pub key_span: Range<usize>,
    /// Its file.
    pub src: &'a Source,
    /// Dotted key.
    pub key: String,
    /// Taken from the matrix's `[defaults]`.
    pub from_default: bool,
}

impl Item<'_, '_> {
    /// A schema error about this value.
    pub fn error(&self, message: impl fmt::Display) -> ScenarioError {
        self.src.schema(
            self.value.span(),
            Some(&self.key),
            format!("{}: {message}", self.key),
        )
    }

    /// Where the key is.
    pub fn pos(&self) -> Pos {
        self.src.pos(self.key_span.start)
    }
}

/// `"a, b or c"`.
pub(super) fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn find<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
) -> Option<(Range<usize>, &'a Spanned<DeValue<'i>>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, v)| (k.span(), v))
}

impl<'a, 'i> Section<'a, 'i> {
    /// The top level of `layers`.
    pub fn root(layers: Vec<Layer<'a, 'i>>) -> Self {
        Self {
            path: String::new(),
            layers,
        }
    }

    /// `path.key` (or `key` at the top level).
    pub fn dotted(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// How this table is named in `layer`'s messages.
    fn label(&self, layer: &Layer<'_, '_>) -> String {
        match (layer.prefix.is_empty(), self.path.is_empty()) {
            (true, true) => "the top level".to_string(),
            (true, false) => format!("[{}]", self.path),
            (false, true) => format!("[{}]", layer.prefix),
            (false, false) => format!("[{}.{}]", layer.prefix, self.path),
        }
    }

    /// The value for `key` from the first layer that has it.
    pub fn get(&self, key: &str) -> Option<Item<'a, 'i>> {
        self.layers.iter().find_map(|l| {
            find(l.table, key).map(|(key_span, value)| Item {
                value,
                key_span,
                src: l.src,
                key: self.dotted(key),
                from_default: l.is_default,
            })
        })
    }

    /// Whether a non-default layer exists (the scenario has this table itself).
    pub fn own(&self) -> Option<&Layer<'a, 'i>> {
        self.layers.iter().find(|l| !l.is_default)
    }

    /// The sub-table `name` of every layer that has it.
    pub fn sub(&self, name: &str) -> Result<Section<'a, 'i>, ScenarioError> {
        let path = self.dotted(name);
        let mut layers = Vec::new();
        for l in &self.layers {
            if let Some((_, v)) = find(l.table, name) {
                match v.get_ref() {
                    DeValue::Table(t) => layers.push(Layer {
                        table: t,
                        at: v.span().start,
                        ..*l
                    }),
                    other => {
                        return Err(l.src.schema(
                            v.span(),
                            Some(&path),
                            format!("{path}: expected a table, found {}", other.type_str()),
                        ))
                    }
                }
            }
        }
        Ok(Section { path, layers })
    }

    /// Rejects keys outside `allowed` (the first one in file order).
    pub fn check_keys(&self, allowed: &[&str]) -> Result<(), ScenarioError> {
        for l in &self.layers {
            let mut unknown: Vec<_> = l
                .table
                .keys()
                .filter(|k| !allowed.contains(&k.get_ref().as_ref()))
                .collect();
            unknown.sort_by_key(|k| k.span().start);
            if let Some(k) = unknown.first() {
                let name = k.get_ref().as_ref();
                return Err(l.src.schema(
                    k.span(),
                    Some(&self.dotted(name)),
                    format!(
                        "unknown key \"{name}\" in {}{}",
                        self.label(l),
                        did_you_mean(name, allowed)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<Option<(&'a str, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        match item.value.get_ref() {
            DeValue::String(s) => Ok(Some((s.as_ref(), item))),
            other => Err(item.error(format_args!(
                "expected a string, found {}",
                other.type_str()
            ))),
        }
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<Option<(bool, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        match item.value.get_ref() {
            DeValue::Boolean(b) => Ok(Some((*b, item))),
            other => Err(item.error(format_args!(
                "expected true or false, found {}",
                other.type_str()
            ))),
        }
    }

    /// A size string within `range` bytes.
    pub fn size(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<(ByteSize, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        let text = match item.value.get_ref() {
            DeValue::String(s) => s.as_ref(),
            DeValue::Integer(i) => {
                return Err(item.error(format_args!(
                    "expected a size string with a unit, e.g. \"{}M\", found the integer {}",
                    i.as_str(),
                    i.as_str()
                )))
            }
            other => {
                return Err(item.error(format_args!(
                    "expected a size string like \"256M\", found {}",
                    other.type_str()
                )))
            }
        };
        let size: ByteSize = text
            .parse()
            .map_err(|e| item.error(format_args!("bad size {text:?} ({e})")))?;
        if !range.contains(&size.0) {
            let (lo, hi) = (ByteSize(*range.start()), ByteSize(*range.end()));
            return Err(item.error(format_args!(
                "{text:?} is out of range (expected {lo} to {hi})"
            )));
        }
        Ok(Some((size, item)))
    }

    /// An integer within `range`.
    pub fn uint(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<(u64, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Integer(i) = item.value.get_ref() else {
            return Err(item.error(format_args!(
                "expected an integer, found {}",
                item.value.get_ref().type_str()
            )));
        };
        let v = i128::from_str_radix(i.as_str(), i.radix()).ok();
        match v.and_then(|v| u64::try_from(v).ok()) {
            Some(v) if range.contains(&v) => Ok(Some((v, item))),
            _ => Err(item.error(format_args!(
                "{} is out of range (expected {} to {})",
                i.as_str(),
                range.start(),
                range.end()
            ))),
        }
    }

    /// A number between 0 and 1 (a TOML float or the integers 0 and 1).
    pub fn fraction(&self, key: &str) -> Result<Option<(f64, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        let text = match item.value.get_ref() {
            DeValue::Float(f) => f.as_str(),
            DeValue::Integer(i) => i.as_str(),
            other => {
                return Err(item.error(format_args!(
                    "expected a number from 0 to 1, found {}",
                    other.type_str()
                )))
            }
        };
        match text.replace('_', "").parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(Some((v, item))),
            _ => Err(item.error(format_args!(
                "{text} is out of range (expected a number from 0 to 1)"
            ))),
        }
    }

    /// One of `options` (by name).
    pub fn choice<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<Option<(T, Item<'a, 'i>)>, ScenarioError> {
        let Some((s, item)) = self.str(key)? else {
            return Ok(None);
        };
        match options.iter().find(|(n, _)| *n == s) {
            Some(&(_, v)) => Ok(Some((v, item))),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                Err(item.error(format_args!(
                    "unknown value {s:?} (expected {}){}",
                    one_of(&names),
                    did_you_mean(s, &names)
                )))
            }
        }
    }

    /// A string parsed with `parse`.
    pub fn parsed<T, E: fmt::Display>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<(T, Item<'a, 'i>)>, ScenarioError> {
        let Some((s, item)) = self.str(key)? else {
            return Ok(None);
        };
        match parse(s) {
            Ok(v) => Ok(Some((v, item))),
            Err(e) => Err(item.error(e)),
        }
    }

    /// An array of strings, each with its span.
    #[allow(clippy::type_complexity)]
    pub fn str_list(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<(&'a str, Range<usize>)>, Item<'a, 'i>)>, ScenarioError> {
        let Some(item) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Array(a) = item.value.get_ref() else {
            return Err(item.error(format_args!(
                "expected a list of strings, found {}",
                item.value.get_ref().type_str()
            )));
        };
        let mut out = Vec::with_capacity(a.len());
        for v in a.iter() {
            match v.get_ref() {
                DeValue::String(s) => out.push((s.as_ref(), v.span())),
                other => {
                    return Err(item.src.schema(
                        v.span(),
                        Some(&item.key),
                        format!(
                            "{}: expected a list of strings, found {} in it",
                            item.key,
                            other.type_str()
                        ),
                    ))
                }
            }
        }
        Ok(Some((out, item)))
    }
}
