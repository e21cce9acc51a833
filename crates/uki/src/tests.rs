use super::*;
use crate::pe::{Pe, SectionHeader, SECTION_HEADER_SIZE};
use proptest::prelude::*;

use crate::sample::{self, stub, stub_with, STUB_SBAT};

fn sections(kernel: Kernel) -> Sections {
    Sections {
        os_release: b"NAME=NixOS\nPRETTY_NAME=\"NixOS 25.11 (Xantusia)\"\n".to_vec(),
        cmdline: "  init=/nix/store/abc-nixos-system/init\n root=LABEL=nixos  ".into(),
        devicetree: None,
        uname: Some("6.12.31".into()),
        initrd: 3000,
        linux: kernel,
    }
}

fn field32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn sections_follow_ukify_order_alignment_and_headers() {
    let stub = stub();
    let kernel = Kernel {
        len: 5000,
        size_of_image: Some(0x9000),
        sbat: None,
    };
    let parts = sections(kernel).parts(&stub).unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sbat"]
    );
    let layout = assemble(&stub, &parts).unwrap();
    let initrd = vec![0x11u8; 3000];
    let kernel = vec![0x22u8; 5000];
    let img = layout.to_vec(&[&initrd, &kernel]).unwrap();
    assert_eq!(img.len() as u64, layout.len);
    let pe = Pe::parse(&img).unwrap();
    let got: Vec<String> = pe.sections.iter().map(SectionHeader::name).collect();
    assert_eq!(
        got,
        [".text", ".sbat", ".sdmagic", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );
    let mut prev_end = 0x3000u64 + 0x1000; // .sdmagic's VA + its page
    for s in &pe.sections[3..] {
        assert_eq!(s.pointer_to_raw_data % 512, 0, "{}", s.name());
        assert_eq!(s.size_of_raw_data % 512, 0, "{}", s.name());
        assert_eq!(s.virtual_address % 0x1000, 0, "{}", s.name());
        assert!(u64::from(s.virtual_address) >= prev_end.min(u64::from(s.virtual_address)));
        prev_end = u64::from(s.virtual_address) + u64::from(s.virtual_size);
        let want = if s.name() == ".linux" {
            0x4000_0020
        } else {
            0x4000_0040
        };
        assert_eq!(s.characteristics, want, "{}", s.name());
    }
    // Sections follow one another in the file and in memory, in order.
    for w in pe.sections[3..].windows(2) {
        assert_eq!(
            w[1].pointer_to_raw_data,
            w[0].pointer_to_raw_data + w[0].size_of_raw_data
        );
        assert_eq!(
            w[1].virtual_address,
            (w[0].virtual_address + w[0].virtual_size).div_ceil(0x1000) * 0x1000
        );
    }
    let linux = pe.section(".linux").unwrap();
    assert_eq!(linux.virtual_size, 0x9000, "the kernel's SizeOfImage");
    assert_eq!(
        pe.size_of_image,
        (linux.virtual_address + 0x9000).div_ceil(0x1000) * 0x1000
    );
    assert_eq!(pe.checksum, 0);
    assert_eq!(pe.sections.len(), 8);
    let added: u32 = pe.sections[3..].iter().map(|s| s.virtual_size).sum();
    assert_eq!(pe.size_of_initialized_data, 0x1000 + added);
    assert_eq!(field32(&img, 0x84 + 4), 0x1234_5678, "TimeDateStamp kept");
    // The data is where the headers say.
    let info = read(&img).unwrap();
    assert_eq!(
        info.cmdline.as_deref(),
        Some("init=/nix/store/abc-nixos-system/init root=LABEL=nixos")
    );
    assert_eq!(info.uname.as_deref(), Some("6.12.31"));
    assert_eq!(info.pretty_name.as_deref(), Some("NixOS 25.11 (Xantusia)"));
    let at = |n: &str| pe.section(n).unwrap().pointer_to_raw_data as usize;
    assert_eq!(&img[at(".initrd")..at(".initrd") + 3000], &initrd[..]);
    assert_eq!(&img[at(".linux")..at(".linux") + 5000], &kernel[..]);
    assert_eq!(layout.sections.len(), 8);
    assert_eq!(
        layout.sections[7].offset,
        u64::from(linux.pointer_to_raw_data)
    );
}

