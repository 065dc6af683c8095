fn main() -> std::process::ExitCode {
    pedm_agent::daemon::main()
}
