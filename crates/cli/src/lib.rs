//! `pedm`, the command-line client of pedm.
//!
//! Exit status: 0 on success, 1 when the server refused the operation (or a request was
//! denied), 2 for usage errors (caught locally before any network call where possible),
//! 3 when the server cannot be reached.

pub mod args;
pub mod audit;
pub mod commands;
pub mod credentials;
pub mod ctx;
pub mod delegation;
pub mod device;
pub mod escapes;
pub mod evidence;
pub mod exec;
pub mod external;
pub mod files;
pub mod local;
pub mod lock;
pub mod login;
pub mod mcp;
pub mod output;
pub mod play;
pub mod policy;
pub mod policy_check;
pub mod policy_files;
pub mod policy_review;
pub mod privacy;
pub mod review;
pub mod scim;
pub mod ssh;
pub mod watch;

use anyhow::Result;
use args::{Cli, Command, Global};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use pedm_api::{ApiError, Client};
use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// A bad argument or setting found locally; nothing was sent.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Parses `args` (program name first), runs the command, prints any error, and returns the
/// exit status.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(status) = local::run(&args) {
        return status;
    }
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) => {
            // Help and version go to stdout with status 0; errors to stderr with status 2,
            // without the global options (and the token's placeholder) in the usage line.
            if e.use_stderr() {
                eprint!("{}", usage_without_globals(&e.render().to_string()));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    if let Command::Exec(_) | Command::Shell { .. } | Command::Task(args::TaskCmd::Run { .. }) =
        &cli.command
    {
        return local::run_parsed(cli.command);
    }
    match execute(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", pedm_core::text::terminal_safe(&message(&e)));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A clap error with the global options (`--url`, `--token`, `--token-file`, `--json`) taken
/// out of its `Usage:` line: they are the same for every command, and a usage line naming
/// `--token <TOKEN>` in every error only invites pasting a secret on the command line.
fn usage_without_globals(rendered: &str) -> String {
    const GLOBALS: [&str; 4] = [
        " --token <TOKEN>",
        " --token-file <PATH>",
        " --url <URL>",
        " --json",
    ];
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.split_inclusive('\n') {
        if line.starts_with("Usage:") {
            let mut l = line.to_string();
            for g in GLOBALS {
                l = l.replace(g, "");
            }
            out.push_str(&l);
        } else {
            out.push_str(line);
        }
    }
    out
}

fn execute(cli: Cli, matches: &ArgMatches) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        return commands::completions(shell);
    }
    let mut token = resolve_token(&cli.global, matches)?;
    if token.is_none() {
        // `pedm login`'s session, only for the server it was opened on.
        token = login::stored_session(&cli.global.url).map(|s| s.token);
    }
    // An enrolled device presents its certificate on every call to its server.
    let ca = cli.global.ca_file.as_deref();
    let client = match device::identity_for(&cli.global.url) {
        Some(pem) => Client::with_ca_and_identity(&cli.global.url, token, ca, &pem)?,
        None => Client::with_ca(&cli.global.url, token, ca)?,
    };
    let ctx = commands::Ctx {
        client,
        json: cli.global.json,
        now: jiff::Timestamp::now(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(commands::run(&ctx, cli.command))
}

/// The token from `--token`/`PEDM_TOKEN` or `--token-file`/`PEDM_TOKEN_FILE`. An option given
/// on the command line beats one from the environment; two from the same place conflict.
fn resolve_token(g: &Global, m: &ArgMatches) -> Result<Option<String>, UsageError> {
    let on_cli = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    let use_file = match (&g.token, &g.token_file) {
        (Some(_), Some(_)) if on_cli("token") == on_cli("token_file") => {
            let (a, b) = if on_cli("token") {
                ("--token", "--token-file")
            } else {
                ("PEDM_TOKEN", "PEDM_TOKEN_FILE")
            };
            return Err(UsageError(format!("{a} and {b} are both given; use one")));
        }
        (Some(_), Some(_)) => on_cli("token_file"),
        (None, Some(_)) => true,
        _ => false,
    };
    let (token, from) = match (&g.token_file, use_file) {
        (Some(path), true) => (Some(read_token_file(path)?), "--token-file"),
        _ => (
            g.token.as_ref().map(|s| s.0.trim().to_string()),
            if on_cli("token") {
                "--token"
            } else {
                "PEDM_TOKEN"
            },
        ),
    };
    let token = token.filter(|t| !t.is_empty());
    if let Some(t) = &token {
        check_token(from, t)?;
    }
    Ok(token)
}

/// A token is printable ASCII without spaces (`pedm_<id>_<secret>`): anything else (a
/// newline or control character pasted with it) is named here, before any request, instead
/// of failing as an unreachable server. The token itself is never printed.
fn check_token(from: &str, token: &str) -> Result<(), UsageError> {
    match token.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        None => Ok(()),
        Some((i, c)) => {
            let what = match c {
                '\n' => "a newline".to_string(),
                '\r' => "a carriage return".to_string(),
                ' ' | '\t' => "white space".to_string(),
                c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
                c => format!("a non-ASCII character (U+{:04X})", c as u32),
            };
            Err(UsageError(format!(
                "the token from {from} is malformed: it contains {what} at byte {i} (a pedm \
                 token is pedm_<id>_<secret>, printable ASCII only)"
            )))
        }
    }
}

fn read_token_file(path: &std::path::Path) -> Result<String, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--token-file: cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(UsageError(format!(
            "--token-file: {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// What the person sees after `error: `: the server's own message for refusals, with a hint
/// where one helps.
pub fn message(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ApiError>() {
        Some(ApiError::Server {
            status: 401,
            message,
            ..
        }) if message.starts_with("sign-on refused") || message.contains("session ended") => {
            message.clone()
        }
        Some(ApiError::Server {
            status: 401,
            message,
            ..
        }) => format!("{message} (hint: check PEDM_TOKEN, --token or --token-file, or pedm login)"),
        Some(ApiError::Server { message, .. }) => message.clone(),
        Some(t @ ApiError::Transport { message, .. }) if message.contains("PEDM_CA") => {
            t.to_string()
        }
        Some(t @ ApiError::Transport { .. }) => {
            format!("{t} (hint: is pedmd running? check --url or PEDM_URL)")
        }
        _ => format!("{e:#}"),
    }
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    match e.downcast_ref::<ApiError>() {
        Some(ApiError::Transport { .. }) => EXIT_UNREACHABLE,
        Some(ApiError::Usage(_)) => EXIT_USAGE,
        _ => EXIT_REFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn server(status: u16, message: &str) -> anyhow::Error {
        ApiError::Server {
            status,
            code: "x".into(),
            message: message.into(),
        }
        .into()
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&server(403, "no")), EXIT_REFUSED);
        assert_eq!(exit_code(&anyhow::anyhow!("denied")), EXIT_REFUSED);
        assert_eq!(exit_code(&UsageError("bad".into()).into()), EXIT_USAGE);
        assert_eq!(
            exit_code(&ApiError::Usage("bad url".into()).into()),
            EXIT_USAGE
        );
        let t = ApiError::Transport {
            url: "http://127.0.0.1:9".into(),
            message: "refused".into(),
        };
        assert_eq!(exit_code(&t.into()), EXIT_UNREACHABLE);
    }

    #[test]
    fn messages() {
        assert_eq!(
            message(&server(404, "no such target \"x\"")),
            "no such target \"x\""
        );
        assert!(message(&server(401, "bad token")).contains("check PEDM_TOKEN"));
    }

    #[test]
    fn usage_errors_exit_2_before_any_network_call() {
        // Port 9 (discard) would give status 3 if anything were sent.
        let base = ["pedm", "--url", "http://127.0.0.1:9"];
        for args in [
            &["request", "show", "not-a-uuid"][..],
            &["role", "add", "h", "root", "--max-duration", "ages"],
            &["target", "add", "h", "--kind", "host", "--label", "novalue"],
            &[
                "target", "add", "h", "--kind", "host", "--label", "a=1", "--label", "a=2",
            ],
        ] {
            let argv = base.iter().chain(args);
            assert_eq!(run(argv), ExitCode::from(EXIT_USAGE), "{args:?}");
        }
        assert_eq!(
            run(["pedm", "--url", "ftp://x", "whoami"]),
            ExitCode::from(EXIT_USAGE)
        );
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "  pedm_secret  ").unwrap();
        let path = f.path().to_str().unwrap();
        let argv = ["pedm", "--token-file", path, "whoami"];
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        assert_eq!(
            resolve_token(&cli.global, &m).unwrap().as_deref(),
            Some("pedm_secret")
        );

        let argv = ["pedm", "--token-file", "/nonexistent/pedm-token", "whoami"];
        assert_eq!(run(argv), ExitCode::from(EXIT_USAGE));
    }

    #[test]
    fn token_and_token_file_on_the_command_line_conflict() {
        let argv = ["pedm", "--token", "a", "--token-file", "/x", "whoami"];
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        let e = resolve_token(&cli.global, &m).unwrap_err();
        assert!(e.0.contains("--token and --token-file"), "{e}");
        assert!(!e.0.contains("\"a\""));
    }
}
