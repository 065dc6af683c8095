//! pedm domain core.
//!
//! Owns the concepts (users, groups, targets, roles, requests, grants, audit events), the
//! rules of their life cycles, and the interfaces the outer layers implement: [`store::Store`]
//! (persistence), [`decision::Decider`] (policy), [`clock::Clock`] (time). It knows nothing of
//! HTTP or SQL; transports call [`service::ControlPlane`] and storage implements the trait.

pub mod access_review;
pub mod alert;
pub mod audit;
pub mod clock;
pub mod decision;
pub mod delegation;
pub mod device;
pub mod duration;
pub mod error;
pub mod evidence;
pub mod external;
pub mod host;
pub mod integration;
pub mod lock;
pub mod model;
pub mod notice;
pub mod policy_check;
pub mod policy_review;
pub mod privacy;
pub mod provisioning;
pub mod risk;
pub mod scheduler;
pub mod scim;
pub mod service;
pub mod ssh;
pub mod sso;
pub mod store;
pub mod syntax;
pub mod text;
pub mod ticket;
pub mod token;
pub mod web_session;
pub mod workload;

pub use error::{Error, Result};
