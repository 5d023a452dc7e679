//! One mtpolicyd plugin at a time, into checks, slots and stages.

use super::{
    cidr,
    model::{Check, Greylist, Model, RateLimit, Score, SlotKind, Stage},
    parse::Block,
};
use crate::policy::action::check_action;

/// The score below every ordinary one and above every accepting slot:
/// stages that answer every mail (a top-level `Greylist`, the `NO`
/// header) sit here.
pub const FLOOR: f64 = -500.0;

/// Converts one `<Plugin>` of the chain.
pub fn convert(plugin: &Block, model: &mut Model) {
    let module = plugin.get("module").unwrap_or_default();
    if plugin
        .get("enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("off"))
    {
        model.note(
            &plugin.at,
            format!(
                "{} ({module}) has enabled = off: nothing to carry over",
                plugin.title()
            ),
        );
        return;
    }
    match module {
        "RBL" => rbl(plugin, model),
        "RBLAction" => rbl_action(plugin, model),
        "DBL" => dbl(plugin, model),
        "Condition" | "RegexList" => condition(plugin, module, model),
        "SqlList" => sql_list(plugin, model),
        "SPF" => spf(plugin, model),
        "Greylist" => greylist_plugin(plugin, model),
        "ScoreAction" => score_action(plugin, model),
        "AddScoreHeader" => {
            let spam_score = number(plugin, "spam_score", model).unwrap_or(5.0);
            model.stages.push(Stage::Header {
                spam_score,
                header: plugin.get("header_name").unwrap_or("X-MtScore").to_owned(),
                origin: plugin.title(),
            });
        }
        "Quota" => quota(plugin, model),
        "" => model.lost(&plugin.at, format!("{} has no module", plugin.title())),
        other => model.lost(
            &plugin.at,
            format!(
                "{} (module {other}): {}",
                plugin.title(),
                no_equivalent(other)
            ),
        ),
    }
}

/// Why a module has no equivalent.
fn no_equivalent(module: &str) -> &'static str {
    match module {
        "GeoIPLookup" | "GeoIPAction" => "spamwall has no GeoIP lookup",
        "Accounting" => {
            "spamwall keeps no per-key accounting tables; [[policy.ratelimit]] counts internally and spamwall_ratelimit_exceeded_total counts overruns"
        }
        "Fail2Ban" => {
            "a Fail2Ban outside a ScoreAction bans every client; put the ban on a threshold"
        }
        "Action" => "an Action outside a ScoreAction answers every mail",
        "Honeypot" => {
            "spamwall has no honeypot recipients; a list check on recipient can score them"
        }
        "Proxy" => "spamwall does not forward requests to another policy server",
        "PostfixMap" => "Postfix maps are not read; export the map into a list check",
        _ => "no equivalent in spamwall",
    }
}

/// A numeric setting; a value that is not a number is noted and ignored.
fn number(plugin: &Block, key: &str, model: &mut Model) -> Option<f64> {
    let setting = plugin.setting(key)?;
    match setting.value.trim().parse::<f64>() {
        Ok(value) if value.is_finite() => Some(value),
        _ => {
            model.lost(
                &setting.at,
                format!("{key} = {:?} is not a number", setting.value),
            );
            None
        }
    }
}

