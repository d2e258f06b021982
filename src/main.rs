//! `cathedral`: capture, verify and inspect replay bundles.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
