//! The `appliance` format and every refusal of a malformed verity store.

use super::*;

fn appliance() -> &'static str {
    BUILTIN.iter().find(|(n, _)| *n == "appliance").unwrap().1
}

/// `text` without the `[[partition]]`s at `drop` (1 is the first).
fn without(text: &str, drop: &[usize]) -> String {
    text.split("[[partition]]")
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("[[partition]]")
}

/// The reason `text` is refused, which must contain `want`.
fn refused(text: &str, want: &str) {
    let e = Format::parse("x", text).unwrap_err();
    assert!(matches!(e, FormatError::Invalid { .. }), "{want}: {e:?}");
    let e = e.to_string();
    assert!(e.contains(want), "want `{want}` in: {e}");
}

#[test]
fn appliance_is_the_verity_store_layout() {
    let f = Format::load("appliance").unwrap();
    let names: Vec<&str> = f.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ESP",
            "store-verity",
            "store",
            "store-verity-b",
            "store-b",
            "root"
        ]
    );
    let slots: Vec<(&str, usize)> = f
        .empty_slots()
        .iter()
        .map(|(p, a)| (p.name.as_str(), *a))
        .collect();
    assert_eq!(slots, [("store-verity-b", 1), ("store-b", 2)]);
    assert!(f.bootloader.uki);
    let (si, store) = f.store_partition().unwrap();
    let (vi, verity) = f.verity_partition().unwrap();
    assert_eq!((si, vi), (2, 1));
    assert_eq!(store.filesystem, Filesystem::Squashfs);
    assert_eq!(verity.verity_of.as_deref(), Some("store"));
    assert!(store.sized_by_contents() && verity.sized_by_contents());
    assert!(!f.root_partition().sized_by_contents());
    assert!(!f.root.store);
    let t = partition_types(Designator::Usr, Arch::X86_64);
    assert_eq!(store.type_id, Some(PartType::Gpt(t.data)));
    assert_eq!(verity.type_id, Some(PartType::Gpt(t.verity)));
    assert_eq!(
        f.root_partition().type_id,
        Some(PartType::Gpt(
            partition_types(Designator::Root, Arch::X86_64).data
        ))
    );
    // Every other built-in format keeps the store in its root.
    for (name, _) in BUILTIN.iter().filter(|(n, _)| *n != "appliance") {
        let f = Format::load(name).unwrap();
        assert!(f.store_partition().is_none() && f.root.store, "{name}");
    }
}

#[test]
fn a_malformed_verity_store_is_refused_with_its_reason() {
    let a = appliance();
    refused(
        &a.replace("store = false", "store = true"),
        "set `[root] store = false`",
    );
    refused(
        &a.replace("verity-of = \"store\"", "verity-of = \"root\""),
        "`verity-of = \"root\"` names no `store` partition",
    );
    refused(
        &a.replace("verity-of = \"store\"\n", ""),
        "a `verity` partition needs `verity-of`",
    );
    refused(
        &a.replace("contents = \"verity\"", "contents = \"root\""),
        "exactly one root partition",
    );
    // The hash partition gone: the store is unprotected.
    let no_verity = without(a, &[2, 4, 5]);
    refused(&no_verity, "needs exactly one `verity` partition");
    // The store partition gone: the hash partition has nothing to protect.
    let no_store = without(a, &[3]);
    refused(&no_store, "there is none");
    // Neither, but the root still without the store.
    let neither = without(a, &[2, 3]);
    refused(&neither, "`[root] store = false` needs a `store` partition");
    refused(
        &a.replacen("size = \"auto\"", "size = \"64MiB\"", 1),
        "as large as its contents: `size = \"auto\"`",
    );
    refused(
        &a.replace(
            "contents = \"store\"",
            "contents = \"store\"\nlabel = \"nixstore\"",
        ),
        "has no file system label",
    );
    refused(
        &a.replace(
            "contents = \"store\"",
            "contents = \"store\"\nsize-flag = \"store-size\"",
        ),
        "has no `size-flag`",
    );
    refused(
        &a.replace("filesystem = \"squashfs\"", "filesystem = \"none\""),
        "only they, have filesystem `none`",
    );
    refused(
        &a.replace(
            "verity-of = \"store\"",
            "verity-of = \"store\"\nmount-point = \"/v\"",
        ),
        "is not mounted (no mount-point)",
    );
    refused(
        &a.replace(
            "contents = \"esp\"",
            "contents = \"esp\"\nverity-of = \"store\"",
        ),
        "`verity-of` is for a `verity` partition",
    );
    // Types: the DPS usr pair of the system, not swapped, not another arch's.
    refused(
        &a.replace(
            "8484680C-9521-48C6-9C11-B0720656F69E",
            "B0E01050-EE5F-4390-949A-9101B17104E9",
        ),
        "is not the Discoverable Partitions `usr` type of x86_64-linux",
    );
    refused(
        &a.replace(
            "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ),
        "is not the Discoverable Partitions `usr-verity` type",
    );
    refused(
        &a.replace(
            "system = \"x86_64-linux\"",
            "system = [\"x86_64-linux\", \"aarch64-linux\"]",
        ),
        "type of aarch64-linux",
    );
    refused(
        &a.replace("system = \"x86_64-linux\"", "system = \"riscv64-linux\""),
        "not of `riscv64-linux`",
    );
    refused(
        &a.replace("type = \"systemd-boot\"", "type = \"extlinux\""),
        "needs `[bootloader] type = \"systemd-boot\"`",
    );
}

#[test]
fn two_store_partitions_are_refused() {
    let a = appliance();
    let store = a
        .split("[[partition]]")
        .nth(3)
        .unwrap()
        .replace("name = \"store\"", "name = \"store2\"");
    let two = a.replacen(
        "[[partition]]\nname = \"root\"",
        &format!("[[partition]]{store}[[partition]]\nname = \"root\""),
        1,
    );
    refused(&two, "has 2 `store` partitions; one at most");
}

#[test]
fn malformed_b_slots_are_refused_with_their_reason() {
    let a = appliance();
    // The pair's B slots are partitions 4 and 5 of the text.
    refused(&without(a, &[4]), "both have a B slot, or neither");
    refused(
        &a.replace("slot-of = \"store\"", "slot-of = \"root\""),
        "names no `store` or `verity` partition",
    );
    refused(&a.replace("slot-of = \"store\"\n", ""), "needs `slot-of`");
    refused(
        &a.replace("slot-of = \"store\"", "slot-of = \"store-verity\""),
        "has two B slots",
    );
    refused(
        &a.replace("uki = true", "uki = false"),
        "set `[bootloader] uki = true`",
    );
    refused(
        &a.replace(
            "verity-of = \"store\"",
            "verity-of = \"store\"\nslot-of = \"store\"",
        ),
        "`slot-of` is for an `empty` partition",
    );
    // The B slot of the store with the verity type.
    let b = a.rsplit_once("slot-of = \"store\"").unwrap().0;
    let (head, tail) = b.rsplit_once("type = \"8484680C").unwrap();
    let text = format!(
        "{head}type = \"77FF5F63-E7B6-4633-ACF4-1565B864C0E6{}slot-of = \"store\"{}",
        &tail[tail.find('"').unwrap()..],
        a.rsplit_once("slot-of = \"store\"").unwrap().1
    );
    refused(&text, "has its A slot's type");
    // Without both B slots: a single-slot verity store, no UKI needed.
    let single = without(a, &[4, 5]).replace("uki = true", "uki = false");
    let f = Format::parse("x", &single).unwrap();
    assert!(f.empty_slots().is_empty());
}
