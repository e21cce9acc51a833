# Wiring tests of imgbuild's flake library, modules, flake and template, evaluated with
# Debian's Nix against stubs (nix/tests/stubs.nix):
#   nix-instantiate --eval --strict --json nix/tests/eval.nix
# gives { passed; failed; failures = [ { name; expected; got; } ]; commandLines; }.
# `--arg sabotage true` compares every result with a wrong expectation instead: all must fail
# (nix/tests/run.sh checks that, so a comparison that cannot fail is caught).
{
  sabotage ? false,
}:
let
  inherit (builtins)
    attrNames
    elem
    filter
    length
    listToAttrs
    map
    readDir
    readFile
    split
    elemAt
    tryEval
    deepSeq
    ;
  stubs = import ./stubs.nix { };
  inherit (stubs) fakePath;
  lib = import ../lib.nix { nixpkgs = stubs.nixpkgs; };
  ph = builtins.placeholder "out";
  root = ../..;

  throws = e: !(tryEval (deepSeq e e)).success;
  hasInfix = stubs.lib.hasInfix;
  all = builtins.all (x: x);

  # --- formats/*.toml, the source of truth for labels, mount points and systems ---
  # Sorted by format name, as attrNames sorts lib.formats (file names sort `iso-installer.toml`
  # before `iso.toml`).
  # Every format file is in lib.formats (formatsMatchTomlFiles): the CLI has no format the
  # flake does not offer.
  tomlNames = builtins.sort builtins.lessThan (
    map (f: builtins.head (builtins.match "(.*)\\.toml" f)) (
      filter (f: builtins.match ".*\\.toml" f != null) (attrNames (readDir (root + "/formats")))
    )
  );
  # A format file with its `base` chain merged in, as crates/plan/src/format.rs does.
  toml =
    name:
    let
      t = builtins.fromTOML (readFile (root + "/formats/${name}.toml"));
    in
    if t ? base then toml t.base // builtins.removeAttrs t [ "base" ] else t // { base = name; };
  part =
    name: contents: builtins.head (filter (p: p.contents == contents) (toml name).partition);

  # --- the config.txt imgbuild writes (crates/boot/src/rpi.rs) ---
  rustConfigTxt =
    let
      src = readFile (root + "/crates/boot/src/rpi.rs");
      afterHead = elemAt (split "const CONFIG_TXT: &str = \"\\\\\n" src) 2;
    in
    elemAt (split "\";" afterHead) 0;

  # --- a node list ---
  nodes = [
    {
      name = "x86";
      format = "raw-efi";
      modules = [ ./data/host-x86.nix ];
    }
    {
      name = "pi4";
      system = "aarch64-linux";
      format = "sd-aarch64";
      modules = [ ./data/host-pi4.nix ];
    }
    {
      name = "nas";
      system = "x86_64-linux";
      format = "raw-efi";
      image = {
        compress = "zstd";
        size = "8GiB";
      };
    }
  ];
  common = {
    time.timeZone = "UTC";
  };
  r = lib.mkNodes {
    inherit nodes;
    nixpkgs = stubs.nixpkgs;
    modules = [ common ];
    specialArgs = {
      site = "home";
    };
  };
  tl = name: r.nixosConfigurations.${name}.config.system.build.toplevel;
  ciOf = pkg: pkg.passthru.closureInfo or pkg.closureInfo;

  # --- the modules, with the stub module evaluator ---
  imgbuildModule = ../modules/imgbuild.nix;
  gitopsModule = ../modules/gitops.nix;
  byName = builtins.sort (a: b: a.n < b.n);
  evalImg =
    system: settings:
    stubs.evalModule {
      module = imgbuildModule;
      inherit system settings;
    };
  rawEfi = evalImg "x86_64-linux" { imgbuild.format = "raw-efi"; };
  sd = evalImg "aarch64-linux" { imgbuild.format = "sd-aarch64"; };
  sdNoGrow = evalImg "aarch64-linux" {
    imgbuild.format = "sd-aarch64";
    imgbuild.growRoot = false;
  };
  rawNoGrow = evalImg "x86_64-linux" {
    imgbuild.format = "raw-efi";
    imgbuild.growRoot = false;
  };
  none = evalImg "x86_64-linux" { };

  # The appliance: modules/appliance.nix with the settings NixOS itself would have for it
  # (the stub evaluator's config does not see the module's own definitions: stage 1, dm-verity
  # and uki.nix's file name are given here as NixOS would set them).
  applianceModule = ../modules/appliance.nix;
  applianceNixos = {
    imgbuild.format = "appliance";
    system.image = {
      id = "kiosk";
      version = "1.2";
    };
    boot.initrd.systemd = {
      enable = true;
      dmVerity.enable = true;
    };
    system.boot.loader.ukiFile = "kiosk_1.2.efi";
  };
  applianceWith =
    settings:
    stubs.evalModule {
      module = applianceModule;
      settings = stubs.recursiveUpdate applianceNixos settings;
    };
  appliance = applianceWith { imgbuild.appliance.updateSource = "https://updates.example.com/kiosk/"; };
  failing = e: map (a: a.message) (filter (a: !a.assertion) e.defs.assertions);
  fw = sd.config.imgbuild.raspberryPi.firmware;
  # nixos-25.11 has no merged Pi U-Boot: one per board.
  sdSplit = evalImg "aarch64-linux" {
    imgbuild.format = "sd-aarch64";
    imgbuild.raspberryPi.uboot = null;
  };
  fwSplit = sdSplit.config.imgbuild.raspberryPi.firmware;
  label = fsys: "/dev/disk/by-label/${fsys}";
  units = e: attrNames (e.defs.systemd.services or { });

  gitops =
    settings:
    stubs.evalModule {
      module = gitopsModule;
      inherit settings;
      base = {
        networking.hostName = "pi4";
      };
    };
  gitopsOn = gitops {
    imgbuild.gitops = {
      enable = true;
      flake = "github:me/machines";
      flags = [ "--option" "tarball-ttl" "0" ];
      accessTokensFile = "/etc/nix/access-tokens.conf";
    };
  };

  # --- the flake, with stub nixpkgs ---
  flake = import (root + "/flake.nix");
  flakeOut = flake.outputs {
    self = flakeOut;
    nixpkgs = stubs.nixpkgs;
  };
  template = import (root + "/templates/default/flake.nix");
  templateOut = template.outputs {
    self = templateOut;
    nixpkgs = stubs.nixpkgs;
    imgbuild = flakeOut;
  };

  tests = {
    # Both by name: file names sort `lxc-metadata.toml` before `lxc.toml`, attribute names
    # `lxc` before `lxc-metadata`.
    formatsMatchTomlFiles = {
      expr = byName (
        map (
          n:
          let
            t = toml n;
          in
          {
            inherit n;
            inherit (t) system extension base;
            # The default of a format without `compress` (format/mod.rs: no_compression).
            compress = t.compress or "none";
          }
        ) tomlNames
      );
      expected = byName (map (n: {
        inherit n;
        inherit (lib.formats.${n}) system extension compress base;
      }) (attrNames lib.formats));
    };

    # containers.nix: a container system, with the marker and metadata imgbuild reads.
    containerFormatsAreContainers =
      let
        ev =
          system: format:
          (stubs.evalModule {
            module = ../modules/containers.nix;
            inherit system;
            settings.imgbuild.format = format;
          }).defs;
        lxc = ev "x86_64-linux" "lxc";
        pve = ev "aarch64-linux" "proxmox-lxc";
        # The toplevel's imgbuild.json, as the builder command writes it (NixOS writes no
        # boot.json for a container): the JSON between printf's quotes, parsed.
        imgbuildJson =
          d:
          let
            m = builtins.match "printf '%s' '([^']*)' > \"\\$out/imgbuild.json\"\n" d.system.systemBuilderCommands;
          in
          if m == null then null else builtins.fromJSON (builtins.head m);
      in
      {
        expr = {
          lxc = {
            inherit (lxc.boot) isContainer;
            marker = (imgbuildJson lxc)."org.imgbuild.v1".container;
            bootJson = lxc ? boot.bootspec;
            init = lxc.system.activationScripts ? installInitScript;
            sshOnDemand = lxc.services.openssh.startWhenNeeded;
          };
          pve = {
            inherit (pve.boot) isContainer;
            initScript = pve.boot.loader.initScript.enable;
            networkd = pve.networking.useNetworkd;
            marker = (imgbuildJson pve)."org.imgbuild.v1".container.isContainer;
          };
          raw = (ev "x86_64-linux" "raw-efi") == { };
        };
        expected = {
          lxc = {
            isContainer = true;
            marker = {
              isContainer = true;
              description = "NixOS   x86_64-linux";
              os = "nixos";
              release = "";
            };
            bootJson = false;
            init = true;
            sshOnDemand = true;
          };
          pve = {
            isContainer = true;
            initScript = true;
            networkd = true;
            marker = true;
          };
          raw = true;
        };
      };

    # A container format holds its base format's disk: the module sets the same system.
    containerFormatsConfigureTheirBase = {
      expr = map (
        f:
        let
          e = evalImg "x86_64-linux" { imgbuild.format = f; };
        in
        {
          inherit f;
          inherit (e.defs) fileSystems;
          loader = e.defs.boot.loader;
          params = e.defs.boot.kernelParams;
        }
      ) [ "qemu-efi" "amazon" "azure" "gce" "hyperv" "vmware" "virtualbox" "proxmox" ];
      expected = map (f: {
        inherit f;
        inherit (rawEfi.defs) fileSystems;
        loader = rawEfi.defs.boot.loader;
        params = rawEfi.defs.boot.kernelParams;
      }) [ "qemu-efi" "amazon" "azure" "gce" "hyperv" "vmware" "virtualbox" "proxmox" ];
    };

    moduleFormatEnumIsLibFormats = {
      expr = builtins.sort builtins.lessThan rawEfi.options.imgbuild.format.type.nullOr.enum;
      expected = attrNames lib.formats;
    };

    imgbuildArgsMinimal = {
      expr = lib.imgbuildArgs {
        format = "raw-efi";
        toplevel = "/nix/store/aaaa-nixos-system-x";
        closureInfo = "/nix/store/bbbb-closure-info";
        out = "/out/x.img";
      };
      expected = [
        "raw-efi"
        "--closure"
        "/nix/store/aaaa-nixos-system-x"
        "--closure-info"
        "/nix/store/bbbb-closure-info"
        "-o"
        "/out/x.img"
        "--json"
      ];
    };

    imgbuildArgsEveryOption = {
      expr = lib.imgbuildArgs {
        format = "raw-efi";
        toplevel = "/t";
        closureInfo = "/c";
        out = "/o.img";
        storeRoot = "/s";
        firmware = "/f";
        size = "8GiB";
        free = "1GiB";
        espSize = "1GiB";
        seed = "s";
        diskId = "0x2178694e";
        compress = "zstd";
        level = 19;
        keepRaw = true;
        nixPathRegistration = false;
        json = false;
        extraArgs = [ "--add" "a:/b" ];
      };
      expected = [
        "raw-efi"
        "--closure"
        "/t"
        "--closure-info"
        "/c"
        "-o"
        "/o.img"
        "--store-root"
        "/s"
        "--firmware"
        "/f"
        "--size"
        "8GiB"
        "--free"
        "1GiB"
        "--esp-size"
        "1GiB"
        "--seed"
        "s"
        "--disk-id"
        "0x2178694e"
        "--compress"
        "zstd"
        "--level"
        "19"
        "--keep-raw"
        "--nix-path-registration"
        "false"
        "--add"
        "a:/b"
      ];
    };

    imgbuildArgsRejects = {
      expr = map throws [
        (lib.imgbuildArgs {
          format = "sd-aarch64";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o";
          espSize = "1GiB";
        })
        (lib.imgbuildArgs {
          format = "raw-efi";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o";
          compress = "xz";
        })
        (lib.imgbuildArgs {
          format = "qcow2";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o";
        })
        (lib.imgbuildArgs {
          format = "raw-efi";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o";
        })
      ];
      expected = [
        true
        true
        true
        false
      ];
    };

    commandLineQuotes = {
      expr = lib.commandLine [
        "raw-efi"
        "-o"
        "/tmp/it's here/x.img"
      ];
      expected = "imgbuild 'raw-efi' '-o' '/tmp/it'\\''s here/x.img'";
    };

    imageFileNames = {
      expr = [
        (lib.imageFileName {
          name = "a";
          format = "raw-efi";
        })
        (lib.imageFileName {
          name = "a";
          format = "sd-aarch64";
        })
        (lib.imageFileName {
          name = "a";
          format = "sd-aarch64";
          compress = "none";
        })
        (lib.imageFileName {
          name = "a";
          format = "raw-efi";
          compress = "zstd";
        })
      ];
      expected = [
        "a.img"
        "a.img.zst"
        "a.img"
        "a.img.zst"
      ];
    };

    containerFormats = {
      expr = {
        files = map (format: lib.imageFileName { name = "a"; inherit format; }) [
          "qemu-efi"
          "amazon"
          "azure"
          "gce"
          "hyperv"
          "vmware"
          "virtualbox"
          "proxmox"
        ];
        args = builtins.head (lib.imgbuildArgs {
          format = "qemu-efi";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o.qcow2";
          espSize = "1GiB";
        });
        noZstdContainer = throws (lib.imgbuildArgs {
          format = "gce";
          toplevel = "/t";
          closureInfo = "/c";
          out = "/o";
          compress = "zstd";
        });
      };
      expected = {
        files = [
          "a.qcow2"
          "a.vhd"
          "a.vhd"
          "a.raw.tar.gz"
          "a.vhdx"
          "a.vmdk"
          "a.ova"
          "a.vma.zst"
        ];
        args = "qemu-efi";
        noZstdContainer = true;
      };
    };

    mkNodesNames = {
      expr = {
        configurations = attrNames r.nixosConfigurations;
        systems = attrNames r.packages;
        x86_64 = attrNames r.packages.x86_64-linux;
        aarch64 = attrNames r.packages.aarch64-linux;
      };
      expected = {
        configurations = [
          "nas"
          "pi4"
          "x86"
        ];
        systems = [
          "aarch64-linux"
          "x86_64-linux"
        ];
        x86_64 = [
          "nas"
          "pi4"
          "x86"
        ];
        aarch64 = [
          "nas"
          "pi4"
          "x86"
        ];
      };
    };

    # packages.<b>.<node> runs on <b> (its runCommand, closureInfo and imgbuild are <b>'s)
    # and makes an image for the node's own system.
    mkNodesBuildPlatform = {
      expr = listToAttrs (
        map (b: {
          name = b;
          value = map (
            n:
            let
              p = r.packages.${b}.${n};
            in
            {
              inherit n;
              runs = p.stubSystem;
              closureInfo = (ciOf p).stubSystem;
              imgbuild = map (d: d.stubSystem) p.env.nativeBuildInputs;
              imgbuildIsRustPackage = map (d: d.stubBuildRustPackage or false) p.env.nativeBuildInputs;
              target = p.targetSystem;
              drvName = p.name;
            }
          ) [ "pi4" "x86" ];
        }) (attrNames r.packages)
      );
      expected = listToAttrs (
        map (b: {
          name = b;
          value = [
            {
              n = "pi4";
              runs = b;
              closureInfo = b;
              imgbuild = [ b ];
              imgbuildIsRustPackage = [ true ];
              target = "aarch64-linux";
              drvName = "nixos-image-pi4-sd-aarch64";
            }
            {
              n = "x86";
              runs = b;
              closureInfo = b;
              imgbuild = [ b ];
              imgbuildIsRustPackage = [ true ];
              target = "x86_64-linux";
              drvName = "nixos-image-x86-raw-efi";
            }
          ];
        }) [ "aarch64-linux" "x86_64-linux" ]
      );
    };

    mkNodesImgbuildArgs = {
      expr = {
        pi4 = r.packages.x86_64-linux.pi4.imgbuildArgs;
        x86 = r.packages.x86_64-linux.x86.imgbuildArgs;
        nas = r.packages.aarch64-linux.nas.imgbuildArgs;
      };
      expected = {
        pi4 = [
          "sd-aarch64"
          "--closure"
          (tl "pi4")
          "--closure-info"
          (stubs.closureInfoPath "x86_64-linux" [ (tl "pi4") ])
          "-o"
          "${ph}/pi4.img.zst"
          "--json"
        ];
        x86 = [
          "raw-efi"
          "--closure"
          (tl "x86")
          "--closure-info"
          (stubs.closureInfoPath "x86_64-linux" [ (tl "x86") ])
          "-o"
          "${ph}/x86.img"
          "--json"
        ];
        nas = [
          "raw-efi"
          "--closure"
          (tl "nas")
          "--closure-info"
          (stubs.closureInfoPath "aarch64-linux" [ (tl "nas") ])
          "-o"
          "${ph}/nas.img.zst"
          "--size"
          "8GiB"
          "--compress"
          "zstd"
          "--json"
        ];
      };
    };

    mkImageClosureInfoRoots = {
      expr = (ciOf r.packages.x86_64-linux.pi4).rootPaths;
      expected = [ (tl "pi4") ];
    };

    # The derivation runs exactly the command line, then lists the image for Hydra.
    mkImageScript = {
      expr =
        let
          p = r.packages.x86_64-linux.pi4;
        in
        {
          runsCommand = hasInfix "\n${p.commandLine} \"\${threads[@]}\"\n" p.script;
          products = hasInfix ''echo "file sd-image $out/pi4.img.zst" >> "$out/nix-support/hydra-build-products"'' p.script;
          manifest = hasInfix ''echo "file json $out/pi4.img.zst.json"'' p.script;
          rawProduct = hasInfix "file raw-image $out/x86.img" r.packages.x86_64-linux.x86.script;
          noStoreRoot = !(elem "--store-root" p.imgbuildArgs);
        };
      expected = {
        runsCommand = true;
        products = true;
        manifest = true;
        rawProduct = true;
        noStoreRoot = true;
      };
    };

    mkNodesModules = {
      expr =
        let
          a = r.nixosConfigurations.pi4.stubArgs;
        in
        {
          count = length a.modules;
          builtins = [
            (elemAt a.modules 0)
            (elemAt a.modules 1)
          ];
          user = [
            (elemAt a.modules 3)
            (elemAt a.modules 4)
          ];
          specialArgs = a.specialArgs;
          noSystemArg = !(a ? system);
        };
      expected = {
        count = 5;
        builtins = [
          { imports = [ imgbuildModule ]; }
          { imports = [ gitopsModule ]; }
        ];
        user = [
          common
          ./data/host-pi4.nix
        ];
        specialArgs = {
          site = "home";
          imgbuildNode = {
            name = "pi4";
            system = "aarch64-linux";
            format = "sd-aarch64";
          };
        };
        noSystemArg = true;
      };
    };

    nodeModuleDefines = {
      expr =
        let
          e = stubs.evalModule {
            module = elemAt r.nixosConfigurations.pi4.stubArgs.modules 2;
          };
        in
        {
          inherit (e) defs file;
        };
      expected = {
        defs = {
          imgbuild.format = "sd-aarch64";
          networking.hostName = "pi4";
          nixpkgs.hostPlatform = "aarch64-linux";
        };
        file = "imgbuild.lib.mkNodes, node `pi4`";
      };
    };

    mkNodesDefaultsSystemFromFormat = {
      expr = (builtins.head (lib.checkNodes [
        {
          name = "a";
          format = "sd-aarch64";
        }
      ])).system;
      expected = "aarch64-linux";
    };

    mkNodesRejects = {
      expr =
        map
          (
            ns:
            throws
              (lib.mkNodes {
                nodes = ns;
                nixpkgs = stubs.nixpkgs;
              }).packages
          )
          [
            [
              {
                name = "a";
                format = "raw-efi";
              }
              {
                name = "a";
                format = "raw-efi";
              }
            ]
            [
              {
                name = "a";
                format = "iso";
              }
            ]
            [
              {
                name = "a";
                format = "raw-efi";
                system = "aarch64-linux";
              }
            ]
            [ { name = "a"; } ]
            [
              {
                name = "a";
                format = "raw-efi";
                module = [ ];
              }
            ]
            [
              {
                name = "my host";
                format = "raw-efi";
              }
            ]
            [
              {
                name = "ok";
                format = "raw-efi";
              }
            ]
          ];
      expected = [
        true
        true
        true
        true
        true
        true
        false
      ];
    };

    mkNodesBuildSystemsAndCi = {
      expr =
        let
          r2 = lib.mkNodes {
            inherit nodes;
            nixpkgs = stubs.nixpkgs;
            buildSystems = [ "x86_64-linux" ];
            image.seed = "fleet";
          };
        in
        {
          systems = attrNames r2.packages;
          seed = elem "fleet" r2.packages.x86_64-linux.pi4.imgbuildArgs;
          ci = r2.ciMatrix;
        };
      expected = {
        systems = [ "x86_64-linux" ];
        seed = true;
        ci.include = [
          {
            name = "x86";
            system = "x86_64-linux";
            runner = "ubuntu-latest";
          }
          {
            name = "pi4";
            system = "aarch64-linux";
            runner = "ubuntu-24.04-arm";
          }
          {
            name = "nas";
            system = "x86_64-linux";
            runner = "ubuntu-latest";
          }
        ];
      };
    };

    mkImageRejects = {
      expr =
        let
          img =
            args:
            lib.mkImage (
              {
                pkgs = stubs.pkgsFor "x86_64-linux";
              }
              // args
            );
        in
        map throws [
          # configured for raw-efi, image asked as sd-aarch64
          (img {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "a";
              system = "aarch64-linux";
              format = "raw-efi";
            };
            format = "sd-aarch64";
          })
          # raw-efi image of an aarch64 system
          (img {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "a";
              system = "aarch64-linux";
            };
            format = "raw-efi";
          })
          # no format anywhere
          (img {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "a";
              system = "x86_64-linux";
            };
          })
          # format from the configuration
          (img {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "a";
              system = "x86_64-linux";
              format = "raw-efi";
            };
          })
        ];
      expected = [
        true
        true
        true
        false
      ];
    };

    moduleRawEfi = {
      expr = {
        root = rawEfi.defs.fileSystems."/";
        boot = rawEfi.defs.fileSystems."/boot";
        loader = rawEfi.defs.boot.loader;
        growPartition = rawEfi.defs.boot.growPartition;
        modules = builtins.all (m: elem m rawEfi.defs.boot.initrd.availableKernelModules) [
          "nvme"
          "ahci"
          "uas"
          "xhci_pci"
          "usb_storage"
          "sd_mod"
          "mmc_block"
        ];
        noTags = !(rawEfi.defs ? system);
        # The stub evaluator's config does not see the module's own loader settings: no
        # loader is on, so only the release is recorded (bootspecRecordsBootLoader has them).
        bootspec = rawEfi.defs.boot.bootspec.extensions;
        units = units rawEfi;
        serialConsole = rawEfi.defs.boot.kernelParams;
      };
      expected = {
        serialConsole = [
          "console=ttyS0,115200n8"
          "console=tty0"
        ];
        root = {
          device = label (part "raw-efi" "root").label;
          fsType = "ext4";
          autoResize = true;
        };
        boot = {
          device = label (part "raw-efi" "esp").label;
          fsType = "vfat";
          options = [
            "fmask=0077"
            "dmask=0077"
          ];
        };
        loader = {
          grub.enable = false;
          systemd-boot = {
            enable = true;
            configurationLimit = 10;
          };
          efi = {
            efiSysMountPoint = (part "raw-efi" "esp").mount-point;
            canTouchEfiVariables = false;
          };
          timeout = (toml "raw-efi").bootloader.timeout;
        };
        growPartition = true;
        modules = true;
        noTags = true;
        bootspec."org.imgbuild.v1".release = "25.11";
        units = [ "imgbuild-register-nix-paths" ];
      };
    };

    # appliance.nix for imgbuild.format = "appliance": systemd's stage 1 with dm-verity, the
    # store at /usr (read-only, through /dev/mapper/usr) bound to /nix/store, the boot.json
    # record of AB-CONTRACT.md; nothing for another format.
    moduleAppliance = {
      expr = {
        initrd = appliance.defs.boot.initrd;
        usr = appliance.defs.fileSystems."/usr";
        store = appliance.defs.fileSystems."/nix/store";
        usrbinenv = appliance.defs.system.activationScripts.usrbinenv;
        record = appliance.defs.boot.bootspec.extensions;
        failing = failing appliance;
        rawEfi = (applianceWith { imgbuild.format = "raw-efi"; }).defs;
      };
      expected = {
        initrd = {
          systemd = {
            enable = true;
            dmVerity.enable = true;
          };
          availableKernelModules = [
            "dm_mod"
            "dm_verity"
            "squashfs"
          ];
        };
        usr = {
          device = "/dev/mapper/usr";
          fsType = (part "appliance" "store").filesystem;
          options = [ "ro" ];
        };
        store = {
          device = "/usr/nix/store";
          fsType = "none";
          options = [ "bind" ];
        };
        usrbinenv = "";
        record."org.imgbuild.v1".appliance = {
          imageId = "kiosk";
          imageVersion = "1.2";
          systemdInitrd = true;
          dmVerity = true;
        };
        failing = [ ];
        rawEfi = { };
      };
    };

    # The sysupdate transfers, with AB-CONTRACT.md's names and patterns: from an https URL
    # (url-file), a directory (regular-file), none without an update source.
    moduleApplianceTransfers =
      let
        url = "https://updates.example.com/kiosk/";
        from = type: path: pattern: {
          Type = type;
          Path = path;
          MatchPattern = pattern;
        };
        contract = type: path: {
          "10-uki" = {
            Transfer.ProtectVersion = "%A";
            Source = from type path "kiosk_@v.efi";
            Target = {
              Type = "regular-file";
              Path = "/EFI/Linux";
              PathRelativeTo = "boot";
              MatchPattern = [
                "kiosk_@v+@l-@d.efi"
                "kiosk_@v+@l.efi"
                "kiosk_@v.efi"
              ];
              Mode = "0444";
              TriesLeft = 3;
              TriesDone = 0;
              InstancesMax = 2;
            };
          };
          "20-usr-verity" = {
            Transfer.ProtectVersion = "%A";
            Source = from type path "kiosk_@v_@u.usr-verity.raw";
            Target = {
              Type = "partition";
              Path = "auto";
              MatchPartitionType = "usr-verity";
              MatchPattern = "kiosk_@v_verity";
              ReadOnly = 1;
            };
          };
          "22-usr" = {
            Transfer.ProtectVersion = "%A";
            Source = from type path "kiosk_@v_@u.usr.raw";
            Target = {
              Type = "partition";
              Path = "auto";
              MatchPartitionType = "usr";
              MatchPattern = "kiosk_@v";
              ReadOnly = 1;
            };
          };
        };
        unverified = (applianceWith {
          imgbuild.appliance = {
            updateSource = "http://10.0.2.2:8000";
            verifyUpdates = false;
          };
        }).defs.systemd.sysupdate.transfers;
        directory = applianceWith {
          imgbuild.appliance = {
            updateSource = "/run/updates";
            verifyUpdates = false;
          };
        };
      in
      {
        expr = {
          url = appliance.defs.systemd.sysupdate;
          directory = directory.defs.systemd.sysupdate.transfers;
          unverified = map (t: unverified.${t}.Transfer) (attrNames unverified);
          none = (applianceWith { }).defs.systemd or { };
        };
        expected = {
          url = {
            enable = true;
            transfers = contract "url-file" url;
          };
          # (Verify= is for downloads only.)
          directory = contract "regular-file" "/run/updates";
          unverified = map (_: {
            ProtectVersion = "%A";
            Verify = false;
          }) [ 1 2 3 ];
          none = { };
        };
      };

    # The assertions name the option to set: the image id and version (present, without `_`),
    # the UKI's name, the GPT name's length, stage 1 with dm-verity, the update source.
    moduleApplianceAssertions =
      let
        fails = settings: failing (applianceWith settings);
        mentions =
          settings: option:
          builtins.any (hasInfix option) (fails settings) && length (fails settings) == 1;
      in
      {
        expr = {
          noId = mentions { system.image.id = null; } "system.image.id";
          noVersion = mentions { system.image.version = null; } "system.image.version";
          underscoreVersion = mentions { system.image.version = "1_2"; } "system.image.version";
          underscoreId = mentions { system.image.id = "my_kiosk"; } "system.image.id";
          slashId = mentions { system.image.id = "a/b"; } "system.image.id";
          versionCharacters = fails {
            system.image.version = "1.2~rc1^git2-3";
            system.boot.loader.ukiFile = "kiosk_1.2~rc1^git2-3.efi";
          };
          plusVersion = mentions {
            system.image.version = "1.2+3";
            system.boot.loader.ukiFile = "kiosk_1.2+3.efi";
          } "system.image.version";
          tries = fails { system.boot.loader.ukiFile = "kiosk_1.2+3.efi"; };
          longNames = mentions {
            system.image.id = "a-very-long-appliance-name";
            system.image.version = "2026.12.06";
            system.boot.loader.ukiFile = "a-very-long-appliance-name_2026.12.06.efi";
          } "36 characters";
          noDmVerity = mentions { boot.initrd.systemd.dmVerity.enable = false; } "boot.initrd.systemd.dmVerity.enable";
          relativeSource = mentions { imgbuild.appliance.updateSource = "updates/"; } "imgbuild.appliance.updateSource";
        };
        expected = {
          noId = true;
          noVersion = true;
          underscoreVersion = true;
          underscoreId = true;
          slashId = true;
          versionCharacters = [ ];
          plusVersion = true;
          tries = [
            "imgbuild.format = \"appliance\": the UKI is named \"kiosk_1.2+3.efi\" (system.boot.loader.ukiFile), but the A/B updates need kiosk_1.2.efi: leave boot.uki.name and boot.uki.version at their defaults (system.image.id and system.image.version) and boot.uki.tries at null."
          ];
          longNames = true;
          noDmVerity = true;
          relativeSource = true;
        };
      };

    # The appliance's ESP, root, boot loader and console are raw-efi's (imgbuild.nix); with
    # appliance.nix's mounts, the module mounts every mount point of formats/appliance.toml,
    # by the labels it gives.
    moduleApplianceDisk =
      let
        disk = evalImg "x86_64-linux" { imgbuild.format = "appliance"; };
        mounts = disk.defs.fileSystems // appliance.defs.fileSystems;
        labelled = filter (p: p ? label) (toml "appliance").partition;
      in
      {
        expr = {
          inherit (disk.defs) fileSystems;
          loader = disk.defs.boot.loader;
          params = disk.defs.boot.kernelParams;
          tomlMountPoints = builtins.all (p: !(p ? mount-point) || mounts ? ${p.mount-point}) (toml "appliance").partition;
          labels = map (p: mounts.${p.mount-point}.device) labelled;
          record = disk.defs.boot.bootspec.extensions."org.imgbuild.v1".release;
        };
        expected = {
          inherit (rawEfi.defs) fileSystems;
          loader = rawEfi.defs.boot.loader;
          params = rawEfi.defs.boot.kernelParams;
          tomlMountPoints = true;
          labels = map (p: label p.label) labelled;
          record = "25.11";
        };
      };

    # lib.mkImage of an appliance: the image and, beside it under $out, the sysupdate directory
    # imgbuild writes, which the build requires and lists for Hydra; raw-efi has none.
    mkImageAppliance =
      let
        img = lib.mkImage {
          nixosConfiguration = stubs.nixosConfiguration {
            name = "kiosk";
            system = "x86_64-linux";
            format = "appliance";
          };
          pkgs = stubs.pkgsFor "x86_64-linux";
          espSize = "1GiB";
        };
        x86 = r.packages.x86_64-linux.x86;
      in
      {
        expr = {
          inherit (img) file sysupdateDir;
          args = [
            (builtins.head img.imgbuildArgs)
            (elemAt img.imgbuildArgs 6)
          ];
          espSize = elem "--esp-size" img.imgbuildArgs;
          product = hasInfix "echo \"file raw-image $out/kiosk.img\"" img.script;
          requiresDir = hasInfix "if [ ! -d \"$out/kiosk.img.sysupdate\" ]; then" img.script;
          listsDir = hasInfix "for artifact in \"$out/kiosk.img.sysupdate\"/*; do\n  echo \"file sysupdate $artifact\"" img.script;
          rawEfi = {
            inherit (x86) sysupdateDir;
            script = hasInfix "sysupdate" x86.script;
          };
          aarch64 = throws (lib.mkImage {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "kiosk";
              system = "aarch64-linux";
              format = "appliance";
            };
            pkgs = stubs.pkgsFor "x86_64-linux";
          }).file;
        };
        expected = {
          file = "kiosk.img";
          sysupdateDir = "kiosk.img.sysupdate";
          args = [
            "appliance"
            "${ph}/kiosk.img"
          ];
          espSize = true;
          product = true;
          requiresDir = true;
          listsDir = true;
          rawEfi = {
            sysupdateDir = null;
            script = false;
          };
          aarch64 = true;
        };
      };

    moduleMountPointsMatchFormats = {
      expr = {
        raw = attrNames rawEfi.defs.fileSystems;
        sd = attrNames sd.defs.fileSystems;
      };
      expected = {
        raw = builtins.sort builtins.lessThan (map (p: p.mount-point) (toml "raw-efi").partition);
        sd = builtins.sort builtins.lessThan (map (p: p.mount-point) (toml "sd-aarch64").partition);
      };
    };

    moduleSdAarch64 = {
      expr = {
        root = sd.defs.fileSystems."/";
        firmwareFs = sd.defs.fileSystems."/boot/firmware";
        loader = sd.defs.boot.loader;
        bootspec = sd.defs.boot.bootspec.extensions;
        units = units sd;
        expandCondition = sd.defs.systemd.services.imgbuild-expand-root.unitConfig;
        expandBeforeRegister = elem "imgbuild-register-nix-paths.service" sd.defs.systemd.services.imgbuild-expand-root.before;
        registerCondition = sd.defs.systemd.services.imgbuild-register-nix-paths.unitConfig;
        noTags = !(sd.defs ? system);
        allHardware = sd.defs.hardware.enableAllHardware;
        piModules = builtins.all (m: elem m sd.defs.boot.initrd.availableKernelModules) [
          "mmc_block"
          "xhci_pci"
          "usb_storage"
          "uas"
          "pcie_brcmstb"
          "reset_raspberrypi"
        ];
      };
      expected = {
        root = {
          device = label (part "sd-aarch64" "root").label;
          fsType = "ext4";
        };
        firmwareFs = {
          device = label (part "sd-aarch64" "firmware").label;
          fsType = "vfat";
          options = [
            "nofail"
            "noauto"
          ];
        };
        loader = {
          grub.enable = false;
          generic-extlinux-compatible.enable = true;
        };
        bootspec."org.imgbuild.v1" = {
          firmware = fw.outPath;
          release = "25.11";
        };
        units = [
          "imgbuild-expand-root"
          "imgbuild-register-nix-paths"
        ];
        expandCondition = {
          DefaultDependencies = false;
          ConditionPathExists = "/nix-path-registration";
        };
        expandBeforeRegister = true;
        registerCondition = {
          DefaultDependencies = false;
          ConditionPathExists = "/nix-path-registration";
        };
        noTags = true;
        allHardware = true;
        piModules = true;
      };
    };

    # The first-boot registration never makes a generation 2 of the running system.
    registerScript = {
      expr =
        let
          s = sd.defs.systemd.services.imgbuild-register-nix-paths.script;
        in
        {
          loadDb = hasInfix "nix-store --load-db < /nix-path-registration\n" s;
          guardedSet = hasInfix ''
            if [ "$(readlink -f /nix/var/nix/profiles/system || true)" != "$(readlink -f /run/current-system)" ]; then
              nix-env -p /nix/var/nix/profiles/system --set /run/current-system
            fi
          '' s;
          removes = hasInfix "rm -f /nix-path-registration" s;
        };
      expected = {
        loadDb = true;
        guardedSet = true;
        removes = true;
      };
    };

    moduleGrowRootOff = {
      expr = {
        sdUnits = units sdNoGrow;
        rawGrow = rawNoGrow.defs.boot.growPartition;
        rawResize = rawNoGrow.defs.fileSystems."/".autoResize;
      };
      expected = {
        sdUnits = [ "imgbuild-register-nix-paths" ];
        rawGrow = false;
        rawResize = false;
      };
    };

    # What nixosModules.imgbuild records in boot.json for imgbuild (CONTRACT.md): the loader's
    # settings as the configuration has them; bootCounting only where the release declares it.
    bootspecRecordsBootLoader =
      let
        sdBoot = extra: {
          imgbuild.format = "raw-efi";
          system.nixos.release = "26.11";
          boot.loader = {
            timeout = null;
            systemd-boot = {
              enable = true;
              editor = false;
              consoleMode = "max";
              rebootForBitlocker = true;
              installDeviceTree = false;
            }
            // extra;
          };
        };
        record =
          settings: options:
          (stubs.evalModule {
            module = imgbuildModule;
            inherit settings options;
          }).defs.boot.bootspec.extensions."org.imgbuild.v1";
        noCounting = {
          system.autoUpgrade.upgrade = { };
          boot.loader.systemd-boot = { };
        };
        withCounting = noCounting // {
          boot.loader.systemd-boot.bootCounting = { };
        };
      in
      {
        expr = {
          v2611 = record (sdBoot {
            bootCounting = {
              enable = true;
              tries = 2;
            };
          }) withCounting;
          v2511 = record (sdBoot { }) noCounting;
          # (firmware: see moduleSdAarch64)
          extlinux = removeAttrs (record {
            imgbuild.format = "sd-aarch64";
            boot.loader.timeout = 3;
            boot.loader.generic-extlinux-compatible.enable = true;
            hardware.deviceTree.name = "broadcom/bcm2711-rpi-4-b.dtb";
          } noCounting) [ "firmware" ];
          noFormat = (stubs.evalModule {
            module = imgbuildModule;
            settings = removeAttrs (sdBoot { }) [ "imgbuild" ];
          }).defs;
        };
        expected =
          let
            sd = {
              type = "systemd-boot";
              timeout = null;
              editor = false;
              consoleMode = "max";
              rebootForBitlocker = true;
              installDeviceTree = false;
              distroName = "NixOS";
            };
          in
          {
            v2611 = {
              release = "26.11";
              bootloader = sd // {
                bootCounting = {
                  enable = true;
                  tries = 2;
                };
              };
            };
            v2511 = {
              release = "26.11";
              bootloader = sd;
            };
            extlinux = {
              release = "25.11";
              bootloader = {
                type = "extlinux";
                timeout = 3;
                useGenerationDeviceTree = true;
                deviceTreeName = "broadcom/bcm2711-rpi-4-b.dtb";
                distroName = "NixOS";
              };
            };
            # With no format the module defines nothing, records included.
            noFormat = { };
          };
      };

    # The image output keeps no references (the build still gets the closure as input).
    mkImageDiscardsReferences = {
      expr = map (
        n:
        let
          p = r.packages.x86_64-linux.${n};
        in
        {
          structured = p.env.__structuredAttrs;
          discard = p.env.unsafeDiscardReferences;
          closureIsInput = hasInfix (toString (ciOf p)) p.commandLine;
        }
      ) [ "x86" "pi4" ];
      expected = map (_: {
        structured = true;
        discard.out = true;
        closureIsInput = true;
      }) [ "x86" "pi4" ];
    };

    # filePath (image.filePath of nixpkgs' image modules) places the image and its manifest.
    mkImageFilePath =
      let
        img =
          filePath:
          lib.mkImage {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "pi";
              system = "aarch64-linux";
              format = "sd-aarch64";
            };
            pkgs = stubs.pkgsFor "x86_64-linux";
            inherit filePath;
          };
        p = img "sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst";
        flat = img "web.raw";
      in
      {
        expr = {
          inherit (p) file filePath;
          out = elemAt p.imgbuildArgs 6;
          mkdir = hasInfix "mkdir -p \"$out/nix-support\" \"$out/sd-image\"\n" p.script;
          flatMkdir = hasInfix "mkdir -p \"$out/nix-support\"\n" flat.script;
          product = hasInfix "file sd-image $out/sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst\"" p.script;
          manifest = hasInfix "file json $out/sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst.json\"" p.script;
          # a NixOS label may hold `:`, `+` comes in versions
          accepts = (img "tag:x/nixos-image-1.0+2_b.img").file;
          rejects = map (f: throws (img f)) [
            "../x.img"
            "/abs.img"
            "a/./b.img"
            "a/../b.img"
            "nix-support/x"
            "a b.img"
            "x\".img"
            ""
          ];
        };
        expected = {
          file = "sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst";
          filePath = "sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst";
          out = "${ph}/sd-image/nixos-image-sd-card-26.11-aarch64-linux.img.zst";
          mkdir = true;
          flatMkdir = true;
          product = true;
          manifest = true;
          accepts = "tag:x/nixos-image-1.0+2_b.img";
          rejects = map (_: true) (builtins.genList (x: x) 8);
        };
      };

    # The build-image variants: nixpkgs' names, each imgbuild format once but hetzner and
    # cloudstack (nixpkgs has no variant for them) and netboot (nixpkgs has no build-image
    # variant of it: nixpkgs' netboot is three files, its kexec variant is the tarball).
    imageVariants = {
      expr = {
        names = attrNames lib.imageVariants;
        formats = builtins.sort builtins.lessThan (map (v: v.format) (builtins.attrValues lib.imageVariants));
        # Container formats keep the extension imgbuild gives them.
        containers = filter (
          n:
          let
            v = lib.imageVariants.${n};
          in
          lib.formats.${v.format}.base != v.format && lib.formats.${v.format}.extension != v.extension
        ) (attrNames lib.imageVariants);
      };
      expected = {
        names = [
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
        # Every format but incus (nixpkgs has no variant of Incus' unified image), hetzner,
        # cloudstack, netboot and appliance (nixpkgs' image.repart.verityStore is a module, not
        # a build-image variant).
        formats = filter (
          f: !(elem f [ "incus" "hetzner" "cloudstack" "netboot" "appliance" ])
        ) (attrNames lib.formats);
        containers = [ ];
      };
    };

    # nixosModules.images replaces nixpkgs' modules only for the variants of this platform.
    imagesModuleVariants =
      let
        ev =
          system:
          stubs.evalModule {
            module = ../modules/images.nix;
            inherit system;
            base = { };
          };
        names = e: attrNames e.defs.image.modules;
      in
      {
        expr = {
          x86 = names (ev "x86_64-linux");
          aarch64 = names (ev "aarch64-linux");
          imports = (ev "x86_64-linux").imports;
          package = (ev "x86_64-linux").config.imgbuild.package.pname;
        };
        expected = {
          x86 = [
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
            "vagrant-virtualbox"
            "virtualbox"
            "vmware"
          ];
          # The live media and the container tarballs are for both systems.
          aarch64 = [
            "iso"
            "iso-installer"
            "kexec"
            "lxc"
            "lxc-metadata"
            "proxmox-lxc"
            "sd-card"
          ];
          imports = [ imgbuildModule ];
          package = "imgbuild";
        };
      };

    # The live media are for x86_64 and aarch64: mkImage and mkNodes take either system (the
    # node must say which), and refuse another.
    liveFormatsTwoSystems =
      let
        img =
          system: format:
          lib.mkImage {
            nixosConfiguration = stubs.nixosConfiguration {
              name = "live";
              inherit system format;
            };
            pkgs = stubs.pkgsFor "x86_64-linux";
          };
        isoArm = img "aarch64-linux" "iso";
      in
      {
        expr = {
          file = isoArm.file;
          target = isoArm.targetSystem;
          args = builtins.head isoArm.imgbuildArgs;
          product = hasInfix "echo \"file iso $out/live.iso\"" isoArm.script;
          kexec = (img "x86_64-linux" "kexec").file;
          installer = (img "x86_64-linux" "iso-installer").format;
          riscv = throws (img "riscv64-linux" "netboot").file;
          nodes = map (n: n.system) (lib.checkNodes [
            {
              name = "a";
              format = "iso";
              system = "aarch64-linux";
            }
            {
              name = "b";
              format = "kexec";
              system = "x86_64-linux";
            }
          ]);
          nodeWithoutSystem = throws (lib.checkNodes [
            {
              name = "a";
              format = "netboot";
            }
          ]);
          nodeOtherSystem = throws (lib.checkNodes [
            {
              name = "a";
              format = "iso";
              system = "riscv64-linux";
            }
          ]);
        };
        expected = {
          file = "live.iso";
          target = "aarch64-linux";
          args = "iso";
          product = true;
          kexec = "live.kexec.tar.gz";
          installer = "iso-installer";
          riscv = true;
          nodes = [
            "aarch64-linux"
            "x86_64-linux"
          ];
          nodeWithoutSystem = true;
          nodeOtherSystem = true;
        };
      };

    moduleWithoutFormatDefinesNothing = {
      expr = none.defs;
      expected = { };
    };

    rpiFirmwareDir = {
      expr = {
        name = fw.name;
        runsOn = fw.stubSystem;
        uboot = hasInfix "cp ${sd.pkgs.ubootRaspberryPiAarch64}/u-boot.bin \"$out/u-boot.bin\"" fw.script;
        armstub = hasInfix "cp ${sd.pkgs.raspberrypi-armstubs}/armstub8-gic.bin \"$out/armstub8-gic.bin\"" fw.script;
        blobs = hasInfix "cp bootcode.bin fixup*.dat start*.elf \"$out/\"" fw.script;
        pi4Dtb = hasInfix "bcm2711-rpi-4-b" fw.script;
        configTxt = hasInfix "cp \"$configTxtPath\" \"$out/config.txt\"" fw.script;
        noSymlinks = !(hasInfix "ln " fw.script);
        configTxtIsImgbuilds = fw.env.configTxt == rustConfigTxt;
        configTxtHead = builtins.substring 0 18 fw.env.configTxt;
      };
      expected = {
        name = "imgbuild-rpi-firmware";
        runsOn = "aarch64-linux";
        uboot = true;
        armstub = true;
        blobs = true;
        pi4Dtb = true;
        configTxt = true;
        noSymlinks = true;
        configTxtIsImgbuilds = true;
        configTxtHead = "kernel=u-boot.bin\n";
      };
    };

    rpiFirmwareWithoutMergedUboot = {
      expr = {
        pi3 = hasInfix "cp ${sdSplit.pkgs.ubootRaspberryPi3_64bit}/u-boot.bin \"$out/u-boot-rpi3.bin\"" fwSplit.script;
        pi4 = hasInfix "cp ${sdSplit.pkgs.ubootRaspberryPi4_64bit}/u-boot.bin \"$out/u-boot-rpi4.bin\"" fwSplit.script;
        noMerged = !(hasInfix "\"$out/u-boot.bin\"" fwSplit.script);
        pi3Section = hasInfix "[pi3]\nkernel=u-boot-rpi3.bin\n" fwSplit.env.configTxt;
        pi02Section = hasInfix "[pi02]\nkernel=u-boot-rpi3.bin\n" fwSplit.env.configTxt;
        pi4Section = hasInfix "[pi4]\nkernel=u-boot-rpi4.bin\n" fwSplit.env.configTxt;
      };
      expected = {
        pi3 = true;
        pi4 = true;
        noMerged = true;
        pi3Section = true;
        pi02Section = true;
        pi4Section = true;
      };
    };

    gitopsAutoUpgrade = {
      expr = {
        inherit (gitopsOn.defs.system) autoUpgrade;
        features = gitopsOn.defs.nix.settings.experimental-features;
        extraOptions = gitopsOn.defs.nix.extraOptions;
      };
      expected = {
        autoUpgrade = {
          enable = true;
          flake = "github:me/machines#pi4";
          dates = "hourly";
          randomizedDelaySec = "10min";
          persistent = true;
          operation = "switch";
          allowReboot = false;
          rebootWindow = null;
          flags = [
            "--option"
            "tarball-ttl"
            "0"
          ];
          upgrade = false;
        };
        features = [
          "nix-command"
          "flakes"
        ];
        extraOptions = "!include /etc/nix/access-tokens.conf\n";
      };
    };

    gitopsVariants = {
      expr = {
        explicitAttr =
          (gitops {
            imgbuild.gitops = {
              enable = true;
              flake = "git+ssh://git@example.com/m#other";
            };
          }).defs.system.autoUpgrade.flake;
        noTokens =
          !((gitops {
            imgbuild.gitops = {
              enable = true;
              flake = "github:me/m";
            };
          }).defs.nix ? extraOptions);
        off = (gitops { }).defs;
      };
      expected = {
        explicitAttr = "git+ssh://git@example.com/m#other";
        noTokens = true;
        off = { };
      };
    };

    package = {
      expr =
        let
          p = (stubs.pkgsFor "x86_64-linux").callPackage ../package.nix { };
        in
        {
          inherit (p) pname version cargoBuildFlags doCheck;
          lock = p.cargoLock.lockFile;
          srcRoot = p.src.root;
          mainProgram = p.meta.mainProgram;
          completions = hasInfix "installShellCompletion --cmd imgbuild" p.postInstall;
          manPage = hasInfix "$out/bin/imgbuild man > imgbuild.1" p.postInstall;
          # Cargo's [patch.crates-io] reads vendor/: the source must hold it.
          vendored = elem (root + "/vendor") p.src.fileset.unions;
        };
      expected = {
        pname = "imgbuild";
        version = (builtins.fromTOML (readFile (root + "/Cargo.toml"))).workspace.package.version;
        cargoBuildFlags = [
          "-p"
          "imgbuild"
        ];
        doCheck = false;
        lock = root + "/Cargo.lock";
        srcRoot = root;
        mainProgram = "imgbuild";
        completions = true;
        manPage = true;
        vendored = true;
      };
    };

    flakeOutputs = {
      expr = {
        packages = map (s: attrNames flakeOut.packages.${s}) (attrNames flakeOut.packages);
        systems = attrNames flakeOut.packages;
        pname = flakeOut.packages.aarch64-linux.default.pname;
        app = flakeOut.apps.x86_64-linux.default;
        modules = attrNames flakeOut.nixosModules;
        templateHasFlake = (readDir flakeOut.templates.default.path)."flake.nix";
        lib = builtins.isFunction flakeOut.lib.mkNodes && builtins.isFunction flakeOut.lib.mkImage;
      };
      expected = {
        packages = [
          [
            "default"
            "imgbuild"
          ]
          [
            "default"
            "imgbuild"
          ]
        ];
        systems = [
          "aarch64-linux"
          "x86_64-linux"
        ];
        pname = "imgbuild";
        app = {
          type = "app";
          program = "${flakeOut.packages.x86_64-linux.imgbuild}/bin/imgbuild";
        };
        modules = [
          "default"
          "gitops"
          "images"
          "imgbuild"
        ];
        templateHasFlake = "regular";
        lib = true;
      };
    };

    # The flake's nixosModules.images: modules/images.nix, with the flake's own imgbuild for
    # the platform that builds the image as the default imgbuild.package.
    flakeImagesModule = {
      expr = map (
        system:
        let
          m = flakeOut.nixosModules.images {
            inherit (stubs) lib;
            pkgs = stubs.pkgsFor system;
          };
        in
        {
          inherit (m) imports;
          package = m.imgbuild.package.content == flakeOut.packages.${system}.imgbuild;
          priority = m.imgbuild.package.priority;
        }
      ) [ "x86_64-linux" "aarch64-linux" ];
      expected = map (_: {
        imports = [ ../modules/images.nix ];
        package = true;
        priority = 1000;
      }) [ "x86_64-linux" "aarch64-linux" ];
    };

    # Images from the flake's lib use the flake's own imgbuild package for the build system.
    flakeLibUsesFlakePackage = {
      expr =
        let
          r3 = flakeOut.lib.mkNodes {
            nixpkgs = stubs.nixpkgs;
            nodes = [
              {
                name = "pi";
                format = "sd-aarch64";
              }
            ];
            buildSystems = [
              "x86_64-linux"
              "aarch64-linux"
            ];
          };
        in
        map (b: builtins.head r3.packages.${b}.pi.env.nativeBuildInputs == flakeOut.packages.${b}.imgbuild) [
          "x86_64-linux"
          "aarch64-linux"
        ];
      expected = [
        true
        true
      ];
    };

    template = {
      expr = {
        configurations = attrNames templateOut.nixosConfigurations;
        packages = map (s: attrNames templateOut.packages.${s}) (attrNames templateOut.packages);
        ci = templateOut.ciMatrix;
        pi4Modules = builtins.tail (builtins.tail (builtins.tail templateOut.nixosConfigurations.pi4.stubArgs.modules));
        pi4Args = templateOut.packages.aarch64-linux.pi4.imgbuildArgs;
        common =
          let
            c = (stubs.evalModule { module = root + "/templates/default/hosts/common.nix"; }).defs;
          in
          {
            gitops = c.imgbuild.gitops.enable;
            stateVersion = c.system.stateVersion;
          };
        hostsEvaluate = map (h: builtins.isAttrs (stubs.evalModule { module = root + "/templates/default/hosts/${h}.nix"; }).defs) [
          "pi4"
          "x86"
        ];
      };
      expected = {
        configurations = [
          "pi4"
          "x86"
        ];
        packages = [
          [
            "pi4"
            "x86"
          ]
          [
            "pi4"
            "x86"
          ]
        ];
        ci.include = [
          {
            name = "pi4";
            system = "aarch64-linux";
            runner = "ubuntu-24.04-arm";
          }
          {
            name = "x86";
            system = "x86_64-linux";
            runner = "ubuntu-latest";
          }
        ];
        pi4Modules = [
          (root + "/templates/default/hosts/common.nix")
          (root + "/templates/default/hosts/pi4.nix")
        ];
        pi4Args = [
          "sd-aarch64"
          "--closure"
          templateOut.nixosConfigurations.pi4.config.system.build.toplevel
          "--closure-info"
          (stubs.closureInfoPath "aarch64-linux" [ templateOut.nixosConfigurations.pi4.config.system.build.toplevel ])
          "-o"
          "${ph}/pi4.img.zst"
          "--json"
        ];
        common = {
          gitops = true;
          stateVersion = "25.11";
        };
        hostsEvaluate = [
          true
          true
        ];
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
  ) (attrNames tests);
  # For the JSON report: a Nix path in toJSON would be hashed (read in full) as a store path,
  # e.g. the whole repository for `root`; functions have no JSON form.
  plain =
    v:
    if builtins.isPath v then
      toString v
    else if builtins.isFunction v then
      "<function>"
    else if builtins.isList v then
      map plain v
    else if builtins.isAttrs v then
      builtins.mapAttrs (_: plain) v
    else
      v;
  failures = map (x: {
    inherit (x) name;
    expected = plain x.expected;
    got = plain x.got;
  }) (filter (x: !x.ok) results);
in
{
  passed = length results - length failures;
  failed = length failures;
  inherit failures;
  # The command lines mkImage produces for the node list above ($out = the placeholder).
  commandLines = {
    placeholder = ph;
    pi4-on-x86_64 = r.packages.x86_64-linux.pi4.commandLine;
    x86-on-x86_64 = r.packages.x86_64-linux.x86.commandLine;
  };
}
