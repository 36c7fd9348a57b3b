//! `tidewire sql`: sends a query to a running server and renders the
//! result as a table, CSV or JSON.

use std::str::FromStr;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::http::ARROW_STREAM;

/// The server the CLI talks to by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How `tidewire sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// The server's JSON, `{"columns":[...],"rows":[...]}`.
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "csv" => Ok(OutputFormat::Csv),
            "json" => Ok(OutputFormat::Json),
            _ => Err(format!("unknown format {s:?}: use table, csv or json")),
        }
    }
}

/// Why `tidewire sql` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached (external).
    #[error("cannot reach tidewire at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the query; the text is its error message (user
    /// input, usually).
    #[error("query failed ({status}): {message}")]
    Query { status: u16, message: String },
    /// The server's answer could not be read (external).
    #[error("unreadable answer from the server: {0}")]
    Response(String),
}

/// Runs `sql` on the server at `url` and returns the rendered result,
/// ending in a newline.
pub async fn run_sql(url: &str, format: OutputFormat, sql: &str) -> Result<String, CliError> {
    let endpoint = format!("{}/api/v1/sql", url.trim_end_matches('/'));
    let accept = match format {
        OutputFormat::Table => ARROW_STREAM,
        OutputFormat::Csv => "text/csv",
        OutputFormat::Json => "application/json",
    };
    let response = reqwest::Client::new()
        .post(&endpoint)
        .header(reqwest::header::ACCEPT, accept)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .map_err(|source| CliError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| CliError::Response(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(CliError::Query {
            status: status.as_u16(),
            message,
        });
    }
    let text = match format {
        OutputFormat::Table => {
            let reader = StreamReader::try_new(std::io::Cursor::new(body), None)
                .map_err(|e| CliError::Response(e.to_string()))?;
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Response(e.to_string()))?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let table =
                pretty_format_batches(&batches).map_err(|e| CliError::Response(e.to_string()))?;
            format!(
                "{table}\n({rows} row{})\n",
                if rows == 1 { "" } else { "s" }
            )
        }
        OutputFormat::Csv => String::from_utf8_lossy(&body).into_owned(),
        OutputFormat::Json => {
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| CliError::Response(e.to_string()))?;
            format!("{value}\n")
        }
    };
    Ok(text)
}
