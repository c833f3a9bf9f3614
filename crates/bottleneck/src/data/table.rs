//! Tables: CSV (header row; `.tsv` tab-separated), Parquet and `.npy` (2-D float), read in
//! chunks of rows so a file of any size streams with bounded memory. Numeric columns are
//! features; missing cells (empty, NA, NaN, null, ...) become NaN and are allowed anywhere.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{CowArray, Ix2};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::record::reader::RowIter;

use crate::error::{Error, Result};

/// File formats a table can come in, told by the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv { delimiter: u8 },
    Parquet,
    Npy,
}

impl TableFormat {
    /// The format of `path` by its extension, or `None` when it is not a table file.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" => Some(Self::Csv { delimiter: b',' }),
            "tsv" | "tab" => Some(Self::Csv { delimiter: b'\t' }),
            "parquet" | "pq" => Some(Self::Parquet),
            "npy" => Some(Self::Npy),
            _ => None,
        }
    }

    /// Like [`TableFormat::of`], failing with a message that lists the known extensions.
    pub fn require(path: &Path) -> Result<Self> {
        Self::of(path).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: not a table file (expected .csv, .tsv, .parquet or .npy)",
                path.display()
            ))
        })
    }
}

/// Whether `path` names a table file (by extension).
pub fn is_table_path(path: &Path) -> bool {
    TableFormat::of(path).is_some()
}

/// One cell as read from a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Missing,
    Number(f64),
    Text(Box<str>),
}

/// Cell texts read as missing (after trimming spaces).
const MISSING: [&str; 14] = [
    "", "NA", "na", "N/A", "n/a", "NaN", "nan", "NAN", "null", "NULL", "Null", "None", "none", "?",
];

impl Cell {
    /// Reads a CSV cell: a missing marker, a number, or text.
    pub fn parse(text: &str) -> Self {
        let t = text.trim();
        if MISSING.contains(&t) {
            return Cell::Missing;
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_nan() => Cell::Missing,
            Ok(v) => Cell::Number(v),
            Err(_) => Cell::Text(t.into()),
        }
    }

    fn from_parquet(field: &Field) -> Self {
        match field {
            Field::Null => Cell::Missing,
            Field::Bool(b) => Cell::Number(*b as u8 as f64),
            Field::Byte(v) => Cell::Number(*v as f64),
            Field::Short(v) => Cell::Number(*v as f64),
            Field::Int(v) => Cell::Number(*v as f64),
            Field::Long(v) => Cell::Number(*v as f64),
            Field::UByte(v) => Cell::Number(*v as f64),
            Field::UShort(v) => Cell::Number(*v as f64),
            Field::UInt(v) => Cell::Number(*v as f64),
            Field::ULong(v) => Cell::Number(*v as f64),
            Field::Float16(v) => Cell::Number(f64::from(*v)),
            Field::Float(v) if v.is_nan() => Cell::Missing,
            Field::Float(v) => Cell::Number(*v as f64),
            Field::Double(v) if v.is_nan() => Cell::Missing,
            Field::Double(v) => Cell::Number(*v),
            Field::Str(s) => Cell::Text(s.as_str().into()),
            other => Cell::Text(other.to_string().into()),
        }
    }

    /// The cell as text, for ids and for copying cells through unchanged.
    pub fn text(&self) -> String {
        match self {
            Cell::Missing => String::new(),
            Cell::Number(v) => format!("{v}"),
            Cell::Text(t) => t.to_string(),
        }
    }
}

/// Consecutive rows of a table: every column, in file order.
#[derive(Debug, Clone)]
pub struct RawChunk {
    /// 0-based index of the first row in the file (header not counted).
    pub first_row: usize,
    pub rows: usize,
    /// `rows x columns` cells, row-major.
    pub cells: Vec<Cell>,
    /// CSV only: the rows exactly as written, so `impute` can copy untouched cells verbatim.
    pub records: Option<Vec<csv::StringRecord>>,
}

