//! The control-socket protocol: one JSON request per line in, one JSON reply per line out.
//!
//! Pure data and parsing, no I/O: [`parse_request`] turns one line into an optional id
//! and a [`Request`] (or a [`ProtocolError`] whose [`ErrorKind`] goes into the reply);
//! [`Reply`] is what goes back. [`COMMANDS`] is the command table `help` prints and
//! error messages quote. The wire format is documented in [`crate::api`].

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// The longest request line the server accepts, in bytes, without its newline.
pub const MAX_LINE: usize = 64 * 1024;

/// A byte count given as a string in the workspace size grammar (`"256M"`, `"1G"`,
/// `"4096"`, binary units; see [`base::size`]) or a JSON integer.
///
/// Serialized as a plain integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"256M\", \"1G\" or an integer number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("bad size {v}: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "bad size {v}: must be a whole number of bytes or a string like \"256M\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                base::size::parse(v)
                    .map(Size)
                    .map_err(|why| E::custom(format!("bad size \"{v}\": {why}")))
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// One request, as the `"cmd"` field names it. The optional `"id"` is not part of it:
/// [`parse_request`] returns it separately so every reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", deny_unknown_fields)]
pub enum Request {
    /// Set the balloon's target size: memory the guest is asked to hand back to the host.
    #[serde(rename = "balloon.set")]
    BalloonSet {
        /// Target balloon size in bytes.
        target: Size,
    },
    /// The balloon's current and target size and the guest's memory statistics.
    #[serde(rename = "balloon.stats")]
    BalloonStats,
    /// The host swapper's status (residency, counters, per-path latency).
    #[serde(rename = "swapper.status")]
    SwapperStatus,
    /// Change the host swapper's resident limit while the VM runs.
    #[serde(rename = "swapper.set_limit")]
    SwapperSetLimit {
        /// The new limit in bytes.
        limit: Size,
    },
    /// VM statistics (exits by reason, KVM stats, uptime).
    #[serde(rename = "vm.stats")]
    VmStats,
    /// Recent host fault latencies per path and recent events (bounded).
    #[serde(rename = "vm.recent")]
    VmRecent,
    /// Send one line to the guest on the result channel (it reads `/dev/ttyS1`).
    #[serde(rename = "guest.send")]
    GuestSend {
        /// The line, without its line end (at most 63 bytes, no control bytes).
        line: String,
    },
    /// The list of commands; the server answers it itself.
    #[serde(rename = "help")]
    Help,
}

impl Request {
    /// The command name as it appears in `"cmd"`.
    pub fn name(&self) -> &'static str {
        match self {
            Request::BalloonSet { .. } => "balloon.set",
            Request::BalloonStats => "balloon.stats",
            Request::SwapperStatus => "swapper.status",
            Request::SwapperSetLimit { .. } => "swapper.set_limit",
            Request::VmStats => "vm.stats",
            Request::VmRecent => "vm.recent",
            Request::GuestSend { .. } => "guest.send",
            Request::Help => "help",
        }
    }

    /// The request as one JSON line, without the newline.
    pub fn to_line(&self) -> String {
        // A derived Serialize over integers and fixed strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One entry of the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    /// The `"cmd"` value.
    pub cmd: &'static str,
    /// Its argument fields (all required) with a description of each.
    pub args: &'static [(&'static str, &'static str)],
    /// What it does.
    pub help: &'static str,
}

/// Every command the protocol knows, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        cmd: "balloon.set",
        args: &[(
            "target",
            "balloon size: \"256M\", \"1G\" or an integer of bytes",
        )],
        help: "set the balloon's target size (memory the guest hands back to the host)",
    },
    CommandSpec {
        cmd: "balloon.stats",
        args: &[],
        help: "balloon size and target, and the guest's memory statistics",
    },
    CommandSpec {
        cmd: "swapper.status",
        args: &[],
        help: "the host swapper's status: residency, counters, per-path fault latency",
    },
    CommandSpec {
        cmd: "swapper.set_limit",
        args: &[(
            "limit",
            "resident limit: \"128M\" or an integer of bytes, at most the starting one",
        )],
        help: "change the host swapper's resident limit while the VM runs",
    },
    CommandSpec {
        cmd: "vm.stats",
        args: &[],
        help: "VM statistics: exits by reason, KVM stats",
    },
    CommandSpec {
        cmd: "vm.recent",
        args: &[],
        help: "recent host fault latencies per path and recent events (bounded)",
    },
    CommandSpec {
        cmd: "guest.send",
        args: &[(
            "line",
            "one line for the guest program reading /dev/ttyS1 (at most 63 bytes)",
        )],
        help: "send a line to the guest on the result channel (e.g. the swaplab-guest agent)",
    },
    CommandSpec {
        cmd: "help",
        args: &[],
        help: "this list",
    },
];

