//! The raft-backed cluster controller. Empty until the controller issue lands: the agent
//! runs single-host today.
