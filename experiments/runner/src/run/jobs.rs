//! Splitting a matrix: `--jobs` (shards in parallel sandboxes on this host)
//! and `--shard I/N` (one shard, to spread a matrix over machines).

use std::path::{Path, PathBuf};

/// Most shards (`--jobs`, `--shard`).
pub const MAX_SHARDS: u32 = 16;

/// `--shard I/N`: the runs of the matrix (every repetition of every scenario,
/// in order, counted from 1) whose number is I modulo N (N for 0): every Nth
/// run, so each shard gets its share of every scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1..=count.
    pub index: u32,
    /// 2..=[`MAX_SHARDS`].
    pub count: u32,
}

impl Shard {
    /// Whether the matrix's `nth` run (from 1) is this shard's.
    pub fn has(&self, nth: u32) -> bool {
        (nth - 1) % self.count + 1 == self.index
    }
}

/// The shards of `--jobs` take runs first come, first served, so that they
/// end together however long each run takes (every Nth run left one shard
/// 84 s behind the other in `papers --quick`). A run is claimed by creating
/// its directory `<out>/shards/claims/<nth>/` (mkdir is atomic on the host's
/// filesystem, also through L1's 9p mount) and, in it, a file named after
/// the shard, by which a shard resumed in a fresh L1 knows its own runs.
#[derive(Debug)]
pub struct Claims {
    dir: PathBuf,
    shard: Shard,
}

impl Claims {
    /// The claims of `shard` in the matrix writing to `out`.
    pub fn new(out: &Path, shard: Shard) -> std::io::Result<Claims> {
        let dir = Self::dir(out);
        std::fs::create_dir_all(&dir)?;
        Ok(Claims { dir, shard })
    }

    /// Where the claims of the matrix writing to `out` are.
    pub fn dir(out: &Path) -> PathBuf {
        out.join("shards").join("claims")
    }

    /// Whether the matrix's `nth` run is this shard's: claimed by it before
    /// (an earlier attempt), or now. A claim that cannot be made (an I/O
    /// error) leaves the run to whoever gathers the shards.
    pub fn take(&self, nth: u32) -> std::io::Result<bool> {
        let run = self.dir.join(nth.to_string());
        let mine = run.join(self.shard.index.to_string());
        if mine.exists() {
            return Ok(true);
        }
        match std::fs::create_dir(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        }
        std::fs::write(&mine, b"")?;
        Ok(true)
    }

