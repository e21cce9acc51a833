//! OVA: an OVF 1.0 package in one tar: the descriptor `nixos.ovf`, the stream-optimized
//! `disk.vmdk`, and the manifest `nixos.mf` (SHA-256 of both), in that order (OVF 1.1 allows
//! the manifest last, which is what a one-pass writer can do: it needs the disk's hash).
//! A Vagrant box for VirtualBox is the same package under other names (`box.ovf`, `box.mf`)
//! with two more members after the manifest, `Vagrantfile` and `metadata.json`
//! ([`Members::vagrant_virtualbox`]).
//!
//! The descriptor names the disk's size, so it is written last, at the front of the file,
//! into space reserved for it: its length is fixed beforehand with the widest size, and the
//! real text is padded with trailing white space (allowed after an XML document's root
//! element). The VMDK member's tar header, which holds its length, is also written at the
//! end. The virtual machine: 2 CPUs, 2 GiB, an LSI Logic SCSI disk, one NAT network card,
//! EFI firmware (`vmw:Config firmware=efi`, read by VMware and VirtualBox).

use std::fs::File;
use std::os::unix::fs::FileExt;

use imgbuild_diskmap::sinks::hex;
use imgbuild_tar::header::{EntryType, Header};
use sha2::{Digest, Sha256};

use crate::{Error, Params, Result};

const BLOCK: u64 = 512;
const RECORD: u64 = 20 * BLOCK;
/// Name of the OVF descriptor inside the OVA tar.
pub const OVF_NAME: &str = "nixos.ovf";
/// Name of the manifest (SHA-256 of the other members) inside the OVA tar.
pub const MF_NAME: &str = "nixos.mf";

/// The `Vagrantfile` of a VirtualBox box, as nixpkgs' vagrant-virtualbox image writes it:
/// the MAC address Vagrant gives the first network card (the one NAT port forwarding uses).
pub const VAGRANTFILE: &str =
    "Vagrant.configure(\"2\") do |config|\n  config.vm.base_mac = \"0800275F0936\"\nend\n";

/// A box's `metadata.json`: the provider it is for (Vagrant's box format v1).
pub const VAGRANT_METADATA: &str = "{\"provider\":\"virtualbox\"}\n";

/// How an OVF package's members are named, and what follows its manifest.
#[derive(Clone, Debug)]
pub struct Members {
    /// The descriptor (`nixos.ovf`; a Vagrant box's `box.ovf`, the name Vagrant imports).
    pub ovf: &'static str,
    /// The manifest, named as the descriptor with `.mf` (OVF 1.0, 10.1).
    pub mf: &'static str,
    /// Further regular files after the manifest, in this order: name and contents.
    pub extra: Vec<(&'static str, Vec<u8>)>,
}

impl Members {
    /// An OVA: `nixos.ovf`, `disk.vmdk`, `nixos.mf`.
    pub fn ova() -> Self {
        Members {
            ovf: OVF_NAME,
            mf: MF_NAME,
            extra: Vec::new(),
        }
    }

    /// A Vagrant box for VirtualBox (box format v1, uncompressed tar, which `vagrant box add`
    /// takes like a `.tar.gz`): `box.ovf`, `disk.vmdk`, `box.mf`, `Vagrantfile`,
    /// `metadata.json`.
    pub fn vagrant_virtualbox() -> Self {
        Members {
            ovf: "box.ovf",
            mf: "box.mf",
            extra: vec![
                ("Vagrantfile", VAGRANTFILE.as_bytes().to_vec()),
                ("metadata.json", VAGRANT_METADATA.as_bytes().to_vec()),
            ],
        }
    }
}

/// Where the OVA's parts go.
#[derive(Clone, Debug)]
pub struct Ova {
    params: Params,
    name: String,
    members: Members,
    /// Bytes reserved for the descriptor (a multiple of 512).
    ovf_len: u64,
}

/// The ustar header of the regular file `name` of `size` bytes: mode 0644, owner 0, no pax
/// header (a size of 8 GiB or more goes in base-256, as GNU tar and libarchive read it), so
/// every member starts where [`Ova::vmdk_offset`] and the reserved space say.
fn tar_header(name: &str, size: u64, mtime: i64) -> [u8; imgbuild_tar::header::BLOCK] {
    Header {
        path: name.as_bytes(),
        link: b"",
        kind: EntryType::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size,
        mtime,
        dev: (0, 0),
        sparse: None,
    }
    .ustar_block()
}

impl Ova {
    /// An OVA of a disk of `params.disk_size` bytes for a virtual machine called `name`.
    pub fn new(params: &Params, name: &str) -> Result<Self> {
        Self::with_members(params, name, Members::ova())
    }

