//! Labels the agent puts on containers and networks it makes for the cluster: the
//! executor writes them, the engine core and the front ends read them.

/// The task a container runs (Swarm's label, so Docker clients see it too).
pub const LABEL_TASK: &str = "com.docker.swarm.task.id";
pub const LABEL_SERVICE: &str = "com.docker.swarm.service.name";
pub const LABEL_NODE: &str = "com.docker.swarm.node.id";
/// Marks local networks the executor made for a stack (removed with the stack).
pub const LABEL_STACK_NETWORK: &str = "com.skiff.stack.network";
