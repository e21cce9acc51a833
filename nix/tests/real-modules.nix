# The flake's NixOS modules and `lib.mkNodes`, evaluated with the REAL nixpkgs module system
# (the vendored `nix/tests/nixpkgs-lib`: `lib.evalModules`, `mkIf`, `mkDefault`, `mkMerge`,
# option types and their merging), where `eval.nix` uses a stub that only flattens
# definitions. The NixOS options the modules set are declared below with the types NixOS
# gives them (nixos/modules/tasks/filesystems.nix, system/boot/*, misc/assertions.nix,
# tasks/auto-upgrade.nix, ...); a definition of an undeclared option, a value of the wrong
# type, or a priority that no longer overrides is an evaluation error or a failed test here.
# Packages still come from the stubs (no nixpkgs here).
#
# nix-instantiate --eval --strict --json -E 'import ./nix/tests/real-modules.nix { }'
# prints { passed; failed; failures; } like eval.nix; nix/tests/run.sh runs it.
{
  sabotage ? false,
}:
let
  lib = import ./nixpkgs-lib/lib;
  inherit (lib) mkOption types;
  stubs = import ./stubs.nix { };
  flakeLib = import ../lib.nix { nixpkgs = stubs.nixpkgs; };

  opt = type: default: mkOption { inherit type default; };
  # nixpkgs' grub2: a package whose `override { efiSupport = true; }` (grub2_efi) and
  # `override { zfsSupport = true; }` are other store paths.
  mkGrub =
    args:
    {
      outPath = stubs.fakePath "grub-2.12${lib.concatMapStrings (n: "-${n}") (builtins.attrNames args)}";
      override = more: mkGrub (args // more);
    };
  grubPackage = mkGrub { };
  freeform = types.submodule { freeformType = types.attrsOf types.anything; };

  # The NixOS options imgbuild's modules and mkNodes' node module set, as nixpkgs declares
  # them in `release`: `system.autoUpgrade.upgrade` came with 25.11,
  # `boot.loader.systemd-boot.bootCounting` with 26.11.
  nixosOptionsOf =
    {
      release ? "26.11",
    }:
    { config, ... }:
    let
      since = lib.versionAtLeast release;
    in
    {
      options = {
        assertions = opt (types.listOf types.unspecified) [ ];
        fileSystems = opt (types.attrsOf (
          types.submodule {
            options = {
              device = opt (types.nullOr types.str) null;
              fsType = opt types.str "auto";
              options = opt (types.nonEmptyListOf types.str) [ "defaults" ];
              autoResize = opt types.bool false;
              neededForBoot = opt types.bool false;
              noCheck = opt types.bool false;
              depends = opt (types.listOf types.str) [ ];
            };
          }
        )) { };
        boot = {
          kernelParams = opt (types.listOf types.str) [ ];
          kernelModules = opt (types.listOf types.str) [ ];
          consoleLogLevel = opt types.int 4;
          growPartition = opt types.bool false;
          initrd.availableKernelModules = opt (types.listOf types.str) [ ];
          initrd.kernelModules = opt (types.listOf types.str) [ ];
          initrd.systemd.enable = opt types.bool false;
          # nixos/modules/system/boot/systemd/dm-verity.nix
          initrd.systemd.dmVerity.enable = opt types.bool false;
          # nixos/modules/system/boot/uki.nix (defaults below, as uki.nix sets them)
          uki = {
            name = mkOption { type = types.str; };
            version = opt (types.nullOr types.str) config.system.image.version;
            tries = opt (types.nullOr types.ints.unsigned) null;
          };
          postBootCommands = opt types.lines "";
          bootspec.extensions = opt (types.attrsOf types.anything) { };
          loader = {
            timeout = opt (types.nullOr types.int) 5;
            # nixos/modules/system/boot/loader/grub/grub.nix (the options imgbuild sets or
            # records; types and defaults as declared there).
            grub = {
              enable = opt types.bool true;
              device = opt types.str "";
              devices = opt (types.listOf types.str) [ ];
              package = opt types.anything grubPackage;
              zfsSupport = opt types.bool false;
              efiSupport = opt types.bool false;
              efiInstallAsRemovable = opt types.bool false;
              fsIdentifier = opt (types.enum [
                "uuid"
                "label"
                "provided"
              ]) "uuid";
              configurationLimit = opt types.int 100;
              configurationName = opt types.str "";
              default = opt (types.either types.int types.str) 0;
              copyKernels = opt types.bool false;
              forceInstall = opt types.bool false;
              storePath = opt types.str "/nix/store";
              extraConfig = opt types.lines "";
              extraEntries = opt types.lines "";
              extraEntriesBeforeNixOS = opt types.bool false;
              extraPerEntryConfig = opt types.lines "";
              backgroundColor = opt (types.nullOr types.str) null;
              gfxmodeBios = opt types.str "1024x768";
              gfxpayloadBios = opt types.str "text";
              gfxmodeEfi = opt types.str "auto";
              gfxpayloadEfi = opt types.str "keep";
              extraPrepareConfig = opt types.lines "";
              extraGrubInstallArgs = opt (types.listOf types.str) [ ];
              users = opt (types.attrsOf (types.attrsOf types.str)) { };
              useOSProber = opt types.bool false;
              splashImage = opt (types.nullOr (types.either types.path types.str)) null;
              splashMode = opt (types.enum [
                "normal"
                "stretch"
              ]) "stretch";
              font = opt (types.nullOr types.str) "${grubPackage}/share/grub/unicode.pf2";
              theme = opt (types.nullOr types.str) null;
              timeoutStyle = opt (types.enum [
                "menu"
                "countdown"
                "hidden"
              ]) "menu";
              entryOptions = opt (types.nullOr types.str) "--class nixos --unrestricted";
              subEntryOptions = opt (types.nullOr types.str) "--class nixos";
            };
            systemd-boot = {
              enable = opt types.bool false;
              configurationLimit = opt (types.nullOr types.int) null;
              editor = opt types.bool true;
              consoleMode = opt (types.enum [
                "0"
                "1"
                "2"
                "5"
                "auto"
                "max"
                "keep"
              ]) "keep";
              rebootForBitlocker = opt types.bool false;
              installDeviceTree = mkOption {
                type = types.bool;
                default = config.hardware.deviceTree.enable && config.hardware.deviceTree.name != null;
              };
            }
            // lib.optionalAttrs (since "26.11") {
              bootCounting = {
                enable = opt types.bool false;
                tries = opt types.int 3;
              };
            };
            efi.efiSysMountPoint = opt types.str "/boot";
            efi.canTouchEfiVariables = opt types.bool false;
            generic-extlinux-compatible = {
              enable = opt types.bool false;
              useGenerationDeviceTree = opt types.bool true;
            };
          };
        };
        hardware.enableAllHardware = opt types.bool false;
        hardware.deviceTree = {
          enable = opt types.bool false;
          name = opt (types.nullOr types.str) null;
        };
        systemd.services = opt (types.attrsOf freeform) { };
        # nixos/modules/system/boot/systemd/sysupdate.nix: `transfers` in pkgs.formats.ini's
        # type (sections of atoms or lists of atoms).
        systemd.sysupdate = {
          enable = opt types.bool false;
          transfers =
            let
              atom = types.oneOf [
                types.bool
                types.int
                types.str
              ];
            in
            opt (types.attrsOf (types.attrsOf (types.attrsOf (types.either atom (types.listOf atom))))) { };
        };
        networking.hostName = opt types.str "nixos";
        # What platforms.nix sets for the cloud and hypervisor formats.
        networking.timeServers = opt (types.listOf types.str) [ "0.nixos.pool.ntp.org" ];
        networking.useNetworkd = opt types.bool false;
        # What platforms.nix sets for linode (networking.useDHCP is declared below).
        networking.usePredictableInterfaceNames = opt types.bool true;
        networking.interfaces = opt (types.attrsOf freeform) { };
        swapDevices = opt (types.listOf freeform) [ ];
        environment.etc = opt (types.attrsOf freeform) { };
        services.cloud-init.enable = opt types.bool false;
        services.qemuGuest.enable = opt types.bool false;
        services.openssh = opt freeform { };
        virtualisation.virtualbox.guest.enable = opt types.bool false;
        # What containers.nix sets for the container formats.
        boot.isContainer = opt types.bool false;
        boot.loader.initScript.enable = opt types.bool false;
        system.activationScripts = opt (types.attrsOf types.anything) { };
        system.systemBuilderCommands = opt types.lines "";
        systemd.packages = opt (types.listOf types.anything) [ ];
        systemd.mounts = opt (types.listOf types.anything) [ ];
        console.enable = opt types.bool true;
        networking.useDHCP = opt types.bool true;
        networking.useHostResolvConf = opt types.bool true;
        environment.systemPackages = opt (types.listOf types.anything) [ ];
        users.users = opt (types.attrsOf freeform) { };
        security.sudo.wheelNeedsPassword = opt types.bool true;
        # As NixOS declares it: a system string or attrs, elaborated to a platform.
        nixpkgs.hostPlatform = mkOption {
          type = types.either types.str types.attrs;
          default = "x86_64-linux";
          apply = lib.systems.elaborate;
        };
        nixpkgs.buildPlatform = mkOption {
          type = types.either types.str types.attrs;
          default = config.nixpkgs.hostPlatform;
          apply = lib.systems.elaborate;
        };
        nix = {
          package = opt types.anything { out = stubs.fakePath "nix-2.31"; };
          settings = opt (types.submodule {
            freeformType = types.attrsOf types.anything;
            options.experimental-features = opt (types.listOf types.str) [ ];
          }) { };
          extraOptions = opt types.lines "";
        };
        system.autoUpgrade = {
          enable = opt types.bool false;
          flake = opt (types.nullOr types.str) null;
          dates = opt types.str "04:40";
          randomizedDelaySec = opt types.str "0";
          persistent = opt types.bool true;
          operation = opt (types.enum [ "switch" "boot" ]) "switch";
          allowReboot = opt types.bool false;
          rebootWindow = opt (types.nullOr (
            types.submodule {
              options.lower = opt types.str "";
              options.upper = opt types.str "";
            }
          )) null;
          flags = opt (types.listOf types.str) [ ];
        }
        // lib.optionalAttrs (since "25.11") { upgrade = opt types.bool true; };
        # nixos/modules/misc/version.nix: IMAGE_ID and IMAGE_VERSION of os-release.
        system.image = {
          id = opt (types.nullOr types.str) null;
          version = opt (types.nullOr types.str) null;
        };
        system.boot.loader.ukiFile = mkOption {
          type = types.str;
          internal = true;
        };
        system.nixos = {
          release = opt types.str release;
          distroName = opt types.str "NixOS";
          label = opt types.str "${release}.20261201.abcdef0";
        };
        # As NixOS's top-level.nix: a submodule with free-form build products, so other modules
        # (nixpkgs' images.nix) can declare options in it.
        system.build = mkOption {
          type = types.submoduleWith {
            modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
          };
          default = { };
        };
      };
      # As grub.nix: `device`, when set, is the one entry of `devices` at normal priority
      # (and `[]` when unset, as before nixpkgs made it an mkIf).
      config.boot.loader.grub.devices = lib.mkIf config.boot.loader.grub.enable (
        lib.optional (config.boot.loader.grub.device != "") config.boot.loader.grub.device
      );
      # uki.nix: the UKI is named after the image (or `nixos`), `_<version>` and `+<tries>`
      # when set.
      config.boot.uki.name = lib.mkOptionDefault (
        if config.system.image.id != null then config.system.image.id else "nixos"
      );
      config.system.boot.loader.ukiFile =
        let
          u = config.boot.uki;
        in
        u.name
        + lib.optionalString (u.version != null) "_${u.version}"
        + lib.optionalString (u.tries != null) "+${toString u.tries}"
        + ".efi";
      # A stand-in toplevel whose hash is a function of what the modules set that reaches the
      # disk and the boot loader, so equal toplevels mean equal systems.
      config.system.build.toplevel =
        stubs.fakePathFor
          (builtins.toJSON {
            inherit (config) fileSystems;
            inherit (config.boot) loader kernelParams;
            bootspec = config.boot.bootspec.extensions;
            inherit (config.system) systemBuilderCommands;
          })
          "nixos-system-${config.networking.hostName}-${config.system.nixos.label}";
    };

  # The configuration of `modules` over the NixOS options of `release`, for `system`.
  evalFor =
    {
      system ? "x86_64-linux",
      release ? "26.11",
    }:
    modules:
    (lib.evalModules {
      # nixosModules.images imports `modulesPath + "/image/file-options.nix"`.
      specialArgs.modulesPath = ./data/nixos-modules;
      modules = [
        (nixosOptionsOf { inherit release; })
        { _module.args.pkgs = stubs.pkgsFor system; }
      ]
      ++ modules;
    }).config;
  evalWith = system: evalFor { inherit system; };

  imgbuild = ../modules/imgbuild.nix;
  gitops = ../modules/gitops.nix;
  biosFormats = [
    "raw"
    "qemu"
    "digitalocean"
    "hetzner"
    "cloudstack"
    "linode"
  ];
  # A format for several systems (the container tarballs) is evaluated for the first.
  systemOf = f: builtins.head (flakeLib.systemsOf flakeLib.formats.${f});
  cfgFor = f: extra: evalWith (systemOf f) ([ imgbuild { imgbuild.format = f; } ] ++ extra);
  fails = v: !(builtins.tryEval (builtins.deepSeq v v)).success;
  allTrue = builtins.all (a: a.assertion);

  applianceImage.system.image = {
    id = "kiosk";
    version = "1.2";
  };

  x86 = evalWith "x86_64-linux" [
    imgbuild
    { imgbuild.format = "raw-efi"; }
  ];
  pi = evalWith "aarch64-linux" [
    imgbuild
    { imgbuild.format = "sd-aarch64"; }
  ];

  nodes = flakeLib.mkNodes {
    nodes = [
      {
        name = "web";
        system = "x86_64-linux";
        format = "qemu-efi";
        modules = [ { boot.loader.timeout = 1; } ];
      }
      {
        name = "pi";
        system = "aarch64-linux";
        format = "sd-aarch64";
      }
    ];
    # nixosSystem is the real module system over the declared options.
    nixpkgs = stubs.nixpkgs // {
      lib = stubs.nixpkgs.lib // {
        nixosSystem =
          args:
          {
            config = evalWith args.specialArgs.imgbuildNode.system args.modules;
          };
      };
    };
  };

  # --- `nixos-rebuild build-image`: nixosModules.images over nixpkgs' images.nix ---------
  #
  # Test stand-in for nixpkgs' nixos/modules/image/images.nix, written for these tests from
  # what that module does (nixpkgs' file is not copied): its two options with nixpkgs' types
  # (`system.build.images`: lazyAttrsOf raw, read-only; `image.modules`: attrsOf
  # deferredModule), nixpkgs' own module for every variant name (here a marker for "built by
  # nixpkgs' builder, in a VM"), defined only while the system has no `system.build.image`,
  # and `system.build.images.<variant>` = that variant configuration's (`extendModules` with
  # the variant module) `system.build.image`, with `passthru.config` and
  # `passthru.filePath = config.image.filePath` added. `nixos-rebuild build-image` lists
  # `attrNames system.build.images` and reads `system.build.images.<variant>.passthru.filePath`.
  nixpkgsVariants = [
    "amazon"
    "azure"
    "digital-ocean"
    "google-compute"
    "hyperv"
    "iso"
    "iso-installer"
    "kexec"
    "kubevirt"
    "linode"
    "lxc"
    "lxc-metadata"
    "oci"
    "openstack"
    "proxmox"
    "proxmox-lxc"
    "qemu"
    "qemu-efi"
    "raw"
    "raw-efi"
    "sd-card"
    "vagrant-virtualbox"
    "virtualbox"
    "vmware"
  ];
  nixpkgsImages =
    { config, extendModules, ... }:
    let
      nixpkgsModule =
        name:
        { modulesPath, ... }:
        {
          imports = [ (modulesPath + "/image/file-options.nix") ];
          image.extension = "nixpkgs-${name}";
          system.build.image = {
            type = "derivation";
            name = "nixpkgs-vm-${name}";
            outPath = stubs.fakePath "nixpkgs-vm-${name}";
          };
        };
      noImage = !(config.system.build ? image);
    in
    {
      options = {
        system.build.images = mkOption {
          type = types.lazyAttrsOf types.raw;
          readOnly = true;
        };
        image.modules = mkOption { type = types.attrsOf types.deferredModule; };
      };
      config.image.modules = lib.mkIf noImage (lib.genAttrs nixpkgsVariants nixpkgsModule);
      config.system.build.images = lib.mkIf noImage (
        lib.mapAttrs (
          _: module:
          let
            c = (extendModules { modules = [ module ]; }).config;
          in
          lib.recursiveUpdate c.system.build.image {
            passthru = {
              config = c;
              inherit (c.image) filePath;
            };
          }
        ) config.image.modules
      );
    };

  images = ../modules/images.nix;
  ph = builtins.placeholder "out";
  label = "26.11.20261201.abcdef0";

  # A system with nixosModules.images and nixpkgs' images.nix, as `nixos-rebuild build-image`
  # evaluates it.
  imageSystem =
    system: modules:
    evalWith system (
      [
        images
        nixpkgsImages
      ]
      ++ modules
    );
  web = imageSystem "x86_64-linux" [
    (
      { lib, ... }:
      {
        # (mkForce: the variants' formats still win)
        imgbuild.format = lib.mkForce "raw-efi";
        networking.hostName = "web";
      }
    )
  ];
  piSystem = imageSystem "aarch64-linux" [
    {
      imgbuild.format = "sd-aarch64";
      networking.hostName = "pi";
      nixpkgs.hostPlatform = "aarch64-linux";
    }
  ];
  # What `nixos-rebuild build-image --image-variant <v>` would build, for each variant: the
  # builder (imgbuild's derivation has its argument list) and the file under the output.
  variantsOf =
    c:
    builtins.mapAttrs (
      _: img:
      if img ? imgbuildArgs then
        {
          builtBy = "imgbuild";
          inherit (img) format;
          inherit (img.passthru) filePath;
          out = builtins.elemAt img.imgbuildArgs 6;
          compress =
            let
              i = lib.lists.findFirstIndex (a: a == "--compress") null img.imgbuildArgs;
            in
            if i == null then null else builtins.elemAt img.imgbuildArgs (i + 1);
        }
      else
        {
          builtBy = img.name;
          inherit (img.passthru) filePath;
        }
    ) c.system.build.images;

  tests = {
    # platforms.nix: each cloud or hypervisor format sets its platform's guest settings on
    # top of the raw-efi disk's (same file systems and boot loader as raw-efi).
    platformSettings =
      let
        c = f: cfgFor f [ ];
        openstack = c "openstack";
        kubevirt = c "kubevirt";
        oci = c "oci";
        vagrant = c "vagrant-virtualbox";
        raw = c "raw-efi";
        cloudstack = c "cloudstack";
        linode = c "linode";
      in
      {
        expr = {
          # CloudStack: the raw disk's GRUB on /dev/vda, cloud-init with its data source only.
          cloudstack = {
            sameDisk = cloudstack.fileSystems == (c "raw").fileSystems;
            cloudInit = cloudstack.services.cloud-init.enable;
            datasource = lib.hasInfix ''datasource_list: ["CloudStack"]'' cloudstack.environment.etc."cloud/cloud.cfg.d/99_cloudstack.cfg".text;
            grow = cloudstack.boot.growPartition;
          };
          # Linode: root by label on the whole disk (grown by resize2fs, no partition to
          # grow), GRUB for nodev with Lish on ttyS0 at 19200, eth0 by DHCP.
          linode = {
            root = {
              inherit (linode.fileSystems."/") device fsType autoResize;
            };
            grow = linode.boot.growPartition;
            inherit (linode.boot.loader.grub) forceInstall;
            inherit (linode.boot.loader) timeout;
            serial = lib.hasInfix "serial --speed=19200" linode.boot.loader.grub.extraConfig;
            params = linode.boot.kernelParams;
            eth0 = linode.networking.interfaces.eth0;
            predictable = linode.networking.usePredictableInterfaceNames;
            swap = linode.swapDevices;
            record = {
              inherit (linode.boot.bootspec.extensions."org.imgbuild.v1".bootloader)
                devices
                timeout
                extraConfig
                ;
            };
          };
          sameDisk = map (x: x.fileSystems == raw.fileSystems && x.boot.loader.systemd-boot.enable) [
            openstack
            kubevirt
            oci
            vagrant
          ];
          cloudInit = map (x: x.services.cloud-init.enable) [
            openstack
            kubevirt
            oci
            raw
          ];
          openstackHostName = openstack.networking.hostName;
          kubevirtAgent = kubevirt.services.qemuGuest.enable;
          ociParams = builtins.filter (p: lib.hasPrefix "nvme" p) oci.boot.kernelParams;
          ociNtp = oci.networking.timeServers;
          ociKeys = oci.systemd.services ? imgbuild-oci-ssh-keys;
          vagrantGroups = vagrant.users.users.vagrant.extraGroups;
          vagrantSudo = vagrant.security.sudo.wheelNeedsPassword;
          vagrantGuest = vagrant.virtualisation.virtualbox.guest.enable;
          rawUntouched = {
            users = raw.users.users;
            ssh = raw.services.openssh;
            modules = raw.boot.initrd.kernelModules;
          };
        };
        expected = {
          cloudstack = {
            sameDisk = true;
            cloudInit = true;
            datasource = true;
            grow = true;
          };
          linode = {
            root = {
              device = "/dev/disk/by-label/nixos";
              fsType = "ext4";
              autoResize = true;
            };
            grow = false;
            forceInstall = true;
            timeout = 10;
            serial = true;
            params = [ "console=ttyS0,19200n8" ];
            eth0 = {
              useDHCP = true;
              tempAddress = "disabled";
            };
            predictable = false;
            swap = [ { device = "/dev/sdb"; } ];
            record = {
              devices = [ "nodev" ];
              timeout = 10;
              extraConfig = linode.boot.loader.grub.extraConfig;
            };
          };
          sameDisk = [
            true
            true
            true
            true
          ];
          cloudInit = [
            true
            true
            false
            false
          ];
          openstackHostName = "";
          kubevirtAgent = true;
          ociParams = [
            "nvme.shutdown_timeout=10"
            "nvme_core.shutdown_timeout=10"
          ];
          ociNtp = [ "169.254.169.254" ];
          ociKeys = true;
          vagrantGroups = [
            "users"
            "wheel"
            "vboxsf"
          ];
          vagrantSudo = false;
          vagrantGuest = true;
          rawUntouched = {
            users = { };
            ssh = { };
            modules = [ ];
          };
        };
      };

    # The variant names nixos-rebuild lists; which builder each has and its file path.
    buildImageVariants = {
      expr = {
        web = variantsOf web;
        pi = variantsOf piSystem;
      };
      expected =
        let
          imgbuild = system: format: extension: compress: rec {
            builtBy = "imgbuild";
            inherit format compress;
            filePath = "nixos-image-${label}-${system}.${extension}";
            out = "${ph}/${filePath}";
          };
          x86 = imgbuild "x86_64-linux";
          # iso/ and tarball/ as nixpkgs' iso-image.nix, netboot.nix and the container modules; the ISOs named as
          # iso-image.nix names them; `--compress` only for a plain `.img` disk (mkImage passes no
          # flag for these: the ISO, the kexec and container tarballs take their format's default).
          live = system: {
            iso = imgbuildAt "iso/nixos-${label}-${system}.iso" "iso" null;
            iso-installer = imgbuildAt "iso/nixos-${label}-${system}.iso" "iso-installer" null;
            kexec = imgbuildAt "tarball/nixos-image-${label}-${system}.kexec.tar.gz" "kexec" null;
          }
          # The container tarballs, under nixpkgs' `tarball/` too.
          // lib.genAttrs [ "lxc" "lxc-metadata" "proxmox-lxc" ] (
            format: imgbuildAt "tarball/nixos-image-${label}-${system}.tar.xz" format null
          );
          imgbuildAt = filePath: format: compress: {
            builtBy = "imgbuild";
            inherit filePath format compress;
            out = "${ph}/${filePath}";
          };
          nixpkgs = system: name: {
            builtBy = "nixpkgs-vm-${name}";
            filePath = "nixos-image-${label}-${system}.nixpkgs-${name}";
          };
        in
        {
          web = {
            amazon = x86 "amazon" "vhd" null;
            azure = x86 "azure" "vhd" null;
            digital-ocean = x86 "digitalocean" "qcow2.gz" null;
            google-compute = x86 "gce" "raw.tar.gz" null;
            hyperv = x86 "hyperv" "vhdx" null;
            kubevirt = x86 "kubevirt" "qcow2" null;
            linode = x86 "linode" "img.gz" null;
            oci = x86 "oci" "qcow2" null;
            openstack = x86 "openstack" "qcow2" null;
            proxmox = x86 "proxmox" "vma.zst" null;
            qemu = x86 "qemu" "qcow2" null;
            qemu-efi = x86 "qemu-efi" "qcow2" null;
            raw = x86 "raw" "raw" "none";
            raw-efi = x86 "raw-efi" "raw" "none";
            sd-card = nixpkgs "x86_64-linux" "sd-card";
            vagrant-virtualbox = x86 "vagrant-virtualbox" "box" null;
            virtualbox = x86 "virtualbox" "ova" null;
            vmware = x86 "vmware" "vmdk" null;
          }
          // live "x86_64-linux";
          pi = lib.genAttrs nixpkgsVariants (nixpkgs "aarch64-linux") // live "aarch64-linux" // {
            sd-card = rec {
              builtBy = "imgbuild";
              format = "sd-aarch64";
              compress = "zstd";
              filePath = "sd-image/nixos-image-${label}-aarch64-linux.img.zst";
              out = "${ph}/${filePath}";
            };
          };
        };
    };

    # A variant is this system with the variant's imgbuild format: the same toplevel when the
    # system already has that disk layout (qemu-efi holds the raw-efi disk); a system without
    # a format gets the format's file systems and boot loader only in the variant.
    buildImageVariantIsTheSystem =
      let
        bare = imageSystem "x86_64-linux" [ { networking.hostName = "bare"; } ];
        configOf = c: v: c.system.build.images.${v}.passthru.config;
      in
      {
        expr = {
          rawEfi = (configOf web "raw-efi").system.build.toplevel == web.system.build.toplevel;
          qemuEfi = (configOf web "qemu-efi").system.build.toplevel == web.system.build.toplevel;
          qemuFormat = (configOf web "qemu-efi").imgbuild.format;
          imagedToplevel = builtins.elemAt web.system.build.images.qemu-efi.imgbuildArgs 2 == toString web.system.build.toplevel;
          bareRoot = bare.fileSystems ? "/";
          bareVariantRoot = (configOf bare "raw-efi").fileSystems."/".device;
          bareVariantLoader = (configOf bare "raw-efi").boot.loader.systemd-boot.enable;
          bareDiffers = (configOf bare "raw-efi").system.build.toplevel != bare.system.build.toplevel;
        };
        expected = {
          rawEfi = true;
          qemuEfi = true;
          qemuFormat = "qemu-efi";
          imagedToplevel = true;
          bareRoot = false;
          bareVariantRoot = "/dev/disk/by-label/nixos";
          bareVariantLoader = true;
          bareDiffers = true;
        };
      };

    # image.baseName / extension / fileName / filePath, set in the variant (with mkForce, as
    # the module's own definition is), name the file; `.zst` compresses raw-efi and sd-card.
    # A plain `image.modules.<v>` definition is replaced like nixpkgs' own.
    buildImageFileOptions =
      let
        custom = imageSystem "x86_64-linux" [
          (
            { lib, ... }:
            {
              imgbuild.format = "raw-efi";
              networking.hostName = "web";
              image.modules = {
                qemu-efi = lib.mkForce { image.baseName = "web"; };
                raw-efi = lib.mkForce { image.extension = "raw.zst"; };
                vmware = lib.mkForce { image.fileName = "disk.vmdk"; };
                hyperv = lib.mkForce { image.filePath = "images/web.vhdx"; };
                amazon = {
                  image.baseName = "replaced";
                };
              };
            }
          )
        ];
        pi = imageSystem "aarch64-linux" [
          (
            { lib, ... }:
            {
              imgbuild.format = "sd-aarch64";
              nixpkgs.hostPlatform = "aarch64-linux";
              image.modules.sd-card = lib.mkForce {
                image.baseName = "pi";
                image.extension = "img";
              };
            }
          )
        ];
        v = variantsOf custom;
        zstContainer = imageSystem "x86_64-linux" [
          (
            { lib, ... }:
            {
              image.modules.qemu-efi = lib.mkForce { image.extension = "qcow2.zst"; };
            }
          )
        ];
      in
      {
        expr = {
          qemu = v.qemu-efi.out;
          raw = {
            inherit (v.raw-efi) filePath compress;
          };
          vmware = v.vmware.filePath;
          hyperv = v.hyperv.out;
          hypervDir = lib.hasInfix "mkdir -p \"$out/nix-support\" \"$out/images\"\n" custom.system.build.images.hyperv.script;
          amazon = v.amazon.filePath;
          pi = {
            inherit ((variantsOf pi).sd-card) filePath compress;
          };
          zstContainer = fails zstContainer.system.build.images.qemu-efi.imgbuildArgs;
        };
        expected = {
          qemu = "${ph}/web.qcow2";
          raw = {
            filePath = "nixos-image-${label}-x86_64-linux.raw.zst";
            compress = "zstd";
          };
          vmware = "disk.vmdk";
          hyperv = "${ph}/images/web.vhdx";
          hypervDir = true;
          amazon = "nixos-image-${label}-x86_64-linux.vhd";
          pi = {
            filePath = "sd-image/pi.img";
            compress = "none";
          };
          zstContainer = true;
        };
      };

    # boot.json's "org.imgbuild.v1" (CONTRACT.md) from the real module system: the loader's
    # settings as evaluated, bootCounting where the release declares it (26.11), not on 25.11.
    bootspecRecord =
      let
        rec_ = c: c.boot.bootspec.extensions."org.imgbuild.v1";
        counting = evalWith "x86_64-linux" [
          imgbuild
          {
            imgbuild.format = "raw-efi";
            boot.loader.timeout = null;
            boot.loader.systemd-boot = {
              editor = false;
              bootCounting = {
                enable = true;
                tries = 2;
              };
            };
          }
        ];
        r2511 = evalFor { release = "25.11"; } [
          imgbuild
          { imgbuild.format = "qemu-efi"; }
        ];
        sd = {
          type = "systemd-boot";
          timeout = 5;
          editor = true;
          consoleMode = "keep";
          rebootForBitlocker = false;
          installDeviceTree = false;
          distroName = "NixOS";
        };
      in
      {
        expr = {
          x86 = rec_ x86;
          counting = rec_ counting;
          v2511 = rec_ r2511;
          pi = removeAttrs (rec_ pi) [ "firmware" ];
          piFirmware = (rec_ pi).firmware == "${pi.imgbuild.raspberryPi.firmware}";
          none = (evalWith "x86_64-linux" [ imgbuild ]).boot.bootspec.extensions;
        };
        expected = {
          # uki.nix's name without image id and version: nixos.efi.
          x86 = {
            release = "26.11";
            ukiFile = "nixos.efi";
            bootloader = sd // {
              bootCounting = {
                enable = false;
                tries = 3;
              };
            };
          };
          counting = {
            release = "26.11";
            ukiFile = "nixos.efi";
            bootloader = sd // {
              timeout = null;
              editor = false;
              bootCounting = {
                enable = true;
                tries = 2;
              };
            };
          };
          v2511 = {
            release = "25.11";
            ukiFile = "nixos.efi";
            bootloader = sd;
          };
          pi = {
            release = "26.11";
            ukiFile = "nixos.efi";
            bootloader = {
              type = "extlinux";
              timeout = 5;
              useGenerationDeviceTree = true;
              deviceTreeName = null;
              distroName = "NixOS";
            };
          };
          piFirmware = true;
          none = { };
        };
      };

    # Every format on every system it is for: its root file system (by label, the live media's
    # tmpfs, none for a container), its boot loader (none for the read-only live media and the
    # containers), all assertions hold.
    everyFormat =
      let
        pairs = builtins.concatMap (
          f:
          map (system: { inherit f system; }) (flakeLib.systemsOf flakeLib.formats.${f})
        ) (builtins.attrNames flakeLib.formats);
        live = [
          "iso"
          "iso-installer"
          "netboot"
          "kexec"
        ];
      in
      {
        expr = map (
          { f, system }:
          let
            c = evalWith system [
              imgbuild
              { imgbuild.format = f; }
              # (the appliance's names: its assertions want them)
              (lib.optionalAttrs (f == "appliance") applianceImage)
            ];
            root = c.fileSystems."/" or null;
          in
          {
            inherit f system;
            root =
              if root == null then
                null
              else if root.device == null then
                root.fsType
              else
                root.device;
            container = c.boot.isContainer;
            # The toplevel's imgbuild.json (the builder command's JSON), its container marker.
            marker =
              let
                m = builtins.match "printf '%s' '([^']*)' > \"\\$out/imgbuild.json\"\n" c.system.systemBuilderCommands;
              in
              if m == null then null else (builtins.fromJSON (builtins.head m))."org.imgbuild.v1".container.isContainer;
            loader =
              if c.boot.loader.systemd-boot.enable then
                "systemd-boot"
              else if c.boot.loader.generic-extlinux-compatible.enable then
                "extlinux"
              else if c.boot.loader.grub.enable then
                "grub"
              else
                "none";
            grub = c.boot.loader.grub.enable;
            ok = allTrue c.assertions;
          }
        ) pairs;
        expected = map (
          { f, system }:
          let
            pi = flakeLib.formats.${f}.base == "sd-aarch64";
            bios = builtins.elem f biosFormats;
            # containers.nix: no file systems, no boot loader.
            container = flakeLib.formats.${f}.extension == "tar.xz";
          in
          {
            inherit f system container;
            marker = if container then true else null;
            root =
              if container then
                null
              else if builtins.elem f live then
                "tmpfs"
              else if pi then
                "/dev/disk/by-label/NIXOS_SD"
              else
                "/dev/disk/by-label/nixos";
            loader =
              if container || builtins.elem f live then
                "none"
              else if pi then
                "extlinux"
              else if bios then
                "grub"
              else
                "systemd-boot";
            grub = bios;
            ok = true;
          }
        ) pairs;
      };

    # The live media through the real module system: nixpkgs' iso-image.nix and netboot.nix
    # file systems, modules, kernel parameters; the boot.json record imgbuild reads (contract
    # of issue 23); the medium's settings win over a host configuration's disk and boot
    # loader (mkImageMediaOverride), the host's kernel parameters are kept; the assertions on
    # the volume ID and syslinux fire.
    liveFormats =
      let
        live = system: extra: evalWith system ([ imgbuild ] ++ extra);
        iso = live "x86_64-linux" [ { imgbuild.format = "iso"; } ];
        installerArm = live "aarch64-linux" [
          {
            imgbuild.format = "iso-installer";
            imgbuild.iso.edition = "minimal";
          }
        ];
        nb = live "aarch64-linux" [ { imgbuild.format = "netboot"; } ];
        kexec = live "x86_64-linux" [ { imgbuild.format = "kexec"; } ];
        host = live "x86_64-linux" [
          {
            imgbuild.format = "iso";
            fileSystems."/" = {
              device = "/dev/disk/by-uuid/0f3e";
              fsType = "ext4";
            };
            boot.loader.systemd-boot.enable = true;
            boot.loader.grub.enable = true;
            boot.kernelParams = [ "quiet" ];
          }
        ];
        mounts =
          c:
          lib.mapAttrs (_: fs: {
            inherit (fs)
              device
              fsType
              options
              neededForBoot
              ;
          }) c.fileSystems;
        # (the UKI's name, recorded for every format, is bootspecRecord's)
        record =
          c:
          removeAttrs c.boot.bootspec.extensions."org.imgbuild.v1" [
            "release"
            "ukiFile"
          ];
        failing = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
        isoWith =
          system: settings:
          live system [
            { imgbuild.format = "iso"; }
            settings
          ];
        tmpfs = {
          device = null;
          fsType = "tmpfs";
          options = [ "mode=0755" ];
        };
        liveMounts = roStore: {
          "/" = tmpfs // {
            neededForBoot = false;
          };
          "/nix/.ro-store" = {
            device = roStore;
            fsType = "squashfs";
            options = [ "loop" ];
            neededForBoot = true;
          };
          "/nix/.rw-store" = tmpfs // {
            neededForBoot = true;
          };
          "/nix/store" = {
            device = "overlay";
            fsType = "overlay";
            options = [
              "lowerdir=/nix/.ro-store"
              "upperdir=/nix/.rw-store/store"
              "workdir=/nix/.rw-store/work"
            ];
            neededForBoot = true;
          };
        };
      in
      {
        expr = {
          isoMounts = mounts iso;
          netbootMounts = mounts nb;
          kexecMountsAreNetboots = mounts kexec == mounts nb;
          overlayDepends = iso.fileSystems."/nix/store".depends;
          isoParams = iso.boot.kernelParams;
          isoRecord = record iso;
          installerArmParams = installerArm.boot.kernelParams;
          installerArmRecord = {
            inherit (record installerArm) iso;
            bootloaderType = (record installerArm).bootloader.type;
          };
          netbootRecord = record nb;
          netbootParams = nb.boot.kernelParams;
          isoModules = {
            inherit (iso.boot.initrd) availableKernelModules kernelModules;
          };
          netbootModules = nb.boot.initrd.availableKernelModules;
          registersAtBoot =
            map (lib.hasInfix "bin/nix-store --load-db < /nix/store/nix-path-registration") [
              iso.boot.postBootCommands
              nb.boot.postBootCommands
            ];
          firstBootUnits = builtins.attrNames iso.systemd.services;
          noRegistration = (isoWith "x86_64-linux" { imgbuild.registerNixPaths = false; }).boot.postBootCommands;
          timeout = iso.boot.loader.timeout;
          host = {
            root = host.fileSystems."/".fsType;
            systemdBoot = host.boot.loader.systemd-boot.enable;
            grub = host.boot.loader.grub.enable;
            params = host.boot.kernelParams;
          };
          ok = map (c: failing c) [
            iso
            installerArm
            nb
            kexec
          ];
          longVolumeID = failing (isoWith "x86_64-linux" { imgbuild.iso.volumeID = "nixos-minimal-26.11-x86_64-abcdefg"; });
          badVolumeID = builtins.length (failing (isoWith "aarch64-linux" { imgbuild.iso.volumeID = "NIXOS ISO"; }));
          noSyslinux = failing (isoWith "x86_64-linux" { imgbuild.iso.syslinux = null; });
          systemdStage1 = builtins.length (failing (isoWith "aarch64-linux" { boot.initrd.systemd.enable = true; }));
          wrongSystem = builtins.length (failing (live "riscv64-linux" [ { imgbuild.format = "netboot"; } ]));
        };
        expected = {
          isoMounts = liveMounts "/iso/nix-store.squashfs" // {
            "/iso" = {
              device = "/dev/root";
              fsType = "auto";
              options = [ "defaults" ];
              neededForBoot = true;
            };
          };
          netbootMounts = liveMounts "../nix-store.squashfs";
          kexecMountsAreNetboots = true;
          overlayDepends = [
            "/nix/.ro-store"
            "/nix/.rw-store/store"
            "/nix/.rw-store/work"
          ];
          isoParams = [
            "root=LABEL=nixos-26.11-x86_64"
            "boot.shell_on_fail"
          ];
          isoRecord = {
            iso = {
              volumeID = "nixos-26.11-x86_64";
              syslinux = "${(stubs.pkgsFor "x86_64-linux").syslinux}";
            };
            # The EFI image's systemd-boot, with the medium's timeout.
            bootloader = {
              type = "systemd-boot";
              timeout = 10;
              editor = true;
              consoleMode = "keep";
              rebootForBitlocker = false;
              installDeviceTree = false;
              distroName = "NixOS";
              bootCounting = {
                enable = false;
                tries = 3;
              };
            };
          };
          installerArmParams = [
            "root=LABEL=nixos-minimal-26.11-aarch64"
            "boot.shell_on_fail"
          ];
          installerArmRecord = {
            iso.volumeID = "nixos-minimal-26.11-aarch64";
            bootloaderType = "systemd-boot";
          };
          netbootRecord.netboot = { };
          netbootParams = [ ];
          isoModules = {
            availableKernelModules = [
              "squashfs"
              "overlay"
              "iso9660"
              "uas"
            ];
            kernelModules = [
              "loop"
              "overlay"
            ];
          };
          netbootModules = [
            "squashfs"
            "overlay"
          ];
          registersAtBoot = [
            true
            true
          ];
          firstBootUnits = [ ];
          noRegistration = "";
          timeout = 10;
          host = {
            root = "tmpfs";
            systemdBoot = false;
            grub = false;
            params = [
              "quiet"
              "root=LABEL=nixos-26.11-x86_64"
              "boot.shell_on_fail"
            ];
          };
          ok = [
            [ ]
            [ ]
            [ ]
            [ ]
          ];
          longVolumeID = [
            "imgbuild.iso.volumeID `nixos-minimal-26.11-x86_64-abcdefg` must be 1 to 32 letters, digits, `_`, `-` or `.` (an ISO 9660 volume ID, also the label stage 1 looks for)."
          ];
          badVolumeID = 1;
          noSyslinux = [
            "imgbuild.format = \"iso\" on x86_64-linux boots BIOS through isolinux: imgbuild.iso.syslinux must be a syslinux package, not null."
          ];
          wrongSystem = 1;
          systemdStage1 = 1;
        };
      };

    # iso-installer is the ISO with the profiles nixpkgs' installation-cd-base.nix imports
    # (all-hardware, base, installation-device), which the build-image variant and mkNodes
    # import (each stand-in profile declares `test.profiles.<name>`); the iso variant and a
    # hand-set format do not.
    installerProfile =
      let
        variant = c: v: c.system.build.images.${v}.passthru.config;
        installer = [
          "all-hardware"
          "base"
          "installation-device"
        ];
        profiled = c: builtins.attrNames (c.test.profiles or { });
        nodes = flakeLib.mkNodes {
          nodes = [
            {
              name = "inst";
              system = "aarch64-linux";
              format = "iso-installer";
            }
            {
              name = "live";
              system = "x86_64-linux";
              format = "iso";
            }
          ];
          nixpkgs = stubs.nixpkgs // {
            lib = stubs.nixpkgs.lib // {
              nixosSystem = args: {
                config = evalWith args.specialArgs.imgbuildNode.system args.modules;
              };
            };
          };
        };
      in
      {
        expr = {
          isoInstallerVariant = profiled (variant web "iso-installer");
          isoVariant = profiled (variant web "iso");
          armInstallerVariant = profiled (variant piSystem "iso-installer");
          byHand = profiled (evalWith "x86_64-linux" [
            imgbuild
            { imgbuild.format = "iso-installer"; }
          ]);
          nodeInstaller = profiled nodes.nixosConfigurations.inst.config;
          nodeLive = profiled nodes.nixosConfigurations.live.config;
          nodeInstallerFormat = nodes.nixosConfigurations.inst.config.imgbuild.format;
          # A format for two systems: mkNodes needs the node's.
          noSystem = fails (flakeLib.checkNodes [
            {
              name = "x";
              format = "iso";
            }
          ]);
        };
        expected = {
          isoInstallerVariant = installer;
          isoVariant = [ ];
          armInstallerVariant = installer;
          byHand = [ ];
          nodeInstaller = installer;
          nodeLive = [ ];
          nodeInstallerFormat = "iso-installer";
          noSystem = true;
        };
      };

    # The PC BIOS formats (CONTRACT-24): GRUB on the disk the platform gives, root by label,
    # BIOS only but for the hybrid `qemu` (efiSupport, removable, ESP at /boot); boot.json's
    # GRUB record names the package (and the EFI one with efiSupport); a user's `boot.loader.grub.device` replaces the format's disk (not a
    # second one).
    grubFormats =
      let
        rec_ = c: c.boot.bootspec.extensions."org.imgbuild.v1".bootloader;
        summary =
          f:
          let
            c = cfgFor f [ ];
          in
          {
            inherit (c.boot.loader.grub) devices efiSupport efiInstallAsRemovable;
            mounts = builtins.attrNames c.fileSystems;
            sdBoot = c.boot.loader.systemd-boot.enable;
            ide = builtins.elem "ata_piix" c.boot.initrd.availableKernelModules;
            record = {
              inherit (rec_ c) type devices grub;
              efi = (rec_ c) ? grubEfi;
            };
          };
        own = cfgFor "hetzner" [
          {
            boot.loader.grub.device = "/dev/nvme0n1";
            boot.loader.grub.users.root.hashedPassword = "grub.pbkdf2.sha512.10000.SECRET";
          }
        ];
        raw = rec_ (cfgFor "raw" [ ]);
        qemu = rec_ (cfgFor "qemu" [
          {
            boot.loader.grub.efiSupport = true;
            boot.loader.efi.efiSysMountPoint = "/boot/efi";
          }
        ]);
        grub = "${grubPackage}";
      in
      {
        expr = {
          summaries = lib.genAttrs biosFormats summary;
          ownDevice = own.boot.loader.grub.devices;
          ownRecord = {
            inherit (rec_ own) devices users;
            noHash = !(lib.hasInfix "SECRET" (builtins.toJSON (rec_ own)));
          };
          rawRecord = removeAttrs raw [
            "grub"
            "font"
          ];
          rawFont = raw.font;
          qemuEfi = {
            inherit (qemu) grubEfi efiSysMountPoint;
          };
        };
        expected = {
          summaries =
            let
              s = dev: efi: {
                devices = [ dev ];
                efiSupport = efi;
                efiInstallAsRemovable = efi;
                mounts = [ "/" ] ++ lib.optional efi "/boot";
                sdBoot = false;
                ide = true;
                record = {
                  type = "grub";
                  devices = [ dev ];
                  inherit grub efi;
                };
              };
            in
            {
              raw = s "/dev/vda" false;
              qemu = s "/dev/vda" true;
              digitalocean = s "/dev/vda" false;
              hetzner = s "/dev/sda" false;
              cloudstack = s "/dev/vda" false;
              # No boot code on a disk without a table: GRUB for `nodev`; Linode's disks are
              # virtio or SCSI, no PIIX IDE.
              linode = s "nodev" false // {
                ide = false;
              };
            };
          ownDevice = [ "/dev/nvme0n1" ];
          ownRecord = {
            devices = [ "/dev/nvme0n1" ];
            users = [ "root" ];
            noHash = true;
          };
          rawRecord = {
            type = "grub";
            timeout = 5;
            devices = [ "/dev/vda" ];
            efiSupport = false;
            efiInstallAsRemovable = false;
            fsIdentifier = "uuid";
            configurationLimit = 100;
            configurationName = "";
            default = 0;
            copyKernels = false;
            storePath = "/nix/store";
            extraConfig = "";
            extraEntries = "";
            extraEntriesBeforeNixOS = false;
            extraPerEntryConfig = "";
            backgroundColor = null;
            gfxmodeBios = "1024x768";
            gfxpayloadBios = "text";
            gfxmodeEfi = "auto";
            gfxpayloadEfi = "keep";
            extraPrepareConfig = "";
            extraGrubInstallArgs = [ ];
            users = [ ];
            useOSProber = false;
            splashImage = null;
            theme = null;
            distroName = "NixOS";
            timeoutStyle = "menu";
            splashMode = "stretch";
            entryOptions = "--class nixos --unrestricted";
            subEntryOptions = "--class nixos";
          };
          rawFont = "${grubPackage}/share/grub/unicode.pf2";
          qemuEfi = {
            grubEfi = "${grubPackage.override { efiSupport = true; }}";
            efiSysMountPoint = "/boot/efi";
          };
        };
      };

    # The appliance through the real module system: uki.nix's file name from system.image,
    # stage 1 with dm-verity, the mounts with the options NixOS adds, the boot.json record
    # imgbuild checks, the transfers; the assertions fire for what imgbuild would refuse.
    appliance =
      let
        kiosk =
          extra:
          evalWith "x86_64-linux" (
            [
              imgbuild
              applianceImage
              { imgbuild.format = "appliance"; }
            ]
            ++ extra
          );
        c = kiosk [
          {
            imgbuild.appliance.updateSource = "https://updates.example.com/kiosk/";
            boot.kernelParams = [ "quiet" ];
          }
        ];
        failing = cfg: map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
        mount = fs: { inherit (fs) device fsType options; };
        nodes = flakeLib.mkNodes {
          nodes = [
            {
              name = "kiosk";
              format = "appliance";
              modules = [ applianceImage ];
            }
          ];
          nixpkgs = stubs.nixpkgs // {
            lib = stubs.nixpkgs.lib // {
              nixosSystem = args: { config = evalWith args.specialArgs.imgbuildNode.system args.modules; };
            };
          };
        };
      in
      {
        expr = {
          ukiFile = c.system.boot.loader.ukiFile;
          stage1 = {
            inherit (c.boot.initrd.systemd) enable;
            dmVerity = c.boot.initrd.systemd.dmVerity.enable;
            modules = builtins.filter (m: builtins.elem m [ "dm_mod" "dm_verity" "squashfs" "nvme" ]) c.boot.initrd.availableKernelModules;
          };
          mounts = lib.mapAttrs (_: mount) c.fileSystems;
          usrbinenv = c.system.activationScripts.usrbinenv;
          params = c.boot.kernelParams;
          loader = c.boot.loader.systemd-boot.enable;
          record = removeAttrs c.boot.bootspec.extensions."org.imgbuild.v1" [ "bootloader" ];
          sysupdate = {
            inherit (c.systemd.sysupdate) enable;
            transfers = builtins.attrNames c.systemd.sysupdate.transfers;
            usr = c.systemd.sysupdate.transfers."22-usr".Target.MatchPattern;
          };
          ok = failing c;
          noSource = (kiosk [ ]).systemd.sysupdate;
          noId = builtins.length (failing (evalWith "x86_64-linux" [
            imgbuild
            { imgbuild.format = "appliance"; }
          ]));
          underscore = failing (kiosk [ { system.image.version = lib.mkForce "1_2"; } ]);
          tries = builtins.length (failing (kiosk [ { boot.uki.tries = 3; } ]));
          ukiName = builtins.length (failing (kiosk [ { boot.uki.name = "other"; } ]));
          noStage1 = builtins.length (failing (kiosk [ { boot.initrd.systemd.enable = lib.mkForce false; } ]));
          rawEfi = {
            sysupdate = x86.systemd.sysupdate.enable;
            stage1 = x86.boot.initrd.systemd.enable;
            record = x86.boot.bootspec.extensions."org.imgbuild.v1" ? appliance;
            mounts = builtins.attrNames x86.fileSystems;
          };
          node = {
            inherit (nodes.packages.x86_64-linux.kiosk) file sysupdateDir;
            ukiFile = nodes.nixosConfigurations.kiosk.config.system.boot.loader.ukiFile;
          };
        };
        expected = {
          ukiFile = "kiosk_1.2.efi";
          stage1 = {
            enable = true;
            dmVerity = true;
            modules = [
              "dm_mod"
              "dm_verity"
              "squashfs"
              "nvme"
            ];
          };
          # x-initrd.mount is added by NixOS's filesystems.nix (not declared here).
          mounts = {
            "/" = {
              device = "/dev/disk/by-label/nixos";
              fsType = "ext4";
              options = [ "defaults" ];
            };
            "/boot" = {
              device = "/dev/disk/by-label/ESP";
              fsType = "vfat";
              options = [
                "fmask=0077"
                "dmask=0077"
              ];
            };
            "/usr" = {
              device = "/dev/mapper/usr";
              fsType = "squashfs";
              options = [ "ro" ];
            };
            "/nix/store" = {
              device = "/usr/nix/store";
              fsType = "none";
              options = [ "bind" ];
            };
          };
          usrbinenv = "";
          params = [
            "quiet"
            "console=ttyS0,115200n8"
            "console=tty0"
          ];
          loader = true;
          record = {
            release = "26.11";
            ukiFile = "kiosk_1.2.efi";
            appliance = {
              imageId = "kiosk";
              imageVersion = "1.2";
              systemdInitrd = true;
              dmVerity = true;
            };
          };
          sysupdate = {
            enable = true;
            transfers = [
              "10-uki"
              "20-usr-verity"
              "22-usr"
            ];
            usr = "kiosk_@v";
          };
          ok = [ ];
          noSource = {
            enable = false;
            transfers = { };
          };
          # id and version unset
          noId = 2;
          underscore = [
            "imgbuild.format = \"appliance\" needs system.image.version (the version systemd-sysupdate compares): 1 or more letters, digits, `.`, `~`, `^` or `-` (no `_`, and no `+`, which systemd-boot reads as a boot counter), not \"1_2\"."
          ];
          tries = 1;
          ukiName = 1;
          noStage1 = 1;
          rawEfi = {
            sysupdate = false;
            stage1 = false;
            record = false;
            mounts = [
              "/"
              "/boot"
            ];
          };
          node = {
            file = "kiosk.img";
            sysupdateDir = "kiosk.img.sysupdate";
            ukiFile = "kiosk_1.2.efi";
          };
        };
      };

    # mkDefault in the module gives way to a plain definition; lists merge.
    defaultsGiveWay = {
      expr =
        let
          c = evalWith "x86_64-linux" [
            imgbuild
            {
              imgbuild.format = "raw-efi";
              boot.loader.timeout = 1;
              boot.loader.systemd-boot.configurationLimit = 3;
              boot.kernelParams = [ "quiet" ];
            }
          ];
        in
        {
          inherit (c.boot.loader) timeout;
          limit = c.boot.loader.systemd-boot.configurationLimit;
          params = c.boot.kernelParams;
          espOptions = c.fileSystems."/boot".options;
        };
      expected = {
        timeout = 1;
        limit = 3;
        # Both definitions kept (the module system's list merge), the user's first.
        params = [
          "quiet"
          "console=ttyS0,115200n8"
          "console=tty0"
        ];
        espOptions = [
          "fmask=0077"
          "dmask=0077"
        ];
      };
    };

    moduleDefaults = {
      expr = {
        timeout = x86.boot.loader.timeout;
        limit = x86.boot.loader.systemd-boot.configurationLimit;
        autoResize = x86.fileSystems."/".autoResize;
        piFirmwareNoauto = pi.fileSystems."/boot/firmware".options;
        piLogLevel = pi.boot.consoleLogLevel;
        piServices = builtins.attrNames pi.systemd.services;
        piFirmware = pi.boot.bootspec.extensions."org.imgbuild.v1".firmware != "";
      };
      expected = {
        timeout = 5;
        limit = 10;
        autoResize = true;
        piFirmwareNoauto = [
          "nofail"
          "noauto"
        ];
        piLogLevel = 7;
        piServices = [
          "imgbuild-expand-root"
          "imgbuild-register-nix-paths"
        ];
        piFirmware = true;
      };
    };

    # The option types are real: a format that does not exist, a wrong system.
    typesAreChecked = {
      expr = {
        badFormat = fails (
          (evalWith "x86_64-linux" [
            imgbuild
            { imgbuild.format = "raw-bios"; }
          ]).imgbuild.format
        );
        wrongSystem = allTrue (
          (evalWith "x86_64-linux" [
            imgbuild
            { imgbuild.format = "sd-aarch64"; }
          ]).assertions
        );
        badGrowRoot = fails (
          (evalWith "x86_64-linux" [
            imgbuild
            {
              imgbuild.format = "raw-efi";
              imgbuild.growRoot = "yes";
            }
          ]).imgbuild.growRoot
        );
      };
      expected = {
        badFormat = true;
        wrongSystem = false;
        badGrowRoot = true;
      };
    };

    gitops = {
      expr =
        let
          c = evalWith "x86_64-linux" [
            imgbuild
            gitops
            {
              imgbuild.format = "raw-efi";
              networking.hostName = "web";
              imgbuild.gitops = {
                enable = true;
                flake = "github:user/fleet";
                rebootWindow = {
                  lower = "01:00";
                  upper = "05:00";
                };
              };
              nix.settings.experimental-features = [ "ca-derivations" ];
            }
          ];
        in
        {
          inherit (c.system.autoUpgrade)
            enable
            flake
            upgrade
            rebootWindow
            ;
          features = builtins.sort builtins.lessThan c.nix.settings.experimental-features;
          ok = allTrue c.assertions;
        };
      expected = {
        enable = true;
        flake = "github:user/fleet#web";
        upgrade = false;
        rebootWindow = {
          lower = "01:00";
          upper = "05:00";
        };
        features = [
          "ca-derivations"
          "flakes"
          "nix-command"
        ];
        ok = true;
      };
    };

    # On nixpkgs before 25.11 (no `system.autoUpgrade.upgrade`) the gitops module still
    # evaluates, without setting it.
    gitopsOnOlderNixpkgs = {
      expr =
        let
          c = evalFor { release = "25.05"; } [
            gitops
            {
              networking.hostName = "web";
              imgbuild.gitops = {
                enable = true;
                flake = "github:user/fleet";
              };
            }
          ];
        in
        {
          inherit (c.system.autoUpgrade) enable flake;
          hasUpgrade = c.system.autoUpgrade ? upgrade;
        };
      expected = {
        enable = true;
        flake = "github:user/fleet#web";
        hasUpgrade = false;
      };
    };

    # mkNodes' configurations through the real module system: the node module's mkDefault
    # host name, the format's settings, the node's own modules.
    mkNodes = {
      expr = {
        webHost = nodes.nixosConfigurations.web.config.networking.hostName;
        webTimeout = nodes.nixosConfigurations.web.config.boot.loader.timeout;
        webRoot = nodes.nixosConfigurations.web.config.fileSystems."/".device;
        piLoader = nodes.nixosConfigurations.pi.config.boot.loader.generic-extlinux-compatible.enable;
        images = builtins.attrNames nodes.packages.x86_64-linux;
        webFile = nodes.packages.x86_64-linux.web.file;
      };
      expected = {
        webHost = "web";
        webTimeout = 1;
        webRoot = "/dev/disk/by-label/nixos";
        piLoader = true;
        images = [
          "pi"
          "web"
        ];
        webFile = "web.qcow2";
      };
    };
  };

  results = map (
    name:
    let
      t = tests.${name};
      expected = if sabotage then { sabotaged = t.expected; } else t.expected;
    in
    {
      inherit name expected;
      got = t.expr;
      ok = t.expr == expected;
    }
  ) (builtins.attrNames tests);
  failures = builtins.filter (x: !x.ok) results;
in
{
  passed = builtins.length results - builtins.length failures;
  failed = builtins.length failures;
  failures = map (x: { inherit (x) name expected got; }) failures;
  # `nix eval -f nix/tests/real-modules.nix buildImage`: what `nixos-rebuild build-image`
  # finds in a raw-efi system (x86_64) and a sd-aarch64 one (aarch64): each variant, who
  # builds it and the image's path under the output (nixos-rebuild prints <out>/<filePath>).
  buildImage =
    builtins.mapAttrs
      (
        _: c:
        builtins.mapAttrs (
          _: v: "${v.builtBy}${if v ? format then " (format ${v.format})" else ""}: ${v.filePath}"
        ) (variantsOf c)
      )
      {
        "web (x86_64-linux, imgbuild.format = raw-efi)" = web;
        "pi (aarch64-linux, imgbuild.format = sd-aarch64)" = piSystem;
      };
}
