# Stubs of the few nixpkgs pieces that nix/lib.nix, the NixOS modules and the flakes use, for
# evaluating them with Debian's Nix and no nixpkgs. Everything returns plain data, so the
# tests can look at what the code under test asked for: the modules a node's nixosSystem
# got, the script and inputs of a runCommand, the attributes of buildRustPackage.
#
# `evalModule` is not the NixOS module system: it calls one module with a config made of its
# own option defaults plus the test's settings, and flattens mkIf/mkMerge/mkDefault in its
# `config`. Enough to check what a module defines; not a check of option types or merging
# across modules.
{ }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    foldl'
    functionArgs
    genList
    hashString
    intersectAttrs
    isAttrs
    isFunction
    isList
    length
    mapAttrs
    stringLength
    substring
    toJSON
    ;

  # A store-path-shaped string: the hash part is a function of `key`.
  fakePathFor = key: name: "/nix/store/" + substring 0 32 (hashString "sha256" key) + "-" + name;
  fakePath = name: fakePathFor name name;
  closureInfoPath =
    system: rootPaths: fakePathFor "${system}:closure-info:${toJSON rootPaths}" "closure-info";

  hasInfix =
    infix: s:
    let
      n = stringLength infix;
    in
    builtins.any (i: substring i n s == infix) (genList (i: i) (stringLength s - n + 1));

  lib = {
    inherit concatStringsSep hasInfix;
    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    hasSuffix =
      suffix: s:
      let
        n = stringLength s - stringLength suffix;
      in
      n >= 0 && substring n (stringLength suffix) s == suffix;
    mapAttrsToList = f: as: map (k: f k as.${k}) (attrNames as);
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: as: if cond then as else { };
    optionals = cond: xs: if cond then xs else [ ];
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: {
      _type = "option";
      default = false;
      description = "Whether to enable ${name}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkDefault = content: {
      _type = "override";
      priority = 1000;
      inherit content;
    };
    mkForce = content: {
      _type = "override";
      priority = 50;
      inherit content;
    };
    mkImageMediaOverride = content: {
      _type = "override";
      priority = 60;
      inherit content;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    types = {
      bool = "bool";
      str = "str";
      lines = "lines";
      package = "package";
      nullOr = elem: { nullOr = elem; };
      enum = values: { enum = values; };
      listOf = elem: { listOf = elem; };
      attrsOf = elem: { attrsOf = elem; };
    };
    fileset = {
      unions = paths: { unions = paths; };
      toSource = args: args;
    };
    licenses = {
      mit = "MIT";
      asl20 = "Apache-2.0";
    };
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
  };

  pkgsFor =
    system:
    let
      pkg = name: {
        type = "derivation";
        inherit name;
        outPath = fakePathFor "${system}:${name}" name;
        stubSystem = system;
      };
      self = {
        inherit system;
        # A native package set: the build platform's packages are these.
        buildPackages = self;
        stdenv = {
          hostPlatform.system = system;
          buildPlatform = {
            inherit system;
            canExecute = host: host.system == system;
          };
        };
        installShellFiles = pkg "install-shell-files";
        raspberrypifw = pkg "raspberrypi-firmware-1.20250915";
        raspberrypi-armstubs = pkg "raspberrypi-armstubs-2025";
        ubootRaspberryPiAarch64 = pkg "uboot-rpi_arm64_defconfig-2025.10";
        ubootRaspberryPi3_64bit = pkg "uboot-rpi_3_defconfig-2025.10";
        ubootRaspberryPi4_64bit = pkg "uboot-rpi_4_defconfig-2025.10";
        util-linux = pkg "util-linux-2.41";
        gawk = pkg "gawk-5.3";
        parted = pkg "parted-3.6";
        e2fsprogs = pkg "e2fsprogs-1.47";
        coreutils = pkg "coreutils-9.7";
        syslinux = pkg "syslinux-6.04-unstable-2019-02-07";
        closureInfo =
          { rootPaths }:
          pkg "closure-info" // {
            inherit rootPaths;
            outPath = closureInfoPath system rootPaths;
          };
        runCommand =
          name: env: script:
          (env.passthru or { })
          // pkg name
          // {
            inherit env script;
          };
        rustPlatform.buildRustPackage =
          attrs:
          attrs
          // pkg "${attrs.pname}-${attrs.version}"
          // {
            stubBuildRustPackage = true;
          };
        callPackage =
          fn: args:
          let
            f = if isFunction fn then fn else import fn;
          in
          f (intersectAttrs (functionArgs f) (self // { inherit lib; }) // args);
      };
    in
    self;

  # What nixpkgs.lib.nixosSystem would return, as far as lib.nix reads it. The node comes
  # from the `imgbuildNode` special argument mkNodes passes; the arguments are kept.
  nixosConfiguration =
    {
      name,
      system,
      format ? null,
      toplevel ? fakePath "nixos-system-${name}-25.11.20251201.abcdef0",
    }:
    {
      config = {
        system.build.toplevel = toplevel;
        imgbuild.format = format;
        networking.hostName = name;
        nixpkgs.hostPlatform.system = system;
        nixpkgs.buildPlatform.system = system;
      };
    };

  nixosSystem =
    args:
    let
      node = args.specialArgs.imgbuildNode;
    in
    nixosConfiguration { inherit (node) name system format; } // { stubArgs = args; };

  nixpkgs = {
    lib = lib // {
      inherit nixosSystem;
    };
    legacyPackages = {
      x86_64-linux = pkgsFor "x86_64-linux";
      aarch64-linux = pkgsFor "aarch64-linux";
    };
  };

  # --- evalModule ---
  typeOf = v: if isAttrs v then v._type or null else null;
  isAbsent = v: typeOf v == "absent";
  absent = {
    _type = "absent";
  };
  isLeaf =
    v:
    !(isAttrs v)
    || v ? outPath
    || builtins.elem (typeOf v) [
      "option"
      "literalExpression"
    ];

  merge =
    a: b:
    if isAttrs a && isAttrs b && !(isLeaf a) && !(isLeaf b) then
      a // mapAttrs (k: bv: if a ? ${k} then merge a.${k} bv else bv) b
    else if isList a && isList b then
      a ++ b
    else if a == b then
      a
    else
      throw "stub evalModule: conflicting definitions ${toJSON a} and ${toJSON b}";

  resolve =
    v:
    let
      t = typeOf v;
    in
    if t == "if" then
      (if v.condition then resolve v.content else absent)
    else if t == "merge" then
      foldl' merge { } (filter (x: !(isAbsent x)) (map resolve v.contents))
    else if t == "override" then
      resolve v.content
    else if isLeaf v then
      v
    else
      let
        r = mapAttrs (_: resolve) v;
      in
      builtins.removeAttrs r (filter (k: isAbsent r.${k}) (attrNames r));

  defaultsOf = mapAttrs (
    _: o: if typeOf o == "option" then (o.default or null) else defaultsOf o
  );

  recursiveUpdate =
    a: b:
    a
    // mapAttrs (
      k: bv: if a ? ${k} && isAttrs a.${k} && isAttrs bv && !(isLeaf bv) then recursiveUpdate a.${k} bv else bv
    ) b;

  evalModule =
    {
      module,
      system ? "x86_64-linux",
      settings ? { },
      base ? {
        networking.hostName = "node";
        nix.package.out = (pkgsFor system).coreutils // {
          outPath = fakePathFor "${system}:nix" "nix-2.31";
        };
        # NixOS's defaults of what nixosModules.imgbuild records in boot.json (no loader on).
        system.nixos = {
          release = "25.11";
          distroName = "NixOS";
        };
        boot.loader = {
          timeout = 5;
          systemd-boot = {
            enable = false;
            editor = true;
            consoleMode = "keep";
            rebootForBitlocker = false;
            installDeviceTree = false;
          };
          generic-extlinux-compatible = {
            enable = false;
            useGenerationDeviceTree = true;
          };
        };
        hardware.deviceTree.name = null;
      },
      # The NixOS options modules look for (as nixpkgs 25.11 declares them).
      options ? {
        system.autoUpgrade.upgrade = { };
        boot.loader.systemd-boot = { };
      },
    }:
    let
      pkgs = pkgsFor system;
      f = if isFunction module then module else import module;
      m = f {
        inherit
          config
          pkgs
          lib
          options
          ;
      };
      config = recursiveUpdate (recursiveUpdate base (defaultsOf (m.options or { }))) settings;
      # `_file` and `key` name the module for error messages, `imports` lists other modules;
      # they define nothing.
      body = removeAttrs (if m ? config || m ? options then m.config or { } else m) [
        "_file"
        "key"
        "imports"
      ];
    in
    {
      inherit config pkgs;
      options = m.options or { };
      imports = m.imports or [ ];
      file = m._file or null;
      defs =
        let
          d = resolve body;
        in
        if isAbsent d then { } else d;
    };
in
{
  inherit
    lib
    pkgsFor
    nixosConfiguration
    nixosSystem
    nixpkgs
    fakePath
    fakePathFor
    closureInfoPath
    evalModule
    resolve
    recursiveUpdate
    ;
}