enum Source {
    Csv(csv::Reader<File>),
    Parquet(RowIter<'static>, u64),
    Npy {
        data: ndarray::Array2<f64>,
        next: usize,
    },
}

/// Reads a table file chunk by chunk.
pub struct TableReader {
    path: PathBuf,
    format: TableFormat,
    header: Vec<String>,
    source: Source,
    next_row: usize,
    keep_records: bool,
}

/// The first text cell of each column seen so far: `(1-based row, text)`.
pub type TextCells = Vec<Option<(usize, Box<str>)>>;

/// Notes in `text` the first text cell of each column of `chunk` not noted yet.
pub fn note_text_cells(chunk: &RawChunk, text: &mut TextCells) {
    let cols = text.len();
    for r in 0..chunk.rows {
        for (j, slot) in text.iter_mut().enumerate() {
            if slot.is_none()
                && let Cell::Text(t) = &chunk.cells[r * cols + j]
            {
                *slot = Some((chunk.first_row + r + 1, t.clone()));
            }
        }
    }
}

/// What is wrong with a table's header row, if anything: a name that appears twice (its
/// cells could not be told apart). The one rule for files and for rows sent to the service.
pub fn check_header(header: &[String]) -> std::result::Result<(), String> {
    let mut seen = HashSet::new();
    for h in header {
        if !seen.insert(h) {
            return Err(format!("column '{h}' appears twice in the header"));
        }
    }
    Ok(())
}

impl TableReader {
    /// Opens the table at `path` and reads its header. Fails when the file is missing, is
    /// not a table, or its header cannot be read.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing {
                path: path.to_path_buf(),
            });
        }
        let format = TableFormat::require(path)?;
        let bad = |reason: String| Error::Invalid(format!("{}: {reason}", path.display()));
        let (header, source) = match format {
            TableFormat::Csv { delimiter } => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .from_path(path)
                    .map_err(|e| bad(e.to_string()))?;
                let header: Vec<String> = reader
                    .headers()
                    .map_err(|e| bad(e.to_string()))?
                    .iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                (header, Source::Csv(reader))
            }
            TableFormat::Parquet => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let reader = SerializedFileReader::new(file)
                    .map_err(|e| bad(format!("not a Parquet file ({e})")))?;
                let schema = reader.metadata().file_metadata().schema();
                let mut header = Vec::new();
                for field in schema.get_fields() {
                    if field.is_group() {
                        return Err(bad(format!(
                            "column '{}' is nested; only flat tables are supported",
                            field.name()
                        )));
                    }
                    header.push(field.name().to_string());
                }
                let rows = reader.metadata().file_metadata().num_rows().max(0) as u64;
                (header, Source::Parquet(reader.into_iter(), rows))
            }
            TableFormat::Npy => {
                let data = read_npy(path)?;
                let header = (0..data.ncols()).map(|j| format!("x{j}")).collect();
                (header, Source::Npy { data, next: 0 })
            }
        };
        check_header(&header).map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            format,
            header,
            source,
            next_row: 0,
            keep_records: false,
        })
    }

    /// Keeps each CSV row as written in [`RawChunk::records`] (for copying cells through).
    pub fn with_records(mut self) -> Self {
        self.keep_records = true;
        self
    }

    /// Column names in file order (`x0, x1, ...` for `.npy`).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> TableFormat {
        self.format
    }

    /// How far reading has got, as (done, total): bytes for CSV, rows otherwise.
    pub fn position(&self) -> (u64, u64) {
        match &self.source {
            Source::Csv(r) => {
                let total = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
                (r.position().byte(), total)
            }
            Source::Parquet(_, rows) => (self.next_row as u64, *rows),
            Source::Npy { data, next } => (*next as u64, data.nrows() as u64),
        }
    }

    /// The next chunk of at most `max_rows` rows, or `None` at the end of the file. Fails
    /// on a malformed row, naming it.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<RawChunk>> {
        let cols = self.header.len();
        let first_row = self.next_row;
        let mut cells = Vec::with_capacity(max_rows.min(1 << 16) * cols);
        let mut rows = 0;
        let path = self.path.clone();
        let mut records = None;
        let keep = self.keep_records;
        match &mut self.source {
            Source::Csv(reader) => {
                let mut recs = Vec::new();
                let mut record = csv::StringRecord::new();
                while rows < max_rows {
                    let more = reader.read_record(&mut record).map_err(|e| {
                        Error::Invalid(format!(
                            "{}: row {}: {e}",
                            path.display(),
                            first_row + rows + 1
                        ))
                    })?;
                    if !more {
                        break;
                    }
                    cells.extend(record.iter().map(Cell::parse));
                    if keep {
                        recs.push(record.clone());
                    }
                    rows += 1;
                }
                records = keep.then_some(recs);
            }
            Source::Parquet(iter, _) => {
                while rows < max_rows {
                    let Some(row) = iter.next() else { break };
                    let row = row.map_err(|e| {
                        Error::Invalid(format!(
                            "{}: row {}: {e}",
                            path.display(),
                            first_row + rows + 1
                        ))
                    })?;
                    cells.extend(row.get_column_iter().map(|(_, f)| Cell::from_parquet(f)));
                    rows += 1;
                }
            }
            Source::Npy { data, next } => {
                let end = (*next + max_rows).min(data.nrows());
                for r in *next..end {
                    cells.extend(data.row(r).iter().map(|&v| {
                        if v.is_nan() {
                            Cell::Missing
                        } else {
                            Cell::Number(v)
                        }
                    }));
                }
                rows = end - *next;
                *next = end;
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        self.next_row += rows;
        Ok(Some(RawChunk {
            first_row,
            rows,
            cells,
            records,
        }))
    }
}

