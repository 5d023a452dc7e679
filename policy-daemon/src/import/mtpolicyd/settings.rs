//! Reading a plugin's settings: numbers, flags, actions, modes.

use super::{
    model::{MAX_SLOTS, Model, Score, SlotKind},
    parse::Block,
};
use crate::policy::action::check_action;

/// The score below every ordinary one and above every accepting slot:
/// stages that answer every mail (a top-level `Greylist`, the `NO`
/// header) sit here.
pub const FLOOR: f64 = -500.0;

/// A numeric setting; a value that is not a number is noted and ignored.
pub(super) fn number(plugin: &Block, key: &str, model: &mut Model) -> Option<f64> {
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
pub(super) fn flag(plugin: &Block, key: &str, default: bool) -> bool {
    plugin.get(key).map_or(default, |v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

/// mtpolicyd's action text as a spamwall template: `%SCORE_DETAIL%`
/// (which mtpolicyd writes as `, detail`) becomes `, %DETAIL%`.
pub(super) fn action(text: &str) -> Result<String, String> {
    let translated = text.trim().replacen("%SCORE_DETAIL%", ", %DETAIL%", 1);
    check_action(&translated)?;
    Ok(translated)
}

/// A plugin's `mode`: `reject`, `accept`/`dunno` or passive.
pub(super) fn mode_score(
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
                MAX_SLOTS
            ),
        );
        return None;
    };
    Some(Score::Slot(slot, score))
}

pub(super) fn reject_message(plugin: &Block, default: &str) -> String {
    let text = plugin.get("reject_message").unwrap_or(default);
    let text = text
        .replace("%INFO%", "")
        .replace("%LOCAL_EXPL%", "")
        .replace("%CHECK%", "domain")
        .replace("%HOSTNAME%", "");
    let text = text.trim().trim_end_matches([':', '(', ' ']).trim();
    format!("reject {text}")
}

pub(super) fn slot_comment(model: &Model, slot: usize) -> String {
    match &model.slots[slot].kind {
        SlotKind::Answer(action) => format!(
            "mtpolicyd answers {action:?} at once: the score of slot {slot} reaches the threshold that answers it"
        ),
        SlotKind::Accept => format!(
            "mtpolicyd accepts at once: slot {slot}'s negative score keeps the mail below every threshold"
        ),
    }
}

/// `text` as a DNS zone name spamwall accepts, or why not.
pub(super) fn zone(plugin: &Block, model: &mut Model) -> Option<String> {
    let Some(text) = plugin.get("domain") else {
        model.lost(&plugin.at, format!("{}: no domain", plugin.title()));
        return None;
    };
    let zone = text.trim().trim_end_matches('.');
    let valid = !zone.is_empty()
        && zone.len() <= 200
        && zone
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Some(zone.to_owned())
    } else {
        model.lost(
            &plugin.at,
            format!("{}: domain {text:?} is not a DNS zone name", plugin.title()),
        );
        None
    }
}
