//! File formats of the drop folder and `amc-sync ingest` (DESIGN.md 4.2):
//!
//! * `.ndjson` / `.jsonl`: one Segment message per line;
//! * `.json`: a Segment batch object `{"batch":[…], "context"?, "integrations"?}`
//!   (top-level `context`/`integrations` merged into each item, as the Segment
//!   HTTP Tracking API does) or a JSON array of messages;
//! * `.csv`: a CRM list with a header row (UTF-8 with or without BOM, CRLF or
//!   LF, RFC 4180 quoting). Each row becomes a synthetic Engage `track`
//!   message, so CSV rows and Segment events go through the same mapping.
//!
//! NDJSON and CSV are streamed: memory does not depend on file size, and each
//! item carries the byte offset just past it, which is the checkpoint a caller
//! commits so a restart resumes exactly there ([`FileReader::open`] takes
//! that offset). JSON documents are parsed whole and are limited to
//! [`MAX_JSON_FILE_BYTES`].
//!
//! Errors never carry raw values: a bad line is reported by its number and a
//! reason code.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Map, Value, json};

/// Largest `.json` file accepted, in bytes (64 MiB): JSON documents are parsed
/// whole; use NDJSON or CSV for larger exports.
pub const MAX_JSON_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest single NDJSON line, in bytes (the Segment per-message limit is
/// 32 KB; lines up to 1 MiB are read and then judged by the mapping).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A supported file format, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.ndjson`, `.jsonl`
    Ndjson,
    /// `.json`
    Json,
    /// `.csv`
    Csv,
}

impl FileFormat {
    /// The format for a path's extension (case-insensitive), if supported.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "ndjson" | "jsonl" => Some(FileFormat::Ndjson),
            "json" => Some(FileFormat::Json),
            "csv" => Some(FileFormat::Csv),
            _ => None,
        }
    }
}

/// Errors that stop reading a whole file (it goes to `failed/`).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The extension is not one of .ndjson .jsonl .json .csv.
    #[error("unsupported file type (expected .ndjson, .jsonl, .json or .csv)")]
    UnsupportedFormat,
    /// Reading failed.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// A `.json` file over [`MAX_JSON_FILE_BYTES`].
    #[error("JSON file is larger than {MAX_JSON_FILE_BYTES} bytes; export NDJSON instead")]
    TooLarge,
    /// A `.json` file that is not a batch object or an array, or not UTF-8.
    #[error("invalid JSON document at line {line}, column {column}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `json_syntax`, `json_not_batch` or `invalid_utf8`.
        code: &'static str,
    },
    /// A CSV file whose header has no usable column.
    #[error("CSV header has no external_user_id/user_id column")]
    CsvNoIdColumn,
    /// A CSV file that cannot be parsed at all.
    #[error("invalid CSV: {0}")]
    Csv(String),
}

impl FileError {
    /// Stable reason code for reports.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::UnsupportedFormat => "unsupported_file_type",
            FileError::Io(_) => "io_error",
            FileError::TooLarge => "file_too_large",
            FileError::InvalidJson { code, .. } => code,
            FileError::CsvNoIdColumn => "csv_missing_id_column",
            FileError::Csv(_) => "csv_invalid",
        }
    }
}

/// A problem with one line or row (the file goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The line is not valid JSON.
    #[error("line is not valid JSON (column {column})")]
    InvalidJson {
        /// 1-based column of the error.
        column: usize,
    },
    /// The line is JSON but not an object.
    #[error("line is not a JSON object")]
    NotAnObject,
    /// The line exceeds [`MAX_LINE_BYTES`].
    #[error("line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// Not valid UTF-8.
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    /// A CSV row with a different number of fields than the header, or unreadable.
    #[error("CSV row is malformed: {0}")]
    CsvRow(&'static str),
    /// A CSV `action` value other than add/remove/CREATE/DELETE/true/false.
    #[error("unknown action (expected add, remove, CREATE, DELETE, true or false)")]
    InvalidAction,
    /// A CSV row without an audience (no audience_key column and no file-name audience).
    #[error("no audience: add an audience_key column or name the file <audience_key>.csv")]
    MissingAudience,
}

