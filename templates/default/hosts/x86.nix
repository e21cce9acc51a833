# An x86_64 PC with UEFI: raw disk image (GPT, systemd-boot), written to its SSD or a USB stick.
{ ... }:
{
  hardware.enableRedistributableFirmware = true;
  hardware.cpu.intel.updateMicrocode = true;
  hardware.cpu.amd.updateMicrocode = true;

  networking.useDHCP = true;
}
