//! The per-CPU packet counters, summed.

use std::fmt;

use serde::{Deserialize, Serialize};
use xdp_common::Counter;

/// Sums of the per-CPU packet counters, one per [`Counter`]; serialized
/// as one member per counter, named by [`Counter::name`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounters([u64; Counter::COUNT as usize]);

impl PacketCounters {
    #[cfg(any(test, feature = "test-support"))]
    /// The value of one counter.
    pub const fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index() as usize]
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().zip(self.0)
    }

    pub(super) const fn slot(&mut self, counter: Counter) -> &mut u64 {
        &mut self.0[counter.index() as usize]
    }
}

impl Serialize for PacketCounters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (counter, value) in self.iter() {
            map.serialize_entry(counter.name(), &value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PacketCounters {
    /// Reads the counters it knows by name; other members (those of a
    /// struct it is flattened into, or a newer daemon's) are ignored.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;

        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = PacketCounters;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("packet counters by name")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PacketCounters, A::Error> {
                let mut counters = PacketCounters::default();
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match Counter::ALL.into_iter().find(|c| c.name() == name) {
                        Some(counter) => *counters.slot(counter) = map.next_value()?,
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(counters)
            }
        }

        deserializer.deserialize_map(Members)
    }
}