    /// About how many runs of `total` a shard takes (for its progress
    /// display; the display's total is set to what it ran at the end).
    pub fn share(&self, total: u32) -> u32 {
        total.div_ceil(self.shard.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("{text:?}: expected I/N, 1 <= I <= N, 2 <= N <= {MAX_SHARDS} (e.g. 1/2)");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if !(2..=MAX_SHARDS).contains(&count) || !(1..=count).contains(&index) {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `--jobs`: how many shards run at once, each in its own L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jobs {
    /// One shard per CPU this process may use, when the matrix runs in the
    /// nested sandbox and has runs enough (see [`Jobs::resolve`]).
    #[default]
    Auto,
    /// This many (1..=[`MAX_SHARDS`]).
    N(u32),
}

impl Jobs {
    /// The number of shards for a matrix of `runs` runs on a host with
    /// `cpus` CPUs. `shardable`: the matrix runs in nested sandboxes started
    /// here, without `--shard` or `--api-sock`. `Auto` is one shard per CPU
    /// (each L1 has one vCPU and keeps it busy: more would only share the
    /// CPUs), at most one per run and [`MAX_SHARDS`]; otherwise 1.
    pub fn resolve(self, shardable: bool, cpus: u32, runs: u32) -> u32 {
        match self {
            Jobs::N(n) => n,
            Jobs::Auto if shardable => cpus.min(runs).clamp(1, MAX_SHARDS),
            Jobs::Auto => 1,
        }
    }

    /// Whether a number above 1 was asked for.
    pub fn explicit_parallel(self) -> bool {
        matches!(self, Jobs::N(n) if n > 1)
    }
}

impl std::str::FromStr for Jobs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "auto" {
            return Ok(Jobs::Auto);
        }
        match text.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(Jobs::N(n)),
            _ => Err(format!(
                "{text:?}: expected auto or a number of shards from 1 to {MAX_SHARDS}"
            )),
        }
    }
}

impl std::fmt::Display for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jobs::Auto => f.write_str("auto"),
            Jobs::N(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_is_claimed_once_and_a_resumed_shard_keeps_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = |index| Claims::new(tmp.path(), Shard { index, count: 2 }).unwrap();
        let (one, two) = (shard(1), shard(2));
        // Whoever asks first takes a run.
        assert!(one.take(1).unwrap());
        assert!(!two.take(1).unwrap());
        assert!(two.take(2).unwrap());
        assert!(two.take(3).unwrap());
        assert!(!one.take(2).unwrap() && !one.take(3).unwrap());
        // A fresh attempt of shard 2 (its L1 died) finds its runs still its own.
        let again = shard(2);
        assert!(again.take(3).unwrap() && !again.take(1).unwrap());
        assert!(one.take(4).unwrap());
        assert_eq!(one.share(27), 14);
        // Runs claimed at once from many threads: each by exactly one.
        let claims: Vec<Claims> = (1..=4)
            .map(|i| Claims::new(tmp.path(), Shard { index: i, count: 4 }).unwrap())
            .collect();
        let taken: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = claims
                .iter()
                .map(|c| s.spawn(move || (10..200).filter(|&n| c.take(n).unwrap()).count() as u32))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.iter().sum::<u32>(), 190, "{taken:?}");
    }

    #[test]
    fn jobs_parse_auto_and_bounded_numbers_only() {
        assert_eq!("auto".parse::<Jobs>(), Ok(Jobs::Auto));
        assert_eq!("1".parse::<Jobs>(), Ok(Jobs::N(1)));
        assert_eq!("16".parse::<Jobs>(), Ok(Jobs::N(16)));
        for bad in ["0", "17", "-1", "two", "", "4294967296"] {
            let e = bad.parse::<Jobs>().unwrap_err();
            assert!(e.contains("auto") && e.contains("16"), "{bad}: {e}");
        }
        assert_eq!(Jobs::Auto.to_string(), "auto");
        assert_eq!(Jobs::N(3).to_string(), "3");
    }

    #[test]
    fn auto_is_one_shard_per_cpu_only_where_shards_can_run() {
        assert_eq!(Jobs::Auto.resolve(true, 2, 27), 2);
        assert_eq!(Jobs::Auto.resolve(true, 64, 117), MAX_SHARDS);
        assert_eq!(Jobs::Auto.resolve(true, 8, 3), 3);
        assert_eq!(Jobs::Auto.resolve(true, 2, 1), 1);
        assert_eq!(Jobs::Auto.resolve(true, 0, 5), 1);
        assert_eq!(Jobs::Auto.resolve(false, 8, 27), 1);
        assert_eq!(Jobs::N(4).resolve(true, 2, 27), 4);
        assert!(Jobs::N(2).explicit_parallel());
        assert!(!Jobs::N(1).explicit_parallel() && !Jobs::Auto.explicit_parallel());
    }

    #[test]
    fn shards_take_every_nth_run_and_parse_from_i_over_n() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 3 });
        assert_eq!(s.to_string(), "2/3");
        let mine: Vec<u32> = (1..=9).filter(|&n| s.has(n)).collect();
        assert_eq!(mine, [2, 5, 8]);
        // Every run in exactly one shard.
        for n in 1..=50 {
            let owners = (1..=4)
                .filter(|&i| Shard { index: i, count: 4 }.has(n))
                .count();
            assert_eq!(owners, 1, "run {n}");
        }
        for bad in ["0/2", "3/2", "1/1", "1/17", "1", "a/b", "1/2/3", ""] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("expected I/N"), "{bad}: {e}");
        }
    }
}
