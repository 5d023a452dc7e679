//! The [`Model`] written as a commented spamwall TOML configuration.

use std::fmt::Write as _;

use super::{
    convert::{number, score_value},
    model::{Check, Model, Threshold},
};

/// A TOML string literal.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", items.join(", "))
}

fn comment(out: &mut String, lines: &[String]) {
    for line in lines {
        for part in line.lines() {
            let _ = writeln!(out, "# {}", printable(part));
        }
    }
}

/// `text` as a TOML comment may hold it: a control character other than
/// a tab, which would end or break the comment, written as its escape.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped = (c.is_control() && c != '\t').then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control() || c == '\t').then_some(c))
        })
        .collect()
}

/// Writes the configuration; `thresholds` from
/// [`super::convert::thresholds`].
pub fn write(model: &Model, thresholds: &[Threshold]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# spamwall configuration from the mtpolicyd configuration {}",
        printable(&model.source.replace('\n', " "))
    );
    let lost: Vec<_> = model.notes.iter().filter(|n| n.lost).collect();
    let kept: Vec<_> = model.notes.iter().filter(|n| !n.lost).collect();
    if lost.is_empty() {
        out.push_str("# Everything was carried over.\n");
    }
    for (heading, notes) in [("Not carried over", lost), ("Notes", kept)] {
        if notes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "#\n# {heading}:");
        for note in notes {
            let at = note
                .at
                .as_ref()
                .map(|at| format!("{at}: "))
                .unwrap_or_default();
            comment(&mut out, &[format!("- {at}{}", note.text)]);
        }
    }
    if !model.slots.is_empty() {
        out.push_str(
            "#\n# A plugin that answers at once (a reject mode, a Condition's action) adds a slot\n\
             # score: each slot weighs four times the next, so the first one a mail hits in\n\
             # mtpolicyd's order decides, through its threshold (an accepting slot counts\n\
             # negatively and reaches none).\n",
        );
    }
    out.push_str("\n[policy]\n");
    let listen: Vec<String> = model.listen.clone();
    let _ = writeln!(out, "listen = {}", list(&listen));
    if let Some(secs) = model.request_timeout {
        let _ = writeln!(out, "request_timeout = \"{secs}s\"");
    }
    if let Some(grey) = &model.greylist {
        out.push('\n');
        comment(&mut out, &grey.comment);
        out.push_str("[policy.greylist]\n");
        let _ = writeln!(out, "delay = \"{}s\"", grey.delay);
        let _ = writeln!(out, "expire = \"{}s\"", grey.expire);
        let _ = writeln!(out, "keep = \"{}d\"", grey.keep_days);
        let _ = writeln!(out, "auto_allow = {}", grey.auto_allow);
        out.push_str("v4_prefix = 32\nv6_prefix = 128\n");
        let _ = writeln!(out, "action = {}", quote(&grey.action));
    }
    for check in &model.checks {
        out.push('\n');
        write_check(&mut out, check, model);
    }
    for threshold in thresholds {
        out.push('\n');
        comment(&mut out, &threshold.comment);
        out.push_str("[[policy.threshold]]\n");
        let _ = writeln!(out, "score = {}", number(threshold.score));
        let _ = writeln!(out, "action = {}", quote(&threshold.action));
        if threshold.ban {
            out.push_str("ban = \"10m\"\n");
        }
    }
    for limit in &model.ratelimits {
        out.push('\n');
        comment(&mut out, &limit.comment);
        out.push_str("[[policy.ratelimit]]\n");
        let _ = writeln!(out, "name = {}", quote(&limit.name));
        let _ = writeln!(out, "key = {}", quote(&limit.key));
        let _ = writeln!(out, "count = \"{}\"", limit.count);
        let _ = writeln!(out, "limit = {}", limit.limit);
        let _ = writeln!(out, "window = \"{}\"", limit.window);
        let _ = writeln!(out, "action = {}", quote(&limit.action));
    }
    out
}

fn write_check(out: &mut String, check: &Check, model: &Model) {
    comment(out, &check.comment);
    let mut body = String::new();
    body.push_str("[[policy.check]]\n");
    let _ = writeln!(body, "name = {}", quote(&check.name));
    let _ = writeln!(body, "type = \"{}\"", check.kind);
    if let Some(zone) = &check.zone {
        let _ = writeln!(body, "zone = {}", quote(zone));
    }
    if let Some(score) = check.score {
        let _ = writeln!(body, "score = {}", number(score_value(score, &model.slots)));
    }
    if !check.fields.is_empty() {
        let fields: Vec<String> = check.fields.iter().map(|f| (*f).to_owned()).collect();
        let _ = writeln!(body, "fields = {}", list(&fields));
    }
    if !check.categories.is_empty() {
        body.push_str("categories = [\n");
        for (pattern, name, score) in &check.categories {
            let _ = writeln!(
                body,
                "  {{ match = {}, name = {}, score = {} }},",
                quote(pattern),
                quote(name),
                number(score_value(*score, &model.slots))
            );
        }
        body.push_str("]\n");
    }
    if !check.spf_scores.is_empty() {
        let scores: Vec<String> = check
            .spf_scores
            .iter()
            .map(|(name, score)| format!("{name} = {}", number(score_value(*score, &model.slots))))
            .collect();
        let _ = writeln!(body, "scores = {{ {} }}", scores.join(", "));
    }
    if check.allow {
        body.push_str("allow = true\n");
    }
    if let Some(action) = &check.action {
        let _ = writeln!(body, "action = {}", quote(action));
    }
    for (key, values) in [
        ("client", &check.client),
        ("sender", &check.sender),
        ("recipient", &check.recipient),
        ("helo", &check.helo),
    ] {
        if !values.is_empty() {
            let _ = writeln!(body, "{key} = {}", list(values));
        }
    }
    if let Some(file) = &check.file {
        let _ = writeln!(body, "file = {}", quote(file));
    }
    if check.disabled {
        for line in body.lines() {
            let _ = writeln!(out, "# {}", printable(line));
        }
    } else {
        out.push_str(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_never_carries_a_control_character() {
        let mut out = String::new();
        comment(&mut out, &["a\u{b}b\rc\u{7f}d\te".to_owned()]);
        assert_eq!(out, "# a\\u{b}b\\rc\\u{7f}d\te\n");
        assert!(toml::from_str::<toml::Table>(&out).is_ok());
    }
}