/// Reads a 2-D float `.npy` (f32 or f64) as f64. The header is checked against the file's
/// size before anything is allocated from it: a shape that claims more (or fewer) values
/// than the file holds is named as such.
fn read_npy(path: &Path) -> Result<ndarray::Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    use ndarray_npy::npy::header::Header;
    use std::io::{Read, Seek};
    let bad = |reason: String| Error::Invalid(format!("{}: {reason}", path.display()));
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    // Magic (6 bytes), version (2), header length (2 bytes in version 1, 4 after).
    let mut start = [0u8; 12];
    file.read_exact(&mut start)
        .map_err(|_| bad("not an .npy file (too short)".into()))?;
    let header_len = match start[6] {
        1 => u64::from(u16::from_le_bytes([start[8], start[9]])),
        _ => u64::from(u32::from_le_bytes([
            start[8], start[9], start[10], start[11],
        ])),
    };
    if &start[..6] != b"\x93NUMPY" || header_len > file_len.min(1 << 20) {
        return Err(bad(
            "not an .npy file (bad magic string or header length)".into()
        ));
    }
    file.rewind().map_err(|e| Error::io(path, e))?;
    let header =
        Header::from_reader(&mut file).map_err(|e| bad(format!("not an .npy file ({e})")))?;
    let data_start = file.stream_position().map_err(|e| Error::io(path, e))?;
    let dtype = header.type_descriptor.to_string();
    let width = match dtype.trim_matches(['\'', '"']) {
        "<f8" => 8u64,
        "<f4" => 4,
        _ => {
            return Err(bad(format!(
                "expected a 2-D float32 or float64 array (little-endian), not dtype {dtype}"
            )));
        }
    };
    let [rows, cols] = header.shape[..] else {
        return Err(bad(format!(
            "expected a 2-D array, not shape {:?}",
            header.shape
        )));
    };
    let needed = (rows as u64)
        .checked_mul(cols as u64)
        .and_then(|n| n.checked_mul(width));
    let held = file_len - data_start;
    if needed != Some(held) {
        return Err(bad(format!(
            "the header says {rows} x {cols} values of {width} bytes, but the file holds \
             {held} bytes of data (truncated or damaged)"
        )));
    }
    file.rewind().map_err(|e| Error::io(path, e))?;
    let read = |e: ndarray_npy::ReadNpyError| bad(format!("cannot read the array ({e})"));
    if width == 8 {
        ndarray::Array2::<f64>::read_npy(file).map_err(read)
    } else {
        ndarray::Array2::<f32>::read_npy(file)
            .map(|a| a.mapv(f64::from))
            .map_err(read)
    }
}

/// Which columns of a table are features, chosen by the user at training time.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColumnSelection {
    /// Only these columns are features.
    pub columns: Option<Vec<String>>,
    /// These columns are left out.
    pub exclude: Vec<String>,
    /// The column that names each row in outputs.
    pub id_column: Option<String>,
}

/// Where the features and the id sit in a file's columns.
#[derive(Debug, Clone)]
pub struct Layout {
    pub features: Vec<String>,
    /// Column index in the file of each feature.
    feature_columns: Vec<usize>,
    /// Name and column index of the id column.
    pub id: Option<(String, usize)>,
    pub columns: usize,
}

/// Feature values of a chunk with the rows kept.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// `rows x features`, row-major; NaN where a cell is missing.
    pub values: Vec<f32>,
    /// The id of each row: the id column's text, or the 1-based row number.
    pub ids: Vec<String>,
    /// Index of each kept row within its chunk.
    pub kept: Vec<usize>,
    /// Rows left out under `skip_bad`, with the reason.
    pub skipped: Vec<String>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn find_column(header: &[String], name: &str, path: &Path, what: &str) -> Result<usize> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: {what} column '{name}' not found; columns are: {}",
            path.display(),
            header.join(", ")
        ))
    })
}

