pub mod gce;
