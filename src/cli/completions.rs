//! `cathedral completions <shell>`.

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Outcome};
use cathedral_bundle::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for.
    shell: Shell,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cathedral", &mut out);
    let mut output = super::output::Output::open(None, false)?;
    output.write_bytes(&out)?;
    output.commit()?;
    Ok(Outcome::Ok)
}
