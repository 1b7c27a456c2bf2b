//! Placeholder: filled in by the owner of this subcommand.

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {}

/// Run the subcommand.
pub fn run(_args: &ImageArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
