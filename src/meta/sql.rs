//! What the SQL engines (SQLite, PostgreSQL) share beyond the meaning of each op: how a failed
//! op is named in a log line, and how stored text and integers are read back into the
//! metadata's types, so that both report a bad row the same way.

use super::{Error, Result, WriteOp};
use crate::oci::digest::Digest;

/// For the log line of a failed op: the kind and target, not the whole record.
pub(super) fn describe(op: &WriteOp) -> String {
    match op {
        WriteOp::LinkBlob { repo, digest, .. } => format!("link {repo}@{digest}"),
        WriteOp::UnlinkBlob { repo, digest } => format!("unlink {repo}@{digest}"),
        WriteOp::PutManifest { repo, record, .. } => {
            format!("put manifest {repo}@{}", record.digest)
        }
        WriteOp::DeleteManifest { repo, digest } => format!("delete manifest {repo}@{digest}"),
        WriteOp::DeleteTag { repo, tag } => format!("delete tag {repo}:{tag}"),
        WriteOp::MountBlob { from, repo, digest } => format!("mount {from}@{digest} in {repo}"),
        WriteOp::PutUpload(r) => format!("put upload in {}", r.repository),
        WriteOp::AdvanceUpload { record, .. } => {
            format!("advance upload in {}", record.repository)
        }
        WriteOp::DeleteUpload { .. } => "delete upload".into(),
        WriteOp::RecordPulls(p) => format!("record {} pulls", p.len()),
        WriteOp::CreateRobotToken(t) => format!("create robot token {}", t.name),
        WriteOp::RevokeRobotToken { name } => format!("revoke robot token {name}"),
        WriteOp::RobotTokenUsed { name, .. } => format!("robot token {name} used"),
        WriteOp::ClaimBlob { digest } => format!("claim {digest}"),
        WriteOp::RecordBlobUse(u) => format!("record {} blob uses", u.len()),
        WriteOp::CollectManifest { repo, digest, .. } => {
            format!("collect manifest {repo}@{digest}")
        }
        WriteOp::TombstoneBlob { digest, .. } => format!("mark {digest} for removal"),
        WriteOp::ForgetBlob { digest } => format!("forget {digest}"),
        WriteOp::TombstoneOrphan { digest, .. } => format!("mark orphan {digest} for removal"),
        WriteOp::ForgetClaims { .. } => "forget old claims".into(),
        WriteOp::ExpireTag { repo, tag, .. } => format!("expire tag {repo}:{tag}"),
        WriteOp::ForgetPushEvents(e) => format!("forget {} push events", e.len()),
    }
}

/// A load error carries its cause in the message: it is shown to the operator at startup and
/// never reaches a client.
pub(super) fn load_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("reading {what}: {e}"))
}

pub(super) fn digest_col(table: &str, text: &str) -> Result<Digest> {
    Digest::parse(text).map_err(|_| load_error(table, format_args!("invalid digest {text:?}")))
}

pub(super) fn size_col(table: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| load_error(table, format_args!("negative size {v}")))
}
