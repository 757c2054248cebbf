//! etcdctl's `defrag` and `move-leader`: maintenance requests addressed to particular members.

use minietcd_client::{Client, MaintenanceOptions};

use crate::ops::{Failure, EXIT_BAD_ARGS, EXIT_ERROR};
use crate::printer;
use crate::{emit, emit_err, endpoint_targets, single, Ctx};

/// `defrag [--cluster]`: each member in turn, one line each; exit 1 if any failed.
pub async fn defrag(ctx: &Ctx, cluster: bool) -> Result<(), Failure> {
    let mut failures = 0;
    for ep in endpoint_targets(ctx, cluster).await? {
        let result = match single(ctx, &ep).await {
            Ok(c) => c
                .maintenance()
                .defragment(MaintenanceOptions::new())
                .await
                .map_err(Failure::from),
            Err(f) => Err(f),
        };
        match result {
            Ok(_) => emit(&format!("Finished defragmenting etcd member[{ep}]\n"))?,
            Err(f) => {
                failures += 1;
                emit_err(&format!(
                    "Failed to defragment etcd member[{ep}] ({})\n",
                    f.message
                ));
            }
        }
    }
    if failures > 0 {
        return Err(Failure::silent(EXIT_ERROR));
    }
    Ok(())
}

/// Go's `strconv.ParseUint(s, 16, 64)`, with its error text.
fn parse_hex_id(s: &str) -> Result<u64, Failure> {
    u64::from_str_radix(s, 16).map_err(|_| {
        let why = if !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        Failure::new(
            EXIT_BAD_ARGS,
            format!("strconv.ParseUint: parsing {s:?}: {why}"),
        )
    })
}

/// `move-leader <hex id>`: finds the leader among the endpoints (by their status), asks it to
/// hand over to the target, then prints the transfer.
pub async fn move_leader(ctx: &Ctx, target: &str) -> Result<(), Failure> {
    let target = parse_hex_id(target)?;
    let mut leader: Option<(Client, u64)> = None;
    for ep in &ctx.endpoints {
        let c = single(ctx, ep).await?;
        let st = c.maintenance().status(MaintenanceOptions::new()).await?;
        let me = st.header.as_ref().map_or(0, |h| h.member_id);
        if me == st.leader {
            leader = Some((c, st.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        return Err(Failure::new(
            EXIT_BAD_ARGS,
            format!("no leader endpoint given at [{}]", ctx.endpoints.join(" ")),
        ));
    };
    let r = client
        .maintenance()
        .move_leader(target, MaintenanceOptions::new())
        .await?;
    emit(&printer::move_leader(ctx.format, leader_id, target, &r)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_parse_like_go() {
        assert_eq!(
            parse_hex_id("bdae9bbc11dd390d").unwrap(),
            0xbdae9bbc11dd390d
        );
        assert_eq!(
            parse_hex_id("xyz").unwrap_err().message,
            "strconv.ParseUint: parsing \"xyz\": invalid syntax"
        );
        assert_eq!(
            parse_hex_id("1ffffffffffffffff").unwrap_err().message,
            "strconv.ParseUint: parsing \"1ffffffffffffffff\": value out of range"
        );
    }
}