/// A flag: `1`, `on`, `yes`, `true`.
fn flag(plugin: &Block, key: &str, default: bool) -> bool {
    plugin.get(key).map_or(default, |v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

/// mtpolicyd's action text as a spamwall template: `%SCORE_DETAIL%`
/// (which mtpolicyd writes as `, detail`) becomes `, %DETAIL%`.
pub fn action(text: &str) -> Result<String, String> {
    let translated = text.trim().replacen("%SCORE_DETAIL%", ", %DETAIL%", 1);
    check_action(&translated)?;
    Ok(translated)
}

/// A plugin's `mode`: `reject`, `accept`/`dunno` or passive.
fn mode_score(
    plugin: &Block,
    key: &str,
    default: &str,
    reject: &str,
    score: f64,
    model: &mut Model,
) -> Option<Score> {
    let mode = plugin
        .get(key)
        .unwrap_or(default)
        .trim()
        .to_ascii_lowercase();
    let kind = match mode.as_str() {
        "passive" => return Some(Score::Fixed(score)),
        "reject" => SlotKind::Answer(reject.to_owned()),
        "accept" | "dunno" => SlotKind::Accept,
        other => {
            model.lost(
                &plugin.at,
                format!(
                    "{}: {key} = {other:?} is not passive, reject or accept",
                    plugin.title()
                ),
            );
            return None;
        }
    };
    let Some(slot) = model.slot(kind, &plugin.title()) else {
        model.lost(
            &plugin.at,
            format!(
                "{}: more than {} plugins answer at once; this one is left out",
                plugin.title(),
                super::model::MAX_SLOTS
            ),
        );
        return None;
    };
    Some(Score::Slot(slot, score))
}

fn reject_message(plugin: &Block, default: &str) -> String {
    let text = plugin.get("reject_message").unwrap_or(default);
    let text = text
        .replace("%INFO%", "")
        .replace("%LOCAL_EXPL%", "")
        .replace("%CHECK%", "domain")
        .replace("%HOSTNAME%", "");
    let text = text.trim().trim_end_matches([':', '(', ' ']).trim();
    format!("reject {text}")
}

fn rbl(plugin: &Block, model: &mut Model) {
    let Some(domain) = plugin.get("domain") else {
        model.lost(
            &plugin.at,
            format!("{}: RBL without domain", plugin.title()),
        );
        return;
    };
    let score = number(plugin, "score", model).unwrap_or(0.0);
    let reject = reject_message(plugin, "delivery from %IP% rejected %INFO%");
    let Some(score) = mode_score(plugin, "mode", "reject", &reject, score, model) else {
        return;
    };
    let mut comment = vec![format!("{} (RBL) at {}", plugin.title(), plugin.at)];
    match score {
        Score::Slot(slot, _) => comment.push(slot_comment(model, slot)),
        Score::Fixed(_) => {}
    }
    let name = model.check_name(&plugin.name);
    model.checks.push(Check {
        comment,
        name,
        plugin: plugin.name.clone(),
        kind: "dnsbl",
        zone: Some(domain.to_owned()),
        score: Some(score),
        ..Check::default()
    });
}

fn slot_comment(model: &Model, slot: usize) -> String {
    match &model.slots[slot].kind {
        SlotKind::Answer(action) => format!(
            "mtpolicyd answers {action:?} at once: the score of slot {slot} reaches the threshold that answers it"
        ),
        SlotKind::Accept => format!(
            "mtpolicyd accepts at once: slot {slot}'s negative score keeps the mail below every threshold"
        ),
    }
}

fn rbl_action(plugin: &Block, model: &mut Model) {
    let (Some(from), Some(pattern)) = (plugin.get("result_from"), plugin.get("re_match")) else {
        model.lost(
            &plugin.at,
            format!(
                "{}: RBLAction needs result_from and re_match",
                plugin.title()
            ),
        );
        return;
    };
    let Some(index) = model
        .checks
        .iter()
        .position(|c| c.kind == "dnsbl" && c.plugin == from)
    else {
        model.lost(
            &plugin.at,
            format!(
                "{}: result_from = {from:?} names no RBL plugin before it",
                plugin.title()
            ),
        );
        return;
    };
    if let Err(e) = regex::Regex::new(pattern) {
        model.lost(
            &plugin.at,
            format!(
                "{}: re_match is not a regex spamwall can read: {e}",
                plugin.title()
            ),
        );
        return;
    }
    let list_score = match model.checks[index].score {
        Some(Score::Fixed(s) | Score::Slot(_, s)) => s,
        None => 0.0,
    };
    let own = number(plugin, "score", model).unwrap_or(0.0);
    let reject = reject_message(plugin, "delivery from %IP% rejected %INFO%");
    let Some(score) = mode_score(plugin, "mode", "reject", &reject, list_score + own, model) else {
        return;
    };
    let category = plugin
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let check = &mut model.checks[index];
    check.comment.push(format!(
        "{} (RBLAction) at {}: category {category}",
        plugin.title(),
        plugin.at
    ));
    check
        .categories
        .push((format!("/{pattern}/"), category, score));
    if let Score::Slot(slot, _) = score {
        let text = slot_comment(model, slot);
        model.checks[index].comment.push(text);
    }
}

fn dbl(plugin: &Block, model: &mut Model) {
    let Some(domain) = plugin.get("domain") else {
        model.lost(
            &plugin.at,
            format!("{}: DBL without domain", plugin.title()),
        );
        return;
    };
    for (field, mode, score, spamwall) in [
        ("sender", "reject", 5.0, "sender"),
        ("reverse_client_name", "reject", 2.5, "reverse_client_name"),
        ("helo_name", "passive", 1.0, "helo"),
    ] {
        let score = number(plugin, &format!("{field}_score"), model).unwrap_or(score);
        let mode_key = format!("{field}_mode");
        let is_reject = plugin
            .get(&mode_key)
            .unwrap_or(mode)
            .eq_ignore_ascii_case("reject");
        let score = if is_reject {
            let reject = format!("reject {field} rejected");
            match mode_score(plugin, &mode_key, mode, &reject, score, model) {
                Some(score) => score,
                None => continue,
            }
        } else {
            Score::Fixed(score)
        };
        let mut comment = vec![format!(
            "{} (DBL) at {}: {field}_mode, {field}_score",
            plugin.title(),
            plugin.at
        )];
        if let Score::Slot(slot, _) = score {
            comment.push(slot_comment(model, slot));
        }
        let name = model.check_name(&format!("{}-{field}", plugin.name));
        model.checks.push(Check {
            comment,
            name,
            kind: "rhsbl",
            zone: Some(domain.to_owned()),
            score: Some(score),
            fields: vec![spamwall],
            ..Check::default()
        });
    }
}

/// `Condition` and `RegexList`: a `list` check.
fn condition(plugin: &Block, module: &str, model: &mut Model) {
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
            if let Some(value) = exact {
                list.push(value.to_owned());
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
            check.comment.push(format!(
                "re_match {pattern:?}, as the IPv4 prefixes it matches"
            ));
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

fn sql_list(plugin: &Block, model: &mut Model) {
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

fn spf(plugin: &Block, model: &mut Model) {
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

/// A `Greylist` in the chain itself (not inside a `ScoreAction`).
fn greylist_plugin(plugin: &Block, model: &mut Model) {
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

/// `[policy.greylist]` from a `Greylist` plugin.
pub fn greylist_settings(plugin: &Block, model: &mut Model) {
    let title = plugin.title();
    let ticket = plugin.blocks().find(|b| b.kind == "Ticket");
    let get = |key: &str| plugin.get(key).or_else(|| ticket.and_then(|t| t.get(key)));
    let seconds = |key: &str, default: u64, model: &mut Model| match get(key) {
        None => default,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            model.lost(
                &plugin.at,
                format!("{title}: {key} = {text:?} is not a number of seconds"),
            );
            default
        }),
    };
    let delay = seconds("min_retry_wait", 300, model).max(1);
    let expire = seconds("max_retry_wait", 7200, model).max(delay + 1);
    let keep_days = seconds("autowl_expire_days", 60, model).max(expire.div_ceil(86_400));
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

fn score_action(plugin: &Block, model: &mut Model) {
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

fn quota(plugin: &Block, model: &mut Model) {
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
