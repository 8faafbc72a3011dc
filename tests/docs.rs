//! The reference stays honest: every function, view, table and setting a fresh install defines
//! (read from its catalog) has a `### integ.<name>` heading in docs/sql-api.md or
//! docs/settings.md, and every such heading names something the catalog has.

use e2e::*;
use std::collections::BTreeSet;
use std::path::Path;

/// Names after `### integ.` in a page, up to the first `(`, space or the end of the line.
fn documented(page: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("docs").join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("### integ."))
        .map(|rest| {
            rest.split(|c: char| c == '(' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .trim_end_matches('`')
                .to_string()
        })
        .collect()
}

fn names(db: &mut postgres::Client, sql: &str) -> BTreeSet<String> {
    db.query(sql, &[])
        .expect(sql)
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn assert_same(what: &str, page: &str, catalog: &BTreeSet<String>, docs: &BTreeSet<String>) {
    let missing: Vec<_> = catalog.difference(docs).collect();
    let unknown: Vec<_> = docs.difference(catalog).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/{page} and the catalog disagree on {what}\nundocumented: {missing:?}\ndocumented but not defined: {unknown:?}"
    );
}

#[test]
fn every_function_view_table_and_setting_is_documented_and_nothing_else() {
    let pg = Cluster::start("docs", "integ.allowed_hosts = '127.0.0.1'", true);
    let mut db = pg.client();
    db.batch_execute("CREATE EXTENSION integration CASCADE")
        .expect("create extension");
    let objects = names(
        &mut db,
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'integ'::regnamespace
         UNION SELECT relname::text FROM pg_class WHERE relnamespace = 'integ'::regnamespace
                  AND relkind IN ('r', 'p', 'v', 'm') AND NOT relispartition",
    );
    let settings = names(
        &mut db,
        "SELECT substr(name, length('integ.') + 1) FROM pg_settings WHERE name LIKE 'integ.%'",
    );
    assert!(objects.len() > 30 && settings.len() > 20, "{objects:?} {settings:?}");
    assert_same(
        "functions, views and tables",
        "sql-api.md",
        &objects,
        &documented("sql-api.md"),
    );
    assert_same("settings", "settings.md", &settings, &documented("settings.md"));
    println!(
        "DOCS {} functions, views and tables and {} settings, each documented once",
        objects.len(),
        settings.len()
    );
}