    /// The same package with the members `members` names (a Vagrant box).
    pub fn with_members(params: &Params, name: &str, members: Members) -> Result<Self> {
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::BadMachineName { name: name.into() });
        }
        let mut ova = Ova {
            params: params.clone(),
            name: name.to_string(),
            members,
            ovf_len: 0,
        };
        ova.ovf_len = (ova.descriptor(u64::MAX).len() as u64).next_multiple_of(BLOCK);
        Ok(ova)
    }

    /// Where the VMDK's bytes start in the file.
    pub fn vmdk_offset(&self) -> u64 {
        BLOCK + self.ovf_len + BLOCK
    }

    /// The OVF descriptor for a VMDK of `vmdk_size` bytes.
    fn descriptor(&self, vmdk_size: u64) -> String {
        let (name, capacity) = (&self.name, self.params.disk_size);
        let vmdk = crate::vmdk::FILE_NAME;
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="{vmdk}" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks</Info>
    <Network ovf:name="NAT">
      <Description>NAT network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A NixOS virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="other5xLinux64Guest">
      <Info>The guest operating system</Info>
      <Description>NixOS (Linux 64-bit)</Description>
      <vbox:OSType ovf:required="false">Linux_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14 virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory</rasd:Description>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
        )
    }

    /// After the VMDK's `vmdk_len` bytes (SHA-256 `vmdk_sha256`) are in `file` at
    /// [`Ova::vmdk_offset`]: the manifest, the end of the archive, then the descriptor and
    /// the VMDK's tar header at the front. Returns the OVA's length.
    pub fn finish(&self, file: &File, vmdk_len: u64, vmdk_sha256: &[u8]) -> Result<u64> {
        let write = |at: u64, b: &[u8]| {
            file.write_all_at(b, at).map_err(|source| Error::Write {
                format: "ova",
                offset: at,
                source,
            })
        };
        let mut ovf = self.descriptor(vmdk_len).into_bytes();
        debug_assert!(ovf.len() as u64 <= self.ovf_len);
        ovf.resize(usize::try_from(self.ovf_len).unwrap_or(usize::MAX), b'\n');
        let manifest = format!(
            "SHA256({})= {}\nSHA256({})= {}\n",
            self.members.ovf,
            hex(&Sha256::digest(&ovf)),
            crate::vmdk::FILE_NAME,
            hex(vmdk_sha256)
        );
        let mut at = (self.vmdk_offset() + vmdk_len).next_multiple_of(BLOCK);
        // Pad the VMDK member to a block.
        let pad = at - self.vmdk_offset() - vmdk_len;
        write(at - pad, &vec![0; usize::try_from(pad).unwrap_or(0)])?;
        let members = std::iter::once((self.members.mf, manifest.into_bytes())).chain(
            self.members
                .extra
                .iter()
                .map(|(name, bytes)| (*name, bytes.clone())),
        );
        for (name, mut bytes) in members {
            write(at, &tar_header(name, bytes.len() as u64, self.params.time))?;
            at += BLOCK;
            bytes.resize(
                usize::try_from((bytes.len() as u64).next_multiple_of(BLOCK)).unwrap_or(0),
                0,
            );
            write(at, &bytes)?;
            at += bytes.len() as u64;
        }
        let end = (at + 2 * BLOCK).next_multiple_of(RECORD);
        write(at, &vec![0; usize::try_from(end - at).unwrap_or(0)])?;
        write(
            0,
            &tar_header(self.members.ovf, self.ovf_len, self.params.time),
        )?;
        write(BLOCK, &ovf)?;
        write(
            BLOCK + self.ovf_len,
            &tar_header(crate::vmdk::FILE_NAME, vmdk_len, self.params.time),
        )?;
        Ok(end)
    }
}
