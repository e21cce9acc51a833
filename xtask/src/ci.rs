//! CI
#[derive(clap::Args)]
pub struct CiArgs {}
pub fn run(_a: CiArgs) -> anyhow::Result<()> { Ok(()) }
