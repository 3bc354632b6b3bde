//! `familiar fixtures`: regenerate `fixtures/`.

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `familiar fixtures`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write (the repository's `fixtures/`).
    #[arg(long, default_value = "fixtures")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<i32> {
    let written = familiar_index_builder::fixtures::write_all(&a.out)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(0)
}
