# nixosModules.imgbuild: what a NixOS system needs to match the disk imgbuild writes for it,
# and to keep rebuilding itself from the same configuration afterwards.
#
# An image is a pure function of one toplevel, `nixosConfigurations.<host>.config.system.
# build.toplevel`; this module puts the image's facts into that same configuration (file
# systems by label, the bootloader, first-boot growth), so that the first `nixos-rebuild
# switch` on the booted machine switches to the very system it booted (no image-only
# settings, no `system.nixos.tags`). Labels and mount points are those of formats/*.toml.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.imgbuild;
  inherit (lib)
    mkDefault
    mkIf
    mkImageMediaOverride
    mkMerge
    mkOption
    types
    ;

  # Each format's systems, and the format whose disk (or medium) it holds (a qemu-efi image is
  # the raw-efi disk in a qcow2 file: the same configuration; iso-installer is the iso medium
  # with the installer profiles of nixpkgs' installation-cd-base.nix; kexec is the netboot kernel + initrd in a
  # tarball; the container tarballs have no disk: containers.nix configures them). Mirrors
  # lib.formats.
  x86 = [ "x86_64-linux" ];
  both = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  formatSystems = {
    raw-efi = x86;
    sd-aarch64 = [ "aarch64-linux" ];
    qemu-efi = x86;
    amazon = x86;
    azure = x86;
    gce = x86;
    hyperv = x86;
    vmware = x86;
    virtualbox = x86;
    proxmox = x86;
    openstack = x86;
    kubevirt = x86;
    oci = x86;
    vagrant-virtualbox = x86;
    raw = x86;
    qemu = x86;
    digitalocean = x86;
    hetzner = x86;
    cloudstack = x86;
    linode = x86;
    appliance = x86;
    iso = both;
    iso-installer = both;
    netboot = both;
    kexec = both;
    lxc = both;
    lxc-metadata = both;
    proxmox-lxc = both;
    incus = both;
  };
  formatBase = {
    raw-efi = "raw-efi";
    sd-aarch64 = "sd-aarch64";
    qemu-efi = "raw-efi";
    amazon = "raw-efi";
    azure = "raw-efi";
    gce = "raw-efi";
    hyperv = "raw-efi";
    vmware = "raw-efi";
    virtualbox = "raw-efi";
    proxmox = "raw-efi";
    openstack = "raw-efi";
    kubevirt = "raw-efi";
    oci = "raw-efi";
    vagrant-virtualbox = "raw-efi";
    raw = "raw";
    qemu = "qemu";
    digitalocean = "raw";
    hetzner = "raw";
    cloudstack = "raw";
    # An ext4 root without a partition table; GRUB for `nodev` (Linode's GRUB reads grub.cfg).
    linode = "linode";
    # The raw-efi disk's ESP and root, with a dm-verity protected store at /usr and A/B slots
    # (appliance.nix).
    appliance = "appliance";
    iso = "iso";
    iso-installer = "iso";
    netboot = "netboot";
    kexec = "netboot";
    # No disk: containers.nix configures them.
    lxc = "lxc";
    lxc-metadata = "lxc-metadata";
    proxmox-lxc = "proxmox-lxc";
    incus = "incus";
  };
  base = if cfg.format == null then null else formatBase.${cfg.format};
  # The live media: the system runs from a read-only store image under a tmpfs overlay.
  live = base == "iso" || base == "netboot";
  # The UEFI disks with an ESP at /boot, systemd-boot and an ext4 root labelled `nixos`.
  efiDisk = base == "raw-efi" || base == "appliance";
  hostSystem = pkgs.stdenv.hostPlatform.system;
  # `uname -m` of the system (nixpkgs' `hostPlatform.uname.processor` on Linux).
  processor = builtins.head (builtins.match "([^-]+)-.*" hostSystem);

  # The PC BIOS formats (GRUB on the disk's boot sector) and the disk each one becomes on its
  # platform, which `boot.loader.grub.devices` must name so that `nixos-rebuild` (GRUB's
  # installer) writes boot.img and core.img to it again: QEMU/Proxmox/libvirt and
  # DigitalOcean give a virtio-blk disk (`/dev/vda`, as nixpkgs' disk-image.nix and
  # digital-ocean-config.nix set), Hetzner Cloud a virtio-scsi one (`/dev/sda`), CloudStack's
  # KVM a virtio-blk one (cloudstack-config.nix).
  grubDevice = {
    raw = "/dev/vda";
    qemu = "/dev/vda";
    digitalocean = "/dev/vda";
    hetzner = "/dev/sda";
    cloudstack = "/dev/vda";
  };
  bios = cfg.format != null && grubDevice ? ${cfg.format};

  # Disk drivers for the initrd: NVMe, SATA, USB (xHCI, mass storage, UAS), SD/MMC, virtio,
  # and (BIOS formats) the PIIX IDE of QEMU's default PC machine.
  diskModules = [
    "nvme"
    "ahci"
    "sd_mod"
    "xhci_pci"
    "usb_storage"
    "uas"
    "usbhid"
    "sdhci_pci"
    "mmc_block"
    "virtio_pci"
    "virtio_blk"
    "virtio_scsi"
  ];
  serialConsole = [
    "console=ttyS0,115200n8"
    "console=tty0"
  ];

  # `config.txt` as nixpkgs' sd-image-aarch64.nix writes it (the same text imgbuild writes
  # when a firmware directory has none: crates/boot/src/rpi.rs; nix/tests/eval.nix compares).
  defaultConfigTxt = ''
    kernel=u-boot.bin

    # Boot in 64-bit mode.
    arm_64bit=1

    # U-Boot needs this to work, regardless of whether UART is actually used or not.
    # Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still
    # a requirement in the future.
    enable_uart=1

    # Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
    # when attempting to show low-voltage or overtemperature warnings.
    avoid_warnings=1

    [pi3]
    # Otherwise the serial output will be garbled.
    core_freq=250

    [pi4]
    enable_gic=1
    armstub=armstub8-gic.bin

    # Otherwise the resolution will be weird in most cases, compared to
    # what the pi3 firmware does by default.
    disable_overscan=1

    # Supported in newer board revisions
    arm_boost=1

    [cm4]
    # Enable host mode on the 2711 built-in XHCI USB controller.
    # This line should be removed if the legacy DWC2 controller is required
    # (e.g. for USB device mode) or if USB support is not required.
    otg_mode=1

    [cm5]
    dtoverlay=dwc2,dr_mode=host

    [pi5]
    # On some revisions of the RPi5, U-Boot interprets picks up
    # ghost inputs from the uart, interrupting the boot process.
    # https://bugzilla.opensuse.org/show_bug.cgi?id=1251192
    enable_uart=0
  '';

  # Before nixpkgs had one U-Boot for every Pi (ubootRaspberryPiAarch64, not in nixos-25.11),
  # its sd-image installed one per board and let config.txt pick: the Pi 3 build for [pi3] and
  # [pi02], the Pi 4 build for [pi4] (and [cm4]). This is that layout, with the current
  # settings of each section.
  splitConfigTxt = ''
    [pi3]
    kernel=u-boot-rpi3.bin
    # Otherwise the serial output will be garbled.
    core_freq=250

    [pi02]
    kernel=u-boot-rpi3.bin

    [pi4]
    kernel=u-boot-rpi4.bin
    enable_gic=1
    armstub=armstub8-gic.bin

    # Otherwise the resolution will be weird in most cases, compared to
    # what the pi3 firmware does by default.
    disable_overscan=1

    # Supported in newer board revisions
    arm_boost=1

    [cm4]
    kernel=u-boot-rpi4.bin
    # Enable host mode on the 2711 built-in XHCI USB controller.
    # This line should be removed if the legacy DWC2 controller is required
    # (e.g. for USB device mode) or if USB support is not required.
    otg_mode=1

    [all]
    # Boot in 64-bit mode.
    arm_64bit=1

    # U-Boot needs this to work, regardless of whether UART is actually used or not.
    # Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still
    # a requirement in the future.
    enable_uart=1

    # Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
    # when attempting to show low-voltage or overtemperature warnings.
    avoid_warnings=1
  '';

  registration = cfg.nixPathRegistrationFile;

  # The ESP mounted at /boot (raw-efi's systemd-boot, the hybrid qemu's GRUB), by its label.
  espFileSystem = {
    device = "/dev/disk/by-label/ESP";
    fsType = "vfat";
    options = [
      "fmask=0077"
      "dmask=0077"
    ];
  };

  # The GRUB record of boot.json (CONTRACT-24): what NixOS's GRUB installer (install-grub.pl
  # and grub-install) reads that changes the bytes it leaves, so that imgbuild writes the
  # boot sector, core.img and /boot/grub as this system's own installer would. `grub` is the
  # package whose lib/grub/i386-pc imgbuild installs (and puts it into the closure); `grubEfi`
  # the x86_64-efi one when efiSupport. Options a release lacks are left out.
  grubCfg = loader.grub;
  grubOpts = options.boot.loader.grub;
  # As nixpkgs' grub.nix picks the package it installs: cfg.package, with ZFS support on
  # request.
  grubPackage =
    if grubCfg.zfsSupport or false then
      grubCfg.package.override { zfsSupport = true; }
    else
      grubCfg.package;
  pathOrNull = p: if p == null then null else "${p}";
  grubRecord = {
    type = "grub";
    inherit (loader) timeout;
    inherit (grubCfg)
      devices
      efiSupport
      efiInstallAsRemovable
      fsIdentifier
      configurationLimit
      configurationName
      default
      copyKernels
      storePath
      extraConfig
      extraEntries
      extraEntriesBeforeNixOS
      extraPerEntryConfig
      backgroundColor
      gfxmodeBios
      gfxpayloadBios
      gfxmodeEfi
      gfxpayloadEfi
      extraPrepareConfig
      useOSProber
      ;
    # Who may edit or boot entries: names only (their password hashes stay out of boot.json);
    # imgbuild refuses what it cannot write, rather than leave GRUB unlocked.
    users = builtins.attrNames grubCfg.users;
    grub = "${grubPackage}";
    splashImage = pathOrNull grubCfg.splashImage;
    font = pathOrNull grubCfg.font;
    theme = pathOrNull grubCfg.theme;
    inherit (config.system.nixos) distroName;
  }
  // lib.optionalAttrs grubCfg.efiSupport {
    grubEfi = "${grubPackage.override { efiSupport = true; }}";
    inherit (loader.efi) efiSysMountPoint;
  }
  // lib.optionalAttrs (grubOpts ? timeoutStyle) { inherit (grubCfg) timeoutStyle; }
  // lib.optionalAttrs (grubOpts ? extraGrubInstallArgs) { inherit (grubCfg) extraGrubInstallArgs; }
  // lib.optionalAttrs (grubOpts ? splashMode) { inherit (grubCfg) splashMode; }
  // lib.optionalAttrs (grubOpts ? entryOptions) { inherit (grubCfg) entryOptions subEntryOptions; };

  # The boot loader settings imgbuild needs to write the boot files this system's own NixOS
  # release would write, recorded in the toplevel's boot.json (`"org.imgbuild.v1"`), so that
  # imgbuild reads them from the closure instead of assuming that release's defaults.
  # Options a release does not have are left out (`bootCounting`: NixOS 26.11 on), so the
  # module evaluates on every nixpkgs it supports.
  loader = config.boot.loader;
  sdBoot = loader.systemd-boot;
  # The ISOs boot UEFI through the closure's systemd-boot on their EFI image without installing
  # it (the medium is read-only): its settings are recorded all the same.
  bootloader =
    if sdBoot.enable || base == "iso" then
      {
        type = "systemd-boot";
        inherit (loader) timeout;
        inherit (sdBoot)
          editor
          consoleMode
          rebootForBitlocker
          installDeviceTree
          ;
        inherit (config.system.nixos) distroName;
      }
      // lib.optionalAttrs (options.boot.loader.systemd-boot ? bootCounting) {
        bootCounting = {
          inherit (sdBoot.bootCounting) enable tries;
        };
      }
    else if loader.generic-extlinux-compatible.enable then
      {
        type = "extlinux";
        inherit (loader) timeout;
        inherit (loader.generic-extlinux-compatible) useGenerationDeviceTree;
        deviceTreeName = config.hardware.deviceTree.name;
        inherit (config.system.nixos) distroName;
      }
    # (NixOS enables GRUB by default: asked last.)
    else if loader.grub.enable or false then
      grubRecord
    else
      null;
