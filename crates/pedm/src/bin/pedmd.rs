// The server allocates and frees small buffers for every request and statement; glibc's
// allocator was about a sixth of pedmd's CPU under load (BENCHMARKS.md, PostgreSQL section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pedm_server::main()
}