impl Layout {
    /// The training layout: the selected columns, which must all be numeric. `text` holds
    /// the first text cell of each column over the whole training table (see
    /// [`note_text_cells`]): a column is numeric when it has none. Fails naming non-numeric
    /// columns that were not excluded, and unknown names.
    pub fn for_training(
        header: &[String],
        text: &TextCells,
        selection: &ColumnSelection,
        path: &Path,
    ) -> Result<Self> {
        let id = match &selection.id_column {
            Some(name) => Some((name.clone(), find_column(header, name, path, "id")?)),
            None => None,
        };
        for name in &selection.exclude {
            find_column(header, name, path, "excluded")?;
        }
        let mut candidates = match &selection.columns {
            Some(cols) => cols
                .iter()
                .map(|c| find_column(header, c, path, "feature"))
                .collect::<Result<Vec<_>>>()?,
            None => (0..header.len()).collect(),
        };
        candidates.retain(|&j| {
            id.as_ref().is_none_or(|(_, i)| *i != j) && !selection.exclude.contains(&header[j])
        });
        let cols = header.len();
        let mut non_numeric = Vec::new();
        for &j in &candidates {
            if let Some((row, text)) = &text[j] {
                non_numeric.push(format!("'{}' (row {row}: '{text}')", header[j]));
            }
        }
        if !non_numeric.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: non-numeric column{} {}; name it as the id column or exclude {} from \
                 the features",
                path.display(),
                if non_numeric.len() > 1 { "s" } else { "" },
                non_numeric.join(", "),
                if non_numeric.len() > 1 { "them" } else { "it" },
            )));
        }
        if candidates.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no feature columns left to train on",
                path.display()
            )));
        }
        Ok(Self {
            features: candidates.iter().map(|&j| header[j].clone()).collect(),
            feature_columns: candidates,
            id,
            columns: cols,
        })
    }

    /// The layout of a file scored by a model trained on `features`: columns are found by
    /// name (any order, extra columns ignored). A `.npy` file, which has no names, is taken
    /// by position when its width matches. Fails naming the missing columns.
    pub fn for_model(
        reader: &TableReader,
        features: &[String],
        id_column: Option<&str>,
    ) -> Result<Self> {
        Self::for_header(
            reader.header(),
            reader.path(),
            reader.format() == TableFormat::Npy,
            features,
            id_column,
        )
    }

    /// Like [`Layout::for_model`] for columns named `header` from `path` (a file, or what
    /// errors should call the source); `by_position` takes unnamed columns in order.
    pub fn for_header(
        header: &[String],
        path: &Path,
        by_position: bool,
        features: &[String],
        id_column: Option<&str>,
    ) -> Result<Self> {
        if by_position {
            if header.len() != features.len() {
                return Err(Error::Invalid(format!(
                    "{}: {} columns, the model was trained on {} features",
                    path.display(),
                    header.len(),
                    features.len()
                )));
            }
            return Ok(Self {
                features: features.to_vec(),
                feature_columns: (0..features.len()).collect(),
                id: None,
                columns: header.len(),
            });
        }
        let missing: Vec<&str> = features
            .iter()
            .filter(|f| !header.contains(f))
            .map(|f| f.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: missing column{} the model was trained on: {}",
                path.display(),
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        }
        let feature_columns = features
            .iter()
            .map(|f| header.iter().position(|h| h == f).unwrap_or(0))
            .collect();
        let id = id_column.and_then(|name| {
            header
                .iter()
                .position(|h| h == name)
                .map(|j| (name.to_string(), j))
        });
        Ok(Self {
            features: features.to_vec(),
            feature_columns,
            id,
            columns: header.len(),
        })
    }

    /// Column index in the file of feature `k`.
    pub fn feature_column(&self, k: usize) -> usize {
        self.feature_columns[k]
    }

    /// The features of `chunk`. A text or infinite cell in a feature column, or a row whose
    /// features are all missing, fails naming row and column, or with `skip_bad` leaves the
    /// row out and says why in [`Rows::skipped`].
    pub fn extract(&self, chunk: &RawChunk, path: &Path, skip_bad: bool) -> Result<Rows> {
        let d = self.features.len();
        let mut out = Rows {
            values: Vec::with_capacity(chunk.rows * d),
            ..Rows::default()
        };
        let mut row_values = vec![0f32; d];
        for r in 0..chunk.rows {
            let cells = &chunk.cells[r * self.columns..(r + 1) * self.columns];
            let row_number = chunk.first_row + r + 1;
            let mut problem = None;
            let mut observed = 0;
            for (k, &j) in self.feature_columns.iter().enumerate() {
                row_values[k] = match &cells[j] {
                    Cell::Missing => f32::NAN,
                    // Finite as the f32 the network reads: 1e39 is finite in f64 only.
                    Cell::Number(v) if (*v as f32).is_finite() => {
                        observed += 1;
                        *v as f32
                    }
                    Cell::Number(v) => {
                        problem = Some(format!(
                            "row {row_number}, column '{}': {v} is not a finite number within \
                             ±3.4e38",
                            self.features[k]
                        ));
                        break;
                    }
                    Cell::Text(t) => {
                        problem = Some(format!(
                            "row {row_number}, column '{}': '{t}' is not a number",
                            self.features[k]
                        ));
                        break;
                    }
                };
            }
            if problem.is_none() && observed == 0 {
                problem = Some(format!("row {row_number}: every feature is missing"));
            }
            if let Some(p) = problem {
                if skip_bad {
                    out.skipped.push(p);
                    continue;
                }
                return Err(Error::Invalid(format!("{}: {p}", path.display())));
            }
            out.values.extend_from_slice(&row_values);
            out.ids.push(match &self.id {
                Some((_, j)) => match &chunk.records {
                    Some(recs) => recs[r].get(*j).unwrap_or("").to_string(),
                    None => cells[*j].text(),
                },
                None => row_number.to_string(),
            });
            out.kept.push(r);
        }
        Ok(out)
    }
}

/// A table in memory: rows of named columns, NaN where a cell is missing. Tables without
/// names (a bare array) name their columns `x0, x1, ...`, as `.npy` files are named, and are
/// matched to a model by position. The values are owned (`Array2`) or borrowed
/// (`ArrayView2`, e.g. a NumPy array): scoring a borrowed row-major table whose columns are
/// the model's features, in order, copies nothing but one chunk at a time.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    columns: Vec<String>,
    named: bool,
    values: CowArray<'a, f32, Ix2>,
    ids: Option<Vec<String>>,
}

