//! Helpers shared by the integration tests: pseudo-random test data (`data`), a throwaway PostgreSQL cluster (`postgres`), a
//! throwaway S3 server and rclone (`s3`), a second S3 implementation to cross-check with (`moto`), the real `gatehouse` binary as a child process
//! (`process`), plain HTTP requests to it (`http`) and Prometheus expositions (`prometheus`). Every test binary compiles its own copy of this module and uses only part of it.

#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod cluster;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod data;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod http;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod moto;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod postgres;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod process;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod prometheus;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod s3;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod window;
#[allow(dead_code, reason = "each test binary uses only some of the helpers")]
pub mod xvfb;
