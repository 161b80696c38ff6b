//! Admin commands at apply: each goes to its feature, `Split` to `split.rs` and `CompactLog` to
//! `compact_log.rs` (membership changes are conf-change entries, `conf_change.rs`); any other is
//! answered with an error and changes nothing.

use kv::WriteBatch;
use proto::raft_cmdpb::{AdminCmdType, AdminRequest, AdminResponse, RaftCmdRequest};
use proto::raft_serverpb::RaftApplyState;

use super::apply::ApplyEffects;
use super::conf_change::admin_response;
use super::PeerMsgHandler;
use crate::error::Error;
use crate::msg::CmdResponse;

impl PeerMsgHandler<'_> {
    /// Applies the admin command `admin` of `req`.
    pub(super) fn exec_admin(
        &mut self,
        req: &RaftCmdRequest,
        admin: &AdminRequest,
        wb: &mut WriteBatch,
        apply_state: &mut RaftApplyState,
        effects: &mut ApplyEffects,
    ) -> CmdResponse {
        let term = self.peer.term();
        match AdminCmdType::try_from(admin.cmd_type) {
            Ok(AdminCmdType::Split) => self.exec_split(req, wb, effects),
            Ok(AdminCmdType::CompactLog) => {
                let compact_log = self.exec_compact_log(admin, apply_state, effects);
                let resp = AdminResponse {
                    cmd_type: admin.cmd_type,
                    compact_log: Some(compact_log),
                    ..Default::default()
                };
                admin_response(term, resp)
            }
            _ => CmdResponse::from_error(
                Error::Other(format!(
                    "region {}: unsupported admin command {}",
                    self.peer.region_id, admin.cmd_type
                )),
                term,
            ),
        }
    }
}
