//! Placeholder: filled in by the owner of this subcommand.

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {}

/// Run the subcommand.
pub fn run(_args: &ProbeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
