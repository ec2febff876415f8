//! Cargo's runner for the bare-metal firmware (through `firmware/run.sh`):
//! boots the ELF in QEMU on a QCOW2 image and its chain. The options, the
//! environment and the exit statuses are described in
//! `qcow2_testkit::firmware_run`.

use std::io::Write;

use qcow2_testkit::firmware_run::FirmwareRun;

fn main() {
    if let Err(message) = qcow2_testkit::stop_children_on_signals() {
        eprintln!("run.sh: {message}");
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let result = FirmwareRun::from_args_and_env(&args)
        .and_then(|run| run.run(&mut std::io::stdout(), &mut std::io::stderr()));
    if let Err(failure) = result {
        let _ = std::io::stdout().flush();
        eprintln!("run.sh: {}", failure.message);
        std::process::exit(failure.code);
    }
}
