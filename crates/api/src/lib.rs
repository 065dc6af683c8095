//! The pedm HTTP API contract: the JSON bodies exchanged under `/api/v1/` (with OpenAPI
//! schemas) and a typed client used by the CLI and the end-to-end tests.
//!
//! Resources that go over the wire unchanged are the domain types of `pedm-core`, re-exported
//! here; this crate adds only what is specific to the transport (request bodies, envelopes).

pub mod agent;
pub mod chat;
pub mod client;
pub mod delegation;
pub mod device;
pub mod evidence;
pub mod external;
pub mod live;
pub mod lock;
pub mod policy_review;
pub mod privacy;
pub mod review;
pub mod scim;
pub mod socket;
pub mod ssh;
pub mod sso;
pub mod types;
pub mod workload;

pub use chat::{ChannelStatus, SlackLink, SlackLinked};
pub use client::{ApiError, Client};
pub use pedm_core::audit::{AuditEvent, Outcome};
pub use pedm_core::duration::{format_duration, parse_duration};
pub use pedm_core::host::{Session, SessionVia};
pub use pedm_core::model::{
    Approval, ApprovalDecision, ApprovalTier, Grant, GrantCheck, GrantState, Group, PolicySource,
    PolicyVersion, ProvisionState, Request, RequestContext, RequestState, Review, ReviewState,
    Role, SessionLimits, StandingPrivilege, StandingReport, StandingRow, Target, TargetError,
    TargetKind, User,
};
pub use pedm_core::policy_check::{
    AccessChange, BlastRadius, ChangeKind, Counterexample, Coverage, Property, PropertyFile,
    PropertyReport, PropertyResult, PropertyScope, Requirement,
};
pub use pedm_core::service::ElevationRow;
pub use pedm_core::service::{
    CommandSuggestions, CommandUse, RoleCommands, SimulatedChange, SimulationReport,
};
pub use pedm_core::ssh::{CertKind, SshAccess, SshCertificate};
pub use types::*;

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";
