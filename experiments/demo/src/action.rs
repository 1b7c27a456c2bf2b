//! The demo's actions: what a key press (or a script step) asks for.

/// One action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Inflate the balloon by a step (`+`).
    Inflate,
    /// Deflate the balloon by a step (`-`).
    Deflate,
    /// Start or stop the guest workload (`w`).
    Workload,
    /// Move to the next host limit (`l`).
    Limit,
    /// Quit (`q`).
    Quit,
}

impl Action {
    /// The action a script names (`+` or `inflate`, …).
    pub fn from_word(w: &str) -> Option<Action> {
        Some(match w {
            "+" | "inflate" => Action::Inflate,
            "-" | "deflate" => Action::Deflate,
            "w" | "workload" => Action::Workload,
            "l" | "limit" => Action::Limit,
            "q" | "quit" => Action::Quit,
            _ => return None,
        })
    }

    /// The action a key press asks for (`=` inflates too: `+` without shift).
    pub fn from_key(c: char) -> Option<Action> {
        Some(match c {
            '+' | '=' => Action::Inflate,
            '-' | '_' => Action::Deflate,
            'w' | 'W' => Action::Workload,
            'l' | 'L' => Action::Limit,
            'q' | 'Q' => Action::Quit,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_words_agree() {
        for (k, w) in [
            ('+', "inflate"),
            ('-', "deflate"),
            ('w', "workload"),
            ('l', "limit"),
            ('q', "quit"),
        ] {
            assert_eq!(Action::from_key(k), Action::from_word(w));
            assert_eq!(Action::from_word(&k.to_string()), Action::from_word(w));
            assert!(Action::from_key(k).is_some());
        }
        assert_eq!(Action::from_key('x'), None);
        assert_eq!(Action::from_word("jump"), None);
    }
}
