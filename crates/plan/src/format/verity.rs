//! The checks of a dm-verity store: a `store` partition (the closure's squashfs image) and
//! its `verity` partner, as nixpkgs' `image.repart.verityStore` lays them out (the
//! Discoverable Partitions Specification's `usr` and `usr-verity` types of the system).

use imgbuild_verity::partition::{partition_types, Arch, Designator};

use super::*;

impl Partition {
    /// Whether `size = "auto"` is the contents' size (a store image, a hash area, plus
    /// `free` room for later versions; an empty B slot: its A slot's) rather than the rest
    /// of the disk.
    pub fn sized_by_contents(&self) -> bool {
        matches!(
            self.contents,
            Contents::Store | Contents::Verity | Contents::Empty
        )
    }
}

/// The Discoverable Partitions architecture of a Nix system, for the systems imgbuild has
/// the types of.
pub fn dps_arch(system: &str) -> Option<Arch> {
    match system {
        "x86_64-linux" => Some(Arch::X86_64),
        "aarch64-linux" => Some(Arch::Arm64),
        _ => None,
    }
}

impl Format {
    /// The `store` partition and its index, when the format has one.
    pub fn store_partition(&self) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.contents == Contents::Store)
    }

    /// The empty B slots (A/B updates), each with the index of its A slot.
    pub fn empty_slots(&self) -> Vec<(&Partition, usize)> {
        self.partitions
            .iter()
            .filter(|p| p.contents == Contents::Empty)
            .filter_map(|p| {
                let of = p.slot_of.as_deref()?;
                let a = self.partitions.iter().position(|q| q.name == of)?;
                Some((p, a))
            })
            .collect()
    }

    /// The `verity` partition protecting the store, and its index, when the format has one.
    pub fn verity_partition(&self) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.contents == Contents::Verity)
    }

    /// A `store` partition comes with exactly one `verity` partition naming it, the root
    /// without the store, GPT, systemd-boot, sizes from the contents, and the DPS types of
    /// the format's system.
    pub(super) fn check_verity(&self) -> Result<(), String> {
        let of = |c: Contents| self.partitions.iter().filter(move |p| p.contents == c);
        if let Some(p) = self
            .partitions
            .iter()
            .find(|p| p.verity_of.is_some() && p.contents != Contents::Verity)
        {
            return Err(format!(
                "partition `{}`: `verity-of` is for a `verity` partition",
                quote(&p.name)
            ));
        }
        let stores: Vec<&Partition> = of(Contents::Store).collect();
        let verities: Vec<&Partition> = of(Contents::Verity).collect();
        let [store] = stores.as_slice() else {
            if stores.is_empty() && verities.is_empty() && self.root.store {
                return match of(Contents::Empty).next() {
                    Some(p) => Err(format!(
                        "partition `{}`: an `empty` partition is a B slot of a `store` or \
                         `verity` partition; there is none",
                        quote(&p.name)
                    )),
                    None => Ok(()),
                };
            }
            return Err(match stores.len() {
                0 if verities.is_empty() => "`[root] store = false` needs a `store` partition \
                     to hold the store paths"
                    .into(),
                0 => "a `verity` partition protects a `store` partition; there is none".into(),
                n => format!("has {n} `store` partitions; one at most"),
            });
        };
        let [verity] = verities.as_slice() else {
            return Err(format!(
                "the `store` partition `{}` needs exactly one `verity` partition \
                 (`verity-of = \"{}\"`), has {}",
                quote(&store.name),
                quote(&store.name),
                verities.len()
            ));
        };
        match &verity.verity_of {
            None => {
                return Err(format!(
                    "partition `{}`: a `verity` partition needs `verity-of`, the name of the \
                     partition it protects",
                    quote(&verity.name)
                ))
            }
            Some(n) if *n != store.name => {
                return Err(format!(
                    "partition `{}`: `verity-of = \"{}\"` names no `store` partition",
                    quote(&verity.name),
                    quote(n)
                ))
            }
            Some(_) => {}
        }
        self.check_slots()?;
        if self.root.store {
            return Err(
                "a `store` partition holds the store paths: set `[root] store = false` \
                 (the root file system keeps /nix/store as an empty mount point)"
                    .into(),
            );
        }
        if self.table.kind != TableType::Gpt {
            return Err(
                "a `store` partition and its `verity` partner need a GPT table \
                 (Discoverable Partitions types)"
                    .into(),
            );
        }
        if self.bootloader.kind != Bootloader::SystemdBoot {
            return Err(
                "a verity-protected store needs `[bootloader] type = \"systemd-boot\"`, \
                 whose entry carries `usrhash=`"
                    .into(),
            );
        }
        for p in [*store, *verity] {
            check_sized_by_contents(p)?;
        }
        if !self.empty_slots().is_empty() && !self.bootloader.uki {
            return Err(
                "empty B slots are filled by systemd-sysupdate together with a new UKI (whose \
                 .cmdline names the new root hash): set `[bootloader] uki = true`"
                    .into(),
            );
        }
        self.check_dps_types(store, verity)
    }

    /// Every `empty` partition is the B slot of the store or its verity partition (`slot-of`),
    /// of the same type, as large as it (`size = "auto"`), unlabelled; each of the two has
    /// one B slot at most, and a format with B slots has both.
    fn check_slots(&self) -> Result<(), String> {
        if let Some(p) = self
            .partitions
            .iter()
            .find(|p| p.slot_of.is_some() && p.contents != Contents::Empty)
        {
            return Err(format!(
                "partition `{}`: `slot-of` is for an `empty` partition",
                quote(&p.name)
            ));
        }
        let mut of = Vec::new();
        for p in self
            .partitions
            .iter()
            .filter(|p| p.contents == Contents::Empty)
        {
            let name = quote(&p.name);
            let Some(a) = p.slot_of.as_deref() else {
                return Err(format!(
                    "partition `{name}`: an `empty` partition needs `slot-of`, the name of the \
                     `store` or `verity` partition whose B slot it is"
                ));
            };
            let Some(ap) = self
                .partitions
                .iter()
                .find(|q| q.name == a && matches!(q.contents, Contents::Store | Contents::Verity))
            else {
                return Err(format!(
                    "partition `{name}`: `slot-of = \"{}\"` names no `store` or `verity` \
                     partition",
                    quote(a)
                ));
            };
            if of.contains(&ap.contents) {
                return Err(format!(
                    "partition `{name}`: `{}` has two B slots; one at most",
                    quote(a)
                ));
            }
            if p.type_id != ap.type_id {
                return Err(format!(
                    "partition `{name}`: a B slot has its A slot's type (`{}`'s)",
                    quote(a)
                ));
            }
            if p.size != PartSize::Auto || p.free.is_some() || p.size_flag.is_some() {
                return Err(format!(
                    "partition `{name}`: a B slot is as large as its A slot: `size = \"auto\"`, \
                     no `free` or `size-flag`"
                ));
            }
            if !p.label.is_empty() {
                return Err(format!(
                    "partition `{name}`: a B slot has no file system label"
                ));
            }
            of.push(ap.contents);
        }
        if of.len() == 1 {
            return Err(
                "the store and its verity partition are updated together: both have a B slot, \
                 or neither"
                    .into(),
            );
        }
        Ok(())
    }

    /// The store and verity partitions have the DPS `usr` and `usr-verity` types of every
    /// system the format is for.
    fn check_dps_types(&self, store: &Partition, verity: &Partition) -> Result<(), String> {
        for system in &self.system.0 {
            let Some(arch) = dps_arch(system) else {
                return Err(format!(
                    "a verity store's partition types are the Discoverable Partitions types of \
                     x86_64-linux or aarch64-linux, not of `{}`",
                    quote(system)
                ));
            };
            let types = partition_types(Designator::Usr, arch);
            for (p, want, what) in [
                (store, types.data, "usr"),
                (verity, types.verity, "usr-verity"),
            ] {
                if p.type_id != Some(PartType::Gpt(want)) {
                    let given = p
                        .type_id
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), ToString::to_string);
                    return Err(format!(
                        "partition `{}`: type `{given}` is not the Discoverable Partitions \
                         `{what}` type of {system} ({})",
                        quote(&p.name),
                        PartType::Gpt(want)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A store or verity partition is as large as its contents plus `free` (room for a later,
/// larger version in an A/B slot), and they have no label.
fn check_sized_by_contents(p: &Partition) -> Result<(), String> {
    let name = quote(&p.name);
    if p.size != PartSize::Auto {
        return Err(format!(
            "partition `{name}`: a `store` or `verity` partition is as large as its contents: \
             `size = \"auto\"`"
        ));
    }
    if p.size_flag.is_some() {
        return Err(format!(
            "partition `{name}`: a `store` or `verity` partition has no `size-flag` (it is as \
             large as its contents, plus `free`)"
        ));
    }
    if !p.label.is_empty() {
        return Err(format!(
            "partition `{name}`: a `store` or `verity` partition has no file system label \
             (its GPT name is `name`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests_verity.rs"]
mod tests;
