//! `host.store_url = "private"`: a `redis-server` of the run's own, started
//! on loopback where the VMM runs (in the nested sandbox, in L1) before the
//! machine is assembled and killed when the run is over ([`PrivateStore`]).
//!
//! Fault injection, to test a store that dies mid-run for real: with
//! `SWAPLAB_INJECT_STORE_KILL=N` ([`ENV_INJECT_STORE_KILL`]), a watcher kills
//! the run's private server (`SIGKILL`) once it holds N keys. The swapper's
//! next read from it fails, and the run must end as a failed run that names
//! the store, with no wrong data served.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base::lock;
use base::redis_server::RedisServer;
use scenario::{Scenario, StoreChoice, PRIVATE_STORE_URL};

use super::error::MachineError;

/// See the module's documentation.
pub const ENV_INJECT_STORE_KILL: &str = "SWAPLAB_INJECT_STORE_KILL";
/// The most keys [`ENV_INJECT_STORE_KILL`] may wait for (a 64 GiB store).
const MAX_KILL_KEYS: u64 = 1 << 24;
/// Between two key counts of the watcher.
const POLL: Duration = Duration::from_millis(20);

/// The run's private server, and the fault injector's watcher if asked for.
/// Fields drop in order: the watcher (joined, so it lets go of the server)
/// first, then the server, killed as it drops.
pub struct PrivateStore {
    _watch: Option<KillWatch>,
    _server: Arc<Mutex<RedisServer>>,
}

/// Starts the server if `spec` asks for one, and returns it with a copy of
/// `spec` whose store URL is that server's; any other scenario comes back as
/// it is. The server's directory (its log) is in `scratch`, swept by a
/// later run if this process is killed; the server itself dies with this
/// thread (its parent-death signal) if the process dies unwinding nothing.
pub fn start<'s>(
    spec: &'s Scenario,
    scratch: &Path,
) -> Result<(Option<PrivateStore>, Cow<'s, Scenario>), MachineError> {
    let private = spec.host.as_ref().is_some_and(|h| {
        h.store == StoreChoice::Redis && h.store_url.as_deref() == Some(PRIVATE_STORE_URL)
    });
    if !private {
        return Ok((None, Cow::Borrowed(spec)));
    }
    let kill_at = kill_keys(std::env::var(ENV_INJECT_STORE_KILL).ok().as_deref())
        .map_err(MachineError::PrivateStore)?;
    let server = RedisServer::try_start_in(scratch).map_err(MachineError::PrivateStore)?;
    let mut spec = spec.clone();
    if let Some(h) = spec.host.as_mut() {
        h.store_url = Some(server.url());
    }
    let server = Arc::new(Mutex::new(server));
    let watch = kill_at.map(|n| KillWatch::start(Arc::clone(&server), n));
    let store = PrivateStore {
        _watch: watch,
        _server: server,
    };
    Ok((Some(store), Cow::Owned(spec)))
}

/// [`ENV_INJECT_STORE_KILL`]'s value: unset, or keys in 1..=[`MAX_KILL_KEYS`].
fn kill_keys(value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_KILL_KEYS).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{ENV_INJECT_STORE_KILL}={v:?}: expected a number of keys from 1 to {MAX_KILL_KEYS}"
        )),
    }
}

/// Kills the server once it holds a number of keys.
struct KillWatch {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KillWatch {
    fn start(server: Arc<Mutex<RedisServer>>, keys: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("store-kill".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let held = lock(&server).dbsize();
                    if held.is_some_and(|n| n >= keys) {
                        tracing::warn!(
                            "{ENV_INJECT_STORE_KILL}: killing the run's redis-server at {keys} keys"
                        );
                        lock(&server).kill();
                        return;
                    }
                    std::thread::sleep(POLL);
                }
            })
            .ok();
        Self { done, thread }
    }
}

impl Drop for KillWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_hook_takes_a_bounded_number_of_keys() {
        assert_eq!(kill_keys(None), Ok(None));
        assert_eq!(kill_keys(Some("2000")), Ok(Some(2000)));
        for bad in ["0", "-1", "many", "", "16777217"] {
            let e = kill_keys(Some(bad)).unwrap_err();
            assert!(
                e.contains(ENV_INJECT_STORE_KILL) && e.contains("1 to"),
                "{e}"
            );
        }
    }
}
