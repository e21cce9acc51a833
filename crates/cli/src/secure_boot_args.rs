//! `--secure-boot-key` (or `--secure-boot-signatures`), `--secure-boot-cert`,
//! `--secure-boot-enroll` into the plan's
//! [`SecureBootOptions`].

use imgbuild_plan::secure_boot::{Enroll, SecureBootOptions, Signing};

use crate::EspArgs;

/// `--secure-boot-enroll`'s values, systemd-boot's.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum EnrollArg {
    Off,
    Manual,
    IfSafe,
    Force,
}

impl EspArgs {
    /// The Secure Boot options, when a key or a signatures directory was given.
    pub(crate) fn secure_boot(&self) -> Option<SecureBootOptions> {
        let signing = match (&self.secure_boot_key, &self.secure_boot_signatures) {
            (Some(key), _) => Signing::Key(key.clone()),
            (None, Some(dir)) => Signing::Detached(dir.clone()),
            (None, None) => return None,
        };
        Some(SecureBootOptions {
            signing,
            cert: self.secure_boot_cert.clone()?,
            enroll: match self.secure_boot_enroll {
                None => Enroll::Default,
                Some(EnrollArg::Off) => Enroll::Off,
                Some(EnrollArg::Manual) => Enroll::Manual,
                Some(EnrollArg::IfSafe) => Enroll::IfSafe,
                Some(EnrollArg::Force) => Enroll::Force,
            },
        })
    }
}
