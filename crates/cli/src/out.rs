//! Output that survives a closed pipe (issue 17). `std`'s `print!`/`println!` panic when stdout
//! is gone (`palisade ... | head`); these take their place in the whole crate, so every command
//! behaves the same: a closed stdout ends the process quietly with status 0, the way a filter
//! stops when its reader has seen enough.
//!
//! Why not reset SIGPIPE to its default at start: the same binary runs the gateway (sockets,
//! `splice`) and `host` (a pipe to `nft`), where a peer that goes away must be an error to handle,
//! not a signal that kills the process.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Write to stdout; a broken pipe exits with status 0, any other failure with status 2.
pub fn stdout(args: Arguments, newline: bool) {
    if let Err(e) = write(&mut std::io::stdout().lock(), args, newline) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        stderr(format_args!("error: cannot write the output: {e}"), true);
        std::process::exit(2);
    }
}

/// Write to stderr; if stderr itself is gone there is nowhere left to say so.
pub fn stderr(args: Arguments, newline: bool) {
    let _ = write(&mut std::io::stderr().lock(), args, newline);
}

fn write(w: &mut impl Write, args: Arguments, newline: bool) -> std::io::Result<()> {
    w.write_fmt(args)?;
    if newline {
        w.write_all(b"\n")?;
    }
    Ok(())
}

macro_rules! print {
    ($($t:tt)*) => { $crate::out::stdout(format_args!($($t)*), false) };
}

macro_rules! println {
    () => { $crate::out::stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::out::stdout(format_args!($($t)*), true) };
}

macro_rules! eprintln {
    () => { $crate::out::stderr(format_args!(""), true) };
    ($($t:tt)*) => { $crate::out::stderr(format_args!($($t)*), true) };
}
