# A host module of the test node list (nix/tests/eval.nix): only passed around, never evaluated.
{ ... }:
{
  hardware.enableRedistributableFirmware = true;
}
