//! The clipcanvas binary: with no subcommand the studio, otherwise a headless command.

use clap::Parser;

fn main() {
    clipcanvas::process::tune();
    let cli = match clipcanvas::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            // clap formats help, version and usage errors itself.
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = clipcanvas::cli::run(cli) {
        if !matches!(e, clipcanvas::cli::CliError::Interrupted) {
            eprintln!("error: {e}");
        }
        std::process::exit(e.exit_code());
    }
}
