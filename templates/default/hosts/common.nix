# Shared by every machine.
{ ... }:
{
  # The machines pull their configuration from this repository (nixosModules.gitops):
  # `nixos-rebuild switch --flake github:OWNER/machines#<hostname> --refresh`, hourly.
  imgbuild.gitops = {
    enable = true;
    flake = "github:OWNER/machines"; # this repository
    # Private repository: a read-only token in a root-only file on each machine
    # (`access-tokens = github.com=github_pat_...`), see README.md.
    # accessTokensFile = "/etc/nix/access-tokens.conf";
    # allowReboot = true;
    # rebootWindow = { lower = "02:00"; upper = "05:00"; };
  };

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
  users.users.root.openssh.authorizedKeys.keys = [
    # "ssh-ed25519 AAAA... you@laptop"
  ];

  nix.settings.trusted-users = [ "root" ];
  time.timeZone = "UTC";

  system.stateVersion = "25.11";
}
