//! The targets of a control request, parsed once for every verb that takes
//! a list.

use ipnet::IpNet;

use crate::{bans::parse_target, control::Refusal};

/// The targets of a request that parse, with the text each was given as,
/// and a refusal for each that does not.
pub(super) fn parse_targets(targets: Vec<String>) -> (Vec<IpNet>, Vec<String>, Vec<Refusal>) {
    let mut refused = Vec::new();
    let mut nets = Vec::with_capacity(targets.len());
    let mut texts = Vec::with_capacity(targets.len());
    for target in targets {
        match parse_target(&target) {
            Ok(net) => {
                nets.push(net);
                texts.push(target);
            }
            Err(error) => refused.push(Refusal {
                target,
                reason: error.to_string(),
            }),
        }
    }
    (nets, texts, refused)
}
