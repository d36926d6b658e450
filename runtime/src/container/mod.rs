//! Containers: what one is made of on disk ([`record`]), how it becomes an OCI bundle
//! ([`spec`]), the security defaults it gets ([`security`], with compiled seccomp
//! programs kept in [`seccomp_cache`]), and look-ups inside its
//! root filesystem that must never leave it ([`rootfs`]); host devices it is given
//! ([`devices`]), the `--init` it may run under ([`docker_init`]), and the namespaces
//! it shares and sysctls it sets ([`namespaces`]).

pub mod devices;
pub mod docker_init;
pub mod namespaces;
pub mod record;
pub mod rootfs;
pub mod seccomp_cache;
pub mod security;
pub mod spec;

pub use record::{
    ContainerConfig, ContainerRecord, ContainerState, ExitInfo, Paths, RestartPolicy, Status,
};
