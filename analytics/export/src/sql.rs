//! The exports as SQL sees them: [`Exports`] is the engine's
//! [`Histories`], so a stream with a full export gets a
//! `<stream>_history` table over its files and its live segments.

use tidewire_sql::{Histories, HistorySource};

use crate::Exports;

impl Histories for Exports {
    fn sources(&self) -> Vec<HistorySource> {
        self.list()
            .iter()
            .map(|export| HistorySource {
                export: export.spec().name().to_owned(),
                stream: export.spec().config.stream.clone(),
                store: export.destination().store(),
                prefix: export.destination().prefix().clone(),
                schema: export.schema().clone(),
                full: export.spec().is_full(),
            })
            .collect()
    }
}