#[test]
fn sbat_is_merged_into_the_stubs_section_in_place() {
    let stub = stub();
    let kernel_sbat = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\r\nlinux,1,The Linux Developers,linux,6.12,https://linux.org\n\0\0\0";
    let kernel = Kernel {
        len: 10,
        size_of_image: None,
        sbat: Some(kernel_sbat.to_vec()),
    };
    let parts = sections(kernel).parts(&stub).unwrap();
    let img = assemble(&stub, &parts)
        .unwrap()
        .to_vec(&[&[0; 3000], &[0; 10]])
        .unwrap();
    let pe = Pe::parse(&img).unwrap();
    assert_eq!(
        pe.sections.iter().filter(|s| s.name() == ".sbat").count(),
        1
    );
    let sbat = pe.section(".sbat").unwrap();
    assert_eq!(
        sbat.pointer_to_raw_data,
        0x400 + 1024,
        "kept where the stub had it"
    );
    let want = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n\
                systemd-stub,1,The systemd Developers,systemd,257,https://systemd.io/\n\
                linux,1,The Linux Developers,linux,6.12,https://linux.org\n\
                uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n\0";
    assert_eq!(sbat.data(&img).unwrap(), want.as_bytes());
    assert_eq!(sbat.virtual_size as usize, want.len());
    // The kernel without an EFI header: `.linux`'s VirtualSize is its length.
    assert_eq!(pe.section(".linux").unwrap().virtual_size, 10);
    // The stub's next section is untouched.
    let magic = pe.section(".sdmagic").unwrap();
    assert!(magic.data(&img).unwrap().starts_with(b"#### LoaderInfo"));
}

#[test]
fn sbat_lines_split_as_python_does() {
    let merged = sbat::merge(
        &[b"sbat,1,x\na\r\nb\rc\n\0\0"],
        &["not sbat\nz\n", "sbat,2\nd"],
    )
    .unwrap();
    assert_eq!(
        merged,
        format!("{}\na\nb\nc\nd\n\0", sbat::HEADER).into_bytes()
    );
    assert_eq!(
        sbat::merge(&[&[0xff, 0xfe]], &[]),
        Err(Error::BadSbat { input: 0 })
    );
}

#[test]
fn unaligned_stub_is_realigned_and_its_trailing_symbols_stripped() {
    // Sections of 100 and 700 raw bytes with FileAlignment 512: ukify pads both.
    let mut stub = stub_with(&[(".text", &[1; 100], 100), (".sbat", STUB_SBAT, 300)], 512);
    let syms_at = stub.len() as u32;
    stub.extend_from_slice(&[0xaa; 36]); // two symbols
    stub.extend_from_slice(&8u32.to_le_bytes()); // string table: its size field + 4 bytes
    stub.extend_from_slice(b"abcd");
    stub[0x84 + 8..0x84 + 12].copy_from_slice(&syms_at.to_le_bytes());
    stub[0x84 + 12..0x84 + 16].copy_from_slice(&2u32.to_le_bytes());
    let parts = vec![Part {
        name: ".osrel".into(),
        data: Data::Bytes(b"ID=nixos\n".to_vec()),
        virtual_size: None,
    }];
    let img = assemble(&stub, &parts).unwrap().to_vec(&[]).unwrap();
    let pe = Pe::parse(&img).unwrap();
    assert_eq!(pe.pointer_to_symbol_table, 0);
    assert_eq!(pe.number_of_symbols, 0);
    assert_eq!(
        pe.characteristics & pe::LOCAL_SYMS_STRIPPED,
        pe::LOCAL_SYMS_STRIPPED
    );
    let text = &pe.sections[0];
    let sbat = &pe.sections[1];
    assert_eq!(
        (text.pointer_to_raw_data, text.size_of_raw_data),
        (0x400, 512)
    );
    assert_eq!(
        (sbat.pointer_to_raw_data, sbat.size_of_raw_data),
        (0x600, 512)
    );
    assert_eq!(sbat.data(&img).unwrap(), STUB_SBAT);
    let osrel = &pe.sections[2];
    assert_eq!(osrel.pointer_to_raw_data, 0x800);
    assert_eq!(img.len(), 0xa00, "no symbol table left");
    assert!(!img.windows(4).any(|w| w == [0xaa; 4]));
}

