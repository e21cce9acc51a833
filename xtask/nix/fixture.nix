# A synthetic but realistic NixOS-like system closure for imgbuild's tests.
#
# Built offline by `cargo xtask fixtures` with Debian's nix-bin into a chroot store:
#   nix-build fixture.nix --argstr params params.json --store DIR
# Every derivation's builder is a static busybox (imported with builtins.path), so nothing
# is downloaded and every output is a deterministic function of the inputs below: same
# store paths, same contents, same NAR hashes on every run.
#
# params.json (written by xtask/src/fixture.rs):
#   arch, system, hostName, nixosVersion, codeName, kernelVersion, modDirVersion, kernelFile,
#   kernelParams [..], systemdVersion, builder (dir with bin/sh -> busybox), pool (noise file),
#   kernelSrc (dir), modulesSrc (dir), initrd (file), systemdBoot (file or null),
#   systemdStub (linux<arch>.efi.stub, the UKI stub, file or null),
#   rpiFirmware (bool), isoVolumeID, syslinux (dir with isolinux.bin, ldlinux.c32,
#   isohdpfx.bin, the other BIOS .c32 modules; or null), grubPc (dir: Debian grub-pc-bin's
#   lib/grub/i386-pc, or null), grubEfi (dir: grub-efi-amd64-bin's lib/grub/x86_64-efi, or
#   null), grubVersion
#
# variant: which toplevel. "disk" (the default, `result`): root on ext4 LABEL=nixos /
# NIXOS_SD; "grub" (`result-grub`, x86_64 only): the same system booting with GRUB from a
# BIOS disk (see grubToplevel below); "grub-hybrid" (`result-grub-hybrid`, x86_64 only):
# the same with GRUB for UEFI too and the ESP at /boot, as the hybrid `qemu` format wants;
# "appliance" and "appliance-v2" (`result-appliance[-v2]`, x86_64 only): the same system as
# an A/B appliance, image versions 1 and 2 (see applianceToplevel below);
# "iso" (`result-iso`) and "netboot" (`result-netboot`):
# the live systems of nixpkgs' iso-image.nix and netboot.nix (tmpfs /, the store a squashfs
# under an overlay).
{ params, variant ? "disk" }:
let
  P = builtins.fromJSON (builtins.readFile params);
  inherit (builtins) genList concatStringsSep elemAt length listToAttrs filter parseDrvName;
  range = n: genList (i: i) n;
  mod = a: b: a - (a / b) * b;
  concatMapS = f: l: concatStringsSep "" (map f l);
  src = name: path: builtins.path { inherit name; path = /. + path; };

  bb = src "busybox-static-1.35.0" P.builder;
  pool = src "imgbuild-noise-pool" P.pool;

  # Shell prelude of every builder. rnd FILE SIZE SEED [x]: SIZE bytes of deterministic
  # noise (from the pool, an xorshift stream written by xtask) at offset SEED*4 KiB.
  prelude = ''
    set -e
    umask 022
    rnd() {
      mkdir -p "$(dirname "$1")"
      dd if=${pool} of="$1" bs=4096 skip=$(( $3 % 2048 )) count=$2 iflag=count_bytes 2>/dev/null
      if [ "$4" = x ]; then chmod 755 "$1"; fi
    }
  '';

  mk = { name, script, outputs ? [ "out" ], env ? { } }:
    derivation ({
      inherit name outputs;
      system = "x86_64-linux";
      builder = "${bb}/bin/sh";
      args = [ "-c" (prelude + script) ];
      PATH = "${bb}/bin";
    } // env);

  # writeText / writeScript: the store path is the file itself
  writeText = name: text: mk { inherit name; env = { inherit text; }; script = ''printf '%s' "$text" > $out''; };
  writeScript = name: text: mk { inherit name; env = { inherit text; }; script = ''printf '%s' "$text" > $out; chmod 755 $out''; };

  isX86 = P.arch == "x86_64";
  efiArch = if isX86 then "x64" else "aa64";
  kver = P.kernelVersion;

  # ---------------------------------------------------------------------------------------
  # ~110 "packages" forming a DAG: each one references up to three earlier ones (RUNPATHs,
  # script interpreters, pkg-config files), so the reference graph is real. Every package has
  # `out`; every second a `lib` output, every third a `man` output.
  pkgNames = [
    "glibc-2.39-52" "zlib-1.3.1" "bzip2-1.0.8" "xz-5.4.6" "zstd-1.5.6" "libffi-3.4.6" "ncurses-6.4"
    "readline-8.2p10" "bash-5.2p26" "coreutils-9.5" "gnugrep-3.11" "gnused-4.9" "gawk-5.2.2"
    "findutils-4.9.0" "diffutils-3.10" "gnutar-1.35" "gzip-1.13" "attr-2.5.2" "acl-2.3.2"
    "libcap-2.69" "util-linux-2.39.4" "kmod-31" "openssl-3.0.14" "libxcrypt-4.4.36" "pam-1.6.1"
    "shadow-4.14.6" "sqlite-3.45.3" "curl-8.7.1" "nghttp2-1.61.0" "libidn2-2.3.7" "libunistring-1.2"
    "libssh2-1.11.0" "brotli-1.1.0" "libpsl-0.21.5" "expat-2.6.2" "libxml2-2.12.7" "pcre2-10.43"
    "libseccomp-2.5.5" "lz4-1.9.4" "libgcrypt-1.10.3" "libgpg-error-1.49" "libmnl-1.0.5"
    "libnftnl-1.2.6" "iptables-1.8.10" "iproute2-6.9.0" "dbus-1.14.10" "libcbor-0.11.0"
    "libfido2-1.14.0" "cryptsetup-2.7.2" "lvm2-2.03.23" "json-c-0.17" "e2fsprogs-1.47.1"
    "dosfstools-4.2" "kbd-2.6.4" "procps-4.0.4" "psmisc-23.7" "less-643" "nano-8.0"
    "perl-5.38.2" "python3-3.11.9" "gcc-13.2.0-lib" "llvm-17.0.6" "libarchive-3.7.4"
    "nix-2.18.5" "boost-1.81.0" "editline-1.17.1" "libsodium-1.0.19" "libcpuid-0.6.5"
    "openssh-9.7p1" "ldns-1.8.3" "krb5-1.21.2" "keyutils-1.6.3" "libedit-20230828-3.1"
    "iputils-20240117" "inetutils-2.5" "dhcpcd-10.0.6" "wpa_supplicant-2.10" "libnl-3.9.0"
    "nettools-2.10" "bind-9.18.27" "systemd-minimal-libs-255.6" "libmicrohttpd-1.0.1"
    "gnutls-3.8.5" "nettle-3.9.1" "gmp-6.3.0" "p11-kit-0.25.3" "libtasn1-4.19.0" "cacert-3.98"
    "tzdata-2024a" "mailcap-2.1.53" "iana-etc-20240318" "lsof-4.99.3" "strace-6.9" "gdb-14.2"
    "htop-3.3.0" "tmux-3.4" "libevent-2.1.12" "vim-9.1.0412" "git-2.44.1" "man-db-2.12.1"
    "groff-1.23.0" "libpipeline-1.5.7" "gdbm-1.23" "texinfo-7.1" "ncdu-2.4" "jq-1.7.1"
    "oniguruma-6.9.9" "nss-3.101" "nspr-4.35" "fuse-3.16.2" "rsync-3.3.0" "popt-1.19" "which-2.21"
  ];

  # per-package size of the main binary (default: 16 KiB .. ~330 KiB)
  bigBins = { llvm = 6291456; python3 = 4194304; nix = 3145728; perl = 2097152; gdb = 3145728; };
  bigLibs = { llvm = 8388608; gcc = 4194304; glibc = 2097152; openssl = 3145728; boost = 2621440; };

  pkgs = genList mkPkg (length pkgNames);
  mkPkg = i:
    let
      full = elemAt pkgNames i;
      pn = (parseDrvName full).name;
      pv = (parseDrvName full).version;
      dep = j: if j >= 0 && j < i then elemAt pkgs j else null;
      deps = filter (d: d != null) [ (dep (i - 1)) (dep (i / 2)) (dep (i / 3 + 1)) ];
      libOf = d: if d ? lib then d.lib else d.out;
      runpath = concatStringsSep ":" (map (d: "${libOf d}/lib") deps);
      hasLib = mod i 2 == 0;
      hasMan = mod i 3 == 0;
      interp = if i > 8 then "${elemAt pkgs 8}/bin/bash" else "/bin/sh";
      binSize = bigBins.${pn} or (16384 + mod (i * 7919) 320000);
      libSize = bigLibs.${pn} or (8192 + mod (i * 6007) 250000);
      libDir = if hasLib then "$lib" else "$out";
    in
    mk {
      name = full;
      outputs = [ "out" ] ++ (if hasLib then [ "lib" ] else [ ]) ++ (if hasMan then [ "man" ] else [ ]);
      script = ''
        rnd $out/bin/${pn} ${toString binSize} ${toString (i * 37)} x
        printf '\0RUNPATH=%s:%s/lib\0' "${runpath}" "${libDir}" >> $out/bin/${pn}
        mkdir -p $out/share/doc/${pn} $out/share/${pn}
        printf '%s %s\nhomepage: https://example.invalid/${pn}\n' "${pn}" "${pv}" > $out/share/doc/${pn}/README
        for k in 1 2 3 4 5; do rnd $out/share/${pn}/data-$k.dat $(( 512 * k + ${toString i} )) $(( ${toString i} * 11 + k )); done
        cat > $out/bin/${pn}-wrapped <<EOF
        #!${interp}
        # wrapper generated by the imgbuild fixture
        export LD_LIBRARY_PATH=${runpath}
        exec -a "\$0" $out/bin/${pn} "\$@"
        EOF
        chmod 755 $out/bin/${pn}-wrapped
        mkdir -p ${libDir}/lib/pkgconfig
        rnd ${libDir}/lib/lib${pn}.so.${toString (mod i 7 + 1)}.${toString (mod i 13)}.0 ${toString libSize} ${toString (i * 53 + 5)} x
        ln -s lib${pn}.so.${toString (mod i 7 + 1)}.${toString (mod i 13)}.0 ${libDir}/lib/lib${pn}.so.${toString (mod i 7 + 1)}
        ln -s lib${pn}.so.${toString (mod i 7 + 1)} ${libDir}/lib/lib${pn}.so
        printf 'prefix=%s\nlibdir=%s/lib\nName: ${pn}\nVersion: ${pv}\nLibs: -L%s/lib -l${pn}\n' ${libDir} ${libDir} ${libDir} > ${libDir}/lib/pkgconfig/${pn}.pc
        ${if hasMan then ''
          mkdir -p $man/share/man/man1 $man/share/man/man5
          printf '.TH %s 1\n.SH NAME\n%s \\- fixture program\n.SH SEE ALSO\n%s\n' "${pn}" "${pn}" "$out/bin/${pn}" > $man/share/man/man1/${pn}.1
          printf '.TH %s.conf 5\n' "${pn}" > $man/share/man/man5/${pn}.conf.5
        '' else ""}
      '';
    };

  pkgBy = listToAttrs (map (p: { name = (parseDrvName p.name).name; value = p; }) pkgs);
  bash = pkgBy.bash;
  coreutils = pkgBy.coreutils;
  glibc = pkgBy.glibc;

  # glibc gets gconv modules and locales on top (many small files in nested dirs)
  glibcExtras = mk {
    name = "glibc-locales-2.39-52";
    script = ''
      i=0
      while [ $i -lt 120 ]; do rnd $out/lib/gconv/IBM$((800 + i)).so $((4000 + i * 97)) $i x; i=$((i + 1)); done
      ln -s IBM801.so $out/lib/gconv/IBM-801.so
      for lc in de_DE fr_FR ja_JP pt_BR zh_CN en_US nl_NL sv_SE; do
        for f in LC_CTYPE LC_COLLATE LC_TIME LC_NUMERIC LC_MONETARY LC_MESSAGES/SYS_LC_MESSAGES; do
          rnd $out/lib/locale/$lc.UTF-8/$f 3000 7
        done
      done
      printf '%s\n' "${glibc.lib}/lib" > $out/lib/ld-path
    '';
  };

  # ~2000 entries in one directory, plus vendor subdirectories
  linuxFirmware = mk {
    name = "linux-firmware-20240610";
    script = ''
      d=$out/lib/firmware/misc
      mkdir -p $d
      i=0
      while [ $i -lt 2000 ]; do printf 'firmware blob %d\n' $i > $d/fw-$i.bin; i=$((i + 1)); done
      for fw in intel/ibt-17-16-1.sfi intel/ibt-17-16-1.ddc iwlwifi/iwlwifi-8265-36.ucode \
                rtl_nic/rtl8168g-2.fw rtl_nic/rtl8168h-2.fw amdgpu/green_sardine_dmcub.bin \
                amdgpu/green_sardine_vcn.bin brcm/brcmfmac43455-sdio.bin brcm/brcmfmac43455-sdio.clm_blob; do
        rnd $out/lib/firmware/$fw $((20000 + $(printf '%s' $fw | wc -c) * 1111)) 99
      done
      ln -s brcmfmac43455-sdio.bin "$out/lib/firmware/brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.bin"
    '';
  };

  firmware = mk {
    name = "firmware";
    script = ''
      mkdir -p $out/lib/firmware
      for v in misc intel iwlwifi rtl_nic amdgpu brcm; do ln -s ${linuxFirmware}/lib/firmware/$v $out/lib/firmware/$v; done
    '';
  };

  # ---------------------------------------------------------------------------------------
  # kernel, modules, initrd, systemd
  kernel = mk {
    name = "linux-${kver}";
    script = ''
      mkdir -p $out
      cp -r ${src "linux-${kver}-src" P.kernelSrc}/. $out/
    '';
  };
  kernelModulesReal = mk {
    name = "linux-${kver}-modules";
    script = ''
      mkdir -p $out
      cp -r ${src "linux-${kver}-modules-src" P.modulesSrc}/. $out/
    '';
  };
  kernelModules = mk {
    name = "kernel-modules";
    script = ''
      d=$out/lib/modules/${P.modDirVersion}
      mkdir -p $d
      ln -s ${kernelModulesReal}/lib/modules/${P.modDirVersion}/kernel $d/kernel
      for f in modules.builtin modules.order; do ln -s ${kernelModulesReal}/lib/modules/${P.modDirVersion}/$f $d/$f; done
      ln -s ${firmware}/lib/firmware $out/lib/firmware
    '';
  };
  initrd = mk {
    name = "initrd-linux-${kver}";
    script = ''
      mkdir -p $out
      cp ${src "initrd-src" P.initrd} $out/initrd
    '';
  };
  systemd = mk {
    name = "systemd-${P.systemdVersion}";
    script = ''
      mkdir -p $out/lib/systemd/boot/efi $out/bin $out/example/systemd/system
      ${if P.systemdBoot != null then "cp ${src "systemd-boot${efiArch}.efi" P.systemdBoot} $out/lib/systemd/boot/efi/systemd-boot${efiArch}.efi" else ""}
      ${if (P.systemdStub or null) != null then "cp ${src "linux${efiArch}.efi.stub" P.systemdStub} $out/lib/systemd/boot/efi/linux${efiArch}.efi.stub" else ""}
      rnd $out/lib/systemd/systemd 300000 1201 x
      rnd $out/lib/systemd/libsystemd-shared-${P.systemdVersion}.so 1200000 1301 x
      printf '\0RUNPATH=%s/lib\0' "${glibc.lib}" >> $out/lib/systemd/systemd
      for b in systemctl journalctl loginctl networkctl resolvectl bootctl udevadm; do
        rnd $out/bin/$b 60000 $(printf '%s' $b | wc -c) x
      done
      for u in basic.target multi-user.target sysinit.target getty.target network.target; do
        printf '[Unit]\nDescription=%s\n' $u > $out/example/systemd/system/$u
      done
    '';
  };

  # Raspberry Pi boot firmware placeholders consumed by sd-aarch64 (NOT bootable on hardware;
  # config.txt is deliberately absent: the image builder writes it)
  rpiFirmware = mk {
    name = "imgbuild-firmware";
    script = ''
      mkdir -p $out
      for f in bootcode.bin:52000 start.elf:90000 start4.elf:88000 start_cd.elf:30000 start4cd.elf:29000 \
               fixup.dat:7300 fixup4.dat:5400 fixup_cd.dat:3200 fixup4cd.dat:3200 \
               u-boot.bin:60000 armstub8-gic.bin:1024 \
               bcm2710-rpi-3-b.dtb:26000 bcm2710-rpi-3-b-plus.dtb:26500 bcm2710-rpi-zero-2-w.dtb:25000 \
               bcm2711-rpi-4-b.dtb:52000 bcm2711-rpi-400.dtb:52000 bcm2711-rpi-cm4.dtb:53000 \
               bcm2712-rpi-5-b.dtb:78000; do
        n=''${f%%:*}
        rnd $out/$n ''${f##*:} $(printf '%s' $n | wc -c)
      done
      printf 'imgbuild fixture placeholders: not real Raspberry Pi firmware\n' > $out/README.imgbuild
    '';
  };

  # ---------------------------------------------------------------------------------------
  # systemd units and /etc (lots of small store paths referencing packages)
  svcNames = genList (k: "svc-${toString k}-${(parseDrvName (elemAt pkgNames (mod (k * 7 + 3) (length pkgNames)))).name}") 60;
  units = genList (k:
    let
      svc = elemAt svcNames k;
      p = elemAt pkgs (mod (k * 7 + 3) (length pkgs));
      pn = (parseDrvName p.name).name;
    in
    mk {
      name = "unit-${svc}.service";
      script = ''
        mkdir -p $out
        printf '[Unit]\nDescription=%s\n\n[Service]\nExecStart=%s/bin/%s --daemon\nEnvironment="PATH=%s/bin"\n\n[Install]\nWantedBy=multi-user.target\n' \
          "${svc}" "${p}" "${pn}" "${coreutils}" > $out/${svc}.service
      '';
    }) 60;

  etcFileNames = [ "hosts" "hostname" "nsswitch.conf" "os-release" "fstab" "locale.conf" "vconsole.conf"
    "login.defs" "profile" "bashrc" "inputrc" "nix/nix.conf" "ssh/sshd_config" "ssh/ssh_config"
    "sudoers" "pam.d/login" "pam.d/sshd" "pam.d/sudo" "pam.d/su" "pam.d/passwd" "pam.d/other"
    "pam.d/systemd-user" "systemd/journald.conf" "systemd/logind.conf" "systemd/system.conf"
    "systemd/user.conf" "systemd/network/10-lo.network" "systemd/network/40-eth0.network"
    "systemd/resolved.conf" "systemd/timesyncd.conf" "udev/udev.conf" "services" "protocols"
    "shells" "resolv.conf" "machine-info" "issue" "zoneinfo-link" "modprobe.d/nixos.conf" "X11/xkb.conf" ];
  # osRelease: lines appended to etc/os-release (the appliances' IMAGE_ID / IMAGE_VERSION)
  etcFilesFor = { fstab, osRelease ? "" }: genList (k:
    let
      f = elemAt etcFileNames k;
      p = elemAt pkgs (mod (k * 5 + 1) (length pkgs));
    in
    {
      path = f;
      drv = if f == "fstab" then fstab else if f == "os-release" then writeText "etc-os-release" (''
        ANSI_COLOR="1;34"
        BUILD_ID="${P.nixosVersion}"
        ID=nixos
        NAME=NixOS
        PRETTY_NAME="NixOS ${P.codeName} (${P.nixosVersion})"
        VERSION_CODENAME=${P.codeName}
        VERSION_ID="24.05"
      '' + osRelease) else writeText "etc-${builtins.replaceStrings [ "/" ] [ "-" ] f}" ''
        # /etc/${f} (imgbuild fixture)
        # provided by ${p}
        setting-${toString k} = ${p}/share/${(parseDrvName p.name).name}
      '';
    }) (length etcFileNames);

  activationScript = writeScript "nixos-activation-script" ''
    #!${bash}/bin/bash
    systemConfig='@systemConfig@'
    export PATH=${coreutils}/bin:${pkgBy.gnugrep}/bin:${pkgBy.gnused}/bin
    echo "setting up /etc..."
    ${pkgBy.perl}/bin/perl-wrapped ${glibcExtras}/lib/ld-path
  '';

  etcFor = args: let etcFiles = etcFilesFor args; in mk {
    name = "etc";
    script = ''
      e=$out/etc
      mkdir -p $e/systemd/system/multi-user.target.wants
      ${concatMapS (f: ''
        mkdir -p "$(dirname $e/${f.path})"
        ln -s ${f.drv} $e/${f.path}
      '') etcFiles}
      ${concatMapS (k: let svc = elemAt svcNames k; in ''
        ln -s ${elemAt units k}/${svc}.service $e/systemd/system/${svc}.service
        ln -s ../${svc}.service $e/systemd/system/multi-user.target.wants/${svc}.service
      '') (range 60)}
      ln -s ${pkgBy.tzdata}/share/tzdata $e/zoneinfo
      ln -s ${glibcExtras}/lib/locale $e/locale
      ln -s ${systemd}/example/systemd/system/getty.target $e/systemd/system/getty.target
      ln -s /etc/static/profile $e/profile.local
    '';
  };

  # NixOS' system-path: a buildEnv, i.e. a symlink farm into every package
  systemPath = mk {
    name = "system-path";
    script = ''
      mkdir -p $out/bin $out/share/man/man1 $out/share/doc $out/lib
      ${concatMapS (p: let pn = (parseDrvName p.name).name; in ''
        ln -s ${p}/bin/${pn} $out/bin/${pn}
        ln -s ${p}/share/doc/${pn} $out/share/doc/${pn}
        ${if p ? man then "ln -s ${p.man}/share/man/man1/${pn}.1 $out/share/man/man1/${pn}.1" else ""}
      '') pkgs}
      ln -s ${systemd}/bin/systemctl $out/bin/systemctl
      ln -s ${coreutils}/bin/coreutils $out/bin/ls
      ln -s ${glibcExtras}/lib/gconv $out/lib/gconv
    '';
  };

  # deliberately awkward names and file kinds
  longName = concatStringsSep "" (genList (_: "l") 255);
  deepDir = concatStringsSep "/" (genList (k: "d${toString k}") 30);
  edgeCases = mk {
    name = "imgbuild-edge-cases";
    script = ''
      x=$out
      mkdir -p $x/empty-dir "$x/dir with spaces" "$x/unicodé-dïr-日本" $x/${deepDir}
      : > $x/empty-file
      : > $x/empty-exec; chmod 755 $x/empty-exec
      echo spaces > "$x/dir with spaces/file with spaces.txt"
      echo unicode > "$x/unicodé-dïr-日本/fïlé-ü.txt"
      echo plus > "$x/c++-header+stuff.h"
      echo dash > "$x/-leading-dash"
      echo hidden > $x/.hidden
      echo long > $x/${longName}
      echo deep > $x/${deepDir}/bottom.txt
      rnd $x/random-4MiB.bin 4194304 333
      dd if=/dev/zero of=$x/zeros-8MiB.bin bs=65536 count=128 2>/dev/null
      { echo start; dd if=/dev/zero bs=65536 count=48 2>/dev/null; echo end; } > $x/mostly-zeros.bin
      rnd $x/odd-size.bin 4097 444
      rnd $x/exactly-4096.bin 4096 445
      rnd $x/exactly-60.bin 60 446
      echo "hardlinked content" > $x/hardlink-a; ln $x/hardlink-a $x/hardlink-b
      ln -s "file with spaces.txt" "$x/dir with spaces/link to spaces"
      ln -s empty-file $x/link-to-empty-file
      ln -s ../../empty-file $x/d0/d1/up-link
      ln -s ${bash}/bin/bash $x/abs-link-to-bash
      ln -s ${glibc.lib}/lib $x/abs-link-to-dir
      ln -s does-not-exist $x/dangling-link
      ln -s /nix/store/00000000000000000000000000000000-missing $x/dangling-abs-link
      ln -s . $x/self-dir-link
      ln -s ${longName} $x/link-to-long-name
      ln -s 'a/very/long/relative/symlink/target/that/does/not/fit/into/the/inode/itself/at/all/0123456789' $x/slow-symlink
      mkdir -p $x/many
      i=0; while [ $i -lt 300 ]; do echo "small file $i" > $x/many/f$i; i=$((i + 1)); done
    '';
  };

  # ---------------------------------------------------------------------------------------
  # What the initrd checks in a live (iso/netboot) boot, where the store is a squashfs read
  # through an overlay: the sha256 of every file and the target of every symlink of a few
  # store paths (big, sparse, hard-linked, oddly named), one per line
  storeManifest = mk {
    name = "imgbuild-store-manifest";
    script = ''
      mkdir -p $out
      for p in ${kernel} ${initrd} ${edgeCases} ${pkgBy.llvm} ${glibcExtras} ${systemd}; do
        find $p -type f | sort | while IFS= read -r f; do sha256sum "$f"; done
      done > $out/sha256
      for p in ${edgeCases} ${kernelModules}; do
        find $p -type l | sort | while IFS= read -r l; do printf '%s\t%s\n' "$l" "$(readlink "$l")"; done
      done > $out/symlinks
    '';
  };

  # ---------------------------------------------------------------------------------------
  # the toplevel, shaped like nixos/modules/system/activation/top-level.nix builds it
  label = "NixOS ${P.codeName} ${P.nixosVersion} (Linux ${kver})";
  # bootspec v1 as nixpkgs writes it (jq pretty-printed, keys sorted); @out@ = $out.
  # imgbuild: the entries of "org.imgbuild.v1", already indented, sorted by key.
  # systemdBoot: the org.nixos.systemd-boot entry nixpkgs' systemd-boot module adds (x86_64's
  # disk system; the live systems on both, whose UEFI boot is systemd-boot).
  bootJsonWith = { kernelParams, imgbuild, systemdBoot }:
    let
      v1 = (if P.rpiFirmware then [ "    \"firmware\": \"${rpiFirmware}\"" ] else [ ]) ++ imgbuild;
    in
    concatStringsSep "\n" ([ "{" ]
    ++ (if v1 != [ ] then [ "  \"org.imgbuild.v1\": {" (concatStringsSep ",\n" v1) "  }," ] else [ ])
    ++ [
      "  \"org.nixos.bootspec.v1\": {"
      "    \"init\": \"@out@/init\","
      "    \"initrd\": \"${initrd}/initrd\","
      "    \"kernel\": \"${kernel}/${P.kernelFile}\","
      "    \"kernelParams\": ["
      (concatStringsSep ",\n" (map (p: "      \"${p}\"") kernelParams))
      "    ],"
      "    \"label\": \"${label}\","
      "    \"system\": \"${P.system}\","
      "    \"toplevel\": \"@out@\""
      "  },"
      ("  \"org.nixos.specialisation.v1\": {}" + (if systemdBoot then "," else ""))
    ]
    ++ (if systemdBoot then [ "  \"org.nixos.systemd-boot\": {" "    \"sortKey\": \"nixos\"" "  }" ] else [ ])
    ++ [ "}" ]) + "\n";

  fstabHeader = ''
    # This is a generated file.  Do not edit!

    # Filesystems.
  '';

  mkToplevel = { kernelParams, fstab, imgbuild ? [ ], systemdBoot ? isX86, osRelease ? "" }: mk {
    name = "nixos-system-${P.hostName}-${P.nixosVersion}";
    env = {
      bootJson = bootJsonWith { inherit kernelParams imgbuild systemdBoot; };
      kernelParams = concatStringsSep " " kernelParams;
    };
    script = ''
      mkdir -p $out/specialisation $out/bin
      ln -s ${kernel}/${P.kernelFile} $out/kernel
      ln -s ${initrd}/initrd $out/initrd
      ln -s ${kernelModules} $out/kernel-modules
      ln -s ${etcFor { inherit fstab osRelease; }}/etc $out/etc
      ln -s ${systemPath} $out/sw
      ln -s ${firmware}/lib/firmware $out/firmware
      ln -s ${systemd} $out/systemd
      ${if isX86 then "" else "ln -s ${kernel}/dtbs $out/dtbs"}
      ln -s ${edgeCases} $out/imgbuild-edge-cases
      ln -s ${storeManifest} $out/imgbuild-store-manifest
      sed "s|@systemConfig@|$out|" ${activationScript} > $out/activate
      chmod 755 $out/activate
      cat > $out/init <<EOF
      #! ${bash}/bin/bash
      # NixOS stage-2 init (imgbuild fixture). The fixture initrd only checks that this
      # file exists and is executable on the root filesystem; it never runs it.
      systemConfig=$out
      export PATH=${coreutils}/bin
      \$systemConfig/activate
      exec ${systemd}/lib/systemd/systemd "\$@"
      EOF
      chmod 755 $out/init
      cat > $out/bin/switch-to-configuration <<EOF
      #! ${pkgBy.perl}/bin/perl-wrapped
      # placeholder for switch-to-configuration (imgbuild fixture)
      toplevel=$out
      EOF
      chmod 755 $out/bin/switch-to-configuration
      printf '%s' "$kernelParams" > $out/kernel-params
      printf '%s' "${P.nixosVersion}" > $out/nixos-version
      printf '%s' "${P.system}" > $out/system
      printf '%s' systemd > $out/init-interface-version
      printf '%s' "${P.hostName}" > $out/configuration-name
      : > $out/extra-dependencies
      printf '%s' "$bootJson" | sed "s|@out@|$out|g" > $out/boot.json
    '';
  };

  # the installed system: root on ext4 by label
  diskToplevel = mkToplevel {
    inherit (P) kernelParams;
    fstab = writeText "etc-fstab" (fstabHeader + (if isX86 then ''
      /dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1
      /dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2
    '' else ''
      /dev/disk/by-label/NIXOS_SD / ext4 x-initrd.mount 0 1
      /dev/disk/by-label/FIRMWARE /boot/firmware vfat nofail,noauto 0 2
    ''));
  };

  # ---------------------------------------------------------------------------------------
  # The same system booting from a PC BIOS disk with GRUB, as imgbuild's NixOS module
  # configures it for the `raw` format (nix/modules/imgbuild.nix): root by label only (no
  # ESP in fstab), no systemd-boot extension, and the GRUB record of `"org.imgbuild.v1"`
  # naming the GRUB package, laid out as nixpkgs' grub2 package: `lib/grub/i386-pc/` with
  # the modules, kernel.img, boot.img, moddep.lst, ... (here Debian's grub-pc-bin files).
  grubPackage = target: dir: mk {
    name = "grub-${P.grubVersion}";
    script = ''
      mkdir -p $out/lib/grub
      cp -r ${src "grub-${target}" dir} $out/lib/grub/${target}
    '';
  };
  grub = grubPackage "i386-pc" P.grubPc;
  # nixpkgs' grub2_efi (grub2 with efiSupport): `lib/grub/x86_64-efi/` (here Debian's
  # grub-efi-amd64-bin files), the hybrid's `grubEfi`.
  grubEfi = grubPackage "x86_64-efi" P.grubEfi;
  # The GRUB toplevel; `hybrid`: as imgbuild's module sets the `qemu` format (efiSupport,
  # efiInstallAsRemovable, the ESP mounted at /boot by label).
  grubSystem = hybrid:
    if isX86 && (P.grubPc or null) != null && (!hybrid || (P.grubEfi or null) != null) then mkToplevel {
      inherit (P) kernelParams;
      systemdBoot = false;
      fstab = writeText "etc-fstab" (fstabHeader + ''
        /dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1
      '' + (if hybrid then ''
        /dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2
      '' else ""));
      imgbuild = [
        (concatStringsSep "\n" ([
          "    \"bootloader\": {"
          "      \"configurationLimit\": 100,"
          "      \"devices\": ["
          "        \"/dev/vda\""
          "      ],"
          "      \"distroName\": \"NixOS\","
          "      \"efiInstallAsRemovable\": ${if hybrid then "true" else "false"},"
          "      \"efiSupport\": ${if hybrid then "true" else "false"},"
        ] ++ (if hybrid then [
          "      \"efiSysMountPoint\": \"/boot\","
          "      \"grubEfi\": \"${grubEfi}\","
        ] else [ ]) ++ [
          "      \"fsIdentifier\": \"uuid\","
          "      \"grub\": \"${grub}\","
          "      \"timeout\": 5,"
          "      \"type\": \"grub\""
          "    }"
        ]))
        "    \"release\": \"${builtins.substring 0 5 P.nixosVersion}\""
      ];
    } else throw "fixture.nix: the grub variants need x86_64 and params.grubPc (and grubEfi)";
  grubToplevel = grubSystem false;
  grubHybridToplevel = grubSystem true;

  # ---------------------------------------------------------------------------------------
  # live systems (nixpkgs' iso-image.nix / netboot.nix file systems): tmpfs /, the store a
  # squashfs (on the ISO, or in the initramfs for netboot) under a tmpfs-backed overlay
  liveFstab = squashfs: extra: writeText "etc-fstab" (fstabHeader + ''
    tmpfs / tmpfs mode=0755,x-initrd.mount 0 0
  '' + extra + ''
    ${squashfs} /nix/.ro-store squashfs loop,x-initrd.mount 0 0
    tmpfs /nix/.rw-store tmpfs mode=0755,x-initrd.mount 0 0
    overlay /nix/store overlay lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work,x-initrd.mount 0 0
  '');

  syslinux = mk {
    name = "syslinux-${P.syslinux.version}";
    script = ''
      mkdir -p $out/share
      cp -r ${src "syslinux-share" P.syslinux.dir} $out/share/syslinux
    '';
  };

  isoToplevel = mkToplevel {
    systemdBoot = true;
    kernelParams = [ "root=LABEL=${P.isoVolumeID}" ] ++ P.kernelParams;
    fstab = liveFstab "/iso/nix-store.squashfs" ''
      /dev/root /iso auto x-initrd.mount 0 0
    '';
    imgbuild = [ (concatStringsSep "\n" ([ "    \"iso\": {" ]
      ++ (if P.syslinux != null then [ "      \"syslinux\": \"${syslinux}\"," ] else [ ])
      ++ [ "      \"volumeID\": \"${P.isoVolumeID}\"" "    }" ])) ];
  };

  netbootToplevel = mkToplevel {
    systemdBoot = true;
    inherit (P) kernelParams;
    fstab = liveFstab "../nix-store.squashfs" "";
    imgbuild = [ "    \"netboot\": {}" ];
  };

  # ---------------------------------------------------------------------------------------
  # The A/B appliance (imgbuild's `appliance` format, issue 26 step 4), as imgbuild's NixOS
  # module records it: the disk system's kernel, initrd and parameters with systemd-boot,
  # system.image.id / system.image.version (os-release's IMAGE_ID / IMAGE_VERSION), the UKI
  # named `<id>_<version>.efi` (system.boot.loader.ukiFile) and the `appliance` record of
  # `"org.imgbuild.v1"` (systemd initrd and its dm-verity on). Version 2 differs from 1 only
  # in those, which is enough for a different toplevel, closure and store image: the A->B
  # update boot writes 2's store into 1's empty B slots.
  applianceImageId = "imgbuild-fixture";
  applianceToplevel = version:
    if isX86 then mkToplevel {
      inherit (P) kernelParams;
      systemdBoot = true;
      osRelease = ''
        IMAGE_ID=${applianceImageId}
        IMAGE_VERSION=${version}
      '';
      fstab = writeText "etc-fstab" (fstabHeader + ''
        /dev/disk/by-label/nixos / ext4 x-initrd.mount 0 1
        /dev/disk/by-label/ESP /boot vfat fmask=0077,dmask=0077 0 2
        /dev/mapper/usr /usr squashfs ro,x-initrd.mount 0 0
        /usr/nix/store /nix/store none bind,x-initrd.mount 0 0
      '');
      imgbuild = [
        (concatStringsSep "\n" [
          "    \"appliance\": {"
          "      \"dmVerity\": true,"
          "      \"imageId\": \"${applianceImageId}\","
          "      \"imageVersion\": \"${version}\","
          "      \"systemdInitrd\": true"
          "    }"
        ])
        "    \"release\": \"${builtins.substring 0 5 P.nixosVersion}\""
        "    \"ukiFile\": \"${applianceImageId}_${version}.efi\""
      ];
    } else throw "fixture.nix: the appliance variants are x86_64 only";
in
{
  disk = diskToplevel;
  appliance = applianceToplevel "1";
  appliance-v2 = applianceToplevel "2";
  grub = grubToplevel;
  grub-hybrid = grubHybridToplevel;
  iso = isoToplevel;
  netboot = netbootToplevel;
}.${variant}
