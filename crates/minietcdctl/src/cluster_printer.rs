//! etcdctl's output for membership, endpoint, alarm, leadership-transfer and snapshot
//! commands, in every format (see [`crate::printer`]). The rows of `member list`,
//! `endpoint status|hashkv` and `snapshot status` are etcdctl's table rows; the simple format
//! joins their cells with `, `.

use minietcd_client::pb::etcdserverpb::{
    AlarmResponse, AlarmType, HashKvResponse, MemberAddResponse, MemberListResponse,
    MemberRemoveResponse, MoveLeaderResponse, StatusResponse,
};

use crate::fields;
use crate::json::{self, Obj};
use crate::ops::Failure;
use crate::printer::{json_line, unsupported, Format, Printed};
use crate::table;

/// etcdctl's `makeMemberListTable`: the rows `member list` prints as a table or lines.
fn member_rows(r: &MemberListResponse) -> Vec<Vec<String>> {
    r.members
        .iter()
        .map(|m| {
            let status = if m.name.is_empty() {
                "unstarted"
            } else {
                "started"
            };
            vec![
                format!("{:x}", m.id),
                status.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

/// Rows as the simple format prints them: cells joined by `, `.
fn lines(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join(", ") + "\n").collect()
}

pub fn member_list(format: Format, r: &MemberListResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .list("members", r.members.iter().map(json::member).collect())
                .build(),
        ),
        Format::Fields => fields::member_list(r),
        Format::Table => table::render(
            &[
                "ID",
                "Status",
                "Name",
                "Peer Addrs",
                "Client Addrs",
                "Is Learner",
            ],
            &member_rows(r),
        ),
        Format::Simple => lines(&member_rows(r)),
    })
}

/// `member add`'s answer: etcdctl prints the new member and, in the simple format only, the
/// environment the new member starts with (`env`).
pub fn member_add(format: Format, r: &MemberAddResponse, env: &str) -> Printed {
    let id = r.member.as_ref().map_or(0, |m| m.id);
    Ok(match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .opt("member", r.member.as_ref().map(json::member))
                .list("members", r.members.iter().map(json::member).collect())
                .build(),
        ),
        Format::Fields | Format::Table => return Err(unsupported(format)),
        Format::Simple => {
            let cluster_id = r.header.as_ref().map_or(0, |h| h.cluster_id);
            format!("Member {id:16x} added to cluster {cluster_id:16x}\n{env}")
        }
    })
}

pub fn member_remove(format: Format, id: u64, r: &MemberRemoveResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .list("members", r.members.iter().map(json::member).collect())
                .build(),
        ),
        Format::Fields | Format::Table => return Err(unsupported(format)),
        Format::Simple => {
            let cluster_id = r.header.as_ref().map_or(0, |h| h.cluster_id);
            format!("Member {id:16x} removed from cluster {cluster_id:16x}\n")
        }
    })
}

/// etcdctl's `makeEndpointStatusTable` rows.
fn status_rows(statuses: &[(String, StatusResponse)]) -> Vec<Vec<String>> {
    statuses
        .iter()
        .map(|(ep, st)| {
            let id = st.header.as_ref().map_or(0, |h| h.member_id);
            vec![
                ep.clone(),
                format!("{id:x}"),
                st.version.clone(),
                json::human_bytes(u64::try_from(st.db_size).unwrap_or(0)),
                (st.leader == id).to_string(),
                st.is_learner.to_string(),
                st.raft_term.to_string(),
                st.raft_index.to_string(),
                st.raft_applied_index.to_string(),
                st.errors.join(", "),
            ]
        })
        .collect()
}

pub fn endpoint_status(format: Format, statuses: &[(String, StatusResponse)]) -> Printed {
    Ok(match format {
        Format::Json => {
            let items = statuses
                .iter()
                .map(|(ep, st)| {
                    Obj::new()
                        .raw("Endpoint", json::string(ep))
                        .raw("Status", json::status(st))
                        .build()
                })
                .collect();
            json_line(json::array(items))
        }
        Format::Fields => fields::endpoint_status(statuses),
        Format::Table => table::render(
            &[
                "endpoint",
                "ID",
                "version",
                "db size",
                "is leader",
                "is learner",
                "raft term",
                "raft index",
                "raft applied index",
                "errors",
            ],
            &status_rows(statuses),
        ),
        Format::Simple => lines(&status_rows(statuses)),
    })
}

