//! Targets' texts, the store's primary key, laid out once and ordered
//! without a string per target.

use ipnet::IpNet;

use crate::bans::push_target;

/// Every target's text, one after the other.
pub struct Keys {
    text: String,
    /// Where each target's text ends in `text`.
    ends: Vec<usize>,
}

impl Keys {
    pub fn new<'a>(targets: impl ExactSizeIterator<Item = &'a IpNet>) -> Self {
        let mut text = String::with_capacity(targets.len() * 16);
        let mut ends = Vec::with_capacity(targets.len());
        for target in targets {
            push_target(&mut text, target);
            ends.push(text.len());
        }
        Self { text, ends }
    }

    /// The text of target `i`.
    pub fn key(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[i]]
    }

    /// Positions sorted by text, then position: the order of the primary
    /// key, a target given twice in its order. Sorted first by the text's
    /// first 16 bytes as one number (most IPv4 targets whole), then each
    /// run that ties on those by the whole text: far cheaper than
    /// comparing strings throughout.
    pub fn order(&self) -> Vec<usize> {
        let mut keyed: Vec<(u128, usize)> = (0..self.ends.len())
            .map(|i| {
                let mut head = [0_u8; 16];
                let key = self.key(i).as_bytes();
                let n = key.len().min(head.len());
                head[..n].copy_from_slice(&key[..n]);
                (u128::from_be_bytes(head), i)
            })
            .collect();
        keyed.sort_unstable();
        let mut start = 0;
        while start < keyed.len() {
            let head = keyed[start].0;
            let end = keyed[start..]
                .iter()
                .position(|&(h, _)| h != head)
                .map_or(keyed.len(), |n| start + n);
            if end - start > 1 {
                keyed[start..end]
                    .sort_unstable_by(|a, b| self.key(a.1).cmp(self.key(b.1)).then(a.1.cmp(&b.1)));
            }
            start = end;
        }
        keyed.into_iter().map(|(_, i)| i).collect()
    }
}

/// `targets` in the order of the store's primary key.
pub fn in_key_order<T>(targets: Vec<T>, target: impl Fn(&T) -> &IpNet) -> Vec<T> {
    let order = Keys::new(targets.iter().map(&target)).order();
    let mut slots: Vec<Option<T>> = targets.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{parse_target, target_to_string};

    #[test]
    fn targets_come_in_the_order_of_their_text_ties_in_theirs() {
        let texts = [
            "192.0.2.10",
            "2001:db8::/64",
            "192.0.2.1",
            "10.0.0.0/8",
            "192.0.2.100",
            "2001:db8::1",
            "192.0.2.1",
            "2001:db8:0:0:1::/80",
            "198.51.100.0/24",
            "192.0.2.2",
        ];
        let targets: Vec<(usize, IpNet)> = texts
            .iter()
            .map(|text| parse_target(text).expect("target"))
            .enumerate()
            .collect();
        let mut expected: Vec<(String, usize)> = targets
            .iter()
            .map(|(at, target)| (target_to_string(target), *at))
            .collect();
        expected.sort();
        let ordered: Vec<(String, usize)> = in_key_order(targets, |(_, target)| target)
            .into_iter()
            .map(|(at, target)| (target_to_string(&target), at))
            .collect();
        assert_eq!(ordered, expected);
    }
}
