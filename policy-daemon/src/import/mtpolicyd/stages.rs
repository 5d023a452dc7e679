//! Plugins that answer by score or by result: `ScoreAction` (with
//! `Fail2Ban`, `Greylist` or `Action` inside), `Greylist`, `SPF` and
//! `Quota`.

use super::{
    model::{Check, Greylist, Model, RateLimit, Score, SlotKind, Stage},
    parse::Block,
    settings::{FLOOR, action, flag, number, reject_message, slot_comment},
};

/// A `Greylist` in the chain itself (not inside a `ScoreAction`).
pub(super) fn greylist_plugin(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    if !flag(plugin, "create_ticket", true) {
        model.note(
            &plugin.at,
            format!("{title}: create_ticket = 0 only defers early retries; spamwall's greylisting does that by itself"),
        );
        if plugin.get("score").is_some() {
            model.lost(
                &plugin.at,
                format!("{title}: the score of a mail that passed greylisting has no equivalent"),
            );
        }
        return;
    }
    greylist_settings(plugin, model);
    model.stages.push(Stage::Score {
        threshold: FLOOR,
        action: None,
        ban: false,
        greylist: true,
        origin: title,
    });
}

/// Notes the `Greylist` settings mtpolicyd 2.05 ignores: it creates its
/// ticket and AWL backends without the plugin's settings, so they keep
/// their defaults whatever is written.
fn note_ignored_settings(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    for (key, default) in [
        ("min_retry_wait", "300"),
        ("max_retry_wait", "7200"),
        ("autowl_expire_days", "60"),
    ] {
        let setting = plugin.setting(key).or_else(|| {
            plugin
                .blocks()
                .filter(|b| matches!(b.kind.as_str(), "Ticket" | "AWL"))
                .find_map(|b| b.setting(key))
        });
        if let Some(setting) = setting
            && setting.value.trim() != default
        {
            model.note(
                &setting.at,
                format!(
                    "{title}: mtpolicyd 2.05 ignores {key} = {} (its greylisting backends are created without the plugin's settings) and uses {default}, so the import does too; change it here if you meant it",
                    setting.value.trim()
                ),
            );
        }
    }
}

/// `[policy.greylist]` from a `Greylist` plugin.
fn greylist_settings(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    note_ignored_settings(plugin, model);
    let (delay, expire, keep_days) = (300, 7200, 60);
    let seconds = |key: &str, default: u64, model: &mut Model| match plugin.get(key) {
        None => default,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            model.lost(
                &plugin.at,
                format!("{title}: {key} = {text:?} is not a whole number"),
            );
            default
        }),
    };
    let auto_allow = if flag(plugin, "use_autowl", true) {
        seconds("autowl_threshold", 3, model)
    } else {
        0
    };
    let mut message = plugin
        .get("defer_message")
        .unwrap_or("defer greylisting is active")
        .trim()
        .to_owned();
    if flag(plugin, "append_waittime", true) {
        message.push_str(" (%DELAY% left)");
    }
    let message = match action(&message) {
        Ok(message)
            if ["DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT"]
                .iter()
                .any(|w| {
                    message
                        .split_whitespace()
                        .next()
                        .is_some_and(|f| f.eq_ignore_ascii_case(w))
                })
                || message.starts_with('4') =>
        {
            message
        }
        _ => {
            model.lost(
                &plugin.at,
                format!("{title}: defer_message {message:?} is not a deferral; spamwall's default is used"),
            );
            "DEFER_IF_PERMIT greylisted, retry in %DELAY%".to_owned()
        }
    };
    if plugin
        .get("mode")
        .is_some_and(|m| matches!(m.trim(), "accept" | "dunno"))
    {
        model.lost(
            &plugin.at,
            format!(
                "{title}: mode accept (a passed mail skips the other plugins) has no equivalent"
            ),
        );
    }
    let greylist = Greylist {
        comment: vec![
            format!("{title} (Greylist) at {}", plugin.at),
            "mtpolicyd greylists by client address, sender and recipient: prefixes 32 and 128"
                .to_owned(),
        ],
        delay,
        expire,
        keep_days,
        auto_allow,
        action: message,
    };
    match &model.greylist {
        Some(earlier)
            if earlier.delay != greylist.delay
                || earlier.expire != greylist.expire
                || earlier.auto_allow != greylist.auto_allow =>
        {
            model.lost(
                &plugin.at,
                format!("{title}: greylisting settings differ from an earlier Greylist; the first ones are kept"),
            );
        }
        Some(_) => {}
        None => model.greylist = Some(greylist),
    }
}

pub(super) fn score_action(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    let Some(threshold) = number(plugin, "threshold", model) else {
        model.lost(
            &plugin.at,
            format!("{title}: ScoreAction without threshold"),
        );
        return;
    };
    if plugin.get("match").is_some_and(|m| m.trim() != "gt") {
        model.lost(
            &plugin.at,
            format!("{title}: match = lt (at most the threshold) has no equivalent"),
        );
        return;
    }
    let mut answer = None;
    let mut ban = false;
    let mut greylist = false;
    if let Some(text) = plugin.get("action") {
        match action(text) {
            Ok(text) => answer = Some(text),
            Err(e) => {
                model.lost(&plugin.at, format!("{title}: action: {e}"));
                return;
            }
        }
    } else {
        for inner in plugin.blocks().filter(|b| b.kind == "Plugin") {
            match inner.get("module").unwrap_or_default() {
                "Fail2Ban" => ban = true,
                "Greylist" => {
                    greylist_settings(inner, model);
                    greylist = true;
                    if inner.get("score").is_some() {
                        model.lost(
                            &inner.at,
                            format!(
                                "{}: the score of a mail that passed greylisting has no equivalent",
                                inner.title()
                            ),
                        );
                    }
                    break;
                }
                "Action" => match inner.get("action").map(action) {
                    Some(Ok(text)) => {
                        answer = Some(text);
                        break;
                    }
                    _ => model.lost(&inner.at, format!("{}: no usable action", inner.title())),
                },
                other => model.lost(
                    &inner.at,
                    format!(
                        "{} (module {other}) inside {title} has no equivalent",
                        inner.title()
                    ),
                ),
            }
        }
    }
    model.stages.push(Stage::Score {
        threshold,
        action: answer,
        ban,
        greylist,
        origin: title,
    });
}