impl<'a> Table<'a> {
    /// A table whose column `j` is named `columns[j]`. Fails when the names do not match
    /// the array's width, or a name is empty or repeated.
    pub fn new(columns: Vec<String>, values: impl Into<CowArray<'a, f32, Ix2>>) -> Result<Self> {
        let values = values.into();
        if columns.len() != values.ncols() {
            return Err(Error::Invalid(format!(
                "table: {} column names for {} columns",
                columns.len(),
                values.ncols()
            )));
        }
        let mut seen = HashSet::new();
        for c in &columns {
            if c.is_empty() {
                return Err(Error::Invalid("table: a column has an empty name".into()));
            }
            if !seen.insert(c.as_str()) {
                return Err(Error::Invalid(format!(
                    "table: column name '{c}' appears twice"
                )));
            }
        }
        Ok(Self {
            columns,
            named: true,
            values,
            ids: None,
        })
    }

    /// A table without column names: `x0, x1, ...`, matched to a model by position.
    pub fn unnamed(values: impl Into<CowArray<'a, f32, Ix2>>) -> Self {
        let values = values.into();
        Self {
            columns: (0..values.ncols()).map(|j| format!("x{j}")).collect(),
            named: false,
            values,
            ids: None,
        }
    }

    /// The same table with each row named by `ids` (outputs use the 1-based row number
    /// otherwise). Fails when there is not one id per row.
    pub fn with_ids(mut self, ids: Vec<String>) -> Result<Self> {
        if ids.len() != self.values.nrows() {
            return Err(Error::Invalid(format!(
                "table: {} ids for {} rows",
                ids.len(),
                self.values.nrows()
            )));
        }
        self.ids = Some(ids);
        Ok(self)
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether the columns were named by the caller (else `x0, x1, ...`).
    pub fn is_named(&self) -> bool {
        self.named
    }

    /// The values, `rows x columns`.
    pub fn values(&self) -> ndarray::ArrayView2<'_, f32> {
        self.values.view()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.nrows()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.nrows() == 0
    }

    /// Where each of `features` is in this table (by name in a named table; by position in
    /// an unnamed one).
    fn layout(&self, features: &[String]) -> Result<Layout> {
        Layout::for_header(
            &self.columns,
            Path::new("table"),
            !self.named,
            features,
            None,
        )
    }

    /// The values of `features`, `rows x features` row-major, borrowed when this table
    /// already holds exactly them in that order row-major (no copy), else gathered. Fails
    /// like [`Table::rows`] without `skip_bad`.
    pub fn features(&self, features: &[String]) -> Result<CowArray<'_, f32, Ix2>> {
        let layout = self.layout(features)?;
        let in_place = layout
            .feature_columns
            .iter()
            .copied()
            .eq(0..self.values.ncols())
            && self.values.is_standard_layout();
        let out: CowArray<'_, f32, Ix2> = if in_place {
            self.values.view().into()
        } else {
            let view = self.values.view();
            ndarray::Array2::from_shape_fn((self.len(), features.len()), |(r, k)| {
                view[[r, layout.feature_columns[k]]]
            })
            .into()
        };
        for (r, row) in out.rows().into_iter().enumerate() {
            if let Some(p) = row_problem(r, row.iter().copied(), features) {
                return Err(Error::Invalid(format!("table: {p}")));
            }
        }
        Ok(out)
    }

    /// The values of `features` in each row (found by name in a named table, in any order
    /// with other columns ignored; by position in an unnamed one). An infinite value or a
    /// row with every feature missing fails naming its row (from 1) and column, as in a
    /// file; with `skip_bad` the row is left out instead and listed in [`Rows::skipped`].
    pub fn rows(&self, features: &[String], skip_bad: bool) -> Result<Rows> {
        let layout = self.layout(features)?;
        let d = features.len();
        let mut out = Rows {
            values: Vec::with_capacity(self.len() * d),
            ..Rows::default()
        };
        let mut row_values = vec![0f32; d];
        for (r, row) in self.values.rows().into_iter().enumerate() {
            for (k, &j) in layout.feature_columns.iter().enumerate() {
                row_values[k] = row[j];
            }
            if let Some(p) = row_problem(r, row_values.iter().copied(), features) {
                if skip_bad {
                    out.skipped.push(p);
                    continue;
                }
                return Err(Error::Invalid(format!("table: {p}")));
            }
            out.values.extend_from_slice(&row_values);
            out.ids.push(match &self.ids {
                Some(ids) => ids[r].clone(),
                None => (r + 1).to_string(),
            });
            out.kept.push(r);
        }
        Ok(out)
    }
}

/// What is wrong with row `r` (from 0) of feature values, if anything: an infinite value
/// (naming its column) or every feature missing.
fn row_problem(r: usize, values: impl Iterator<Item = f32>, features: &[String]) -> Option<String> {
    let mut observed = 0;
    for (k, v) in values.enumerate() {
        if v.is_infinite() {
            return Some(format!(
                "row {}, column '{}': {v} is not a finite number",
                r + 1,
                features[k]
            ));
        }
        observed += usize::from(!v.is_nan());
    }
    (observed == 0).then(|| format!("row {}: every feature is missing", r + 1))
}

