//! The control socket: one JSON request per line, one JSON reply per line, over a Unix
//! stream socket.
//!
//! The server ([`ApiServer`]) knows the protocol, not what it controls: whoever runs a VM
//! implements [`ApiHandler`] (the balloon, the swapper and the VM's statistics live
//! elsewhere) and hands it to [`ApiServer::start`]. `swaplab ctl` is the client.
//!
//! # Protocol
//!
//! A client connects and writes requests, each a JSON object on one line (`\n`-terminated,
//! at most 64 KiB; a trailing `\r` is allowed, blank lines are ignored). For each request
//! the server writes exactly one reply line, in request order. Fields:
//!
//! | request | arguments | result |
//! |---|---|---|
//! | `{"cmd":"balloon.set","target":T}` | `target`: the balloon's size, i.e. memory the guest hands back to the host (virtio-balloon `num_pages` × 4 KiB, like Firecracker's `amount_mib`; not the guest's remaining memory as in QEMU's `balloon`): a string with binary units (`"256M"`, `"1G"`, `"4096"`) or an integer of bytes | handler-defined |
//! | `{"cmd":"balloon.stats"}` | — | handler-defined |
//! | `{"cmd":"swapper.status"}` | — | handler-defined |
//! | `{"cmd":"swapper.set_limit","limit":L}` | `limit`: the host swapper's new resident limit, a size like `target` | handler-defined |
//! | `{"cmd":"vm.stats"}` | — | handler-defined |
//! | `{"cmd":"vm.recent"}` | — | handler-defined (bounded: recent fault latencies, events) |
//! | `{"cmd":"guest.send","line":S}` | `line`: a string of at most 63 bytes without control bytes, sent with a `\n` to the guest on the result channel (`/dev/ttyS1`) | handler-defined |
//! | `{"cmd":"help"}` | — | `{"protocol":…,"commands":[{"cmd","args","help"}…]}` (answered by the server) |
//!
//! Any request may carry an `"id"` (any JSON value), echoed in its reply. Replies are
//! `{"ok":true,"id":ID,"result":VALUE}` or
//! `{"ok":false,"id":ID,"error":{"kind":KIND,"message":TEXT}}` (`id` left out when the
//! request had none), where `KIND` is one of
//!
//! - `parse`: not JSON (`line is not JSON: … at column N`), not an object, no string
//!   `"cmd"`, or a line longer than 64 KiB (`line longer than 64 KiB`; the server then
//!   closes the connection);
//! - `unknown_command`: `unknown command "balloon.sett"; known: balloon.set, …`;
//! - `bad_argument`: an unknown field (`unknown field "x" for balloon.set; it takes:
//!   target, id`), a missing one, or a bad value (`bad size "25X": …`);
//! - `unavailable`: the VM has no such thing (no balloon, no swapper), or the server has
//!   too many clients;
//! - `internal`: the handler failed.
//!
//! After any error except a too-long line the connection stays usable. A client may
//! pipeline requests; the server stops reading from a client whose replies it has not
//! read, without holding up other clients. Closing the write side after the last request
//! is fine (a final line without `\n` is still answered).
//!
//! Example session (`socat - UNIX-CONNECT:vm.sock`; `>` is what the client sends):
//!
//! ```text
//! > {"cmd":"balloon.set","target":"256M","id":1}
//! {"ok":true,"id":1,"result":{"target_bytes":268435456}}
//! > {"cmd":"balloon.sett"}
//! {"ok":false,"error":{"kind":"unknown_command","message":"unknown command \"balloon.sett\"; known: balloon.set, balloon.stats, swapper.status, swapper.set_limit, vm.stats, vm.recent, guest.send, help"}}
//! > {"cmd":"balloon.set","target":"25X"}
//! {"ok":false,"error":{"kind":"bad_argument","message":"bad argument to balloon.set: bad size \"25X\": unknown unit \"X\" (use K, M, G or T)"}}
//! > {"cmd": stats}
//! {"ok":false,"error":{"kind":"parse","message":"line is not JSON: expected value at column 9"}}
//! ```
//!
//! (The `balloon.set` result shown is whatever the handler returns.)

mod handler;
mod protocol;
mod server;

pub use handler::{ApiError, ApiHandler};
pub use protocol::{
    help_result, parse_request, CommandSpec, ErrorBody, ErrorKind, ProtocolError, Reply, Request,
    Size, COMMANDS, MAX_LINE,
};
pub use server::{ApiServer, ServerLimits};
