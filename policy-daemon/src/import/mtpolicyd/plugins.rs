//! One mtpolicyd plugin at a time: the dispatch, and the DNS lists
//! (`RBL`, `RBLAction`, `DBL`).

use super::{
    lists,
    model::{Check, Model, Score, Stage},
    parse::Block,
    settings::{mode_score, number, reject_message, slot_comment, zone},
    stages,
};
use crate::policy::checks::MAX_CHECKS;

/// Converts one `<Plugin>` of the chain.
pub fn convert(plugin: &Block, model: &mut Model) {
    let module = plugin.get("module").unwrap_or_default();
    // spamwall runs at most MAX_CHECKS checks; the stages and limits are
    // held to the same bound, so a huge file cannot make the threshold
    // table quadratic.
    if model.checks.len() >= MAX_CHECKS
        || model.stages.len() >= MAX_CHECKS
        || model.ratelimits.len() >= MAX_CHECKS
    {
        if !model.cut {
            model.cut = true;
            model.lost(
                &plugin.at,
                format!(
                    "{} ({module}): more than {MAX_CHECKS} checks, score actions or limits; this plugin and every later one are left out",
                    plugin.title()
                ),
            );
        }
        return;
    }
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
        "Condition" | "RegexList" => lists::condition(plugin, module, model),
        "SqlList" => lists::sql_list(plugin, model),
        "SPF" => stages::spf(plugin, model),
        "Greylist" => stages::greylist_plugin(plugin, model),
        "ScoreAction" => stages::score_action(plugin, model),
        "AddScoreHeader" => {
            let spam_score = number(plugin, "spam_score", model).unwrap_or(5.0);
            model.stages.push(Stage::Header {
                spam_score,
                header: plugin.get("header_name").unwrap_or("X-MtScore").to_owned(),
                origin: plugin.title(),
            });
        }
        "Quota" => stages::quota(plugin, model),
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

fn rbl(plugin: &Block, model: &mut Model) {
    let Some(domain) = zone(plugin, model) else {
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
        zone: Some(domain),
        score: Some(score),
        ..Check::default()
    });
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
    let Some(domain) = zone(plugin, model) else {
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
            zone: Some(domain.clone()),
            score: Some(score),
            fields: vec![spamwall],
            ..Check::default()
        });
    }
}
