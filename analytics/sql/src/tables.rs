//! The SQL schema of stream tables: one table per stream open now, looked
//! up when a query is planned, so a stream created through the catalog
//! can be queried at once and a deleted one is gone at once. A stream's
//! [`StreamTable`] (with its column files) is kept while its log is open,
//! and made afresh for a new log under an old name. A stream with a full
//! export also has `<stream>_history` ([`crate::history`]); a stream of
//! that very name wins over it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use tidewire_core::{Broker, Stream};

use crate::history::{HISTORY_SUFFIX, Histories, HistoryTable, HistoryTables};
use crate::metrics::SqlMetrics;
use crate::table::StreamTable;

/// Every stream of a broker, as tables of the same names.
#[derive(Debug)]
pub(crate) struct StreamTables {
    broker: Broker,
    metrics: SqlMetrics,
    tables: Mutex<HashMap<String, StreamTable>>,
    histories: Arc<HistoryTables>,
}

impl StreamTables {
    /// The streams of `broker`, their history tables listing an export's
    /// files for at most `list_timeout`.
    pub(crate) fn new(broker: Broker, metrics: SqlMetrics, list_timeout: Duration) -> StreamTables {
        StreamTables {
            broker,
            metrics,
            tables: Mutex::default(),
            histories: Arc::new(HistoryTables::new(list_timeout)),
        }
    }

    /// Finds exports through `histories` from now on.
    pub(crate) fn set_histories(&self, histories: Arc<dyn Histories>) {
        self.histories.set(histories);
    }

    /// The history table called `name` (`<stream>_history`), if that
    /// stream is open, has a full export, and no stream is called `name`.
    pub(crate) fn history(&self, name: &str) -> Option<HistoryTable> {
        let streams = self.broker.streams();
        if streams.get(name).is_some() {
            return None;
        }
        let stream = streams.get(name.strip_suffix(HISTORY_SUFFIX)?)?;
        let live = self.table_of(&mut self.lock(), &stream);
        self.histories
            .table(&stream.spec.name, stream.log.clone(), live)
    }

    /// The table of the stream called `name`, if it is open.
    pub(crate) fn get(&self, name: &str) -> Option<StreamTable> {
        let stream = self.broker.streams().get(name)?;
        Some(self.table_of(&mut self.lock(), &stream))
    }

    /// The table of every open stream; forgets those of streams gone.
    pub(crate) fn all(&self) -> Vec<StreamTable> {
        let open = self.broker.streams().snapshot();
        let mut tables = self.lock();
        tables.retain(|name, table| open.get(name).is_some_and(|s| table.reads(&s.log)));
        open.iter()
            .map(|stream| self.table_of(&mut tables, stream))
            .collect()
    }

    fn table_of(&self, tables: &mut HashMap<String, StreamTable>, stream: &Stream) -> StreamTable {
        match tables.get(&stream.spec.name) {
            Some(table) if table.reads(&stream.log) => table.clone(),
            _ => {
                let table = StreamTable::new(
                    stream.log.clone(),
                    &stream.spec.schema,
                    self.metrics.clone(),
                );
                tables.insert(stream.spec.name.clone(), table.clone());
                table
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StreamTable>> {
        // The map holds only finished tables whatever panicked: use it.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SchemaProvider for StreamTables {
    fn table_names(&self) -> Vec<String> {
        let open = self.broker.streams().snapshot();
        let mut names: Vec<String> = open.iter().map(|s| s.spec.name.clone()).collect();
        for stream in self.histories.streams() {
            let name = format!("{stream}{HISTORY_SUFFIX}");
            if self.history(&name).is_some() {
                names.push(name);
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(table) = self.get(name) {
            return Ok(Some(Arc::new(table)));
        }
        Ok(self
            .history(name)
            .map(|table| Arc::new(table) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.broker.streams().get(name).is_some() || self.history(name).is_some()
    }
}
