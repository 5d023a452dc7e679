//! Postfix access(5) actions as the policy server answers them: which
//! actions Postfix accepts, and the templates that fill in `%IP%`,
//! `%SCORE%` and `%DETAIL%`. A leaf: the engine and the checks use it.

use std::fmt::Write as _;

/// Longest action sent to Postfix; a long detail is cut to fit (SMTP reply
/// lines are short, and Postfix limits policy reply lines).
pub const MAX_ACTION_BYTES: usize = 1000;

/// The answer when nothing is reached.
pub const DUNNO: &str = "DUNNO";

/// Checks whether `action` (a template before substitution) is an
/// access(5) action Postfix accepts; anything else would make Postfix
/// answer "451 4.3.5 Server configuration problem".
pub fn check_action(action: &str) -> Result<(), String> {
    const ACTIONS: [&str; 15] = [
        "OK",
        "DUNNO",
        "REJECT",
        "DEFER",
        "DEFER_IF_REJECT",
        "DEFER_IF_PERMIT",
        "BCC",
        "DISCARD",
        "FILTER",
        "HOLD",
        "PREPEND",
        "REDIRECT",
        "INFO",
        "WARN",
        "DELAY",
    ];
    let action = action.trim();
    if action.contains(['\n', '\r']) {
        return Err(format!("{action:?}: no line breaks in an action"));
    }
    let (word, rest) = action
        .split_once(char::is_whitespace)
        .map_or((action, ""), |(w, r)| (w, r.trim()));
    if word.is_empty() {
        return Err("empty action; e.g. \"DUNNO\" or \"reject text\"".to_owned());
    }
    let upper = word.to_ascii_uppercase();
    let numeric =
        word.len() == 3 && word.starts_with(['4', '5']) && word.bytes().all(|b| b.is_ascii_digit());
    let restriction = ["permit", "reject_", "defer_", "check_", "warn_if_"]
        .iter()
        .any(|prefix| word.starts_with(prefix))
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !(ACTIONS.contains(&upper.as_str()) || numeric || restriction) {
        return Err(format!(
            "{word:?} is not an access(5) action (OK, DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, 4NN/5NN, PREPEND, WARN, HOLD, DISCARD, …)"
        ));
    }
    match upper.as_str() {
        "PREPEND" => {
            let header = rest.split_once(':').map(|(name, _)| name);
            let valid = header.is_some_and(|name| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            });
            if !valid {
                return Err(format!(
                    "{action:?}: PREPEND needs a header, e.g. \"PREPEND X-Spamwall: %SCORE%\""
                ));
            }
        }
        "BCC" | "FILTER" | "REDIRECT" if rest.is_empty() => {
            return Err(format!("{action:?}: {word} needs an argument"));
        }
        _ => {}
    }
    Ok(())
}

/// A piece of an action template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Ip,
    Score,
    Detail,
}

/// An action with `%IP%`, `%SCORE%` and `%DETAIL%`; any other `%` is text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Splits `text` at its placeholders.
    pub fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        while !rest.is_empty() {
            let found = [
                ("%IP%", Part::Ip),
                ("%SCORE%", Part::Score),
                ("%DETAIL%", Part::Detail),
            ]
            .into_iter()
            .find(|(token, _)| rest.starts_with(token));
            if let Some((token, part)) = found {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = &rest[token.len()..];
            } else {
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    literal.push(c);
                }
                rest = chars.as_str();
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Self(parts)
    }

    /// The action for a client, its score and detail, cut to
    /// [`MAX_ACTION_BYTES`] on a character boundary.
    pub fn render(&self, ip: &str, score: f64, detail: &str) -> String {
        let mut out = String::with_capacity(128);
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ip => out.push_str(ip),
                Part::Score => write_score(&mut out, score),
                Part::Detail => out.push_str(detail),
            }
        }
        if out.len() > MAX_ACTION_BYTES {
            let mut end = MAX_ACTION_BYTES;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
        }
        out
    }
}

/// `score` as `Display` writes it, for logs.
pub fn score_text(score: f64) -> String {
    let mut text = String::new();
    write_score(&mut text, score);
    text
}

/// Writes `score` as `Display` does. Scores are mostly whole numbers,
/// which are written as integers without the float formatting.
fn write_score(out: &mut String, score: f64) {
    const WHOLE: f64 = 1e15;
    if score.fract() == 0.0 && score.abs() < WHOLE && !(score == 0.0 && score.is_sign_negative()) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a whole number below 1e15 converts exactly"
        )]
        let whole = score as i64;
        let _ = write!(out, "{whole}");
    } else {
        let _ = write!(out, "{score}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_written_as_display_writes_them() {
        let template = Template::parse("%SCORE%");
        for score in [
            0.0,
            -0.0,
            5.0,
            10.0,
            -3.0,
            12.5,
            0.1 + 0.2,
            1e14,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            1e20,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(
                template.render("", score, ""),
                format!("{score}"),
                "{score:?}"
            );
        }
    }

    #[test]
    fn templates() {
        let template = Template::parse("reject %IP% score=%SCORE% %DETAIL% 100%");
        assert_eq!(
            template.render("192.0.2.1", 12.5, "zen=127.0.0.2(+5)"),
            "reject 192.0.2.1 score=12.5 zen=127.0.0.2(+5) 100%"
        );
        let long = "x".repeat(5000);
        assert_eq!(
            Template::parse("%DETAIL%").render("", 0.0, &long).len(),
            MAX_ACTION_BYTES
        );
        let accented = "é".repeat(800);
        let cut = Template::parse("%DETAIL%").render("", 0.0, &accented);
        assert!(cut.len() <= MAX_ACTION_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn actions() {
        for good in [
            "DUNNO",
            "dunno",
            "OK",
            "reject sender ip %IP% is blocked",
            "defer_if_permit try later",
            "450 4.7.1 try later",
            "554 5.7.1 go away",
            "prepend X-Spamwall-Score: %SCORE%",
            "PREPEND X-Spam: yes",
            "HOLD",
            "warn suspicious",
            "reject_unverified_sender",
        ] {
            assert_eq!(check_action(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "rejct x",
            "prepend no header",
            "prepend : x",
            "REDIRECT",
            "600 x",
            "a\nb",
        ] {
            assert!(check_action(bad).is_err(), "{bad:?}");
        }
    }
}
