# The `appliance` format: what a NixOS system needs to boot the disk `imgbuild appliance`
# writes and to update itself from A/B slots. Imported by nixosModules.imgbuild; active only
# for its format. The disk (formats/appliance.toml, AB-CONTRACT.md) is the layout of nixpkgs'
# `image.repart.verityStore` (nixos/modules/image/repart-verity-store.nix): an ESP with
# systemd-boot and the UKI `EFI/Linux/<image id>_<image version>.efi`, the store as a
# squashfs in a `usr` partition protected by dm-verity (its hash in a `usr-verity`
# partition, both found by the UUIDs `usrhash=` on the UKI's command line gives), an empty
# second slot of each for the next version, and an ext4 root labelled `nixos`.
#
# Written from nixpkgs' facts, nothing copied:
# - repart-verity-store.nix sets `boot.initrd.systemd.dmVerity.enable`; its dm-verity.nix
#   wants systemd's stage 1 (veritysetup-generator opens `usrhash=`'s pair as
#   /dev/mapper/usr) and adds dm_mod and dm_verity to the initrd;
# - nixpkgs' appliance test (nixos/tests/appliance-repart-image-verity-store.nix) mounts /usr
#   from /dev/mapper/usr read-only and binds /nix/store to /usr/nix/store, as `fileSystems`;
#   both are among utils.pathsNeededForBoot, so NixOS mounts them in the initrd
#   (filesystems.nix adds `x-initrd.mount` itself); it also empties the `usrbinenv`
#   activation script, which would create /usr/bin/env on the read-only /usr;
# - uki.nix names the UKI `<boot.uki.name>[_<boot.uki.version>][+<boot.uki.tries>].efi`,
#   `boot.uki.name` defaulting to `system.image.id` and `boot.uki.version` to
#   `system.image.version` (so nothing is set here: the assertion below checks the result);
# - systemd/sysupdate.nix: `systemd.sysupdate.enable` and `.transfers.<name>.<section>`,
#   written as sysupdate.d files (a list value is one space-separated line).
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkForce mkIf mkOption types;
  cfg = config.imgbuild.appliance;
  on = config.imgbuild.format == "appliance";

  # (`or`: the module evaluates against releases and test stubs without these options.)
  imageId = config.system.image.id or null;
  imageVersion = config.system.image.version or null;
  ukiFile = config.system.boot.loader.ukiFile or null;
  systemdInitrd = config.boot.initrd.systemd.enable or false;
  dmVerity = config.boot.initrd.systemd.dmVerity.enable or false;

  # AB-CONTRACT.md: `_` separates id, version and UUID in the artifacts' names and the GPT
  # partition names `<id>_<version>[_verity]`, so neither may hold one.
  validId = s: builtins.isString s && builtins.match "[A-Za-z0-9.-]+" s != null;
  # No `+` either: systemd-boot reads `+<tries>` in a UKI's name as its boot counter.
  validVersion = s: builtins.isString s && builtins.match "[A-Za-z0-9.~^-]+" s != null;
  named = validId imageId && validVersion imageVersion;
  wantedUki = "${toString imageId}_${toString imageVersion}.efi";
  # A GPT partition name holds at most 36 UTF-16 code units (ASCII here).
  verityName = "${toString imageId}_${toString imageVersion}_verity";

  source = cfg.updateSource;
  isUrl = s: builtins.match "https?://.+" s != null;
  isPath = s: builtins.match "/.*" s != null;
  sourceOk = source == null || isUrl source || isPath source;

  # The three transfers of AB-CONTRACT.md: the new version's UKI into EFI/Linux (with boot
  # counting: systemd-boot falls back to the running version when it does not come up), its
  # store and hash areas into the empty slots, found by GPT type and named like the running
  # ones. `@u` in a source name is the partition UUID sysupdate gives the slot it writes (the
  # root hash's halves, which `usrhash=` looks for). ProtectVersion=%A: the running version
  # is never overwritten.
  transfers =
    let
      id = toString imageId;
      from = pattern: {
        Type = if isUrl source then "url-file" else "regular-file";
        Path = source;
        MatchPattern = pattern;
      };
      transfer = {
        ProtectVersion = "%A";
      }
      # SHA256SUMS of an http(s) source must carry a signature by default (sysupdate's
      # Verify=); imgbuild writes SHA256SUMS unsigned.
      // lib.optionalAttrs (isUrl source && !cfg.verifyUpdates) { Verify = false; };
      slot = type: name: {
        Type = "partition";
        Path = "auto";
        MatchPartitionType = type;
        MatchPattern = name;
        ReadOnly = 1;
      };
    in
    {
      "10-uki" = {
        Transfer = transfer;
        Source = from "${id}_@v.efi";
        Target = {
          Type = "regular-file";
          Path = "/EFI/Linux";
          PathRelativeTo = "boot";
          MatchPattern = [
            "${id}_@v+@l-@d.efi"
            "${id}_@v+@l.efi"
            "${id}_@v.efi"
          ];
          Mode = "0444";
          TriesLeft = 3;
          TriesDone = 0;
          InstancesMax = 2;
        };
      };
      "20-usr-verity" = {
        Transfer = transfer;
        Source = from "${id}_@v_@u.usr-verity.raw";
        Target = slot "usr-verity" "${id}_@v_verity";
      };
      "22-usr" = {
        Transfer = transfer;
        Source = from "${id}_@v_@u.usr.raw";
        Target = slot "usr" "${id}_@v";
      };
    };
