//! The text files of nixpkgs' netboot (`nixos/modules/installer/netboot/netboot.nix`): the
//! iPXE script `netboot.ipxe` beside the kernel and the initrd, and the `kexec-boot` script
//! of the kexec tree (`bzImage`, `initrd.gz`, `kexec-boot`).
//!
//! Both boot `init=<toplevel>/init` followed by the toplevel's kernel parameters, as the
//! module writes them (`init=${toplevel}/init ... ${toString config.boot.kernelParams}`).

use crate::{check_line, BootEntry, Error, Result};

/// The initrd's name beside the kernel and `netboot.ipxe` (nixpkgs' netboot directory).
pub const NETBOOT_INITRD: &str = "initrd";
/// The iPXE script's name.
pub const NETBOOT_IPXE: &str = "netboot.ipxe";
/// The kernel's name in the kexec tree (nixpkgs names it so on every architecture).
pub const KEXEC_KERNEL: &str = "bzImage";
/// The initrd's name in the kexec tree (whatever its compression).
pub const KEXEC_INITRD: &str = "initrd.gz";
/// The kexec script's name in the kexec tree.
pub const KEXEC_SCRIPT: &str = "kexec-boot";

/// The kernel's file name in the netboot directory and the iPXE script: the kernel file's
/// own name (`bzImage` on x86_64, `Image` on aarch64: nixpkgs' `linux-kernel.target`).
pub fn netboot_kernel_name(entry: &BootEntry) -> Result<&str> {
    let (_, rest) = crate::split_store_path("kernel", &entry.kernel)?;
    match rest.rsplit('/').next() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Error::NotInStore {
            what: "kernel",
            path: entry.kernel.clone(),
        }),
    }
}

/// `init=<toplevel>/init p1 p2 ...` (a trailing space without parameters, as the module's
/// string interpolation leaves it), each part checked to be one line.
fn params(entry: &BootEntry) -> Result<(String, String)> {
    crate::split_store_path("toplevel", &entry.toplevel)?;
    for p in &entry.kernel_params {
        check_line("kernel parameter", p, true)?;
    }
    Ok((
        format!("init={}/init", entry.toplevel),
        entry.kernel_params.join(" "),
    ))
}

/// `netboot.ipxe`: loads the kernel and `initrd` from beside the script and boots them with
/// the entry's command line, then `${cmdline}` (a variable a chainloading script such as
/// netboot.xyz's may set) as nixpkgs' script does.
pub fn ipxe_script(entry: &BootEntry) -> Result<String> {
    let kernel = netboot_kernel_name(entry)?;
    let (init, params) = params(entry)?;
    Ok(format!(
        "#!ipxe\n\
         # Appends ${{cmdline}}, which a script chainloading this one (netboot.xyz) may set.\n\
         kernel {kernel} {init} initrd={NETBOOT_INITRD} {params} ${{cmdline}}\n\
         initrd {NETBOOT_INITRD}\n\
         boot\n"
    ))
}

/// `kexec-boot`: loads `bzImage` and `initrd.gz` from the script's own directory with the
/// entry's command line and executes the new kernel; stops with a message when `kexec` is
/// not installed. The command line is inside double quotes: `\`, `"`, `$` and `` ` `` in a
/// parameter are escaped so the shell passes them on unchanged.
pub fn kexec_script(entry: &BootEntry) -> Result<String> {
    let (init, params) = params(entry)?;
    let cmdline = shell_double_quoted(&format!("{init} {params}"));
    Ok(format!(
        "#!/usr/bin/env bash\n\
         if ! kexec -v >/dev/null 2>&1; then\n  \
         echo \"kexec not found: please install kexec-tools\" 2>&1\n  \
         exit 1\n\
         fi\n\
         SCRIPT_DIR=$( cd -- \"$( dirname -- \"${{BASH_SOURCE[0]}}\" )\" &> /dev/null && pwd )\n\
         kexec --load ${{SCRIPT_DIR}}/{KEXEC_KERNEL} \\\n  \
         --initrd=${{SCRIPT_DIR}}/{KEXEC_INITRD} \\\n  \
         --command-line \"{cmdline}\"\n\
         kexec -e\n"
    ))
}

