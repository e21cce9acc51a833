//! `--secure-boot-key`, `--secure-boot-cert`, `--secure-boot-enroll` into the plan's
//! [`SecureBootOptions`].

use imgbuild_plan::secure_boot::{Enroll, SecureBootOptions};

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
    /// The Secure Boot options, when a key was given.
    pub(crate) fn secure_boot(&self) -> Option<SecureBootOptions> {
        let (key, cert) = (
            self.secure_boot_key.clone()?,
            self.secure_boot_cert.clone()?,
        );
        Some(SecureBootOptions {
            key,
            cert,
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
