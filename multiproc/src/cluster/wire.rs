//! What travels on the task and result subjects, and the executable identity that
//! makes a function address mean the same function on every host.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys::entry::FnAddr;

/// The first bytes of every message multiproc puts on a cluster subject: anything else
/// there is foreign.
const MAGIC: &[u8; 4] = b"MPC1";

/// The executable's identity: the first 16 bytes of the SHA-256 of `/proc/self/exe`,
/// read once. Two hosts running the same build agree; a rebuilt binary does not, and
/// its function addresses are refused (dev/inode, which a local child checks, mean
/// nothing on another machine).
pub(crate) fn exe_identity() -> Result<[u8; 16], String> {
    static ID: OnceLock<Result<[u8; 16], String>> = OnceLock::new();
    ID.get_or_init(|| {
        use sha2::Digest;
        let mut file = std::fs::File::open("/proc/self/exe")
            .map_err(|e| format!("cannot read /proc/self/exe: {e}"))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .map_err(|e| format!("cannot read /proc/self/exe: {e}"))?;
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        Ok(id)
    })
    .clone()
}

/// One task, as the client publishes it on `<namespace>.tasks`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    /// The submitting client (its results subject's last token).
    pub(crate) client: String,
    /// The task's id within that client.
    pub(crate) id: u64,
    /// The submitter's executable ([`exe_identity`]).
    pub(crate) exe: [u8; 16],
    /// The monomorphic entry function and the user's function.
    pub(crate) entry: FnAddr,
    pub(crate) target: FnAddr,
    /// The postcard body of the argument.
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    /// The task's time limit, if any.
    pub(crate) limit: Option<Duration>,
    /// How many deliveries may end in a dead worker before the task fails with
    /// `KilledWorker`.
    pub(crate) attempts: u32,
}

/// How a task ended, as a worker reports it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ending {
    /// The postcard body of the return value.
    Returned(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The task panicked.
    Panicked(String),
    /// The argument did not decode, or the result did not encode.
    Codec(String),
    /// The task ran over its limit.
    TimedOut(Duration),
    /// Its worker died on each of this many deliveries.
    KilledWorker(u32),
    /// The worker could not run it (another executable, a broken local pool).
    Refused(String),
}

/// A result, as a worker publishes it on `<namespace>.results.<client>`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultMsg {
    pub(crate) id: u64,
    pub(crate) ending: Ending,
}

/// `MAGIC` then the postcard body of `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, crate::codec::CodecError> {
    let body = crate::codec::encode(value)?;
    let mut out = Vec::with_capacity(MAGIC.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The value of a message [`encode`] made; why not, for anything else.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| "not a multiproc message (no MPC1 prefix)".to_string())?;
    crate::codec::decode(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(x: u8) -> u8 {
        x
    }

    #[test]
    fn a_task_round_trips_and_garbage_is_named() {
        let task = TaskMsg {
            client: "c1".into(),
            id: 7,
            exe: exe_identity().unwrap(),
            entry: FnAddr::of(ident as fn(u8) -> u8),
            target: FnAddr::of(ident as fn(u8) -> u8),
            args: vec![1, 2, 3],
            limit: Some(Duration::from_millis(1500)),
            attempts: 3,
        };
        let back: TaskMsg = decode(&encode(&task).unwrap()).unwrap();
        assert_eq!(
            (back.client.as_str(), back.id, back.args),
            ("c1", 7, vec![1, 2, 3])
        );
        assert_eq!(back.limit, Some(Duration::from_millis(1500)));
        assert_eq!(back.exe, task.exe);
        assert!(
            decode::<TaskMsg>(b"hello")
                .unwrap_err()
                .contains("not a multiproc")
        );
        assert!(decode::<TaskMsg>(b"MPC1\xff").is_err());
    }
}
