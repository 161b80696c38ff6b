//! A request of a raft command, decoded once into [`Cmd`]: its kind and fields, with the column
//! family typed, read in place from the request.
//!
//! Proposal checks, reads, batching and apply all take a request through [`Cmd::decode`], so the
//! command type and the column family are decoded in one place. A request whose body is missing
//! reads as the body's defaults (as it always has: apply must decide every entry the same way
//! on every replica); an unknown command type or column family is an error.
//!
//! A plain write (a put or a delete) is also executed here into a kv-engine write batch
//! ([`exec_write`], [`write_one`]), the same way by apply in the raft worker and by the apply
//! thread.

use kv::{keys, Cf, WriteBatch};
use proto::raft_cmdpb::{
    CasRequest, CmdType, DeleteExpiredRequest, DeleteResponse, PutResponse, Request, Response,
};

use crate::error::{Error, Result};

/// One decoded request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd<'a> {
    /// Read `key`.
    Get { cf: Cf, key: &'a [u8] },
    /// Write `value` at `key`.
    Put {
        cf: Cf,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// Delete `key`.
    Delete { cf: Cf, key: &'a [u8] },
    /// Delete every key of `[start, end)` (an empty `end`: to the end of the key space).
    DeleteRange {
        cf: Cf,
        start: &'a [u8],
        end: &'a [u8],
    },
    /// A consistent snapshot of the region.
    Snap,
    /// Compare-and-swap one key.
    Cas { cf: Cf, req: &'a CasRequest },
    /// Delete the keys whose time to live ended by the request's clock.
    DeleteExpired {
        cf: Cf,
        req: &'a DeleteExpiredRequest,
    },
}

/// The defaults a request without its body reads as.
static NO_DELETE_EXPIRED: DeleteExpiredRequest = DeleteExpiredRequest {
    cf: String::new(),
    keys: Vec::new(),
    now_ms: 0,
};

/// The defaults a request without its body reads as.
static NO_CAS: CasRequest = CasRequest {
    cf: String::new(),
    key: Vec::new(),
    value: Vec::new(),
    previous_not_exist: false,
    previous_value: Vec::new(),
    now_ms: 0,
};

impl<'a> Cmd<'a> {
    /// Decodes `r`.
    ///
    /// # Errors
    /// An invalid command type, or an unknown column family.
    pub(crate) fn decode(r: &'a Request) -> Result<Cmd<'a>> {
        let cf = |name: Option<&str>| -> Result<Cf> { Ok(Cf::from_name(name.unwrap_or(""))?) };
        match CmdType::try_from(r.cmd_type) {
            Ok(CmdType::Get) => {
                let g = r.get.as_ref();
                Ok(Cmd::Get {
                    cf: cf(g.map(|g| g.cf.as_str()))?,
                    key: g.map_or(&[][..], |g| &g.key),
                })
            }
            Ok(CmdType::Put) => {
                let p = r.put.as_ref();
                Ok(Cmd::Put {
                    cf: cf(p.map(|p| p.cf.as_str()))?,
                    key: p.map_or(&[][..], |p| &p.key),
                    value: p.map_or(&[][..], |p| &p.value),
                })
            }
            Ok(CmdType::Delete) => {
                let d = r.delete.as_ref();
                Ok(Cmd::Delete {
                    cf: cf(d.map(|d| d.cf.as_str()))?,
                    key: d.map_or(&[][..], |d| &d.key),
                })
            }
            Ok(CmdType::DeleteRange) => {
                let d = r.delete_range.as_ref();
                Ok(Cmd::DeleteRange {
                    cf: cf(d.map(|d| d.cf.as_str()))?,
                    start: d.map_or(&[][..], |d| &d.start_key),
                    end: d.map_or(&[][..], |d| &d.end_key),
                })
            }
            Ok(CmdType::Snap) => Ok(Cmd::Snap),
            Ok(CmdType::Cas) => {
                let c = r.cas.as_ref().unwrap_or(&NO_CAS);
                Ok(Cmd::Cas {
                    cf: cf(Some(&c.cf))?,
                    req: c,
                })
            }
            Ok(CmdType::DeleteExpired) => {
                let d = r.delete_expired.as_ref().unwrap_or(&NO_DELETE_EXPIRED);
                Ok(Cmd::DeleteExpired {
                    cf: cf(Some(&d.cf))?,
                    req: d,
                })
            }
            Ok(CmdType::Invalid) | Err(_) => {
                Err(Error::Other(format!("invalid command type {}", r.cmd_type)))
            }
        }
    }

    /// The one key this request touches, if it touches one (a range and a snapshot do not).
    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        match *self {
            Cmd::Get { key, .. } | Cmd::Put { key, .. } | Cmd::Delete { key, .. } => Some(key),
            Cmd::Cas { req, .. } => Some(&req.key),
            Cmd::DeleteRange { .. } | Cmd::DeleteExpired { .. } | Cmd::Snap => None,
        }
    }

    /// Whether it reads the engine as of its place in the log (a `Get`, a `Snap`, a `Cas`'s
    /// comparison, a `DeleteExpired`'s look at each key).
    pub(crate) fn reads(&self) -> bool {
        matches!(
            self,
            Cmd::Get { .. } | Cmd::Snap | Cmd::Cas { .. } | Cmd::DeleteExpired { .. }
        )
    }

    /// Whether it only reads (`Get`, `Snap`).
    pub(crate) fn read_only(&self) -> bool {
        matches!(self, Cmd::Get { .. } | Cmd::Snap)
    }

    /// Whether it is a plain write of one key (a put or a delete: what a round's write batch
    /// and the apply thread take).
    pub(crate) fn plain_write(&self) -> bool {
        matches!(self, Cmd::Put { .. } | Cmd::Delete { .. })
    }
}

/// Adds `r` to `wb` if it is a put or a delete and answers it; `None` for any other command.
pub(crate) fn exec_write(r: &Request, wb: &mut WriteBatch) -> Result<Option<Response>> {
    write_one(Cmd::decode(r)?, r.cmd_type, wb)
}

/// Adds a decoded put or delete to `wb` and answers it (`cmd_type` as the request had it);
/// `None` for any other command. Reads in place: the apply path copies a command's bytes only
/// into the write batch.
pub(crate) fn write_one(
    cmd: Cmd<'_>,
    cmd_type: i32,
    wb: &mut WriteBatch,
) -> Result<Option<Response>> {
    let mut resp = Response {
        cmd_type,
        ..Default::default()
    };
    match cmd {
        Cmd::Put { cf, key, value } => {
            wb.put_cf(cf, &keys::data_key(key), value)?;
            resp.put = Some(PutResponse {});
        }
        Cmd::Delete { cf, key } => {
            wb.delete_cf(cf, &keys::data_key(key))?;
            resp.delete = Some(DeleteResponse {});
        }
        _ => return Ok(None),
    }
    Ok(Some(resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::raft_cmdpb::{DeleteRangeRequest, PutRequest};

    #[test]
    fn a_request_is_decoded_with_its_column_family_typed_2b() {
        let put = Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest {
                cf: "lock".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }),
            ..Default::default()
        };
        match Cmd::decode(&put).unwrap() {
            Cmd::Put { cf, key, value } => {
                assert_eq!((cf, key, value), (Cf::Lock, &b"k"[..], &b"v"[..]));
            }
            other => panic!("{other:?}"),
        }
        // A missing body reads as its defaults: the default column family, an empty key.
        let bare = Request {
            cmd_type: CmdType::Delete as i32,
            ..Default::default()
        };
        assert!(matches!(
            Cmd::decode(&bare).unwrap(),
            Cmd::Delete {
                cf: Cf::Default,
                key: b""
            }
        ));
        let range = Request {
            cmd_type: CmdType::DeleteRange as i32,
            delete_range: Some(DeleteRangeRequest {
                cf: "nope".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(Cmd::decode(&range).is_err(), "an unknown column family");
        let invalid = Request {
            cmd_type: 99,
            ..Default::default()
        };
        assert!(Cmd::decode(&invalid).is_err());
    }
}
