//! The `malog` binary: parses arguments, starts logging, and hands over to
//! [`malog::cli`]. Exit codes are documented in the README.

use clap::Parser;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
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

/// glibc gives threads that allocate at the same time arenas of their own (up
/// to 8 per core), and memory freed into one arena is not reused by the
/// others. A pass's small allocations move between tokio's workers and the
/// blocking threads, so with the default a first pass over 100,000 small
/// logs grew to 115 MiB of RSS, mostly memory no longer in use; with two arenas
/// it stayed flat at 81 MiB (docs/BENCHMARKS.md, "memory at scale").
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; this runs before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