in
{
  options.imgbuild.appliance = {
    updateSource = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://updates.example.com/appliance/";
      description = ''
        Where systemd-sysupdate finds the next versions of this appliance (`imgbuild.format =
        "appliance"`): an `http://` or `https://` URL (transfers of `Type=url-file`, which
        read its SHA256SUMS) or an absolute directory path on the machine (`Type=regular-file`,
        e.g. a mounted medium). It holds what imgbuild writes beside the image in
        `<image>.sysupdate/`: `<id>_<version>_<uuid>.usr.raw`,
        `<id>_<version>_<uuid>.usr-verity.raw`, `<id>_<version>.efi` and SHA256SUMS, of
        every version on offer. Sets `systemd.sysupdate.enable` and the transfers `10-uki`,
        `20-usr-verity` and `22-usr`. `null` (the default): no sysupdate configuration; the
        image boots, its second slots stay empty until transfers of your own fill them.
      '';
    };

    verifyUpdates = mkOption {
      type = types.bool;
      default = true;
      description = ''
        For an http(s) `updateSource`: whether systemd-sysupdate checks SHA256SUMS against its
        detached signature `SHA256SUMS.gpg` with the keys of
        `/etc/systemd/import-pubring.gpg` (sysupdate's `Verify=`, on by default). imgbuild
        does not sign SHA256SUMS: sign it yourself, or set this to `false` (`Verify=no`) for a
        source you trust by other means.
      '';
    };
  };

  config = mkIf on {
    # systemd's stage 1 with dm-verity: systemd-veritysetup-generator opens the pair whose
    # partition UUIDs are the halves of `usrhash=` as /dev/mapper/usr.
    boot.initrd.systemd.enable = true;
    boot.initrd.systemd.dmVerity.enable = true;
    boot.initrd.availableKernelModules = [
      "dm_mod"
      "dm_verity"
      "squashfs"
    ];

    # The store partition is the closure as nix/store/<path>: mounted at /usr, its store
    # bound to /nix/store (NixOS mounts both in the initrd, as paths needed for boot). The
    # ext4 root and the ESP are the raw-efi disk's (imgbuild.nix).
    fileSystems."/usr" = {
      device = "/dev/mapper/usr";
      fsType = "squashfs";
      options = [ "ro" ];
    };
    fileSystems."/nix/store" = {
      device = "/usr/nix/store";
      fsType = "none";
      options = [ "bind" ];
    };
    # /usr is read-only: no /usr/bin/env (as nixpkgs' appliance test does).
    system.activationScripts.usrbinenv = mkForce "";

    # What imgbuild's system check reads (AB-CONTRACT.md); the UKI's name is recorded for
    # every format (imgbuild.nix).
    boot.bootspec.extensions."org.imgbuild.v1".appliance = {
      inherit
        imageId
        imageVersion
        systemdInitrd
        dmVerity
        ;
    };

    systemd.sysupdate = mkIf (source != null) {
      enable = true;
      inherit transfers;
    };

    assertions = [
      {
        assertion = validId imageId;
        message = "imgbuild.format = \"appliance\" needs system.image.id (the image id in the UKI's, the partitions' and the update files' names): 1 or more letters, digits, `.` or `-` (no `_`), not ${builtins.toJSON imageId}.";
      }
      {
        assertion = validVersion imageVersion;
        message = "imgbuild.format = \"appliance\" needs system.image.version (the version systemd-sysupdate compares): 1 or more letters, digits, `.`, `~`, `^` or `-` (no `_`, and no `+`, which systemd-boot reads as a boot counter), not ${builtins.toJSON imageVersion}.";
      }
      {
        assertion = !named || ukiFile == wantedUki;
        message = "imgbuild.format = \"appliance\": the UKI is named ${builtins.toJSON ukiFile} (system.boot.loader.ukiFile), but the A/B updates need ${wantedUki}: leave boot.uki.name and boot.uki.version at their defaults (system.image.id and system.image.version) and boot.uki.tries at null.";
      }
      {
        assertion = !named || builtins.stringLength verityName <= 36;
        message = "imgbuild.format = \"appliance\": the hash partition's GPT name ${verityName} is longer than 36 characters: shorten system.image.id or system.image.version.";
      }
      {
        assertion = systemdInitrd && dmVerity;
        message = "imgbuild.format = \"appliance\" needs boot.initrd.systemd.enable and boot.initrd.systemd.dmVerity.enable (the store is opened through dm-verity in systemd's stage 1).";
      }
      {
        assertion = sourceOk;
        message = "imgbuild.appliance.updateSource must be an http:// or https:// URL or an absolute path, not ${builtins.toJSON source}.";
      }
    ];
  };
}
