//! Dashboard definitions: a dashboard is a TOML file with a title and
//! panels; a panel is a SQL query refreshed on an interval, or a watched
//! continuous query, plus a chart type. The example in the repository's
//! `dashboards/` folder is built in; `[dashboards] dir` replaces it with
//! the `*.toml` files of a folder, read once at start-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The dashboards shipped in the binary: (file name, TOML).
const BUILT_IN: &[(&str, &str)] = &[("edge-demo.toml", include_str!("../../edge-demo.toml"))];
/// Refresh interval of a SQL panel that names none.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
/// Shortest refresh interval allowed.
pub const MIN_REFRESH: Duration = Duration::from_millis(500);

/// A dashboard file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DashboardFile {
    /// Shown as the dashboard's heading.
    title: String,
    /// Its panels, in order.
    #[serde(default)]
    panels: Vec<PanelFile>,
}

/// A panel, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PanelFile {
    title: String,
    chart: Chart,
    sql: Option<String>,
    #[serde(default, with = "humantime_serde")]
    refresh: Option<Duration>,
    watch: Option<Watch>,
    x: Option<String>,
    series: Option<String>,
    #[serde(default)]
    y: Vec<String>,
}

/// How a panel shows its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Chart {
    /// A time series: `x` (a timestamp column, or the window end) against
    /// the `y` columns, one line per `series` value.
    Line,
    /// Bars: like `line`.
    Bar,
    /// The rows as a table.
    Table,
    /// The first row's first `y` column (or first column) as a number.
    Stat,
}

/// A continuous query a panel watches over `/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// A `SELECT` over one stream, run once per window.
    pub sql: String,
    /// Window length, e.g. `"5s"`.
    pub window: String,
    /// Hop for hopping windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<String>,
}

/// A validated panel, as the app receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Panel {
    /// Heading.
    pub title: String,
    /// Chart type.
    pub chart: Chart,
    /// One-shot SQL, re-run every `refresh_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Refresh interval of `sql`, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
    /// Or a watched continuous query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
    /// The x column (line and bar charts); default: the first column, or
    /// `window_end` for watches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// A column whose values split the rows into series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Value columns; default: every numeric column but `x`.
    pub y: Vec<String>,
}

/// A validated dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dashboard {
    /// The file name without `.toml`.
    pub id: String,
    /// Heading.
    pub title: String,
    /// Panels, in order.
    pub panels: Vec<Panel>,
}

/// Why dashboards could not be loaded; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The folder or a file could not be read.
    #[error("dashboards: reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid dashboard.
    #[error("dashboard {file}: {message}")]
    Invalid { file: String, message: String },
}

/// The built-in dashboards.
pub fn built_in() -> Result<Vec<Dashboard>, DashboardError> {
    BUILT_IN
        .iter()
        .map(|(file, text)| parse(file, text))
        .collect()
}

/// Every `*.toml` file in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Dashboard>, DashboardError> {
    let read_error = |source| DashboardError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
                path: path.clone(),
                source,
            })?;
            parse(&path.display().to_string(), &text)
        })
        .collect()
}

/// Parses and validates one dashboard file.
pub fn parse(file: &str, text: &str) -> Result<Dashboard, DashboardError> {
    let invalid = |message: String| DashboardError::Invalid {
        file: file.to_owned(),
        message,
    };
    let parsed: DashboardFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let panels = parsed
        .panels
        .into_iter()
        .enumerate()
        .map(|(i, p)| validate_panel(p).map_err(|m| invalid(format!("panels[{i}]: {m}"))))
        .collect::<Result<_, _>>()?;
    let id = Path::new(file)
        .file_stem()
        .map_or_else(|| file.to_owned(), |s| s.to_string_lossy().into_owned());
    Ok(Dashboard {
        id,
        title: parsed.title,
        panels,
    })
}

fn validate_panel(p: PanelFile) -> Result<Panel, String> {
    match (&p.sql, &p.watch) {
        (Some(_), Some(_)) | (None, None) => {
            return Err("give either `sql` or `watch`".into());
        }
        (None, Some(_)) if p.refresh.is_some() => {
            return Err("`refresh` applies to `sql` panels; a watch updates per window".into());
        }
        (None, Some(watch)) => {
            humantime::parse_duration(&watch.window)
                .map_err(|e| format!("watch.window {:?}: {e}", watch.window))?;
        }
        (Some(_), None) => {}
    }
    let refresh_ms = match (&p.sql, p.refresh) {
        (Some(_), Some(r)) if r < MIN_REFRESH => {
            return Err(format!("refresh must be at least {MIN_REFRESH:?}"));
        }
        (Some(_), r) => Some(r.unwrap_or(DEFAULT_REFRESH).as_millis() as u64),
        (None, _) => None,
    };
    Ok(Panel {
        title: p.title,
        chart: p.chart,
        sql: p.sql,
        refresh_ms,
        watch: p.watch,
        x: p.x,
        series: p.series,
        y: p.y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_dashboard_is_valid() {
        let dashboards = built_in().expect("valid");
        assert_eq!(dashboards[0].id, "edge-demo");
        assert!(dashboards[0].panels.len() >= 2);
        assert!(dashboards[0].panels.iter().any(|p| p.watch.is_some()));
    }

    #[test]
    fn errors_name_the_file_and_the_panel() {
        let both = "title = \"t\"\n[[panels]]\ntitle = \"p\"\nchart = \"line\"\nsql = \"SELECT 1\"\nwatch = { sql = \"SELECT 1\", window = \"1s\" }\n";
        let err = parse("mine.toml", both).expect_err("sql and watch");
        assert!(err.to_string().contains("mine.toml"), "{err}");
        assert!(err.to_string().contains("panels[0]"), "{err}");

        let typo =
            "title = \"t\"\n[[panels]]\ntitle = \"p\"\nchart = \"pie\"\nsql = \"SELECT 1\"\n";
        let err = parse("mine.toml", typo).expect_err("unknown chart");
        assert!(err.to_string().contains("pie"), "{err}");

        let fast = "title = \"t\"\n[[panels]]\ntitle = \"p\"\nchart = \"stat\"\nsql = \"SELECT 1\"\nrefresh = \"10ms\"\n";
        assert!(parse("mine.toml", fast).is_err());
    }

    #[test]
    fn a_folder_loads_sorted_and_ignores_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let panel = "[[panels]]\ntitle = \"p\"\nchart = \"stat\"\nsql = \"SELECT 1\"\n";
        std::fs::write(dir.path().join("b.toml"), format!("title = \"B\"\n{panel}"))
            .expect("write");
        std::fs::write(dir.path().join("a.toml"), format!("title = \"A\"\n{panel}"))
            .expect("write");
        std::fs::write(dir.path().join("notes.md"), "not a dashboard").expect("write");
        let loaded = load_dir(dir.path()).expect("loads");
        let ids: Vec<&str> = loaded.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(loaded[0].panels[0].refresh_ms, Some(5000));
    }
}
