//! `swaplab demo --script FILE`: a timed sequence of the demo's key actions,
//! for a hands-free demo.
//!
//! One action per line, `TIME ACTION`, where TIME is when to do it, counted from
//! the moment the guest's agent is ready (`12`, `12s`, `1.5s`, `500ms`, `2m`), and
//! ACTION is a key or its name: `+`/`inflate`, `-`/`deflate`, `w`/`workload`,
//! `l`/`limit`, `q`/`quit`. Times never go backwards. `#` starts a comment; blank
//! lines are ignored. Example:
//!
//! ```text
//! # inflate the balloon three steps, then squeeze the host and start the workload
//! 2   +
//! 4   +
//! 6   +
//! 10  l
//! 12  l
//! 14  w
//! 60  q
//! ```

use std::time::Duration;

use super::action::Action;

/// Why a script was refused: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One scripted step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// When, from the start of the script.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Longest time a script may name (a typo guard).
const MAX_AT: Duration = Duration::from_secs(24 * 3600);

fn parse_time(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && !num.starts_with('+'))
        .ok_or_else(|| format!("bad time {s:?} (use e.g. 12, 1.5s, 500ms, 2m)"))?;
    let d = Duration::from_secs_f64(v * scale);
    if d > MAX_AT {
        return Err(format!("time {s:?} is more than 24 hours"));
    }
    Ok(d)
}

/// Parses a script's text.
pub fn parse(text: &str) -> Result<Vec<Step>, ScriptError> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ScriptError { line, message };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        let [time, action] = words.as_slice() else {
            return Err(err(format!(
                "expected `TIME ACTION` (e.g. `5 +`), got {content:?}"
            )));
        };
        let at = parse_time(time).map_err(err)?;
        let action = Action::from_word(action).ok_or_else(|| {
            err(format!(
                "unknown action {action:?} (known: + inflate, - deflate, w workload, l limit, q quit)"
            ))
        })?;
        if let Some(prev) = steps.last() {
            if at < prev.at {
                return Err(err(format!(
                    "time {time} is before the previous step's ({:.3}s); times must not go backwards",
                    prev.at.as_secs_f64()
                )));
            }
        }
        steps.push(Step { at, action });
    }
    Ok(steps)
}

/// Plays steps as time passes.
#[derive(Debug, Clone)]
pub struct Player {
    steps: Vec<Step>,
    next: usize,
}

impl Player {
    /// A player at the start of `steps`.
    pub fn new(steps: Vec<Step>) -> Self {
        Self { steps, next: 0 }
    }

    /// The steps due at `elapsed` (since the script started) not played yet.
    pub fn due(&mut self, elapsed: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(s) = self.steps.get(self.next).filter(|s| s.at <= elapsed) {
            out.push(s.action);
            self.next += 1;
        }
        out
    }

    /// Steps played and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.next, self.steps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_actions_and_comments() {
        let s = parse("# a demo\n\n2 +\n2.5s inflate  # again\n500ms -\n");
        assert_eq!(
            s.unwrap_err(),
            ScriptError {
                line: 5,
                message:
                    "time 500ms is before the previous step's (2.500s); times must not go backwards"
                        .into()
            }
        );
        let s = parse("1 +\n1.5s inflate\n3000ms w\n1m l\n1m q\n\t 61 deflate\n").unwrap();
        let at: Vec<f64> = s.iter().map(|s| s.at.as_secs_f64()).collect();
        assert_eq!(at, [1.0, 1.5, 3.0, 60.0, 60.0, 61.0]);
        let actions: Vec<Action> = s.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            [
                Action::Inflate,
                Action::Inflate,
                Action::Workload,
                Action::Limit,
                Action::Quit,
                Action::Deflate
            ]
        );
        assert_eq!(parse("").unwrap(), []);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = parse("1 +\n\n2 jump\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.to_string().starts_with("line 3: unknown action \"jump\""),
            "{e}"
        );
        let e = parse("soon +").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: bad time \"soon\" (use e.g. 12, 1.5s, 500ms, 2m)"
        );
        assert_eq!(parse("-1 +").unwrap_err().line, 1);
        assert_eq!(parse("1 + w").unwrap_err().line, 1);
        assert!(parse("+").unwrap_err().message.contains("TIME ACTION"));
        assert!(parse("99999h +").is_err());
        assert!(parse("90000 +").unwrap_err().message.contains("24 hours"));
        assert!(parse("NaN +").is_err());
    }

    #[test]
    fn the_player_hands_out_due_steps_once() {
        let mut p = Player::new(parse("1 +\n1 +\n3 w\n").unwrap());
        assert!(p.due(Duration::from_millis(999)).is_empty());
        assert_eq!(
            p.due(Duration::from_secs(2)),
            [Action::Inflate, Action::Inflate]
        );
        assert!(p.due(Duration::from_secs(2)).is_empty());
        assert_eq!(p.progress(), (2, 3));
        assert_eq!(p.due(Duration::from_secs(10)), [Action::Workload]);
        assert_eq!(p.progress(), (3, 3));
    }
}
