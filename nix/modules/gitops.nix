# nixosModules.gitops: the machine follows a flake, flux-style. A timer runs
# `nixos-rebuild switch --flake <flake>#<host> --refresh` (nixpkgs' system.autoUpgrade), so a
# push to the repository (or a Renovate `flake.lock` update merged there) reaches every
# machine at its next run. Nothing is pushed to the machines; they pull.
#
# Private repositories: Nix fetches the flake as root. Either
#   - an access token: put `access-tokens = github.com=github_pat_...` (a fine-grained token
#     with read-only "Contents" on the repository; GitLab: `gitlab.com=PAT:glpat-...`) in a
#     root-only file on the machine, e.g. /etc/nix/access-tokens.conf (mode 0600, written by
#     hand or by sops-nix/agenix), and set `imgbuild.gitops.accessTokensFile` to its path; the
#     file is `!include`d from nix.conf and never enters the Nix store; or
#   - a deploy key: `flake = "git+ssh://git@github.com/me/machines"`, the key in
#     /root/.ssh/id_ed25519 and the host key in `programs.ssh.knownHosts`.
{
  config,
  lib,
  options,
  ...
}:
let
  cfg = config.imgbuild.gitops;
  inherit (lib) mkIf mkOption types;
  flakeRef = if lib.hasInfix "#" cfg.flake then cfg.flake else "${cfg.flake}#${cfg.host}";
in
{
  options.imgbuild.gitops = {
    enable = lib.mkEnableOption "following a flake: rebuild from it on a timer (system.autoUpgrade)";

    flake = mkOption {
      type = types.str;
      example = "github:me/machines";
      description = ''
        The flake URL of the repository with this machine's configuration. `#<host>` is
        appended unless the URL has a `#` already.
      '';
    };

    host = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "The `nixosConfigurations` attribute of this machine in the flake.";
    };

    dates = mkOption {
      type = types.str;
      default = "hourly";
      example = "*:0/15";
      description = "When to check the flake for a new configuration (systemd.time(7) calendar).";
    };

    randomizedDelaySec = mkOption {
      type = types.str;
      default = "10min";
      description = "A random delay up to this long before each run, so a fleet does not fetch at once.";
    };

    persistent = mkOption {
      type = types.bool;
      default = true;
      description = "Run at boot when a run was missed while the machine was off.";
    };

    operation = mkOption {
      type = types.enum [
        "switch"
        "boot"
      ];
      default = "switch";
      description = "`switch` activates a new configuration at once; `boot` at the next reboot.";
    };

    allowReboot = mkOption {
      type = types.bool;
      default = false;
      description = "Reboot when the new configuration has another kernel, initrd or kernel modules.";
    };

    rebootWindow = mkOption {
      type = types.nullOr (types.attrsOf types.str);
      default = null;
      example = {
        lower = "01:00";
        upper = "05:00";
      };
      description = "With `allowReboot`, reboot only between these times (HH:MM).";
    };

    flags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--option"
        "tarball-ttl"
        "0"
      ];
      description = ''
        Extra `nixos-rebuild` flags. nixpkgs' autoUpgrade already passes `--refresh` (fetch
        the flake again instead of using a cached copy) and `--flake <url>`.
      '';
    };

    accessTokensFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/etc/nix/access-tokens.conf";
      description = ''
        A root-only file with an `access-tokens = host=token ...` line for a private
        repository, included from nix.conf. A string, not a Nix path: the token must not be
        copied into the world-readable Nix store.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.accessTokensFile == null || lib.hasPrefix "/" cfg.accessTokensFile;
        message = "imgbuild.gitops.accessTokensFile must be an absolute path on the machine (a string).";
      }
      {
        assertion = cfg.host != "";
        message = "imgbuild.gitops.host is empty: set networking.hostName or imgbuild.gitops.host.";
      }
    ];

    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];
    nix.extraOptions = mkIf (cfg.accessTokensFile != null) ''
      !include ${cfg.accessTokensFile}
    '';

    system.autoUpgrade = {
      enable = true;
      flake = flakeRef;
      inherit (cfg)
        dates
        randomizedDelaySec
        persistent
        operation
        allowReboot
        rebootWindow
        flags
        ;
    }
    # `--upgrade` updates nix-channels, which a flake system does not use; the flake's inputs
    # are pinned by its flake.lock (which Renovate keeps up to date). The option came with
    # nixpkgs 25.11: older releases always pass --upgrade, harmless without channels.
    // lib.optionalAttrs (options.system.autoUpgrade ? upgrade) {
      upgrade = false;
    };
  };
}
