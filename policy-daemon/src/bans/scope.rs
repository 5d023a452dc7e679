//! Port scopes: the destination ports a ban is enforced on.
//!
//! `xdp.ports` is the default scope; a log rule or a policy threshold may
//! name its own (`ports`), so a SASL failure bans the client from the
//! submission ports and a DNSBL listing from port 25 only. The kernel tells
//! up to [`MAX_SCOPES`] scopes apart, one bit each: [`PortScopes`] numbers
//! the configured ones and turns a ban's [`BanScope`] into those bits.

use std::{collections::BTreeSet, fmt, sync::Arc};

use xdp_common::{MAX_SCOPES, SCOPE_DEFAULT};

use crate::dataplane::PortScopeTable;

/// Where a ban applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum BanScope {
    /// `xdp.ports`, whatever it is now (all traffic when it is empty).
    #[default]
    Default,
    /// Every packet from the source.
    All,
    /// TCP and UDP to these ports: sorted, without repeats, never empty.
    Ports(Arc<[u16]>),
}

/// A stored scope that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port scope {text:?}: expected \"all\" or ports such as \"25,465,587\"")]
pub struct ScopeTextError {
    pub text: String,
}

impl BanScope {
    /// The scope of a `ports` setting: all traffic when empty.
    pub fn from_ports(ports: &[u16]) -> Self {
        let set: BTreeSet<u16> = ports.iter().copied().collect();
        if set.is_empty() {
            Self::All
        } else {
            Self::Ports(set.into_iter().collect())
        }
    }

    /// The scope of a ban that holds in both `self` and `other`: the
    /// union. `default_ports` is `xdp.ports`, what [`BanScope::Default`]
    /// stands for when it meets another scope.
    #[must_use]
    pub fn union(&self, other: &Self, default_ports: &[u16]) -> Self {
        let resolve = |scope: &Self| match scope {
            Self::Default => Self::from_ports(default_ports),
            other => other.clone(),
        };
        match (self, other) {
            (Self::Default, Self::Default) => Self::Default,
            (a, b) => match (resolve(a), resolve(b)) {
                (Self::Ports(a), Self::Ports(b)) => {
                    let ports: Vec<u16> = a.iter().chain(b.iter()).copied().collect();
                    Self::from_ports(&ports)
                }
                _ => Self::All,
            },
        }
    }

    /// The text the store keeps: `None` for the default, `all`, or the
    /// ports joined by commas.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Self::Default => None,
            Self::All => Some("all".to_owned()),
            Self::Ports(ports) => Some(
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }

    /// Reads [`BanScope::to_text`] back.
    pub fn from_text(text: Option<&str>) -> Result<Self, ScopeTextError> {
        let Some(text) = text else {
            return Ok(Self::Default);
        };
        if text == "all" {
            return Ok(Self::All);
        }
        let ports: Option<Vec<u16>> = text
            .split(',')
            .map(|port| port.trim().parse::<u16>().ok())
            .collect();
        match ports {
            Some(ports) if !ports.is_empty() => Ok(Self::from_ports(&ports)),
            _ => Err(ScopeTextError {
                text: text.to_owned(),
            }),
        }
    }

    /// The scope as `list`, the fleet and the configuration write it:
    /// absent for `xdp.ports`, no ports for all traffic.
    pub fn to_ports(&self) -> Option<Vec<u16>> {
        match self {
            Self::Default => None,
            Self::All => Some(Vec::new()),
            Self::Ports(ports) => Some(ports.to_vec()),
        }
    }

    /// Reads [`BanScope::to_ports`] back, as a `ports` setting is read.
    pub fn from_setting(ports: Option<&[u16]>) -> Self {
        ports.map_or(Self::Default, Self::from_ports)
    }

    /// Whether this is the default scope.
    pub const fn is_default(&self) -> bool {
        matches!(self, Self::Default)
    }
}

impl fmt::Display for BanScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("xdp.ports"),
            Self::All => f.write_str("all traffic"),
            Self::Ports(_) => f.write_str(&self.to_text().unwrap_or_default()),
        }
    }
}

/// More distinct `ports` settings than the kernel tells apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{count} distinct port scopes (xdp.ports and each rule's or threshold's own `ports`); \
     at most {MAX_SCOPES} can be told apart"
)]
pub struct TooManyScopes {
    pub count: usize,
}

/// The scopes the kernel tells apart, numbered: scope 0 is `xdp.ports`,
/// the others the distinct `ports` of rules and thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortScopes {
    /// `None`: all traffic.
    scopes: Vec<Option<Arc<[u16]>>>,
    default_ports: Vec<u16>,
}

