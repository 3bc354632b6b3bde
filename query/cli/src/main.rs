//! `familiar`: index training corpora and ask how often a model saw what.
//!
//! Exit codes: 0 success; 1 the command failed (bad input, corrupt index, failed verify);
//! 2 the command line was invalid. A closed stdout (e.g. `| head`) ends quietly with 0. An index
//! file truncated while it is mapped (SIGBUS) ends with 1 and a message, not a crash.

mod cmd;
mod progress;

use clap::Parser;

fn main() {
    // libsais's OpenMP threads spin while idle unless told otherwise, which on a small, busy
    // machine steals the CPU from tokenization. Must be set before any thread starts.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("OMP_WAIT_POLICY", "PASSIVE") };
    }
    install_sigbus_handler();
    // The libraries' messages name options as this front end's users type them.
    familiar::option::set_spelling(familiar::option::Spelling::Flag);
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

/// What a SIGBUS says: an index file mapped into memory shrank (truncated or rewritten in place)
/// while the process read it. Fixed bytes: the handler may only call async-signal-safe functions.
const SIGBUS_MESSAGE: &[u8] = "familiar: an index file was truncated or replaced while it was in \
use (SIGBUS); index files must not change while open \u{2014} rebuild or restore the index\n"
    .as_bytes();

/// Turns SIGBUS, which a read of a memory map past the end of a file that shrank raises (and
/// which no check before the read can rule out), into a message and exit status 1 instead of a
/// crash with a core dump. See schemas/index-format.md, "Index files are immutable while open".
#[cfg(unix)]
fn install_sigbus_handler() {
    extern "C" fn on_sigbus(_signal: libc::c_int) {
        let mut rest = SIGBUS_MESSAGE;
        while !rest.is_empty() {
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
            let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                break;
            }
            rest = rest.get(n as usize..).unwrap_or_default();
        }
        // SAFETY: async-signal-safe; ends the process without running anything else.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler is a plain function
    // that only calls async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        // Failing to install it leaves the default action (a crash): nothing worse.
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[cfg(not(unix))]
fn install_sigbus_handler() {}
