//! `udphub-keygen`: make a device's or the hub's key pair for [`udphub::secure`], or show the
//! public key of one made before. The private key stays in its file (mode 0600); the public
//! key, printed on one line, is what goes into the hub's authorized-keys file (a device's) or
//! after `--hub-key` (the hub's).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use udphub::secure::keys;

/// Write a new private key to FILE (mode 0600, never overwriting) and print its public key,
/// or with --public print the public key of the private key in FILE.
///
/// Exit status: 0 on success, 2 on any error (FILE exists, cannot be read or written, or does
/// not hold a key).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Print the public key of the existing private key in FILE instead of making one.
    #[arg(long)]
    public: bool,
    /// The private key file.
    file: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.public {
        keys::read_private_key(&args.file).map(|loaded| {
            if loaded.too_open {
                eprintln!(
                    "udphub-keygen: warning: {} can be read by others (chmod 600 it)",
                    args.file.display()
                );
            }
            loaded.key.public_key()
        })
    } else {
        keys::write_new_private_key(&args.file)
    };
    match result {
        Ok(public) => {
            println!("{public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udphub-keygen: {e}");
            ExitCode::from(2)
        }
    }
}
