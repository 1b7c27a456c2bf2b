//! [`hostsys::netns::DelayNet`] on this host: made and removed, a dead
//! process's leftovers swept, a redis-server inside the namespace reached
//! over the veth pair and gone with its guard. The netem qdisc itself needs
//! `sch_netem`: where the kernel has none, [`hostsys::netns::available`] must
//! say so and leave nothing behind (the sandbox test covers netem).
//!
//! Needs root and iproute2 (tiers `root` and `tool`: a skip fails the run
//! where they are required).

use std::process::Command;
use std::time::Duration;

use hostsys::netns::{self, DelayNet};

fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn namespaces() -> Vec<String> {
    let (_, out) = ip(&["netns", "list"]);
    netns::parse_netns_list(&out)
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn links() -> Vec<String> {
    let (_, out) = ip(&["-o", "link"]);
    netns::parse_link_list(&out)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// What this process has made and not removed.
fn mine() -> Vec<String> {
    let pid = Some(std::process::id());
    namespaces()
        .into_iter()
        .filter(|n| netns::ns_pid(n) == pid)
        .chain(links().into_iter().filter(|n| netns::veth_pid(n) == pid))
        .collect()
}

/// Root and iproute2, or a skip through [`base::tier::skip`] (a failure
/// where the run requires those tiers).
fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        base::tier::skip(base::tier::Tier::Root, "network namespaces need root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        base::tier::skip(
            base::tier::Tier::Tool,
            "no `ip` (iproute2; scripts/setup.sh installs it)",
        );
        return false;
    }
    true
}

use base::redis_server::running_servers as redis_servers;

/// One test: the steps share the host's namespace list, so they must not
/// run at once.
#[test]
fn delay_net_is_made_swept_used_and_removed() {
    if !can_run() {
        return;
    }
    // A dead process's leftovers (pid_max is at most 2^22: 4999999 is no
    // process): a namespace and a veth pair in this namespace.
    let dead_ns = "swaplab-4999999-0";
    let dead_if = "swl4999999h0";
    assert!(ip(&["netns", "add", dead_ns]).0);
    let (ok, e) = ip(&[
        "link",
        "add",
        dead_if,
        "type",
        "veth",
        "peer",
        "name",
        "swl4999999p0",
    ]);
    assert!(ok, "{e}");

    let net = DelayNet::new().expect("DelayNet");
    assert!(!namespaces().iter().any(|n| n == dead_ns), "not swept");
    assert!(
        !links().iter().any(|n| n.starts_with("swl4999999")),
        "not swept"
    );

    // Made: the namespace, the host end here, the peer there, addresses.
    assert!(namespaces().iter().any(|n| n == net.ns()));
    assert!(links().iter().any(|n| n == net.host_if()));
    let (ok, inside) = ip(&["-n", net.ns(), "-o", "addr"]);
    assert!(ok, "{inside}");
    assert!(inside.contains(net.peer_if()), "{inside}");
    assert!(
        inside.contains(&format!("{}/30", net.ns_addr())),
        "{inside}"
    );
    assert!(inside.contains(" lo "), "{inside}");

    // A server inside, reached from here over the pair.
    let before = redis_servers();
    let mut server = base::redis_server::RedisServer::try_start_with(
        None,
        Some((net.ns(), net.ns_addr())),
        |cmd| {
            hostsys::child::ChildSetup {
                death_signal: Some(nix::sys::signal::Signal::SIGKILL),
                ..Default::default()
            }
            .apply(cmd)
        },
    )
    .expect("redis-server in the namespace (scripts/setup.sh installs it)");
    assert_eq!(server.netns(), Some(net.ns()));
    assert!(server.url().contains(&net.ns_addr().to_string()));
    assert_eq!(server.cli(&["PING"]).trim(), "PONG");
    assert!(server.running());
    // Not reachable on this namespace's loopback: it is in the other one.
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    drop(server);
    assert_eq!(redis_servers(), before, "the server is gone");

    // netem, or why not: either way the qdisc goes with the pair.
    let mut net = net;
    match netns::available() {
        Ok(()) => {
            net.set_delay(Duration::from_micros(50)).expect("netem");
            assert_eq!(net.delay(), Some(Duration::from_micros(50)));
        }
        Err(why) => {
            eprintln!("no netem here: {why}");
            assert!(why.contains("netem"), "{why}");
            let e = net.set_delay(Duration::ZERO).unwrap_err().to_string();
            assert!(e.contains("tc ") && e.contains("netem"), "{e}");
        }
    }
    assert!(
        net.set_delay(Duration::from_secs(1)).is_err(),
        "over the limit"
    );
    let name = net.ns().to_string();
    drop(net);
    assert!(!namespaces().contains(&name));
    assert_eq!(mine(), Vec::<String>::new(), "left behind");
}
