//! The commands spoken to this host's `pedm-agent` rather than to the server: `pedm exec`,
//! `pedm shell` and `pedm task run`. They stand where `sudo` stood, so their start-up time is
//! felt: [`run`] parses them without building the whole command tree (building every
//! subcommand's parser cost a third of a start), and the `pedm` binary is this module alone
//! (the rest of the client, `pedm-cli`, is what it execs for anything else: see
//! `crates/pedm/src/bin/pedm.rs`). Anything these parsers do not accept (help, a mistake)
//! is left to the full parser, so messages read the same.

use crate::args::{self, Command, TaskCmd};
use crate::{EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, UsageError, exec};
use clap::FromArgMatches;
use std::ffi::OsString;
use std::process::ExitCode;

/// `pedm exec|shell|task run ...` (nothing before the subcommand) run at once; `None` for
/// any other command line, or one these parsers do not accept.
pub fn run(args: &[OsString]) -> Option<ExitCode> {
    parse(args).map(run_parsed)
}

fn parse(args: &[OsString]) -> Option<Command> {
    let sub = args.get(1)?.to_str()?;
    match sub {
        "exec" => {
            let cmd = <args::ExecArgs as clap::Args>::augment_args(clap::Command::new("exec"));
            let m = cmd.try_get_matches_from(&args[1..]).ok()?;
            args::ExecArgs::from_arg_matches(&m).ok().map(Command::Exec)
        }
        "shell" => {
            let cmd = <args::AgentOpts as clap::Args>::augment_args(clap::Command::new("shell"));
            let m = cmd.try_get_matches_from(&args[1..]).ok()?;
            args::AgentOpts::from_arg_matches(&m)
                .ok()
                .map(|agent| Command::Shell { agent })
        }
        "task" if args.get(2).is_some_and(|a| a == "run") => {
            let cmd = <TaskCmd as clap::Subcommand>::augment_subcommands(
                clap::Command::new("task").subcommand_required(true),
            );
            let m = cmd.try_get_matches_from(&args[1..]).ok()?;
            match TaskCmd::from_arg_matches(&m).ok()? {
                run @ TaskCmd::Run { .. } => Some(Command::Task(run)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Runs an agent command already parsed (by either parser): no server, no token; the agent
/// knows the caller from the kernel. The exit status is the command's own (or 1 refused, 3 agent unreachable).
pub fn run_parsed(command: Command) -> ExitCode {
    let mut chdir = None;
    let (agent, argv, shell, task) = match command {
        Command::Exec(args::ExecArgs {
            agent,
            command,
            chdir: dir,
        }) => {
            chdir = dir;
            (agent, command, false, None)
        }
        Command::Shell { agent } => (agent, vec![], true, None),
        Command::Task(TaskCmd::Run {
            name,
            params,
            socket,
        }) => {
            let params = match read_stdin_params(params) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let agent = args::AgentOpts {
                grant: None,
                socket,
            };
            let task = pedm_api::socket::TaskRun { name, params };
            (agent, vec![], false, Some(task))
        }
        _ => return ExitCode::from(EXIT_USAGE),
    };
    let start = pedm_api::socket::StartExec {
        argv,
        grant: agent.grant,
        shell,
        task,
        // The agent resolves nothing relative to its own directory: send an absolute path.
        cwd: match chdir.map(|d| std::env::current_dir().map(|here| here.join(d))) {
            None => None,
            Some(Ok(d)) => Some(d.to_string_lossy().into_owned()),
            Some(Err(e)) => {
                eprintln!("error: --chdir: cannot read the current directory: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        tty: None,
        env: exec::caller_env(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match rt.block_on(exec::run(&agent.socket, start)) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("pedm: {e:#}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Task parameters, with values given as `-` read from stdin (one line each, in order).
fn read_stdin_params(
    params: Vec<(String, String)>,
) -> Result<std::collections::BTreeMap<String, String>, UsageError> {
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in params {
        let v = if v == "-" {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| UsageError(format!("reading parameter {k} from stdin: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        } else {
            v
        };
        if out.insert(k.clone(), v).is_some() {
            return Err(UsageError(format!("parameter {k} is given twice")));
        }
    }
    Ok(out)
}
