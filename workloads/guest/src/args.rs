//! A small `--flag value` parser for the guest subcommands (no clap: the static guest
//! build stays std-only).

use super::error::GuestError;

fn usage(msg: String) -> GuestError {
    GuestError::Usage(msg)
}

/// The flags of one subcommand: every flag takes a value, as `--name value` or
/// `--name=value`; each may be given once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    cmd: String,
    pairs: Vec<(String, String)>,
}

impl Flags {
    /// Parse `args` of subcommand `cmd`, accepting only the flags in `known`.
    pub fn parse(cmd: &str, args: &[String], known: &[&str]) -> Result<Self, GuestError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            if !known.contains(&name) {
                return Err(usage(format!("{cmd}: unknown flag {arg:?}")));
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{cmd}: {name} needs a value")))?,
            };
            if pairs.iter().any(|(n, _)| n == name) {
                return Err(usage(format!("{cmd}: {name} given twice")));
            }
            pairs.push((name.to_string(), value));
        }
        Ok(Self {
            cmd: cmd.to_string(),
            pairs,
        })
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` as an integer in `min..=max`, if given.
    pub fn u64_in(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, GuestError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let n: u64 = v
            .parse()
            .map_err(|_| usage(format!("{}: {name} {v:?} is not a number", self.cmd)))?;
        if !(min..=max).contains(&n) {
            return Err(usage(format!(
                "{}: {name} {n} is out of range ({min}..={max})",
                self.cmd
            )));
        }
        Ok(Some(n))
    }

    /// `name` as a number in `min..=max`, if given.
    pub fn f64_in(&self, name: &str, min: f64, max: f64) -> Result<Option<f64>, GuestError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(x) if x >= min && x <= max => Ok(Some(x)),
            _ => Err(usage(format!(
                "{}: {name} {v:?} must be a number from {min} to {max}",
                self.cmd
            ))),
        }
    }

    /// The size in MiB (`--mb`), required, 1 MiB to 1 TiB and addressable here.
    pub fn mb(&self) -> Result<u64, GuestError> {
        let mb = self
            .u64_in("--mb", 1, 1 << 20)?
            .ok_or_else(|| usage(format!("{} needs --mb N", self.cmd)))?;
        if usize::try_from(mb << 20).is_err() {
            return Err(usage(format!("{}: --mb {mb} is too large here", self.cmd)));
        }
        Ok(mb)
    }
}

/// Split `--out PATH` / `--out=PATH` (anywhere) from `args`.
pub fn split_out(args: &[String]) -> Result<(Option<String>, Vec<String>), GuestError> {
    let mut out = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if a == "--out" {
            Some(
                it.next()
                    .cloned()
                    .ok_or_else(|| usage("--out needs a path".into()))?,
            )
        } else {
            a.strip_prefix("--out=").map(str::to_string)
        };
        match value {
            Some(_) if out.is_some() => return Err(usage("--out given twice".into())),
            Some(v) if v.is_empty() => return Err(usage("--out needs a path".into())),
            Some(v) => out = Some(v),
            None => rest.push(a.clone()),
        }
    }
    Ok((out, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn flags(a: &[&str]) -> Result<Flags, GuestError> {
        Flags::parse("t", &strings(a), &["--mb", "--ratio", "--n"])
    }

    #[test]
    fn parses_values_and_rejects_bad_ones() {
        let f = flags(&["--mb", "4", "--ratio=0.5"]).unwrap();
        assert_eq!(f.mb().unwrap(), 4);
        assert_eq!(f.f64_in("--ratio", 0.0, 1.0).unwrap(), Some(0.5));
        assert_eq!(f.u64_in("--n", 0, 9).unwrap(), None);
        let usage_err = |r: Result<Flags, GuestError>, needle: &str| match r {
            Err(GuestError::Usage(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{other:?}"),
        };
        usage_err(flags(&["--bogus", "1"]), "unknown flag");
        usage_err(flags(&["--mb"]), "needs a value");
        usage_err(flags(&["--mb", "1", "--mb=2"]), "given twice");
        let bad = |a: &[&str], check: &dyn Fn(&Flags) -> Result<(), GuestError>| {
            let f = flags(a).unwrap();
            assert!(matches!(check(&f), Err(GuestError::Usage(_))), "{a:?}");
        };
        bad(&[], &|f| f.mb().map(drop));
        bad(&["--mb", "0"], &|f| f.mb().map(drop));
        bad(&["--mb", "x"], &|f| f.mb().map(drop));
        bad(&["--mb", "2000000"], &|f| f.mb().map(drop));
        bad(&["--ratio", "1.5"], &|f| {
            f.f64_in("--ratio", 0.0, 1.0).map(drop)
        });
        bad(&["--ratio", "NaN"], &|f| {
            f.f64_in("--ratio", 0.0, 1.0).map(drop)
        });
        bad(&["--n", "10"], &|f| f.u64_in("--n", 0, 9).map(drop));
    }

    #[test]
    fn out_is_taken_from_anywhere() {
        let (o, rest) =
            split_out(&strings(&["touch", "--out", "/dev/ttyS1", "--mb", "1"])).unwrap();
        assert_eq!(o.as_deref(), Some("/dev/ttyS1"));
        assert_eq!(rest, strings(&["touch", "--mb", "1"]));
        let (o, rest) = split_out(&strings(&["--out=-", "info"])).unwrap();
        assert_eq!((o.as_deref(), rest), (Some("-"), strings(&["info"])));
        assert_eq!(split_out(&strings(&["info"])).unwrap().0, None);
        for bad in [&["--out"][..], &["--out="], &["--out", "a", "--out", "b"]] {
            assert!(matches!(
                split_out(&strings(bad)),
                Err(GuestError::Usage(_))
            ));
        }
    }
}
