//! Checks shared by proposing and applying: region epochs and key ranges.

use kv::Cf;
use proto::metapb;
use proto::raft_cmdpb::RaftCmdRequest;

use crate::cmd::Cmd;
use crate::error::{Error, Result};

/// Whether every request of `req` only reads (`Get`/`Snap`): such commands are served by
/// ReadIndex, without a log entry.
pub(crate) fn is_read_only(req: &RaftCmdRequest) -> bool {
    req.admin_request.is_none()
        && !req.requests.is_empty()
        && req
            .requests
            .iter()
            .all(|r| Cmd::decode(r).is_ok_and(|c| c.read_only()))
}

/// Checks that the request's epoch is the region's current one. Normal commands depend on the
/// range only (`version`); admin commands on the membership too (`conf_ver`).
pub(crate) fn check_region_epoch(req: &RaftCmdRequest, region: &metapb::Region) -> Result<()> {
    let current = region.region_epoch.unwrap_or_default();
    let Some(from) = req.header.as_ref().and_then(|h| h.region_epoch.as_ref()) else {
        return Err(Error::EpochNotMatch {
            message: format!("request for region {} carries no epoch", region.id),
            regions: vec![region.clone()],
        });
    };
    let check_conf = req.admin_request.is_some();
    if from.version != current.version || (check_conf && from.conf_ver != current.conf_ver) {
        return Err(Error::EpochNotMatch {
            message: format!(
                "region {} epoch is {:?}, request has {:?}",
                region.id, current, from
            ),
            regions: vec![region.clone()],
        });
    }
    Ok(())
}

/// Checks that `key` lies in `[region.start_key, region.end_key)`.
pub(crate) fn check_key_in_region(key: &[u8], region: &metapb::Region) -> Result<()> {
    let after_start = key >= region.start_key.as_slice();
    let before_end = region.end_key.is_empty() || key < region.end_key.as_slice();
    if after_start && before_end {
        Ok(())
    } else {
        Err(Error::KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        })
    }
}

/// Checks that a command holding a `Cas` or a `DeleteExpired` holds nothing else. Apply decides
/// them against the engine, which has the writes of earlier entries but not those of earlier
/// requests of the same entry; one such request per command keeps that exact (and no client or
/// TTL check needs more).
pub(crate) fn check_deciding_alone(req: &RaftCmdRequest) -> Result<()> {
    let deciding = req.requests.iter().find_map(|r| match Cmd::decode(r) {
        Ok(Cmd::Cas { .. }) => Some("a compare-and-swap"),
        Ok(Cmd::DeleteExpired { .. }) => Some("a deletion of expired keys"),
        _ => None,
    });
    if let (Some(what), true) = (deciding, req.requests.len() > 1) {
        return Err(Error::Other(format!(
            "{what} must be the only request of its command, not one of {}",
            req.requests.len()
        )));
    }
    Ok(())
}

