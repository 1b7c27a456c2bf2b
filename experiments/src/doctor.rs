//! `swaplab doctor`: placeholder, written next.

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run the subcommand.
pub fn run(_args: &DoctorArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