#[test]
fn refusals_are_typed() {
    let stub = stub();
    // A signed stub.
    let mut signed = stub.clone();
    let opt = 0x84 + 20;
    signed[opt + 112 + 32..opt + 112 + 36].copy_from_slice(&0x800u32.to_le_bytes());
    assert_eq!(assemble(&signed, &[]), Err(Error::SignedStub));
    // No header room: 1 KiB of headers hold 13 section headers after 0x188.
    let many: Vec<Part> = (0..20)
        .map(|i| Part {
            name: format!(".s{i}"),
            data: Data::Bytes(vec![1]),
            virtual_size: None,
        })
        .collect();
    let room = (0x400 - (0x84 + 20 + 240)) / SECTION_HEADER_SIZE - 3;
    assert_eq!(
        assemble(&stub, &many),
        Err(Error::NoHeaderRoom {
            name: format!(".s{room}")
        })
    );
    // An .sbat bigger than the stub's section.
    let big = Part {
        name: ".sbat".into(),
        data: Data::Bytes(vec![b'x'; 600]),
        virtual_size: None,
    };
    assert!(matches!(
        assemble(&stub, &[big]),
        Err(Error::NoRoomInSection {
            needed: 600,
            room: 512,
            ..
        })
    ));
    assert!(matches!(
        assemble(
            &stub,
            &[Part {
                name: ".toolongname".into(),
                data: Data::Bytes(vec![]),
                virtual_size: None
            }]
        ),
        Err(Error::BadSectionName { .. })
    ));
    for (cut, what) in [(1, "no MZ signature"), (0x81, "no PE signature")] {
        assert_eq!(
            Pe::parse(&stub[..cut]),
            Err(Error::NotPe { what }),
            "cut at {cut}"
        );
    }
    let layout = assemble(&stub, &sections(Kernel::default()).parts(&stub).unwrap()).unwrap();
    assert_eq!(
        layout.to_vec(&[&[0; 3000]]),
        Err(Error::ExternalMissing { index: 1 })
    );
    assert!(matches!(
        layout.to_vec(&[&[0; 2999], &[]]),
        Err(Error::ExternalLength {
            index: 0,
            declared: 3000,
            given: 2999
        })
    ));
}

#[test]
fn same_inputs_same_bytes() {
    let stub = stub();
    let k = || Kernel {
        len: 4,
        size_of_image: Some(0x2000),
        sbat: None,
    };
    let a = assemble(&stub, &sections(k()).parts(&stub).unwrap()).unwrap();
    let b = assemble(&stub, &sections(k()).parts(&stub).unwrap()).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.to_vec(&[&[7; 3000], b"linu"]).unwrap(),
        b.to_vec(&[&[7; 3000], b"linu"]).unwrap()
    );
}

