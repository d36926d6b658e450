// The end-to-end tests in tests/ that need root carry
// `#[cfg_attr(not(skiff_root), ignore = "needs root: ...")]`: the same build script as
// the runtime crate's sets that cfg when root builds them.
include!("runtime/build.rs");