/// `s` escaped for the inside of a shell double-quoted string.
fn shell_double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPLEVEL: &str = "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-nixos-system-demo-26.11";

    fn entry(params: &[&str]) -> BootEntry {
        BootEntry {
            toplevel: TOPLEVEL.into(),
            init: format!("{TOPLEVEL}/init"),
            kernel: "/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-linux-6.12/bzImage".into(),
            initrd: Some("/nix/store/2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c-initrd/initrd".into()),
            kernel_params: params.iter().map(|p| p.to_string()).collect(),
            label: "NixOS".into(),
            system: "x86_64-linux".into(),
            dtbs: None,
            devicetree: None,
        }
    }

    #[test]
    fn ipxe_script_boots_the_entry() {
        let s = ipxe_script(&entry(&["console=ttyS0", "loglevel=4"])).unwrap();
        assert_eq!(
            s.lines().collect::<Vec<_>>(),
            [
                "#!ipxe",
                "# Appends ${cmdline}, which a script chainloading this one (netboot.xyz) may set.",
                &format!(
                    "kernel bzImage init={TOPLEVEL}/init initrd=initrd console=ttyS0 loglevel=4 \
                     ${{cmdline}}"
                ),
                "initrd initrd",
                "boot",
            ]
        );
        assert!(s.ends_with("boot\n"));
        // No parameters: the module's interpolation leaves two spaces.
        let s = ipxe_script(&entry(&[])).unwrap();
        assert!(s.contains("initrd=initrd  ${cmdline}\n"), "{s}");
        let mut aarch64 = entry(&[]);
        aarch64.kernel = "/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-linux-6.12/Image".into();
        assert_eq!(netboot_kernel_name(&aarch64).unwrap(), "Image");
        assert!(ipxe_script(&aarch64)
            .unwrap()
            .contains("\nkernel Image init="));
    }

    #[test]
    fn kexec_script_loads_from_its_directory() {
        let s = kexec_script(&entry(&["console=ttyS0", "a=\"$x\\`"])).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!/usr/bin/env bash");
        assert_eq!(lines[1], "if ! kexec -v >/dev/null 2>&1; then");
        assert_eq!(
            lines[5],
            "SCRIPT_DIR=$( cd -- \"$( dirname -- \"${BASH_SOURCE[0]}\" )\" &> /dev/null && pwd )"
        );
        assert_eq!(lines[6], "kexec --load ${SCRIPT_DIR}/bzImage \\");
        assert_eq!(lines[7], "  --initrd=${SCRIPT_DIR}/initrd.gz \\");
        assert_eq!(
            lines[8],
            format!("  --command-line \"init={TOPLEVEL}/init console=ttyS0 a=\\\"\\$x\\\\\\`\"")
        );
        assert_eq!(lines[9], "kexec -e");
        assert_eq!(lines.len(), 10);
    }

    /// bash itself reads the command line back unchanged, quotes and dollars included.
    #[test]
    fn bash_passes_the_command_line_through() {
        let e = entry(&["console=ttyS0", "a=\"$HOME\\`x`"]);
        let s = kexec_script(&e).unwrap();
        let line = s.lines().nth(8).unwrap();
        let quoted = line.trim_start().strip_prefix("--command-line ").unwrap();
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("printf %s {quoted}")])
            .output()
            .expect("bash runs");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("init={TOPLEVEL}/init console=ttyS0 a=\"$HOME\\`x`")
        );
    }

    #[test]
    fn refuses_what_would_break_the_scripts() {
        let e = entry(&["a\nb"]);
        assert!(matches!(ipxe_script(&e), Err(Error::BadText { .. })));
        assert!(matches!(kexec_script(&e), Err(Error::BadText { .. })));
        let mut e = entry(&[]);
        e.kernel = "/boot/bzImage".into();
        assert!(matches!(ipxe_script(&e), Err(Error::NotInStore { .. })));
    }
}
