//! The `lazycas` binary: everything lives in the library; see `lazycas::cli`.

fn main() -> std::process::ExitCode {
    lazycas::cli::main()
}
