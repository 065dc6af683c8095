//! `pedm`, the command-line client, in two binaries. This one is small: it runs the commands
//! spoken to this host's `pedm-agent` (`exec`, `shell`, `task run`), which stand where `sudo`
//! stood and whose start-up people feel; a binary holding the whole client (HTTP, TLS, the
//! policy tools) spends about a millisecond more just being loaded. Any other command line
//! replaces this process with `pedm-cli`, the whole client, found next to this binary (or
//! else on `PATH`), under the name `pedm`: same arguments, same output, same exit status.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const FULL_CLIENT: &str = "pedm-cli";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(status) = pedm_cli::local::run(&args) {
        return status;
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| Some(me.parent()?.join(FULL_CLIENT)))
        .filter(|p| p.is_file());
    let program = beside.clone().unwrap_or_else(|| PathBuf::from(FULL_CLIENT));
    // exec returns only when it failed.
    let err = Command::new(&program)
        .arg0("pedm")
        .args(args.iter().skip(1))
        .exec();
    let looked = match beside {
        Some(p) => p.display().to_string(),
        None => "next to this pedm and on PATH".to_string(),
    };
    eprintln!(
        "error: cannot run {FULL_CLIENT}, the rest of the pedm client ({looked}): {err}; \
         install it beside pedm"
    );
    ExitCode::from(pedm_cli::EXIT_USAGE)
}
