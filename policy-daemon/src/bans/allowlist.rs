//! The allowlist: addresses and prefixes never banned, checked on every
//! ban path for every target, so a bulk ban of a million addresses against
//! a long allowlist asks it a million times.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

/// Addresses and prefixes that are never banned. Loopback is always in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<IpNet>,
    v4: Spans,
    v6: Spans,
}

impl Allowlist {
    /// The given entries plus loopback (`127.0.0.0/8` and `::1`).
    pub fn new(entries: impl IntoIterator<Item = IpNet>) -> Self {
        let mut nets: Vec<IpNet> = loopback().into_iter().collect();
        for net in entries {
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        let span = |family_v4: bool| {
            Spans::new(
                nets.iter()
                    .filter(|net| net.addr().is_ipv4() == family_v4)
                    .map(range),
            )
        };
        Self {
            v4: span(true),
            v6: span(false),
            entries: nets,
        }
    }

    /// The allowlist entry that overlaps `target`, if any: a prefix ban
    /// that would cover an allowlisted address is refused too. With
    /// several, the first in the list. Whether any overlaps is one binary
    /// search, whatever the list's length; only a target that does
    /// overlap reads the list.
    pub fn covers(&self, target: &IpNet) -> Option<IpNet> {
        let spans = if target.addr().is_ipv4() {
            &self.v4
        } else {
            &self.v6
        };
        if !spans.overlaps(range(target)) {
            return None;
        }
        self.entries
            .iter()
            .find(|entry| entry.contains(&target.network()) || target.contains(&entry.network()))
            .copied()
    }

    /// The entries, loopback first.
    pub fn entries(&self) -> &[IpNet] {
        &self.entries
    }
}

impl Default for Allowlist {
    fn default() -> Self {
        Self::new([])
    }
}

/// The first and last address of `net`, as numbers.
fn range(net: &IpNet) -> (u128, u128) {
    let number = |addr: IpAddr| match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    (number(net.network()), number(net.broadcast()))
}

/// The address ranges of one family's entries, sorted by first address,
/// with the furthest last address reached by each sorted prefix of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Spans {
    starts: Vec<u128>,
    reach: Vec<u128>,
}

impl Spans {
    fn new(ranges: impl Iterator<Item = (u128, u128)>) -> Self {
        let mut ranges: Vec<(u128, u128)> = ranges.collect();
        ranges.sort_unstable();
        let mut furthest = 0;
        let reach = ranges
            .iter()
            .map(|&(_, end)| {
                furthest = furthest.max(end);
                furthest
            })
            .collect();
        Self {
            starts: ranges.iter().map(|&(start, _)| start).collect(),
            reach,
        }
    }

    /// Whether some range meets `[first, last]`: of those starting at or
    /// before `last`, the one reaching furthest reaches `first`.
    fn overlaps(&self, (first, last): (u128, u128)) -> bool {
        let before = self.starts.partition_point(|&start| start <= last);
        before > 0 && self.reach[before - 1] >= first
    }
}

fn loopback() -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default()),
        IpNet::from(IpAddr::from(Ipv6Addr::LOCALHOST)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    /// The answer of a plain scan of the list.
    fn scanned(allow: &Allowlist, target: &IpNet) -> Option<IpNet> {
        allow
            .entries()
            .iter()
            .find(|entry| entry.contains(&target.network()) || target.contains(&entry.network()))
            .copied()
    }

    #[test]
    fn a_long_allowlist_answers_as_a_scan_of_it_would() {
        let mut entries: Vec<IpNet> = (0..2_000_u32)
            .map(|i| {
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i * 512), 24).expect("net"))
            })
            .collect();
        entries.extend(
            [
                "10.0.0.0/8",
                "10.0.4.0/22",
                "192.0.2.77/32",
                "2001:db8::/48",
                "2001:db8:0:1::/64",
                "2001:db8:ffff::1/128",
                "::ffff:198.51.100.0/120",
            ]
            .map(net),
        );
        entries.reverse();
        let allow = Allowlist::new(entries);
        let targets = [
            "10.0.2.1/32",
            "10.0.3.0/24",
            "10.200.0.0/16",
            "11.0.0.1/32",
            "9.255.255.255/32",
            "0.0.0.0/0",
            "192.0.2.77/32",
            "192.0.2.78/32",
            "192.0.2.0/24",
            "127.0.0.1/32",
            "128.0.0.0/1",
            "2001:db8::5/128",
            "2001:db8:0:1::9/128",
            "2001:db8:1::1/128",
            "2001:db8:ffff::/48",
            "2001:db8:ffff::2/128",
            "::/0",
            "::1/128",
            "::2/128",
            "::ffff:198.51.100.7/128",
            "198.51.100.7/32",
        ]
        .map(net);
        for target in targets {
            assert_eq!(allow.covers(&target), scanned(&allow, &target), "{target}");
        }
        for i in 0..50_000_u32 {
            let target = IpNet::from(IpAddr::from(Ipv4Addr::from(0x0900_0000 + i * 997)));
            assert_eq!(allow.covers(&target), scanned(&allow, &target), "{target}");
        }
    }
}