pub fn endpoint_hashkv(format: Format, hashes: &[(String, HashKvResponse)]) -> Printed {
    let rows: Vec<Vec<String>> = hashes
        .iter()
        .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
        .collect();
    Ok(match format {
        Format::Json => {
            let items = hashes
                .iter()
                .map(|(ep, h)| {
                    let hash = Obj::new()
                        .opt("header", json::header(h.header.as_ref()))
                        .int("hash", h.hash)
                        .int("compact_revision", h.compact_revision)
                        .build();
                    Obj::new()
                        .raw("Endpoint", json::string(ep))
                        .raw("HashKV", hash)
                        .build()
                })
                .collect();
            json_line(json::array(items))
        }
        Format::Fields => fields::endpoint_hashkv(hashes),
        Format::Table => table::render(&["endpoint", "hash"], &rows),
        Format::Simple => lines(&rows),
    })
}

/// An alarm type's name, as Go's `String()` of the enum prints it.
pub fn alarm_name(alarm: i32) -> String {
    AlarmType::try_from(alarm).map_or_else(|_| alarm.to_string(), |a| a.as_str_name().to_string())
}

pub fn alarm(format: Format, r: &AlarmResponse) -> Printed {
    Ok(match format {
        Format::Json => {
            let alarms = r
                .alarms
                .iter()
                .map(|a| {
                    Obj::new()
                        .int("memberID", a.member_id)
                        .int("alarm", a.alarm)
                        .build()
                })
                .collect();
            json_line(
                Obj::new()
                    .opt("header", json::header(r.header.as_ref()))
                    .list("alarms", alarms)
                    .build(),
            )
        }
        Format::Fields => fields::alarm(r),
        Format::Table => return Err(unsupported(format)),
        // Go's `%+v` of the protobuf message: its compact text form, trailing space included.
        Format::Simple => r
            .alarms
            .iter()
            .map(|a| {
                if a.alarm == 0 {
                    format!("memberID:{} \n", a.member_id)
                } else {
                    format!("memberID:{} alarm:{} \n", a.member_id, alarm_name(a.alarm))
                }
            })
            .collect(),
    })
}

pub fn move_leader(format: Format, leader: u64, target: u64, r: &MoveLeaderResponse) -> Printed {
    Ok(match format {
        Format::Json => json_line(
            Obj::new()
                .opt("header", json::header(r.header.as_ref()))
                .build(),
        ),
        Format::Fields | Format::Table => return Err(unsupported(format)),
        Format::Simple => format!("Leadership transferred from {leader:x} to {target:x}\n"),
    })
}

/// One endpoint's health check.
pub struct Health {
    pub endpoint: String,
    pub healthy: bool,
    pub took: std::time::Duration,
    pub error: Option<String>,
}

impl Health {
    /// The time as Go prints a duration.
    pub fn took_text(&self) -> String {
        json::go_duration(self.took)
    }
}

/// Returns (stdout, stderr): etcdctl writes the simple health lines to stderr.
pub fn endpoint_health(format: Format, results: &[Health]) -> Result<(String, String), Failure> {
    Ok(match format {
        Format::Json => {
            let items = results
                .iter()
                .map(|h| {
                    let obj = Obj::new()
                        .raw("endpoint", json::string(&h.endpoint))
                        .raw("health", h.healthy.to_string())
                        .raw("took", json::string(&h.took_text()));
                    match &h.error {
                        Some(e) => obj.raw("error", json::string(e)).build(),
                        None => obj.build(),
                    }
                })
                .collect();
            (json_line(json::array(items)), String::new())
        }
        Format::Fields => (fields::endpoint_health(results), String::new()),
        Format::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.healthy.to_string(),
                        h.took_text(),
                        h.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            (
                table::render(&["endpoint", "health", "took", "error"], &rows),
                String::new(),
            )
        }
        Format::Simple => {
            let mut err = String::new();
            for h in results {
                if h.healthy {
                    err.push_str(&format!(
                        "{} is healthy: successfully committed proposal: took = {}\n",
                        h.endpoint,
                        h.took_text()
                    ));
                } else {
                    err.push_str(&format!(
                        "{} is unhealthy: failed to commit proposal: {}\n",
                        h.endpoint,
                        h.error.as_deref().unwrap_or("unknown error")
                    ));
                }
            }
            (String::new(), err)
        }
    })
}

/// etcdctl's `snapshot status`: hash (hex in simple and table), revision, total keys, total
/// size.
pub fn snapshot_status(
    format: Format,
    st: &minietcd::storage::snapshot_file::SnapshotStatus,
) -> Printed {
    let rows = vec![vec![
        format!("{:x}", st.hash),
        st.revision.to_string(),
        st.total_keys.to_string(),
        json::human_bytes(st.total_size),
    ]];
    Ok(match format {
        Format::Json => json_line(
            json::Obj::new()
                .raw("hash", st.hash.to_string())
                .raw("revision", st.revision.to_string())
                .raw("totalKey", st.total_keys.to_string())
                .raw("totalSize", st.total_size.to_string())
                .build(),
        ),
        Format::Fields => fields::snapshot_status(st),
        Format::Table => table::render(&["hash", "revision", "total keys", "total size"], &rows),
        Format::Simple => lines(&rows),
    })
}
