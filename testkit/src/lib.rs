pub mod gce;
pub use gce::{FakeGce, FakeGceError, FakeGceOptions, GceFault, ZoneSpec};
