//! Encodes query results as the SPEC's JSON, as CSV, or as Arrow IPC.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::QueryOutput;

/// One result column, as `{"name","type"}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// SQL type name, e.g. `BIGINT`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The SPEC's JSON result: `{"columns":[...],"rows":[[...]]}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct JsonResult {
    /// The columns, in order.
    pub columns: Vec<ColumnInfo>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<Value>>,
}

/// SQL name of an Arrow type.
pub fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY".into(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => "TIMESTAMP".into(),
        DataType::Timestamp(unit, _) => format!("TIMESTAMP({unit:?})"),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        other => other.to_string(),
    }
}

/// Result rows as JSON objects keyed by column name.
pub fn to_objects(output: &QueryOutput) -> Result<Vec<Map<String, Value>>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        for batch in &output.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| ArrowError::JsonError(e.to_string()))
}

/// The SPEC's JSON shape.
pub fn to_json(output: &QueryOutput) -> Result<JsonResult, ArrowError> {
    let columns: Vec<ColumnInfo> = output
        .schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            kind: sql_type(f.data_type()),
        })
        .collect();
    let rows = to_objects(output)?
        .into_iter()
        .map(|mut object| {
            columns
                .iter()
                .map(|c| object.remove(&c.name).unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(JsonResult { columns, rows })
}

/// CSV with a header line.
pub fn to_csv(output: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        if output.batches.is_empty() {
            let header: Vec<&str> = output
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Ok(format!("{}\n", header.join(",")).into_bytes());
        }
        for batch in &output.batches {
            writer.write(batch)?;
        }
    }
    Ok(buf)
}

/// An Arrow IPC stream.
pub fn to_arrow_ipc(output: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &output.schema)?;
        for batch in &output.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(buf)
}
