use std::process::ExitCode;

fn main() -> ExitCode {
    otnsx::main_with(std::env::args_os())
}
