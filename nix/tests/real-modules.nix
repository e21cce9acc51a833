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
  freeform = types.submodule { freeformType = types.attrsOf types.anything; };

  # The NixOS options imgbuild's modules and mkNodes' node module set (as nixpkgs 25.11
  # declares them; `old` leaves out what came with 25.11).
  nixosOptionsOf =
    { old }:
    { config, ... }:
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
            };
          }
        )) { };
        boot = {
          kernelParams = opt (types.listOf types.str) [ ];
          consoleLogLevel = opt types.int 4;
          growPartition = opt types.bool false;
          initrd.availableKernelModules = opt (types.listOf types.str) [ ];
          bootspec.extensions = opt (types.attrsOf types.anything) { };
          loader = {
            timeout = opt (types.nullOr types.int) 5;
            grub.enable = opt types.bool true;
            systemd-boot.enable = opt types.bool false;
            systemd-boot.configurationLimit = opt (types.nullOr types.int) null;
            efi.efiSysMountPoint = opt types.str "/boot";
            efi.canTouchEfiVariables = opt types.bool false;
            generic-extlinux-compatible.enable = opt types.bool false;
          };
        };
        hardware.enableAllHardware = opt types.bool false;
        systemd.services = opt (types.attrsOf freeform) { };
        networking.hostName = opt types.str "nixos";
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
        // lib.optionalAttrs (!old) { upgrade = opt types.bool true; };
        system.build = opt (types.attrsOf types.anything) { };
      };
      config.system.build.toplevel =
        stubs.fakePath "nixos-system-${config.networking.hostName}-26.11";
    };

  nixosOptions = nixosOptionsOf { old = false; };

  evalWith =
    system: modules:
    (lib.evalModules {
      modules = [
        nixosOptions
        { _module.args.pkgs = stubs.pkgsFor system; }
      ]
      ++ modules;
    }).config;

  imgbuild = ../modules/imgbuild.nix;
  gitops = ../modules/gitops.nix;
  systemOf = f: flakeLib.formats.${f}.system;
  cfgFor = f: extra: evalWith (systemOf f) [ imgbuild { imgbuild.format = f; } ] ++ extra;
  fails = v: !(builtins.tryEval (builtins.deepSeq v v)).success;
  allTrue = builtins.all (a: a.assertion);

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

  tests = {
    # Every format's system: its file systems by label, its boot loader, all assertions hold.
    everyFormat = {
      expr = map (
        f:
        let
          c = evalWith (systemOf f) [
            imgbuild
            { imgbuild.format = f; }
          ];
        in
        {
          inherit f;
          root = c.fileSystems."/".device;
          loader =
            if c.boot.loader.systemd-boot.enable then
              "systemd-boot"
            else if c.boot.loader.generic-extlinux-compatible.enable then
              "extlinux"
            else
              "none";
          grub = c.boot.loader.grub.enable;
          ok = allTrue c.assertions;
        }
      ) (builtins.attrNames flakeLib.formats);
      expected = map (
        f:
        let
          pi = flakeLib.formats.${f}.base == "sd-aarch64";
        in
        {
          inherit f;
          root = if pi then "/dev/disk/by-label/NIXOS_SD" else "/dev/disk/by-label/nixos";
          loader = if pi then "extlinux" else "systemd-boot";
          grub = false;
          ok = true;
        }
      ) (builtins.attrNames flakeLib.formats);
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
          c =
            (lib.evalModules {
              modules = [
                (nixosOptionsOf { old = true; })
                { _module.args.pkgs = stubs.pkgsFor "x86_64-linux"; }
                gitops
                {
                  networking.hostName = "web";
                  imgbuild.gitops = {
                    enable = true;
                    flake = "github:user/fleet";
                  };
                }
              ];
            }).config;
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
}
