//! Reports: `pedm report` (elevations, external accounts, standing privileges, evidence
//! bundles and their offline check).

use super::*;

/// `pedm report …`: the elevation report ([`ReportCmd`]) and the standing-privilege report.
#[derive(Debug, Subcommand)]
pub enum ReportsCmd {
    /// Who elevated what, when, for how long, why, who approved, break-glass.
    Elevations {
        /// Window: a duration back from now (30d, 12h) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = "table", value_parser = PossibleValuesParser::new(["table", "csv", "json"]))]
        format: String,
    },
    /// External (vendor) accounts: sponsor, expiry, and what each did in the window.
    External {
        /// Window: a duration back from now (30d, 12h) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = "table", value_parser = PossibleValuesParser::new(["table", "json"]))]
        format: String,
    },
    /// Standing privileged accounts over every target with a provisioner (over-privilege).
    Standing {
        #[arg(long, default_value = "table", value_parser = PossibleValuesParser::new(["table", "csv", "json"]))]
        format: String,
    },
    /// A compliance evidence bundle for a period, signed with the audit key, written to a new
    /// (or empty) directory: elevations, break-glass, access reviews, policy versions,
    /// sessions, standing privileges, audit checkpoints, an HTML summary, a control mapping.
    Evidence {
        #[arg(long, value_parser = PossibleValuesParser::new(["soc2", "hipaa", "gdpr"]))]
        framework: String,
        /// A quarter (2026-Q3), a month (2026-07) or a year (2026), UTC.
        #[arg(long)]
        period: String,
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Check an evidence bundle offline with the audit public key alone; exits 1 naming the
    /// first changed, missing or added file, or a bad signature or checkpoint.
    VerifyBundle {
        dir: PathBuf,
        /// The audit public key (`ed25519:...`, obtained out of band).
        #[arg(long, value_name = "KEY")]
        pubkey: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Who elevated what, when, for how long, why, who approved, break-glass.
    Elevations {
        /// Window: a duration back from now (30d, 12h) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = "table", value_parser = PossibleValuesParser::new(["table", "csv", "json"]))]
        format: String,
    },
}