impl Default for PortScopes {
    fn default() -> Self {
        Self {
            scopes: vec![None],
            default_ports: Vec::new(),
        }
    }
}

impl PortScopes {
    /// Numbers `xdp.ports` (`default_ports`) and every scope rules and
    /// thresholds name.
    pub fn new<'a>(
        default_ports: &[u16],
        named: impl IntoIterator<Item = &'a BanScope>,
    ) -> Result<Self, TooManyScopes> {
        let as_entry = |scope: BanScope| match scope {
            BanScope::Ports(ports) => Some(ports),
            BanScope::All | BanScope::Default => None,
        };
        let mut scopes = vec![as_entry(BanScope::from_ports(default_ports))];
        for scope in named {
            if scope.is_default() {
                continue;
            }
            let entry = as_entry(scope.clone());
            if !scopes.contains(&entry) {
                scopes.push(entry);
            }
        }
        if scopes.len() > MAX_SCOPES {
            return Err(TooManyScopes {
                count: scopes.len(),
            });
        }
        Ok(Self {
            scopes,
            default_ports: default_ports.to_vec(),
        })
    }

    /// `xdp.ports`.
    pub fn default_ports(&self) -> &[u16] {
        &self.default_ports
    }

    fn bits(&self) -> impl Iterator<Item = (u8, &Option<Arc<[u16]>>)> {
        (0..).map(|i: u32| 1_u8 << i).zip(&self.scopes)
    }

    /// The scopes covering all traffic, one bit each.
    fn all_traffic(&self) -> u8 {
        self.bits()
            .filter(|(_, scope)| scope.is_none())
            .fold(0, |mask, (bit, _)| mask | bit)
    }

    /// The bits a ban in `scope` carries in the kernel. A scope no longer
    /// configured (the rule that made it changed since) takes the
    /// configured scopes that cover its ports, and all traffic for ports
    /// none covers: a ban never holds on fewer ports than it was made for.
    pub fn mask(&self, scope: &BanScope) -> u8 {
        let every = || self.bits().fold(0, |mask, (bit, _)| mask | bit);
        match scope {
            BanScope::Default => SCOPE_DEFAULT,
            BanScope::All => match self.all_traffic() {
                0 => every(),
                all => all,
            },
            // The usual case, a rule's own list, without allocating: mask
            // runs for every ban at each reconciliation.
            BanScope::Ports(ports)
                if let Some((bit, _)) = self
                    .bits()
                    .find(|(_, scope)| scope.as_deref() == Some(&ports[..])) =>
            {
                bit
            }
            BanScope::Ports(ports) => {
                let wanted: BTreeSet<u16> = ports.iter().copied().collect();
                let mut mask = 0;
                let mut covered = BTreeSet::new();
                for (bit, scope) in self.bits() {
                    if let Some(scope) = scope
                        && scope.iter().all(|port| wanted.contains(port))
                    {
                        mask |= bit;
                        covered.extend(scope.iter().copied());
                    }
                }
                let mut left: BTreeSet<u16> = wanted.difference(&covered).copied().collect();
                if left.is_empty() {
                    return mask;
                }
                for (bit, scope) in self.bits() {
                    if let Some(scope) = scope
                        && scope.iter().any(|port| left.contains(port))
                    {
                        mask |= bit;
                        for port in scope.iter() {
                            left.remove(port);
                        }
                    }
                }
                if left.is_empty() {
                    mask
                } else {
                    mask | self.mask(&BanScope::All)
                }
            }
        }
    }

    /// The scope a kernel entry's bits stand for (adopting map entries
    /// into the store): the union of the scopes they name.
    pub fn scope_of(&self, mask: u8) -> BanScope {
        if mask == 0 || mask == SCOPE_DEFAULT {
            return BanScope::Default;
        }
        let mut scope: Option<BanScope> = None;
        for (bit, entry) in self.bits() {
            if mask & bit == 0 {
                continue;
            }
            let this = entry
                .as_ref()
                .map_or(BanScope::All, |ports| BanScope::Ports(Arc::clone(ports)));
            scope = Some(match scope {
                None => this,
                Some(scope) => scope.union(&this, &self.default_ports),
            });
        }
        scope.unwrap_or_default()
    }

    /// What the kernel needs: each port's scopes, and the scopes that
    /// cover all traffic.
    pub fn kernel_table(&self) -> (PortScopeTable, u8) {
        let mut table = PortScopeTable::default();
        for (bit, scope) in self.bits() {
            for &port in scope.iter().flat_map(|ports| ports.iter()) {
                table.add(port, bit);
            }
        }
        (table, self.all_traffic())
    }

    /// The ports of each scope in order, `xdp.ports` first, for `status`:
    /// `None` for all traffic.
    pub fn describe(&self) -> Vec<Option<Vec<u16>>> {
        self.scopes
            .iter()
            .map(|scope| scope.as_ref().map(|ports| ports.to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(list: &[u16]) -> BanScope {
        BanScope::from_ports(list)
    }

    #[test]
    fn text_round_trips_and_bad_text_is_refused() {
        for scope in [BanScope::Default, BanScope::All, ports(&[587, 25, 465, 25])] {
            assert_eq!(
                BanScope::from_text(scope.to_text().as_deref()),
                Ok(scope.clone())
            );
        }
        assert_eq!(ports(&[587, 25, 25]).to_text().as_deref(), Some("25,587"));
        for bad in ["", "25,", "70000", "smtp", "-1"] {
            assert!(BanScope::from_text(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn union_widens_and_the_default_resolves_to_xdp_ports() {
        let mail = [25, 465, 587];
        assert_eq!(
            BanScope::Default.union(&BanScope::Default, &mail),
            BanScope::Default
        );
        assert_eq!(
            ports(&[25]).union(&ports(&[465, 587, 993]), &mail),
            ports(&[25, 465, 587, 993])
        );
        assert_eq!(
            BanScope::Default.union(&ports(&[993]), &mail),
            ports(&[25, 465, 587, 993])
        );
        assert_eq!(BanScope::Default.union(&ports(&[993]), &[]), BanScope::All);
        assert_eq!(ports(&[25]).union(&BanScope::All, &mail), BanScope::All);
    }

    #[test]
    fn scopes_are_numbered_once_and_capped() {
        let named = [
            ports(&[25]),
            ports(&[465, 587, 993]),
            ports(&[25]),
            BanScope::Default,
            ports(&[587, 465, 25]),
        ];
        let scopes = PortScopes::new(&[25, 465, 587], &named).expect("fits");
        assert_eq!(
            scopes.describe(),
            vec![
                Some(vec![25, 465, 587]),
                Some(vec![25]),
                Some(vec![465, 587, 993])
            ]
        );
        let many: Vec<BanScope> = (1..=8).map(|p| ports(&[p])).collect();
        assert_eq!(
            PortScopes::new(&[25], &many),
            Err(TooManyScopes { count: 9 })
        );
    }

    #[test]
    fn masks_name_the_scopes_a_ban_holds_in() {
        let named = [ports(&[25]), ports(&[465, 587, 993]), BanScope::All];
        let scopes = PortScopes::new(&[25, 465, 587], &named).expect("fits");
        assert_eq!(scopes.mask(&BanScope::Default), 0b0001);
        assert_eq!(scopes.mask(&ports(&[25])), 0b0010);
        assert_eq!(scopes.mask(&ports(&[465, 587, 993])), 0b0100);
        assert_eq!(scopes.mask(&BanScope::All), 0b1000);
        // A union of configured scopes is exactly their bits.
        assert_eq!(scopes.mask(&ports(&[25, 465, 587, 993])), 0b0111);
        // Ports no scope holds alone take the scopes around them...
        assert_eq!(scopes.mask(&ports(&[993])), 0b0100);
        // ...and ports no scope holds at all take all traffic.
        assert_eq!(scopes.mask(&ports(&[25, 8080])), 0b1010);
        for mask in [0b0010, 0b0100, 0b0111, 0b1000] {
            assert_eq!(scopes.mask(&scopes.scope_of(mask)), mask, "{mask:#b}");
        }
        assert_eq!(scopes.scope_of(0), BanScope::Default);
    }

    #[test]
    fn the_default_is_xdp_ports_covering_all_traffic() {
        assert_eq!(
            PortScopes::default(),
            PortScopes::new(&[], []).expect("fits")
        );
    }

    #[test]
    fn without_an_all_traffic_scope_all_takes_every_scope() {
        let scopes = PortScopes::new(&[25], &[ports(&[993])]).expect("fits");
        assert_eq!(scopes.mask(&BanScope::All), 0b11);
        let (table, all_traffic) = scopes.kernel_table();
        assert_eq!(
            (table.get(25), table.get(993), table.get(80)),
            (0b01, 0b10, 0)
        );
        assert_eq!(all_traffic, 0);
    }

    #[test]
    fn an_empty_xdp_ports_is_an_all_traffic_scope() {
        let scopes = PortScopes::new(&[], &[ports(&[25])]).expect("fits");
        let (table, all_traffic) = scopes.kernel_table();
        assert_eq!((table.get(25), all_traffic), (0b10, 0b01));
        assert_eq!(scopes.mask(&BanScope::All), 0b01);
        assert_eq!(PortScopes::default().kernel_table().1, SCOPE_DEFAULT);
    }
}
