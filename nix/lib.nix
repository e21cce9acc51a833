# imgbuild's flake library: the pure wiring, written with `builtins` only.
#
# What gets built is decided here by plain functions: the format table, the checks and
# grouping of a node list, the imgbuild command line, and the image derivation. nixpkgs comes
# in only as arguments (`nixpkgs.lib.nixosSystem`, `nixpkgs.legacyPackages.<system>`,
# `pkgs.closureInfo`, `pkgs.runCommand`, `pkgs.callPackage`), so nix/tests/ evaluates all of
# it against small stubs, without nixpkgs.
#
# The flake (../flake.nix) instantiates this file as `lib`:
#   lib.mkNodes     { nodes; nixpkgs; ... } -> { nixosConfigurations; packages; ciMatrix; }
#   lib.mkImage     { nixosConfiguration; format?; pkgs?; ... } -> image derivation
#   lib.imgbuildArgs { format; toplevel; closureInfo; out; ... } -> argv after `imgbuild`
#   lib.commandLine args -> "imgbuild 'raw-efi' '--closure' ..." (shell-quoted)
#   lib.formats, lib.imageFileName, lib.nodeModule, lib.checkNodes
#   lib.imageVariants: nixpkgs' `nixos-rebuild build-image` variant names of the formats
{
  # A nixpkgs flake (anything with `legacyPackages.<system>`): the package set `mkImage` uses
  # when it is given neither `pkgs` nor a nixpkgs through `mkNodes`.
  nixpkgs ? null,
  # The NixOS modules every `mkNodes` node imports.
  modules ? {
    imgbuild = {
      imports = [ ./modules/imgbuild.nix ];
    };
    gitops = {
      imports = [ ./modules/gitops.nix ];
    };
  },
  # The imgbuild package that runs on a given (build platform) package set.
  imgbuildFor ? pkgs: pkgs.callPackage ./package.nix { },
}:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    foldl'
    isAttrs
    isList
    isString
    length
    listToAttrs
    map
    match
    replaceStrings
    ;

  # The built-in formats as far as Nix needs to know them. Mirrors formats/*.toml (`system`,
  # `extension`, `compress`, `base`); nix/tests/eval.nix checks that they agree. `system` is
  # one system, or the list of systems the format makes images for (the toplevel's system
  # picks). `base` is the format whose disk a container format holds (the NixOS configuration
  # is that format's), or whose medium a format shares (iso-installer: the iso volume with the
  # installer's system). `product` is the Hydra build-product type nixpkgs uses for the same
  # kind of image.
  formats =
    let
      efi = extension: product: {
        base = "raw-efi";
        system = "x86_64-linux";
        inherit extension product;
        compress = "none";
      };
      # Live media: one layout for both systems; the NixOS module makes the difference.
      live = base: extension: product: {
        inherit base extension product;
        system = [
          "x86_64-linux"
          "aarch64-linux"
        ];
        compress = "none";
      };
      # Container tarballs (no disk), for either system: nixpkgs' Hydra product for
      # make-system-tarball's output is `system-tarball`.
      tarball = base: live base "tar.xz" "system-tarball";
    in
    {
      raw-efi = {
        base = "raw-efi";
        system = "x86_64-linux";
        extension = "img";
        compress = "none";
        product = "raw-image";
      };
      sd-aarch64 = {
        base = "sd-aarch64";
        system = "aarch64-linux";
        extension = "img";
        compress = "zstd";
        product = "sd-image";
      };
      qemu-efi = efi "qcow2" "qcow2-image";
      amazon = efi "vhd" "amazon-image";
      azure = efi "vhd" "azure-image";
      gce = efi "raw.tar.gz" "gce-image";
      hyperv = efi "vhdx" "hyperv-image";
      vmware = efi "vmdk" "vmware-image";
      virtualbox = efi "ova" "virtualbox-ova";
      proxmox = efi "vma.zst" "vma";
      openstack = efi "qcow2" "qcow2-image";
      kubevirt = efi "qcow2" "qcow2-image";
      oci = efi "qcow2" "qcow2-image";
      vagrant-virtualbox = efi "box" "vagrant-box";
      # PC BIOS, GRUB: the MBR disk, as a file (raw, Hetzner Cloud) or a gzip'd qcow2
      # (DigitalOcean's custom images); the GPT hybrid (BIOS boot partition + ESP) in qcow2.
      raw = {
        base = "raw";
        system = "x86_64-linux";
        extension = "img";
        compress = "none";
        product = "raw-image";
      };
      hetzner = {
        base = "raw";
        system = "x86_64-linux";
        extension = "img";
        compress = "none";
        product = "raw-image";
      };
      digitalocean = {
        base = "raw";
        system = "x86_64-linux";
        extension = "qcow2.gz";
        compress = "none";
        product = "digital-ocean-image";
      };
      qemu = {
        base = "qemu";
        system = "x86_64-linux";
        extension = "qcow2";
        compress = "none";
        product = "qcow2-image";
      };
      # The raw disk as qcow2 for CloudStack (nixpkgs' cloudstack-image.nix, no build-image
      # variant); Linode's ext4 file system without a table, gzip'd (linode-image.nix).
      cloudstack = {
        base = "raw";
        system = "x86_64-linux";
        extension = "qcow2";
        compress = "none";
        product = "qcow2-image";
      };
      linode = {
        base = "linode";
        system = "x86_64-linux";
        extension = "img.gz";
        compress = "none";
        product = "raw-image";
      };
      # The UEFI disk with a dm-verity protected store and A/B slots; imgbuild also writes the
      # systemd-sysupdate files of this version beside it (`<file>.sysupdate/`).
      appliance = {
        base = "appliance";
        system = "x86_64-linux";
        extension = "img";
        compress = "none";
        product = "raw-image";
      };
      iso = live "iso" "iso" "iso";
      # The iso medium (formats/iso-installer.toml: `base = "iso"`) with another system.
      iso-installer = live "iso" "iso" "iso";
      # A directory: the kernel, initrd, netboot.ipxe.
      netboot = live "netboot" "netboot" "netboot";
      # The tree of nixpkgs' netboot.nix `kexecTree` under kexec/, gzip'd for nixos-anywhere.
      kexec = live "kexec" "kexec.tar.gz" "kexec-tarball";
      # Container tarballs (no disk), for either system.
      lxc = tarball "lxc";
      lxc-metadata = tarball "lxc-metadata";
      proxmox-lxc = tarball "proxmox-lxc";
      incus = tarball "incus";
    };

  # The formats whose disk has an EFI system partition (`imgbuild --esp-size`).
  hasEsp = f: elem f.base [ "raw-efi" "appliance" ];
  # The formats after whose image imgbuild writes a directory of systemd-sysupdate artifacts,
  # `<image>.sysupdate/` (AB-CONTRACT.md).
  hasSysupdate = f: f.base == "appliance";

  # The systems a format makes images for, as a list.
  systemsOf = f: if isList f.system then f.system else [ f.system ];
  systemsText = f: concatStringsSep " or " (systemsOf f);

  # The formats under the names `nixos-rebuild build-image --image-variant` knows them by
  # (nixpkgs' nixos/modules/image/images.nix), with the file name nixpkgs' own module for that
  # variant gives its image: `image.extension`, and for sd-card the `sd-image/` directory of
  # `image.filePath`. nixosModules.images (modules/images.nix) makes each one an imgbuild build.
  imageVariants = {
    raw-efi = {
      format = "raw-efi";
      extension = "raw";
    };
    qemu-efi = {
      format = "qemu-efi";
      extension = "qcow2";
    };
    amazon = {
      format = "amazon";
      extension = "vhd";
    };
    azure = {
      format = "azure";
      extension = "vhd";
    };
    google-compute = {
      format = "gce";
      extension = "raw.tar.gz";
    };
    hyperv = {
      format = "hyperv";
      extension = "vhdx";
    };
    vmware = {
      format = "vmware";
      extension = "vmdk";
    };
    virtualbox = {
      format = "virtualbox";
      extension = "ova";
    };
    proxmox = {
      format = "proxmox";
      extension = "vma.zst";
    };
    openstack = {
      format = "openstack";
      extension = "qcow2";
    };
    kubevirt = {
      format = "kubevirt";
      extension = "qcow2";
    };
    oci = {
      format = "oci";
      extension = "qcow2";
    };
    vagrant-virtualbox = {
      format = "vagrant-virtualbox";
      extension = "box";
    };
    sd-card = {
      format = "sd-aarch64";
      extension = "img.zst";
      directory = "sd-image";
    };
    # nixpkgs' disk-image.nix with `image.efiSupport = false` (`image.extension` is the
    # image.format, `raw` or `qcow2`), and digital-ocean-image.nix (a gzip'd qcow2).
    raw = {
      format = "raw";
      extension = "raw";
    };
    qemu = {
      format = "qemu";
      extension = "qcow2";
    };
    digital-ocean = {
      format = "digitalocean";
      extension = "qcow2.gz";
    };
    # linode-image.nix: `image.extension = "img.gz"`.
    linode = {
      format = "linode";
      extension = "img.gz";
    };
    # nixpkgs' iso-image.nix: `iso/<baseName>.iso`, baseName `nixos[-<edition>]-<label>-<system>`.
    iso = {
      format = "iso";
      extension = "iso";
      directory = "iso";
      isoBaseName = true;
    };
    iso-installer = {
      format = "iso-installer";
      extension = "iso";
      directory = "iso";
      isoBaseName = true;
      # nixpkgs' variant is installation-cd-base.nix: iso-image.nix (imgbuild.format here) and
      # these profiles.
      profiles = [
        "profiles/all-hardware.nix"
        "profiles/base.nix"
        "profiles/installation-device.nix"
      ];
    };
    # nixpkgs' netboot.nix: `tarball/<baseName>.tar.xz` (ours: gzip'd, for nixos-anywhere).
    kexec = {
      format = "kexec";
      extension = "kexec.tar.gz";
      directory = "tarball";
    };
    # lxc-container.nix, lxc-image-metadata.nix, proxmox-lxc.nix: `tarball/<fileName>`.
    lxc = {
      format = "lxc";
      extension = "tar.xz";
      directory = "tarball";
    };
    lxc-metadata = {
      format = "lxc-metadata";
      extension = "tar.xz";
      directory = "tarball";
    };
    proxmox-lxc = {
      format = "proxmox-lxc";
      extension = "tar.xz";
      directory = "tarball";
    };
  };

  # nixpkgs profiles (paths under modulesPath) a format's system imports.
  profilesOf =
    format:
    foldl' (acc: v: if v.format == format then acc ++ (v.profiles or [ ]) else acc) [ ] (
      map (n: imageVariants.${n}) (attrNames imageVariants)
    );

  formatInfo =
    format:
    if isString format && formats ? ${format} then
      formats.${format}
    else
      throw "imgbuild: unknown image format `${toString format}` (known: ${concatStringsSep ", " (attrNames formats)})";

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  optional = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  # `[ flag value ]`, or nothing when the value is null.
  opt = flag: value: if value == null then [ ] else [ flag (toString value) ];

  # Image and node names become file names and flake attribute names.
  validName = name: isString name && match "[A-Za-z0-9][A-Za-z0-9_.-]*" name != null;

  shellQuote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # A path relative to $out that the builder script may name unquoted inside double quotes:
  # components of letters, digits, `_`, `.`, `+`, `-`, `:` (NixOS labels may have it), none
  # of them `.` or `..`, and not in nix-support/ (which the script writes).
  validFilePath =
    p:
    isString p
    && match "[A-Za-z0-9_.+:-]+(/[A-Za-z0-9_.+:-]+)*" p != null
    && match "(.*/)?\\.\\.?(/.*)?" p == null
    && match "nix-support(/.*)?" p == null;

  # The file mkImage writes under $out: `<name>.img`, or `<name>.img.zst` when compressed.
  imageFileName =
    {
      name,
      format,
      compress ? null,
    }:
    let
      f = formatInfo format;
      c = if compress == null then f.compress else compress;
    in
    "${name}.${f.extension}${if c == "zstd" then ".zst" else ""}";

  # The arguments after `imgbuild`, in a fixed order: the format, the three inputs, the output,
  # then options in `imgbuild <format> --help` order, then `--json`, then `extraArgs`.
  # Paths may be derivations or strings (Nix store paths; in tests, host paths).
  imgbuildArgs =
    {
      format,
      toplevel,
      closureInfo,
      out,
      storeRoot ? null,
      firmware ? null,
      size ? null,
      free ? null,
      espSize ? null,
      seed ? null,
      diskId ? null,
      compress ? null,
      level ? null,
      keepRaw ? false,
      nixPathRegistration ? null,
      json ? true,
      extraArgs ? [ ],
    }:
    let
      f = formatInfo format;
    in
    if espSize != null && !(hasEsp f) then
      throw "imgbuild: espSize: format `${format}` has no EFI system partition"
    else if compress != null && !(elem compress [ "none" "zstd" ]) then
      throw "imgbuild: compress must be \"none\" or \"zstd\", not `${toString compress}`"
    else if compress == "zstd" && f.base != format then
      throw "imgbuild: compress: format `${format}` writes a container, which is not compressed again"
    else if !(isList extraArgs) then
      throw "imgbuild: extraArgs must be a list of strings"
    else
      assert f != null;
      [
        format
        "--closure"
        (toString toplevel)
        "--closure-info"
        (toString closureInfo)
        "-o"
        (toString out)
      ]
      ++ opt "--store-root" storeRoot
      ++ opt "--firmware" firmware
      ++ opt "--size" size
      ++ opt "--free" free
      ++ opt "--esp-size" espSize
      ++ opt "--seed" seed
      ++ opt "--disk-id" diskId
      ++ opt "--compress" compress
      ++ opt "--level" level
      ++ optional keepRaw [ "--keep-raw" ]
      ++ opt "--nix-path-registration" (
        if nixPathRegistration == null then
          null
        else if nixPathRegistration then
          "true"
        else
          "false"
      )
      ++ optional json [ "--json" ]
      ++ map toString extraArgs;

  commandLine = args: concatStringsSep " " ([ "imgbuild" ] ++ map shellQuote args);

  defaultPkgs =
    buildSystem:
    if nixpkgs == null then
      throw "imgbuild.mkImage: pass `pkgs` (the package set of the machine that builds the image)"
    else
      nixpkgs.legacyPackages.${buildSystem};

  hostNameOf =
    cfg:
    let
      h = cfg.config.networking.hostName or "";
    in
    if h == "" then "nixos" else h;

  # An image of one NixOS configuration: a derivation that runs imgbuild on its toplevel.
  #
  # `pkgs` is the package set of the machine that *builds the image* (closureInfo,
  # runCommand, imgbuild itself), not the target's: imgbuild writes an aarch64 image as
  # easily on x86_64 as on aarch64, so an image derivation for any target can be an
  # x86_64-linux derivation. The toplevel stays the target's derivation; Nix builds it where
  # it can (a remote builder of that system, or a binary cache).
  mkImage =
    {
      nixosConfiguration,
      format ? nixosConfiguration.config.imgbuild.format or null,
      name ? hostNameOf nixosConfiguration,
      buildSystem ? nixosConfiguration.config.nixpkgs.buildPlatform.system,
      pkgs ? defaultPkgs buildSystem,
      imgbuild ? imgbuildFor pkgs,
      compress ? null,
      size ? null,
      free ? null,
      espSize ? null,
      seed ? null,
      diskId ? null,
      level ? null,
      keepRaw ? false,
      extraArgs ? [ ],
      # Where under $out the image goes (`image.filePath` of nixpkgs' image modules); default
      # `<name>.<extension>[.zst]`. The manifest is next to it, `<filePath>.json`.
      filePath ? null,
    }:
    let
      config = nixosConfiguration.config;
      f =
        if format == null then
          throw "imgbuild.mkImage: ${name}: no format: import nixosModules.imgbuild and set imgbuild.format, or pass `format`"
        else
          formatInfo format;
      target = config.nixpkgs.hostPlatform.system;
      configured = config.imgbuild.format or null;
      check =
        if !(validName name) then
          throw "imgbuild.mkImage: `${toString name}` is not a usable image name (letters, digits, `_`, `.`, `-`)"
        else if !(elem target (systemsOf f)) then
          throw "imgbuild.mkImage: ${name}: format ${format} makes ${systemsText f} images, but the configuration is for ${target}"
        else if configured != null && configured != format then
          throw "imgbuild.mkImage: ${name}: the configuration has imgbuild.format = \"${configured}\" but the image format is ${format}: the booted system would not match its disk"
        else if filePath != null && !(validFilePath filePath) then
          throw "imgbuild.mkImage: ${name}: filePath `${toString filePath}` must be a relative path of letters, digits, `_`, `.`, `+`, `-`, `:` and `/`, without `.` or `..` components, outside nix-support/"
        else
          true;
      toplevel = config.system.build.toplevel;
      closureInfo = pkgs.closureInfo { rootPaths = [ toplevel ]; };
      file = if filePath == null then imageFileName { inherit name format compress; } else filePath;
      dir = builtins.dirOf file;
      # The appliance's update files for systemd-sysupdate, beside the image (under $out too).
      sysupdateDir = if hasSysupdate f then "${file}.sysupdate" else null;
      args = imgbuildArgs {
        inherit
          format
          toplevel
          closureInfo
          size
          free
          espSize
          seed
          diskId
          compress
          level
          keepRaw
          extraArgs
          ;
        out = "${builtins.placeholder "out"}/${file}";
      };
      cmd = commandLine args;
    in
    assert check;
    pkgs.runCommand "nixos-image-${name}-${format}"
      {
        nativeBuildInputs = [ imgbuild ];
        # The image holds its own store (and the manifest names store paths), but nothing in
        # it is a reference for the host's store: the output keeps no closure alive in the
        # store or in a binary cache, while the build still has the closure as its input.
        # Needs structured attributes; a stable Nix feature since Nix 2.18 (2.14 to 2.17:
        # experimental feature `discard-references`; older Nix ignores it and keeps the
        # references).
        __structuredAttrs = true;
        unsafeDiscardReferences.out = true;
        passthru = {
          filePath = file;
          inherit
            format
            file
            toplevel
            closureInfo
            buildSystem
            nixosConfiguration
            ;
          imgbuildArgs = args;
          commandLine = cmd;
          inherit sysupdateDir;
          targetSystem = target;
        };
        meta.description = "NixOS ${format} disk image of ${name} (${target}), built by imgbuild";
      }
      (
        ''
          mkdir -p "$out/nix-support"${if dir == "." then "" else " \"$out/${dir}\""}
          # The store is / in the build sandbox, so no --store-root. SOURCE_DATE_EPOCH comes from
          # stdenv (1980-01-01 unless the caller sets it). The bytes do not depend on -j.
          threads=()
          if [ "''${NIX_BUILD_CORES:-0}" -gt 0 ]; then threads=(-j "$NIX_BUILD_CORES"); fi
          ${cmd} "''${threads[@]}"
          echo "file ${f.product} $out/${file}" >> "$out/nix-support/hydra-build-products"
          echo "file json $out/${file}.json" >> "$out/nix-support/hydra-build-products"
        ''
        + optionalString (sysupdateDir != null) ''
          # The next version's files for the appliances' update source (imgbuild.appliance.
          # updateSource): the usr and usr-verity partitions, the UKI, SHA256SUMS.
          if [ ! -d "$out/${sysupdateDir}" ]; then
            echo "imgbuild wrote no $out/${sysupdateDir}/" >&2
            exit 1
          fi
          for artifact in "$out/${sysupdateDir}"/*; do
            echo "file sysupdate $artifact" >> "$out/nix-support/hydra-build-products"
          done
        ''
      );

  nodeKeys = [
    "name"
    "system"
    "format"
    "modules"
    "image"
  ];

  # Validates a node list and fills in the defaults (`system` from the format, `modules = []`,
  # `image = {}`). Throws on the first problem, naming the node.
  checkNodes =
    nodes:
    let
      checkNode =
        n:
        let
          what = if isAttrs n && n ? name then "node `${toString n.name}`" else "a node";
          extra = filter (k: !(elem k nodeKeys)) (if isAttrs n then attrNames n else [ ]);
          f = formatInfo n.format;
          system =
            n.system or (
              if isList f.system then
                throw "imgbuild.mkNodes: ${what}: format ${n.format} makes ${systemsText f} images: give the node a `system`"
              else
                f.system
            );
        in
        if !(isAttrs n) then
          throw "imgbuild.mkNodes: every node is an attribute set { name; format; system?; modules?; image?; }"
        else if !(n ? name) then
          throw "imgbuild.mkNodes: a node has no `name`"
        else if !(validName n.name) then
          throw "imgbuild.mkNodes: node name `${toString n.name}` must be letters, digits, `_`, `.`, `-`"
        else if extra != [ ] then
          throw "imgbuild.mkNodes: ${what}: unknown attribute(s) ${concatStringsSep ", " extra} (allowed: ${concatStringsSep ", " nodeKeys})"
        else if !(n ? format) then
          throw "imgbuild.mkNodes: ${what} has no `format` (one of ${concatStringsSep ", " (attrNames formats)})"
        else if !(elem system (systemsOf f)) then
          throw "imgbuild.mkNodes: ${what}: format ${n.format} makes ${systemsText f} images, not ${system}"
        else if !(isList (n.modules or [ ])) then
          throw "imgbuild.mkNodes: ${what}: `modules` must be a list"
        else
          {
            inherit (n) name format;
            inherit system;
            modules = n.modules or [ ];
            image = n.image or { };
          };
      names = map (n: n.name or null) nodes;
      dupes = unique (filter (x: length (filter (y: y == x) names) > 1) names);
    in
    if !(isList nodes) then
      throw "imgbuild.mkNodes: `nodes` must be a list"
    else if dupes != [ ] then
      throw "imgbuild.mkNodes: duplicate node name(s): ${concatStringsSep ", " (map toString dupes)}"
    else
      map checkNode nodes;

  # The module mkNodes adds to every node: the image format (which makes nixosModules.imgbuild
  # set file systems and bootloader to match the disk), the host name and the platform; for an
  # installer format, nixpkgs' profiles the build-image variant of that name imports (a module
  # cannot import them for one value of imgbuild.format, a node knows its format up front).
  nodeModule =
    node:
    {
      lib,
      modulesPath ? null,
      ...
    }:
    {
      # Evaluation errors in what this module defines name the node.
      _file = "imgbuild.lib.mkNodes, node `${node.name}`";
      imports = map (p: modulesPath + "/${p}") (profilesOf node.format);
      imgbuild.format = node.format;
      networking.hostName = lib.mkDefault node.name;
      nixpkgs.hostPlatform = lib.mkDefault node.system;
    };

  defaultRunners = {
    x86_64-linux = "ubuntu-latest";
    aarch64-linux = "ubuntu-24.04-arm";
  };

  # A list of nodes -> rebuildable configurations and their images.
  #
  # nixosConfigurations.<name>: the configuration the machine rebuilds itself from.
  # packages.<buildSystem>.<name>: its image, built by imgbuild running on <buildSystem>. Every
  #   node is under every build system (default: the systems the nodes run), so `nix build
  #   .#<name>` works on any of them; the image bytes do not depend on the build system.
  # ciMatrix: { include = [ { name; system; runner; } ]; } for a GitHub Actions matrix.
  mkNodes =
    {
      nodes,
      nixpkgs,
      modules ? [ ],
      specialArgs ? { },
      buildSystems ? null,
      image ? { },
      runners ? defaultRunners,
    }:
    let
      checked = checkNodes nodes;
      systems = if buildSystems == null then unique (map (n: n.system) checked) else buildSystems;
      nixosConfigurations = listToAttrs (
        map (n: {
          inherit (n) name;
          value = nixpkgs.lib.nixosSystem {
            specialArgs = specialArgs // {
              imgbuildNode = {
                inherit (n) name system format;
              };
            };
            modules = [
              libModules.imgbuild
              libModules.gitops
              (nodeModule n)
            ]
            ++ modules
            ++ n.modules;
          };
        }) checked
      );
      imageOf =
        buildSystem: n:
        mkImage (
          {
            nixosConfiguration = nixosConfigurations.${n.name};
            inherit (n) name format;
            inherit buildSystem;
            pkgs = nixpkgs.legacyPackages.${buildSystem};
          }
          // image
          // n.image
        );
    in
    {
      inherit nixosConfigurations;
      packages = listToAttrs (
        map (b: {
          name = b;
          value = listToAttrs (
            map (n: {
              inherit (n) name;
              value = imageOf b n;
            }) checked
          );
        }) systems
      );
      ciMatrix = {
        include = map (n: {
          inherit (n) name system;
          runner =
            runners.${n.system}
              or (throw "imgbuild.mkNodes: no CI runner for ${n.system}: pass runners.${n.system}");
        }) checked;
      };
    };

  libModules = modules;
in
{
  inherit
    formats
    systemsOf
    profilesOf
    imageVariants
    imageFileName
    imgbuildArgs
    commandLine
    shellQuote
    mkImage
    mkNodes
    checkNodes
    nodeModule
    defaultRunners
    ;
}
