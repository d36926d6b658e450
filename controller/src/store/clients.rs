//! Client certificates the cluster issued (`skiff cluster client-cert`) and their
//! revocation. Each issued certificate is a replicated record named by its serial; it
//! is written before the certificate is handed out, so every certificate in use can be
//! listed and revoked. The Engine API port refuses a revoked serial on every request
//! (managers read their state; workers get the list with their assignments). Records
//! go once their certificate has expired: the TLS handshake refuses it by then anyway.

use super::{StateMachine, Stored};
use crate::model::Op;
use serde::{Deserialize, Serialize};

pub const KIND_CLIENT_CERT: &str = "clientcert";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertRecord {
    /// The certificate's common name (who holds it).
    pub name: String,
    /// Lowercase hex, as [`crate::ca::ClientId::serial`].
    pub serial: String,
    pub issued_ms: i64,
    /// Expiry, unix milliseconds.
    pub not_after_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientsError {
    #[error("no client certificate named or with serial {0:?}")]
    Unknown(String),
    #[error("encoding a client certificate record: {0}")]
    Encode(String),
}

/// The op recording a newly issued certificate.
pub fn issue_op(rec: &ClientCertRecord) -> Result<Op, ClientsError> {
    Ok(Op::Create {
        kind: KIND_CLIENT_CERT.into(),
        id: rec.serial.clone(),
        name: rec.serial.clone(),
        spec: serde_json::to_vec(rec).map_err(|e| ClientsError::Encode(e.to_string()))?,
    })
}

/// Every record, oldest first.
pub fn list(sm: &StateMachine) -> Vec<Stored<ClientCertRecord>> {
    let mut out: Vec<Stored<ClientCertRecord>> = crate::store::decode(sm, KIND_CLIENT_CERT);
    out.sort_by(|a, b| {
        (a.value.issued_ms, &a.value.serial).cmp(&(b.value.issued_ms, &b.value.serial))
    });
    out
}

/// Whether the certificate with `serial` was revoked. A serial with no record (issued
/// before records were kept) is not.
pub fn is_revoked(sm: &StateMachine, serial: &str) -> bool {
    sm.get(KIND_CLIENT_CERT, serial)
        .and_then(|o| serde_json::from_slice::<ClientCertRecord>(&o.spec).ok())
        .is_some_and(|r| r.revoked_ms.is_some())
}

/// The serials of revoked certificates, sorted (what workers are sent, with every
/// assignment set: kept to a decode and a filter).
pub fn revoked_serials(sm: &StateMachine) -> Vec<String> {
    let mut v: Vec<String> = crate::store::decode::<ClientCertRecord>(sm, KIND_CLIENT_CERT)
        .into_iter()
        .filter(|r| r.value.revoked_ms.is_some())
        .map(|r| r.value.serial)
        .collect();
    v.sort();
    v
}

/// Deletes the records of certificates that expired before `now_ms`.
pub fn expired_ops(sm: &StateMachine, now_ms: i64) -> Vec<Op> {
    list(sm)
        .into_iter()
        .filter(|r| r.value.not_after_ms < now_ms)
        .map(|r| Op::Delete {
            kind: KIND_CLIENT_CERT.into(),
            id: r.id,
            expected_version: r.version,
        })
        .collect()
}

/// Revokes every certificate named `who`, or the one whose serial is `who`. Returns
/// the ops (empty when all were revoked already) and the records as they will be.
pub fn revoke_ops(
    sm: &StateMachine,
    who: &str,
    now_ms: i64,
) -> Result<(Vec<Op>, Vec<ClientCertRecord>), ClientsError> {
    let serial = who.to_ascii_lowercase();
    let matching: Vec<Stored<ClientCertRecord>> = list(sm)
        .into_iter()
        .filter(|r| r.value.name == who || r.value.serial == serial)
        .collect();
    if matching.is_empty() {
        return Err(ClientsError::Unknown(who.into()));
    }
    let mut ops = Vec::new();
    let mut out = Vec::new();
    for mut r in matching {
        if r.value.revoked_ms.is_none() {
            r.value.revoked_ms = Some(now_ms);
            ops.push(Op::Update {
                kind: KIND_CLIENT_CERT.into(),
                id: r.id.clone(),
                spec: serde_json::to_vec(&r.value)
                    .map_err(|e| ClientsError::Encode(e.to_string()))?,
                expected_version: r.version,
            });
        }
        out.push(r.value);
    }
    Ok((ops, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proposal;

    fn rec(name: &str, serial: &str, issued_ms: i64, not_after_ms: i64) -> ClientCertRecord {
        ClientCertRecord {
            name: name.into(),
            serial: serial.into(),
            issued_ms,
            not_after_ms,
            revoked_ms: None,
        }
    }

    fn apply(sm: &mut StateMachine, ops: Vec<Op>) {
        let index = sm.applied() + 1;
        let r = sm.apply(index, &Proposal::new(ops));
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn revoke_by_name_or_serial_and_drop_expired_records() {
        let mut sm = StateMachine::default();
        for r in [
            rec("alice", "0a", 1, 1000),
            rec("alice", "0b", 2, 5000),
            rec("bob", "0c", 3, 5000),
        ] {
            apply(&mut sm, vec![issue_op(&r).expect("op")]);
        }
        assert!(!is_revoked(&sm, "0a") && !is_revoked(&sm, "ff"));

        // A name revokes every certificate of that name.
        let (ops, recs) = revoke_ops(&sm, "alice", 10).expect("revoke");
        assert_eq!((ops.len(), recs.len()), (2, 2));
        apply(&mut sm, ops);
        assert!(is_revoked(&sm, "0a") && is_revoked(&sm, "0b") && !is_revoked(&sm, "0c"));
        assert_eq!(revoked_serials(&sm), ["0a", "0b"]);
        // Again: nothing left to do, and the records say when.
        let (ops, recs) = revoke_ops(&sm, "alice", 20).expect("revoke");
        assert!(ops.is_empty());
        assert!(recs.iter().all(|r| r.revoked_ms == Some(10)));
        // A serial, in any case.
        let (ops, _) = revoke_ops(&sm, "0C", 30).expect("revoke");
        apply(&mut sm, ops);
        assert!(is_revoked(&sm, "0c"));
        assert_eq!(
            revoke_ops(&sm, "carol", 30).expect_err("carol is unknown"),
            ClientsError::Unknown("carol".into())
        );

        // Expired records go; the others stay.
        let ops = expired_ops(&sm, 2000);
        apply(&mut sm, ops);
        let left: Vec<String> = list(&sm).into_iter().map(|r| r.value.serial).collect();
        assert_eq!(left, ["0b", "0c"]);
    }
}
