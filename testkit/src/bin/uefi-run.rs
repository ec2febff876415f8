//! Cargo's runner for `qcow2.efi` (through `uefi/run.sh`): boots the
//! driver and an image in QEMU under the stock UEFI firmware. The options,
//! the environment and the output are described in
//! `qcow2_testkit::uefi_run`.

use std::io::Write;

use qcow2_testkit::uefi_run::UefiRun;

fn main() {
    if let Err(message) = qcow2_testkit::stop_children_on_signals() {
        eprintln!("run.sh: {message}");
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let result = UefiRun::from_args_and_env(&args)
        .and_then(|run| run.run(&mut std::io::stdout(), &mut std::io::stderr()));
    if let Err(failure) = result {
        let _ = std::io::stdout().flush();
        eprintln!("run.sh: error: {}", failure.message);
        std::process::exit(failure.code);
    }
}