impl ItemError {
    /// Stable reason code for `rejected/<file>.errors.ndjson` and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            ItemError::InvalidJson { .. } => "invalid_json",
            ItemError::NotAnObject => "not_an_object",
            ItemError::LineTooLong => "line_too_long",
            ItemError::InvalidUtf8 => "invalid_utf8",
            ItemError::CsvRow(_) => "csv_malformed_row",
            ItemError::InvalidAction => "invalid_action",
            ItemError::MissingAudience => "missing_audience_key",
        }
    }
}

/// One item read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 1-based line (NDJSON), row line (CSV, header = line 1) or array index + 1 (JSON).
    pub line: u64,
    /// Byte offset just past this item: resume here after a restart.
    pub end_offset: u64,
    /// The Segment message, or why the line was rejected.
    pub message: Result<Value, ItemError>,
}

/// CSV columns, after header normalization (lowercase, ASCII alphanumerics only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    ExternalUserId,
    Pii(&'static str),
    Country,
    Action,
    AudienceKey,
    Consent(&'static str),
    Other,
}

fn column_for(header: &str) -> Column {
    let h: String = header
        .trim_start_matches('\u{feff}')
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .flat_map(|c| c.to_lowercase())
        .collect();
    match h.as_str() {
        "externaluserid" | "userid" | "externalid" | "customerid" => Column::ExternalUserId,
        "email" | "emailaddress" => Column::Pii("email"),
        "firstname" | "givenname" | "fn" => Column::Pii("first_name"),
        "lastname" | "surname" | "familyname" | "ln" => Column::Pii("last_name"),
        "phone" | "phonenumber" | "mobile" => Column::Pii("phone"),
        "postal" | "postalcode" | "zip" | "zipcode" | "postcode" => Column::Pii("postal"),
        "city" | "town" => Column::Pii("city"),
        "state" | "region" | "province" => Column::Pii("state"),
        "address" | "street" | "streetaddress" | "address1" => Column::Pii("address"),
        "country" | "countrycode" => Column::Country,
        "action" => Column::Action,
        "audiencekey" | "audience" => Column::AudienceKey,
        "ip" | "ipaddress" => Column::Consent("ip"),
        "amznadstorage" => Column::Consent("amznAdStorage"),
        "amznuserdata" => Column::Consent("amznUserData"),
        "tcf" => Column::Consent("tcf"),
        "gpp" => Column::Consent("gpp"),
        _ => Column::Other,
    }
}

/// The audience and default action encoded in a CSV file name:
/// `<audience_key>[.add|.remove].csv` → (`audience_key`, entered?).
pub fn csv_name_convention(path: &Path) -> (Option<String>, bool) {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let (key, entered) = if let Some(k) = stem.strip_suffix(".remove") {
        (k, false)
    } else if let Some(k) = stem.strip_suffix(".add") {
        (k, true)
    } else {
        (stem, true)
    };
    let key = (!key.is_empty()).then(|| key.to_string());
    (key, entered)
}

fn parse_action(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "add" | "create" | "true" | "enter" | "entered" => Some(true),
        "remove" | "delete" | "false" | "exit" | "exited" => Some(false),
        _ => None,
    }
}

/// Streaming reader over one file.
pub struct FileReader {
    inner: Inner,
}

enum Inner {
    Ndjson {
        reader: BufReader<File>,
        offset: u64,
        line: u64,
        buf: Vec<u8>,
    },
    Json {
        items: std::vec::IntoIter<Value>,
        index: u64,
        len: u64,
    },
    Csv {
        reader: csv::Reader<File>,
        columns: Vec<Column>,
        default_audience: Option<String>,
        default_entered: bool,
        record: csv::ByteRecord,
        lines: LineCounter,
    },
}

/// Counts `\n` bytes up to a byte offset, reading forward only (a second
/// handle on the file), so CSV rows get true 1-based line numbers even across
/// quoted newlines and skipped blank lines.
struct LineCounter {
    reader: BufReader<File>,
    pos: u64,
    newlines: u64,
}

