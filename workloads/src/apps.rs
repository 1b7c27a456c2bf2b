//! The applications the literature's experiments ran, as guest commands on the
//! root disk ([`crate::image::rootfs`]): each with its size knob, its metric
//! (a regular expression over its output) and a check of its own output, so a
//! run that did not do its work cannot report a number.
//!
//! | app | what it does | `mb` | `passes` | metric |
//! |---|---|---|---|---|
//! | `sysbench-memory` | `sysbench memory`, random access over a block per thread | block size | blocks' worth of traffic ×16 | `runtime_s` |
//! | `sysbench-fileio` | `sysbench fileio` reads (`pattern` `seq` or `random`) of a prepared, checksummed file set, after dropping the page cache | file set size | reads of the whole set | `runtime_s` |
//! | `pbzip2` | compresses the first `mb` MiB of the disk's `/usr` files and decompresses them, comparing with the input | input size | rounds | `runtime_s` |
//! | `compile` | `make -j` of a generated C project (6 files of 80 loops each, `-O2`) and runs the program, checking its answer | — | builds | `runtime_s` |
//! | `dbench` | `dbench` (`client.txt` load) with 2 clients per vCPU | — | 10 s each | `throughput_mb_s` |
//! | `redis` | `redis-server` filled with `mb` MiB of values of 4000 bytes, one 4 KiB allocation each (`DEBUG POPULATE`), then `redis-benchmark` GETs of random keys (16 pipelined), so each GET reads about one page of values; checks the key count | data size | requests: keys × passes | `requests_per_s` |
//!
//! Every command prints `swaplab-app <name> ok` after its check and its
//! metric after that, as `<metric>=<value>`, so a metric only exists for a
//! checked run.

/// One application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    /// Its name in scenarios (`workload.app`).
    pub name: &'static str,
    /// One line for reports.
    pub about: &'static str,
    /// `workload.mb` when the scenario does not set it (0: it takes none).
    pub default_mb: u64,
    /// The metric's name (`runtime_s`, `throughput_mb_s`, `requests_per_s`).
    pub metric: &'static str,
    /// Whether a smaller metric is better (a runtime) or a larger one (a rate).
    pub lower_is_better: bool,
}

/// The registry.
pub const APPS: &[App] = &[
    App {
        name: "sysbench-memory",
        about: "sysbench memory: random access over a block per thread",
        default_mb: 128,
        metric: "runtime_s",
        lower_is_better: true,
    },
    App {
        name: "sysbench-fileio",
        about: "sysbench fileio: reads of a prepared, checksummed file set from a cold page cache",
        default_mb: 128,
        metric: "runtime_s",
        lower_is_better: true,
    },
    App {
        name: "pbzip2",
        about: "pbzip2: compress and decompress the disk's /usr files, output compared",
        default_mb: 32,
        metric: "runtime_s",
        lower_is_better: true,
    },
    App {
        name: "compile",
        about: "make -j of a generated C project, its program's answer checked",
        default_mb: 0,
        metric: "runtime_s",
        lower_is_better: true,
    },
    App {
        name: "dbench",
        about: "dbench: the client.txt file-server load, 2 clients per vCPU",
        default_mb: 0,
        metric: "throughput_mb_s",
        lower_is_better: false,
    },
    App {
        name: "redis",
        about: "redis-server filled with page-sized values, redis-benchmark GETs of random keys",
        default_mb: 96,
        metric: "requests_per_s",
        lower_is_better: false,
    },
];

/// The app named `name`.
pub fn find(name: &str) -> Option<&'static App> {
    APPS.iter().find(|a| a.name == name)
}

/// The names, for error messages.
pub fn names() -> Vec<&'static str> {
    APPS.iter().map(|a| a.name).collect()
}

/// What a run asks of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppParams {
    /// `workload.mb` (the app's default when the scenario gives none).
    pub mb: u64,
    /// `workload.passes`.
    pub passes: u32,
    /// The guest's vCPUs.
    pub cpus: u32,
    /// `sysbench-fileio`: sequential reads rather than random ones.
    pub sequential: bool,
    /// Seed of the apps' random choices.
    pub seed: u64,
}

