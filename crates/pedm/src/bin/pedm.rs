//! `pedm`, the command-line client: everything lives in the `pedm-cli` library.

fn main() -> std::process::ExitCode {
    pedm_cli::main()
}