impl LineCounter {
    fn new(path: &Path, start: u64) -> Result<LineCounter, FileError> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(LineCounter {
            reader: BufReader::with_capacity(64 * 1024, file),
            pos: start,
            newlines: if start == 0 {
                0
            } else {
                count_lines(path, start)?
            },
        })
    }

    /// The 1-based line number of the byte at `offset` (≥ every earlier call).
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.pos < offset {
            let Ok(avail) = self.reader.fill_buf() else {
                break;
            };
            if avail.is_empty() {
                break;
            }
            let take = usize::try_from(offset - self.pos)
                .unwrap_or(usize::MAX)
                .min(avail.len());
            self.newlines += avail[..take].iter().filter(|b| **b == b'\n').count() as u64;
            self.reader.consume(take);
            self.pos += take as u64;
        }
        self.newlines + 1
    }

    /// Like [`LineCounter::line_at`], then skips blank lines (`\r`/`\n`), which
    /// the CSV reader skips too: the line where the next record starts.
    fn record_line_from(&mut self, offset: u64) -> u64 {
        self.line_at(offset);
        while let Ok(avail) = self.reader.fill_buf() {
            let skip = avail
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if skip == 0 {
                break;
            }
            self.newlines += avail[..skip].iter().filter(|b| **b == b'\n').count() as u64;
            self.reader.consume(skip);
            self.pos += skip as u64;
        }
        self.newlines + 1
    }
}

impl FileReader {
    /// Opens `path` and positions it at `start_offset` (0, or a checkpoint a
    /// previous run committed: an `end_offset` it returned).
    ///
    /// # Errors
    /// [`FileError`] when the file cannot be read or its format is unusable.
    pub fn open(path: &Path, start_offset: u64) -> Result<FileReader, FileError> {
        let format = FileFormat::from_path(path).ok_or(FileError::UnsupportedFormat)?;
        let mut file = File::open(path)?;
        let inner = match format {
            FileFormat::Ndjson => {
                file.seek(SeekFrom::Start(start_offset))?;
                let line = if start_offset == 0 {
                    0
                } else {
                    // Count the lines before the checkpoint so numbers stay true.
                    let mut f = File::open(path)?.take(start_offset);
                    let mut n = 0u64;
                    let mut chunk = [0u8; 64 * 1024];
                    loop {
                        let r = f.read(&mut chunk)?;
                        if r == 0 {
                            break;
                        }
                        n += chunk[..r].iter().filter(|b| **b == b'\n').count() as u64;
                    }
                    n
                };
                Inner::Ndjson {
                    reader: BufReader::with_capacity(256 * 1024, file),
                    offset: start_offset,
                    line,
                    buf: Vec::new(),
                }
            }
            FileFormat::Json => {
                let size = file.metadata()?.len();
                if size > MAX_JSON_FILE_BYTES {
                    return Err(FileError::TooLarge);
                }
                let mut bytes = Vec::new();
                BufReader::new(file)
                    .read_to_end(&mut bytes)
                    .map_err(FileError::Io)?;
                // Binary or non-UTF-8 content is a bad file (it goes to
                // failed/), not an I/O error to retry forever.
                let text = std::str::from_utf8(&bytes).map_err(|e| {
                    let before = &bytes[..e.valid_up_to()];
                    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                    let column = before.len()
                        - before
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |p| p + 1)
                        + 1;
                    FileError::InvalidJson {
                        line,
                        column,
                        code: "invalid_utf8",
                    }
                })?;
                let items = json_items(text.trim_start_matches('\u{feff}'))?;
                let len = size;
                // A JSON document is committed as one unit: any non-zero
                // checkpoint means it was fully read.
                let items = if start_offset >= len && len > 0 {
                    Vec::new()
                } else {
                    items
                };
                Inner::Json {
                    items: items.into_iter(),
                    index: 0,
                    len,
                }
            }
            FileFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(true)
                    .from_reader(file);
                let headers = reader
                    .byte_headers()
                    .map_err(|e| FileError::Csv(csv_error_kind(&e).to_string()))?
                    .clone();
                let columns: Vec<Column> = headers
                    .iter()
                    .map(|h| column_for(&String::from_utf8_lossy(h)))
                    .collect();
                if !columns.contains(&Column::ExternalUserId) {
                    return Err(FileError::CsvNoIdColumn);
                }
                let header_end = reader.position().byte();
                if start_offset > header_end {
                    let line = count_lines(path, start_offset)?;
                    let mut pos = csv::Position::new();
                    pos.set_byte(start_offset).set_line(line + 1);
                    reader
                        .seek(pos)
                        .map_err(|e| FileError::Csv(csv_error_kind(&e).to_string()))?;
                }
                let (default_audience, default_entered) = csv_name_convention(path);
                let lines = LineCounter::new(path, start_offset.max(header_end))?;
                Inner::Csv {
                    reader,
                    columns,
                    default_audience,
                    default_entered,
                    record: csv::ByteRecord::new(),
                    lines,
                }
            }
        };
        Ok(FileReader { inner })
    }
}

