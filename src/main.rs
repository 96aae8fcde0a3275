//! The `malog` binary: parses arguments, starts logging, and hands over to
//! [`malog::cli`]. Exit codes are documented in the README.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = malog::cli::Args::parse();
    malog::cli::init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return malog::output::exit::RUN_ERROR.into();
        }
    };
    runtime.block_on(malog::cli::run(args)).into()
}
