# The platform settings of the formats that are the raw-efi disk for one cloud or hypervisor
# (openstack, kubevirt, oci, vagrant-virtualbox), the raw disk for CloudStack and Linode's
# table-less disk: what nixpkgs' module for that image variant sets besides the disk layout,
# written here from those modules' facts
# (maintainers/scripts/openstack/openstack-image.nix + virtualisation/openstack-config.nix,
# virtualisation/kubevirt.nix, virtualisation/oci-image.nix + oci-common.nix,
# virtualisation/vagrant-virtualbox-image.nix + vagrant-guest.nix,
# maintainers/scripts/cloudstack/cloudstack-image.nix + virtualisation/cloudstack-config.nix,
# virtualisation/linode-image.nix + linode-config.nix), minus their disk and boot loader
# settings (imgbuild's module sets those for the format's disk: systemd-boot for raw-efi,
# GRUB for cloudstack and linode).
# Imported by nixosModules.imgbuild; active only for its format. Every value is a default:
# a configuration may set its own.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkDefault mkIf mkMerge;
  format = config.imgbuild.format;
  # nixpkgs' profiles/qemu-guest.nix: virtio devices in the initrd and the system.
  qemuGuest = {
    boot.initrd.availableKernelModules = [
      "virtio_net"
      "virtio_pci"
      "virtio_mmio"
      "virtio_blk"
      "virtio_scsi"
    ];
    boot.initrd.kernelModules = [
      "virtio_balloon"
      "virtio_console"
      "virtio_rng"
    ];
  };
in
{
  config = mkMerge [
    (mkIf (format == "openstack") (mkMerge [
      qemuGuest
      {
        # Instance metadata (SSH keys, host name, user data) from the metadata service or
        # the config drive; the host name comes from it.
        services.cloud-init.enable = mkDefault true;
        networking.hostName = mkDefault "";
        services.openssh = {
          enable = mkDefault true;
          settings.PermitRootLogin = mkDefault "prohibit-password";
          settings.PasswordAuthentication = mkDefault false;
        };
        # The console OpenStack's dashboard shows, next to the serial port.
        systemd.services."serial-getty@ttyS0".enable = mkDefault true;
      }
    ]))

    (mkIf (format == "kubevirt") (mkMerge [
      qemuGuest
      {
        services.qemuGuest.enable = mkDefault true;
        services.openssh.enable = mkDefault true;
        # KubeVirt hands SSH keys and user data over NoCloud or ConfigDrive volumes.
        services.cloud-init.enable = mkDefault true;
        systemd.services."serial-getty@ttyS0".enable = mkDefault true;
      }
    ]))

    (mkIf (format == "oci") (mkMerge [
      qemuGuest
      {
        # OCI's kernel parameters (what Oracle's own images boot with).
        boot.kernelParams = [
          "nvme.shutdown_timeout=10"
          "nvme_core.shutdown_timeout=10"
          "libiscsi.debug_libiscsi_eh=1"
          "crash_kexec_post_notifiers"
        ];
        networking.timeServers = mkDefault [ "169.254.169.254" ];
        networking.useNetworkd = mkDefault true;
        services.openssh.enable = mkDefault true;
        # root's SSH keys from the instance metadata service (IMDS v2), once.
        systemd.services.imgbuild-oci-ssh-keys = {
          description = "Fetch root's authorized SSH keys from OCI's instance metadata";
          wantedBy = [ "sshd.service" ];
          before = [ "sshd.service" ];
          after = [ "network-online.target" ];
          wants = [ "network-online.target" ];
          path = [
            pkgs.coreutils
            pkgs.curl
          ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
          };
          script = ''
            if [ -s /root/.ssh/authorized_keys ]; then
              exit 0
            fi
            install -d -m 0700 /root/.ssh
            curl --silent --show-error --fail --location --retry 5 \
              --header "Authorization: Bearer Oracle" \
              --output /root/.ssh/authorized_keys.new \
              http://169.254.169.254/opc/v2/instance/metadata/ssh_authorized_keys
            chmod 0600 /root/.ssh/authorized_keys.new
            mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
          '';
        };
      }
    ]))

    (mkIf (format == "cloudstack") (mkMerge [
      qemuGuest
      {
        services.openssh = {
          enable = mkDefault true;
          settings.PermitRootLogin = mkDefault "prohibit-password";
        };
        # SSH keys, the password and user data from the virtual router; only CloudStack's
        # data source is tried, so the boot does not wait on the others.
        services.cloud-init.enable = mkDefault true;
        environment.etc."cloud/cloud.cfg.d/99_cloudstack.cfg".text = mkDefault ''
          datasource:
            CloudStack: {}
            None: {}
          datasource_list: ["CloudStack"]
        '';
        # cloud-init's password setting fetches with wget.
        environment.systemPackages = [ pkgs.wget ];
      }
    ]))

    (mkIf (format == "linode") (mkMerge [
      qemuGuest
      {
        services.openssh = {
          enable = mkDefault true;
          settings.PermitRootLogin = mkDefault "prohibit-password";
          settings.PasswordAuthentication = mkDefault false;
        };
        # Linode's network helper expects eth0 with DHCP and no IPv6 privacy addresses.
        networking.usePredictableInterfaceNames = mkDefault false;
        networking.useDHCP = mkDefault false;
        networking.interfaces.eth0 = {
          useDHCP = mkDefault true;
          tempAddress = mkDefault "disabled";
        };
        # What Linode's support asks for when diagnosing a node.
        environment.systemPackages = with pkgs; [
          inetutils
          mtr
          sysstat
        ];
        # A Linode configuration profile gives its swap disk as the second one.
        swapDevices = mkDefault [ { device = "/dev/sdb"; } ];
      }
    ]))

    (mkIf (format == "vagrant-virtualbox") {
      virtualisation.virtualbox.guest.enable = mkDefault true;
      services.openssh.enable = mkDefault true;
      # What Vagrant runs in its boxes (synced folders, networking).
      environment.systemPackages = with pkgs; [
        findutils
        iputils
        nettools
        netcat
        nfs-utils
        rsync
      ];
      # Vagrant logs in as `vagrant` with its published insecure key (and replaces it with a
      # fresh one on `vagrant up`), then uses password-less sudo.
      users.users.vagrant = {
        isNormalUser = true;
        description = "Vagrant user account";
        extraGroups = [
          "users"
          "wheel"
          "vboxsf"
        ];
        uid = mkDefault 1000;
        password = mkDefault "vagrant";
        openssh.authorizedKeys.keys = [
          "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key"
        ];
      };
      security.sudo.wheelNeedsPassword = mkDefault false;
    })
  ];
}
