//! Alarms (etcd's `AlarmStore`): raised and cleared through Raft so that every member holds
//! the same set, kept in the store's tree so that they survive a restart and travel in
//! snapshots. While any member's NOSPACE alarm is active, writes that would grow the store
//! (puts, txns with puts, lease grants) fail at apply time, as etcd's capped applier does;
//! reads, deletes and compactions go on. While a CORRUPT alarm is active every write fails
//! (etcd's corrupt applier); reads go on.
//!
//! Row: `a | member id (u64 BE) | alarm type (i32 BE)`, empty value.

use std::collections::BTreeSet;

use super::error::StorageError;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType, TxnRequest};
use crate::pb::minietcdpb::internal_request::Request;

/// First byte of alarm rows.
pub(crate) const ALARM_PREFIX: u8 = b'a';

/// The active alarms: (member id, alarm type).
pub(crate) type Alarms = BTreeSet<(u64, i32)>;

/// The row key of an alarm.
pub(crate) fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(ALARM_PREFIX);
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Decodes an alarm row key.
pub(crate) fn parse_alarm_key(k: &[u8]) -> Result<(u64, i32), StorageError> {
    let bad = || StorageError::Corrupt(format!("bad alarm row key {k:?}"));
    if k.len() != 13 || k.first() != Some(&ALARM_PREFIX) {
        return Err(bad());
    }
    let member = u64::from_be_bytes(
        k.get(1..9)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    );
    let alarm = i32::from_be_bytes(
        k.get(9..13)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    );
    Ok((member, alarm))
}

/// Applies an Alarm request (etcd's `applierV3backend.Alarm`): ACTIVATE answers the alarm
/// (new or already active), DEACTIVATE the alarm it cleared (nothing if it was not active),
/// GET every active alarm of the type asked (all of them for NONE).
pub(crate) fn apply(
    alarms: &mut Alarms,
    req: &AlarmRequest,
    batch: &mut sled::Batch,
) -> AlarmResponse {
    let member = |(id, alarm): (u64, i32)| AlarmMember {
        member_id: id,
        alarm,
    };
    let key = (req.member_id, req.alarm);
    let found = match AlarmAction::try_from(req.action) {
        Ok(AlarmAction::Get) => alarms
            .iter()
            .filter(|(_, a)| req.alarm == AlarmType::None as i32 || *a == req.alarm)
            .map(|m| member(*m))
            .collect(),
        Ok(AlarmAction::Activate) => {
            if alarms.insert(key) {
                batch.insert(alarm_key(key.0, key.1), &[][..]);
            }
            vec![member(key)]
        }
        Ok(AlarmAction::Deactivate) => {
            if alarms.remove(&key) {
                batch.remove(alarm_key(key.0, key.1));
                vec![member(key)]
            } else {
                Vec::new()
            }
        }
        Err(_) => Vec::new(),
    };
    AlarmResponse {
        header: None,
        alarms: found,
    }
}

/// Whether a CORRUPT alarm of any member is active: etcd's corrupt applier then refuses
/// every write.
pub(crate) fn corrupt(alarms: &Alarms) -> bool {
    alarms.iter().any(|(_, a)| *a == AlarmType::Corrupt as i32)
}

/// Whether a NOSPACE alarm of any member is active.
pub(crate) fn no_space(alarms: &Alarms) -> bool {
    alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
}

/// Whether etcd's capped applier refuses `req`: it would add data (a put, a txn with a put in
/// the branch of either outcome, a lease grant).
pub(crate) fn grows_store(req: &Request) -> bool {
    match req {
        Request::Put(_) | Request::LeaseGrant(_) => true,
        Request::Txn(t) => txn_puts(t),
        _ => false,
    }
}

/// etcd's `costTxn` > 0: a put directly in the success or the failure branch.
fn txn_puts(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| matches!(op.request, Some(Op::RequestPut(_))))
}
