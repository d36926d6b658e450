//! The data model: plain types and pure helpers, no I/O. Nodes, keyed objects and the
//! proposals that change them; services, tasks and stacks as the controller stores them;
//! cluster events as a pure function of a change; IDs and the JSON codecs.

pub(crate) mod codec;
pub mod events;
pub mod ids;
pub mod node;
pub mod object;
pub mod overlay;
pub mod proposal;
pub mod services;
pub mod stack;
pub mod wire;

pub use ids::{new_id, new_raft_id, now_ms};
pub use node::*;
pub use object::*;
pub use overlay::KIND_ATTACHMENT;
pub use proposal::*;
pub use services::*;
