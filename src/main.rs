//! The `plughost` binary; see `src/lib.rs`.

fn main() {
    std::process::exit(plughost::main_with_args(std::env::args_os()));
}
