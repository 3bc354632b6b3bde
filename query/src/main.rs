//! `familiar`: index training corpora and ask how often a model saw what.
//!
//! Exit codes: 0 success; 1 the command failed (bad input, corrupt index, failed verify);
//! 2 the command line was invalid. A closed stdout (e.g. `| head`) ends quietly with 0.

mod cmd;

use clap::Parser;

fn main() {
    // libsais's OpenMP threads spin while idle unless told otherwise, which on a small, busy
    // machine steals the CPU from tokenization. Must be set before any thread starts.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("OMP_WAIT_POLICY", "PASSIVE") };
    }
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                std::process::exit(0);
            }
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<familiar::Error>(), Some(familiar::Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
