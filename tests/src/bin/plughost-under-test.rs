//! The real `plughost` command line, built inside the tests crate so black-box tests can
//! spawn it as a process (`CARGO_BIN_EXE_plughost-under-test`) and kill it with SIGKILL.

/// glibc's allocator was about 30% of the admin's CPU under load (see the benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(plughost::main_with_args(std::env::args_os()));
}
