# A host module of the test node list (nix/tests/eval.nix): only passed around, never evaluated.
{ ... }:
{
  networking.useDHCP = true;
}
