//! Prints README's Performance table from one JSON file of
//! `benches/compare.sh` (see [`qcow2_testkit::readme_table`]):
//! `cargo run -p qcow2-testkit --bin readme-table -- target/bench/compare-DATE.json`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        eprintln!("usage: readme-table RESULTS.json (written by benches/compare.sh)");
        std::process::exit(2);
    };
    let run: serde_json::Value = match std::fs::read(path)
        .map_err(|error| error.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|error| error.to_string()))
    {
        Ok(run) => run,
        Err(error) => {
            eprintln!("readme-table: {path}: {error}");
            std::process::exit(1);
        }
    };
    print!("{}", qcow2_testkit::readme_table::table(&run));
}
