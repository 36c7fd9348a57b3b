//! Encodes query results as the SPEC's JSON, as CSV, or as Arrow IPC.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
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
    // Rows are read back by position: two columns may share a name
    // (`SELECT a.offset, b.offset`), and objects keyed by name would keep
    // only one of them. So each column is named by its index here.
    let by_position = Arc::new(Schema::new(
        output
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(i.to_string()))
            .collect::<Vec<_>>(),
    ));
    let batches = output
        .batches
        .iter()
        .map(|b| {
            let rows = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            RecordBatch::try_new_with_options(Arc::clone(&by_position), b.columns().to_vec(), &rows)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let positional = QueryOutput {
        schema: by_position,
        batches,
    };
    let rows = to_objects(&positional)?
        .into_iter()
        .map(|mut object| {
            (0..columns.len())
                .map(|i| object.remove(&i.to_string()).unwrap_or(Value::Null))
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Field;

    use super::*;

    #[test]
    fn columns_that_share_a_name_keep_their_own_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("offset", DataType::Int64, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("0", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 3])),
            Arc::new(Int64Array::from(vec![2, 4])),
            Arc::new(StringArray::from(vec![Some("a"), None])),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
        let json = to_json(&QueryOutput {
            schema,
            batches: vec![batch],
        })
        .expect("encode");
        let names: Vec<&str> = json.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["offset", "offset", "0"]);
        assert_eq!(
            json.rows,
            [
                vec![Value::from(1), Value::from(2), Value::from("a")],
                vec![Value::from(3), Value::from(4), Value::Null],
            ]
        );
    }
}
