//! Regenerate the embedded service-tag copy from a weekly `ServiceTags_<Cloud>_<YYYYMMDD>.json`:
//!
//! ```text
//! cargo run -p palisade-model --example compact-servicetags -- \
//!     path/to/ServiceTags_Public_20250728.json catalogs/servicetags-public.txt.gz
//! ```
//!
//! The input is loaded with the same parser the program uses, so a file that does not load is
//! refused here rather than shipped. The output is reproducible: the same input gives the same
//! bytes. See `catalogs/README.md`.

use palisade_model::catalog::ServiceTags;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = &args[..] else {
        eprintln!(
            "usage: compact-servicetags <ServiceTags_<Cloud>_<YYYYMMDD>.json> <output.txt.gz>"
        );
        return ExitCode::from(2);
    };
    let tags = match ServiceTags::load(Path::new(input)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in tags.warnings() {
        eprintln!("{w}");
    }
    if tags.published().is_none() {
        eprintln!(
            "warning: `{input}` is not named ServiceTags_<Cloud>_<YYYYMMDD>.json; \
             the copy will have no publication date"
        );
    }
    let bytes = match tags.to_compact() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot compress: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(output, &bytes) {
        eprintln!("error: cannot write `{output}`: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{output}: {} tags, changeNumber {}, cloud {}, {} bytes",
        tags.len(),
        tags.version().change_number,
        tags.cloud(),
        bytes.len()
    );
    ExitCode::SUCCESS
}
