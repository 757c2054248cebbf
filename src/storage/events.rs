//! History for watch catch-up: the events of past revisions, read back from the kv rows.
//!
//! A row becomes the same event the apply produced: a put row is a PUT with its KeyValue, a
//! tombstone row a DELETE whose KeyValue holds the key and the delete revision (etcd's
//! tombstone). prev_kv is the key as of the previous main revision, as etcd's watch fills
//! it, and is left out for create events.

use prost::Message;

use super::error::StorageError;
use super::range::View;
use super::revision::{main_lower_bound, parse_row_key};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};

/// The events of revisions `from..=to`, grouped by revision, at most `max_revs` groups.
/// The caller has checked `from` against the compaction.
pub(crate) fn read(
    view: &View<'_>,
    from: i64,
    to: i64,
    max_revs: usize,
) -> Result<Vec<(i64, Vec<Event>)>, StorageError> {
    let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
    if from > to || max_revs == 0 {
        return Ok(out);
    }
    let end = main_lower_bound(to.saturating_add(1));
    for row in view.tree.range(main_lower_bound(from)..end) {
        let (k, v) = row?;
        let (rev, tombstone) = parse_row_key(&k)?;
        let kv = KeyValue::decode(v.as_ref())
            .map_err(|e| StorageError::Corrupt(format!("undecodable kv row at {rev:?}: {e}")))?;
        let is_create = !tombstone && kv.create_revision == kv.mod_revision;
        let prev_kv = if is_create {
            None
        } else {
            view.get(&kv.key, rev.main - 1)?
        };
        let event = Event {
            r#type: if tombstone {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(kv),
            prev_kv,
        };
        match out.last_mut() {
            Some((main, evs)) if *main == rev.main => evs.push(event),
            _ => {
                if out.len() == max_revs {
                    break;
                }
                out.push((rev.main, vec![event]));
            }
        }
    }
    Ok(out)
}
