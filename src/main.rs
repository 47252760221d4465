mod cli;

// candle allocates a fresh buffer for every intermediate tensor; mimalloc reuses freed ones instead of
// returning them to the OS and faulting fresh zeroed pages back in on the next layer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
