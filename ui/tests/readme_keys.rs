//! The README's table of keys is the help overlay's list, row for row: a
//! key added to one and not the other fails here.

use aiwan_ui::render::overlay::KEYS;

#[test]
fn the_readme_lists_every_key_of_the_help_overlay() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md beside the workspace");
    let start = readme
        .find("| key | does |")
        .expect("a `| key | does |` table in the README");
    let rows: Vec<(String, String)> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            (
                cells
                    .first()
                    .unwrap_or(&"")
                    .trim()
                    .trim_matches('`')
                    .to_string(),
                cells.get(1).unwrap_or(&"").trim().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = KEYS
        .iter()
        .map(|(key, does)| (key.to_string(), does.to_string()))
        .collect();
    assert_eq!(rows, expected);
}
