//! docs/PROTOCOL.md's table of error codes and `ErrorCode` say the same: every code
//! of `ErrorCode::ALL` has one row with its name, and every row names a constant.

use std::collections::BTreeMap;

use ws_session::ErrorCode;

/// The `| code | \`NAME\` | …` rows of the table under "Error codes of the session layer".
fn documented() -> BTreeMap<u16, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    let section = doc
        .split("### Error codes of the session layer")
        .nth(1)
        .expect("the section exists");
    let table = section.split("\n#").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| 4")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code: u16 = cells[1].parse().expect("a numeric code");
        let name = cells[2].trim_matches('`').to_owned();
        assert!(rows.insert(code, name).is_none(), "{code} is listed twice");
    }
    rows
}

#[test]
fn the_protocol_table_lists_exactly_the_error_codes() {
    let documented = documented();
    let defined: BTreeMap<u16, String> = ErrorCode::ALL
        .iter()
        .map(|(code, name)| (code.0, (*name).to_owned()))
        .collect();
    assert_eq!(documented, defined);
}

#[test]
fn codes_are_unique_and_in_their_ranges() {
    let mut seen = std::collections::BTreeSet::new();
    for (code, name) in ErrorCode::ALL {
        assert!(seen.insert(code.0), "{name}: {} is used twice", code.0);
        assert!(
            (4000..4200).contains(&code.0),
            "{name}: {} is outside tether's range",
            code.0
        );
    }
}

/// The browser client (`clients/js`) names the codes as `ErrorCode` does, with the
/// same values: a client developer reads one vocabulary in both languages.
#[test]
fn the_js_client_has_the_same_codes() {
    let js =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/js/src/index.js")).unwrap();
    let object = js
        .split("export const ErrorCode = Object.freeze({")
        .nth(1)
        .expect("clients/js/src/index.js exports ErrorCode")
        .split("});")
        .next()
        .unwrap();
    let mut in_js = BTreeMap::new();
    for line in object
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
    {
        let (name, code) = line.trim_end_matches(',').split_once(':').expect("NAME: code");
        in_js.insert(
            code.trim().parse::<u16>().expect("a number"),
            name.trim().to_owned(),
        );
    }
    let defined: BTreeMap<u16, String> = ErrorCode::ALL
        .iter()
        .map(|(code, name)| (code.0, (*name).to_owned()))
        .collect();
    assert_eq!(in_js, defined);
}
