//! Dispatch of control messages and transfer reports to the upload and download sides.

use super::links::FEATURE_SEND_ONLY;
use super::{Report, Session};
use crate::error::codes;
use crate::events::FileInfo;
use crate::proto::control::{
    CONTROL_VERSION, ControlMessage, FEATURE_BATCH, FEATURE_BLOCK_HASHES, FEATURE_TREE,
};

impl Session {
    pub(super) fn on_control(&mut self, peer: &str, msg: ControlMessage) {
        match msg {
            ControlMessage::Hello {
                version, features, ..
            } => {
                let send_only = features.iter().any(|f| f == FEATURE_SEND_ONLY);
                if let Some(link) = self.links.get_mut(peer) {
                    link.block_hashes = features.iter().any(|f| f == FEATURE_BLOCK_HASHES);
                    link.tree = features.iter().any(|f| f == FEATURE_TREE);
                    link.batch = features.iter().any(|f| f == FEATURE_BATCH);
                }
                self.set_send_only(peer, send_only);
                if send_only {
                    self.not_a_recipient(peer);
                }
                self.send_tree_dirs_to(peer);
                if version != CONTROL_VERSION {
                    self.send_control(
                        peer,
                        ControlMessage::Error {
                            job_id: None,
                            file_id: None,
                            code: codes::UNSUPPORTED_VERSION,
                            message: format!("control protocol {version} is not supported"),
                        },
                    );
                }
            }
            ControlMessage::Offer {
                file_id,
                name,
                size,
                hash,
                ttl_ms,
                group,
                path,
                executable,
                text,
            } => {
                let info = FileInfo {
                    file_id,
                    name,
                    size,
                    hash,
                    sender: peer.to_string(),
                    expires_in_ms: ttl_ms,
                    group,
                    path,
                    executable,
                    text,
                };
                self.on_offer(peer, info);
            }
            ControlMessage::Dirs { group, paths } => self.on_tree_dirs(peer, group, paths),
            ControlMessage::Revoke { file_id } => self.on_revoke(peer, file_id),
            ControlMessage::Request {
                job_id,
                file_id,
                offset,
            } => self.on_request(peer, job_id, file_id, offset),
            ControlMessage::BatchRequest { batch_id, jobs } => {
                self.on_batch_request(peer, batch_id, jobs)
            }
            ControlMessage::Decline { file_id, have } => {
                self.on_recipient_decline(peer, file_id, have)
            }
            ControlMessage::HashesRequest {
                job_id,
                file_id,
                offset,
                length,
            } => self.on_hashes_request(peer, job_id, file_id, offset, length),
            ControlMessage::Hashes {
                job_id,
                file_id,
                offset,
                length,
                hashes,
            } => self.on_hashes(peer, job_id, file_id, offset, length, &hashes),
            ControlMessage::Progress { job_id, received } => {
                self.on_recipient_progress(peer, job_id, received)
            }
            ControlMessage::Done { job_id, ok, code } => {
                self.on_recipient_done(peer, job_id, ok, code)
            }
            ControlMessage::Cancel { job_id, code } => {
                // A job ID names either a download we serve or one we run.
                if !self.on_recipient_cancel(peer, job_id, code) {
                    self.on_sender_cancel(peer, job_id, code);
                }
            }
            ControlMessage::Error {
                job_id,
                file_id,
                code,
                message,
            } => {
                // Without a job, an error about one of our files is a recipient's
                // refusal of its offer.
                let refusal = job_id.is_none()
                    && file_id.is_some_and(|f| self.on_recipient_refusal(peer, f, code, &message));
                if !refusal {
                    self.on_sender_error(peer, job_id, code, message);
                }
            }
        }
    }

    pub(super) fn on_report(&mut self, report: Report) {
        match report {
            Report::DownloadProgress { job_id, received } => {
                self.on_download_progress(job_id, received)
            }
            Report::DownloadDone { job_id, result } => self.on_download_done(job_id, result),
            Report::UploadStreamDone { job_id, result } => {
                self.on_upload_stream_done(job_id, result)
            }
            Report::JobChannelStuck { job_id } => self.on_job_channel_stuck(job_id),
            Report::BatchStreamDone { batch_id, result } => {
                self.on_batch_stream_done(batch_id, result)
            }
            Report::BatchChannelStuck { batch_id } => self.on_batch_channel_stuck(batch_id),
            Report::BatchFileDone { job_id, result } => self.on_batch_file_done(job_id, result),
            Report::BatchDone { batch_id, end } => self.on_batch_done(batch_id, end),
            Report::TailChecked {
                job_id,
                tail,
                verified,
            } => self.on_tail_checked(job_id, tail, verified),
            Report::HashesReady {
                peer,
                job_id,
                file_id,
                range,
                result,
            } => self.on_hashes_ready(&peer, job_id, file_id, range, result),
        }
    }
}