/// Reads a whole table for training: the layout chosen by `selection` and every row's
/// features. Two passes over the file, so only the features stay in memory: the first finds
/// the text columns, the second reads the values. Fails like [`Layout::extract`]; an empty
/// table is an error.
pub fn read_training_table(
    path: &Path,
    selection: &ColumnSelection,
    skip_bad: bool,
) -> Result<(Layout, Rows)> {
    const CHUNK: usize = 8192;
    let mut reader = TableReader::open(path)?;
    let header = reader.header().to_vec();
    let mut text: TextCells = vec![None; header.len()];
    let mut rows_seen = 0;
    if reader.format() != TableFormat::Npy {
        while let Some(c) = reader.next_chunk(CHUNK)? {
            note_text_cells(&c, &mut text);
            rows_seen += c.rows;
        }
        reader = TableReader::open(path)?;
    }
    let layout = Layout::for_training(&header, &text, selection, path)?;
    let mut all = Rows::default();
    while let Some(c) = reader.next_chunk(CHUNK)? {
        rows_seen += c.rows;
        let rows = layout.extract(&c, path, skip_bad)?;
        all.values.extend(rows.values);
        all.ids.extend(rows.ids);
        all.skipped.extend(rows.skipped);
    }
    if rows_seen == 0 {
        return Err(Error::Invalid(format!("{}: no data rows", path.display())));
    }
    if all.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no usable rows ({} skipped)",
            path.display(),
            all.skipped.len()
        )));
    }
    Ok((layout, all))
}

/// Writes rows of `(id, values)` as CSV, Parquet or `.npy`, by the extension of the path
/// it was made for. CSV and Parquet stream; `.npy` (whose header holds the row count) keeps
/// the values until [`TableWriter::finish`]. Use it inside [`crate::io::write_atomic`].
pub struct TableWriter {
    path: PathBuf,
    columns: Vec<String>,
    id_name: String,
    sink: Sink,
}

enum Sink {
    Csv(csv::Writer<File>),
    Parquet(parquet::file::writer::SerializedFileWriter<File>),
    Npy(Vec<f32>, usize),
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

impl TableWriter {
    /// Creates `tmp` to hold a table in the format of `target`'s extension, with an id
    /// column `id_name` (left out of `.npy`) followed by `columns`.
    pub fn create(target: &Path, tmp: &Path, id_name: &str, columns: &[String]) -> Result<Self> {
        let format = TableFormat::require(target)?;
        let sink = match format {
            TableFormat::Csv { delimiter } => {
                let mut w = csv::WriterBuilder::new()
                    .delimiter(delimiter)
                    .from_path(tmp)
                    .map_err(|e| csv_error(tmp, e))?;
                w.write_record(std::iter::once(id_name).chain(columns.iter().map(|c| c.as_str())))
                    .map_err(|e| csv_error(tmp, e))?;
                Sink::Csv(w)
            }
            TableFormat::Parquet => {
                use parquet::basic::{LogicalType, Repetition, Type as Physical};
                use parquet::schema::types::Type;
                let mut fields = vec![Arc::new(
                    Type::primitive_type_builder(id_name, Physical::BYTE_ARRAY)
                        .with_repetition(Repetition::REQUIRED)
                        .with_logical_type(Some(LogicalType::String))
                        .build()
                        .map_err(|e| parquet_error(tmp, e))?,
                )];
                for c in columns {
                    fields.push(Arc::new(
                        Type::primitive_type_builder(c, Physical::FLOAT)
                            .with_repetition(Repetition::REQUIRED)
                            .build()
                            .map_err(|e| parquet_error(tmp, e))?,
                    ));
                }
                let schema = Type::group_type_builder("table")
                    .with_fields(fields)
                    .build()
                    .map_err(|e| parquet_error(tmp, e))?;
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
                Sink::Parquet(
                    parquet::file::writer::SerializedFileWriter::new(
                        file,
                        Arc::new(schema),
                        Arc::new(props),
                    )
                    .map_err(|e| parquet_error(tmp, e))?,
                )
            }
            TableFormat::Npy => Sink::Npy(Vec::new(), 0),
        };
        Ok(Self {
            path: tmp.to_path_buf(),
            columns: columns.to_vec(),
            id_name: id_name.to_string(),
            sink,
        })
    }

