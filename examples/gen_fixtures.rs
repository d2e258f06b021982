//! Regenerates the fixture bundles and the sample run store: `cargo run --example gen_fixtures [DIR]`
//! (default `fixtures`). The output is byte-for-byte reproducible.

#[path = "../tests/support/fixture_gen.rs"]
mod fixture_gen;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fixtures".into());
    fixture_gen::write_all(std::path::Path::new(&dir));
    println!("fixtures written under {dir}/bundles, {dir}/archives, {dir}/store and {dir}/replay");
}
