# Raspberry Pi 4 (also boots Pi 3 and 400/CM4): SD card image, U-Boot + extlinux.
{ ... }:
{
  # Wi-Fi and Bluetooth firmware of the Pi.
  hardware.enableRedistributableFirmware = true;

  networking.useDHCP = true;
}