/// The `help` reply's result: the command table and a one-line protocol summary.
pub fn help_result() -> Value {
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|c| {
            let args: Map<String, Value> = c
                .args
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            serde_json::json!({ "cmd": c.cmd, "args": args, "help": c.help })
        })
        .collect();
    serde_json::json!({
        "protocol": "one JSON object per line: {\"cmd\":NAME, ARGS..., \"id\":ANY (optional, echoed)}",
        "commands": commands,
    })
}

fn known_commands() -> String {
    COMMANDS
        .iter()
        .map(|c| c.cmd)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a reply's `error.kind` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not a JSON object with a string `"cmd"`, or is too long.
    Parse,
    /// `"cmd"` names no command.
    UnknownCommand,
    /// A missing, unknown or malformed argument field.
    BadArgument,
    /// What the command asks about is not there (e.g. the VM has no balloon).
    Unavailable,
    /// The server or the handler failed.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Parse => "parse",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::BadArgument => "bad_argument",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        })
    }
}

/// Why a request line was rejected before reaching a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line is not JSON.
    #[error("line is not JSON: {message} at column {column}")]
    NotJson {
        /// serde_json's description, without its position.
        message: String,
        /// 1-based column (byte) of the error.
        column: usize,
    },
    /// The line is JSON but not an object.
    #[error("request must be a JSON object like {{\"cmd\":\"help\"}}, got {0}")]
    NotObject(&'static str),
    /// No `"cmd"` field.
    #[error("missing \"cmd\" field; known commands: {}", known_commands())]
    MissingCmd,
    /// `"cmd"` is not a string.
    #[error("\"cmd\" must be a string, got {0}")]
    CmdNotString(&'static str),
    /// `"cmd"` names no command.
    #[error("unknown command \"{0}\"; known: {known}", known = known_commands())]
    UnknownCommand(String),
    /// A field the command does not take.
    #[error("unknown field \"{field}\" for {cmd}; it takes: {accepted}")]
    UnknownField {
        /// The command.
        cmd: &'static str,
        /// The offending field.
        field: String,
        /// What it accepts (its arguments and `id`).
        accepted: String,
    },
    /// A required argument is missing.
    #[error("{cmd} needs \"{field}\" ({what})")]
    MissingField {
        /// The command.
        cmd: &'static str,
        /// The missing field.
        field: &'static str,
        /// Its description.
        what: &'static str,
    },
    /// An argument has a bad value.
    #[error("bad argument to {cmd}: {message}")]
    BadValue {
        /// The command.
        cmd: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The line exceeds [`MAX_LINE`].
    #[error("line longer than 64 KiB")]
    LineTooLong,
}

impl ProtocolError {
    /// The reply's error kind for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProtocolError::NotJson { .. }
            | ProtocolError::NotObject(_)
            | ProtocolError::MissingCmd
            | ProtocolError::CmdNotString(_)
            | ProtocolError::LineTooLong => ErrorKind::Parse,
            ProtocolError::UnknownCommand(_) => ErrorKind::UnknownCommand,
            ProtocolError::UnknownField { .. }
            | ProtocolError::MissingField { .. }
            | ProtocolError::BadValue { .. } => ErrorKind::BadArgument,
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without the " at line L column C" it appends.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Parse one request line (without its newline).
///
/// Returns the request's `"id"` (if it was a JSON object with one, so that even an error
/// reply can echo it) and the request or why it was rejected.
pub fn parse_request(line: &[u8]) -> (Option<Value>, Result<Request, ProtocolError>) {
    if line.len() > MAX_LINE {
        return (None, Err(ProtocolError::LineTooLong));
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let err = ProtocolError::NotJson {
                message: strip_position(&e),
                column: e.column(),
            };
            return (None, Err(err));
        }
    };
    let mut map = match value {
        Value::Object(map) => map,
        other => return (None, Err(ProtocolError::NotObject(json_type(&other)))),
    };
    let id = map.remove("id");
    (id, parse_fields(map))
}

fn parse_fields(mut map: Map<String, Value>) -> Result<Request, ProtocolError> {
    let name = match map.remove("cmd") {
        None => return Err(ProtocolError::MissingCmd),
        Some(Value::String(s)) => s,
        Some(other) => return Err(ProtocolError::CmdNotString(json_type(&other))),
    };
    let spec = COMMANDS
        .iter()
        .find(|c| c.cmd == name)
        .ok_or(ProtocolError::UnknownCommand(name))?;
    if let Some(field) = map.keys().find(|k| !spec.args.iter().any(|(a, _)| a == k)) {
        let mut accepted: Vec<&str> = spec.args.iter().map(|(a, _)| *a).collect();
        accepted.push("id");
        return Err(ProtocolError::UnknownField {
            cmd: spec.cmd,
            field: field.clone(),
            accepted: accepted.join(", "),
        });
    }
    if let Some((field, what)) = spec.args.iter().find(|(a, _)| !map.contains_key(*a)) {
        return Err(ProtocolError::MissingField {
            cmd: spec.cmd,
            field,
            what,
        });
    }
    map.insert("cmd".into(), Value::String(spec.cmd.into()));
    serde_json::from_value(Value::Object(map)).map_err(|e| ProtocolError::BadValue {
        cmd: spec.cmd,
        message: e.to_string(),
    })
}

/// The `error` object of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The class of error.
    pub kind: ErrorKind,
    /// A sentence for a human.
    pub message: String,
}

/// One reply: the request's id (echoed when it had one) and a result or an error.
///
/// On the wire: `{"ok":true,"id":ID,"result":VALUE}` or
/// `{"ok":false,"id":ID,"error":{"kind":KIND,"message":TEXT}}`; `id` is left out when the
/// request had none (or could not be parsed far enough to find it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireReply", into = "WireReply")]
pub struct Reply {
    /// The request's `"id"`, if it had one.
    pub id: Option<Value>,
    /// The result, or the error.
    pub outcome: Result<Value, ErrorBody>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: Option<Value>, result: Value) -> Reply {
        Reply {
            id,
            outcome: Ok(result),
        }
    }

    /// A failed reply.
    pub fn error(id: Option<Value>, kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply {
            id,
            outcome: Err(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The reply as one JSON line, without the newline.
    pub fn to_line(&self) -> String {
        // Serializing a serde_json::Value tree and plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The reply pretty-printed over several lines.
    pub fn to_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse a reply line (what a client does).
    pub fn from_line(line: &str) -> Result<Reply, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// The reply as it is laid out on the wire.
#[derive(Serialize, Deserialize)]
struct WireReply {
    ok: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    id: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

/// A field that is present is `Some`, even when it is `null` (absent ones get the default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl TryFrom<WireReply> for Reply {
    type Error = String;

    fn try_from(w: WireReply) -> Result<Reply, String> {
        let outcome = match (w.ok, w.result, w.error) {
            (true, Some(r), None) => Ok(r),
            (false, None, Some(e)) => Err(e),
            (true, _, _) => return Err("an ok reply needs \"result\" and no \"error\"".into()),
            (false, _, _) => return Err("a failed reply needs \"error\" and no \"result\"".into()),
        };
        Ok(Reply { id: w.id, outcome })
    }
}

impl From<Reply> for WireReply {
    fn from(r: Reply) -> WireReply {
        let (ok, result, error) = match r.outcome {
            Ok(v) => (true, Some(v), None),
            Err(e) => (false, None, Some(e)),
        };
        WireReply {
            ok,
            id: r.id,
            result,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(line: &str) -> (Option<Value>, Result<Request, ProtocolError>) {
        parse_request(line.as_bytes())
    }

    fn err(line: &str) -> ProtocolError {
        parse(line).1.expect_err(line)
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse(r#"{"cmd":"balloon.set","target":"256M"}"#).1,
            Ok(Request::BalloonSet {
                target: Size(256 << 20)
            })
        );
        assert_eq!(
            parse(r#"{"cmd":"balloon.set","target":4096}"#).1,
            Ok(Request::BalloonSet { target: Size(4096) })
        );
        assert_eq!(
            parse(r#"{"cmd":"balloon.set","target":"1g"}"#).1,
            Ok(Request::BalloonSet {
                target: Size(1 << 30)
            })
        );
        assert_eq!(
            parse(r#"{"cmd":"balloon.stats"}"#).1,
            Ok(Request::BalloonStats)
        );
        assert_eq!(
            parse(r#" {"cmd":"swapper.status"} "#).1,
            Ok(Request::SwapperStatus)
        );
        assert_eq!(parse(r#"{"cmd":"vm.stats"}"#).1, Ok(Request::VmStats));
        assert_eq!(parse(r#"{"cmd":"vm.recent"}"#).1, Ok(Request::VmRecent));
        assert_eq!(
            parse(r#"{"cmd":"swapper.set_limit","limit":"96M"}"#).1,
            Ok(Request::SwapperSetLimit {
                limit: Size(96 << 20)
            })
        );
        assert_eq!(
            parse(r#"{"cmd":"guest.send","line":"start 64"}"#).1,
            Ok(Request::GuestSend {
                line: "start 64".into()
            })
        );
        assert_eq!(
            err(r#"{"cmd":"guest.send","line":5}"#).kind(),
            ErrorKind::BadArgument
        );
        assert_eq!(parse(r#"{"cmd":"help"}"#).1, Ok(Request::Help));
    }

    #[test]
    fn table_and_enum_agree() {
        let all = [
            Request::BalloonSet { target: Size(1) },
            Request::BalloonStats,
            Request::SwapperStatus,
            Request::SwapperSetLimit { limit: Size(2) },
            Request::VmStats,
            Request::VmRecent,
            Request::GuestSend { line: "x".into() },
            Request::Help,
        ];
        assert_eq!(all.len(), COMMANDS.len());
        for (req, spec) in all.iter().zip(COMMANDS) {
            assert_eq!(req.name(), spec.cmd);
            let line = req.to_line();
            assert_eq!(parse(&line).1.as_ref(), Ok(req), "{line}");
        }
        assert_eq!(
            Request::BalloonSet {
                target: Size(256 << 20)
            }
            .to_line(),
            r#"{"cmd":"balloon.set","target":268435456}"#
        );
        assert_eq!(Request::Help.to_line(), r#"{"cmd":"help"}"#);
    }

    #[test]
    fn id_is_returned_whatever_its_type() {
        for id in [json!(7), json!("abc"), json!(null), json!({"a": [1]})] {
            let line = json!({"cmd": "help", "id": id}).to_string();
            let (got, req) = parse(&line);
            assert_eq!(got, Some(id));
            assert_eq!(req, Ok(Request::Help));
        }
        // The id comes back even when the command is wrong.
        let (id, req) = parse(r#"{"id":3,"cmd":"nope"}"#);
        assert_eq!(id, Some(json!(3)));
        assert!(req.is_err());
        assert_eq!(parse(r#"{"cmd":"help"}"#).0, None);
    }

    #[test]
    fn not_json_names_the_column() {
        let e = err(r#"{"cmd": help}"#);
        assert_eq!(e.kind(), ErrorKind::Parse);
        let msg = e.to_string();
        assert!(msg.starts_with("line is not JSON: "), "{msg}");
        assert!(msg.ends_with("at column 9"), "{msg}");
        assert!(!msg.contains("line 1"), "{msg}");
        assert_eq!(err("").kind(), ErrorKind::Parse);
        assert_eq!(err("\u{1}").kind(), ErrorKind::Parse);
        assert!(matches!(
            parse_request(b"{\"cmd\":\"\xff\"}").1,
            Err(ProtocolError::NotJson { .. })
        ));
    }

    #[test]
    fn the_module_doc_example_is_accurate() {
        assert_eq!(
            err(r#"{"cmd": stats}"#).to_string(),
            "line is not JSON: expected value at column 9"
        );
        assert_eq!(
            err(r#"{"cmd":"balloon.set","target":"25X"}"#).to_string(),
            "bad argument to balloon.set: bad size \"25X\": unknown unit \"X\" (use K, M, G or T)"
        );
    }

    #[test]
    fn structure_errors_are_parse_errors() {
        assert_eq!(
            err("[1,2]").to_string(),
            r#"request must be a JSON object like {"cmd":"help"}, got an array"#
        );
        assert_eq!(err("42").kind(), ErrorKind::Parse);
        let e = err(r#"{"id":1}"#);
        assert_eq!(e, ProtocolError::MissingCmd);
        assert!(e.to_string().contains("balloon.set"), "{e}");
        assert_eq!(
            err(r#"{"cmd":5}"#).to_string(),
            "\"cmd\" must be a string, got a number"
        );
    }

    #[test]
    fn unknown_command_lists_known_ones() {
        let e = err(r#"{"cmd":"balloon.sett","target":1}"#);
        assert_eq!(e.kind(), ErrorKind::UnknownCommand);
        assert_eq!(
            e.to_string(),
            "unknown command \"balloon.sett\"; known: balloon.set, balloon.stats, \
             swapper.status, swapper.set_limit, vm.stats, vm.recent, guest.send, help"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = err(r#"{"cmd":"balloon.set","target":"1M","force":true}"#);
        assert_eq!(e.kind(), ErrorKind::BadArgument);
        assert_eq!(
            e.to_string(),
            "unknown field \"force\" for balloon.set; it takes: target, id"
        );
        let e = err(r#"{"cmd":"vm.stats","verbose":1}"#);
        assert_eq!(
            e.to_string(),
            "unknown field \"verbose\" for vm.stats; it takes: id"
        );
        let e = err(r#"{"cmd":"balloon.set"}"#);
        assert_eq!(e.kind(), ErrorKind::BadArgument);
        assert!(
            e.to_string().starts_with("balloon.set needs \"target\""),
            "{e}"
        );
    }

    #[test]
    fn bad_sizes_are_bad_arguments() {
        for (target, needle) in [
            (r#""25X""#, r#"bad size "25X": unknown unit "X""#),
            (r#""""#, "empty size"),
            (r#""-1M""#, "expected a number"),
            ("-5", "must not be negative"),
            ("1.5", "whole number"),
            (r#""99999999999T""#, "too large"),
            ("true", "invalid type: boolean"),
            ("null", "invalid type: null"),
        ] {
            let line = format!(r#"{{"cmd":"balloon.set","target":{target}}}"#);
            let e = err(&line);
            assert_eq!(e.kind(), ErrorKind::BadArgument, "{line}");
            let msg = e.to_string();
            assert!(msg.starts_with("bad argument to balloon.set: "), "{msg}");
            assert!(msg.contains(needle), "{line}: {msg} lacks {needle}");
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        use base::size::parse as parse_size;
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn too_long_line_is_refused_before_parsing() {
        let long = vec![b' '; MAX_LINE + 1];
        let e = parse_request(&long).1.unwrap_err();
        assert_eq!(e, ProtocolError::LineTooLong);
        assert_eq!(e.to_string(), "line longer than 64 KiB");
        assert_eq!(e.kind(), ErrorKind::Parse);
        // Exactly MAX_LINE bytes is still a line.
        let mut ok = br#"{"cmd":"help"}"#.to_vec();
        ok.resize(MAX_LINE, b' ');
        assert_eq!(parse_request(&ok).1, Ok(Request::Help));
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let r = Reply::ok(Some(json!(1)), json!({"a": 2}));
        assert_eq!(r.to_line(), r#"{"ok":true,"id":1,"result":{"a":2}}"#);
        let r = Reply::error(None, ErrorKind::UnknownCommand, "no");
        assert_eq!(
            r.to_line(),
            r#"{"ok":false,"error":{"kind":"unknown_command","message":"no"}}"#
        );
        for r in [
            Reply::ok(None, json!(null)),
            Reply::ok(Some(json!(null)), json!({})),
            Reply::ok(Some(json!("x")), json!([1])),
            Reply::error(Some(json!(9)), ErrorKind::Unavailable, "gone"),
        ] {
            assert_eq!(Reply::from_line(&r.to_line()).unwrap(), r);
            assert!(!r.to_line().contains('\n'));
        }
        assert!(Reply::from_line(r#"{"ok":true}"#).is_err());
        assert!(Reply::from_line(r#"{"ok":false,"result":1}"#).is_err());
        assert!(Reply::from_line(
            r#"{"ok":true,"result":1,"error":{"kind":"parse","message":""}}"#
        )
        .is_err());
    }

    #[test]
    fn help_lists_every_command_with_its_arguments() {
        let h = help_result();
        let cmds = h["commands"].as_array().unwrap();
        assert_eq!(cmds.len(), COMMANDS.len());
        assert_eq!(cmds[0]["cmd"], "balloon.set");
        assert!(cmds[0]["args"]["target"].as_str().unwrap().contains("256M"));
        assert!(cmds.iter().all(|c| c["help"].as_str().is_some()));
    }
}
