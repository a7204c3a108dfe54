//! The `plughost` binary; see `src/lib.rs`.

/// glibc's allocator was about 30% of the admin's CPU under load (see the benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(plughost::main_with_args(std::env::args_os()));
}