/// Source files of the `compile` project (about 5 s each of one emulated vCPU
/// in the nested sandbox, a fifth of a second natively).
pub const COMPILE_FILES: u32 = 6;
/// The answer the `compile` project's program prints (its loops' sum,
/// unsigned arithmetic, so any correct compiler gives it).
pub const COMPILE_ANSWER: &str = "4006954143";

/// Times the shell command `body` and prints `runtime_s=<seconds>` after it
/// succeeded and `check` printed its line.
fn timed(name: &str, body: &str) -> String {
    format!(
        "s=$(date +%s.%N) && {body} && e=$(date +%s.%N) && echo 'swaplab-app {name} ok' && busybox awk \"BEGIN{{printf \\\"runtime_s=%.3f\\n\\\", $e-$s}}\""
    )
}

/// The guest command for `app` (run in `/root` on the root disk).
pub fn command(app: &App, p: &AppParams) -> String {
    let mb = p.mb;
    let passes = p.passes.max(1);
    let cpus = p.cpus.max(1);
    match app.name {
        "sysbench-memory" => timed(
            app.name,
            &format!(
                "sysbench memory --threads={cpus} --rand-seed={} --memory-block-size={mb}M --memory-total-size={}M --memory-access-mode=rnd run | grep -q 'total number of events'",
                p.seed,
                mb * 16 * u64::from(passes)
            ),
        ),
        "sysbench-fileio" => {
            let o = format!("--file-num=8 --file-total-size={mb}M --validate=on --rand-seed={}", p.seed);
            let mode = if p.sequential { "seqrd" } else { "rndrd" };
            // 16 KiB blocks: `passes` reads of the whole set.
            let events = mb * 64 * u64::from(passes);
            format!(
                "O='{o}' && sysbench fileio $O prepare >/dev/null && sync && echo 3 > /proc/sys/vm/drop_caches && {} && sysbench fileio $O cleanup >/dev/null",
                timed(
                    app.name,
                    &format!(
                        "sysbench fileio $O --threads={cpus} --file-test-mode={mode} --time=0 --events={events} run > fio.out && grep -q 'reads/s:' fio.out && ! grep -q FATAL fio.out"
                    )
                )
            )
        }
        "pbzip2" => format!(
            "find /usr/lib /usr/bin -type f | sort | xargs cat 2>/dev/null | head -c {mb}M > data && [ $(stat -c %s data) = {} ] && {}",
            mb << 20,
            timed(
                app.name,
                &format!(
                    "i=0 && while [ $i -lt {passes} ]; do pbzip2 -p{cpus} -c data > data.bz2 && pbzip2 -d -p{cpus} -c data.bz2 | cmp - data || exit 1; i=$((i+1)); done"
                )
            )
        ),
        "compile" => {
            let n = COMPILE_FILES;
            let last = n - 1;
            format!(
                "mkdir p && cd p && B=$(seq -f 'B(%g)' 0 79 | tr '\\n' ' ') && C=$(seq -f '+g%g(x)' 0 79 | tr -d '\\n') && i=0 && while [ $i -lt {n} ]; do printf '#define B(n) static unsigned g##n(unsigned x){{unsigned s=n;for(unsigned i=0;i<x;i++){{s+=i*n^(s>>3);if(s%%7==n%%7)s-=n;}}return s;}}\\n%s\\nunsigned f%d(unsigned x){{return %d%s;}}\\n' \"$B\" $i $i \"$C\" > f$i.c; i=$((i+1)); done && {{ echo '#include <stdio.h>'; seq -f 'unsigned f%g(unsigned);' 0 {last}; echo 'int main(void){{unsigned s=0;'; seq -f 's+=f%g(1000);' 0 {last}; echo 'printf(\"%u%c\",s,10);return 0;}}'; }} > main.c && printf 'app: $(patsubst %%.c,%%.o,$(wildcard *.c))\\n\\t$(CC) -o $@ $^\\n' > Makefile && {}",
                timed(
                    app.name,
                    &format!(
                        "i=0 && while [ $i -lt {passes} ]; do rm -f *.o app && make -s -j{cpus} CFLAGS=-O2 app && [ $(./app) = {COMPILE_ANSWER} ] || exit 1; i=$((i+1)); done"
                    )
                )
            )
        }
        "dbench" => format!(
            "dbench -c /usr/share/dbench/client.txt -t {} {} > db.out 2>&1; tail -3 db.out; grep -q '^Throughput' db.out && echo 'swaplab-app dbench ok' && sed -n 's/^Throughput \\([0-9.]*\\) MB\\/sec.*/throughput_mb_s=\\1/p' db.out",
            10 * passes,
            2 * cpus
        ),
        "redis" => {
            // A value of 4000 bytes is one 4 KiB allocation (jemalloc's size
            // class, with redis's string header): a page of values per key.
            let keys = mb * 256;
            let n = keys * u64::from(passes);
            format!(
                "redis-server --daemonize yes --save '' --appendonly no --enable-debug-command yes --logfile /root/redis.log && i=0 && until redis-cli ping >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 100 ] || exit 9; sleep 0.1; done && redis-cli debug populate {keys} key {REDIS_VALUE_BYTES} >/dev/null && [ $(redis-cli dbsize) = {keys} ] && redis-benchmark -n {n} -P 16 -q eval \"return redis.call('get','key:'..math.random(0,{}))\" 0 > rb.out; st=$?; redis-cli shutdown nosave; [ $st = 0 ] && cat rb.out && echo 'swaplab-app redis ok' && sed -n 's/.*: \\([0-9.]*\\) requests per second.*/requests_per_s=\\1/p' rb.out",
                keys - 1
            )
        }
        other => format!("echo 'unknown app {other}' >&2; exit 2"),
    }
}