    /// Appends rows: `ids[i]` and `values[i * columns .. (i + 1) * columns]`.
    pub fn write(&mut self, ids: &[String], values: &[f32]) -> Result<()> {
        let d = self.columns.len();
        let path = self.path.clone();
        match &mut self.sink {
            Sink::Csv(w) => {
                let mut record = csv::StringRecord::with_capacity(16 * (d + 1), d + 1);
                for (i, id) in ids.iter().enumerate() {
                    record.clear();
                    record.push_field(id);
                    for v in &values[i * d..(i + 1) * d] {
                        record.push_field(&format!("{v}"));
                    }
                    w.write_record(&record).map_err(|e| csv_error(&path, e))?;
                }
            }
            Sink::Parquet(w) => {
                use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
                if ids.is_empty() {
                    return Ok(());
                }
                let mut group = w.next_row_group().map_err(|e| parquet_error(&path, e))?;
                let mut k = 0usize;
                while let Some(mut col) =
                    group.next_column().map_err(|e| parquet_error(&path, e))?
                {
                    if k == 0 {
                        let v: Vec<ByteArray> = ids.iter().map(|s| s.as_str().into()).collect();
                        col.typed::<ByteArrayType>()
                            .write_batch(&v, None, None)
                            .map_err(|e| parquet_error(&path, e))?;
                    } else {
                        let v: Vec<f32> = (0..ids.len()).map(|i| values[i * d + k - 1]).collect();
                        col.typed::<FloatType>()
                            .write_batch(&v, None, None)
                            .map_err(|e| parquet_error(&path, e))?;
                    }
                    col.close().map_err(|e| parquet_error(&path, e))?;
                    k += 1;
                }
                group.close().map_err(|e| parquet_error(&path, e))?;
            }
            Sink::Npy(all, rows) => {
                all.extend_from_slice(&values[..ids.len() * d]);
                *rows += ids.len();
            }
        }
        Ok(())
    }

