//! `Condition`, `RegexList` and `SqlList`: `list` checks.

use super::{
    cidr,
    model::{Check, Model, Score, SlotKind},
    parse::Block,
    settings::{action, flag, number, slot_comment},
};

/// `Condition` and `RegexList`: a `list` check.
pub(super) fn condition(plugin: &Block, module: &str, model: &mut Model) {
    let title = plugin.title();
    let Some(key) = plugin.get("key") else {
        model.lost(&plugin.at, format!("{title}: {module} without key"));
        return;
    };
    for unsupported in ["invert", "gt_match", "lt_match", "file"] {
        if let Some(setting) = plugin.setting(unsupported)
            && (unsupported != "invert" || flag(plugin, "invert", false))
        {
            model.lost(
                &setting.at,
                format!("{title}: {unsupported} has no equivalent in a list check"),
            );
            return;
        }
    }
    let exact = if module == "Condition" {
        plugin.get("match")
    } else {
        None
    };
    let pattern = plugin.get(if module == "Condition" {
        "re_match"
    } else {
        "regex"
    });
    if exact.is_none() && pattern.is_none() {
        model.lost(&plugin.at, format!("{title}: nothing to match"));
        return;
    }
    let mut check = Check {
        comment: vec![format!("{title} ({module}) at {} on {key}", plugin.at)],
        kind: "list",
        ..Check::default()
    };
    match key {
        "client_address" => {
            if !client_entries(plugin, exact, pattern, &mut check, model) {
                return;
            }
        }
        "sender" | "recipient" | "helo_name" => {
            let list = match key {
                "sender" => &mut check.sender,
                "recipient" => &mut check.recipient,
                _ => &mut check.helo,
            };
            // Perl's `eq`: the whole value, case and all.
            if let Some(value) = exact {
                list.push(format!("/^{}$/", regex::escape(value)));
            }
            if let Some(pattern) = pattern {
                if let Err(e) = regex::Regex::new(pattern) {
                    model.lost(
                        &plugin.at,
                        format!("{title}: {pattern:?} is not a regex spamwall can read: {e}"),
                    );
                    return;
                }
                list.push(format!("/{pattern}/"));
            }
        }
        other => {
            model.lost(
                &plugin.at,
                format!("{title}: key {other:?}; list checks match client_address, sender, recipient and helo_name"),
            );
            return;
        }
    }
    if !condition_answer(plugin, &mut check, model) {
        return;
    }
    check.name = model.check_name(&plugin.name);
    model.checks.push(check);
}

/// A `Condition`'s `score` and `action`: an allow list for `dunno` and
/// `ok`, a slot for any other answer; `false` when there is nothing to
/// carry over (noted).
fn condition_answer(plugin: &Block, check: &mut Check, model: &mut Model) -> bool {
    let title = plugin.title();
    let score = number(plugin, "score", model);
    match plugin.get("action") {
        None if score.is_none() => {
            model.note(
                &plugin.at,
                format!("{title}: neither score nor action: it does nothing"),
            );
            return false;
        }
        None => check.score = Some(Score::Fixed(score.unwrap_or(0.0))),
        Some(text) => match text.trim().to_ascii_uppercase().as_str() {
            "DUNNO" | "OK" => {
                check.allow = true;
                check.action = Some(text.trim().to_ascii_uppercase());
            }
            _ => {
                let answer = match action(text) {
                    Ok(answer) => answer,
                    Err(e) => {
                        model.lost(&plugin.at, format!("{title}: action: {e}"));
                        return false;
                    }
                };
                let Some(slot) = model.slot(SlotKind::Answer(answer), &title) else {
                    model.lost(
                        &plugin.at,
                        format!("{title}: too many plugins answer at once"),
                    );
                    return false;
                };
                check.comment.push(slot_comment(model, slot));
                check.score = Some(Score::Slot(slot, score.unwrap_or(0.0)));
            }
        },
    }
    true
}

/// The `client` entries of a `Condition` on `client_address`: the exact
/// address, and the prefixes `re_match` matches; `false` when the plugin
/// cannot be carried over (noted).
fn client_entries(
    plugin: &Block,
    exact: Option<&str>,
    pattern: Option<&str>,
    check: &mut Check,
    model: &mut Model,
) -> bool {
    let title = plugin.title();
    if let Some(ip) = exact {
        if ip.parse::<std::net::IpAddr>().is_err() {
            model.lost(
                &plugin.at,
                format!("{title}: match = {ip:?} is not an address"),
            );
            return false;
        }
        check.client.push(ip.to_owned());
    }
    let Some(pattern) = pattern else {
        return true;
    };
    match cidr::prefixes(pattern) {
        Ok(nets) if !nets.is_empty() => {
            check
                .comment
                .push(format!("re_match {pattern}: the IPv4 prefixes it matches"));
            check.client.extend(nets.iter().map(ToString::to_string));
        }
        Ok(_) => {
            model.lost(
                &plugin.at,
                format!("{title}: re_match {pattern:?} matches no IPv4 address"),
            );
            return false;
        }
        Err(e) => {
            model.lost(&plugin.at, format!("{title}: {e}"));
            return false;
        }
    }
    if pattern.contains(':') {
        model.note(
            &plugin.at,
            format!("{title}: the IPv6 addresses re_match may match are not carried over"),
        );
    }
    true
}

pub(super) fn sql_list(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    let field = plugin.get("field").unwrap_or("client_address");
    let name = model.check_name(&plugin.name);
    let query = plugin.get("sql_query").unwrap_or("(no sql_query)");
    let mut check = Check {
        comment: vec![
            format!("{title} (SqlList) at {} on {field}", plugin.at),
            format!("The rows of its SQL query cannot be read here: {query}"),
            format!(
                "Export them, one {field} a line, into /etc/spamwall/{name}.list and uncomment."
            ),
        ],
        name,
        kind: "list",
        disabled: true,
        ..Check::default()
    };
    check.file = Some(format!("/etc/spamwall/{}.list", check.name));
    match plugin.get("match_action") {
        Some(text) if matches!(text.trim().to_ascii_uppercase().as_str(), "DUNNO" | "OK") => {
            check.allow = true;
            check.action = Some(text.trim().to_ascii_uppercase());
        }
        _ => check.score = Some(Score::Fixed(number(plugin, "score", model).unwrap_or(1.0))),
    }
    model.lost(
        &plugin.at,
        format!("{title}: SqlList's rows live in SQL; the list check is written commented out until its file exists"),
    );
    model.checks.push(check);
}