/// Bytes of each redis value: with its header, one 4 KiB allocation.
pub const REDIS_VALUE_BYTES: u32 = 4000;

/// The metric's regular expression for `app`: `<metric>=<number>` on a line
/// of its own, which the command prints only after its check.
pub fn metric_pattern(app: &App) -> String {
    format!(r"^{}=([0-9.]+)$", app.metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_app_has_a_command_that_fits_the_kernel_command_line() {
        for app in APPS {
            let p = AppParams {
                mb: app.default_mb.max(1),
                passes: 3,
                cpus: 2,
                sequential: false,
                seed: 1,
            };
            let c = command(app, &p);
            // With the runner's wrapper (reporter, exit status) and base64,
            // the kernel's 2047 bytes hold about 1100 bytes of command.
            assert!(c.len() < 1000, "{}: {} bytes", app.name, c.len());
            assert!(c.contains(&format!("swaplab-app {} ok", app.name)), "{c}");
            assert_eq!(find(app.name), Some(app));
        }
        assert_eq!(find("nope"), None);
        assert_eq!(names().len(), APPS.len());
    }

    #[test]
    fn sizes_reach_the_command() {
        let p = AppParams {
            mb: 64,
            passes: 2,
            cpus: 3,
            sequential: true,
            seed: 9,
        };
        let fio = command(find("sysbench-fileio").unwrap(), &p);
        assert!(
            fio.contains("--file-total-size=64M") && fio.contains("--events=8192"),
            "{fio}"
        );
        assert!(
            fio.contains("--file-test-mode=seqrd") && fio.contains("--threads=3"),
            "{fio}"
        );
        let redis = command(find("redis").unwrap(), &p);
        assert!(
            redis.contains("populate 16384 key 4000") && redis.contains("-n 32768"),
            "{redis}"
        );
        let db = command(find("dbench").unwrap(), &p);
        assert!(db.contains("-t 20 6"), "{db}");
        assert_eq!(
            metric_pattern(find("dbench").unwrap()),
            r"^throughput_mb_s=([0-9.]+)$"
        );
    }
}