/// Checks that `req` carries `region`'s current epoch, that every key it touches lies in the
/// region, and that a `Cas` comes alone: what a command must pass when proposed, applied, and
/// (for reads) served.
pub(crate) fn check_request(req: &RaftCmdRequest, region: &metapb::Region) -> Result<()> {
    check_region_epoch(req, region)?;
    check_deciding_alone(req)?;
    // A request that does not decode is refused by apply, which decodes every request of a
    // command before it writes any.
    for cmd in req.requests.iter().filter_map(|r| Cmd::decode(r).ok()) {
        match cmd {
            Cmd::DeleteRange { start, end, .. } => check_range_in_region(start, end, region)?,
            Cmd::DeleteExpired { cf, req } => {
                // The lock and write CFs hold transaction records, never a raw TTL.
                if cf != Cf::Default {
                    return Err(Error::Other(format!(
                        "expired keys are only deleted from the default column family, not {}",
                        cf.name()
                    )));
                }
                for key in &req.keys {
                    check_key_in_region(key, region)?;
                }
            }
            other => {
                if let Some(key) = other.key() {
                    check_key_in_region(key, region)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks that `[start, end)` (an empty `end`: to the end of the key space) lies in `region`:
/// its start in the region and its end no further than the region's.
pub(crate) fn check_range_in_region(
    start: &[u8],
    end: &[u8],
    region: &metapb::Region,
) -> Result<()> {
    check_key_in_region(start, region)?;
    let region_end = region.end_key.as_slice();
    let within = region_end.is_empty() || (!end.is_empty() && end <= region_end);
    if within {
        return Ok(());
    }
    Err(Error::KeyNotInRegion {
        key: end.to_vec(),
        region_id: region.id,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
    })
}

/// Checks that `key` can split `region`: inside it and not its first key.
pub(crate) fn check_split_key(key: &[u8], region: &metapb::Region) -> Result<()> {
    check_key_in_region(key, region)?;
    if key.is_empty() || key == region.start_key.as_slice() {
        return Err(Error::Other(format!(
            "region {}: split key {:?} is the region's start",
            region.id,
            String::from_utf8_lossy(key)
        )));
    }
    Ok(())
}

/// Whether `key` lies in `region`.
pub fn region_contains(region: &metapb::Region, key: &[u8]) -> bool {
    check_key_in_region(key, region).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::raft_cmdpb::{
        CasRequest, CmdType, GetRequest, PutRequest, RaftRequestHeader, Request,
    };

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 2,
                version: 3,
            }),
            peers: vec![],
        }
    }

    #[test]
    fn key_ranges_are_half_open_and_empty_end_is_unbounded_2b() {
        let r = region(b"b", b"d");
        assert!(check_key_in_region(b"b", &r).is_ok());
        assert!(check_key_in_region(b"c", &r).is_ok());
        assert!(matches!(
            check_key_in_region(b"d", &r),
            Err(Error::KeyNotInRegion { .. })
        ));
        assert!(check_key_in_region(b"a", &r).is_err());
        assert!(region_contains(&region(b"", b""), b"\xff\xff"));
    }

    #[test]
    fn epoch_check_compares_version_for_normal_commands_2b() {
        let r = region(b"", b"");
        let mut req = RaftCmdRequest::default();
        assert!(check_region_epoch(&req, &r).is_err());
        req.header = Some(RaftRequestHeader {
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 3,
            }),
            ..Default::default()
        });
        // A stale conf_ver does not matter to a normal command.
        assert!(check_region_epoch(&req, &r).is_ok());
        req.header
            .as_mut()
            .unwrap()
            .region_epoch
            .as_mut()
            .unwrap()
            .version = 2;
        assert!(matches!(
            check_region_epoch(&req, &r),
            Err(Error::EpochNotMatch { regions, .. }) if regions == vec![r.clone()]
        ));
    }

    #[test]
    fn read_only_detection_2b() {
        let mut req = RaftCmdRequest::default();
        assert!(!is_read_only(&req));
        req.requests.push(Request {
            cmd_type: CmdType::Get as i32,
            get: Some(GetRequest::default()),
            ..Default::default()
        });
        assert!(is_read_only(&req));
        req.requests.push(Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest::default()),
            ..Default::default()
        });
        assert!(!is_read_only(&req));
        // A compare-and-swap writes: it goes through the log (and is refused while the disk is
        // full), never through ReadIndex.
        assert!(!is_read_only(&cas_command(b"k")));
    }

    fn cas_command(key: &[u8]) -> RaftCmdRequest {
        RaftCmdRequest {
            header: Some(RaftRequestHeader {
                region_epoch: region(b"", b"").region_epoch,
                ..Default::default()
            }),
            requests: vec![Request {
                cmd_type: CmdType::Cas as i32,
                cas: Some(CasRequest {
                    key: key.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            admin_request: None,
        }
    }

    #[test]
    fn cas_comes_alone_and_inside_the_region_2b() {
        let r = region(b"b", b"d");
        assert!(check_request(&cas_command(b"c"), &r).is_ok());
        assert!(matches!(
            check_request(&cas_command(b"x"), &r),
            Err(Error::KeyNotInRegion { .. })
        ));
        let mut two = cas_command(b"c");
        two.requests.insert(
            0,
            Request {
                cmd_type: CmdType::Put as i32,
                put: Some(PutRequest {
                    key: b"c".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert!(matches!(check_request(&two, &r), Err(Error::Other(m)) if m.contains("only")));
    }
}
