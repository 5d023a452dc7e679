//! The program's global data: the settings it reads on every packet.
//!
//! Each loaded program has its own copy, written here and nowhere else.
//! It starts all zero, which reads no port and consults both prefix tries;
//! [`Dataplane::load`] marks the tries found empty before anything is
//! attached, and every prefix write keeps the marks true: a trie is
//! unmarked before its first prefix goes in and marked again only once a
//! removal has left it empty, so a prefix ban is enforced from the moment
//! it is in the trie.

use aya::maps::{LpmTrie, MapData};
use ipnet::IpNet;
use xdp_common::{BanValue, SETTINGS_MAP, XdpSettings};

use super::{Dataplane, DataplaneError, Result};

/// The prefix trie a prefix ban of this family lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a prefix ban; `None` for a single address, which
    /// lives in the exact-address maps.
    pub(super) fn of_prefix(net: IpNet) -> Option<Self> {
        match net {
            IpNet::V4(n) if n.prefix_len() < 32 => Some(Self::V4),
            IpNet::V6(n) if n.prefix_len() < 128 => Some(Self::V6),
            _ => None,
        }
    }
}

impl Dataplane {
    /// The settings the program runs with.
    pub fn settings(&self) -> XdpSettings {
        self.settings
    }

    /// Replaces the settings in the program's global data.
    pub(super) fn write_settings(&mut self, settings: XdpSettings) -> Result<()> {
        self.settings_map
            .set(0, settings, 0)
            .map_err(|source| DataplaneError::Map {
                name: SETTINGS_MAP,
                source,
            })?;
        self.settings = settings;
        Ok(())
    }

    /// Marks each prefix trie that holds no entry, so the program skips it.
    /// A trie that cannot be read counts as holding some.
    pub(super) fn mark_empty_tries(&mut self) -> Result<()> {
        let settings = XdpSettings {
            no_prefix_v4: u32::from(trie_is_empty(&self.prefix_v4)),
            no_prefix_v6: u32::from(trie_is_empty(&self.prefix_v6)),
            ..self.settings
        };
        self.write_settings(settings)
    }

    /// Makes the program consult `family`'s trie: called before a prefix
    /// is written to it.
    pub(super) fn expect_prefixes(&mut self, family: Family) -> Result<()> {
        let mut settings = self.settings;
        match family {
            Family::V4 => settings.no_prefix_v4 = 0,
            Family::V6 => settings.no_prefix_v6 = 0,
        }
        if settings == self.settings {
            return Ok(());
        }
        self.write_settings(settings)
    }

    /// Lets the program skip `family`'s trie if a removal left it empty.
    pub(super) fn forget_prefixes_if_none(&mut self, family: Family) -> Result<()> {
        let mut settings = self.settings;
        match family {
            Family::V4 => settings.no_prefix_v4 = u32::from(trie_is_empty(&self.prefix_v4)),
            Family::V6 => settings.no_prefix_v6 = u32::from(trie_is_empty(&self.prefix_v6)),
        }
        if settings == self.settings {
            return Ok(());
        }
        self.write_settings(settings)
    }
}

/// Whether the trie holds no key; `false` when it cannot be read.
fn trie_is_empty<const N: usize>(trie: &LpmTrie<MapData, [u8; N], BanValue>) -> bool {
    trie.keys().next().is_none()
}
