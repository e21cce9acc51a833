# The container formats (lxc, lxc-metadata, proxmox-lxc, incus): what nixpkgs' modules for
# those image variants set besides their tarball (virtualisation/lxc-container.nix with
# lxc-instance-common.nix and lxc-image-metadata.nix; virtualisation/proxmox-lxc.nix), written
# here from those modules' facts. Imported by nixosModules.imgbuild; active only for its
# format. A container boots no kernel: boot.isContainer, no boot loader, no file systems; the
# host's container manager starts /sbin/init. NixOS writes no boot.json for a boot.isContainer
# toplevel (nor kernel, initrd, kernel-params), so the marker and metadata.yaml's properties go
# into a file of imgbuild's own, <toplevel>/imgbuild.json ({"org.imgbuild.v1": {"container":
# ...}}, through system.systemBuilderCommands), where imgbuild's system check and its
# metadata.yaml read them. The first boot registers the image's nix-path-registration
# (imgbuild.registerNixPaths, imgbuild.nix). Settings are defaults where nixpkgs' are. Not
# taken from nixpkgs: lxc-instance-common.nix's empty root password (a configuration that
# keeps rebuilding itself should not get one silently) and its channel/minimal profiles.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkDefault mkForce mkIf mkMerge;
  format = config.imgbuild.format;
  containerFormats = [
    "lxc"
    "lxc-metadata"
    "proxmox-lxc"
    "incus"
  ];
  nixos = config.system.nixos;
  system = pkgs.stdenv.hostPlatform.system;
  # A shell word (lib.escapeShellArg's quoting).
  quote = t: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] t + "'";
  # What imgbuild's system check and metadata.yaml read (lxc-image-metadata.nix's
  # properties: "<distroName> <codeName> <label> <system>", distroId, codeName).
  marker."org.imgbuild.v1".container = {
    isContainer = true;
    description = "${nixos.distroName} ${nixos.codeName or ""} ${nixos.label or ""} ${system}";
    os = nixos.distroId or "nixos";
    release = nixos.codeName or "";
  };
in
{
  config = mkIf (builtins.elem format containerFormats) (mkMerge [
    {
      boot.isContainer = true;
      boot.loader.grub.enable = mkDefault false;

      # The toplevel's imgbuild.json (no boot.json is written for a container).
      system.systemBuilderCommands = ''
        printf '%s' ${quote (builtins.toJSON marker)} > "$out/imgbuild.json"
      '';

      # Containers should be light: sshd started on demand (both nixpkgs modules).
      services.openssh.enable = mkDefault true;
      services.openssh.startWhenNeeded = mkDefault true;
    }

    (mkIf (format != "proxmox-lxc") {
      # lxc-container.nix: the image's sbin/init is the toplevel's init; each activation
      # points it at the running system.
      system.activationScripts.installInitScript = mkForce ''
        ln -fs $systemConfig/init /sbin/init
      '';

      # lxc-container.nix: distrobuilder's overrides, so services start in an unprivileged
      # container (no /proc subsets, writable control groups, no credentials).
      systemd.packages = [
        (pkgs.writeTextFile {
          name = "systemd-lxc-service-overrides";
          destination = "/etc/systemd/system/service.d/zzz-lxc-service.conf";
          text = ''
            [Service]
            ProcSubset=all
            ProtectProc=default
            ProtectControlGroups=no
            ProtectKernelTunables=no
            NoNewPrivileges=no
            LoadCredential=
          '';
        })
      ];
    })

    (mkIf (format == "proxmox-lxc") {
      # proxmox-lxc.nix with its defaults (unprivileged, network and host name from Proxmox).
      boot.loader.initScript.enable = true;
      console.enable = true;
      networking = {
        useDHCP = false;
        useHostResolvConf = false;
        useNetworkd = true;
        # Proxmox writes /etc/hostname.
        hostName = mkDefault "";
      };
      # An unprivileged container cannot mount debugfs.
      systemd.mounts = [
        {
          enable = false;
          where = "/sys/kernel/debug";
        }
      ];
      systemd.services."getty@".unitConfig.ConditionPathExists = [
        ""
        "/dev/%I"
      ];
    })
  ]);
}
