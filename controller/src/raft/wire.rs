//! How raft's results travel over gRPC: a rejection or failure as a `tonic::Status`,
//! a forwarded proposal's result, and the state machine's objects as protobuf.

use super::consensus::RaftError;
use crate::model::{ApplyError, Object, Outcome};
use skiff_proto::cluster as pb;
use tonic::Status;

/// The gRPC status a raft error answers with.
pub fn raft_status(e: RaftError) -> Status {
    use ApplyError as A;
    use RaftError as E;
    match e {
        E::NoLeader
        | E::Timeout(_)
        | E::ReadTimeout(_)
        | E::ConfChangeBusy
        | E::LeaderChanged
        | E::NotLeader
        | E::Forward(_)
        | E::Remote(_)
        | E::Stopped => Status::unavailable(e.to_string()),
        E::Rejected(A::NotFound { .. }) => Status::not_found(e.to_string()),
        E::Rejected(A::NameConflict { .. } | A::IdConflict { .. }) => {
            Status::already_exists(e.to_string())
        }
        E::Rejected(A::VersionMismatch { .. }) => Status::failed_precondition(e.to_string()),
        E::Rejected(A::Removed(_)) | E::Removed => Status::permission_denied(e.to_string()),
        E::Rejected(A::Invalid(_)) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// A state machine object as protobuf.
pub fn object_pb(o: &Object) -> pb::Object {
    pb::Object {
        kind: o.kind.clone(),
        id: o.id.clone(),
        name: o.name.clone(),
        version: o.version,
        spec: o.spec.clone(),
        created_index: o.created_index,
        updated_index: o.updated_index,
    }
}

/// A pb object as the state machine's.
pub fn object_from_pb(o: pb::Object) -> Object {
    Object {
        kind: o.kind,
        id: o.id,
        name: o.name,
        version: o.version,
        spec: o.spec,
        created_index: o.created_index,
        updated_index: o.updated_index,
    }
}

/// The leader's side: a proposal's result as it travels back.
pub fn result_to_pb(r: Result<Outcome, RaftError>) -> pb::ForwardResult {
    match r {
        Ok(o) => pb::ForwardResult {
            outcome: Some(pb::ProposeResponse {
                objects: o.objects.iter().map(object_pb).collect(),
                index: o.index,
            }),
            ..Default::default()
        },
        Err(RaftError::Rejected(e)) => pb::ForwardResult {
            rejected: serde_json::to_vec(&e).unwrap_or_default(),
            error: e.to_string(),
            ..Default::default()
        },
        Err(e) => pb::ForwardResult {
            retry: e.is_retryable() || matches!(e, RaftError::Stopped),
            error: e.to_string(),
            ..Default::default()
        },
    }
}

/// The follower's side: what the leader answered, as a local result.
pub fn result_from_pb(r: pb::ForwardResult) -> Result<Outcome, RaftError> {
    if let Some(o) = r.outcome {
        return Ok(Outcome {
            index: o.index,
            objects: o.objects.into_iter().map(object_from_pb).collect(),
        });
    }
    if !r.rejected.is_empty() {
        return Err(match serde_json::from_slice::<ApplyError>(&r.rejected) {
            Ok(e) => RaftError::Rejected(e),
            Err(_) => RaftError::Remote(r.error),
        });
    }
    if r.retry {
        Err(RaftError::LeaderChanged)
    } else {
        Err(RaftError::Remote(r.error))
    }
}
