//! The configuration's documentation names exactly the variables it reads: `.env.example` and
//! the README's Configuration table are held to `rovertchat::config::VARIABLES`.

use std::collections::BTreeSet;

use rovertchat::config::{Fallback, VARIABLES};

fn repository_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn declared() -> BTreeSet<&'static str> {
    VARIABLES.iter().map(|v| v.name).collect()
}

fn is_variable_name(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `NAME=value` lines, set (`NAME=…`) or commented out (`# NAME=…`), in order.
fn env_example_lines(text: &str) -> Vec<(bool, String, String)> {
    text.lines()
        .filter_map(|line| {
            let commented = line.starts_with('#');
            let (name, value) = line.trim_start_matches('#').trim_start().split_once('=')?;
            is_variable_name(name).then(|| (!commented, name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The rows of the table under `## Configuration`: the names in backticks in the first cell,
/// and the default cell.
fn readme_rows(text: &str) -> Vec<(Vec<String>, String)> {
    let section = text.split("\n## Configuration\n").nth(1).expect("README has a Configuration section");
    let table = section.lines().skip_while(|line| !line.starts_with('|')).take_while(|line| line.starts_with('|'));
    table
        .skip(2) // header and separator
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let names = cells[1].split('`').skip(1).step_by(2).filter(|w| is_variable_name(w)).map(str::to_owned).collect();
            (names, cells[2].to_owned())
        })
        .collect()
}

#[test]
fn env_example_names_exactly_the_variables_the_configuration_reads() {
    let lines = env_example_lines(&repository_file(".env.example"));
    let named: Vec<&str> = lines.iter().map(|(_, name, _)| name.as_str()).collect();
    let unique: BTreeSet<&str> = named.iter().copied().collect();
    assert_eq!(named.len(), unique.len(), "a variable appears twice in .env.example: {named:?}");
    let missing: Vec<_> = declared().difference(&unique).copied().collect();
    let unknown: Vec<_> = unique.difference(&declared()).copied().collect();
    assert!(missing.is_empty() && unknown.is_empty(), "missing from .env.example: {missing:?}; not read: {unknown:?}");
    // What is set there is the default, so a copy of the file changes nothing until edited.
    for (set, name, value) in &lines {
        let variable = VARIABLES.iter().find(|v| v.name == name).unwrap();
        if let (true, Fallback::Value(default)) = (set, variable.default) {
            assert_eq!(value, default, ".env.example sets {name} to something else than its default");
        }
    }
}

#[test]
fn the_readme_table_names_exactly_the_variables_the_configuration_reads_with_their_defaults() {
    let rows = readme_rows(&repository_file("README.md"));
    let named: Vec<&str> = rows.iter().flat_map(|(names, _)| names.iter().map(String::as_str)).collect();
    let unique: BTreeSet<&str> = named.iter().copied().collect();
    assert_eq!(named.len(), unique.len(), "a variable has two rows in the README: {named:?}");
    let missing: Vec<_> = declared().difference(&unique).copied().collect();
    let unknown: Vec<_> = unique.difference(&declared()).copied().collect();
    assert!(missing.is_empty() && unknown.is_empty(), "missing from the README: {missing:?}; not read: {unknown:?}");
    for (names, default_cell) in &rows {
        for name in names {
            let variable = VARIABLES.iter().find(|v| v.name == name).unwrap();
            if let Fallback::Value(default) = variable.default {
                assert!(
                    default_cell.contains(&format!("`{default}`")),
                    "the README gives {name} the default {default_cell:?}, the configuration {default:?}"
                );
            }
        }
    }
}