    /// Completes the file.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let _ = &self.id_name;
        match self.sink {
            Sink::Csv(mut w) => w.flush().map_err(|e| Error::io(&path, e)),
            Sink::Parquet(w) => w.close().map(|_| ()).map_err(|e| parquet_error(&path, e)),
            Sink::Npy(all, rows) => {
                use ndarray_npy::WriteNpyExt;
                let a = ndarray::Array2::from_shape_vec((rows, self.columns.len()), all)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
                a.write_npy(std::io::BufWriter::new(file))
                    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bn-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn tables_in_memory_are_read_in_place_when_their_columns_are_the_features() {
        let names = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let data = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, f32::NAN, 6.0]];
        let table = Table::new(names(&["a", "b", "c"]), data.view()).unwrap();
        // The model's features in the table's order: the caller's memory, not a copy.
        let same = table.features(&names(&["a", "b", "c"])).unwrap();
        assert!(same.is_view());
        assert_eq!(same.as_ptr(), data.as_ptr());
        // Another order or a subset: gathered, by name.
        let picked = table.features(&names(&["c", "a"])).unwrap();
        assert!(!picked.is_view());
        assert_eq!(picked.row(1).to_vec(), vec![6.0, 4.0]);
        // A transposed (column-major) view is gathered into row-major order.
        use ndarray::ShapeBuilder;
        let fortran =
            ndarray::Array2::from_shape_vec((2, 3).f(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
                .unwrap();
        let columns = Table::unnamed(fortran.view());
        let gathered = columns.features(&names(&["x0", "x1", "x2"])).unwrap();
        assert!(!gathered.is_view());
        assert_eq!(gathered.as_slice().unwrap()[..3], [1.0, 2.0, 3.0]);
        // Bad rows fail naming row and column, as from a file.
        let inf = ndarray::array![[1.0f32, 2.0], [f32::INFINITY, 0.0]];
        let err = Table::new(names(&["a", "b"]), inf.view())
            .unwrap()
            .features(&names(&["a", "b"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 2, column 'a'"), "{err}");
        let gap = ndarray::array![[f32::NAN, f32::NAN]];
        let err = Table::unnamed(gap.view())
            .features(&names(&["x0", "x1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1: every feature is missing"), "{err}");
    }

    #[test]
    fn cells_read_missing_markers_numbers_and_text() {
        assert_eq!(Cell::parse(" 1.5 "), Cell::Number(1.5));
        assert_eq!(Cell::parse("NA"), Cell::Missing);
        assert_eq!(Cell::parse(""), Cell::Missing);
        assert_eq!(Cell::parse("nan"), Cell::Missing);
        assert_eq!(Cell::parse("inf"), Cell::Number(f64::INFINITY));
        assert_eq!(Cell::parse("abc"), Cell::Text("abc".into()));
    }

    #[test]
    fn csv_columns_are_chosen_by_name_and_bad_cells_are_named() {
        let p = temp("a.csv");
        std::fs::write(&p, "id,a,b,label\nr1,1,2,x\nr2,,3,y\nr3,4,oops,z\n").unwrap();
        let sel = ColumnSelection {
            id_column: Some("id".into()),
            ..Default::default()
        };
        let err = read_training_table(&p, &sel, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'b' (row 3: 'oops')") && err.contains("'label'"),
            "{err}"
        );
        let sel = ColumnSelection {
            id_column: Some("id".into()),
            exclude: vec!["label".into()],
            columns: Some(vec!["a".into()]),
        };
        let (layout, rows) = read_training_table(&p, &sel, true).unwrap();
        assert_eq!(layout.features, vec!["a"]);
        assert_eq!(rows.ids, vec!["r1", "r3"]);
        assert_eq!(rows.values, vec![1.0, 4.0]);
        assert_eq!(rows.skipped, vec!["row 2: every feature is missing"]);
        // Row 2 has only a missing feature: an error naming it, or skipped.
        let sel = ColumnSelection {
            columns: Some(vec!["a".into()]),
            ..Default::default()
        };
        let mut reader = TableReader::open(&p).unwrap();
        let chunk = reader.next_chunk(10).unwrap().unwrap();
        let mut text: TextCells = vec![None; 4];
        note_text_cells(&chunk, &mut text);
        assert_eq!(text[3], Some((1, "x".into())));
        assert_eq!(text[2], Some((3, "oops".into())));
        let l = Layout::for_training(reader.header(), &text, &sel, &p).unwrap();
        let err = l.extract(&chunk, &p, false).unwrap_err().to_string();
        assert!(err.contains("row 2: every feature is missing"), "{err}");
        let rows = l.extract(&chunk, &p, true).unwrap();
        assert_eq!(rows.ids, vec!["1", "3"]);
        assert_eq!(rows.skipped.len(), 1);
    }

    #[test]
    fn model_layout_takes_any_order_and_names_missing_columns() {
        let p = temp("b.csv");
        std::fs::write(&p, "c,b,a\n3,2,1\n6,5,inf\n").unwrap();
        let reader = TableReader::open(&p).unwrap();
        let feats = vec!["a".to_string(), "b".to_string()];
        let l = Layout::for_model(&reader, &feats, None).unwrap();
        let mut reader = reader;
        let chunk = reader.next_chunk(1).unwrap().unwrap();
        assert_eq!(l.extract(&chunk, &p, false).unwrap().values, vec![1.0, 2.0]);
        let chunk = reader.next_chunk(5).unwrap().unwrap();
        let err = l.extract(&chunk, &p, false).unwrap_err().to_string();
        assert!(err.contains("row 2, column 'a'"), "{err}");
        let feats = vec!["a".to_string(), "d".to_string(), "e".to_string()];
        let err = Layout::for_model(&TableReader::open(&p).unwrap(), &feats, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing columns the model was trained on: d, e"),
            "{err}"
        );
    }

    #[test]
    fn npy_headers_that_lie_about_shape_or_type_are_named_before_allocating() {
        let good = temp("good.npy");
        ndarray_npy::write_npy(
            &good,
            &ndarray::array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]],
        )
        .unwrap();
        let bytes = std::fs::read(&good).unwrap();
        assert_eq!(TableReader::open(&good).unwrap().header().len(), 2);
        // The header dictionary, spaces-padded: swap a field keeping the file's length.
        let edit = |from: &str, to: &str| {
            let at = bytes
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            let mut out = bytes[..at].to_vec();
            out.extend_from_slice(to.as_bytes());
            let rest = &bytes[at + from.len()..];
            let newline = rest.iter().position(|&b| b == b'\n').unwrap();
            let trim = to.len().saturating_sub(from.len());
            out.extend_from_slice(&rest[..newline - trim]);
            out.extend_from_slice(&rest[newline..]);
            assert_eq!(out.len(), bytes.len());
            out
        };
        for (name, data, needle) in [
            (
                "huge.npy",
                edit("(3, 2)", "(99999999999, 2)"),
                "the header says",
            ),
            ("short.npy", edit("(3, 2)", "(4, 2)"), "holds 24 bytes"),
            ("ints.npy", edit("'<f4'", "'<i4'"), "not dtype '<i4'"),
            ("flat.npy", edit("(3, 2)", "(6,)  "), "not shape [6]"),
            ("text.npy", b"id,value\n1,2\n".to_vec(), "not an .npy file"),
        ] {
            let path = temp(name);
            std::fs::write(&path, data).unwrap();
            let err = TableReader::open(&path).err().unwrap().to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn parquet_and_npy_round_trip_through_the_writer_and_reader() {
        for name in ["t.parquet", "t.npy", "t.csv"] {
            let target = temp(name);
            let cols = vec!["z0".to_string(), "z1".to_string()];
            crate::io::write_atomic(&target, |tmp| {
                let mut w = TableWriter::create(&target, tmp, "id", &cols)?;
                w.write(&["a".into(), "b".into()], &[1.0, 2.0, 3.0, 4.5])?;
                w.write(&["c".into()], &[5.0, -6.0])?;
                w.finish()
            })
            .unwrap();
            let sel = ColumnSelection {
                id_column: (!name.ends_with("npy")).then(|| "id".to_string()),
                ..Default::default()
            };
            let (layout, rows) = read_training_table(&target, &sel, false).unwrap();
            assert_eq!(layout.features.len(), 2, "{name}");
            assert_eq!(rows.values, vec![1.0, 2.0, 3.0, 4.5, 5.0, -6.0], "{name}");
            if !name.ends_with("npy") {
                assert_eq!(rows.ids, vec!["a", "b", "c"], "{name}");
            }
        }
    }
}
