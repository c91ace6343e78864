//! The workloads. Each returns an `Outcome`: one JSON object, a text report, and the number
//! of errors counted (which decides the exit status).

pub mod delete;
pub mod get;
pub mod pull;
pub mod push;
pub mod registry;
pub mod seed;

pub struct Outcome {
    pub json: serde_json::Value,
    pub text: String,
    pub errors: u64,
}
