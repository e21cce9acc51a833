//! The `system` key of a format file: one Nix system or a list of them.

use serde::Deserialize;

/// The Nix systems a format is for: `system = "x86_64-linux"` or a list
/// (`system = ["x86_64-linux", "aarch64-linux"]`); the toplevel's system picks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systems(pub Vec<String>);

impl Systems {
    /// Whether a toplevel built for `system` can be written in this format.
    pub fn contains(&self, system: &str) -> bool {
        self.0.iter().any(|s| s == system)
    }
}

impl std::fmt::Display for Systems {
    /// `x86_64-linux`, or `x86_64-linux or aarch64-linux`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" or "))
    }
}

impl<'de> Deserialize<'de> for Systems {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Systems(vec![s]),
            OneOrMany::Many(v) => Systems(v),
        })
    }
}

impl serde::Serialize for Systems {
    /// One system as a string (as format files wrote it before lists), more as a list.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}
