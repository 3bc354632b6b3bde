//! Bootstraps `fixtures/` without the `familiar` binary (which embeds them for `familiar demo`):
//! `cargo run -p familiar-index-builder --example fixtures -- fixtures`.

fn main() -> Result<(), familiar::Error> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "fixtures".into());
    for p in familiar_index_builder::fixtures::write_all(std::path::Path::new(&out))? {
        println!("{}", p.display());
    }
    Ok(())
}