pub(super) fn quota(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    let (Some(field), Some(metric)) = (plugin.get("field"), plugin.get("metric")) else {
        model.lost(&plugin.at, format!("{title}: Quota needs field and metric"));
        return;
    };
    let count = match metric.trim() {
        "count" => "mails",
        "count_rcpt" => "recipients",
        other => {
            model.lost(
                &plugin.at,
                format!("{title}: metric = {other:?} (only count and count_rcpt are carried over)"),
            );
            return;
        }
    };
    let Some(limit) = plugin
        .get("threshold")
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        model.lost(
            &plugin.at,
            format!("{title}: threshold is not a whole number"),
        );
        return;
    };
    let pattern = plugin.get("time_pattern").unwrap_or("%Y-%m");
    let window = match pattern.trim() {
        "%Y-%m" => "31d",
        "%Y-%W" | "%Y-%U" | "%G-%V" => "7d",
        "%Y-%m-%d" => "1d",
        "%Y-%m-%d %H" => "1h",
        "%Y-%m-%d %H:%M" => "1m",
        other => {
            model.lost(
                &plugin.at,
                format!("{title}: time_pattern {other:?} has no equivalent window"),
            );
            return;
        }
    };
    let answer = match action(
        plugin
            .get("action")
            .unwrap_or("defer smtp traffic quota has been exceeded"),
    ) {
        Ok(answer) => answer,
        Err(e) => {
            model.lost(&plugin.at, format!("{title}: action: {e}"));
            return;
        }
    };
    if !field
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || field.is_empty()
        || field.len() > 64
    {
        model.lost(
            &plugin.at,
            format!("{title}: field {field:?} is not a request attribute"),
        );
        return;
    }
    let name = model.check_name(&plugin.name);
    model.ratelimits.push(RateLimit {
        comment: vec![format!(
            "{title} (Quota) at {}: calendar periods ({pattern}) become a sliding window",
            plugin.at
        )],
        name,
        key: field.to_owned(),
        count,
        limit,
        window: window.to_owned(),
        action: answer,
    });
}

pub(super) fn spf(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    let reject = reject_message(plugin, "SPF validation failed: %LOCAL_EXPL%");
    let mut scores = Vec::new();
    let mut comment = vec![format!("{title} (SPF) at {}", plugin.at)];
    for (result, mode_default, answer) in [
        ("pass", "passive", None),
        ("softfail", "passive", Some(reject.clone())),
        ("fail", "reject", Some(reject.clone())),
        (
            "temperror",
            "defer",
            Some("defer SPF temporary error".to_owned()),
        ),
        (
            "permerror",
            "reject",
            Some("reject SPF permanent error".to_owned()),
        ),
    ] {
        let score = number(plugin, &format!("{result}_score"), model);
        let mode = plugin
            .get(&format!("{result}_mode"))
            .unwrap_or(mode_default)
            .trim()
            .to_ascii_lowercase();
        let kind = match (mode.as_str(), &answer) {
            ("passive", _) => None,
            ("accept" | "dunno", _) => Some(SlotKind::Accept),
            (_, Some(text)) if result.ends_with("error") => Some(SlotKind::Answer(text.clone())),
            ("reject", Some(text)) => Some(SlotKind::Answer(text.clone())),
            _ => {
                model.lost(
                    &plugin.at,
                    format!("{title}: {result}_mode = {mode:?} is not carried over"),
                );
                None
            }
        };
        match kind {
            None => {
                if let Some(score) = score {
                    scores.push((result, Score::Fixed(score)));
                }
            }
            Some(kind) => match model.slot(kind, &format!("{title} {result}")) {
                Some(slot) => {
                    comment.push(format!("{result}: {}", slot_comment(model, slot)));
                    scores.push((result, Score::Slot(slot, score.unwrap_or(0.0))));
                }
                None => model.lost(
                    &plugin.at,
                    format!("{title}: too many plugins answer at once"),
                ),
            },
        }
    }
    if flag(plugin, "check_helo", true) {
        model.note(
            &plugin.at,
            format!("{title}: check_helo: spamwall checks the HELO name for the null sender only (RFC 7208 §2.3 as policyd-spf)"),
        );
    }
    if plugin
        .get("whitelist")
        .is_some_and(|w| !w.trim().is_empty())
    {
        model.lost(
            &plugin.at,
            format!("{title}: whitelist (skip SPF for these clients) has no equivalent; an allow list check before it skips every check"),
        );
    }
    let name = model.check_name(&plugin.name);
    model.checks.push(Check {
        comment,
        name,
        kind: "spf",
        spf_scores: scores,
        ..Check::default()
    });
}
