//! Request bodies: images as a raw body or multipart form files, table rows as JSON or CSV.
//! Parsing here only splits the body; decoding and the checks against the model happen on
//! the workers, and every problem becomes a 4xx [`ApiError`] that names what was wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use bottleneck::data::table::Cell;
use serde_json::Value;

use crate::engine::Upload;
use crate::error::ApiError;

/// The content type of `req`, lower-cased without parameters ("" when absent).
fn content_type(req: &Request) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Most files in one multipart request.
pub const MAX_FILES: usize = 256;

/// The files of an image request: the raw body (one image, named by the `name` query
/// parameter or "body"), or every file field of a multipart form in order (at most
/// [`MAX_FILES`]; text fields are ignored).
pub async fn uploads(req: Request, name: Option<String>) -> Result<Vec<Upload>, ApiError> {
    if content_type(&req) == "multipart/form-data" {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?;
        let mut out = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?
        {
            // Text fields of a form (a hidden token, say) are not images.
            let Some(name) = field.file_name().map(str::to_string) else {
                continue;
            };
            if out.len() == MAX_FILES {
                return Err(ApiError::too_large(format!(
                    "more than {MAX_FILES} files in one request; send them in several"
                )));
            }
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?;
            out.push(Upload { name, bytes });
        }
        if out.is_empty() {
            return Err(ApiError::bad_request(
                "the multipart form has no file fields".into(),
            ));
        }
        return Ok(out);
    }
    let bytes = body(req).await?;
    Ok(vec![Upload {
        name: name.unwrap_or_else(|| "body".into()),
        bytes,
    }])
}

/// The whole body, refusing an empty one and one over the size limit.
pub async fn body(req: Request) -> Result<Bytes, ApiError> {
    let bytes = Bytes::from_request(req, &())
        .await
        .map_err(|e| ApiError::from_rejection(e.status(), e.body_text()))?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty".into()));
    }
    Ok(bytes)
}

/// Table rows as sent: JSON or CSV text, parsed on a worker (a large JSON body takes a
/// while to parse and must not hold up the async threads), with the most rows accepted.
#[derive(Debug, Clone)]
pub struct RowsBody {
    bytes: Bytes,
    csv: bool,
    max_rows: usize,
}

/// Reads a rows request: CSV when the content type says so (`text/csv`), or when it does not
/// say JSON and the body does not start like JSON (curl's default form type, say); JSON
/// otherwise. More than `max_rows` rows are refused (413) when parsed.
pub async fn rows(req: Request, max_rows: usize) -> Result<RowsBody, ApiError> {
    let kind = content_type(&req);
    let bytes = body(req).await?;
    let starts_like_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    let csv = matches!(
        kind.as_str(),
        "text/csv" | "application/csv" | "text/tab-separated-values"
    ) || (!kind.contains("json") && !starts_like_json);
    Ok(RowsBody {
        bytes,
        csv,
        max_rows,
    })
}

fn too_many_rows(max: usize) -> ApiError {
    ApiError::too_large(format!(
        "more than {max} rows in one request; send them in several (the service's --max-rows)"
    ))
}

/// Cells one request may hold per row it may hold: wide tables get fewer rows, so that the
/// memory of a request is bounded by cells, whatever the width.
pub const CELLS_PER_ROW: usize = 40;

fn too_many_cells(max: usize) -> ApiError {
    ApiError::too_large(format!(
        "more than {max} cells in one request ({CELLS_PER_ROW} per row of --max-rows); send \
         fewer rows at a time"
    ))
}

impl RowsBody {
    /// The rows as a header and row-major cells, and whether the columns are unnamed (taken
    /// in the model's order). JSON may be `{"rows": [...]}`, a list of rows, or one row;
    /// a row is an object of feature names to numbers (null or "NA" for missing) or a list
    /// of numbers in the model's feature order.
    pub fn into_cells(
        self,
        features: &[String],
        id_column: Option<&str>,
    ) -> Result<(Vec<String>, Vec<Cell>, bool), ApiError> {
        if self.csv {
            return csv_cells(&self.bytes, id_column, self.max_rows);
        }
        // A tree of JSON values takes ~20 times its text: count the values first (commas
        // outside strings) and refuse a body of more cells than the limits allow before
        // parsing it.
        let max_cells = self.max_rows.saturating_mul(CELLS_PER_ROW);
        if json_commas(&self.bytes) > max_cells.saturating_add(self.max_rows) {
            return Err(too_many_cells(max_cells));
        }
        let value = serde_json::from_slice(&self.bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        json_cells(value, features, id_column, self.max_rows)
    }
}

/// Commas of JSON text outside strings: one less than the values and rows it lists.
fn json_commas(bytes: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b',' {
            n += 1;
        }
    }
    n
}