fn count_lines(path: &Path, upto: u64) -> Result<u64, FileError> {
    let mut f = File::open(path)?.take(upto);
    let mut n = 0u64;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let r = f.read(&mut chunk)?;
        if r == 0 {
            return Ok(n);
        }
        n += chunk[..r].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

fn csv_error_kind(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Io(_) => "I/O error",
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8",
        csv::ErrorKind::UnequalLengths { .. } => "unequal number of fields",
        _ => "unreadable CSV",
    }
}

/// Items of a `.json` document: a batch object (context/integrations merged
/// into each item) or an array.
fn json_items(text: &str) -> Result<Vec<Value>, FileError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| FileError::InvalidJson {
        line: e.line(),
        column: e.column(),
        code: "json_syntax",
    })?;
    let not_batch = FileError::InvalidJson {
        line: 1,
        column: 1,
        code: "json_not_batch",
    };
    match doc {
        Value::Array(items) => Ok(items),
        Value::Object(mut obj) => {
            let Some(Value::Array(items)) = obj.remove("batch") else {
                // A single message object is accepted as a one-item batch.
                if obj.contains_key("type") {
                    return Ok(vec![Value::Object(obj)]);
                }
                return Err(not_batch);
            };
            Ok(merge_batch_level(items, &obj))
        }
        _ => Err(not_batch),
    }
}

/// Merges a batch's top-level `context` and `integrations` into each item
/// (item values win), as the Segment HTTP Tracking API `/v1/batch` does.
pub fn merge_batch_level(items: Vec<Value>, batch: &Map<String, Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut item| {
            if let Value::Object(obj) = &mut item {
                for key in ["context", "integrations"] {
                    if let Some(Value::Object(top)) = batch.get(key) {
                        let slot = obj
                            .entry(key.to_string())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(inner) = slot {
                            for (k, v) in top {
                                inner.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                        }
                    }
                }
            }
            item
        })
        .collect()
}

impl Iterator for FileReader {
    type Item = Result<Item, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Ndjson {
                reader,
                offset,
                line,
                buf,
            } => loop {
                buf.clear();
                let n = match reader
                    .by_ref()
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', buf)
                {
                    Ok(n) => n,
                    Err(e) => return Some(Err(FileError::Io(e))),
                };
                if n == 0 {
                    return None;
                }
                *line += 1;
                let mut too_long = false;
                if n > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
                    // Skip the rest of an overlong line.
                    too_long = true;
                    let mut skipped = 0u64;
                    loop {
                        let avail = match reader.fill_buf() {
                            Ok(a) => a,
                            Err(e) => return Some(Err(FileError::Io(e))),
                        };
                        if avail.is_empty() {
                            break;
                        }
                        match avail.iter().position(|b| *b == b'\n') {
                            Some(p) => {
                                reader.consume(p + 1);
                                skipped += p as u64 + 1;
                                break;
                            }
                            None => {
                                let l = avail.len();
                                reader.consume(l);
                                skipped += l as u64;
                            }
                        }
                    }
                    *offset += skipped;
                }
                *offset += n as u64;
                let end_offset = *offset;
                let this_line = *line;
                if too_long {
                    return Some(Ok(Item {
                        line: this_line,
                        end_offset,
                        message: Err(ItemError::LineTooLong),
                    }));
                }
                let text = match std::str::from_utf8(buf) {
                    Ok(t) => t.trim_start_matches('\u{feff}').trim(),
                    Err(_) => {
                        return Some(Ok(Item {
                            line: this_line,
                            end_offset,
                            message: Err(ItemError::InvalidUtf8),
                        }));
                    }
                };
                if text.is_empty() {
                    continue;
                }
                let message = match serde_json::from_str::<Value>(text) {
                    Ok(v @ Value::Object(_)) => Ok(v),
                    Ok(_) => Err(ItemError::NotAnObject),
                    Err(e) => Err(ItemError::InvalidJson { column: e.column() }),
                };
                return Some(Ok(Item {
                    line: this_line,
                    end_offset,
                    message,
                }));
            },
            Inner::Json { items, index, len } => {
                let v = items.next()?;
                *index += 1;
                let last = items.len() == 0;
                let message = match v {
                    v @ Value::Object(_) => Ok(v),
                    _ => Err(ItemError::NotAnObject),
                };
                Some(Ok(Item {
                    line: *index,
                    // Only the last item completes the document.
                    end_offset: if last { *len } else { 0 },
                    message,
                }))
            }
            Inner::Csv {
                reader,
                columns,
                default_audience,
                default_entered,
                record,
                lines,
            } => loop {
                let start = reader.position().byte();
                let line = lines.record_line_from(start);
                match reader.read_byte_record(record) {
                    Ok(false) => return None,
                    Ok(true) => {}
                    Err(e) => {
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            return Some(Err(FileError::Csv(csv_error_kind(&e).to_string())));
                        }
                        let end_offset = reader.position().byte();
                        return Some(Ok(Item {
                            line,
                            end_offset,
                            message: Err(ItemError::CsvRow(csv_error_kind(&e))),
                        }));
                    }
                }
                let end_offset = reader.position().byte();
                if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                    continue;
                }
                let message = if record.len() != columns.len() {
                    Err(ItemError::CsvRow("unequal number of fields"))
                } else {
                    csv_row_message(
                        columns,
                        record,
                        default_audience.as_deref(),
                        *default_entered,
                    )
                };
                return Some(Ok(Item {
                    line,
                    end_offset,
                    message,
                }));
            },
        }
    }
}

