//! `stategraph query 'SQL' [--json|--csv] [--timeout D] [--show-sensitive]`:
//! read-only SQL over the `stategraph_api` views, rendered as a table, JSON
//! or CSV.

use std::io::Write;

use anyhow::{anyhow, Result};
use serde_json::{Map, Value};
use tokio_postgres::types::Type;

use crate::cli::QueryArgs;
use crate::db;
use crate::db::query::QueryResult;
use crate::settings::Settings;
use crate::tfargs::parse_duration;

/// `stategraph query`.
pub async fn execute(settings: &Settings, args: &QueryArgs) -> Result<()> {
    let timeout = parse_duration(&args.timeout).ok_or_else(|| {
        anyhow!(
            "--timeout {} is not a duration: write it like 30s, 500ms or 2m",
            args.timeout
        )
    })?;
    let sql = args.sql.trim().trim_end_matches(';').trim_end();
    if sql.is_empty() {
        return Err(anyhow!(
            "no SQL given: stategraph query 'SELECT * FROM instances' (see stategraph query --help)"
        ));
    }
    let store = db::open_for_reading(settings).await?;
    let result = store.query(sql, timeout, args.show_sensitive).await?;
    let mut out = settings.ui.data();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &json_rows(&result))?;
        writeln!(out)?;
    } else if args.csv {
        write_csv(&mut out, &result)?;
    } else {
        write_table(&mut out, &result)?;
        out.flush()?;
        let n = result.rows.len();
        settings
            .ui
            .info(format!("({n} row{})", if n == 1 { "" } else { "s" }));
    }
    out.flush()?;
    Ok(())
}

/// Each row as an object, values typed: numbers, booleans and JSON as
/// themselves, everything else as PostgreSQL's text.
fn json_rows(result: &QueryResult) -> Vec<Value> {
    result
        .rows
        .iter()
        .map(|row| {
            let mut object = Map::new();
            for ((name, type_), value) in result.columns.iter().zip(row) {
                object.insert(name.clone(), typed(type_, value.as_deref()));
            }
            Value::Object(object)
        })
        .collect()
}

fn typed(type_: &Type, text: Option<&str>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    let parsed = match *type_ {
        Type::INT2
        | Type::INT4
        | Type::INT8
        | Type::OID
        | Type::FLOAT4
        | Type::FLOAT8
        | Type::NUMERIC => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(Value::Number),
        Type::BOOL => Some(Value::Bool(text == "t")),
        Type::JSON | Type::JSONB => serde_json::from_str(text).ok(),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// A cell as shown in the table and the CSV.
fn cell(type_: &Type, text: Option<&str>) -> String {
    match (text, type_) {
        (None, _) => String::new(),
        (Some(t), &Type::BOOL) => (if t == "t" { "true" } else { "false" }).to_owned(),
        (Some(t), _) => t.to_owned(),
    }
}

fn write_table(out: &mut impl Write, result: &QueryResult) -> std::io::Result<()> {
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| {
            result
                .columns
                .iter()
                .zip(row)
                .map(|((_, t), v)| {
                    cell(t, v.as_deref())
                        .replace('\n', "\\n")
                        .replace('\r', "\\r")
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = result
        .columns
        .iter()
        .map(|(_, t)| {
            matches!(
                *t,
                Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC
            )
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let pad = " ".repeat(widths[i] - v.chars().count());
                if numeric[i] {
                    format!("{pad}{v}")
                } else {
                    format!("{v}{pad}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(
        out,
        "{}",
        line(result.columns.iter().map(|(n, _)| n.clone()).collect())
    )?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for row in cells {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, result: &QueryResult) -> std::io::Result<()> {
    let header: Vec<String> = result.columns.iter().map(|(n, _)| csv_field(n)).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in &result.rows {
        let fields: Vec<String> = result
            .columns
            .iter()
            .zip(row)
            .map(|((_, t), v)| csv_field(&cell(t, v.as_deref())))
            .collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> QueryResult {
        QueryResult {
            columns: vec![
                ("name".into(), Type::TEXT),
                ("n".into(), Type::INT8),
                ("ok".into(), Type::BOOL),
                ("doc".into(), Type::JSONB),
            ],
            rows: vec![
                vec![
                    Some("a, \"b\"".into()),
                    Some("10".into()),
                    Some("t".into()),
                    Some("{\"k\": 1}".into()),
                ],
                vec![Some("c".into()), Some("7".into()), None, None],
            ],
        }
    }

    #[test]
    fn tables_align_and_right_align_numbers() {
        let mut out = Vec::new();
        write_table(&mut out, &result()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name     n  ok    doc\n\
             ------  --  ----  --------\n\
             a, \"b\"  10  true  {\"k\": 1}\n\
             c        7\n"
        );
    }

    #[test]
    fn csv_quotes_what_it_must_and_json_keeps_types() {
        let mut out = Vec::new();
        write_csv(&mut out, &result()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name,n,ok,doc\n\"a, \"\"b\"\"\",10,true,\"{\"\"k\"\": 1}\"\nc,7,,\n"
        );
        assert_eq!(
            Value::Array(json_rows(&result())),
            serde_json::json!([
                {"name": "a, \"b\"", "n": 10, "ok": true, "doc": {"k": 1}},
                {"name": "c", "n": 7, "ok": null, "doc": null}
            ])
        );
    }
}