fn csv_cells(
    bytes: &[u8],
    id_column: Option<&str>,
    max_rows: usize,
) -> Result<(Vec<String>, Vec<Cell>, bool), ApiError> {
    let delimiter = if bytes
        .split(|&b| b == b'\n')
        .next()
        .is_some_and(|l| l.contains(&b'\t') && !l.contains(&b','))
    {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ApiError::bad_request(format!("malformed CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    bottleneck::data::table::check_header(&header).map_err(ApiError::unprocessable)?;
    // The id is kept as written ("007" stays "007").
    let id = id_column.and_then(|name| header.iter().position(|h| h == name));
    let mut cells = Vec::new();
    for (i, record) in reader.records().enumerate() {
        if i == max_rows {
            return Err(too_many_rows(max_rows));
        }
        let record = record
            .map_err(|e| ApiError::bad_request(format!("malformed CSV row {}: {e}", i + 1)))?;
        if cells.len() + record.len() > max_rows.saturating_mul(CELLS_PER_ROW) {
            return Err(too_many_cells(max_rows.saturating_mul(CELLS_PER_ROW)));
        }
        cells.extend(record.iter().enumerate().map(|(j, text)| {
            if Some(j) == id {
                Cell::Text(text.into())
            } else {
                Cell::parse(text)
            }
        }));
    }

    if cells.is_empty() {
        return Err(ApiError::bad_request("the CSV has no data rows".into()));
    }
    Ok((header, cells, false))
}

fn json_cells(
    value: Value,
    features: &[String],
    id_column: Option<&str>,
    max_rows: usize,
) -> Result<(Vec<String>, Vec<Cell>, bool), ApiError> {
    let rows = match value {
        Value::Object(mut o) if o.get("rows").is_some_and(Value::is_array) => {
            match o.remove("rows") {
                Some(Value::Array(rows)) => rows,
                _ => Vec::new(),
            }
        }
        Value::Array(rows) => rows,
        one @ Value::Object(_) => vec![one],
        other => {
            return Err(ApiError::bad_request(format!(
                "expected rows as JSON objects or arrays, got {}",
                kind(&other)
            )));
        }
    };
    if rows.is_empty() {
        return Err(ApiError::bad_request("no rows in the request".into()));
    }
    if rows.len() > max_rows {
        return Err(too_many_rows(max_rows));
    }
    let by_position = rows[0].is_array();
    let mut header: Vec<String> = features.to_vec();
    let id = id_column.filter(|id| rows[0].get(id).is_some());
    if let Some(id) = id {
        header.push(id.to_string());
    }
    if rows.len().saturating_mul(header.len()) > max_rows.saturating_mul(CELLS_PER_ROW) {
        return Err(too_many_cells(max_rows.saturating_mul(CELLS_PER_ROW)));
    }
    let mut cells = Vec::with_capacity(rows.len() * header.len());
    for (i, row) in rows.iter().enumerate() {
        let n = i + 1;
        match row {
            Value::Array(values) if by_position => {
                if values.len() != features.len() {
                    return Err(ApiError::unprocessable(format!(
                        "row {n}: {} values, the model reads {} features ({})",
                        values.len(),
                        features.len(),
                        features.join(", ")
                    )));
                }
                for (v, f) in values.iter().zip(features) {
                    cells.push(cell(v, n, f)?);
                }
            }
            Value::Object(o) if !by_position => {
                let missing: Vec<&str> = features
                    .iter()
                    .filter(|f| !o.contains_key(f.as_str()))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(ApiError::unprocessable(format!(
                        "row {n}: missing feature{} {} (send null for a missing value; the \
                         model reads {})",
                        if missing.len() > 1 { "s" } else { "" },
                        missing.join(", "),
                        features.join(", ")
                    )));
                }
                for f in features {
                    cells.push(match o.get(f.as_str()) {
                        Some(v) => cell(v, n, f)?,
                        None => Cell::Missing,
                    });
                }
                if let Some(id) = id {
                    // The id is kept as written: a string as is, anything else as JSON.
                    cells.push(match o.get(id) {
                        Some(Value::String(t)) => Cell::Text(t.as_str().into()),
                        Some(Value::Null) | None => Cell::Text("".into()),
                        Some(other) => Cell::Text(other.to_string().into()),
                    });
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "row {n} is {}, the first row {}: send every row the same way",
                    kind(other),
                    if by_position { "an array" } else { "an object" }
                )));
            }
        }
    }
    Ok((header, cells, by_position))
}

