fn main() -> std::process::ExitCode {
    pedm_server::main()
}
