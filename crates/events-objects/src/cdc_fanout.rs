//! The `"cdc"` outbox consumer: groups a writer's events by collection and
//! hands each group, in order, to that collection's [`crate::CdcProcessor`].
//!
//! A failure of any processor fails the whole delivery, so the writer offers
//! the same events again; processors that already applied them skip them by
//! event id.

use std::collections::BTreeMap;

use events_core::cdc::{Change, parse_change};
use events_runtime::{Host, ObjectContext, ObjectResult};

use crate::cdc::{CdcRequest, processor_name};
use crate::outbox::{OutboxConsumer, OutboxRow, decode_matching};

/// The change-capture consumer.
pub struct CdcFanout;

impl OutboxConsumer for CdcFanout {
    const NAME: &'static str = crate::outbox::CDC;

    /// Applies the changes among the events to their collections' processors.
    async fn deliver<H: Host>(cx: &ObjectContext<H>, _ns: &str, rows: &[OutboxRow], after: u64) -> ObjectResult<()> {
        let events = decode_matching(rows, after, events_core::cdc::may_be_change)?;
        let mut groups: BTreeMap<(String, String), Vec<Change>> = BTreeMap::new();
        for e in &events {
            // Malformed changes are refused at ingest; an event that is not a change is skipped.
            if let Ok(Some(change)) = parse_change(&e.event) {
                groups.entry((e.event.ns.clone(), change.collection.clone())).or_default().push(change);
            }
        }
        for ((ns, collection), changes) in groups {
            cx.stub::<crate::CdcProcessor>(processor_name(&ns, &collection))
                .call(CdcRequest::Apply { changes })
                .await?;
        }
        Ok(())
    }
}