fn cell(v: &Value, row: usize, column: &str) -> Result<Cell, ApiError> {
    match v {
        Value::Null => Ok(Cell::Missing),
        Value::Number(x) => Ok(x.as_f64().map_or(Cell::Missing, Cell::Number)),
        Value::String(s) => Ok(Cell::parse(s)),
        other => Err(ApiError::unprocessable(format!(
            "row {row}, column '{column}': {} is not a number",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feats() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn json_rows_in_every_accepted_shape() {
        let (h, c, pos) = json_cells(
            json!({"rows": [{"a": 1, "b": null, "c": 9}]}),
            &feats(),
            None,
            100,
        )
        .unwrap();
        assert_eq!(h, feats());
        assert_eq!(c, vec![Cell::Number(1.0), Cell::Missing]);
        assert!(!pos);
        let (_, c, pos) = json_cells(json!([[1, "2.5"], [3, "NA"]]), &feats(), None, 100).unwrap();
        assert!(pos);
        assert_eq!(
            c,
            vec![
                Cell::Number(1.0),
                Cell::Number(2.5),
                Cell::Number(3.0),
                Cell::Missing
            ]
        );
        let (h, c, _) = json_cells(
            json!({"a": 1, "b": 2, "id": "007"}),
            &feats(),
            Some("id"),
            100,
        )
        .unwrap();
        assert_eq!(h.last().map(String::as_str), Some("id"));
        assert_eq!(c[2], Cell::Text("007".into()));
        let (_, c, _) =
            json_cells(json!({"a": 1, "b": 2, "id": 12}), &feats(), Some("id"), 100).unwrap();
        assert_eq!(c[2], Cell::Text("12".into()));
    }

    #[test]
    fn json_rows_with_wrong_columns_name_row_and_feature() {
        let e = json_cells(json!([{"a": 1, "b": 2}, {"a": 1}]), &feats(), None, 100).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(
            e.message.contains("row 2: missing feature b"),
            "{}",
            e.message
        );
        let e = json_cells(json!([[1, 2, 3]]), &feats(), None, 100).unwrap_err();
        assert!(e.message.contains("row 1: 3 values"), "{}", e.message);
        let e = json_cells(json!([{"a": true, "b": 1}]), &feats(), None, 100).unwrap_err();
        assert!(e.message.contains("column 'a': a boolean"), "{}", e.message);
        let e = json_cells(json!("text"), &feats(), None, 100).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = json_cells(json!([[1, 2], {"a": 1, "b": 2}]), &feats(), None, 100).unwrap_err();
        assert!(e.message.contains("row 2 is an object"), "{}", e.message);
    }

    #[test]
    fn csv_rows_keep_names_and_gaps() {
        let (h, c, pos) = csv_cells(b"b,a\n1,\n2,3\n", None, 100).unwrap();
        assert_eq!(h, vec!["b".to_string(), "a".to_string()]);
        assert!(!pos);
        assert_eq!(
            c,
            vec![
                Cell::Number(1.0),
                Cell::Missing,
                Cell::Number(2.0),
                Cell::Number(3.0)
            ]
        );
        let (h, _, _) = csv_cells(b"a\tb\n1\t2\n", None, 100).unwrap();
        assert_eq!(h.len(), 2);
        assert!(csv_cells(b"a,b\n", None, 100).is_err());
        assert!(csv_cells(b"a,b\n1,2,3\n", None, 100).is_err());
        let e = csv_cells(b"a,b\n1,2\n3,4\n5,6\n", None, 2).unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
        assert!(e.message.contains("more than 2 rows"), "{}", e.message);
        let e = json_cells(json!([[1, 2], [3, 4], [5, 6]]), &feats(), None, 2).unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
        assert_eq!(json_commas(br#"[{"a,b": "x\",y", "c": [1, 2]}]"#), 2);
        let names: Vec<String> = (0..41).map(|j| format!("c{j}")).collect();
        let wide = format!("{}\n{}\n", names.join(","), vec!["1"; 41].join(","));
        let e = csv_cells(wide.as_bytes(), None, 1).unwrap_err();
        assert!(e.message.contains("more than 40 cells"), "{}", e.message);
        let e = csv_cells(b"a,b,a\n1,2,3\n", None, 100).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.message.contains("'a' appears twice"), "{}", e.message);
        let (_, c, _) = csv_cells(b"id,a\n007,1\n", Some("id"), 100).unwrap();
        assert_eq!(c[0], Cell::Text("007".into()));
    }
}
