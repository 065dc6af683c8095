//! `pedm-cli`, the whole command-line client (everything lives in the `pedm-cli` library).
//! People type `pedm`, which runs the agent commands itself and hands everything else here.

fn main() -> std::process::ExitCode {
    pedm_cli::main()
}
