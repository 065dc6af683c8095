//! Errors of loading policies and running policy test cases.

/// Why a policy set (or a case file) was refused. Nothing partial is ever returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy input is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("policy source {source_id}: {message}")]
    Parse { source_id: String, message: String },
    #[error("duplicate policy id {id:?} (in {first} and {second})")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("policy {policy}: {message}")]
    Annotation { policy: String, message: String },
    #[error("schema validation failed:\n{}", format_validation(.errors))]
    Validation {
        /// `(policy id, Cedar's message)`, in policy order.
        errors: Vec<(String, String)>,
    },
    #[error("internal schema error: {0}")]
    Schema(String),
    #[error("test cases: {0}")]
    Cases(String),
}

fn format_validation(errors: &[(String, String)]) -> String {
    errors
        .iter()
        .map(|(id, m)| format!("  policy {id}: {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}