#[test]
fn kernel_read_takes_size_of_image_and_sbat_of_a_pe_kernel() {
    let k = stub_with(
        &[
            (".text", &[1; 10], 512),
            (".sbat", b"sbat,1,a\nlinux,1\n", 512),
        ],
        512,
    );
    let info = Kernel::read(&k);
    assert_eq!(info.len, k.len() as u64);
    assert_eq!(info.size_of_image, Some(0x3000));
    assert!(info.sbat.unwrap().starts_with(b"sbat,1,a\nlinux,1\n"));
    assert_eq!(Kernel::read(b"\x7fELF not a PE").size_of_image, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Any byte changed, any cut: the readers and the assembly refuse or succeed, never
    /// panic, and what assembles reads back.
    #[test]
    fn mutated_stubs_never_panic(at in 0usize..0x1000, v in any::<u8>(), cut in 0usize..0x1200) {
        let mut s = stub();
        if at < s.len() { s[at] = v; }
        s.truncate(cut.max(1));
        let _ = read(&s);
        let _ = Kernel::read(&s);
        if let Ok(parts) = sections(Kernel::default()).parts(&s) {
            if let Ok(layout) = assemble(&s, &parts) {
                prop_assume!(layout.len < 1 << 24);
                let img = layout.to_vec(&[&[0; 3000], &[]]).unwrap();
                prop_assert!(read(&img).is_ok());
            }
        }
    }
}

#[test]
fn a_prefix_is_enough_to_read_the_headers_and_texts() {
    let stub = stub();
    let parts = sections(Kernel::default()).parts(&stub).unwrap();
    let img = assemble(&stub, &parts)
        .unwrap()
        .to_vec(&[&[9; 3000], &[]])
        .unwrap();
    let whole = read(&img).unwrap();
    let initrd = whole.sections.iter().find(|s| s.name == ".initrd").unwrap();
    let cut = usize::try_from(initrd.offset).unwrap();
    let part = read_prefix(&img[..cut], img.len() as u64).unwrap();
    assert_eq!(part, whole);
    // Without the text sections' bytes: the sections, but no texts.
    let osrel = whole.sections.iter().find(|s| s.name == ".osrel").unwrap();
    let short = read_prefix(
        &img[..usize::try_from(osrel.offset).unwrap()],
        img.len() as u64,
    )
    .unwrap();
    assert_eq!(short.sections, whole.sections);
    assert_eq!(
        (short.cmdline, short.uname, short.pretty_name),
        (None, None, None)
    );
    // A file shorter than its sections say is refused.
    assert!(matches!(
        read_prefix(&img[..cut], initrd.offset),
        Err(Error::SectionOutside { .. })
    ));
    assert!(matches!(
        read_prefix(&img[..0x100], img.len() as u64),
        Err(Error::NotPe { .. })
    ));
}

#[test]
fn hostile_stubs_found_by_the_fuzzer_are_refused_or_left_whole() {
    // Section data inside the headers (realigning it would move the PE header).
    let mut s = stub();
    let table = sample::COFF + 20 + 240;
    s[table + 20..table + 24].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        assemble(&s, &[]),
        Err(Error::NotPe {
            what: "section data overlaps the headers"
        })
    );
    // A section without data after an unaligned one: moved to offset 1 by the padding
    // before it, then padded there (the fuzzer's uki-0).
    let mut s = stub_with(&[(".text", &[1; 100], 100), (".bss", &[], 0)], 512);
    let bss = sample::COFF + 20 + 240 + 40;
    s[bss + 20..bss + 24].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        assemble(&s, &[]),
        Err(Error::NotPe {
            what: "section data overlaps the headers"
        })
    );
    // A FileAlignment above the PE specification's 64 KiB.
    let mut s = stub();
    s[sample::COFF + 20 + 36..sample::COFF + 20 + 40].copy_from_slice(&0x2_0000u32.to_le_bytes());
    assert!(matches!(
        assemble(&s, &[]),
        Err(Error::BadAlignment {
            what: "FileAlignment",
            value: 0x2_0000
        })
    ));
    // A symbol table "ending the file" but pointing into the sections is not cut.
    let mut s = stub();
    let at = 0x400u32; // .text's data
    let count = (s.len() as u32 - at).div_ceil(18);
    s.resize((at + 18 * count) as usize, 0);
    s.extend_from_slice(&4u32.to_le_bytes()); // the string table: its size alone
    s[sample::COFF + 8..sample::COFF + 12].copy_from_slice(&at.to_le_bytes());
    s[sample::COFF + 12..sample::COFF + 16].copy_from_slice(&count.to_le_bytes());
    let pe = Pe::parse(&s).unwrap();
    let img = assemble(&s, &[]).unwrap().to_vec(&[]).unwrap();
    assert_eq!(img.len(), s.len(), "the file was cut");
    let back = Pe::parse(&img).unwrap();
    assert_eq!(back.sections.len(), pe.sections.len());
    assert_eq!(back.pointer_to_symbol_table, at);
}