in
{
  # Platform settings of the formats that are the raw-efi disk for one cloud or hypervisor.
  imports = [
    ./platforms.nix
    ./containers.nix
    ./appliance.nix
  ];

  options.imgbuild = {
    format = mkOption {
      type = types.nullOr (
        types.enum [
          "raw-efi"
          "sd-aarch64"
          "qemu-efi"
          "amazon"
          "azure"
          "gce"
          "hyperv"
          "vmware"
          "virtualbox"
          "proxmox"
          "openstack"
          "kubevirt"
          "oci"
          "vagrant-virtualbox"
          "raw"
          "qemu"
          "digitalocean"
          "hetzner"
          "cloudstack"
          "linode"
          "appliance"
          "iso"
          "iso-installer"
          "netboot"
          "kexec"
          "lxc"
          "lxc-metadata"
          "proxmox-lxc"
          "incus"
        ]
      );
      default = null;
      example = "raw-efi";
      description = ''
        The imgbuild image format this system is installed from. Sets the file systems (by
        label), the bootloader and first-boot growth to match the disk imgbuild writes, so the
        booted machine can `nixos-rebuild` itself from the same configuration.
        `raw-efi`: GPT, ESP `/boot` (label `ESP`), ext4 `/` (label `nixos`), systemd-boot;
        `qemu-efi`, `amazon`, `azure`, `gce`, `hyperv`, `vmware`, `virtualbox` and `proxmox` are that disk in a
        container, and set the
        same (add the cloud's own guest configuration, e.g. nixpkgs'
        `virtualisation/google-compute-config.nix`, yourself); `openstack`, `kubevirt`,
        `oci` and `vagrant-virtualbox` are that disk too and also set their platform's guest
        settings (cloud-init or the metadata service, SSH, serial console; Vagrant's user),
        as nixpkgs' modules for those variants do (`platforms.nix`).
        `sd-aarch64`: MBR, FAT `/boot/firmware` (label `FIRMWARE`, noauto), ext4 `/` (label
        `NIXOS_SD`), U-Boot + extlinux, Raspberry Pi firmware.
        PC BIOS, GRUB (`boot.loader.grub.devices` = the disk the image becomes): `raw` (MBR,
        ext4 `/` labelled `nixos`, `/dev/vda`), `digitalocean` (that disk as `.qcow2.gz`,
        `/dev/vda`; add nixpkgs' `virtualisation/digital-ocean-config.nix` for the droplet's
        metadata), `hetzner` (that disk for Hetzner Cloud, `/dev/sda`), `cloudstack` (that
        disk as qcow2, `/dev/vda`, with cloudstack-config.nix's cloud-init settings), `qemu`
        (hybrid BIOS + UEFI, in a qcow2: GPT, BIOS boot partition with GRUB's core.img, FAT
        ESP `/boot` (label `ESP`) with GRUB's directory and EFI/BOOT/BOOTX64.EFI, ext4 `/`;
        `/dev/vda`; `efiSupport` and `efiInstallAsRemovable` on).
        `linode`: ext4 `/` labelled `nixos` with no partition table (`.img.gz`), GRUB with
        `device = "nodev"` (grub.cfg only: Linode's own GRUB reads it), and linode-config.nix's
        serial console, network and SSH settings.
        `appliance` (x86_64): the raw-efi disk's ESP and root, the store read-only at `/usr`
        through dm-verity (`/nix/store` bound to `/usr/nix/store`), systemd's stage 1, A/B
        slots updated by systemd-sysupdate from `imgbuild.appliance.updateSource`; needs
        `system.image.id` and `system.image.version` (`appliance.nix`).
        `iso` (live) and `iso-installer`, x86_64 and aarch64: what nixpkgs' iso-image.nix sets
        (root on tmpfs, the ISO at `/iso` found by its volume ID `root=LABEL=`, the store image
        `/iso/nix-store.squashfs` at `/nix/.ro-store` under a tmpfs overlay as `/nix/store`,
        the store registered at every boot), no boot loader installer (the medium is read-only),
        isolinux (syslinux) for BIOS on x86_64. `iso-installer` is meant with the profiles
        nixpkgs' installation-cd-base.nix imports (`profiles/all-hardware.nix`, `base.nix`,
        `installation-device.nix`), which `lib.mkNodes` and the `iso-installer` build-image
        variant import (a module cannot import them only for one format: import them
        yourself when you set this format by hand).
        `netboot` and `kexec`: as nixpkgs' netboot.nix, the store image in the initrd
        (`../nix-store.squashfs`), root on tmpfs, the same overlay.
        `lxc`, `lxc-metadata`, `proxmox-lxc`, `incus`: a container (x86_64 or aarch64):
        `boot.isContainer`, no boot loader or file systems, nixpkgs' settings for LXC or
        Proxmox (`containers.nix`).
      '';
    };

    iso = {
      edition = mkOption {
        type = types.str;
        default = "";
        example = "minimal";
        description = "The edition in the default volume ID (nixpkgs' `isoImage.edition`).";
      };

      volumeID = mkOption {
        type = types.str;
        default = "nixos${
          if cfg.iso.edition != "" then "-${cfg.iso.edition}" else ""
        }-${config.system.nixos.release}-${processor}";
        defaultText = lib.literalExpression ''"nixos''${optionalString (edition != "") "-''${edition}"}-''${config.system.nixos.release}-''${hostPlatform.uname.processor}"'';
        example = "NIXOS_ISO";
        description = ''
          The ISO's volume ID (at most 32 letters, digits, `_`, `-`, `.`), as nixpkgs'
          `isoImage.volumeID`: stage 1 finds the medium by it (`root=LABEL=<volumeID>` on the
          kernel command line). Recorded in boot.json, where imgbuild takes it from.
        '';
      };

      syslinux = mkOption {
        type = types.nullOr types.package;
        default = if hostSystem == "x86_64-linux" then pkgs.syslinux else null;
        defaultText = lib.literalExpression ''if x86_64 then pkgs.syslinux else null'';
        description = ''
          The syslinux whose isolinux boots the x86_64 ISO from BIOS (`share/syslinux/
          {isolinux.bin,ldlinux.c32,isohdpfx.bin}`). Recorded in boot.json, which puts it in
          the system's closure, where imgbuild reads it. aarch64 ISOs boot from UEFI only.
        '';
      };
    };

    growRoot = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Grow the root partition and file system to fill the disk on first boot. raw-efi (and
        the disks that hold it, and appliance, whose root is its last partition):
        `boot.growPartition` and `autoResize` on `/`. sd-aarch64: a first-boot unit, as
        nixpkgs' sd-image does, run while the image's registration file exists.
      '';
    };

    registerNixPaths = mkOption {
      type = types.bool;
      default = true;
      description = ''
        On first boot, when the image ships a registration file (imgbuild
        `--nix-path-registration`, the sd-aarch64 default), load it into the Nix database,
        make sure the system profile points to the running system, and delete the file.
        imgbuild already writes the Nix database when it builds the image, so this is a
        safety net: `nix-store --load-db` of the same paths changes nothing.
      '';
    };

    nixPathRegistrationFile = mkOption {
      type = types.str;
      default = "/nix-path-registration";
      description = "Where the image's first-boot registration file is (imgbuild writes it at /).";
    };

    raspberryPi = {
      uboot = mkOption {
        type = types.nullOr types.package;
        default = pkgs.ubootRaspberryPiAarch64 or null;
        defaultText = lib.literalExpression "pkgs.ubootRaspberryPiAarch64 or null";
        description = ''
          One U-Boot for every Pi (nixpkgs' merged aarch64 Pi build: Pi 3, 4 and 5), installed
          as `u-boot.bin`. `null`, the default where nixpkgs has no merged build (nixos-25.11):
          one U-Boot per board instead, `ubootPi3` as `u-boot-rpi3.bin` and `ubootPi4` as
          `u-boot-rpi4.bin`, picked by config.txt's `[pi3]`/`[pi02]` and `[pi4]`/`[cm4]`
          sections, so that one image boots a Pi 3 and a Pi 4 (not a Pi 5).
        '';
      };

      ubootPi3 = mkOption {
        type = types.package;
        default = pkgs.ubootRaspberryPi3_64bit;
        defaultText = lib.literalExpression "pkgs.ubootRaspberryPi3_64bit";
        description = "U-Boot for the Pi 3 and Zero 2 W, when `uboot` is null (`u-boot-rpi3.bin`).";
      };

      ubootPi4 = mkOption {
        type = types.package;
        default = pkgs.ubootRaspberryPi4_64bit;
        defaultText = lib.literalExpression "pkgs.ubootRaspberryPi4_64bit";
        description = "U-Boot for the Pi 4, 400 and CM4, when `uboot` is null (`u-boot-rpi4.bin`).";
      };

      configTxt = mkOption {
        type = types.lines;
        default = if cfg.raspberryPi.uboot != null then defaultConfigTxt else splitConfigTxt;
        defaultText = lib.literalMD "nixpkgs' sd-image-aarch64 `config.txt` for the U-Boot layout `uboot` selects";
        description = "`config.txt` on the FIRMWARE partition.";
      };

      firmware = mkOption {
        type = types.package;
        default = pkgs.callPackage ../rpi-firmware.nix {
          inherit (cfg.raspberryPi) configTxt;
          ubootFiles =
            if cfg.raspberryPi.uboot != null then
              { "u-boot.bin" = cfg.raspberryPi.uboot; }
            else
              {
                "u-boot-rpi3.bin" = cfg.raspberryPi.ubootPi3;
                "u-boot-rpi4.bin" = cfg.raspberryPi.ubootPi4;
              };
        };
        defaultText = lib.literalExpression "raspberrypifw boot files, U-Boot, armstub8-gic.bin, dtbs and configTxt";
        description = ''
          The directory imgbuild copies onto the FIRMWARE partition. Published in the
          toplevel's `boot.json` as `"org.imgbuild.v1": { "firmware": <path> }`, which is
          where imgbuild looks for it. Like nixpkgs' sd images, rebuilds never rewrite the
          FIRMWARE partition.
        '';
      };
    };
  };

  config = mkMerge [
    (mkIf (cfg.format != null) {
      boot.bootspec.extensions."org.imgbuild.v1" = {
        inherit (config.system.nixos) release;
      }
      // lib.optionalAttrs (bootloader != null) { inherit bootloader; }
      # The UKI's file name in EFI/Linux/ for `[bootloader] uki = true` formats
      # (nixos/modules/system/boot/uki.nix: <boot.uki.name>[_<version>][+<tries>].efi).
      // lib.optionalAttrs (config.system ? boot && config.system.boot.loader ? ukiFile) {
        inherit (config.system.boot.loader) ukiFile;
      };

      assertions = [
        {
          assertion = builtins.elem hostSystem formatSystems.${cfg.format};
          message = "imgbuild.format = \"${cfg.format}\" makes ${lib.concatStringsSep " or " formatSystems.${cfg.format}} images, but this system is ${hostSystem}.";
        }
      ];
    })

    # raw-efi and the disks in a container (qemu-efi, amazon, ...), and the appliance's ESP and
    # root (its store: appliance.nix).
    (mkIf efiDisk {
      fileSystems."/" = {
        device = "/dev/disk/by-label/nixos";
        fsType = "ext4";
        autoResize = cfg.growRoot;
      };
      fileSystems."/boot" = espFileSystem;
      boot.growPartition = cfg.growRoot;

      boot.loader.grub.enable = false;
      boot.loader.systemd-boot.enable = true;
      # Each generation adds a kernel and an initrd to the 512 MiB ESP.
      boot.loader.systemd-boot.configurationLimit = mkDefault 10;
      boot.loader.efi.efiSysMountPoint = "/boot";
      # The image is written on one machine and booted on another: its firmware has no entry
      # for it, and it boots through the fallback \EFI\BOOT\BOOTX64.EFI.
      boot.loader.efi.canTouchEfiVariables = false;
      boot.loader.timeout = mkDefault 5;

      # A headless VM or cloud instance shows its console on the first serial port (as
      # nixos-generators' raw formats do); tty0 last, so it is /dev/console on a screen.
      boot.kernelParams = serialConsole;

      # Real disks, not only a VM's: NVMe, SATA, USB (xHCI, mass storage, UAS), SD/MMC, virtio.
      boot.initrd.availableKernelModules = diskModules;
    })

    # PC BIOS: GRUB on the disk's boot sector (MBR gap or BIOS boot partition), /boot/grub on
    # the ext4 root, as nixpkgs' disk-image.nix with `image.efiSupport = false` (the `raw`
    # variant) sets it: root by label `nixos`, GRUB on the platform's disk, BIOS only (no ESP
    # on these disks: efiSupport stays off; `qemu`, the hybrid, turns it on below).
    (mkIf bios {
      fileSystems."/" = {
        device = "/dev/disk/by-label/nixos";
        fsType = "ext4";
        autoResize = cfg.growRoot;
      };
      boot.growPartition = cfg.growRoot;

      boot.loader.systemd-boot.enable = false;
      boot.loader.grub.enable = true;
      # `device`, not `devices`: NixOS turns `device` into `devices` at normal priority (before
      # nixpkgs made that an mkIf, as `[]` when unset, which would beat an mkDefault of
      # `devices`); a user's own `boot.loader.grub.device` replaces this default.
      boot.loader.grub.device = mkDefault grubDevice.${cfg.format};
      boot.loader.timeout = mkDefault 5;

      boot.kernelParams = serialConsole;
      boot.initrd.availableKernelModules = diskModules ++ [ "ata_piix" ];
    })

    # The hybrid `qemu` disk (nixpkgs' make-disk-image partitionTableType = "hybrid"): GRUB
    # boots UEFI too, from the removable path EFI/BOOT/BOOTX64.EFI on the ESP, which is
    # /boot (GRUB's directory, as make-disk-image mounts it), so that `nixos-rebuild` keeps
    # both the BIOS and the UEFI GRUB up to date.
    (mkIf (cfg.format == "qemu") {
      fileSystems."/boot" = espFileSystem;
      boot.loader.grub.efiSupport = mkDefault true;
      boot.loader.grub.efiInstallAsRemovable = mkDefault true;
      boot.loader.efi.efiSysMountPoint = mkDefault "/boot";
      # Written on one machine, booted on another: no firmware entry to register.
      boot.loader.efi.canTouchEfiVariables = false;
    })


    # Linode (nixpkgs' linode-image.nix + linode-config.nix): the disk is the ext4 file
    # system itself, booted by Linode's "GRUB 2" mode, whose GRUB reads /boot/grub/grub.cfg:
    # install-grub.pl writes it for `nodev` and runs no grub-install (forceInstall, as
    # nixpkgs sets it, would only matter for a real device). The root grows to the disk
    # Linode gives (resize2fs at boot; there is no partition to grow). The platform's network
    # and SSH settings are in platforms.nix.
    (mkIf (base == "linode") {
      fileSystems."/" = {
        device = "/dev/disk/by-label/nixos";
        fsType = "ext4";
        autoResize = cfg.growRoot;
      };

      boot.loader.systemd-boot.enable = false;
      boot.loader.grub.enable = true;
      boot.loader.grub.device = mkDefault "nodev";
      boot.loader.grub.forceInstall = mkDefault true;
      # Time to attach Lish (Linode's console) before the default entry boots.
      boot.loader.timeout = mkDefault 10;
      # Lish is the first serial port at 19200 baud, for GRUB and the kernel.
      boot.loader.grub.extraConfig = ''
        serial --speed=19200 --unit=0 --word=8 --parity=no --stop=1;
        terminal_input serial;
        terminal_output serial
      '';
      boot.kernelParams = [ "console=ttyS0,19200n8" ];
      # linode-config.nix's virtio_pci, virtio_scsi, ahci and sd_mod are among them.
      boot.initrd.availableKernelModules = diskModules;
      boot.kernelModules = [ "virtio_net" ];
    })

    (mkIf (base == "sd-aarch64") {
      fileSystems."/" = {
        device = "/dev/disk/by-label/NIXOS_SD";
        fsType = "ext4";
      };
      fileSystems."/boot/firmware" = {
        device = "/dev/disk/by-label/FIRMWARE";
        fsType = "vfat";
        options = [
          "nofail"
          "noauto"
        ];
      };

      boot.loader.grub.enable = false;
      boot.loader.generic-extlinux-compatible.enable = true;

      # As nixpkgs' sd-image-aarch64.nix (which also enables all hardware in the initrd).
      boot.consoleLogLevel = mkDefault 7;
      boot.kernelParams = [
        "console=ttyS0,115200n8"
        "console=ttyAMA0,115200n8"
        "console=tty0"
      ];
      hardware.enableAllHardware = mkDefault true;
      # SD/MMC, USB (the Pi 4's VL805 xHCI sits on PCIe and needs its reset controller),
      # NVMe (CM4/Pi 5).
      boot.initrd.availableKernelModules = [
        "mmc_block"
        "xhci_pci"
        "usb_storage"
        "uas"
        "usbhid"
        "nvme"
        "pcie_brcmstb"
        "reset_raspberrypi"
      ];

      boot.bootspec.extensions."org.imgbuild.v1".firmware = "${cfg.raspberryPi.firmware}";

      # nixpkgs' sd-image expand-root-partition, under imgbuild's own name (no clash when
      # sd-image.nix is imported too).
      systemd.services.imgbuild-expand-root = mkIf cfg.growRoot {
        description = "Grow the root partition and file system to fill the SD card";
        wantedBy = [ "sysinit.target" ];
        after = [ "local-fs.target" ];
        before = [
          "sysinit.target"
          "shutdown.target"
          "imgbuild-register-nix-paths.service"
        ];
        conflicts = [ "shutdown.target" ];
        restartIfChanged = false;
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathExists = registration;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        path = [
          pkgs.util-linux
          pkgs.gawk
          pkgs.parted
          pkgs.e2fsprogs
        ];
        script = ''
          rootPart=$(findmnt -n -o SOURCE /)
          bootDevice=$(lsblk -npo PKNAME "$rootPart")
          partNum=$(lsblk -npo MAJ:MIN "$rootPart" | awk -F: '{print $2}')
          echo ",+," | sfdisk -N"$partNum" --no-reread "$bootDevice"
          partprobe
          resize2fs "$rootPart"
        '';
      };
    })

    # The live media (iso, netboot): the file systems of nixpkgs' iso-image.nix
    # (`lib.isoFileSystems`) and netboot.nix, with their priority (mkImageMediaOverride: over a
    # host configuration's own file systems, under a mkForce).
    (mkIf live {
      fileSystems = {
        "/" = mkImageMediaOverride {
          fsType = "tmpfs";
          options = [ "mode=0755" ];
        };
        # /dev/root: the device stage 1 found from `root=` on the kernel command line.
        "/iso" = mkIf (base == "iso") (mkImageMediaOverride {
          device = "/dev/root";
          neededForBoot = true;
          noCheck = true;
        });
        "/nix/.ro-store" = mkImageMediaOverride {
          fsType = "squashfs";
          # netboot: the file the initrd's extra cpio archive unpacks at its root (stage 1
          # mounts file systems under /mnt-root).
          device = if base == "iso" then "/iso/nix-store.squashfs" else "../nix-store.squashfs";
          options = [ "loop" ];
          neededForBoot = true;
        };
        "/nix/.rw-store" = mkImageMediaOverride {
          fsType = "tmpfs";
          options = [ "mode=0755" ];
          neededForBoot = true;
        };
        "/nix/store" = mkImageMediaOverride {
          fsType = "overlay";
          device = "overlay";
          options = [
            "lowerdir=/nix/.ro-store"
            "upperdir=/nix/.rw-store/store"
            "workdir=/nix/.rw-store/work"
          ];
          depends = [
            "/nix/.ro-store"
            "/nix/.rw-store/store"
            "/nix/.rw-store/work"
          ];
          neededForBoot = true;
        };
      };

      boot.initrd.availableKernelModules = [
        "squashfs"
        "overlay"
      ]
      ++ lib.optionals (base == "iso") [
        "iso9660"
        "uas"
      ];
      boot.initrd.kernelModules = [
        "loop"
        "overlay"
      ];

      # Nothing installs a boot loader: the medium is read-only, imgbuild writes its boot files.
      boot.loader.grub.enable = mkImageMediaOverride false;
      boot.loader.systemd-boot.enable = mkImageMediaOverride false;
      boot.loader.timeout = mkDefault 10;

      # After booting, register the store image's paths in the (tmpfs) Nix database, and
      # give nixos-rebuild its /etc/NIXOS and system profile, as nixpkgs' live media do.
      boot.postBootCommands = mkIf cfg.registerNixPaths ''
        ${config.nix.package.out}/bin/nix-store --load-db < /nix/store/nix-path-registration
        touch /etc/NIXOS
        ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
      '';

      boot.bootspec.extensions."org.imgbuild.v1" =
        if base == "iso" then
          {
            iso = {
              inherit (cfg.iso) volumeID;
            }
            // lib.optionalAttrs (cfg.iso.syslinux != null) { syslinux = "${cfg.iso.syslinux}"; };
          }
        else
          { netboot = { }; };
    })

    (mkIf (base == "iso") {
      # Stage 1 mounts the medium by its volume ID; `root=LABEL=` (not by-label) so that
      # CD-to-USB tools can rewrite it, as nixpkgs says.
      boot.kernelParams = [
        "root=LABEL=${cfg.iso.volumeID}"
        "boot.shell_on_fail"
      ];
      assertions = [
        {
          assertion =
            builtins.stringLength cfg.iso.volumeID <= 32
            && builtins.match "[A-Za-z0-9_.-]+" cfg.iso.volumeID != null;
          message = "imgbuild.iso.volumeID `${cfg.iso.volumeID}` must be 1 to 32 letters, digits, `_`, `-` or `.` (an ISO 9660 volume ID, also the label stage 1 looks for).";
        }
        {
          # nixpkgs' iso-image.nix mounts the medium differently under systemd's stage 1 (by
          # label, under /sysroot, no root=); imgbuild's ISO boots the scripted stage 1.
          assertion = !(config.boot.initrd.systemd.enable or false);
          message = "imgbuild.format = \"${cfg.format}\" does not support boot.initrd.systemd.enable yet: the ISO is found by root=LABEL= in the scripted stage 1.";
        }
        {
          assertion = hostSystem != "x86_64-linux" || cfg.iso.syslinux != null;
          message = "imgbuild.format = \"${cfg.format}\" on x86_64-linux boots BIOS through isolinux: imgbuild.iso.syslinux must be a syslinux package, not null.";
        }
      ];
    })

    (mkIf (cfg.format != null && !live && cfg.registerNixPaths) {
      systemd.services.imgbuild-register-nix-paths = {
        description = "Register the image's Nix store paths (first boot)";
        wantedBy = [ "sysinit.target" ];
        after = [ "local-fs.target" ];
        before = [
          "sysinit.target"
          "shutdown.target"
          "nix-daemon.socket"
          "nix-daemon.service"
        ];
        conflicts = [ "shutdown.target" ];
        restartIfChanged = false;
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathExists = registration;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        path = [
          pkgs.coreutils
          config.nix.package.out
        ];
        script = ''
          # imgbuild wrote the Nix database at build time; loading the same registration
          # again only re-registers the same paths.
          nix-store --load-db < ${registration}
          touch /etc/NIXOS
          # imgbuild ships profiles/system -> system-1-link -> this toplevel. Only set the
          # profile when it points elsewhere: a second generation of the same system would
          # be a spurious "generation 2" in the boot menu.
          if [ "$(readlink -f /nix/var/nix/profiles/system || true)" != "$(readlink -f /run/current-system)" ]; then
            nix-env -p /nix/var/nix/profiles/system --set /run/current-system
          fi
          rm -f ${registration}
        '';
      };
    })
  ];
}