/// Turns one CSV row into a synthetic Engage `track` message:
/// `{"type":"track","event":"Audience Entered|Exited","userId",
///   "properties":{<pii columns>, "country_code", consent…, "<audience_key>": bool},
///   "context":{"personas":{"computation_key"}}}`.
fn csv_row_message(
    columns: &[Column],
    record: &csv::ByteRecord,
    default_audience: Option<&str>,
    default_entered: bool,
) -> Result<Value, ItemError> {
    let mut props = Map::new();
    let mut user_id = None;
    let mut audience = default_audience.map(str::to_string);
    let mut entered = default_entered;
    for (col, raw) in columns.iter().zip(record.iter()) {
        let value = std::str::from_utf8(raw)
            .map_err(|_| ItemError::InvalidUtf8)?
            .trim();
        if value.is_empty() {
            continue;
        }
        match col {
            Column::ExternalUserId => user_id = Some(value.to_string()),
            Column::Pii(name) => {
                props.insert((*name).to_string(), Value::from(value));
            }
            Column::Country => {
                props.insert("country_code".into(), Value::from(value));
            }
            Column::Consent(name) => {
                props.insert((*name).to_string(), Value::from(value));
            }
            Column::Action => entered = parse_action(value).ok_or(ItemError::InvalidAction)?,
            Column::AudienceKey => audience = Some(value.to_string()),
            Column::Other => {}
        }
    }
    let audience = audience.ok_or(ItemError::MissingAudience)?;
    props.insert(audience.clone(), Value::Bool(entered));
    let mut msg = json!({
        "type": "track",
        "event": if entered { "Audience Entered" } else { "Audience Exited" },
        "properties": Value::Object(props),
        "context": {"personas": {"computation_key": audience}},
    });
    if let (Some(id), Value::Object(m)) = (user_id, &mut msg) {
        m.insert("userId".into(), Value::from(id));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn all(p: &Path, from: u64) -> Vec<Item> {
        FileReader::open(p, from)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn ndjson_lines_offsets_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.ndjson",
            b"{\"type\":\"track\"}\n\nnot json\n[1]\n{\"type\":\"identify\"}",
        );
        let items = all(&p, 0);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].line, 1);
        assert_eq!(items[0].end_offset, 17);
        assert!(items[0].message.is_ok());
        assert_eq!(items[1].line, 3);
        assert_eq!(
            items[1].message.as_ref().unwrap_err().code(),
            "invalid_json"
        );
        assert_eq!(
            items[2].message.as_ref().unwrap_err().code(),
            "not_an_object"
        );
        assert_eq!(items[3].line, 5);
        // Resume from a checkpoint: only what follows it, with true line numbers.
        let rest = all(&p, items[1].end_offset);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].line, 4);
    }

    #[test]
    fn ndjson_overlong_line_is_rejected_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![b'x'; MAX_LINE_BYTES + 10];
        data.extend_from_slice(b"\n{\"type\":\"track\"}\n");
        let p = write(&dir, "big.jsonl", &data);
        let items = all(&p, 0);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].message.as_ref().unwrap_err().code(),
            "line_too_long"
        );
        assert!(items[1].message.is_ok());
        assert_eq!(items[1].end_offset, data.len() as u64);
    }

    #[test]
    fn json_batch_merges_context_and_array_works() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "b.json",
            br#"{"batch":[{"type":"track","context":{"ip":"1"}},{"type":"identify"}],"context":{"ip":"9","personas":{"computation_key":"k"}}}"#,
        );
        let items = all(&p, 0);
        assert_eq!(items.len(), 2);
        let m0 = items[0].message.as_ref().unwrap();
        assert_eq!(m0["context"]["ip"], "1", "item values win");
        assert_eq!(m0["context"]["personas"]["computation_key"], "k");
        assert_eq!(items[1].message.as_ref().unwrap()["context"]["ip"], "9");
        let p2 = write(&dir, "c.json", b"[{\"type\":\"track\"}, 3]");
        let items = all(&p2, 0);
        assert_eq!(
            items[1].message.as_ref().unwrap_err().code(),
            "not_an_object"
        );
        let p3 = write(&dir, "d.json", b"{\"batch\": [");
        assert!(matches!(
            FileReader::open(&p3, 0),
            Err(FileError::InvalidJson {
                code: "json_syntax",
                ..
            })
        ));
    }

    #[test]
    fn csv_bom_crlf_quotes_aliases_and_file_name_convention() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "vip_customers.remove.csv",
            "\u{feff}User ID,E-mail,First Name,Zip,Country\r\nu1,\"a@b.com\",\"Smith, \"\"Jo\"\"\",94105,US\r\n\r\nu2,c@d.com,Ann,10115,DE\r\n"
                .as_bytes(),
        );
        let items = all(&p, 0);
        assert_eq!(items.len(), 2);
        let m = items[0].message.as_ref().unwrap();
        assert_eq!(m["userId"], "u1");
        assert_eq!(m["event"], "Audience Exited");
        assert_eq!(m["properties"]["first_name"], "Smith, \"Jo\"");
        assert_eq!(m["properties"]["email"], "a@b.com");
        assert_eq!(m["properties"]["postal"], "94105");
        assert_eq!(m["properties"]["vip_customers"], false);
        assert_eq!(m["context"]["personas"]["computation_key"], "vip_customers");
        assert_eq!(items[1].line, 4);
        // Resume after the first row.
        let rest = all(&p, items[0].end_offset);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].message.as_ref().unwrap()["userId"], "u2");
    }

    #[test]
    fn csv_action_and_audience_columns_override_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "list.csv",
            b"external_user_id,email,action,audience_key\nu1,a@b.com,DELETE,k1\nu2,b@c.com,maybe,k1\nu3,c@d.com,add,\nu4\n",
        );
        let items = all(&p, 0);
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[0].message.as_ref().unwrap()["event"],
            "Audience Exited"
        );
        assert_eq!(
            items[1].message.as_ref().unwrap_err().code(),
            "invalid_action"
        );
        // Empty audience_key falls back to the file name.
        assert_eq!(
            items[2].message.as_ref().unwrap()["context"]["personas"]["computation_key"],
            "list"
        );
        assert_eq!(
            items[3].message.as_ref().unwrap_err().code(),
            "csv_malformed_row"
        );
    }

    #[test]
    fn binary_json_file_is_a_bad_file_not_an_io_error() {
        // Regression: a binary `.json` was an I/O error, retried forever.
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "bin.json", b"{\"batch\": [\xff\xfe\x00]}");
        match FileReader::open(&p, 0) {
            Err(e @ FileError::InvalidJson { .. }) => assert_eq!(e.code(), "invalid_utf8"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn csv_without_id_column_fails_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "x.csv", b"email,name\na@b.com,x\n");
        assert!(matches!(
            FileReader::open(&p, 0),
            Err(FileError::CsvNoIdColumn)
        ));
    }

    #[test]
    fn errors_never_echo_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "e.ndjson", b"{\"email\": canary-123@example.com}\n");
        let items = all(&p, 0);
        let e = items[0].message.as_ref().unwrap_err();
        assert!(!e.to_string().contains("canary"), "{e}");
    }
}
